"""Polls IPS on a schedule and tells the store what each poll found.

APScheduler's AsyncIOScheduler runs in the exporter's event loop with one interval job per
company: first run at start-up (spread by a little jitter), `max_instances=1` and
`coalesce=True` so a slow poll is never stacked (a run that could not start is counted as
`skipped`), and a timeout below the interval on every poll. Before its companies are known an
account is polled as one placeholder target labelled with the account name, whose poll is the
company discovery: a wrong password is visible as `scene7_up 0` from the first poll on. The
discovery runs again every `discovery_interval`, so companies added to or removed from the user
are followed without a restart.

Job logs (getJobLogs: what became of finished jobs) are polled per company by a job of their own
every `job_logs.interval`, never in the way of the active-jobs poll: a job-log poll that fails or
is slow is counted in the job-log families alone, and never makes `scene7_up` 0. It does not
call IPS while the account or company is paused, and does not pause it itself.

Credentials IPS refuses are not sent again at every interval (that is how accounts get locked):
an authentication fault pauses the whole account, an authorization fault the company alone, with
one probe at a time after an exponential backoff from the interval to `auth_backoff_max`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.client import IpsClient
from exporter.errors import IpsError, Reason, forget_traceback, tame
from exporter.joblogs import Plan, sweep
from exporter.models import ActiveJob, CompanyMembership, JobLogSortBy, SortDirection
from exporter.parse import JobLogsResult
from exporter.snapshot import CompanyTarget, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKSTOP_SECONDS = 1.0


@dataclass(frozen=True)
class Account:
    """A configured account with its client and the companies asked for (empty: all).
    `password` reads the password again before each call (a password file that a rotated
    secret replaces); None where it cannot change or cannot be read just now."""

    name: str
    client: IpsClient
    companies: tuple[str, ...] = ()
    password: Callable[[], str | None] | None = None


@dataclass(frozen=True)
class JobLogPolling:
    """How job logs are polled: every `interval` seconds per company, a poll (all its calls)
    cancelled after `timeout`, each following `plan`."""

    interval: float = 300.0
    timeout: float = 150.0
    plan: Plan = field(default_factory=Plan)


@dataclass
class Pause:
    """IPS refused an account's credentials or a company's rights: no call before `until` (on
    the poller's timer), then one probe at a time; `cause` is what IPS said."""

    backoff: float
    until: float
    next_attempt: str
    cause: str
    probing: bool = False


def _failure(exc: Exception, client: IpsClient, timed_out: str) -> tuple[Reason, str, Exception | None]:
    """What a failed poll records: its reason, a message, and the exception if it is a bug of
    ours (which must not stop the polling of the company); `timed_out` is the timeout's message."""
    if isinstance(exc, IpsError):  # IPS text: may echo the request, and is of any length
        return exc.reason, tame(str(exc), client.secrets), None
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, timed_out, None
    return Reason.INTERNAL, f"unexpected {type(exc).__name__}: a bug of the exporter", exc


def _about(target: CompanyTarget) -> dict[str, str]:
    """The fields of a log line about one company's polls."""
    return {"company": target.label, "account": target.account}


def _paused_what(key: str | CompanyTarget) -> str:
    """What IPS refused: an account's (paused by name) credentials, a company's access."""
    return "credentials" if isinstance(key, str) else "access"


def _who(key: str | CompanyTarget, target: CompanyTarget) -> dict[str, str]:
    """The fields of a pause's log lines: the account it stops, or the company."""
    return {"account": target.account} if isinstance(key, str) else _about(target)


def in_shard(handle: str, shard: tuple[int, int] | None) -> bool:
    """Whether this replica polls the company: a stable hash of its handle, modulo TOTAL."""
    if shard is None:
        return True
    index, total = shard
    digest = hashlib.sha256(handle.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total == index - 1


def choose_targets(
    account: str,
    memberships: Sequence[CompanyMembership],
    wanted: Sequence[str],
    shard: tuple[int, int] | None,
) -> tuple[list[CompanyTarget], list[str]]:
    """Targets for the account's memberships (only `wanted` handles or names, if given), and
    the wanted entries that matched no membership."""
    active = [m.company for m in memberships if m.is_active]
    if wanted:
        by_key = {c.company_handle: c for c in active} | {c.name: c for c in active}
        chosen = [by_key[w] for w in wanted if w in by_key]
        unknown = [w for w in wanted if w not in by_key]
    else:
        chosen, unknown = active, []
    # A company wanted by handle and by name is one company, labelled with its name alone.
    unique = list({c.company_handle: c for c in chosen}.values())
    names = [c.name or c.company_handle for c in unique]
    targets = []
    for company, name in zip(unique, names, strict=True):
        # Two companies of one name would merge their series: tell them apart by handle.
        label = f"{name} ({company.company_handle})" if names.count(name) > 1 else name
        if in_shard(company.company_handle, shard):
            targets.append(CompanyTarget(account, company.company_handle, label))
    return targets, unknown


class Poller:
    """Schedules the polls of every account's companies and records their outcomes in the store."""

    def __init__(
        self,
        accounts: Sequence[Account],
        store: Store,
        *,
        interval: float,
        timeout: float,
        shard: tuple[int, int] | None = None,
        discovery_interval: float = 900.0,
        auth_backoff_max: float = 1800.0,
        jitter: float | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        job_logs: JobLogPolling | None = None,
    ) -> None:
        """`clock` gives the wall time polls are stamped with, `timer` measures their duration
        and the pauses after refused credentials."""
        self.accounts = {account.name: account for account in accounts}
        self.store = store
        self.interval = interval
        self.timeout = timeout
        self.shard = shard
        self.discovery_interval = discovery_interval
        self.auth_backoff_max = max(auth_backoff_max, interval)
        self.jitter = min(interval / 10, 5.0) if jitter is None else jitter
        self.clock = clock
        self.timer = timer
        self.job_logs = job_logs  # None: job logs are not polled
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.scheduler.add_listener(self._on_missed_run, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._targets: dict[str, CompanyTarget] = {}
        self._log_targets: dict[str, CompanyTarget] = {}  # job-log polls, by job id
        self._last_log_failure: dict[CompanyTarget, str] = {}
        self._last_failure: dict[CompanyTarget, str] = {}
        # Each company's jobs of its last good poll, by the fingerprint of their XML: the next
        # poll reads only the jobs that changed (see ResponseReader).
        self._known_jobs: dict[CompanyTarget, Mapping[bytes, ActiveJob]] = {}
        self._paused: dict[str | CompanyTarget, Pause] = {}  # by account name, or by company
        self.first_poll_attempted = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        known = {snapshot.target.account for snapshot in self.store.state.companies}
        for account in self.accounts.values():
            placeholder = CompanyTarget(account.name, "", account.name)
            if account.name not in known:  # an account kept over a reload shows its companies meanwhile
                self.store.track(placeholder)
            self._schedule(placeholder, self._discover)
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling and cancel polls under way."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(self._running, timeout=2)

    def next_poll(self, target: CompanyTarget) -> float | None:
        """When the company's next poll is due (Unix seconds), if it is scheduled."""
        job = self.scheduler.get_job(self._job_id(target)) if self.scheduler.running else None
        due = getattr(job, "next_run_time", None)
        return due.timestamp() if isinstance(due, datetime) else None

    @staticmethod
    def _job_id(target: CompanyTarget) -> str:
        return f"{target.account}\x00{target.handle}"

    @staticmethod
    def _log_job_id(target: CompanyTarget) -> str:
        return f"{target.account}\x00{target.handle}\x00job logs"

    def _schedule(
        self, target: CompanyTarget, poll: Callable[[CompanyTarget], Awaitable[None]]
    ) -> None:
        job_id = self._job_id(target)
        self._targets[job_id] = target
        self._add_job(job_id, target, poll, self.interval, self.jitter)

    def _schedule_job_logs(self, target: CompanyTarget) -> None:
        if self.job_logs is None:
            return
        job_id = self._log_job_id(target)
        self._log_targets[job_id] = target
        self._add_job(job_id, target, self._poll_job_logs, self.job_logs.interval,
                      min(self.jitter, self.job_logs.interval / 10))

    def _unschedule(self, target: CompanyTarget) -> None:
        self._known_jobs.pop(target, None)
        for job_id, targets in ((self._job_id(target), self._targets), (self._log_job_id(target), self._log_targets)):
            if targets.pop(job_id, None) is not None:
                self.scheduler.remove_job(job_id)

    def _add_job(self, job_id: str, target: CompanyTarget, poll: Callable[[CompanyTarget], Awaitable[None]],
                 interval: float, jitter: float) -> None:
        first = datetime.now(UTC) + timedelta(seconds=random.uniform(0, jitter))  # noqa: S311
        self.scheduler.add_job(
            self._run,
            "interval",
            args=[target, poll],
            seconds=interval,
            jitter=jitter or None,
            id=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval / 2)),
            next_run_time=first,
        )

    async def _run(
        self, target: CompanyTarget, poll: Callable[[CompanyTarget], Awaitable[None]]
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await poll(target)
        except asyncio.CancelledError:  # stop() cancels polls under way: not an error
            log.debug("poll cancelled", extra=_about(target))
        finally:
            if task is not None:
                self._running.discard(task)
            self.first_poll_attempted.set()

    def _on_missed_run(self, event: JobExecutionEvent) -> None:
        """APScheduler's listener (in the event loop): count a run that could not start."""
        target = self._targets.get(event.job_id)
        if target is not None and self.store.record_skipped(target) is not None:
            log.warning("poll skipped: the previous poll is still running", extra=_about(target))
        target = self._log_targets.get(event.job_id)
        if target is not None and self.store.record_job_log_failure(target, Reason.SKIPPED) is not None:
            log.warning("job-log poll skipped: the previous one is still running", extra=_about(target))

    async def _timed(
        self, target: CompanyTarget, call: Callable[[], Awaitable[T]], *, record: bool = True
    ) -> tuple[T, float, float] | None:
        """Run one IPS call under the poll timeout: (result, wall time it started, duration);
        on failure record it (unless `record` is false) and return None. While the account or
        company is paused after refused credentials, IPS is not called at all."""
        self._read_password(self.accounts[target.account])
        pause = self._paused.get(target.account) or self._paused.get(target)
        if pause is not None:
            if pause.probing or self.timer() < pause.until:
                if record:
                    reason = self._pause_reason(target)
                    self.store.record_failure(target, reason, f"not polled until {pause.next_attempt}: {pause.cause}",
                                              at=self.clock(), duration=0.0)
                return None
            pause.probing = True
        started_wall, started = self.clock(), self.timer()
        try:
            # The client keeps the poll timeout itself without cancelling requests; this is a
            # backstop only, for a poll stuck anywhere else.
            async with asyncio.timeout(self.timeout + BACKSTOP_SECONDS):
                result = await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason, message, bug = _failure(exc, self.accounts[target.account].client,
                                            f"no answer within the poll timeout of {self.timeout:g}s")
            failure = exc
        else:
            self._resume(target)
            return result, started_wall, self.timer() - started
        ended = self.timer()
        if pause is not None:
            pause.probing = False
        self._log_failure(target, reason, message, bug=bug, duration=ended - started)
        if reason is Reason.AUTHORIZATION:  # the credentials were accepted, the company refused
            self._end_pause(target.account, target)
        if reason in (Reason.AUTHENTICATION, Reason.AUTHORIZATION):
            self._pause(target, reason, message, at=(started_wall, ended), probe=pause)
        forget_traceback(failure)  # logged: the frames would keep what the failed call had read
        if record:
            self.store.record_failure(target, reason, message, at=started_wall, duration=ended - started)
        return None

    def _pause_reason(self, target: CompanyTarget) -> Reason:
        """Why a paused company is not polled: its account's credentials, or its own refusal."""
        return Reason.AUTHENTICATION if target.account in self._paused else Reason.AUTHORIZATION

    def _pause(self, target: CompanyTarget, reason: Reason, message: str, *, at: tuple[float, float],
               probe: Pause | None) -> None:
        """Stop calling IPS for the account (authentication) or the company (authorization):
        the first pause lasts one interval, each refused probe doubles it up to the maximum.
        `at` is the refused call's (wall-clock start, timer end)."""
        key: str | CompanyTarget = target.account if reason is Reason.AUTHENTICATION else target
        earlier = self._paused.get(key)
        if earlier is not None and earlier is not probe:
            return  # a call already under way when the pause began: the pause stands as it is
        backoff = self.interval if earlier is None else min(2 * earlier.backoff, self.auth_backoff_max)
        next_attempt = datetime.fromtimestamp(at[0] + backoff, UTC).isoformat(timespec="seconds")
        self._paused[key] = Pause(backoff, at[1] + backoff, next_attempt, message)
        log.warning("IPS refused the %s: no call until next_attempt, then one; each refusal doubles the pause up "
                    "to pause_max", _paused_what(key), extra={
                        **_who(key, target), "reason": reason.value, "error": message, "next_attempt": next_attempt,
                        "pause": backoff, "pause_max": self.auth_backoff_max})

    def _read_password(self, account: Account) -> None:
        """A new password is used from the next call on, and ends the account's pauses."""
        password = account.password() if account.password is not None else None
        if password is None or password == account.client.password:
            return
        account.client.password = password
        paused = [key for key in self._paused
                  if key == account.name or (isinstance(key, CompanyTarget) and key.account == account.name)]
        for key in paused:
            del self._paused[key]
        log.info("the password changed; it is used from now on%s",
                 ", and the pause after refused credentials ends" if paused else "", extra={"account": account.name})

    def _resume(self, target: CompanyTarget) -> None:
        self._end_pause(target.account, target)
        self._end_pause(target, target)

    def _end_pause(self, key: str | CompanyTarget, target: CompanyTarget) -> None:
        if self._paused.pop(key, None) is not None:
            log.info("IPS accepts the %s again; polling resumes", _paused_what(key), extra=_who(key, target))

    def _log_failure(
        self, target: CompanyTarget, reason: str, message: str, *, bug: Exception | None = None, duration: float
    ) -> None:
        # One line per change of failure, not one per poll: a wrong password polled every
        # minute should not fill the log. A bug of ours comes with its traceback, once.
        line = f"{reason}: {message}"
        if self._last_failure.get(target) != line:
            if bug is not None:
                log.error("unexpected error while polling", exc_info=bug, extra=_about(target))
            log.warning("poll failed", extra={**_about(target), "reason": reason, "error": message,
                                              "duration": round(duration, 3)})
            self._last_failure[target] = line
        else:
            log.debug("poll failed again", extra={**_about(target), "reason": reason, "error": message})

    def _log_success(self, target: CompanyTarget) -> None:
        if self._last_failure.pop(target, None) is not None:
            log.info("poll recovered", extra=_about(target))

    async def _poll_company(self, target: CompanyTarget) -> None:
        client = self.accounts[target.account].client
        known = self._known_jobs.get(target, {})
        outcome = await self._timed(
            target, lambda: client.get_active_jobs(target.handle, keep_items=False, known=known)
        )
        if outcome is None:
            return
        result, started_wall, duration = outcome
        self._known_jobs[target] = result.fingerprints
        self._log_success(target)
        log.debug("poll done", extra={**_about(target), "jobs": len(result.jobs), "duration": round(duration, 3)})
        if result.invalid_records:
            log.warning("invalid job records left out", extra={
                **_about(target), "records": result.invalid_records,
                "first": tame(result.first_invalid, client.secrets)})
        self.store.record_success(
            target, result.jobs, at=started_wall, duration=duration, invalid_records=result.invalid_records
        )

    async def _poll_job_logs(self, target: CompanyTarget) -> None:
        """One job-log poll of the company (see exporter/joblogs.py): its outcome goes to the
        job-log families alone, never to `scene7_up` or the active-job series."""
        assert self.job_logs is not None
        polling = self.job_logs
        account = self.accounts[target.account]
        client = account.client
        self._read_password(account)
        if self._paused.get(target.account) or self._paused.get(target):
            self.store.record_job_log_failure(target, self._pause_reason(target))
            return

        async def fetch(start: datetime, end: datetime, rows: int) -> JobLogsResult:
            return await client.get_job_logs(target.handle, start_date=start, end_date=end, num_rows=rows,
                                             sort_by=JobLogSortBy.START_DATE,
                                             sort_direction=SortDirection.DESCENDING)

        started_wall, started = self.clock(), self.timer()
        try:
            async with asyncio.timeout(polling.timeout):
                result = await sweep(fetch, self.store.job_log_book(target), now=started_wall, plan=polling.plan)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason, message, bug = _failure(
                exc, client, f"not complete within the job-log poll timeout of {polling.timeout:g}s"
            )
        else:
            if self._last_log_failure.pop(target, None) is not None:
                log.info("job-log poll recovered", extra=_about(target))
            if result.invalid_records:
                log.warning("invalid job-log records left out", extra={
                    **_about(target), "records": result.invalid_records,
                    "first": tame(result.first_invalid, client.secrets)})
            if result.saturated:
                log.warning("one-second windows of job logs still held the most logs a call returns: some "
                            "may be missed", extra={**_about(target), "windows": result.saturated,
                                                    "rows": polling.plan.num_rows})
            log.debug("job-log poll done", extra={**_about(target), "calls": result.calls, "logs": len(result.logs),
                                                  "duration": round(self.timer() - started, 3)})
            self.store.record_job_logs(target, result)
            return
        line = f"{reason}: {message}"
        if self._last_log_failure.get(target) != line:
            if bug is not None:
                log.error("unexpected error while polling the job logs", exc_info=bug, extra=_about(target))
            log.warning("job-log poll failed", extra={**_about(target), "reason": reason, "error": message})
            self._last_log_failure[target] = line
        self.store.record_job_log_failure(target, reason)

    def _unique_across_accounts(self, account: str, targets: list[CompanyTarget]) -> list[CompanyTarget]:
        """A company another account already polls is not polled twice; a label another
        account's company already has gets the handle added, so series never merge."""
        others = [t for t in self._targets.values() if t.handle and t.account != account]
        polled = {t.handle for t in others}
        labels = {t.label for t in others}
        unique = []
        for target in targets:
            if target.handle in polled:
                log.info("the company is polled with another account already", extra=_about(target))
                continue
            if target.label in labels:
                target = CompanyTarget(target.account, target.handle, f"{target.label} ({target.handle})")
            unique.append(target)
        return unique

    async def _discover(self, placeholder: CompanyTarget) -> None:
        """The account's companies, the first time and every `discovery_interval` after: new
        ones are polled from now on, gone ones stop being polled and their series go."""
        account = self.accounts[placeholder.account]
        polled = {t for t in self._targets.values() if t.account == account.name and t.handle}
        # A failed rediscovery leaves the companies polled as they are: it is logged, not shown
        # as a company of its own.
        outcome = await self._timed(placeholder, account.client.get_company_memberships, record=not polled)
        if outcome is None:
            return
        memberships, _, _ = outcome
        targets, unknown = choose_targets(account.name, memberships, account.companies, self.shard)
        targets = self._unique_across_accounts(account.name, targets)
        self._log_success(placeholder)
        if polled and set(targets) == polled:
            return
        for entry in unknown:
            log.error("a configured company is not among the user's companies; check the handle or name",
                      extra={"account": account.name, "company": entry})
        log.info("polling %d companies", len(targets), extra={
            "account": account.name, "companies": ", ".join(t.label for t in targets) or "none"})
        for gone in polled - set(targets):
            self._unschedule(gone)
        self.store.record_discovered(placeholder, targets)
        for target in targets:
            if target not in polled:
                self._schedule(target, self._poll_company)
                self._schedule_job_logs(target)
        if not polled:
            self.scheduler.reschedule_job(self._job_id(placeholder), trigger="interval",
                                          seconds=self.discovery_interval)
