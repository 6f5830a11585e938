"""Immutable snapshots of what the poller knows, and the store that swaps them in.

A poll never edits what a scrape may be reading: it builds a new `CompanySnapshot` from the
previous one and the answer, and the store replaces the whole `State` in one assignment. A
reader holding a `State` sees one consistent world, never half a poll.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.models import ActiveJob, TaskState

log = logging.getLogger(__name__)

FINAL_STATES = ("Done", "Failed", "Vanished")
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

    def is_stale(self, now: float, max_age: float) -> bool:
        """No successful poll within max_age: its per-job series are not exported."""
        return self.fetched_at is None or now - self.fetched_at > max_age

    def after_success(
        self, jobs: tuple[ActiveJob, ...], *, at: float, duration: float, invalid_records: int
    ) -> CompanySnapshot:
        return replace(
            self,
            jobs=jobs,
            fetched_at=at,
            up=True,
            attempted_at=at,
            poll_duration=duration,
            polls_total=self.polls_total + 1,
            invalid_records_total=self.invalid_records_total + invalid_records,
            finished_total=_count_finished(self, jobs),
            last_error=None,
        )

    def after_failure(self, reason: str, message: str, *, at: float, duration: float) -> CompanySnapshot:
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
        return replace(self, errors_total=_add(self.errors_total, "skipped"))


def _add(counts: Mapping[str, int], key: str) -> Mapping[str, int]:
    updated = dict(counts)
    updated[key] = updated.get(key, 0) + 1
    return MappingProxyType(updated)


def _task_states(jobs: Iterable[ActiveJob]) -> dict[tuple[str, str], tuple[str, TaskState]]:
    return {
        (job.job_handle, task.task_type): (task.task_type, task.known_state)
        for job in jobs
        for task in job.task_progress_array
    }


def _count_finished(previous: CompanySnapshot, jobs: tuple[ActiveJob, ...]) -> Mapping[tuple[str, str], int]:
    """Tasks seen to reach Done or Failed, or to vanish unfinished, since the last poll.

    The first successful poll counts nothing: a task already finished when the exporter starts
    was not seen to finish, and counting it would look like a burst of failures after every
    restart. Every task type seen gets its three series at 0, so the first real increase is
    visible to `increase()`.
    """
    counts = dict(previous.finished_total)
    now = _task_states(jobs)
    for task_type, _ in now.values():
        for final_state in FINAL_STATES:
            counts.setdefault((task_type, final_state), 0)
    if previous.fetched_at is not None:
        before = _task_states(previous.jobs)
        for key, (task_type, state) in now.items():
            earlier = before.get(key)
            if state.finished and (earlier is None or not earlier[1].finished):
                counts[(task_type, state.value)] += 1
        for key, (task_type, state) in before.items():
            if key not in now and not state.finished:
                counts[(task_type, "Vanished")] += 1
    return MappingProxyType(counts)


@dataclass(frozen=True)
class State:
    """Everything a scrape renders: every company's snapshot, as of one moment."""

    companies: tuple[CompanySnapshot, ...] = ()
    generation: int = 0
    series_dropped_total: int = 0
    per_job_series: bool = True

    def company(self, target: CompanyTarget) -> CompanySnapshot | None:
        for snapshot in self.companies:
            if snapshot.target == target:
                return snapshot
        return None


def per_job_series_count(jobs: Iterable[ActiveJob]) -> int:
    """Series a company's jobs produce: 9 per job and 11 per task (see `collector`)."""
    return sum(9 + 11 * len(job.task_progress_array) for job in jobs)


class Store:
    """Holds the current `State`; replaced whole, never edited."""

    def __init__(self, max_series: int = 0) -> None:
        self.state = State()
        self.max_series = max_series

    def put(self, snapshot: CompanySnapshot) -> State:
        """Swap in a new snapshot of one company (added if new); returns the new State."""
        others = tuple(s for s in self.state.companies if s.target != snapshot.target)
        return self._swap((*others, snapshot))

    def remove(self, target: CompanyTarget) -> State:
        return self._swap(tuple(s for s in self.state.companies if s.target != target))

    def record_skipped_run(self, target: CompanyTarget) -> State | None:
        """Count a scheduled poll that did not run because the previous one still did."""
        snapshot = self.state.company(target)
        return None if snapshot is None else self.put(snapshot.after_skipped_run())

    def _swap(self, companies: tuple[CompanySnapshot, ...]) -> State:
        ordered = tuple(sorted(companies, key=lambda s: (s.target.label, s.target.handle)))
        series = per_job_series_count(job for s in ordered for job in s.jobs)
        over = self.max_series > 0 and series > self.max_series
        dropped = self.state.series_dropped_total + (series if over else 0)
        if over == self.state.per_job_series:  # the guard trips or releases: say so once
            if over:
                log.warning("%d per-job series exceed poll.max_series=%d: exporting only per-company "
                            "aggregates and health until they fit again", series, self.max_series)
            else:
                log.info("per-job series (%d) fit poll.max_series again: exporting them", series)
        self.state = State(ordered, self.state.generation + 1, dropped, per_job_series=not over)
        return self.state
