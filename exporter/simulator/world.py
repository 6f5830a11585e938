"""The simulated IPS world: companies and their jobs, living on an injectable clock. No I/O.

Tests, the demo and the benchmarks need an IPS whose jobs behave like real ones: they arrive,
queue, work through their items, fail, stall, get stopped or paused, linger a while when
finished and leave. This module holds that world and nothing of SOAP or HTTP.

How it stays deterministic: every job is planned in full when it arrives (item start and end
times, a failure, a stall, a stop), from random generators seeded by the config seed and the
job's source, and the planned times are relative to the job's submission. What any query shows
is the plan evaluated at `clock()`. The world is therefore a function of the seed, the clock
reading and the job operations received (stop, pause, resume): querying more or less often
changes nothing, and stepping a fake clock is all a test needs.

`time_scale` divides the planned durations (arrivals, item work, lingering), never the clock:
timestamps stay wall time. Stalls are the exception: a stalled task stays frozen for a wall-clock
time long enough (over 45 minutes) for a staleness alert to fire, whatever the scale.

So that every state can be seen at any moment (for dashboards, alerts and tests), each company
has four "keeper" slots beside the random traffic. A keeper job is shaped so that one condition
holds for a long stretch, and its successor is planned to reach that condition before the
current one loses it. The slots guarantee, per company and at all times: a stalled Processing
task (progress frozen over 45 minutes) in a Running job with a New task; an Unknown task; a
Stopping task; a Done and a Failed task in a finished (Done) job. Random jobs add the rest.

Task types of the job kinds for which Adobe documents none are invented and marked as such
(`com.scene7.simulated.*`).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from exporter.simulator.joblogs import OUTCOMES, JobLog, log_of_job, short_job_log

TASK_STATES = ("Unknown", "New", "Processing", "Stopping", "Done", "Failed")
JOB_STATES = (
    "Unknown",
    "New",
    "WaitingClient",
    "WaitingCoordinator",
    "Running",
    "Stopping",
    "Done",
)
WAITING_JOB_STATES = frozenset({"WaitingClient", "WaitingCoordinator"})
FINAL_TASK_STATES = frozenset({"Done", "Failed"})

UPLOAD_TASK = "com.scene7.upload.UploadAsyncTaskMonitor"
AUTOSET_TASK = "com.scene7.autoset.AutoSetAsyncTaskMonitor"
# Adobe documents no task type for these job kinds: simulated names, recognisable as such.
METADATA_TASK = "com.scene7.simulated.MetadataUploadTaskMonitor"
OPTIMIZE_TASK = "com.scene7.simulated.ImageOptimizationTaskMonitor"
CLEANUP_TASK = "com.scene7.simulated.CleanupTaskMonitor"

UPLOAD_TYPES = ("UrlUpload", "UploadFromServerDirectory")
PUBLISH_TYPES = (
    "ImageServingPublish",
    "ImageRenderingPublish",
    "ServerDirectoryPublish",
    "ServerDirectoryPublishWithTemplate",
    "VideoPublish",
)
SINGLE_TASK_TYPES = {
    "MetadataUpload": METADATA_TASK,
    "ImageOptimization": OPTIMIZE_TASK,
    "Cleanup": CLEANUP_TASK,
}
# The job-detail element that follows taskProgressArray, per job type (None: no element).
DETAIL_ELEMENTS: dict[str, str | None] = {
    "UrlUpload": "uploadUrlsJob",
    "UploadFromServerDirectory": "uploadDirectoryJob",
    "MetadataUpload": None,
    "ImageOptimization": "optimizeImagesJob",
    "Cleanup": None,
    "ImageServingPublish": "imageServingPublishJob",
    "ImageRenderingPublish": "imageRenderingPublishJob",
    "ServerDirectoryPublish": "serverDirectoryPublishJob",
    "ServerDirectoryPublishWithTemplate": "serverDirectoryPublishJob",
    "VideoPublish": "videoPublishJob",
}

DETAIL_ELEMENT_NAMES = frozenset(name for name in DETAIL_ELEMENTS.values() if name is not None)
DETAIL_FIELD_NAMES = (
    "publishType",
    "emailSetting",
    "httpCompletionUrl",
    "urlArray",
    "overwrite",
    "readyForPublish",
    "destFolder",
)

# Random traffic: share of each job kind (uploads carry two tasks, publishes none: 1.6 a job).
_UPLOAD_SHARE = 0.70
_PUBLISH_SHARE = 0.10
_P_TASK_FAIL = 0.05
_P_TASK_STALL = 0.02
_P_JOB_STOP = 0.02
_STALE_AGE = 45 * 60.0  # what "stalled" means to the alert rules, wall-clock seconds
_MAX_INT = 2**31 - 1
_LIFETIME_SAMPLE = 2000

KEEPER_KINDS = ("stalled", "unknown", "stopping", "finished")

_FIRST_JOB_NUMBER = 5129821

_COMPANIES = (
    ("c|110", "Acme Retail", None),
    ("47", 'Bits & "Bytes" <EU>', "8A3C1F2E5B7D9E0A1C2B3D4E@AdobeOrg"),
    ("c|2001", "Northwind Media", None),
    ("111", "Example.com", None),
    ("c|3107", "Globex Imaging", "1F2E3D4C5B6A79880A9B8C7D@AdobeOrg"),
    ("c|4242", "Initech Studios", None),
)
_FIRST_NAMES = ("alex", "sam", "kim", "jo", "chris", "pat", "lee", "robin", "mika", "noor")
_LAST_NAMES = ("meyer", "tanaka", "garcia", "okafor", "smith", "novak", "rossi", "berg")
_WORDS = (
    "spring",
    "summer",
    "catalog",
    "lookbook",
    "hero",
    "banner",
    "swatches",
    "packshots",
    "outlet",
    "campaign",
    "newsletter",
    "homepage",
)
_DESCRIPTIONS = (
    "Nightly catalog sync",
    'Sale & clearance "final" <EU>',
    "Re-upload after colour correction",
    "Weekly publish",
)
_FAIL_REASONS = (
    "Unable to read source file",
    "Image decoding error",
    "Storage quota exceeded",
    "Set definition not found",
)
_EXTENSIONS = ("jpg", "tif", "png", "psd")


def _default_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SimulatorConfig:
    """Shape of a simulated world. `jobs` is the target number of active jobs: the keeper
    jobs (about five a company) count towards it, random traffic makes up the rest."""

    seed: int = 1
    companies: int = 3
    jobs: int = 30
    time_scale: float = 1.0
    user: str = "demo@example.com"
    password: str = "demo"  # noqa: S105 - the simulator's documented demo credential
    items_per_task: tuple[int, int] = (1, 20)
    utc_offset_minutes: int = -300  # IPS North America answers in US Central/Eastern time
    keepers: bool = True
    # Job logs (see exporter/simulator/joblogs.py). getJobLogs' startDate/endDate filter a
    # log by its job's start ("start", what we believe IPS does) or by its end ("end").
    job_log_date_filter: str = "start"
    job_log_days: float = 7.0  # finished jobs' logs are kept this long ...
    job_log_max: int = 5000  # ... and at most this many: memory stays flat
    job_log_backfill_hours: float = 24.0  # a past of short and long jobs before the start
    short_job_period: float = 600.0  # a log-only short job every period / time_scale s; 0: none

    def __post_init__(self) -> None:
        if self.job_log_date_filter not in ("start", "end"):
            raise ValueError('job_log_date_filter must be "start" or "end"')
        if self.job_log_days <= 0 or self.job_log_max < 1:
            raise ValueError("job_log_days and job_log_max must be positive")
        if self.job_log_backfill_hours < 0 or self.short_job_period < 0:
            raise ValueError("job_log_backfill_hours and short_job_period must not be negative")
        if self.companies < 1:
            raise ValueError("companies must be at least 1")
        if self.jobs < 0:
            raise ValueError("jobs must not be negative")
        if not self.time_scale > 0:
            raise ValueError("time_scale must be positive")
        low, high = self.items_per_task
        if low < 0 or high < low:
            raise ValueError("items_per_task must be (low, high) with 0 <= low <= high")

    def __repr__(self) -> str:
        return (
            f"SimulatorConfig(seed={self.seed}, companies={self.companies}, jobs={self.jobs}, "
            f"time_scale={self.time_scale}, user={self.user!r}, password='***')"
        )


@dataclass(frozen=True)
class Company:
    handle: str
    name: str
    root_path: str
    expires: datetime
    ims_org_id: str | None
    role: str
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """A task as IPS reports it at one moment. Times are wall-clock unix seconds."""

    task_type: str
    state: str
    processed: int
    processing: int
    pending: int
    progress: float
    message: str
    last_update: float
    cut: float  # the job time the items are evaluated at (frozen by a stall, stop or failure)


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: str
    progress: int
    message: str
    last_update: float
    tasks: tuple[TaskStatus, ...]


# (itemName, progress, progressMessage, lastProgressUpdate as unix seconds)
ItemRow = tuple[str, float, str, float]


@dataclass(eq=False, slots=True)
class Task:
    """One task monitor of a job, planned in full. Times are job time (see `Job.job_time`)."""

    task_type: str
    names: list[str]
    starts: list[float]  # ascending
    ends: list[float]
    sorted_ends: list[float]
    unknown_from: float  # New before, Unknown from here until first_start
    first_start: float
    done_at: float
    fail_at: float | None = None
    stall_at: float | None = None  # items freeze here; the task fails at fail_at
    fail_reason: str = ""

    @property
    def final_at(self) -> float:
        return self.done_at if self.fail_at is None else min(self.fail_at, self.done_at)


@dataclass(eq=False, slots=True)
class Job:
    """One job. Planned times are seconds since submission in job time: wall time minus the
    time spent paused, so a pause shifts everything after it."""

    company: Company
    job_type: str
    original_name: str
    submit_user_email: str
    locale: str | None
    description: str | None
    server_name: str
    start_offset: float
    total_size: int
    queued_until: float
    queue_state: str
    tasks: list[Task]
    work_start: float
    work_end: float
    leave_at: float
    stop_linger: float
    heartbeat: float
    detail: tuple[tuple[str, str], ...]
    kind: str = "random"
    stop_at: float | None = None
    number: int = 0
    base: float = 0.0  # wall-clock submission time (triggerTime)
    name: str = ""
    handle: str = ""
    pauses: list[list[float]] = field(default_factory=list)  # [start, end]; end inf = open

    # -- time ------------------------------------------------------------------------------

    def job_time(self, now: float) -> float:
        """Seconds of job life at wall time `now` (paused time does not count)."""
        t = now - self.base
        for start, end in self.pauses:
            if start < now:
                t -= min(end, now) - start
        return t

    def wall(self, t: float) -> float:
        """Wall-clock time of job time `t`."""
        wall = self.base + t
        for start, end in self.pauses:
            # job time stands still in a pause: nothing happens inside one, and nothing after
            # an open one has happened yet
            if wall > start + 1e-6 and not math.isinf(end):
                wall += end - start
        return wall

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and math.isinf(self.pauses[-1][1])

    def active_at(self, now: float) -> bool:
        return self.base <= now and self.job_time(now) < self.leave_at

    # -- evaluation ------------------------------------------------------------------------

    def task_status(self, task: Task, t: float) -> TaskStatus:
        stop_at = self.stop_at
        n = len(task.names)
        if stop_at is not None and stop_at < task.final_at and t >= stop_at:
            cut = stop_at if task.stall_at is None else min(stop_at, task.stall_at)
            state, message, update = "Stopping", "Stopping", stop_at
        elif task.fail_at is not None and t >= task.fail_at:
            cut = task.fail_at if task.stall_at is None else task.stall_at
            state, message, update = "Failed", f"Failed: {task.fail_reason}", task.fail_at
        elif t >= task.done_at:
            state, cut, message, update = "Done", task.done_at, "", task.done_at
        elif t >= task.first_start:
            state = "Processing"
            cut = t if task.stall_at is None else min(t, task.stall_at)
            message, update = "", -1.0
        elif t >= task.unknown_from:
            state, cut, message, update = "Unknown", t, "", task.unknown_from
        else:
            state, cut, message, update = "New", t, "", 0.0
        processed = bisect_right(task.sorted_ends, cut)
        started = bisect_right(task.starts, cut)
        processing = started - processed
        if state == "Processing":
            update = max(
                self._beat(task.first_start, cut),
                task.starts[started - 1] if started else task.first_start,
                task.sorted_ends[processed - 1] if processed else task.first_start,
            )
            message = f"Processing {processing} of {n} items" if processing else ""
        progress = processed / n if n else (1.0 if state == "Done" else 0.0)
        return TaskStatus(
            task.task_type,
            state,
            processed,
            processing,
            n - started,
            progress,
            message,
            self.wall(update),
            cut,
        )

    def _beat(self, origin: float, t: float) -> float:
        """The last progress heartbeat at or before `t` of work that started at `origin`."""
        if t <= origin:
            return origin
        return origin + math.floor((t - origin) / self.heartbeat) * self.heartbeat

    def item_rows(self, task: Task, status: TaskStatus) -> list[ItemRow]:
        """Per-item progress of `task` in the state `status` describes."""
        cut = status.cut
        beat = self._beat(task.first_start, cut)
        ended = status.state in ("Failed", "Stopping")
        wall = self.wall
        created = wall(0.0)
        halted = status.last_update  # when the task failed or was told to stop
        stopped_message = "Failed" if status.state == "Failed" else "Stopped"
        skipped_message = "Skipped" if status.state == "Failed" else "Cancelled"
        rows: list[ItemRow] = []
        append = rows.append
        for name, start, end in zip(task.names, task.starts, task.ends, strict=True):
            if end <= cut:
                append((name, 1.0, "Done", wall(end)))
            elif start <= cut:
                at = beat if beat > start else start
                progress = (at - start) / (end - start)
                if ended:
                    append((name, progress, stopped_message, halted))
                else:
                    append((name, progress, "Processing", wall(at)))
            elif ended:
                append((name, 0.0, skipped_message, halted))
            else:
                append((name, 0.0, "Waiting", created))
        return rows

    def status(self, now: float) -> JobStatus:
        t = self.job_time(now)
        tasks = tuple(self.task_status(task, t) for task in self.tasks)
        states = [task.state for task in tasks]
        if self.stop_at is not None and t >= self.stop_at:
            state, message = "Stopping", "Stopping job"
        elif self.paused:
            state, message = "WaitingClient", "Paused"
        elif t < self.queued_until:
            state = self.queue_state
            message = "Waiting for an available server" if state == "New" else "Waiting for coordinator"
        elif not tasks:
            state = "Running" if t < self.work_end else "Done"
            message = _publish_message(t, self.work_start, self.work_end)
        elif all(s in FINAL_TASK_STATES for s in states):
            state = "Done"
            message = "Job completed" if "Failed" not in states else "Job completed with errors"
        elif all(s == "New" for s in states):
            state, message = "New", "Waiting for an available server"
        elif "Processing" in states:
            state = "Running"
            message = _RUNNING_MESSAGES[tasks[states.index("Processing")].task_type]
        elif "Unknown" in states:
            state, message = "Unknown", ""
        else:
            state, message = "Running", "Preparing next task"
        total = sum(task.processed + task.processing + task.pending for task in tasks)
        if tasks:
            done = sum(task.processed for task in tasks)
            progress = 100 * done // total if total else (100 if state == "Done" else 0)
            update = max([task.last_update for task in tasks] + [self.base])
        else:
            span = max(self.work_end - self.work_start, 1e-9)
            beat = self._beat(self.work_start, t) if t < self.work_end else self.work_end
            progress = min(100, int(100 * (beat - self.work_start) / span))
            update = self.wall(beat if t >= self.work_start else 0.0)
        if state == "Stopping" and self.stop_at is not None:
            update = max(update, self.wall(self.stop_at))
        return JobStatus(state, progress, message, update, tasks)


_RUNNING_MESSAGES = {
    UPLOAD_TASK: "Uploading files",
    AUTOSET_TASK: "Optimizing files",
    METADATA_TASK: "Applying metadata",
    OPTIMIZE_TASK: "Optimizing images",
    CLEANUP_TASK: "Cleaning up",
}


def _publish_message(t: float, start: float, end: float) -> str:
    if t >= end:
        return "Publish completed"
    if t < start + (end - start) * 0.1:
        return "Starting to generate manifest files."
    return "Publishing files"


class JobNotFound(LookupError):
    """No active job with this handle in this company."""


@dataclass(eq=False)
class _Source:
    """Where jobs come from: the random traffic, or one keeper slot of one company."""

    index: int
    kind: str
    rng: random.Random
    company: Company | None = None
    rate: float = 0.0  # random traffic: arrivals per second
    next_job: Job | None = None  # keeper: the planned successor
    hold: tuple[float, float] = (0.0, 0.0)  # keeper: next_job's hold window


class World:
    """The living world. Not thread-safe: callers serialise access (the server uses a lock)."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.clock = clock or _default_clock
        self.tz = timezone(timedelta(minutes=self.config.utc_offset_minutes))
        self.companies: tuple[Company, ...] = tuple(_make_company(i, self.tz) for i in range(self.config.companies))
        self._by_handle = {company.handle: company for company in self.companies}
        self._jobs: dict[int, Job] = {}  # by number, in arrival order
        self._by_handle_jobs: dict[tuple[str, str], Job] = {}
        self._arrivals: list[tuple[float, int, int]] = []  # (time, tie-break, source index)
        self._sources: list[_Source] = []
        self._next_number = _FIRST_JOB_NUMBER
        self._seq = 0
        self._history: deque[JobLog] = deque(maxlen=self.config.job_log_max)  # finished, departed
        self._next_short = 0  # the next short job to end, by index (see _short_job)
        now = self._clock_seconds()
        self.now = now
        self.started = now
        self._backfill(now)
        self._populate(now)
        self._advance_to(now)

    # -- public API ------------------------------------------------------------------------

    def _clock_seconds(self) -> float:
        return self.clock().timestamp()

    def advance(self) -> float:
        """Bring the world to `clock()`: admit arrivals, drop departed jobs. Returns the time."""
        return self._advance_to(max(self._clock_seconds(), self.now))  # a clock going back waits

    def _advance_to(self, now: float) -> float:
        while self._arrivals and self._arrivals[0][0] <= now:
            at, _, index = heapq.heappop(self._arrivals)
            self._arrive(self._sources[index], at)
        gone = [job for job in self._jobs.values() if not job.active_at(now)]
        for job in gone:
            del self._jobs[job.number]
            del self._by_handle_jobs[(job.company.handle, job.handle)]
            # The log as it was when the job left: complete, since it left at or after its end
            # (job_end <= leave_at <= job_time(now)). Evaluated at `now`, the very reading that
            # found the job gone: nothing of a log changes after its end. Evaluated at
            # wall(leave_at) instead, the round trip to job time can fall a rounding error short
            # of leave_at, which for a stopped job is its end: a log without endDate, forever.
            self._history.append(log_of_job(job, now, self.config.seed))
        while True:
            short = self._short_job(self._next_short)
            if short is None or short.end is None or short.end > now:
                break
            self._history.append(short)
            self._next_short += 1
        horizon = now - self.config.job_log_days * 86400
        while self._history and (self._history[0].end or now) < horizon:
            self._history.popleft()
        self.now = now
        return now

    def company(self, handle: str) -> Company | None:
        return self._by_handle.get(handle)

    def company_by_name(self, name: str) -> Company | None:
        return next((c for c in self.companies if c.name == name), None)

    def active_jobs(
        self,
        company: str | None = None,
        job_handle: str | None = None,
        original_name: str | None = None,
        include_waiting: bool = False,
    ) -> list[Job]:
        """The jobs getActiveJobs lists at the current time (call `advance()` first), in
        arrival order. Paused and coordinator-queued jobs only with `include_waiting`."""
        now = self.now
        jobs: list[Job] = []
        for job in self._jobs.values():
            if company is not None and job.company.handle != company:
                continue
            if job_handle is not None and job.handle != job_handle:
                continue
            if original_name is not None and job.original_name != original_name:
                continue
            if not include_waiting and _waiting(job, now):
                continue
            jobs.append(job)
        return jobs

    def job_logs(self, company: str | None = None) -> list[JobLog]:
        """The logs getJobLogs draws from at the current time (call `advance()` first): the
        kept logs of finished jobs that left, then the logs of the jobs still listed (complete
        or running), optionally of one company. Unsorted."""
        now = self.now
        seed = self.config.seed
        horizon = now - self.config.job_log_days * 86400  # departures end nearly, not quite, in order
        logs = [
            log
            for log in self._history
            if (company is None or log.company.handle == company) and (log.end or now) >= horizon
        ]
        logs += [
            log_of_job(job, now, seed)
            for job in self._jobs.values()
            if company is None or job.company.handle == company
        ]
        return logs

    def history_size(self) -> int:
        return len(self._history)

    def _short_job(self, index: int) -> JobLog | None:
        """Short job `index` (negative: before the world started), or None if there are none.
        Job k starts at started + (k + 0.5) * period; live ones last 2 to 8 wall-clock seconds,
        so no poll sees them; those of the past run up to hours when they fit before the start."""
        period = self.config.short_job_period / self.config.time_scale
        if period <= 0:
            return None
        rng = self._rng(f"short:{index}")
        company = self.companies[index % len(self.companies)]
        start = round(self.started + (index + 0.5) * period, 3)
        duration = rng.uniform(2, 8)
        if index < 0 and rng.random() < 0.4:
            duration = min(rng.uniform(60, 4 * 3600), self.started - start - 1)
        outcome = OUTCOMES[index % len(OUTCOMES)]
        return short_job_log(
            rng, company, rng.choice(company.users), _original_name(rng), outcome, start, max(duration, 1.0), self.tz
        )

    def _backfill(self, now: float) -> None:
        period = self.config.short_job_period / self.config.time_scale
        if period <= 0 or self.config.job_log_backfill_hours <= 0:
            return
        count = min(self.config.job_log_max, int(self.config.job_log_backfill_hours * 3600 / period))
        past = [self._short_job(index) for index in range(-count, 0)]
        ended = [log for log in past if log is not None and log.end is not None and log.end <= now]
        self._history.extend(sorted(ended, key=lambda log: log.end or 0.0))  # the order they ended in

    def job_numbers(self) -> set[int]:
        return set(self._jobs)

    def stop_job(self, company: str, job_handle: str) -> Job:
        job = self._find(company, job_handle)
        now = self.now
        if job.paused:
            job.pauses[-1][1] = now
        t = job.job_time(now)
        final = max((task.final_at for task in job.tasks), default=job.work_end)
        if job.stop_at is None and t < final:
            job.stop_at = t
            job.leave_at = t + job.stop_linger
        return job

    def pause_job(self, company: str, job_handle: str) -> Job:
        job = self._find(company, job_handle)
        state = job.status(self.now).state
        if state not in ("Stopping", "Done", "WaitingClient"):
            job.pauses.append([self.now, math.inf])
        return job

    def resume_job(self, company: str, job_handle: str) -> Job:
        job = self._find(company, job_handle)
        if job.paused:
            job.pauses[-1][1] = self.now
        return job

    def _find(self, company: str, job_handle: str) -> Job:
        job = self._by_handle_jobs.get((company, job_handle))
        if job is None:
            raise JobNotFound(job_handle)
        return job

    # -- population ------------------------------------------------------------------------

    def _rng(self, name: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{name}")  # noqa: S311 - simulation, not crypto

    def _populate(self, now: float) -> None:
        initial: list[Job] = []
        if self.config.keepers:
            for company in self.companies:
                for kind in KEEPER_KINDS:
                    source = self._add_source(kind, self._rng(f"{company.handle}:{kind}"), company)
                    job, (h0, h1) = self._plan(source.rng, company, kind)
                    self._set_base(job, now - h0 - source.rng.uniform(0.1, 0.5) * (h1 - h0))
                    initial.append(job)
                    self._plan_successor(source, job, (h0, h1))
        random_jobs = max(0, self.config.jobs - sum(j.active_at(now) for j in initial))
        if random_jobs:
            source = self._add_source("random", self._rng("random"))
            for _ in range(random_jobs):
                company = self._pick_company(source.rng)
                job, _ = self._plan(source.rng, company, "random")
                self._set_base(job, now - source.rng.uniform(0.0, 0.98) * job.leave_at)
                initial.append(job)
            # Arrivals keep the count near the target: rate = count / mean lifetime. Stalls
            # make lifetimes heavy-tailed, so the mean comes from a large sample of its own.
            sample = self._rng("random-lifetimes")
            lifetimes = [self._plan(sample, self.companies[0], "random")[0].leave_at for _ in range(_LIFETIME_SAMPLE)]
            source.rate = random_jobs / (sum(lifetimes) / len(lifetimes))
            self._schedule(source, now + source.rng.expovariate(source.rate))
        initial.sort(key=lambda job: job.base)
        for job in initial:
            if job.active_at(now):
                self._admit(job)

    def _add_source(self, kind: str, rng: random.Random, company: Company | None = None) -> _Source:
        source = _Source(len(self._sources), kind, rng, company)
        self._sources.append(source)
        return source

    def _schedule(self, source: _Source, at: float) -> None:
        self._seq += 1
        heapq.heappush(self._arrivals, (at, self._seq, source.index))

    def _plan_successor(self, source: _Source, current: Job, hold: tuple[float, float]) -> None:
        assert source.company is not None
        job, (h0, h1) = self._plan(source.rng, source.company, source.kind)
        margin = 0.25 * min(hold[1] - hold[0], h1 - h0)
        self._set_base(job, current.base + hold[1] - h0 - margin)
        source.next_job = job
        source.hold = (h0, h1)
        self._schedule(source, job.base)

    def _arrive(self, source: _Source, at: float) -> None:
        if source.kind == "random":
            company = self._pick_company(source.rng)
            job, _ = self._plan(source.rng, company, "random")
            self._set_base(job, at)
            self._admit(job)
            self._schedule(source, at + source.rng.expovariate(source.rate))
            return
        successor = source.next_job
        assert successor is not None
        self._admit(successor)
        self._plan_successor(source, successor, source.hold)

    def _pick_company(self, rng: random.Random) -> Company:
        # Uneven traffic, as in real accounts: the first company is the busiest.
        weights = [1.0 / (i + 1) for i in range(len(self.companies))]
        return rng.choices(self.companies, weights)[0]

    def _set_base(self, job: Job, base: float) -> None:
        job.base = round(base, 3)
        stamp = datetime.fromtimestamp(job.base, self.tz)
        job.name = f"{job.original_name}_{stamp:%Y-%m-%d-%H:%M:%S}.{stamp.microsecond // 1000:03d}"

    def _admit(self, job: Job) -> None:
        job.number = self._next_number
        self._next_number += 1
        company_id = job.company.handle.rpartition("|")[2]
        job.handle = f"j|{company_id}||{job.name}|{job.number}"
        self._jobs[job.number] = job
        self._by_handle_jobs[(job.company.handle, job.handle)] = job

    # -- planning --------------------------------------------------------------------------

    def _plan(self, rng: random.Random, company: Company, kind: str) -> tuple[Job, tuple[float, float]]:
        """A job of `kind`, times relative to its submission, and for a keeper the window in
        which it holds its guaranteed condition."""
        s = 1.0 / self.config.time_scale
        if kind == "random":
            roll = rng.random()
            if roll < _UPLOAD_SHARE:
                job_type = rng.choice(UPLOAD_TYPES)
            elif roll < _UPLOAD_SHARE + _PUBLISH_SHARE:
                job_type = rng.choice(PUBLISH_TYPES)
            else:
                job_type = rng.choice(tuple(SINGLE_TASK_TYPES))
        elif kind == "unknown":
            job_type = rng.choice(("ImageOptimization", "MetadataUpload", *UPLOAD_TYPES))
        else:
            job_type = rng.choice(UPLOAD_TYPES)

        queued_until, queue_state = 0.0, "New"
        if kind == "random":
            roll = rng.random()
            if roll < 0.15:
                queued_until = rng.uniform(10, 600) * s
            elif roll < 0.25:
                queued_until, queue_state = rng.uniform(10, 600) * s, "WaitingCoordinator"

        job = Job(
            company=company,
            job_type=job_type,
            original_name=_original_name(rng),
            submit_user_email=rng.choice(company.users),
            locale=rng.choice(("en-US",) * 8 + ("de-DE", None)),
            description=rng.choice(_DESCRIPTIONS) if rng.random() < 0.2 else None,
            server_name=f"saastex_100_{rng.randint(40, 60)}",
            start_offset=rng.randint(5, 40) / 1000,
            total_size=0,
            queued_until=queued_until,
            queue_state=queue_state,
            tasks=[],
            work_start=queued_until,
            work_end=queued_until,
            leave_at=0.0,
            stop_linger=rng.uniform(20, 180) * s,
            heartbeat=10.0 * s,
            detail=_detail(rng, job_type, company),
            kind=kind,
        )
        low, high = self.config.items_per_task
        n = rng.randint(low, high)
        if kind != "random":
            n = max(n, 1)
        folder = f"{company.root_path}{rng.choice(_WORDS)}"
        stem, number, ext = rng.choice(_WORDS), rng.randint(1000, 90000), rng.choice(_EXTENSIONS)
        names = [f"{folder}/{stem}-{number + i}.{ext}" for i in range(n)]
        job.total_size = min(_MAX_INT, int(n * rng.uniform(50_000, 20_000_000)))
        linger = rng.uniform(30, 300) * s
        hold = (0.0, 0.0)

        if job_type in PUBLISH_TYPES:
            job.work_start = queued_until + rng.uniform(0.5, 3) * s
            job.work_end = job.work_start + rng.uniform(120, 3600) * s
            job.leave_at = job.work_end + linger
            if rng.random() < _P_JOB_STOP:
                job.stop_at = rng.uniform(job.work_start, job.work_end)
                job.leave_at = job.stop_at + job.stop_linger
            return job, hold

        is_upload = job_type in UPLOAD_TYPES
        if is_upload:
            pace = (5.0, 600.0) if kind in ("random", "stalled") else (5.0, 60.0)
            first = _task(rng, UPLOAD_TASK, names, queued_until, pace, (1, 3), s)
        else:
            pace = (1.0, 120.0) if kind == "random" else (1.0, 20.0)
            first = _task(rng, SINGLE_TASK_TYPES[job_type], names, queued_until, pace, (1, 4), s)
        if kind == "random":
            _maybe_break(rng, first, s)
        elif kind == "stalled":
            stall_at = _stall(first, rng.uniform(0.2, 0.8), rng.uniform(2 * 3600, 4 * 3600))
            hold = (stall_at + _STALE_AGE + 300, first.final_at)
        elif kind == "unknown":
            first.unknown_from = queued_until + rng.uniform(20, 120) * s
            _shift(first, first.unknown_from + rng.uniform(20, 45) * 60 * s - first.first_start)
            hold = (first.unknown_from, first.first_start)
        job.tasks.append(first)
        if is_upload:
            # auto-set works on what the upload delivered before it ended (or froze)
            frozen = first.stall_at if first.stall_at is not None else first.final_at
            uploaded = names[: bisect_right(first.sorted_ends, frozen)]
            autoset = _task(rng, AUTOSET_TASK, uploaded, first.final_at, (2, 60), (1, 2), s)
            if kind == "random":
                _maybe_break(rng, autoset, s)
            elif kind == "finished":
                autoset.fail_at = min(autoset.done_at, autoset.first_start + rng.uniform(1, 30) * s)
                autoset.fail_reason = rng.choice(_FAIL_REASONS)
            job.tasks.append(autoset)

        final = max(task.final_at for task in job.tasks)
        job.leave_at = final + linger
        if kind == "random" and rng.random() < _P_JOB_STOP:
            first = job.tasks[0]
            job.stop_at = rng.uniform(first.first_start, final)
            job.leave_at = job.stop_at + job.stop_linger
        elif kind == "stopping":
            upload = job.tasks[0]
            job.stop_at = upload.first_start + rng.uniform(0.2, 0.7) * (upload.done_at - upload.first_start)
            job.stop_linger = rng.uniform(20, 45) * 60 * s
            job.leave_at = job.stop_at + job.stop_linger
            hold = (job.stop_at, job.leave_at)
        elif kind == "finished":
            job.leave_at = final + rng.uniform(25, 50) * 60 * s
            hold = (final, job.leave_at)
        return job, hold


def _waiting(job: Job, now: float) -> bool:
    if job.paused:
        return job.stop_at is None
    return job.queue_state == "WaitingCoordinator" and job.job_time(now) < job.queued_until


def _task(
    rng: random.Random,
    task_type: str,
    names: list[str],
    after: float,
    pace: tuple[float, float],
    concurrency: tuple[int, int],
    s: float,
) -> Task:
    """A task whose items are worked `concurrency` at a time, each taking `pace` seconds."""
    unknown_from = after + rng.uniform(0.2, 2) * s
    first_start = unknown_from + rng.uniform(1, 8) * s
    lanes = [first_start] * rng.randint(*concurrency)
    starts: list[float] = []
    ends: list[float] = []
    low, high = pace
    for _ in names:
        lane = lanes.index(min(lanes))
        start = lanes[lane]
        end = start + rng.uniform(low, high) * s
        lanes[lane] = end
        starts.append(start)
        ends.append(end)
    done_at = max(ends) if ends else first_start
    return Task(task_type, list(names), starts, ends, sorted(ends), unknown_from, first_start, done_at)


def _shift(task: Task, by: float) -> None:
    task.first_start += by
    task.done_at += by
    task.starts = [t + by for t in task.starts]
    task.ends = [t + by for t in task.ends]
    task.sorted_ends = [t + by for t in task.sorted_ends]


def _stall(task: Task, fraction: float, freeze: float) -> float:
    """Freeze the task's items part-way (freeze is wall-clock seconds), then fail it."""
    stall_at = task.first_start + fraction * (task.done_at - task.first_start)
    task.stall_at = stall_at
    task.fail_at = stall_at + freeze
    task.done_at = max(task.done_at, task.fail_at + 1)
    task.fail_reason = "Task monitor timed out"
    return stall_at


def _maybe_break(rng: random.Random, task: Task, s: float) -> None:
    roll = rng.random()
    if roll < _P_TASK_FAIL:
        task.fail_at = task.first_start + rng.uniform(0.05, 0.95) * (task.done_at - task.first_start)
        task.fail_reason = rng.choice(_FAIL_REASONS)
    elif roll < _P_TASK_FAIL + _P_TASK_STALL:
        _stall(task, rng.uniform(0.1, 0.9), rng.uniform(50 * 60, 3 * 3600))


def _original_name(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.getrandbits(84):021x}"  # what API clients submit, as in the captures
    return f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randint(1, 12)}"


