"""What the jobs page and the JSON API show, computed once for both from the store's State.

An on-call engineer opening the exporter asks first what is stuck or failing, then how long the
rest will take. So every active job is a row with its tasks; a task is stuck when it is
Processing and IPS has not updated its progress for `STUCK_AFTER_SECONDS` (the threshold of the
Scene7TaskStuck alert), and the jobs with a stuck task come first (the longest without progress
first), then those with a failed task, then the others, oldest first. Filtering, ordering and
paging happen here, on the server, over the index of the State (exporter/jobindex.py), whose
numbers make it a few ms at 10,000 jobs, done once for the requests with the same filters; only
the rows of the page asked for are built. Whether a task is stuck is decided every
`STUCK_STEP_SECONDS`: it becomes stuck as time passes, not only at a poll.

Every name here comes from IPS and is untrusted: the HTML page escapes it, the JSON encoder
quotes it. Field names of the `as_json` dicts are the JSON API's (docs/api-v1.schema.json):
renaming one breaks users' scripts.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.jobindex import Entry, JobIndex, JobIndexer, no_progress_since
from exporter.joblogs import FILE_RESULTS
from exporter.models import JobOutcome, TaskProgress, TaskState
from exporter.rates import Measure, eta_seconds
from exporter.snapshot import CompanySnapshot, CompanyTarget, State

STUCK_AFTER_SECONDS = 1800.0  # Scene7TaskStuck in dashboards/scene7.rules.yml
PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_TEXT_FILTER = 200
STUCK_STEP_SECONDS = 5.0
MAX_ORDERS = 32  # orders of filter sets kept
MAX_FINISHED = 100  # recently finished jobs shown, worst first (the store keeps job_logs.recent_max each)
_OUTCOME_RANK = {outcome.value: rank for rank, outcome in enumerate(JobOutcome)}  # worst first


class BadQuery(ValueError):
    """A query parameter the API does not accept: the answer is a 400 with this message."""


@dataclass(frozen=True)
class Query:
    """Which jobs to show: filters (all optional, combined) and the page."""

    company: str | None = None  # company label, exact
    state: str | None = None  # job state, exact (Running, WaitingClient, ...)
    job_type: str | None = None  # job type, exact (ImageServingPublishJob, ...)
    text: str | None = None  # part of the job name, any case
    attention: bool = False  # only jobs with a stuck or failed task
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> Query:
        def one(name: str) -> str | None:
            values = params.get(name, [])
            return values[-1] if values and values[-1] != "" else None

        def number(name: str, default: int, top: int) -> int:
            raw = one(name)
            if raw is None:
                return default
            if not raw.isdigit() or not 1 <= int(raw) <= top:
                raise BadQuery(f"{name} must be a whole number from 1 to {top}")
            return int(raw)

        text = one("q")
        if text is not None and len(text) > MAX_TEXT_FILTER:
            raise BadQuery(f"q is at most {MAX_TEXT_FILTER} characters")
        attention = one("attention")
        if attention not in (None, "0", "1", "true", "false"):
            raise BadQuery("attention must be 1 or 0")
        return cls(company=one("company"), state=one("state"), job_type=one("type"), text=text,
                   attention=attention in ("1", "true"), page=number("page", 1, 1_000_000),
                   per_page=number("per_page", PER_PAGE, MAX_PER_PAGE))

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string's parameters of this query with `changes`: for links between pages."""
        values = {"company": self.company, "state": self.state, "type": self.job_type, "q": self.text,
                  "attention": "1" if self.attention else None, "page": self.page, "per_page": self.per_page}
        values.update(changes)
        defaults = {"page": 1, "per_page": PER_PAGE}
        return {k: str(v) for k, v in values.items() if v is not None and defaults.get(k) != v}


