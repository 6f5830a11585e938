"""The job logs of the simulated world: what became of its jobs. No I/O, no SOAP.

IPS keeps a log for every job (`getJobLogs`, `getJobLogDetails`): its counts of files that
succeeded, failed, warned, were skipped as duplicates or updated, whether it ended in a fatal
error, and a message per file. The simulator derives each log from what its job did:

- the files are the job's work items (the upload task's for an upload, the task's for a single-
  task job; a publish, which has no tasks, gets a number of files of its own);
- a file the first task processed takes the outcome the job's profile gave it: most jobs are
  clean (success, some updates), some have warnings, some skip duplicates, a few have files in
  error (`_PROFILES`);
- a first task that failed makes the job fatal: the file in hand when it failed is in error, the
  files it never reached are not counted; a later task that failed (auto-set after the upload)
  puts the files it did not finish in error, without a fatal error;
- a stopped job counts only what it processed before the stop;
- `endDate` is when the job completed (its last task ended, or it left after a stop); a job
  still running has a log without `endDate` and the counts so far.

The per-file outcomes come from a generator seeded by the config seed and the job, never from
the world's own generators, so job logs change nothing of what `getActiveJobs` shows.

Besides the logs of the jobs the world runs, "short jobs" appear in the logs only: jobs that
run a few wall-clock seconds, less than any poll interval, so no client could have seen them
active (the simulator does not list them in getActiveJobs). They arrive every
`short_job_period / time_scale` seconds and cycle through the outcomes (fatal, errors,
warnings, succeeded, duplicates), so every outcome shows up early whatever the seed. Before
the world starts, `job_log_backfill_hours` of such jobs (short and long) give it a past.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.simulator.world import Company, Job

# File outcome codes: success, update, warning, duplicate skipped, error.
SUCCESS, UPDATE, WARNING, DUPLICATE, ERROR = "S", "U", "W", "D", "E"

OUTCOMES = ("fatal", "errors", "warnings", "succeeded", "duplicates")

# The Job Log Types prefix of each job type (Adobe's list: BeginUpload, EndUpload,
# UploadSuccess, UploadError, UploadWarning, BeginImageServingPublish, BeginMetadata, ...).
# Adobe lists no log types for video publish and image optimization: ours are inferred.
LOG_KINDS = {
    "UrlUpload": "Upload",
    "UploadFromServerDirectory": "Upload",
    "MetadataUpload": "Metadata",
    "ImageOptimization": "ImageOptimization",
    "Cleanup": "Delete",
    "ImageServingPublish": "ImageServingPublish",
    "ImageRenderingPublish": "ImageRenderingPublish",
    "ServerDirectoryPublish": "ServerDirectoryPublish",
    "ServerDirectoryPublishWithTemplate": "ServerDirectoryPublish",
    "VideoPublish": "VideoPublish",
}
_ERROR_TYPES = {"Metadata": "MetadataFailure", "Delete": "DeleteFailure"}
_BEGUN = {"Upload": "Upload has begun!"}

# (share of jobs, code drawn for each processed file): most clean, some warnings, some
# duplicates skipped, a few with files in error.
_PROFILES = (
    (0.70, "clean"),
    (0.15, "warnings"),
    (0.10, "duplicates"),
    (0.05, "errors"),
)
_WARNINGS = (
    "Embedded colour profile missing; sRGB assumed",
    "Image larger than the recommended size",
    "Unsupported metadata field ignored",
)
_ERRORS = ("Unable to read source file", "Image decoding error", "Unsupported file format")

# (file name, outcome code, wall-clock time, message)
FileRow = tuple[str, str, float, str]


@dataclass(frozen=True, slots=True)
class JobLog:
    """One job's log as IPS reports it at one moment. Times are unix seconds."""

    company: Company
    handle: str  # the log's own handle: `<company id>||<job name>`
    active_handle: str | None  # the handle the job had in getActiveJobs (None: never listed)
    name: str
    original_name: str
    submit_user_email: str
    job_type: str
    log_type: str
    job_sub_type: str
    description: str
    server_name: str
    start: float
    end: float | None  # None while the job runs
    success: int
    error: int
    warning: int
    duplicate: int
    update: int
    total: int
    transfer_success: int
    transfer_error: int
    transfer_warning: int
    fatal: bool
    fatal_reason: str
    files: tuple[FileRow, ...]

    @property
    def outcome(self) -> str:
        """fatal, errors, warnings or succeeded, as the exporter's metric contract reads it."""
        if self.fatal:
            return "fatal"
        if self.error or self.transfer_error:
            return "errors"
        if self.warning or self.transfer_warning:
            return "warnings"
        return "succeeded"

    def details(self) -> list[tuple[str, str, float, str | None]]:
        """The log messages, in date order: (logMessage, logType, dateCreated, file name)."""
        kind = LOG_KINDS.get(self.job_type, self.job_type)
        rows: list[tuple[str, str, float, str | None]] = [
            (_BEGUN.get(kind, f"{kind} has begun"), f"Begin{kind}", self.start, None),
            (self.original_name, "OriginalJobName", self.start, None),
            (self.server_name, "JobClient", self.start, None),
        ]
        for name, code, at, message in sorted(self.files, key=lambda row: row[2]):
            rows.append((message, _detail_type(kind, code), at, name))
        if self.fatal and self.end is not None:
            rows.append((self.fatal_reason, "FatalError", self.end, None))
        if self.end is not None:
            rows.append((f"{kind} completed", f"End{kind}", self.end, None))
        return rows


