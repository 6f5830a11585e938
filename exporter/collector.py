"""Renders a `State` as Prometheus metric families: the metric contract lives here.

The collector is a pure function of one immutable State and the time: it yields families, the
prometheus-client encoders turn them into text. A stale company (no successful poll within
max_age) keeps only its health series, with `scene7_up` 0.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.errors import ERROR_REASONS
from exporter.models import JobState, TaskState
from exporter.snapshot import CompanySnapshot, State

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


class SnapshotCollector(Collector):
    """Yields the metric families of one State at time `now`."""

    def __init__(self, state: State, *, now: float, max_age: float, interval: float) -> None:
        self.state = state
        self.now = now
        self.max_age = max_age
        self.poll_note = f" From a background poll of IPS every {interval:g}s."

    def _families(self) -> dict[str, Family]:
        families: dict[str, Family] = {}
        for name, (kind, labels, text) in METRICS.items():
            if kind == "counter":
                families[name] = CounterMetricFamily(name, text + self.poll_note, labels=labels)
            else:
                families[name] = GaugeMetricFamily(name, text + self.poll_note, labels=labels)
        return families

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for company in self.state.companies:
            self._health(families, company)
            if not company.is_stale(self.now, self.max_age):
                self._jobs(families, company)
        families["scene7_series_dropped_total"].add_metric([], self.state.series_dropped_total)
        families["scene7_exporter_build_info"].add_metric([__version__, platform.python_version()], 1)
        yield from families.values()

    def _health(self, f: dict[str, Family], company: CompanySnapshot) -> None:
        label = [company.target.label]
        fresh = not company.is_stale(self.now, self.max_age)
        f["scene7_up"].add_metric(label, 1 if company.up and fresh else 0)
        if company.poll_duration is not None:
            f["scene7_poll_duration_seconds"].add_metric(label, company.poll_duration)
        if company.fetched_at is not None:
            f["scene7_last_successful_poll_timestamp_seconds"].add_metric(label, company.fetched_at)
        f["scene7_polls_total"].add_metric(label, company.polls_total)
        for reason in ERROR_REASONS:
            f["scene7_poll_errors_total"].add_metric([*label, reason], company.errors_total.get(reason, 0))
        f["scene7_invalid_records_total"].add_metric(label, company.invalid_records_total)
        for (task_type, final_state), count in sorted(company.finished_total.items()):
            f["scene7_tasks_finished_total"].add_metric([*label, task_type, final_state], count)

    def _jobs(self, f: dict[str, Family], company: CompanySnapshot) -> None:
        name = company.target.label
        f["scene7_active_jobs"].add_metric([name], len(company.jobs))
        tasks_by_state: dict[tuple[str, str], dict[str, int]] = {}
        per_job = self.state.per_job_series
        seen_jobs: set[str] = set()
        seen_tasks: set[tuple[str, str]] = set()
        for job in company.jobs:
            job_labels = [name, job.name, job.job_type]
            if per_job and job.name not in seen_jobs:
                seen_jobs.add(job.name)
                f["scene7_job_info"].add_metric([*job_labels, job.original_name, job.server_name], 1)
                current = job.known_state.value
                for state in JOB_STATES:
                    f["scene7_job_state"].add_metric([*job_labels, state], 1 if state == current else 0)
                f["scene7_job_start_timestamp_seconds"].add_metric(job_labels, job.start_date.timestamp())
            for task in job.task_progress_array:
                state_counts = tasks_by_state.setdefault((job.job_type, task.task_type), {})
                current = task.known_state.value
                state_counts[current] = state_counts.get(current, 0) + 1
                if not per_job or (job.name, task.task_type) in seen_tasks:
                    continue  # a job name or task type repeated would duplicate series
                seen_tasks.add((job.name, task.task_type))
                task_labels = [*job_labels, task.task_type]
                items = f["scene7_task_items"]
                items.add_metric([*task_labels, "processed"], task.num_processed)
                items.add_metric([*task_labels, "processing"], task.num_processing)
                items.add_metric([*task_labels, "pending"], task.num_pending)
                f["scene7_task_progress_ratio"].add_metric(task_labels, task.progress)
                for state in TASK_STATES:
                    f["scene7_task_state"].add_metric([*task_labels, state], 1 if state == current else 0)
                f["scene7_task_last_progress_update_timestamp_seconds"].add_metric(
                    task_labels, task.last_progress_update.timestamp()
                )
        for (job_type, task_type), counts in sorted(tasks_by_state.items()):
            for state in TASK_STATES:
                f["scene7_tasks"].add_metric([name, job_type, task_type, state], counts.get(state, 0))
