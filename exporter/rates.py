"""How fast each active task processes its items, as measured over the exporter's last polls.

IPS gives counts, not rates: the jobs page's ETA needs the rate at which a task's processed count
grows. Per task, the jobs page's index (exporter/jobindex.py) keeps the count and time of the
last poll and a rate smoothed over the polls before (an exponentially weighted average with a
time constant of `TIME_CONSTANT_SECONDS`, whatever the poll interval): recent polls weigh most,
one slow poll does not make the ETA jump. A task seen once has no rate yet; a task whose count
fell (its job was restarted) starts again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TIME_CONSTANT_SECONDS = 600.0

TaskKey = tuple[str, str]  # (job handle, task type)


@dataclass(frozen=True, slots=True)
class Measure:
    """A task's processed count at the last poll, and its rate in items per second (None until
    two polls have seen it)."""

    at: float
    processed: int
    rate: float | None = None


def next_measure(previous: Measure | None, at: float, processed: int) -> Measure:
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