def _detail_type(kind: str, code: str) -> str:
    if code == DUPLICATE:
        return "DuplicateSkipped"
    if code == ERROR:
        return _ERROR_TYPES.get(kind, f"{kind}Error")
    if code == WARNING:
        return f"{kind}Warning"
    return f"{kind}Success"


def asset_type(name: str, job_type: str) -> str:
    if job_type == "VideoPublish" or name.endswith((".mp4", ".mov")):
        return "Video"
    return "Image"


def asset_handle(company: Company, name: str) -> str:
    return f"a|{company.handle.rpartition('|')[2]}|{zlib.crc32(name.encode()):08x}"


def log_handle(company: Company, name: str) -> str:
    return f"{company.handle.rpartition('|')[2]}||{name}"


def job_name(original_name: str, base: float, tz: timezone) -> str:
    """The unique job name IPS makes of the submitted one (as World does for active jobs)."""
    stamp = datetime.fromtimestamp(base, tz)
    return f"{original_name}_{stamp:%Y-%m-%d-%H:%M:%S}.{stamp.microsecond // 1000:03d}"


def file_codes(rng: random.Random, n: int, profile: str | None = None) -> str:
    """The outcome each of `n` files takes if it is processed, by the job's profile."""
    if profile is None:
        roll, profile = rng.random(), "clean"
        for share, name in _PROFILES:
            if roll < share:
                profile = name
                break
            roll -= share
    codes = [UPDATE if rng.random() < 0.2 else SUCCESS for _ in range(n)]
    special = {"warnings": WARNING, "duplicates": DUPLICATE, "errors": ERROR}.get(profile)
    if special is not None and n:
        for i in range(n):
            if rng.random() < 0.3:
                codes[i] = special
        codes[rng.randrange(n)] = special  # at least one
    return "".join(codes)


def file_message(rng: random.Random, code: str, name: str) -> str:
    if code == SUCCESS:
        return f"{name} processed"
    if code == UPDATE:
        return f"{name} updated (replaced an existing asset)"
    if code == WARNING:
        return f"{name}: {rng.choice(_WARNINGS)}"
    if code == DUPLICATE:
        return f"{name}: duplicate skipped"
    return f"{name}: {rng.choice(_ERRORS)}"


def make_log(
    *,
    company: Company,
    name: str,
    active_handle: str | None,
    original_name: str,
    submit_user_email: str,
    job_type: str,
    job_sub_type: str,
    description: str,
    server_name: str,
    start: float,
    end: float | None,
    files: list[FileRow],
    total: int,
    transfers: tuple[int, int, int],
    fatal: bool,
    fatal_reason: str = "",
) -> JobLog:
    counts = dict.fromkeys((SUCCESS, UPDATE, WARNING, DUPLICATE, ERROR), 0)
    for _, code, _, _ in files:
        counts[code] += 1
    return JobLog(
        company=company,
        handle=log_handle(company, name),
        active_handle=active_handle,
        name=name,
        original_name=original_name,
        submit_user_email=submit_user_email,
        job_type=job_type,
        log_type=f"Begin{LOG_KINDS.get(job_type, job_type)}",
        job_sub_type=job_sub_type,
        description=description,
        server_name=server_name,
        start=start,
        end=end,
        success=counts[SUCCESS],
        error=counts[ERROR],
        warning=counts[WARNING],
        duplicate=counts[DUPLICATE],
        update=counts[UPDATE],
        total=total,
        transfer_success=transfers[0],
        transfer_error=transfers[1],
        transfer_warning=transfers[2],
        fatal=fatal,
        fatal_reason=fatal_reason,
        files=tuple(files),
    )


def job_end(job: Job) -> float:
    """The job time at which `job` completes: its last task ended (a publish: its work), or,
    stopped, when it leaves."""
    final = max((task.final_at for task in job.tasks), default=job.work_end)
    if job.stop_at is not None and job.stop_at < final:
        return job.leave_at
    return final


