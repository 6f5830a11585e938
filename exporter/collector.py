"""Renders a `State` as Prometheus metric families: the metric contract lives here.

The collector is a pure function of one immutable State and the time: it yields families, the
prometheus-client encoders turn them into text. A stale company (no successful poll within
max_age) keeps only its health series, with `scene7_up` 0.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.errors import ERROR_REASONS
from exporter.models import ActiveJob, JobState, TaskProgress, TaskState
from exporter.snapshot import State

TASK_STATES = tuple(state.value for state in TaskState)
JOB_STATES = tuple(state.value for state in JobState)
ITEM_STATES = ("processed", "processing", "pending")

JOB_LABELS = ["company", "job_name", "job_type"]
TASK_LABELS = [*JOB_LABELS, "task_type"]

# name (as exposed, counters with _total) -> (type, labels, help without the poll sentence)
METRICS: dict[str, tuple[str, list[str], str]] = {
    "scene7_task_items": ("gauge", [*TASK_LABELS, "item_state"],
                          "Work items of an active task by item_state (numProcessed, numProcessing, numPending)."),
    "scene7_task_progress_ratio": ("gauge", TASK_LABELS, "Fraction of an active task that is complete (0..1)."),
    "scene7_task_state": ("gauge", [*TASK_LABELS, "state"],
                          "1 for the current taskState of an active task, 0 for the other states."),
    "scene7_task_last_progress_update_timestamp_seconds": (
        "gauge", TASK_LABELS, "When IPS last updated the progress of an active task (Unix time)."),
    "scene7_job_info": ("gauge", [*JOB_LABELS, "original_name", "server_name"], "An active job, value 1."),
    "scene7_job_state": ("gauge", [*JOB_LABELS, "state"],
                         "1 for the current state of an active job, 0 for the others."),
    "scene7_job_start_timestamp_seconds": ("gauge", JOB_LABELS, "When an active job started (Unix time)."),
    "scene7_tasks": ("gauge", ["company", "job_type", "task_type", "state"], "Active tasks by state."),
    "scene7_active_jobs": ("gauge", ["company"], "Active jobs of a company."),
    "scene7_tasks_finished_total": ("counter", ["company", "task_type", "final_state"],
                                    "Tasks seen to reach Done or Failed, or to vanish unfinished."),
    "scene7_up": ("gauge", ["company"], "1 if the last poll of the company succeeded and is recent, else 0."),
    "scene7_poll_duration_seconds": ("gauge", ["company"], "Duration of the last poll of the company."),
    "scene7_last_successful_poll_timestamp_seconds": (
        "gauge", ["company"], "When the company was last polled successfully (Unix time)."),
    "scene7_polls_total": ("counter", ["company"], "Polls of the company attempted."),
    "scene7_poll_errors_total": ("counter", ["company", "reason"], "Failed or skipped polls by reason."),
    "scene7_invalid_records_total": ("counter", ["company"], "Job records skipped as invalid."),
    "scene7_series_dropped_total": ("counter", [], "Per-job series not exported because of poll.max_series."),
    "scene7_exporter_build_info": ("gauge", ["version", "python_version"], "Build of the exporter, value 1."),
}
METRIC_NAMES: frozenset[str] = frozenset(METRICS)

Family = GaugeMetricFamily | CounterMetricFamily


Sample = tuple[list[str], float]


class SnapshotCollector(Collector):
    """Yields the metric families of one State at time `now`.

    Families are built one at a time, each just before it is encoded, so a render holds the
    samples of one family, not of all of them: at 10,000 jobs that is most of its memory.
    """

    def __init__(self, state: State, *, now: float, max_age: float, interval: float) -> None:
        self.state = state
        self.now = now
        self.max_age = max_age
        self.poll_note = f" From a background poll of IPS every {interval:g}s."
        self.fresh = [c for c in state.companies if not c.is_stale(now, max_age)]
        self._fresh_ids = {id(c) for c in self.fresh}

    def _family(self, name: str) -> Family:
        kind, labels, text = METRICS[name]
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return cls(name, text + self.poll_note, labels=labels)

    def describe(self) -> Iterator[Metric]:
        for name in METRICS:
            yield self._family(name)

    def collect(self) -> Iterator[Metric]:
        per_job = self.state.per_job_series
        for name in METRICS:
            if name in _PER_JOB and not per_job:
                samples: Iterable[Sample] = ()
            else:
                samples = getattr(self, "_" + name.removeprefix("scene7_"))()
            family = self._family(name)
            for labels, value in samples:
                family.add_metric(labels, value)
            yield family

    # -- per job and per task: unique jobs and tasks of fresh companies --------------------

    def _unique_jobs(self) -> Iterator[tuple[str, ActiveJob]]:
        for company in self.fresh:
            seen: set[str] = set()  # a repeated job name would duplicate series
            for job in company.jobs:
                if job.name not in seen:
                    seen.add(job.name)
                    yield company.target.label, job

    def _unique_tasks(self) -> Iterator[tuple[list[str], TaskProgress]]:
        for company in self.fresh:
            seen: set[tuple[str, str]] = set()
            for job in company.jobs:
                for task in job.task_progress_array:
                    if (job.name, task.task_type) not in seen:
                        seen.add((job.name, task.task_type))
                        yield [company.target.label, job.name, job.job_type, task.task_type], task

    def _task_items(self) -> Iterator[Sample]:
        for labels, task in self._unique_tasks():
            yield [*labels, "processed"], task.num_processed
            yield [*labels, "processing"], task.num_processing
            yield [*labels, "pending"], task.num_pending

    def _task_progress_ratio(self) -> Iterator[Sample]:
        for labels, task in self._unique_tasks():
            yield labels, task.progress

    def _task_state(self) -> Iterator[Sample]:
        for labels, task in self._unique_tasks():
            current = task.known_state.value
            for state in TASK_STATES:
                yield [*labels, state], 1 if state == current else 0

    def _task_last_progress_update_timestamp_seconds(self) -> Iterator[Sample]:
        for labels, task in self._unique_tasks():
            yield labels, task.last_progress_update.timestamp()

    def _job_info(self) -> Iterator[Sample]:
        for company, job in self._unique_jobs():
            yield [company, job.name, job.job_type, job.original_name, job.server_name], 1

    def _job_state(self) -> Iterator[Sample]:
        for company, job in self._unique_jobs():
            current = job.known_state.value
            for state in JOB_STATES:
                yield [company, job.name, job.job_type, state], 1 if state == current else 0

    def _job_start_timestamp_seconds(self) -> Iterator[Sample]:
        for company, job in self._unique_jobs():
            yield [company, job.name, job.job_type], job.start_date.timestamp()

    # -- per company aggregates of fresh companies ------------------------------------------

    def _tasks(self) -> Iterator[Sample]:
        for company in self.fresh:
            counts: dict[tuple[str, str], dict[str, int]] = {}
            for job in company.jobs:
                for task in job.task_progress_array:
                    by_state = counts.setdefault((job.job_type, task.task_type), {})
                    state = task.known_state.value
                    by_state[state] = by_state.get(state, 0) + 1
            for (job_type, task_type), by_state in sorted(counts.items()):
                for state in TASK_STATES:
                    yield [company.target.label, job_type, task_type, state], by_state.get(state, 0)

    def _active_jobs(self) -> Iterator[Sample]:
        for company in self.fresh:
            yield [company.target.label], len(company.jobs)

    # -- health of every company --------------------------------------------------------------

    def _tasks_finished_total(self) -> Iterator[Sample]:
        for company in self.state.companies:
            for (task_type, final_state), count in sorted(company.finished_total.items()):
                yield [company.target.label, task_type, final_state], count

    def _up(self) -> Iterator[Sample]:
        for company in self.state.companies:
            yield [company.target.label], 1 if company.up and id(company) in self._fresh_ids else 0

    def _poll_duration_seconds(self) -> Iterator[Sample]:
        for company in self.state.companies:
            if company.poll_duration is not None:
                yield [company.target.label], company.poll_duration

    def _last_successful_poll_timestamp_seconds(self) -> Iterator[Sample]:
        for company in self.state.companies:
            if company.fetched_at is not None:
                yield [company.target.label], company.fetched_at

    def _polls_total(self) -> Iterator[Sample]:
        for company in self.state.companies:
            yield [company.target.label], company.polls_total

    def _poll_errors_total(self) -> Iterator[Sample]:
        for company in self.state.companies:
            for reason in ERROR_REASONS:
                yield [company.target.label, reason], company.errors_total.get(reason, 0)

    def _invalid_records_total(self) -> Iterator[Sample]:
        for company in self.state.companies:
            yield [company.target.label], company.invalid_records_total

    def _series_dropped_total(self) -> Iterator[Sample]:
        yield [], self.state.series_dropped_total

    def _exporter_build_info(self) -> Iterator[Sample]:
        yield [__version__, platform.python_version()], 1


# Families left out when the max-series guard trips.
_PER_JOB = frozenset({
    "scene7_task_items",
    "scene7_task_progress_ratio",
    "scene7_task_state",
    "scene7_task_last_progress_update_timestamp_seconds",
    "scene7_job_info",
    "scene7_job_state",
    "scene7_job_start_timestamp_seconds",
})
