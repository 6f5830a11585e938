"""The jobs page's index of the State: built at most once per State, off the scrapes' way.

At 10,000 jobs, reading every job's dates and task states to sort them takes a quarter of a
second of CPU (an aware datetime's timestamp() alone is 2 us, and there are 35,000). Done at
every request it would block the event loop that serves /metrics; so a request for a new State
starts the build of an index holding what the page sorts and filters by as plain numbers, and
each task's processing rate (exporter/rates.py) measured since the index before, and the
requests after it read that index. The build runs on the event loop in slices of
`SLICE_SECONDS`, with a turn for the scrapes between them; a job the poll gave unchanged keeps its
entry. Nothing is built while nobody asks: the rates are then measured from the next two States
asked for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

from exporter.models import ActiveJob, TaskState
from exporter.rates import Measure, TaskKey, next_measure
from exporter.snapshot import CompanyTarget, State

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.005
STALE_SECONDS = 2.0
_CHECK_EVERY = 64  # jobs between two looks at the clock


@dataclass(frozen=True, slots=True)
class Entry:
    """A job, with what the page sorts and filters it by."""

    target: CompanyTarget
    job: ActiveJob
    start: float  # Unix seconds
    oldest_processing_update: float  # the oldest lastProgressUpdate of its Processing tasks; inf: none
    failed: bool  # one of its tasks Failed

    def stuck(self, before: float) -> bool:
        """A Processing task of this job made no progress since `before` (Unix seconds)."""
        return no_progress_since(self.oldest_processing_update, before)


def no_progress_since(last_progress_update: float, before: float) -> bool:
    """What makes a Processing task stuck: its last progress is before `before`, and is a time
    (IPS sends the epoch, 0, for none)."""
    return 0 < last_progress_update < before


@dataclass(frozen=True)
class JobIndex:
    generation: int = -1  # of the State it was built from
    entries: tuple[Entry, ...] = ()  # oldest start first
    # Each entry by its job's id: a job the next poll has unchanged (the same model: see
    # ResponseReader's fingerprints) keeps its entry. The entries hold the jobs, so no id is reused.
    by_job: Mapping[int, Entry] = field(default_factory=dict)
    measures: Mapping[CompanyTarget, Mapping[TaskKey, Measure]] = field(default_factory=dict)
    polled_at: Mapping[CompanyTarget, float] = field(default_factory=dict)  # the polls the measures are of
    states: tuple[str, ...] = ()  # the job states and types seen, for the page's filters
    types: tuple[str, ...] = ()


def index_steps(state: State, previous: JobIndex) -> Generator[None, None, JobIndex]:
    """Build the index of `state` from the `previous` one; yields now and then, so that a caller
    can give the event loop a turn."""
    entries: list[Entry] = []
    by_job: dict[int, Entry] = {}
    measures = dict(previous.measures)
    polled_at = dict(previous.polled_at)
    states: set[str] = set()
    types: set[str] = set()
    count = 0
    for company in state.companies:
        target = company.target
        measured = company.fetched_at is not None and polled_at.get(target) != company.fetched_at
        before = previous.measures.get(target, {})
        now_measures: dict[TaskKey, Measure] = {}
        at = company.fetched_at or 0.0  # read only when measured, which needs a poll time
        for job in company.jobs:
            if measured:
                for task in job.task_progress_array:
                    key = (job.job_handle, task.task_type)
                    now_measures[key] = next_measure(before.get(key), at, task.num_processed)
            known = previous.by_job.get(id(job))
            entry = known if known is not None and known.job is job and known.target == target else _entry(target, job)
            entries.append(entry)
            by_job[id(job)] = entry
            states.add(str(job.state))
            types.add(job.job_type)
            count += 1
            if count % _CHECK_EVERY == 0:
                yield
        if measured:
            measures[target] = MappingProxyType(now_measures)
            polled_at[target] = at
    targets = {company.target for company in state.companies}
    for gone in measures.keys() - targets:
        del measures[gone]
        polled_at.pop(gone, None)
    entries.sort(key=lambda e: (e.start, e.target.label, e.job.job_handle))
    return JobIndex(state.generation, tuple(entries), MappingProxyType(by_job), MappingProxyType(measures),
                    MappingProxyType(polled_at), tuple(sorted(states)), tuple(sorted(types)))


def _entry(target: CompanyTarget, job: ActiveJob) -> Entry:
    oldest = math.inf
    failed = False
    for task in job.task_progress_array:
        state = task.known_state
        if state is TaskState.PROCESSING:
            oldest = min(oldest, task.last_progress_update.timestamp())
        elif state is TaskState.FAILED:
            failed = True
    return Entry(target, job, job.start_date.timestamp(), oldest, failed)


def build_index(state: State, previous: JobIndex) -> JobIndex:
    steps = index_steps(state, previous)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(JobIndex, done.value)


async def build_index_in_turns(state: State, previous: JobIndex) -> JobIndex:
    steps = index_steps(state, previous)
    turn_started = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(JobIndex, done.value)
        if time.perf_counter() - turn_started > SLICE_SECONDS:
            await asyncio.sleep(0)
            turn_started = time.perf_counter()


class JobIndexer:
    """The index of the store's State, built when the page or the API asks for it, never at a
    poll: an exporter whose page nobody opens spends nothing on it. Requests that come while an
    index is built wait for that same build."""

    def __init__(self, state: Callable[[], State], clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._clock = clock
        self.current = JobIndex()
        self._built_at = -math.inf
        self._build_started = -math.inf
        self._task: asyncio.Task[None] | None = None

    async def fresh(self) -> JobIndex:
        """The index of the current State. If it is not built yet, the build starts. While it
        runs, the index before it is answered if that one was built less than `STALE_SECONDS`
        before the build began: pages asked for often (browsers refreshing) never wait for a
        build, and show a poll one refresh later; a page asked for after a pause waits for it,
        as the first does."""
        for _ in range(2):
            if self.current.generation == self._state().generation:
                break
            if self._task is None or self._task.done():
                self._build_started = self._clock()
                self._task = asyncio.get_running_loop().create_task(self._build(self._state()))
            if self._build_started - self._built_at < STALE_SECONDS:
                break
            await asyncio.shield(self._task)  # a request given up does not stop the build the others wait for
        return self.current

    def now(self) -> JobIndex:
        """The index of the current State, built at once: for a caller with no event loop."""
        state = self._state()
        if self.current.generation != state.generation:
            self.current = build_index(state, self.current)
            self._built_at = self._clock()
        return self.current

    async def _build(self, state: State) -> None:
        try:
            self.current = await build_index_in_turns(state, self.current)
            self._built_at = self._clock()
        except Exception:  # a bug: the page keeps the last index, the metrics go on
            log.exception("the jobs page's index of State %d could not be built", state.generation)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
