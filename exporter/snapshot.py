"""Immutable snapshots of what the poller knows, and the store that owns every change to them.

Data flows one way: client -> poller -> store -> subscribers. The poller tells the store what
happened (`record_success`, `record_failure`, `record_skipped`, `record_discovered`); the store
builds a new `CompanySnapshot` from the previous one, replaces the whole `State` in one
assignment and hands it to its subscribers (the exposition). A reader holding a `State` sees one
consistent world, never half a poll. Whether a company's data is fresh enough to export is
decided here only (`State.is_fresh`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.errors import Reason
from exporter.joblogs import JobLogBook, Plan, SweepResult
from exporter.models import ActiveJob, TaskState

log = logging.getLogger(__name__)

FINAL_STATES = ("Done", "Failed", "Vanished")
_FINISHED = frozenset(state for state in TaskState if state.finished)
_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class CompanyTarget:
    """A company to poll: the account it is polled with, its handle and its label."""

    account: str
    handle: str
    label: str


@dataclass(frozen=True)
class CompanySnapshot:
    """What is known about one company after its latest poll."""

    target: CompanyTarget
    jobs: tuple[ActiveJob, ...] = ()
    fetched_at: float | None = None  # wall clock of the last successful poll
    up: bool = False
    attempted_at: float | None = None
    poll_duration: float | None = None
    polls_total: int = 0
    errors_total: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    invalid_records_total: int = 0
    # (task_type, final_state) -> tasks seen to finish; task types seen get their series at 0
    finished_total: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    last_error: str | None = None
    job_logs: JobLogBook = field(default_factory=JobLogBook)  # finished jobs, from getJobLogs
    # (job handle, task type) -> (task type, state) of `jobs`: the next poll compares with it
    task_states: Mapping[tuple[str, str], tuple[str, TaskState]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )

    def after_success(
        self, jobs: tuple[ActiveJob, ...], *, at: float, duration: float, invalid_records: int
    ) -> CompanySnapshot:
        task_states = _task_states(jobs)
        return replace(
            self,
            jobs=jobs,
            task_states=task_states,
            fetched_at=at,
            up=True,
            attempted_at=at,
            poll_duration=duration,
            polls_total=self.polls_total + 1,
            invalid_records_total=self.invalid_records_total + invalid_records,
            finished_total=_count_finished(self, task_states),
            last_error=None,
            job_logs=self.job_logs.after_vanished(_vanished(self, jobs), at=at),
        )

    def after_failure(self, reason: Reason, message: str, *, at: float, duration: float) -> CompanySnapshot:
        return replace(
            self,
            up=False,
            attempted_at=at,
            poll_duration=duration,
            polls_total=self.polls_total + 1,
            errors_total=_add(self.errors_total, reason),
            last_error=f"{reason}: {message}",
        )

    def after_skipped_run(self) -> CompanySnapshot:
        return replace(self, errors_total=_add(self.errors_total, Reason.SKIPPED))


def _add(counts: Mapping[str, int], key: str) -> Mapping[str, int]:
    updated = dict(counts)
    updated[key] = updated.get(key, 0) + 1
    return MappingProxyType(updated)


def _vanished(previous: CompanySnapshot, jobs: tuple[ActiveJob, ...]) -> list[tuple[str, float]]:
    """(name, startDate) of the jobs of the previous successful poll that are no longer listed."""
    if previous.fetched_at is None:
        return []
    listed = {job.job_handle for job in jobs}
    return [(job.name, job.start_date.timestamp()) for job in previous.jobs if job.job_handle not in listed]


def _task_states(jobs: Iterable[ActiveJob]) -> Mapping[tuple[str, str], tuple[str, TaskState]]:
    return MappingProxyType({
        (job.job_handle, task.task_type): (task.task_type, task.known_state)
        for job in jobs
        for task in job.task_progress_array
    })


def _count_finished(
    previous: CompanySnapshot, now: Mapping[tuple[str, str], tuple[str, TaskState]]
) -> Mapping[tuple[str, str], int]:
    """Tasks seen to reach Done or Failed, or to vanish unfinished, since the last poll.

    The first successful poll counts nothing: a task already finished when the exporter starts
    was not seen to finish, and counting it would look like a burst of failures after every
    restart. Every task type seen gets its three series at 0, so the first real increase is
    visible to `increase()`.
    """
    counts = dict(previous.finished_total)
    for task_type in {task_type for task_type, _ in now.values()}:
        for final_state in FINAL_STATES:
            counts.setdefault((task_type, final_state), 0)
    if previous.fetched_at is not None:
        before = previous.task_states
        for key, (task_type, state) in now.items():
            if state in _FINISHED:
                earlier = before.get(key)
                if earlier is None or earlier[1] not in _FINISHED:
                    counts[(task_type, state.value)] += 1
        for key in before.keys() - now.keys():
            task_type, state = before[key]
            if state not in _FINISHED:
                counts[(task_type, "Vanished")] += 1
    return MappingProxyType(counts)


@dataclass(frozen=True)
class State:
    """Everything a scrape renders: every company's snapshot, as of one moment."""

    companies: tuple[CompanySnapshot, ...] = ()
    generation: int = 0
    series_dropped_total: int = 0
    per_job_series: bool = True
    max_age: float = math.inf
    recent_window: float = 86400.0  # job_logs.recent_window: the recent-job series' reach
    job_logs_enabled: bool = True

    def company(self, target: CompanyTarget) -> CompanySnapshot | None:
        for snapshot in self.companies:
            if snapshot.target == target:
                return snapshot
        return None

    def is_fresh(self, company: CompanySnapshot, now: float) -> bool:
        """A successful poll within max_age: only then are its per-job series exported."""
        return company.fetched_at is not None and now - company.fetched_at <= self.max_age

    def fresh_companies(self, now: float) -> tuple[CompanySnapshot, ...]:
        return tuple(c for c in self.companies if self.is_fresh(c, now))

    def stale_labels(self, now: float) -> frozenset[str]:
        return frozenset(c.target.label for c in self.companies if not self.is_fresh(c, now))


