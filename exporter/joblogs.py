"""What became of finished jobs: the job-log sweep of one company, and the book it feeds.

Every finished job is counted once, whatever getJobLogs' date filter applies to (a job's start,
we believe; its end, perhaps) and however long the job ran:

- **Sweep.** Each poll asks for the logs of the window [previous complete sweep - lookback, now]
  (the first poll: [now - recent_window - lookback, now]), sorted by StartDate. A short job,
  never seen active, started and ended inside it under either reading of the filter. A window
  answered with `num_rows` logs may have lost some: it is halved, both halves asked, and so on
  down to one second, within `max_calls` calls a poll; windows left over are asked first thing
  at the next poll (the backlog).
- **Vanished jobs.** A job the active poll saw leave `getActiveJobs` is looked up by the
  startDate the exporter saw, in a window of one second either side of it, if its start lies
  before the sweep's window and the sweep did not find its finished log (a job longer than the
  lookback, if the filter reads starts; if it reads ends, the sweep already had it).
- **Counted once.** A finished log (one with an endDate) is counted if its key (the log's
  jobHandle, or its jobName and startDate without one) was not counted before and its endDate
  is after both the process start (a restart is not a burst of old errors) and `now -
  retention`. A key is remembered until its endDate is older than `now - retention`: past that,
  the second condition refuses it anyway, so memory is bounded and the rule holds forever.

Nothing here does I/O: `sweep` calls the `fetch` it is given, `JobLogBook.after_sweep` is pure.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType

from exporter.errors import Reason
from exporter.models import JobLog, JobOutcome
from exporter.parse import JobLogsResult

log = logging.getLogger(__name__)

NUM_ROWS = 1000  # numRows of each getJobLogs call
MAX_CALLS_PER_POLL = 24  # getJobLogs calls of one job-log poll, splits and look-ups included
MIN_WINDOW_SECONDS = 1.0  # a saturated window this narrow is not split further
LOOKUP_MARGIN_SECONDS = 1.0  # a vanished job is looked up in [startDate - 1 s, startDate + 1 s]
LOOKUP_ATTEMPTS = 12  # look-ups of a vanished job before it is given up
MAX_BACKLOG = 32  # windows carried to the next poll; the oldest are merged beyond it
MAX_PENDING = 10_000  # vanished jobs waiting for their log
MAX_REMEMBERED = 200_000  # keys of counted logs (about 200 days at 1,000 jobs a day)
MAX_LOG_TYPES = 64  # distinct log_type label values per company; later ones are "other"
LABEL_MAX = 128  # job_name and log_type label values are cut to this many characters

DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
OUTCOMES = tuple(outcome.value for outcome in JobOutcome)
FILE_RESULTS = ("success", "error", "warning", "duplicate", "update")
OTHER_LOG_TYPE = "other"

Window = tuple[float, float]
Fetch = Callable[[datetime, datetime, int], Awaitable[JobLogsResult]]
_EMPTY: Mapping[str, int] = MappingProxyType({})


def lookback_for(interval: float, poll_interval: float) -> float:
    """How far before the previous sweep each sweep reaches back: an hour, or more for long
    intervals. A job never seen active ran between two active polls: far less than this."""
    return max(3600.0, 2 * interval, 3 * poll_interval)


def retention_for(recent_window: float, lookback: float) -> float:
    """How long the key of a counted log is remembered, and the oldest endDate counted."""
    return max(recent_window, 86400.0) + lookback


def cap_label(value: str, limit: int = LABEL_MAX) -> str:
    """A label value from IPS cut to `limit` characters (the last one an ellipsis)."""
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def log_key(entry: JobLog) -> str:
    if entry.job_handle:
        return entry.job_handle
    start = entry.start_date.timestamp() if entry.start_date else ""
    return f"{entry.job_name}\x00{start}"


def _stamp(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


@dataclass(frozen=True)
class Pending:
    """A job that left getActiveJobs, waiting for its finished log."""

    name: str
    start: float
    vanished_at: float
    attempts: int = 0


@dataclass(frozen=True)
class SweepResult:
    """What one job-log poll found: logs (one per key), the calls made, what is left to ask."""

    logs: tuple[JobLog, ...]
    calls: int
    now: float
    backlog: tuple[Window, ...] = ()
    looked_up: frozenset[str] = frozenset()  # vanished jobs asked for, found or not
    invalid_records: int = 0
    first_invalid: str = ""
    saturated: int = 0  # windows of MIN_WINDOW_SECONDS still answered with numRows logs


@dataclass(frozen=True)
class Plan:
    """The settings a sweep follows."""

    lookback: float = 3600.0
    recent_window: float = 86400.0
    max_calls: int = MAX_CALLS_PER_POLL
    num_rows: int = NUM_ROWS

    @property
    def retention(self) -> float:
        return retention_for(self.recent_window, self.lookback)


def first_low(book: JobLogBook, now: float, plan: Plan) -> float:
    """The oldest moment the sweep of this poll reaches back to."""
    if book.swept_until is None:
        low = now - plan.recent_window - plan.lookback
    else:
        low = min(book.swept_until, now) - plan.lookback
    return max(low, now - plan.retention)


def _merge_backlog(windows: Iterable[Window], now: float, plan: Plan) -> tuple[Window, ...]:
    """Windows still to ask, newest first; at most MAX_BACKLOG, the oldest merged into one."""
    live = {w for w in windows if w[1] >= now - plan.retention}
    # a window inside another one left to ask adds nothing
    inner = {w for w in live if any(o != w and o[0] <= w[0] and w[1] <= o[1] for o in live)}
    kept = sorted(live - inner, key=lambda w: (w[1], w[0]), reverse=True)
    if len(kept) > MAX_BACKLOG:
        tail = kept[MAX_BACKLOG - 1 :]
        kept = [*kept[: MAX_BACKLOG - 1], (min(w[0] for w in tail), max(w[1] for w in tail))]
    return tuple(kept)


async def sweep(fetch: Fetch, book: JobLogBook, *, now: float, plan: Plan) -> SweepResult:
    """One job-log poll of a company: the sweep of its window (split while saturated), the
    backlog, then look-ups of vanished jobs, in at most `plan.max_calls` calls of `fetch`."""
    low = first_low(book, now, plan)
    found: dict[str, JobLog] = {}
    invalid, first_invalid, calls, saturated = 0, "", 0, 0

    def take(result: JobLogsResult) -> None:
        nonlocal invalid, first_invalid
        for entry in result.logs:
            key = log_key(entry)
            if key not in found or (found[key].end_date is None and entry.end_date is not None):
                found[key] = entry
        if result.invalid_records and not invalid:
            first_invalid = result.first_invalid
        invalid += result.invalid_records

    due = [p for p in book.pending.values() if p.start < low]
    due.sort(key=lambda p: p.vanished_at)
    for_windows = plan.max_calls - min(len(due), plan.max_calls // 2)
    windows: deque[Window] = deque([(low, now), *book.backlog])
    while windows and calls < for_windows:
        start, end = windows.popleft()
        result = await fetch(_stamp(start), _stamp(end), plan.num_rows)
        calls += 1
        take(result)
        if len(result.logs) + result.invalid_records >= plan.num_rows:
            if end - start > MIN_WINDOW_SECONDS:
                middle = (start + end) / 2
                windows.appendleft((start, middle))
                windows.appendleft((middle, end))  # the newer half first
            else:
                saturated += 1
    finished_names = {entry.job_name for entry in found.values() if entry.end_date is not None}
    looked_up: set[str] = set()
    for pending in due:
        if calls >= plan.max_calls:
            break
        if pending.name in finished_names:
            continue
        result = await fetch(_stamp(pending.start - LOOKUP_MARGIN_SECONDS),
                             _stamp(pending.start + LOOKUP_MARGIN_SECONDS), plan.num_rows)
        calls += 1
        take(result)
        looked_up.add(pending.name)
    return SweepResult(tuple(found.values()), calls, now, _merge_backlog(windows, now, plan), frozenset(looked_up),
                       invalid, first_invalid, saturated)


@dataclass(frozen=True)
class RecentJob:
    """A job that ended recently, as its recent-job series show it."""

    key: str
    job_name: str  # capped
    log_type: str  # capped
    outcome: str
    end: float
    files: tuple[int, int, int, int, int]  # as FILE_RESULTS
    duration: float  # endDate - startDate, negative as 0


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket of DURATION_BUCKETS (the last one +Inf, not cumulative) and the sum."""

    buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    total: float = 0.0

    def add(self, value: float) -> Histogram:
        index = next((i for i, bound in enumerate(DURATION_BUCKETS) if value <= bound), len(DURATION_BUCKETS))
        buckets = list(self.buckets)
        buckets[index] += 1
        return Histogram(tuple(buckets), self.total + value)

    def cumulative(self) -> list[tuple[str, float]]:
        bounds = [*(f"{bound:g}" for bound in DURATION_BUCKETS), "+Inf"]
        running, out = 0, []
        for bound, count in zip(bounds, self.buckets, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


def _files(entry: JobLog) -> tuple[int, int, int, int, int]:
    return (entry.file_success_count, entry.file_error_count, entry.file_warning_count,
            entry.file_duplicate_count, entry.file_update_count)


def _sum(a: tuple[int, int, int, int, int], b: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


@dataclass(frozen=True)
class JobLogBook:
    """What one company's job-log polls have found, and what they remember to count once."""

    polls_total: int = 0
    errors_total: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    last_success: float | None = None
    calls_total: int = 0  # getJobLogs calls made
    last_calls: int = 0
    # log_type -> counts; every log_type seen has all its outcomes and results
    finished: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    files: Mapping[str, tuple[int, int, int, int, int]] = field(default_factory=lambda: MappingProxyType({}))
    durations: Mapping[str, Histogram] = field(default_factory=lambda: MappingProxyType({}))
    last_end: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    recent: tuple[RecentJob, ...] = ()  # newest first
    counted: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # key -> endDate
    # jobName -> endDate of the finished logs seen: a vanished job among them needs no look-up
    ended_names: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    pending: Mapping[str, Pending] = field(default_factory=lambda: MappingProxyType({}))  # by job name
    swept_until: float | None = None
    backlog: tuple[Window, ...] = ()

    def after_vanished(self, jobs: Iterable[tuple[str, float]], *, at: float) -> JobLogBook:
        """Jobs (name, startDate) that left getActiveJobs: their logs are looked for."""
        pending = dict(self.pending)
        for name, start in jobs:
            if name not in self.ended_names:
                pending[name] = Pending(name, start, at)
        if len(pending) == len(self.pending):
            return self
        while len(pending) > MAX_PENDING:
            del pending[min(pending.values(), key=lambda p: p.vanished_at).name]
        return replace(self, pending=MappingProxyType(pending))

    def after_failure(self, reason: Reason) -> JobLogBook:
        errors = dict(self.errors_total)
        errors[reason] = errors.get(reason, 0) + 1
        polls = self.polls_total + (reason is not Reason.SKIPPED)
        return replace(self, polls_total=polls, errors_total=MappingProxyType(errors))

    def after_sweep(self, result: SweepResult, *, started_at: float, plan: Plan, recent_max: int) -> JobLogBook:
        """Count what `result` found that is finished, not counted yet and ended after both the
        process start and `now - retention`; keep the recent ones."""
        now = result.now
        horizon = max(started_at, now - plan.retention)
        counted = {key: end for key, end in self.counted.items() if end >= now - plan.retention}
        finished = {log_type: dict(counts) for log_type, counts in self.finished.items()}
        files = dict(self.files)
        durations = dict(self.durations)
        last_end = dict(self.last_end)
        recent = {job.key: job for job in self.recent}
        names = {name: end for name, end in self.ended_names.items() if end >= now - plan.retention}
        ended = sorted((e for e in result.logs if e.end_date is not None), key=lambda e: e.end_date or 0)
        for entry in ended:
            assert entry.end_date is not None
            end = entry.end_date.timestamp()
            log_type = cap_label(entry.log_type)
            if log_type not in finished and len(finished) >= MAX_LOG_TYPES:
                log_type = OTHER_LOG_TYPE
            counts = finished.setdefault(log_type, dict.fromkeys(OUTCOMES, 0))
            files.setdefault(log_type, (0, 0, 0, 0, 0))
            durations.setdefault(log_type, Histogram())
            last_end[log_type] = max(last_end.get(log_type, end), end)
            key = log_key(entry)
            names[entry.job_name] = end
            outcome = entry.outcome.value
            start = entry.start_date.timestamp() if entry.start_date is not None else end
            duration = max(end - start, 0.0)
            if end >= now - plan.recent_window:
                recent[key] = RecentJob(key, cap_label(entry.job_name), log_type, outcome, end, _files(entry), duration)
            if key in counted or end < horizon:
                continue
            counted[key] = end
            counts[outcome] += 1
            files[log_type] = _sum(files[log_type], _files(entry))
            durations[log_type] = durations[log_type].add(duration)
        if len(counted) > MAX_REMEMBERED:
            counted = dict(sorted(counted.items(), key=lambda item: item[1])[-MAX_REMEMBERED:])
        if len(names) > MAX_REMEMBERED:
            names = dict(sorted(names.items(), key=lambda item: item[1])[-MAX_REMEMBERED:])
        kept = sorted((job for job in recent.values() if job.end >= now - plan.recent_window),
                      key=lambda job: (job.end, job.key), reverse=True)[:recent_max]
        return replace(
            self,
            polls_total=self.polls_total + 1,
            last_success=now,
            calls_total=self.calls_total + result.calls,
            last_calls=result.calls,
            finished=MappingProxyType({k: MappingProxyType(v) for k, v in finished.items()}),
            files=MappingProxyType(files),
            durations=MappingProxyType(durations),
            last_end=MappingProxyType(last_end),
            recent=tuple(kept),
            counted=MappingProxyType(counted),
            ended_names=MappingProxyType(names),
            pending=MappingProxyType(self._pending_after(result, now, plan, names)),
            swept_until=now,  # what the window did not cover is in the backlog
            backlog=result.backlog,
        )

    def _pending_after(self, result: SweepResult, now: float, plan: Plan,
                       ended: Mapping[str, float]) -> dict[str, Pending]:
        """Vanished jobs whose finished log was seen go; those asked for once more count an
        attempt; those asked for too often or too long ago are given up."""
        pending = {}
        for name, waiting in self.pending.items():
            if name in ended:
                continue
            if name in result.looked_up:
                waiting = replace(waiting, attempts=waiting.attempts + 1)
            if waiting.attempts >= LOOKUP_ATTEMPTS or waiting.vanished_at < now - plan.retention:
                log.debug("no finished log found for job %r; given up", waiting.name)
                continue
            pending[name] = waiting
        return pending
