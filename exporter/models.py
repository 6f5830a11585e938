"""Typed, immutable models of the IPS records the exporter reads.

Field names are Python's; aliases are the wire names, so a record read off the wire as a
mapping of element names validates directly. Enumerations keep a value they do not know as its
raw string: a new state from Adobe must never break a poll.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator
from pydantic.alias_generators import to_camel


class TaskState(StrEnum):
    """TaskProgress.taskState, added in API 2012-02-14."""

    UNKNOWN = "Unknown"
    NEW = "New"
    PROCESSING = "Processing"
    STOPPING = "Stopping"
    DONE = "Done"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED)


class JobState(StrEnum):
    """ActiveJob.state: the Active Job States."""

    UNKNOWN = "Unknown"
    NEW = "New"
    WAITING_CLIENT = "WaitingClient"
    WAITING_COORDINATOR = "WaitingCoordinator"
    RUNNING = "Running"
    STOPPING = "Stopping"
    DONE = "Done"


_TASK_STATES: dict[str, TaskState] = {state.value: state for state in TaskState}
_JOB_STATES: dict[str, JobState] = {state.value: state for state in JobState}


def _known_task_state(value: Any) -> TaskState | str:
    if not isinstance(value, str):
        raise ValueError("a state is a string")
    return _TASK_STATES.get(value, value)


def _known_job_state(value: Any) -> JobState | str:
    if not isinstance(value, str):
        raise ValueError("a state is a string")
    return _JOB_STATES.get(value, value)


# Counts are xs:int on the wire; anything beyond 64 bits makes the record invalid.
Count = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

# A documented value becomes the enum member; any other string is kept as it came. A plain
# validator, not a union of the enum and str: the union cost a third of the validation of a job.
TaskStateValue = Annotated[TaskState | str, PlainValidator(_known_task_state, json_schema_input_type=str)]
JobStateValue = Annotated[JobState | str, PlainValidator(_known_job_state, json_schema_input_type=str)]


# Every model of a kind given the same fields shares one set of their names, as pydantic keeps it
# per instance: a set of 16 names takes 728 bytes, more than the job's values, so shared it makes a
# 10,000-job State 45% smaller. Bounded: which fields are given comes from the answer. Nothing
# mutates it: the models are frozen, and pydantic copies it before a `model_copy(update=...)`.
_MAX_SHARED_FIELD_SETS = 256
_shared_field_sets: dict[frozenset[str], set[str]] = {}


class IpsModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )

    def model_post_init(self, context: Any, /) -> None:
        given = self.__pydantic_fields_set__
        key = frozenset(given)
        shared = _shared_field_sets.get(key)
        if shared is None:
            if len(_shared_field_sets) < _MAX_SHARED_FIELD_SETS:
                _shared_field_sets[key] = given
        else:
            object.__setattr__(self, "__pydantic_fields_set__", shared)


class TaskItemProgress(IpsModel):
    """Progress of one work item (a file) of a task."""

    item_name: str
    progress: float
    progress_message: str = ""
    last_progress_update: AwareDatetime


class TaskProgress(IpsModel):
    """Progress of one task monitor of a job: the exporter's central type."""

    task_type: str
    task_state: TaskStateValue | None = None
    num_processed: Count
    num_processing: Count
    num_pending: Count
    progress: float
    progress_message: str = ""
    last_progress_update: AwareDatetime
    task_item_progress_array: tuple[TaskItemProgress, ...] = ()
    # Entries in taskItemProgressArray, also when the poller reads without keeping them.
    item_count: int = 0

    @property
    def known_state(self) -> TaskState:
        """The state as one of the six documented values: Unknown when absent or new."""
        return self.task_state if isinstance(self.task_state, TaskState) else TaskState.UNKNOWN


class ActiveJob(IpsModel):
    """One entry of getActiveJobs: a running job and its task monitors."""

    company_handle: str
    job_handle: str
    name: str
    original_name: str
    job_type: str = Field(alias="type")
    state: JobStateValue
    submit_user_email: str = Field(default="", repr=False)
    locale: str | None = None
    description: str | None = None
    server_name: str = ""
    start_date: AwareDatetime
    trigger_time: AwareDatetime | None = None
    total_size: Count = 0
    progress: Count = 0
    progress_message: str = ""
    last_progress_update: AwareDatetime
    task_progress_array: tuple[TaskProgress, ...] = ()

    @property
    def known_state(self) -> JobState:
        return self.state if isinstance(self.state, JobState) else JobState.UNKNOWN


