"""Typed, immutable models of the IPS records the exporter reads.

Field names are Python's; aliases are the wire names, so a record read off the wire as a
mapping of element names validates directly. Enumerations keep a value they do not know as its
raw string: a new state from Adobe must never break a poll.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
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


def _known_task_state(value: Any) -> Any:
    return TaskState(value) if value in TaskState._value2member_map_ else value


def _known_job_state(value: Any) -> Any:
    return JobState(value) if value in JobState._value2member_map_ else value


# Counts are xs:int on the wire; anything beyond 64 bits makes the record invalid.
Count = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

# A documented value becomes the enum member; any other string is kept as it came.
TaskStateValue = Annotated[TaskState | str, BeforeValidator(_known_task_state)]
JobStateValue = Annotated[JobState | str, BeforeValidator(_known_job_state)]


class IpsModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )


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


class CompanyMembership(IpsModel):
    """The calling user's membership of one company."""

    company: Company
    role: str = ""
    is_active: bool = True