def log_of_job(job: Job, now: float, seed: int) -> JobLog:
    """The log of a job the world runs, at wall time `now`."""
    rng = random.Random(f"{seed}:log:{job.company.handle}:{job.name}")  # noqa: S311 - simulation
    t = job.job_time(now)
    wall = job.wall
    end_t = job_end(job)
    completed = t >= end_t
    files: list[FileRow] = []
    fatal, reason = False, ""
    transfers = (0, 0, 0)
    if job.tasks:
        first = job.tasks[0]
        names = first.names
        codes = file_codes(rng, len(names))
        status = job.task_status(first, t)
        cut = status.cut
        failed = status.state == "Failed"
        by_name: dict[str, int] = {}
        in_flight = 0  # files in hand when the task failed
        for i, (name, start, end) in enumerate(zip(names, first.starts, first.ends, strict=True)):
            if end <= cut:
                by_name[name] = len(files)
                files.append((name, codes[i], wall(end), file_message(rng, codes[i], name)))
            elif start <= cut and failed:
                in_flight += 1
                files.append((name, ERROR, status.last_update, f"{name}: {first.fail_reason}"))
        if failed:
            fatal, reason = True, f"Job failed: {first.fail_reason}"
        if LOG_KINDS.get(job.job_type) == "Upload":
            transfers = (len(by_name), in_flight, 0)
        for later in job.tasks[1:]:
            later_status = job.task_status(later, t)
            if later_status.state != "Failed":
                continue
            for name, end in zip(later.names, later.ends, strict=True):
                index = by_name.get(name)
                if end > later_status.cut and index is not None:
                    files[index] = (name, ERROR, later_status.last_update, f"{name}: {later.fail_reason}")
        total = len(names)
    else:  # a publish: no tasks, files of its own, worked evenly from work_start to work_end
        total = rng.randint(5, 400)
        codes = file_codes(rng, total)
        span = max(job.work_end - job.work_start, 1e-9)
        upto = min(t, job.stop_at) if job.stop_at is not None else t
        done = 0 if upto < job.work_start else min(total, int(total * (upto - job.work_start) / span))
        stem = job.original_name.replace("_", "-")
        for i in range(done):
            at = job.work_start + span * (i + 1) / total
            name = f"{job.company.root_path}published/{stem}-{i + 1:04d}.jpg"
            files.append((name, codes[i], wall(at), file_message(rng, codes[i], name)))
    sub_type = ""
    if job.job_type == "ImageServingPublish":
        publish = dict(job.detail).get("publishType", "Full")
        sub_type = "increment" if publish == "Increment" else "full"
    return make_log(
        company=job.company,
        name=job.name,
        active_handle=job.handle,
        original_name=job.original_name,
        submit_user_email=job.submit_user_email,
        job_type=job.job_type,
        job_sub_type=sub_type,
        description=job.description or "",
        server_name=job.server_name,
        start=job.base + job.start_offset,
        end=wall(end_t) if completed else None,
        files=files,
        total=total,
        transfers=transfers,
        fatal=fatal and completed,
        fatal_reason=reason,
    )


def short_job_log(
    rng: random.Random,
    company: Company,
    user: str,
    original_name: str,
    outcome: str,
    start: float,
    duration: float,
    tz: timezone,
) -> JobLog:
    """A job that appears in the logs only, ended at start + duration with `outcome`."""
    job_type = rng.choice(("UrlUpload", "UploadFromServerDirectory", "UrlUpload", "MetadataUpload"))
    n = rng.randint(1, 12)
    folder = f"{company.root_path}{rng.choice(('incoming', 'feeds', 'swatches'))}"
    names = [f"{folder}/{original_name.replace('_', '-')}-{i + 1:03d}.jpg" for i in range(n)]
    end = start + duration
    profile = {"warnings": "warnings", "duplicates": "duplicates", "errors": "errors"}.get(outcome, "clean")
    codes = file_codes(rng, n, profile)
    files: list[FileRow] = []
    fatal = outcome == "fatal"
    reached = rng.randint(0, n - 1) if fatal else n
    for i in range(reached + fatal):
        code = ERROR if fatal and i == reached else codes[i]
        at = start + duration * (i + 1) / (n + 1)
        files.append((names[i], code, at, file_message(rng, code, names[i])))
    upload = LOG_KINDS[job_type] == "Upload"
    transfer_errors = 1 if fatal and upload else 0
    transfers = (reached, transfer_errors, 0) if upload else (0, 0, 0)
    return make_log(
        company=company,
        name=job_name(original_name, start, tz),
        active_handle=None,
        original_name=original_name,
        submit_user_email=user,
        job_type=job_type,
        job_sub_type="",
        description="",
        server_name=f"saastex_100_{rng.randint(40, 60)}",
        start=start,
        end=end,
        files=files,
        total=n,
        transfers=transfers,
        fatal=fatal,
        fatal_reason="Job failed: Storage quota exceeded" if fatal else "",
    )
