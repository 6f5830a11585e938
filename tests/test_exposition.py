"""The exposition: content negotiation, gzip, `?name[]=` filtering, and the bytes kept per State."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import random
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from support import ticks_while

from exporter import exposition as exposition_module
from exporter import forked
from exporter.collector import SnapshotCollector
from exporter.exposition import OPENMETRICS_1_0_0, TEXT_0_0_4, Exposition, Variant
from exporter.models import ActiveJob, TaskProgress
from exporter.snapshot import CompanyTarget, Store

NOW = 1_800_000_000.0
TARGET = CompanyTarget("main", "c|110", "Bits & Bytes")
WHEN = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
PLAIN = Variant(TEXT_0_0_4, gzip=False)
GZIP = Variant(TEXT_0_0_4, gzip=True)
# What Prometheus 3 sends: OpenMetrics 1.0.0 with UTF-8 names first, 0.0.4 text last.
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def job(name: str) -> ActiveJob:
    task = TaskProgress(
        task_type="t", task_state="Processing", num_processed=1, num_processing=1, num_pending=2,
        progress=0.25, last_progress_update=WHEN,
    )
    return ActiveJob(
        company_handle="c|110", job_handle=f"j|{name}", name=name, original_name=name, job_type="UrlUpload",
        state="Running", server_name="srv1", start_date=WHEN, last_progress_update=WHEN, task_progress_array=(task,),
    )


def poll(store: Store, *names: str, at: float = NOW) -> None:
    store.record_success(TARGET, tuple(job(name) for name in names), at=at, duration=0.5)


def polled(*names: str) -> Store:
    store = Store(max_age=180.0)
    poll(store, *names)
    return store


def families(body: bytes) -> set[str]:
    return {family.name for family in text_string_to_metric_families(body.decode())}


# --- negotiation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "content_type"), [
    (None, TEXT_0_0_4),
    ("text/plain;version=0.0.4", TEXT_0_0_4),
    ("application/json", TEXT_0_0_4),
    ("application/openmetrics-text", OPENMETRICS_1_0_0),
    ("application/openmetrics-text; version=1.0.0",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"),
    (PROMETHEUS_3_ACCEPT, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("text/plain; version=1.0.0", "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("application/openmetrics-text; version=abc", TEXT_0_0_4),  # prometheus-client raises on it
])
async def test_the_content_type_is_chosen_as_prometheus_client_chooses_it_and_renders(accept, content_type):
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW)
    variant = exposition.negotiate(accept, None)
    assert variant == Variant(content_type, gzip=False)
    body = bytes(await exposition.body(variant))
    assert body.endswith(b"# EOF\n") == content_type.startswith("application/openmetrics-text")
    assert b'scene7_up{company="Bits & Bytes"} 1' in body


def test_content_types_a_scraper_names_are_kept_up_to_eight_then_it_gets_text_0_0_4():
    exposition = Exposition(Store(), interval=60)
    versions = [f"1.0.{patch}" for patch in range(7)]
    chosen = [exposition.negotiate(f"application/openmetrics-text; version={v}", None).content_type for v in versions]
    # The two built-in content types and six named by scrapers make eight: the seventh is refused.
    assert chosen == [
        *(f"application/openmetrics-text; version={v}; charset=utf-8; escaping=underscores" for v in versions[:6]),
        TEXT_0_0_4,
    ]
    assert exposition.negotiate("application/openmetrics-text; version=1.0.5", None).content_type == chosen[5]
    assert exposition.negotiate("application/openmetrics-text", None).content_type == OPENMETRICS_1_0_0


@pytest.mark.parametrize(("accept_encoding", "gzip"), [
    (None, False), ("", False), ("identity", False), ("gzip", True), ("GZip", True), ("br, gzip;q=0.5", True),
    ("gzip;q=0", False), ("gzip; Q=0.000", False), ("deflate, gzip", True), ("x-gzip", False),
    ("gzip;level=9", True), ("gzip;q=high", False), ("gzip;q=0=1", False),
])
def test_gzip_is_negotiated_case_blind_and_refused_with_q_0_or_a_malformed_q(accept_encoding, gzip):
    assert Exposition(Store(), interval=60).negotiate(None, accept_encoding) == Variant(TEXT_0_0_4, gzip)


async def test_the_gzip_body_is_the_plain_one_compressed_fast_and_without_a_timestamp():
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW)
    plain = bytes(await exposition.body(PLAIN))
    compressed = bytes(await exposition.body(GZIP))
    assert gzip.decompress(compressed) == plain
    # Header: magic, deflate, no flags, mtime 0 (the same State gives the same bytes), XFL 4 = fastest level.
    assert compressed[:9] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04"


# --- ?name[]= ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("names", "expected", "line"), [
    (["scene7_up"], {"scene7_up"}, b'scene7_up{company="Bits & Bytes"} 1.0'),
    (["scene7_polls_total", "scene7_job_info"], {"scene7_polls", "scene7_job_info"}, b'job_name="a_1"'),
    (["scene7_no_such_metric"], set(), b""),
])
async def test_name_filtering_renders_only_the_named_families_and_leaves_the_cache_alone(names, expected, line):
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW)
    full = await exposition.body(PLAIN)
    filtered = bytes(await exposition.body(PLAIN, names))
    assert families(filtered) == expected
    assert line in filtered
    assert await exposition.body(PLAIN) is full


async def test_name_filtering_applies_staleness_at_the_time_of_the_scrape():
    now = [NOW]
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: now[0])
    assert b'job_name="a_1"' in bytes(await exposition.body(PLAIN, ["scene7_job_info"]))
    now[0] = NOW + 181
    stale = bytes(await exposition.body(PLAIN, ["scene7_job_info", "scene7_up"]))
    assert b'job_name="a_1"' not in stale and b'scene7_up{company="Bits & Bytes"} 0.0' in stale


# --- the bytes kept per State -----------------------------------------------------------------


async def test_scrapes_of_an_unchanged_state_get_the_bytes_rendered_once():
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW)
    first = await exposition.body(PLAIN)
    await exposition.body(GZIP)  # a new variant renders itself alone
    assert await exposition.body(PLAIN) is first
    await exposition.settle()
    assert await exposition.body(PLAIN) is first


async def test_a_scrape_during_a_render_gets_the_previous_bytes_whole():
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: NOW)
    old = bytes(await exposition.body(PLAIN))  # a variant never asked for waits for its render
    poll(store, "b_1")
    assert bytes(await exposition.body(PLAIN)) == old  # served at once; the new State renders behind
    await exposition.settle()
    new = bytes(await exposition.body(PLAIN))
    assert b'job_name="b_1"' in new and b'job_name="a_1"' not in new


async def test_every_publish_renders_the_newest_state_in_the_background():
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: NOW)
    bytes(await exposition.body(PLAIN))
    bytes(await exposition.body(GZIP))
    for name in ("b_1", "c_1", "d_1"):
        poll(store, name)
        await exposition.settle()
        plain, compressed = bytes(await exposition.body(PLAIN)), bytes(await exposition.body(GZIP))
        assert f'job_name="{name}"'.encode() in plain and gzip.decompress(compressed) == plain


async def test_a_publish_during_a_render_is_rendered_right_after_it():
    store = polled("a_1")
    clock_read = asyncio.Event()

    def clock() -> float:
        clock_read.set()
        return NOW

    exposition = Exposition(store, interval=60, clock=clock)
    bytes(await exposition.body(PLAIN))
    clock_read.clear()
    poll(store, "b_1")
    await clock_read.wait()  # the background render of b_1 has begun
    poll(store, "c_1")
    await exposition.settle()
    body = bytes(await exposition.body(PLAIN))  # no render left to wait for: the newest State, at once
    assert b'job_name="c_1"' in body and b'job_name="b_1"' not in body


async def test_a_failed_render_is_logged_scrapes_keep_the_previous_bytes_and_the_next_publish_retries(
    monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="exporter.exposition")
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: NOW)
    old = bytes(await exposition.body(PLAIN))

    def broken(self: SnapshotCollector, spec: object) -> None:
        raise RuntimeError("a metric failed")

    monkeypatch.setattr(SnapshotCollector, "family", broken)
    poll(store, "b_1")
    await exposition.settle()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("ERROR", "rendering the exposition failed")]
    assert str(caplog.records[0].exc_info[1]) == "a metric failed"
    assert bytes(await exposition.body(PLAIN)) == old
    await exposition.settle()
    monkeypatch.undo()
    poll(store, "c_1")
    await exposition.settle()
    assert b'job_name="c_1"' in bytes(await exposition.body(PLAIN))


async def test_a_company_that_goes_stale_without_a_poll_leaves_the_cached_bytes():
    now = [NOW]
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: now[0])
    fresh = await exposition.body(PLAIN)
    assert b'job_name="a_1"' in bytes(fresh)
    assert await exposition.body(PLAIN) is fresh  # current bytes: served, and no render starts behind
    now[0] = NOW + 181  # no poll since: the same State, now stale
    await exposition.settle()
    assert await exposition.body(PLAIN) is fresh  # the first scrape to see it stale: at once, while it renders
    await exposition.settle()
    stale = bytes(await exposition.body(PLAIN))
    assert b'job_name="a_1"' not in stale
    assert b'scene7_up{company="Bits & Bytes"} 0.0' in stale


def test_a_state_published_outside_the_event_loop_is_rendered_by_the_next_scrape():
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: NOW)
    poll(store, "b_1")  # no running loop: nothing starts
    assert b'job_name="b_1"' in bytes(asyncio.run(exposition.body(PLAIN)))


# --- variants nobody asks for any more --------------------------------------------------------


def odd_variants(exposition: Exposition) -> list[Variant]:
    """The fourteen variants besides text 0.0.4 a client can make us keep: seven content types, plain and gzip."""
    accepts = ["application/openmetrics-text", *(f"application/openmetrics-text; version=1.0.{p}" for p in range(6))]
    variants = [exposition.negotiate(accept, encoding) for accept in accepts for encoding in (None, "gzip")]
    assert len(set(variants)) == 14 and TEXT_0_0_4 not in {variant.content_type for variant in variants}
    return variants


def record_renders(monkeypatch: pytest.MonkeyPatch, exposition: Exposition) -> list[set[Variant]]:
    """The variants of every render from now on (`?name[]=` aside), one set per render."""
    renders: list[set[Variant]] = []
    render_many = exposition._render_many

    def recording(state, variants, now):
        renders.append(set(variants))
        return render_many(state, variants, now)

    monkeypatch.setattr(exposition, "_render_many", recording)
    return renders


async def test_a_publish_renders_only_the_variants_asked_for_in_the_last_five_minutes_and_drops_the_others(
    monkeypatch,
):
    now = [NOW]
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: now[0])
    odd = odd_variants(exposition)
    for variant in [PLAIN, *odd]:  # one scraper, and a client that asks once for everything else
        bytes(await exposition.body(variant))
    renders = record_renders(monkeypatch, exposition)
    for minute in range(1, 8):  # a poll a minute, and the scraper after each
        now[0] = NOW + 60 * minute
        poll(store, f"j_{minute}", at=now[0])
        await exposition.settle()
        assert f'job_name="j_{minute}"'.encode() in bytes(await exposition.body(PLAIN))
    # Asked for 300 s ago is still recent; from the sixth minute on, only the scraper's variant is rendered.
    assert renders == [{PLAIN, *odd}] * 5 + [{PLAIN}] * 2
    assert set(exposition._cache) == set(exposition._wanted) == {PLAIN}


async def test_a_variant_asked_for_again_within_the_window_stays_warm(monkeypatch):
    now = [NOW]
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: now[0])
    bytes(await exposition.body(PLAIN))
    bytes(await exposition.body(GZIP))
    now[0] = NOW + 240
    poll(store, "b_1", at=now[0])
    await exposition.settle()
    await exposition.body(GZIP)  # asked for again; PLAIN is not
    renders = record_renders(monkeypatch, exposition)
    now[0] = NOW + 480
    poll(store, "c_1", at=now[0])
    await exposition.settle()
    assert renders == [{GZIP}]
    body = bytes(await exposition.body(GZIP))  # ready: served without a render
    assert renders == [{GZIP}]
    assert b'job_name="c_1"' in gzip.decompress(body)


async def test_a_forgotten_variant_asked_for_again_renders_on_demand_and_is_kept_again(monkeypatch):
    now = [NOW]
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: now[0])
    openmetrics = exposition.negotiate("application/openmetrics-text", None)
    bytes(await exposition.body(openmetrics))
    for minute in range(1, 7):
        now[0] = NOW + 60 * minute
        poll(store, f"j_{minute}", at=now[0])
        await exposition.settle()
        bytes(await exposition.body(PLAIN))
    assert openmetrics not in exposition._cache  # forgotten at the sixth minute's render
    renders = record_renders(monkeypatch, exposition)
    body = bytes(await exposition.body(openmetrics))
    assert renders == [{openmetrics}]
    assert body.endswith(b"# EOF\n") and b'job_name="j_6"' in body and b'job_name="j_5"' not in body
    assert body == exposition.render(store.state, openmetrics, now[0])
    renders.clear()
    now[0] += 60
    poll(store, "j_7", at=now[0])
    await exposition.settle()
    assert renders == [{PLAIN, openmetrics}]


@pytest.mark.parametrize(("interval", "window"), [(60, 300), (150, 450), (200, 600)])
async def test_a_variant_is_forgotten_once_not_asked_for_in_five_minutes_or_three_polls_if_longer(interval, window):
    now = [NOW]
    store = Store(max_age=3600.0)
    poll(store, "a_1")
    exposition = Exposition(store, interval=60, clock=lambda: now[0])
    exposition.interval = interval  # as a reload of the configuration sets it
    bytes(await exposition.body(GZIP))
    for elapsed, kept in ((window, True), (window + 1, False)):
        now[0] = NOW + elapsed
        poll(store, "a_1", at=now[0])
        await exposition.settle()
        assert (GZIP in exposition._cache) is (GZIP in exposition._wanted) is kept


async def test_a_variant_forgotten_while_it_waits_for_its_render_still_gets_its_bytes():
    readings = [NOW, NOW + 3600]  # the wall clock steps an hour on while the scrape waits for the render
    store = polled("a_1")
    exposition = Exposition(store, interval=60, clock=lambda: readings.pop(0) if len(readings) > 1 else readings[0])
    body = bytes(await exposition.body(PLAIN))
    assert body == exposition.render(store.state, PLAIN, NOW)
    assert b'job_name="a_1"' in body and PLAIN not in exposition._cache


# --- what a scrape adds, and the loop kept free -------------------------------------------------


class Ticking(Collector):
    """A process collector whose one counter goes up at every read, as CPU seconds do."""

    def __init__(self) -> None:
        self.reads = 0

    def collect(self) -> Iterator[Metric]:
        self.reads += 1
        yield CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time.", value=self.reads)


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_process_metrics_are_read_at_every_scrape_after_the_kept_bytes(accept, encoding):
    process = Ticking()
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW, process=process)
    variant = exposition.negotiate(accept, encoding)
    first, second = await exposition.answer(variant), await exposition.answer(variant)
    assert first[0] is second[0]  # the State's bytes, rendered once
    texts = [gzip.decompress(b"".join(parts)) if variant.gzip else b"".join(parts) for parts in (first, second)]
    state_text = exposition.render(exposition.store.state, Variant(variant.content_type, gzip=False), NOW)
    for reads, text in enumerate(texts, start=1):
        process_text = f"process_cpu_seconds_total {reads}.0\n".encode()
        if variant.content_type.startswith("application/openmetrics-text"):
            assert text == state_text.removesuffix(b"# EOF\n") + text[len(state_text) - 6 :]
            assert text.endswith(process_text + b"# EOF\n") and text.count(b"# EOF") == 1
        else:
            assert text.startswith(state_text) and text.endswith(process_text)
    assert process.reads == 2


async def test_name_filtering_applies_to_the_process_metrics_too():
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW, process=Ticking())
    only_up = b"".join(await exposition.answer(PLAIN, ["scene7_up"]))
    assert families(only_up) == {"scene7_up"}
    only_cpu = b"".join(await exposition.answer(PLAIN, ["process_cpu_seconds_total"]))
    assert families(only_cpu) == {"process_cpu_seconds"}


async def test_a_render_runs_in_a_child_process(monkeypatch, tmp_path):
    render_now = Exposition._render_now
    pids = tmp_path / "pids"

    def recording(self: Exposition, *args):  # type: ignore[no-untyped-def]
        with pids.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return render_now(self, *args)

    monkeypatch.setattr(Exposition, "_render_now", recording)
    exposition = Exposition(polled("a_1", "a_2"), interval=60, clock=lambda: NOW)
    text = bytes(await exposition.body(PLAIN))
    assert text == exposition.render_variants(exposition.store.state, [PLAIN], NOW)[PLAIN]
    assert b'job_name="a_2"' in text
    rendered_in = [int(pid) for pid in pids.read_text().split()]
    assert len(rendered_in) == 2 and rendered_in[0] != os.getpid() and rendered_in[1] == os.getpid()


async def test_without_a_child_process_it_renders_on_the_event_loop(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="exporter.exposition")

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    exposition = Exposition(polled("a_1", "a_2"), interval=60, clock=lambda: NOW)
    assert b'job_name="a_2"' in bytes(await exposition.body(PLAIN))
    assert caplog.messages == [
        "cannot start a process to render in, rendering on the event loop: [Errno 11] Resource temporarily unavailable"
    ]


async def test_on_the_event_loop_a_render_hands_it_back_between_pieces(monkeypatch):
    monkeypatch.setattr(forked, "available", lambda: False)
    monkeypatch.setattr(exposition_module, "TURN_SECONDS", 0.0)
    store = polled(*(f"job_{n}" for n in range(1500)))  # 1500 jobs: several pieces per family
    exposition = Exposition(store, interval=60, clock=lambda: NOW)
    ticks = await ticks_while(exposition.body(GZIP))
    assert ticks >= 10  # the other task ran between the render's pieces


async def test_name_filtering_builds_only_the_families_asked_for(monkeypatch):
    built: list[str] = []
    family = SnapshotCollector.family

    def recording(self: SnapshotCollector, spec):  # type: ignore[no-untyped-def]
        built.append(spec.name)
        return family(self, spec)

    monkeypatch.setattr(SnapshotCollector, "family", recording)
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW)
    names = ["scene7_up", "scene7_polls_total", "scene7_job_duration_seconds_bucket"]
    body = bytes(await exposition.body(PLAIN, names))
    assert sorted(built) == ["scene7_job_duration_seconds", "scene7_polls_total", "scene7_up"]
    assert families(body) == {"scene7_up", "scene7_polls"}  # no job-log histogram yet: no sample


@pytest.mark.parametrize("extra_size", [0, 1, 700, 200_000])
async def test_a_gzip_answer_is_one_gzip_member_whatever_the_scrape_adds(extra_size):
    exposition = Exposition(polled("a_1", "a_2"), interval=60, clock=lambda: NOW)
    rendered = await exposition.body(GZIP)
    extra = bytes(random.Random(extra_size).choice(b"process_cpu 0123456789\n") for _ in range(extra_size))
    stream = zlib.decompressobj(zlib.MAX_WBITS | 16)  # gzip framing, CRC-32 and length checked
    text = stream.decompress(b"".join(rendered.parts(extra)))
    assert stream.eof and stream.unused_data == b"" and not stream.unconsumed_tail
    assert text == bytes(await exposition.body(PLAIN)) + extra


@pytest.mark.parametrize("variant", [PLAIN, GZIP])
async def test_without_process_metrics_a_scrape_adds_nothing(variant):
    exposition = Exposition(polled("a_1"), interval=60, clock=lambda: NOW)
    answer = b"".join(await exposition.answer(variant))
    text = gzip.decompress(answer) if variant.gzip else answer
    assert text == exposition.render(exposition.store.state, PLAIN, NOW)
