"""exporter.process: the process metrics, as prometheus-client's ProcessCollector gives them."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from exporter.process import ProcessMetrics
from exporter.render import encoded


def _values(collector: object) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}  # type: ignore[attr-defined]


def test_the_same_families_help_and_types_as_prometheus_client():
    ours, theirs = ProcessMetrics(), ProcessCollector(registry=None)
    for encode in (generate_latest, generate_openmetrics):
        def skeleton(text: bytes) -> list[bytes]:
            return [line if line.startswith(b"#") else line.split()[0] for line in text.splitlines()]

        assert skeleton(encode(ours)) == skeleton(encode(theirs))  # type: ignore[arg-type]


def test_the_same_values_as_prometheus_client():
    burn = sum(i * i for i in range(300_000))  # some CPU time to count
    assert burn
    theirs = _values(ProcessCollector(registry=None))
    ours = _values(ProcessMetrics())
    after = _values(ProcessCollector(registry=None))
    assert set(ours) == set(theirs)
    assert ours["process_start_time_seconds"] == theirs["process_start_time_seconds"]
    cpu = "process_cpu_seconds_total"
    assert theirs[cpu] <= ours[cpu] <= after[cpu]
    for name in ("process_resident_memory_bytes", "process_virtual_memory_bytes"):
        assert abs(ours[name] - theirs[name]) <= 0.05 * theirs[name]
    assert ours["process_max_fds"] == theirs["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert abs(ours["process_open_fds"] - theirs["process_open_fds"]) <= 1


def test_read_fresh_at_every_collect():
    metrics = ProcessMetrics()
    before = _values(metrics)
    files = [os.open("/dev/null", os.O_RDONLY) for _ in range(5)]
    try:
        held = bytearray(64 << 20)
        held[:: 4096] = b"x" * len(held[:: 4096])  # touched: resident
        during = _values(metrics)
        assert during["process_open_fds"] >= before["process_open_fds"] + 5
        assert during["process_resident_memory_bytes"] >= before["process_resident_memory_bytes"] + (60 << 20)
        del held
    finally:
        for fd in files:
            os.close(fd)


def test_without_proc_nothing_as_prometheus_client(tmp_path):
    assert list(ProcessMetrics(proc=str(tmp_path)).collect()) == []
    assert list(ProcessCollector(proc=str(tmp_path), registry=None).collect()) == []


CONTENT_TYPES = [
    "text/plain; version=0.0.4; charset=utf-8",
    "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
    "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=dots",
    "text/plain; version=1.0.0; charset=utf-8; escaping=values",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("values", [
    (123456789.0, 45678592.0, 1764582000.12, 1.23, 17.0, 1048576.0),
    (0.0, 1.0, 1e21, 0.1, 0.0, float("inf")),
    (2.0**53, 123.456e-7, 1764582000.0, 12345678.9, 3.0, 1024.0),
])
def test_the_text_written_from_values_is_prometheus_clients(content_type, values):
    metrics = ProcessMetrics()
    encode, chosen = choose_encoder(content_type.split(";", 1)[0] + ";" + content_type.split(";", 1)[1])
    assert chosen.split(";")[0] == content_type.split(";")[0]

    class Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            return metrics.families(values)

    calls = []

    def counting(source: Collector) -> bytes:
        calls.append(source)
        return encode(source)

    for _ in range(2):  # learnt, then from the template
        assert metrics.write(chosen, counting, values) == encoded(encode, chosen, Fixed())
    assert len(calls) == 1  # the encoder is asked once per content type


def test_no_descriptor_limit_is_plus_inf(monkeypatch):
    monkeypatch.setattr(
        "exporter.process.resource.getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    metrics = ProcessMetrics()
    assert _values(metrics)["process_max_fds"] == float("inf")
    assert b"process_max_fds +Inf\n" in metrics.text("text/plain; version=0.0.4; charset=utf-8", generate_latest)