@dataclass(frozen=True)
class SeriesGuard:
    """The max-series guard: above `max_series` per-job series (0: no limit), the per-job
    families are not exported. What a job and a task cost comes from the metric specification
    (`metrics.series_guard`)."""

    max_series: int
    per_job: int
    per_task: int
    per_recent_job: int = 0

    def series(self, jobs: Iterable[ActiveJob], recent_jobs: int = 0) -> int:
        active = sum(self.per_job + self.per_task * len(job.task_progress_array) for job in jobs)
        return active + self.per_recent_job * recent_jobs

    def over(self, series: int) -> bool:
        return self.max_series > 0 and series > self.max_series


NO_GUARD = SeriesGuard(0, 0, 0)
Subscriber = Callable[[State], None]


@dataclass(frozen=True)
class JobLogSettings:
    """The `job_logs` section as the store applies it."""

    plan: Plan = field(default_factory=Plan)
    recent_max: int = 200
    enabled: bool = True


class Store:
    """Holds the current `State`, makes every change to it, and tells the subscribers."""

    def __init__(self, *, max_age: float = math.inf, guard: SeriesGuard = NO_GUARD,
                 job_logs: JobLogSettings = JobLogSettings(), started_at: float | None = None) -> None:
        """`started_at` (default: now) is the process start: job logs ending before it are
        not counted, whatever reload follows."""
        self.state = State(max_age=max_age, recent_window=job_logs.plan.recent_window,
                           job_logs_enabled=job_logs.enabled)
        self.guard = guard
        self.job_logs = job_logs
        self.started_at = time.time() if started_at is None else started_at
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber` with every new State, in the thread that made the change."""
        self._subscribers.append(subscriber)

    # -- transitions --------------------------------------------------------------------------

    def track(self, target: CompanyTarget) -> State:
        """A company (or an account's discovery) to be polled, not polled yet."""
        return self._put(CompanySnapshot(target))

    def record_success(
        self, target: CompanyTarget, jobs: tuple[ActiveJob, ...], *, at: float, duration: float,
        invalid_records: int = 0,
    ) -> State:
        """A poll answered: `jobs` are the company's active jobs as of `at` (wall clock)."""
        return self._put(
            self._snapshot(target).after_success(jobs, at=at, duration=duration, invalid_records=invalid_records)
        )

    def record_failure(
        self, target: CompanyTarget, reason: Reason, message: str, *, at: float, duration: float
    ) -> State:
        """A poll failed: the jobs known are kept (and go stale after max_age)."""
        return self._put(self._snapshot(target).after_failure(reason, message, at=at, duration=duration))

    def record_skipped(self, target: CompanyTarget) -> State | None:
        """A scheduled poll did not run because the previous one still did (None: unknown target)."""
        snapshot = self.state.company(target)
        return None if snapshot is None else self._put(snapshot.after_skipped_run())

    def record_job_logs(self, target: CompanyTarget, result: SweepResult) -> State:
        """A job-log poll answered: its finished jobs are counted (once) and the recent ones kept;
        invalid records count with the company's others. The active-job state is untouched."""
        snapshot = self._snapshot(target)
        book = snapshot.job_logs.after_sweep(result, started_at=self.started_at, plan=self.job_logs.plan,
                                             recent_max=self.job_logs.recent_max)
        return self._put(replace(snapshot, job_logs=book,
                                 invalid_records_total=snapshot.invalid_records_total + result.invalid_records))

    def record_job_log_failure(self, target: CompanyTarget, reason: Reason) -> State | None:
        """A job-log poll failed (or, SKIPPED, could not start): counted, nothing else changes;
        `scene7_up` stays what the active polls make it. None: unknown target."""
        snapshot = self.state.company(target)
        if snapshot is None:
            return None
        return self._put(replace(snapshot, job_logs=snapshot.job_logs.after_failure(reason)))

    def job_log_book(self, target: CompanyTarget) -> JobLogBook:
        return self._snapshot(target).job_logs

    def record_discovered(self, placeholder: CompanyTarget, targets: Iterable[CompanyTarget]) -> State:
        """An account's companies are known: its placeholder and any company it no longer has
        give way to one target each; a company already known keeps its state."""
        mine = tuple(self._snapshot(t) for t in targets)
        others = tuple(s for s in self.state.companies if s.target.account != placeholder.account)
        return self._swap((*others, *mine))

    def reconfigure(self, accounts: Collection[str], *, max_age: float, guard: SeriesGuard,
                    job_logs: JobLogSettings | None = None) -> State:
        """A configuration read again: the companies of accounts no longer configured go, the
        others keep their state (counters and the job logs counted included); staleness, the
        series guard and the job-log settings follow the new settings."""
        self.guard = guard
        if job_logs is not None:
            self.job_logs = job_logs
        self.state = replace(self.state, max_age=max_age, recent_window=self.job_logs.plan.recent_window,
                             job_logs_enabled=self.job_logs.enabled)
        return self._swap(tuple(s for s in self.state.companies if s.target.account in accounts))

    # -- the swap -------------------------------------------------------------------------------

    def _snapshot(self, target: CompanyTarget) -> CompanySnapshot:
        return self.state.company(target) or CompanySnapshot(target)

    def _put(self, snapshot: CompanySnapshot) -> State:
        others = tuple(s for s in self.state.companies if s.target != snapshot.target)
        return self._swap((*others, snapshot))

    def _swap(self, companies: tuple[CompanySnapshot, ...]) -> State:
        ordered = tuple(sorted(companies, key=lambda s: (s.target.label, s.target.handle)))
        series = self.guard.series((job for s in ordered for job in s.jobs),
                                   sum(len(s.job_logs.recent) for s in ordered))
        over = self.guard.over(series)
        dropped = self.state.series_dropped_total + (series if over else 0)
        if over == self.state.per_job_series:  # the guard trips or releases: say so once
            if over:
                log.warning("%d per-job series exceed poll.max_series=%d: exporting only per-company "
                            "aggregates and health until they fit again", series, self.guard.max_series)
            else:
                log.info("per-job series (%d) fit poll.max_series again: exporting them", series)
        self.state = replace(self.state, companies=ordered, generation=self.state.generation + 1,
                             series_dropped_total=dropped, per_job_series=not over)
        for subscriber in self._subscribers:
            subscriber(self.state)
        return self.state
