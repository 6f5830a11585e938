"""How fast each active task processes its items, as measured over the exporter's last polls.

IPS gives counts, not rates: the jobs page's ETA needs the rate at which a task's processed count
grows. A subscriber of the store keeps, per task, the count and time of the last poll and a rate
smoothed over the polls before (an exponentially weighted average with a time constant of
`TIME_CONSTANT_SECONDS`, whatever the poll interval): recent polls weigh most, one slow poll
does not make the ETA jump. A task seen once has no rate yet; a task whose count fell (its job
was restarted) starts again. Only the tasks of the last poll are kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter.snapshot import CompanyTarget, State

TIME_CONSTANT_SECONDS = 600.0

TaskKey = tuple[str, str]  # (job handle, task type)


@dataclass(frozen=True, slots=True)
class Measure:
    """A task's processed count at the last poll, and its rate in items per second (None until
    two polls have seen it)."""

    at: float
    processed: int
    rate: float | None = None


_NONE: Mapping[TaskKey, Measure] = MappingProxyType({})


class ProgressRates:
    """Subscribe it to the store; `of(target)` gives a company's measures by task."""

    def __init__(self) -> None:
        self._measures: dict[CompanyTarget, Mapping[TaskKey, Measure]] = {}
        self._polled_at: dict[CompanyTarget, float] = {}

    def __call__(self, state: State) -> None:
        targets = set()
        for company in state.companies:
            targets.add(company.target)
            at = company.fetched_at
            if at is None or self._polled_at.get(company.target) == at:
                continue
            self._polled_at[company.target] = at
            before = self._measures.get(company.target, _NONE)
            now: dict[TaskKey, Measure] = {}
            for job in company.jobs:
                for task in job.task_progress_array:
                    key = (job.job_handle, task.task_type)
                    now[key] = _next(before.get(key), at, task.num_processed)
            self._measures[company.target] = MappingProxyType(now)
        for gone in self._measures.keys() - targets:
            del self._measures[gone]
            self._polled_at.pop(gone, None)

    def of(self, target: CompanyTarget) -> Mapping[TaskKey, Measure]:
        return self._measures.get(target, _NONE)


def _next(previous: Measure | None, at: float, processed: int) -> Measure:
    if previous is None or processed < previous.processed or at <= previous.at:
        return Measure(at, processed)
    elapsed = at - previous.at
    observed = (processed - previous.processed) / elapsed
    if previous.rate is None:
        return Measure(at, processed, observed)
    weight = 1.0 - math.exp(-elapsed / TIME_CONSTANT_SECONDS)
    return Measure(at, processed, previous.rate + weight * (observed - previous.rate))


def eta_seconds(measure: Measure | None, remaining: int) -> float | None:
    """Seconds until `remaining` items are processed at the measured rate; None where the rate
    is unknown or zero (no guess), 0 when nothing remains."""
    if remaining <= 0:
        return 0.0
    if measure is None or measure.rate is None or measure.rate <= 0:
        return None
    return remaining / measure.rate