@dataclass(frozen=True)
class TaskRow:
    task_type: str
    state: str
    processed: int
    processing: int
    pending: int
    progress: float | None  # IPS's progress, 0..1 (None: IPS sent no number, NaN or infinity)
    last_progress_update: float  # Unix seconds
    since_progress: float  # seconds
    stuck: bool
    failed: bool
    rate: float | None  # items per second, measured over the last polls
    eta: float | None  # seconds; None: no rate measured, or a rate of zero

    def as_json(self) -> dict[str, Any]:
        return {
            "task_type": self.task_type, "state": self.state, "processed": self.processed,
            "processing": self.processing, "pending": self.pending, "progress_ratio": self.progress,
            "last_progress_update": iso(self.last_progress_update), "seconds_since_progress": self.since_progress,
            "stuck": self.stuck, "failed": self.failed, "items_per_second": self.rate, "eta_seconds": self.eta,
        }


@dataclass(frozen=True)
class JobRow:
    company: str
    job_handle: str
    name: str
    job_type: str
    state: str
    start: float  # Unix seconds
    age: float  # seconds
    tasks: tuple[TaskRow, ...]

    @property
    def stuck(self) -> bool:
        return any(task.stuck for task in self.tasks)

    @property
    def failed(self) -> bool:
        return any(task.failed for task in self.tasks)

    def as_json(self) -> dict[str, Any]:
        return {
            "company": self.company, "job_handle": self.job_handle, "name": self.name, "type": self.job_type,
            "state": self.state, "start": iso(self.start), "age_seconds": self.age, "stuck": self.stuck,
            "failed": self.failed, "tasks": [task.as_json() for task in self.tasks],
        }


@dataclass(frozen=True)
class FinishedRow:
    company: str
    name: str
    log_type: str
    outcome: str
    end: float
    duration: float
    files: Mapping[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"company": self.company, "name": self.name, "log_type": self.log_type, "outcome": self.outcome,
                "end": iso(self.end), "duration_seconds": self.duration, "files": dict(self.files)}


@dataclass(frozen=True)
class JobsPage:
    query: Query
    matching: int  # jobs matching the filters, on every page
    stuck: int  # of those, with a stuck task
    failed: int  # of those, with a failed task
    jobs: tuple[JobRow, ...]  # this page's
    finished: tuple[FinishedRow, ...]  # recently finished jobs of the companies asked for, worst first
    finished_known: int  # of which the store keeps that many: `finished` is the first MAX_FINISHED
    generated: float

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.matching / self.query.per_page))

    def as_json(self) -> dict[str, Any]:
        return {
            "generated": iso(self.generated), "page": self.query.page, "per_page": self.query.per_page,
            "pages": self.pages, "matching": self.matching, "stuck": self.stuck, "failed": self.failed,
            "jobs": [job.as_json() for job in self.jobs], "finished": [row.as_json() for row in self.finished],
            "finished_known": self.finished_known,
        }