def _detail(rng: random.Random, job_type: str, company: Company) -> tuple[tuple[str, str], ...]:
    email = rng.choice(("None", "All", "Error"))
    element = DETAIL_ELEMENTS.get(job_type)
    if element is None:
        return ()
    if job_type in PUBLISH_TYPES:
        return (
            ("publishType", rng.choice(("Full", "Increment"))),
            ("emailSetting", email),
            ("httpCompletionUrl", ""),
        )
    if job_type == "UrlUpload":
        return (
            ("urlArray", ""),
            ("overwrite", "true"),
            ("readyForPublish", "true"),
            ("emailSetting", email),
        )
    if job_type == "UploadFromServerDirectory":
        return (
            ("destFolder", f"{company.root_path}incoming/"),
            ("overwrite", "true"),
            ("emailSetting", email),
        )
    return (("emailSetting", email),)


def _make_company(index: int, tz: timezone) -> Company:
    if index < len(_COMPANIES):
        handle, name, ims_org = _COMPANIES[index]
    else:
        handle, name, ims_org = f"c|{5000 + index}", f"Simulated Company {index + 1}", None
    slug = "".join(ch for ch in name if ch.isalnum())
    domain = "-".join(part.lower() for part in name.split() if part.isalnum()) or "company"
    users = tuple(
        f"{_FIRST_NAMES[(index + k) % len(_FIRST_NAMES)]}."
        f"{_LAST_NAMES[(index * 3 + k) % len(_LAST_NAMES)]}@{domain}.example"
        for k in range(3)
    )
    return Company(
        handle=handle,
        name=name,
        root_path=f"{slug}/",
        expires=datetime(2100, 12, 31, 23, 0, tzinfo=tz),
        ims_org_id=ims_org,
        role="IpsCompanyAdmin" if index == 0 else "IpsUser",
        users=users,
    )


def state_counts(statuses: Iterable[JobStatus]) -> dict[str, int]:
    """Number of tasks per task state (all six states, zeros included)."""
    counts = dict.fromkeys(TASK_STATES, 0)
    for status in statuses:
        for task in status.tasks:
            counts[task.state] += 1
    return counts
