"""The metric contract: one declarative specification per family, and what derives from it.

Each `FamilySpec` says what a family is (name, type, labels, help, what it is exported per)
and how its samples are read from a `Frame` (one State at one moment). From the specification
come `METRIC_NAMES`, the families the max-series guard drops, the series a job and a task cost
(`series_guard`), and README's metrics table (`python -m exporter.metrics`; a test compares).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from exporter import __version__
from exporter.errors import Reason
from exporter.joblogs import DURATION_BUCKETS, FILE_RESULTS, LABEL_MAX, OUTCOMES, RecentJob
from exporter.models import ActiveJob, JobState, TaskProgress, TaskState
from exporter.snapshot import FINAL_STATES, CompanySnapshot, SeriesGuard, State

TASK_STATES = tuple(state.value for state in TaskState)
JOB_STATES = tuple(state.value for state in JobState)
ITEM_STATES = ("processed", "processing", "pending")
ERROR_REASONS = tuple(reason.value for reason in Reason)

JOB_LABELS = ("company", "job_name", "job_type")
TASK_LABELS = (*JOB_LABELS, "task_type")

# A histogram's value: its cumulative buckets (upper bound, count) ending with +Inf, and its sum.
HistogramValue = tuple[tuple[tuple[str, float], ...], float]
Sample = tuple[list[str], float | HistogramValue]


class Scope(StrEnum):
    """What a family has series for. Task and job families are the per-job series: the
    max-series guard drops them, and each task or job costs `series_each` series."""

    TASK = "task"
    JOB = "job"
    RECENT_JOB = "recent job"  # a job that ended within job_logs.recent_window
    COMPANY = "company"
    EXPORTER = "exporter"


@dataclass(frozen=True)
class Frame:
    """One State at one moment, as the sample functions read it."""

    state: State
    now: float
    fresh: tuple[CompanySnapshot, ...] = ()

    @classmethod
    def of(cls, state: State, now: float) -> Frame:
        return cls(state, now, state.fresh_companies(now))

    def jobs(self) -> Iterator[tuple[str, ActiveJob]]:
        """(company label, job) of fresh companies; a repeated job name would repeat series."""
        for company in self.fresh:
            seen: set[str] = set()
            for job in company.jobs:
                if job.name not in seen:
                    seen.add(job.name)
                    yield company.target.label, job

    def tasks(self) -> Iterator[tuple[list[str], TaskProgress]]:
        """(task labels, task) of fresh companies, once per job name and task type."""
        for company in self.fresh:
            seen: set[tuple[str, str]] = set()
            for job in company.jobs:
                for task in job.task_progress_array:
                    if (job.name, task.task_type) not in seen:
                        seen.add((job.name, task.task_type))
                        yield [company.target.label, job.name, job.job_type, task.task_type], task

    def recent_jobs(self) -> Iterator[tuple[str, RecentJob]]:
        """(company label, job) of the jobs that ended within the recent window, newest first,
        once per job_name label (two names alike in their first characters give one)."""
        since = self.now - self.state.recent_window
        for company in self.state.companies:
            seen: set[str] = set()
            for job in company.job_logs.recent:
                if job.end >= since and job.job_name not in seen:
                    seen.add(job.job_name)
                    yield company.target.label, job


@dataclass(frozen=True)
class FamilySpec:
    """One metric family. `help` is its HELP text; `doc` its README description."""

    name: str
    kind: str  # "gauge", "counter" (a counter's name ends in _total) or "histogram"
    labels: tuple[str, ...]
    help: str
    scope: Scope
    samples: Callable[[Frame], Iterable[Sample]] = field(repr=False)
    doc: str = ""
    series_each: int = 1  # series per task or per job, for those scopes
    from_job_logs: bool = False  # polled every job_logs.interval, not every poll.interval
    label_values: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def per_job(self) -> bool:
        return self.scope in (Scope.TASK, Scope.JOB, Scope.RECENT_JOB)


# -- sample functions, in the order of the families ------------------------------------------


def _task_items(frame: Frame) -> Iterator[Sample]:
    for labels, task in frame.tasks():
        yield [*labels, "processed"], task.num_processed
        yield [*labels, "processing"], task.num_processing
        yield [*labels, "pending"], task.num_pending


def _task_progress_ratio(frame: Frame) -> Iterator[Sample]:
    for labels, task in frame.tasks():
        yield labels, task.progress


def _task_state(frame: Frame) -> Iterator[Sample]:
    for labels, task in frame.tasks():
        current = task.known_state.value
        for state in TASK_STATES:
            yield [*labels, state], 1 if state == current else 0


def _task_last_progress_update(frame: Frame) -> Iterator[Sample]:
    for labels, task in frame.tasks():
        yield labels, task.last_progress_update.timestamp()


def _job_info(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.jobs():
        yield [company, job.name, job.job_type, job.original_name, job.server_name], 1


def _job_state(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.jobs():
        current = job.known_state.value
        for state in JOB_STATES:
            yield [company, job.name, job.job_type, state], 1 if state == current else 0


def _job_start(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.jobs():
        yield [company, job.name, job.job_type], job.start_date.timestamp()


def _tasks(frame: Frame) -> Iterator[Sample]:
    for company in frame.fresh:
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for job in company.jobs:
            for task in job.task_progress_array:
                by_state = counts.setdefault((job.job_type, task.task_type), {})
                state = task.known_state.value
                by_state[state] = by_state.get(state, 0) + 1
        for (job_type, task_type), by_state in sorted(counts.items()):
            for state in TASK_STATES:
                yield [company.target.label, job_type, task_type, state], by_state.get(state, 0)


def _active_jobs(frame: Frame) -> Iterator[Sample]:
    for company in frame.fresh:
        yield [company.target.label], len(company.jobs)


def _tasks_finished(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        for (task_type, final_state), count in sorted(company.finished_total.items()):
            yield [company.target.label, task_type, final_state], count


def _up(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        yield [company.target.label], 1 if company.up and frame.state.is_fresh(company, frame.now) else 0


def _poll_duration(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        if company.poll_duration is not None:
            yield [company.target.label], company.poll_duration


def _last_successful_poll(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        if company.fetched_at is not None:
            yield [company.target.label], company.fetched_at


def _polls(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        yield [company.target.label], company.polls_total


def _poll_errors(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        for reason in ERROR_REASONS:
            yield [company.target.label, reason], company.errors_total.get(reason, 0)


def _invalid_records(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        yield [company.target.label], company.invalid_records_total


def _jobs_finished(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        for log_type, counts in sorted(company.job_logs.finished.items()):
            for outcome in OUTCOMES:
                yield [company.target.label, log_type, outcome], counts.get(outcome, 0)


def _job_files(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        for log_type, counts in sorted(company.job_logs.files.items()):
            for result, count in zip(FILE_RESULTS, counts, strict=True):
                yield [company.target.label, log_type, result], count


def _job_duration(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        for log_type, histogram in sorted(company.job_logs.durations.items()):
            yield [company.target.label, log_type], (tuple(histogram.cumulative()), histogram.total)


def _last_job_end(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        for log_type, end in sorted(company.job_logs.last_end.items()):
            yield [company.target.label, log_type], end


def _recent_job_info(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.recent_jobs():
        yield [company, job.job_name, job.log_type, job.outcome], 1


def _recent_job_files(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.recent_jobs():
        for result, count in zip(FILE_RESULTS, job.files, strict=True):
            yield [company, job.job_name, result], count


def _recent_job_end(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.recent_jobs():
        yield [company, job.job_name], job.end


def _recent_job_duration(frame: Frame) -> Iterator[Sample]:
    for company, job in frame.recent_jobs():
        yield [company, job.job_name], job.duration


def _job_log_polls(frame: Frame) -> Iterator[Sample]:
    if frame.state.job_logs_enabled:
        for company in frame.state.companies:
            yield [company.target.label], company.job_logs.polls_total


def _job_log_poll_errors(frame: Frame) -> Iterator[Sample]:
    if frame.state.job_logs_enabled:
        for company in frame.state.companies:
            for reason in ERROR_REASONS:
                yield [company.target.label, reason], company.job_logs.errors_total.get(reason, 0)


def _job_logs_last_successful_poll(frame: Frame) -> Iterator[Sample]:
    for company in frame.state.companies:
        if company.job_logs.last_success is not None:
            yield [company.target.label], company.job_logs.last_success


def _series_dropped(frame: Frame) -> Iterator[Sample]:
    yield [], frame.state.series_dropped_total


def _build_info(frame: Frame) -> Iterator[Sample]:
    yield [__version__, platform.python_version()], 1


_STATES_DOC = ", ".join(TASK_STATES)

FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "scene7_task_items", "gauge", (*TASK_LABELS, "item_state"),
        "Work items of an active task by item_state (numProcessed, numProcessing, numPending).",
        Scope.TASK, _task_items, "numProcessed / numProcessing / numPending",
        series_each=len(ITEM_STATES), label_values={"item_state": ITEM_STATES},
    ),
    FamilySpec(
        "scene7_task_progress_ratio", "gauge", TASK_LABELS,
        "Fraction of an active task that is complete (0..1).", Scope.TASK, _task_progress_ratio, "progress, 0..1",
    ),
    FamilySpec(
        "scene7_task_state", "gauge", (*TASK_LABELS, "state"),
        "1 for the current taskState of an active task, 0 for the other states.", Scope.TASK, _task_state,
        f"1 for the current taskState, 0 for the other five ({_STATES_DOC}); a task without taskState "
        "(API before 2012-02-14) or with a value not documented exports Unknown",
        series_each=len(TASK_STATES),
    ),
    FamilySpec(
        "scene7_task_last_progress_update_timestamp_seconds", "gauge", TASK_LABELS,
        "When IPS last updated the progress of an active task (Unix time).", Scope.TASK,
        _task_last_progress_update, "lastProgressUpdate, Unix seconds",
    ),
    FamilySpec(
        "scene7_job_info", "gauge", (*JOB_LABELS, "original_name", "server_name"),
        "An active job, value 1.", Scope.JOB, _job_info, "1",
    ),
    FamilySpec(
        "scene7_job_state", "gauge", (*JOB_LABELS, "state"),
        "1 for the current state of an active job, 0 for the others.", Scope.JOB, _job_state,
        f"1/0 over the {len(JOB_STATES)} Active Job States", series_each=len(JOB_STATES),
    ),
    FamilySpec(
        "scene7_job_start_timestamp_seconds", "gauge", JOB_LABELS,
        "When an active job started (Unix time).", Scope.JOB, _job_start, "startDate",
    ),
    FamilySpec(
        "scene7_tasks", "gauge", ("company", "job_type", "task_type", "state"),
        "Active tasks by state.", Scope.COMPANY, _tasks,
        f"active tasks in each state (all {len(TASK_STATES)}, 0 included)",
    ),
    FamilySpec(
        "scene7_active_jobs", "gauge", ("company",), "Active jobs of a company.", Scope.COMPANY, _active_jobs,
        "active jobs, 0 when idle",
    ),
    FamilySpec(
        "scene7_tasks_finished_total", "counter", ("company", "task_type", "final_state"),
        "Tasks seen to reach Done or Failed, or to vanish unfinished.", Scope.COMPANY, _tasks_finished,
        "tasks seen to reach Done or Failed, or to vanish while unfinished",
        label_values={"final_state": FINAL_STATES},
    ),
    FamilySpec(
        "scene7_up", "gauge", ("company",), "1 if the last poll of the company succeeded and is recent, else 0.",
        Scope.COMPANY, _up, "1 if the last poll succeeded and is recent",
    ),
    FamilySpec(
        "scene7_poll_duration_seconds", "gauge", ("company",), "Duration of the last poll of the company.",
        Scope.COMPANY, _poll_duration, "duration of the last poll",
    ),
    FamilySpec(
        "scene7_last_successful_poll_timestamp_seconds", "gauge", ("company",),
        "When the company was last polled successfully (Unix time).", Scope.COMPANY, _last_successful_poll,
        "Unix seconds",
    ),
    FamilySpec(
        "scene7_polls_total", "counter", ("company",), "Polls of the company attempted.", Scope.COMPANY, _polls,
        "poll attempts",
    ),
    FamilySpec(
        "scene7_poll_errors_total", "counter", ("company", "reason"), "Failed or skipped polls by reason.",
        Scope.COMPANY, _poll_errors, "failed polls by reason: " + ", ".join(ERROR_REASONS),
    ),
    FamilySpec(
        "scene7_invalid_records_total", "counter", ("company",), "Job records skipped as invalid.",
        Scope.COMPANY, _invalid_records, "job records skipped as invalid",
    ),
    FamilySpec(
        "scene7_jobs_finished_total", "counter", ("company", "log_type", "outcome"),
        "Finished jobs by outcome, from the job logs (getJobLogs).", Scope.COMPANY, _jobs_finished,
        "finished jobs, counted once each, ending after the exporter started; outcome: fatal (fatalError), "
        "else errors (a file or transfer error), else warnings, else succeeded; the four exist at 0 for "
        "every log_type seen",
        label_values={"outcome": OUTCOMES},
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_job_files_total", "counter", ("company", "log_type", "result"),
        "Files of finished jobs by result, from the job logs.", Scope.COMPANY, _job_files,
        "sums over finished jobs of fileSuccessCount / fileErrorCount / fileWarningCount / "
        "fileDuplicateCount / fileUpdateCount",
        label_values={"result": FILE_RESULTS},
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_job_duration_seconds", "histogram", ("company", "log_type"),
        "Duration of finished jobs (endDate - startDate), from the job logs.", Scope.COMPANY, _job_duration,
        "histogram of endDate - startDate of finished jobs (negative as 0); buckets "
        + ", ".join(f"{bound:g}" for bound in DURATION_BUCKETS),
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_last_job_end_timestamp_seconds", "gauge", ("company", "log_type"),
        "When the latest finished job of a log type ended (Unix time).", Scope.COMPANY, _last_job_end,
        "endDate of the latest finished job",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_recent_job_info", "gauge", ("company", "job_name", "log_type", "outcome"),
        "A job that ended within job_logs.recent_window, value 1.", Scope.RECENT_JOB, _recent_job_info,
        "1 for each job that ended within `job_logs.recent_window`, newest first, at most "
        f"`job_logs.recent_max` per company; job_name cut to {LABEL_MAX} characters",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_recent_job_files", "gauge", ("company", "job_name", "result"),
        "Files of a recently finished job by result.", Scope.RECENT_JOB, _recent_job_files,
        "the file counts of those recent jobs", series_each=len(FILE_RESULTS),
        label_values={"result": FILE_RESULTS},
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_recent_job_end_timestamp_seconds", "gauge", ("company", "job_name"),
        "When a recently finished job ended (Unix time).", Scope.RECENT_JOB, _recent_job_end, "their endDate",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_recent_job_duration_seconds", "gauge", ("company", "job_name"),
        "How long a recently finished job ran (endDate - startDate).", Scope.RECENT_JOB, _recent_job_duration,
        "their endDate - startDate (negative as 0)",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_job_log_polls_total", "counter", ("company",), "Job-log polls of the company attempted.",
        Scope.COMPANY, _job_log_polls, "job-log polls attempted",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_job_log_poll_errors_total", "counter", ("company", "reason"),
        "Failed or skipped job-log polls by reason.", Scope.COMPANY, _job_log_poll_errors,
        "failed job-log polls by reason (the reasons of `scene7_poll_errors_total`)",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_job_logs_last_successful_poll_timestamp_seconds", "gauge", ("company",),
        "When the job logs of the company were last polled successfully (Unix time).", Scope.COMPANY,
        _job_logs_last_successful_poll, "Unix seconds",
        from_job_logs=True,
    ),
    FamilySpec(
        "scene7_series_dropped_total", "counter", (),
        "Per-job series not exported because of poll.max_series.", Scope.EXPORTER, _series_dropped,
        "per-job series not exported because of `poll.max_series`",
    ),
    FamilySpec(
        "scene7_exporter_build_info", "gauge", ("version", "python_version"), "Build of the exporter, value 1.",
        Scope.EXPORTER, _build_info, "1",
    ),
)

METRIC_NAMES: frozenset[str] = frozenset(spec.name for spec in FAMILIES)
BY_NAME: Mapping[str, FamilySpec] = MappingProxyType({spec.name: spec for spec in FAMILIES})
PER_JOB_FAMILIES: frozenset[str] = frozenset(spec.name for spec in FAMILIES if spec.per_job)
SERIES_PER_JOB = sum(spec.series_each for spec in FAMILIES if spec.scope is Scope.JOB)
SERIES_PER_TASK = sum(spec.series_each for spec in FAMILIES if spec.scope is Scope.TASK)
SERIES_PER_RECENT_JOB = sum(spec.series_each for spec in FAMILIES if spec.scope is Scope.RECENT_JOB)


def series_guard(max_series: int) -> SeriesGuard:
    """The max-series guard, with what a job, a task and a recent job cost in the families above."""
    return SeriesGuard(max_series, SERIES_PER_JOB, SERIES_PER_TASK, SERIES_PER_RECENT_JOB)


def markdown_table() -> str:
    """README's metrics table."""
    def labels(spec: FamilySpec) -> str:
        return ", ".join(
            f"{label}={'/'.join(spec.label_values[label])}" if label in spec.label_values else label
            for label in spec.labels
        )

    rows = [f"| `{spec.name}` | {labels(spec)} | {spec.doc} |" for spec in FAMILIES]
    return "\n".join(["| metric | labels | value |", "|---|---|---|", *rows]) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