class JobsView:
    """Builds `JobsPage`s and the status from the store's current State and its jobs index."""

    def __init__(self, state: Callable[[], State], index: JobIndexer, *,
                 next_poll: Callable[[CompanyTarget], float | None] = lambda _target: None,
                 clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._index = index
        self._next_poll = next_poll
        self._clock = clock
        # The jobs matching a set of filters, in page order, by (index, filters, stuck-time step):
        # pages of the same filters (browsers refreshing, the next page) sort only once.
        self._orders: OrderedDict[tuple[Any, ...], _Order] = OrderedDict()

    async def page(self, query: Query) -> JobsPage:
        index = await self._index.fresh()
        now = self._clock()
        # Stuck is judged at the start of a step of STUCK_STEP_SECONDS, the same for the order,
        # the counts and the rows: a task shows as stuck at most that late.
        stuck_before = now - now % STUCK_STEP_SECONDS - STUCK_AFTER_SECONDS
        order = self._order(index, query, stuck_before)
        start = (query.page - 1) * query.per_page
        rows = tuple(self._job_row(entry, index, now, stuck_before)
                     for entry in order.entries[start : start + query.per_page])
        state = self._state()
        finished = _finished(c for c in state.companies if query.company in (None, c.target.label))
        return JobsPage(query, len(order.entries), order.stuck, order.failed, rows, finished[:MAX_FINISHED],
                        len(finished), now)

    def _order(self, index: JobIndex, query: Query, stuck_before: float) -> _Order:
        key = (id(index), index.generation, query.company, query.state, query.job_type, query.text,
               query.attention, stuck_before)
        order = self._orders.get(key)
        if order is not None:
            self._orders.move_to_end(key)
            return order
        stuck: list[Entry] = []
        failed: list[Entry] = []
        others: list[Entry] = []
        failed_total = 0
        for entry in index.entries:  # oldest first
            is_stuck = entry.stuck(stuck_before)
            if not _matches(entry, query, is_stuck):
                continue
            failed_total += entry.failed
            (stuck if is_stuck else failed if entry.failed else others).append(entry)
        stuck.sort(key=lambda e: e.oldest_processing_update)
        order = _Order((*stuck, *failed, *others), len(stuck), failed_total)
        self._orders[key] = order
        while len(self._orders) > MAX_ORDERS:
            self._orders.popitem(last=False)
        return order

    def status(self) -> dict[str, Any]:
        now = self._clock()
        state = self._state()
        return {
            "generated": iso(now),
            "companies": [self._company_status(company, state, now) for company in state.companies],
        }

    def filters(self) -> dict[str, list[str]]:
        """The values the filters can take: companies (now), job states and types (as of the
        last page built)."""
        index = self._index.current
        return {"company": sorted({c.target.label for c in self._state().companies}),
                "state": list(index.states), "type": list(index.types)}

    def _company_status(self, company: CompanySnapshot, state: State, now: float) -> dict[str, Any]:
        reason, _, message = (company.last_error or "").partition(": ")
        next_poll = self._next_poll(company.target)
        return {
            "company": company.target.label, "handle": company.target.handle, "account": company.target.account,
            "up": company.up, "polled": company.attempted_at is not None,
            "fresh": state.is_fresh(company, now),
            "last_success": iso(company.fetched_at), "last_attempt": iso(company.attempted_at),
            "last_poll_duration_seconds": company.poll_duration,
            "last_error": {"reason": reason, "message": message} if company.last_error else None,
            "next_poll": iso(next_poll), "active_jobs": len(company.jobs),
        }

    @staticmethod
    def _job_row(entry: Entry, index: JobIndex, now: float, stuck_before: float) -> JobRow:
        job = entry.job
        measures = index.measures.get(entry.target, {})
        tasks = tuple(_task_row(task, measures.get((job.job_handle, task.task_type)), now, stuck_before)
                      for task in job.task_progress_array)
        return JobRow(entry.target.label, job.job_handle, job.name, job.job_type, str(job.state),
                      entry.start, max(0.0, now - entry.start), tasks)


@dataclass(frozen=True)
class _Order:
    entries: tuple[Entry, ...]  # the jobs matching, in page order
    stuck: int
    failed: int


def _matches(entry: Entry, query: Query, stuck: bool) -> bool:
    job = entry.job
    return ((query.company is None or entry.target.label == query.company)
            and (query.state is None or str(job.state) == query.state)
            and (query.job_type is None or job.job_type == query.job_type)
            and (query.text is None or query.text.casefold() in job.name.casefold())
            and (not query.attention or entry.failed or stuck))


def _task_row(task: TaskProgress, measure: Measure | None, now: float, stuck_before: float) -> TaskRow:
    updated = task.last_progress_update.timestamp()
    stuck = task.known_state is TaskState.PROCESSING and no_progress_since(updated, stuck_before)
    failed = task.known_state is TaskState.FAILED
    remaining = task.num_pending + task.num_processing
    eta = None if stuck or failed else eta_seconds(measure, remaining)
    progress = task.progress if math.isfinite(task.progress) else None
    return TaskRow(task.task_type, str(task.task_state or TaskState.UNKNOWN), task.num_processed, task.num_processing,
                   task.num_pending, progress, updated, max(0.0, now - updated), stuck, failed,
                   measure.rate if measure is not None else None, eta)


def _finished(companies: Iterable[CompanySnapshot]) -> tuple[FinishedRow, ...]:
    rows = [
        FinishedRow(company.target.label, job.job_name, job.log_type, job.outcome, job.end, job.duration,
                    dict(zip(FILE_RESULTS, job.files, strict=True)))
        for company in companies for job in company.job_logs.recent
    ]
    return tuple(sorted(rows, key=lambda row: (_OUTCOME_RANK.get(row.outcome, len(_OUTCOME_RANK)), -row.end)))


def iso(moment: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC time, to the second: what the JSON API and the page show."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