class Company(IpsModel):
    """A company (an IPS tenant) the user can see."""

    company_handle: str
    name: str
    root_path: str = ""
    expires: AwareDatetime | None = None
    ims_org_id: str | None = None


# xs:int and xs:boolean as XML Schema writes them. Pydantic's lax parsing would take "1.0",
# "1_000", "yes" or "on": for a JobLog those make the record invalid, as for a schema validator.
XS_INT_MAX = 2**31 - 1
_XS_INT = re.compile(r"[+-]?[0-9]{1,12}")
_XS_WHITESPACE = " \t\n\r"
_XS_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _xs_int(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip(_XS_WHITESPACE)
        if not _XS_INT.fullmatch(text):
            raise ValueError("not an xs:int")
        return int(text)
    return value


def _xs_boolean(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip(_XS_WHITESPACE)
        if text not in _XS_BOOLEANS:
            raise ValueError("not an xs:boolean")
        return _XS_BOOLEANS[text]
    return value


# A JobLog count: a non-negative xs:int. IPS runs on Java, whose int ends at 2**31 - 1, so a
# larger count comes only from a broken or hostile answer, and it would stay in the counters that
# sum these counts for good (an active job's gauge recovers at the next poll): the record is
# invalid, as it is for a negative count.
LogCount = Annotated[int, BeforeValidator(_xs_int), Field(ge=0, le=XS_INT_MAX)]
XsBoolean = Annotated[bool, BeforeValidator(_xs_boolean)]


class JobOutcome(StrEnum):
    """How a finished job ended, from its JobLog: the `outcome` label of the job-log metrics."""

    FATAL = "fatal"
    ERRORS = "errors"
    WARNINGS = "warnings"
    SUCCEEDED = "succeeded"


class JobLogSortBy(StrEnum):
    """getJobLogsParam `sortBy`."""

    JOB_NAME = "JobName"
    LOG_TYPE = "LogType"
    START_DATE = "StartDate"
    COMPANY_NAME = "CompanyName"
    USER_ID = "UserId"
    EMAIL = "Email"
    FILE_ERROR_COUNT = "FileErrorCount"
    FILE_WARNING_COUNT = "FileWarningCount"
    FILE_SUCCESS_COUNT = "FileSuccessCount"


class SortDirection(StrEnum):
    """getJobLogsParam `sortDirection`."""

    ASCENDING = "Ascending"
    DESCENDING = "Descending"


class JobLog(IpsModel):
    """One entry of getJobLogs: what became of a finished (or running) job.

    Every API version has the handles, names, `logType`, the five file counts, `totalFileCount`
    and `fatalError`; `originalJobName`, `jobSubType` and `description` came with 4.0
    (2008-01-15), the `transfer*` counts with 4.4 (2009-07-31): absent, they are None. The
    counts need not add up (Adobe's own example does not). `submitUserEmail` (personal data) and
    `description` (free text) are kept for reading, never for a label. `detailTotalRows` and
    `detailArray` (getJobLogDetails only) are not read: no log message is kept.
    """

    company_handle: str
    job_handle: str
    job_name: str
    original_job_name: str | None = None
    submit_user_email: str = Field(default="", repr=False)  # never a label
    log_type: str
    job_sub_type: str | None = None  # full, increment, ...: ImageServingPublish only
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None  # only once the job has completed
    description: str | None = Field(default=None, repr=False)  # never a label
    file_success_count: LogCount
    file_error_count: LogCount
    file_warning_count: LogCount
    file_duplicate_count: LogCount
    file_update_count: LogCount
    total_file_count: LogCount
    transfer_success_count: LogCount | None = None
    transfer_error_count: LogCount | None = None
    transfer_warning_count: LogCount | None = None
    fatal_error: XsBoolean

    @property
    def outcome(self) -> JobOutcome:
        """`fatal` on a fatal error, else `errors` if a file or transfer failed, else
        `warnings` if one warned, else `succeeded`."""
        if self.fatal_error:
            return JobOutcome.FATAL
        if self.file_error_count or self.transfer_error_count:
            return JobOutcome.ERRORS
        if self.file_warning_count or self.transfer_warning_count:
            return JobOutcome.WARNINGS
        return JobOutcome.SUCCEEDED


class CompanyMembership(IpsModel):
    """The calling user's membership of one company."""

    company: Company
    role: str = ""
    is_active: bool = True
