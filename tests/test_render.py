"""The exporter's own writing of the per-job families is byte for byte prometheus-client's.

prometheus-client's encoders are the reference: random States, hostile label values included
(quotes, backslashes, newlines, UTF-8, empty, long), are rendered both ways in every content type
scrapers negotiate, and the bytes must be identical. The golden file (test_exporter) pins the
output of a real simulated account on top of this.
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from exporter.exposition import OPENMETRICS_1_0_0, TEXT_0_0_4, Exposition, Variant
from exporter.joblogs import JobLogBook, RecentJob
from exporter.metrics import FAMILIES, Frame
from exporter.models import ActiveJob, TaskProgress
from exporter.render import LabelText, go_float, line_writer, sample_pieces, writes_itself, written_here
from exporter.snapshot import CompanySnapshot, CompanyTarget, State, Store

NOW = 1_800_000_000.0
WHEN = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
# Every form the negotiation can give (what Prometheus 2 and 3 send among them).
ACCEPTS = [
    None,
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "text/plain; version=1.0.0",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=2.0.0; escaping=underscores",
]
HOSTILE = ['"', "\\", "\n", '\\"', "\\n", "", "é", "日本", "\u202e", "{", "}", ",", "=", "\t", " ", "\x00", "#"]
label_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=12),
    st.lists(st.sampled_from(HOSTILE), max_size=6).map("".join),
    st.text(alphabet="ab\\\"\n", min_size=300, max_size=400),
)
counts = st.one_of(st.integers(0, 10), st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1))
ratios = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.1, 1e-7, 0.5]))
moments = st.integers(0, 4_000_000_000).map(lambda s: datetime.fromtimestamp(s, UTC) + timedelta(microseconds=7))
task_states = st.sampled_from(["New", "Processing", "Stopping", "Done", "Failed", None, "Bogus"])
job_states = st.sampled_from(["Running", "New", "WaitingClient", "Stopping", "Done", "Unknown", "Bogus"])


@st.composite
def tasks(draw: st.DrawFn) -> TaskProgress:
    return TaskProgress(
        task_type=draw(label_text), task_state=draw(task_states), num_processed=draw(counts),
        num_processing=draw(counts), num_pending=draw(counts), progress=draw(ratios),
        last_progress_update=draw(moments),
    )


@st.composite
def jobs(draw: st.DrawFn) -> ActiveJob:
    name = draw(label_text)
    return ActiveJob(
        company_handle="c|1", job_handle=f"j|{name}", name=name, original_name=draw(label_text),
        job_type=draw(label_text), state=draw(job_states), server_name=draw(label_text),
        start_date=draw(moments), last_progress_update=draw(moments),
        task_progress_array=tuple(draw(st.lists(tasks(), max_size=3))),
    )


@st.composite
def recent_jobs(draw: st.DrawFn) -> RecentJob:
    return RecentJob(
        key=draw(st.text(max_size=5)), job_name=draw(label_text), log_type=draw(label_text),
        outcome=draw(st.sampled_from(["fatal", "errors", "warnings", "succeeded"])),
        end=NOW - draw(st.floats(0, 100_000)), files=tuple(draw(st.lists(counts, min_size=5, max_size=5))),  # type: ignore[arg-type]
        duration=draw(st.floats(0, 1e7)),
    )


@st.composite
def states(draw: st.DrawFn) -> State:
    companies = []
    for index, label in enumerate(draw(st.lists(label_text, min_size=1, max_size=3, unique=True))):
        snapshot = CompanySnapshot(CompanyTarget("main", f"c|{index}", label))
        if draw(st.booleans()):
            snapshot = snapshot.after_success(tuple(draw(st.lists(jobs(), max_size=5))),
                                              at=NOW - draw(st.sampled_from([0, 10, 1000])), duration=0.5,
                                              invalid_records=0)
        book = JobLogBook(recent=tuple(draw(st.lists(recent_jobs(), max_size=3))))
        companies.append(replace(snapshot, job_logs=book))
    return State(tuple(companies), generation=1, max_age=180.0, per_job_series=draw(st.booleans()))


def reference(exposition: Exposition, state: State, variant: Variant) -> bytes:
    return exposition._encoders[variant.content_type](exposition.registry(state, NOW))


@settings(max_examples=300, deadline=None)
@given(states(), st.sampled_from(ACCEPTS))
def test_every_content_type_is_byte_identical_to_prometheus_client(state, accept):
    exposition = Exposition(Store(), interval=60)
    variant = exposition.negotiate(accept, None)
    assert exposition.render(state, variant, NOW) == reference(exposition, state, variant)


@settings(max_examples=50, deadline=None)
@given(states())
def test_one_pass_over_every_variant_gives_each_its_own_bytes_and_gzip_the_same_text(state):
    exposition = Exposition(Store(), interval=60)
    variants = [exposition.negotiate(accept, encoding) for accept in ACCEPTS for encoding in ("gzip", None)]
    rendered = exposition.render_variants(state, variants, NOW)
    for variant, body in rendered.items():
        text = gzip.decompress(body) if variant.gzip else body
        assert text == reference(exposition, state, variant)


@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True)))
def test_values_are_written_as_go_writes_them(value):
    assert go_float(value) == floatToGoString(value)


def test_names_rewritten_by_the_escaping_are_left_to_prometheus_client():
    exposition = Exposition(Store(), interval=60)
    chosen = {accept: exposition.negotiate(accept, None).content_type for accept in ACCEPTS}
    theirs = {accept for accept, content_type in chosen.items() if not writes_itself(content_type)}
    assert theirs == {"application/openmetrics-text; version=1.0.0; escaping=dots",
                      "application/openmetrics-text; version=1.0.0; escaping=values"}
    assert chosen[None] == TEXT_0_0_4 and chosen["application/openmetrics-text"] == OPENMETRICS_1_0_0


@pytest.mark.parametrize("spec", [spec for spec in FAMILIES if spec.per_job], ids=lambda spec: spec.name)
def test_a_line_writer_sorts_labels_by_name_as_the_encoders_do(spec):
    values = [f"v{i}" for i in range(len(spec.labels))]
    line = line_writer(spec)(values, 1, {v: v for v in values})  # type: ignore[arg-type]
    written = [pair.split("=")[0] for pair in line[line.index("{") + 1 : line.index("}")].split(",")]
    assert written == sorted(spec.labels)
    assert line.endswith("} 1.0\n")


def test_a_name_outside_the_prometheus_grammar_is_refused_before_any_code_is_made():
    spec = replace(FAMILIES[0], name="scene7_x'); import os; ('")
    with pytest.raises(ValueError, match="not a legacy Prometheus"):
        line_writer(spec)


def test_sample_lines_come_in_pieces_of_lines_per_piece_lines(monkeypatch):
    monkeypatch.setattr("exporter.render.LINES_PER_PIECE", 4)
    jobs = tuple(ActiveJob(
        company_handle="c|1", job_handle=f"j|{n}", name=f"job {n}", original_name="o", job_type="t",
        state="Running", server_name="s", start_date=WHEN, last_progress_update=WHEN,
    ) for n in range(10))
    state = State((CompanySnapshot(CompanyTarget("main", "c|1", "Acme")).after_success(
        jobs, at=NOW, duration=0.5, invalid_records=0),), generation=1, max_age=180.0)
    spec = next(spec for spec in FAMILIES if spec.name == "scene7_job_start_timestamp_seconds")
    pieces = list(sample_pieces(spec, Frame.of(state, NOW), LabelText()))
    assert [piece.count(b"\n") for piece in pieces] == [4, 4, 2]
    assert b"".join(pieces).decode().splitlines() == [
        f'scene7_job_start_timestamp_seconds{{company="Acme",job_name="job {n}",job_type="t"}} 1.8e+09'
        for n in range(10)
    ]


def test_every_per_job_family_and_only_those_are_written_by_the_line_writers():
    assert [spec.name for spec in FAMILIES if written_here(spec)] == [spec.name for spec in FAMILIES if spec.per_job]


def test_a_line_writer_is_made_for_any_legacy_name_and_refused_for_a_bad_label_name():
    fresh = replace(FAMILIES[0], name="scene7_fresh_name_for_this_test", labels=("b", "a"))
    assert line_writer(fresh)(["x", "y"], 2, LabelText()) == 'scene7_fresh_name_for_this_test{a="y",b="x"} 2.0\n'
    with pytest.raises(ValueError, match="not a legacy Prometheus"):
        line_writer(replace(FAMILIES[0], name="scene7_bad_label_for_this_test", labels=("ok", "not-ok")))
