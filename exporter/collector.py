"""Renders a `State` as Prometheus metric families, as `metrics.FAMILIES` specifies them.

The collector is a pure function of one immutable State and the time: it yields families, the
prometheus-client encoders turn them into text. A stale company keeps only its health series,
with `scene7_up` 0; above the max-series guard the per-job families are left empty.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.metrics import FAMILIES, FamilySpec, Frame
from exporter.snapshot import State

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily
KINDS: dict[str, type[Family]] = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
                                  "histogram": HistogramMetricFamily}
# The names prometheus-client's registry knows a family by, besides its own (`?name[]=` matches them).
SUFFIXES = {"gauge": (), "counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


class SnapshotCollector(Collector):
    """Yields the metric families of one State at time `now`.

    Families are built one at a time, each just before it is encoded, so a render holds the
    samples of one family, not of all of them: at 10,000 jobs that is most of its memory.
    """

    def __init__(self, state: State, *, now: float, interval: float, job_log_interval: float,
                 only: frozenset[str] | None = None) -> None:
        """`only`: the names asked for by `?name[]=`; the other families are not built at all
        (a registry's restricted view would build every family, then drop most)."""
        self.frame = Frame.of(state, now)
        self.only = only
        self.poll_note = f" From a background poll of IPS every {interval:g}s."
        self.job_log_note = f" From a background poll of IPS job logs every {job_log_interval:g}s."

    def empty(self, spec: FamilySpec) -> Family:
        """The family of `spec` without samples: its HELP and TYPE."""
        cls = KINDS[spec.kind]
        note = self.job_log_note if spec.from_job_logs else self.poll_note
        return cls(spec.name, spec.help + note, labels=list(spec.labels))

    def exported(self, spec: FamilySpec) -> bool:
        """Whether the family has samples in this State: the guard may leave the per-job ones out."""
        return self.frame.state.per_job_series or not spec.per_job

    def family(self, spec: FamilySpec) -> Family:
        family = self.empty(spec)
        if self.exported(spec):
            for labels, value in spec.samples(self.frame):
                if isinstance(family, HistogramMetricFamily):
                    assert isinstance(value, tuple)
                    family.add_metric(labels, list(value[0]), value[1])
                else:
                    assert not isinstance(value, tuple)
                    family.add_metric(labels, value)
        return family

    def describe(self) -> Iterator[Metric]:
        for spec in FAMILIES:
            yield self.empty(spec)

    def named(self, spec: FamilySpec) -> bool:
        if self.only is None:
            return True
        family = self.empty(spec)
        return any(family.name + suffix in self.only for suffix in ("", *SUFFIXES[spec.kind]))

    def collect(self) -> Iterator[Metric]:
        for spec in FAMILIES:
            if self.named(spec):
                yield self.family(spec)
