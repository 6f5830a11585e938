"""The metric specification against what depends on it: README's table and the renderer."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.exposition import TEXT_0_0_4, Exposition, Variant
from exporter.metrics import (
    FAMILIES,
    PER_JOB_FAMILIES,
    SERIES_PER_JOB,
    SERIES_PER_TASK,
    Scope,
    markdown_table,
    series_guard,
)
from exporter.models import ActiveJob, TaskProgress
from exporter.snapshot import CompanyTarget, Store

README = Path(__file__).resolve().parent.parent / "README.md"
NOW = 1_800_000_000.0
WHEN = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
TARGET = CompanyTarget("main", "c|1", "Acme")


def readme_table() -> str:
    text = README.read_text()
    match = re.search(r"<!-- metrics-table:[^\n]*-->\n(.*?)<!-- /metrics-table -->", text, re.S)
    assert match, "README.md lost the metrics-table markers"
    return match[1]


def test_readme_metrics_table_is_the_specification():
    assert readme_table() == markdown_table(), (
        "README's metrics table differs from exporter/metrics.py: "
        "paste the output of `python -m exporter.metrics` between the metrics-table markers"
    )


def test_every_family_appears_in_readme_once():
    rows = [line for line in readme_table().splitlines() if line.startswith("| `")]
    assert Counter(row.split("`")[1] for row in rows) == Counter(spec.name for spec in FAMILIES)


def test_the_specification_follows_the_naming_rules():
    for spec in FAMILIES:
        assert spec.name.startswith("scene7_"), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert not {"job", "instance"} & set(spec.labels), spec.name
        assert spec.doc and spec.help.endswith("."), spec.name
    assert {spec.name for spec in FAMILIES
            if spec.scope in (Scope.JOB, Scope.TASK, Scope.RECENT_JOB)} == PER_JOB_FAMILIES


def test_every_family_labelled_by_job_is_a_per_job_family():
    # What the max-series guard drops, told from the labels rather than from the scope.
    by_labels = {spec.name for spec in FAMILIES if "job_name" in spec.labels}
    assert by_labels == PER_JOB_FAMILIES
    assert {spec.name for spec in FAMILIES if "task_type" in spec.labels and "job_name" in spec.labels} == {
        spec.name for spec in FAMILIES if spec.scope is Scope.TASK}


def task(task_type: str) -> TaskProgress:
    return TaskProgress(task_type=task_type, task_state="Processing", num_processed=1, num_processing=1,
                        num_pending=1, progress=0.5, last_progress_update=WHEN)


def job(name: str, tasks: int) -> ActiveJob:
    return ActiveJob(
        company_handle="c|1", job_handle=f"j|{name}", name=name, original_name=name, job_type="UrlUpload",
        state="Running", server_name="srv", start_date=WHEN, last_progress_update=WHEN,
        task_progress_array=tuple(task(f"t{i}") for i in range(tasks)),
    )


@pytest.mark.parametrize("tasks_per_job", [0, 1, 3])
def test_series_cost_of_a_job_and_a_task_is_what_the_renderer_emits(tasks_per_job):
    jobs = tuple(job(f"job_{i}", tasks_per_job) for i in range(4))
    store = Store(max_age=180.0)
    store.record_success(TARGET, jobs, at=NOW - 1, duration=0.1)
    text = Exposition(store, interval=60).render(store.state, Variant(TEXT_0_0_4, False), NOW).decode()
    emitted = Counter(
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        for _ in family.samples
    )
    for spec in FAMILIES:
        if spec.scope is Scope.JOB:
            assert emitted[spec.name] == spec.series_each * len(jobs), spec.name
        elif spec.scope is Scope.TASK:
            assert emitted[spec.name] == spec.series_each * len(jobs) * tasks_per_job, spec.name
    per_job = sum(emitted[name] for name in PER_JOB_FAMILIES)
    assert per_job == series_guard(0).series(jobs) == len(jobs) * (SERIES_PER_JOB + SERIES_PER_TASK * tasks_per_job)


def test_the_guard_drops_exactly_the_per_job_families():
    jobs = (job("a", 2),)
    cost = series_guard(0).series(jobs)
    for limit, dropped in ((cost, False), (cost - 1, True)):
        store = Store(max_age=180.0, guard=series_guard(limit))
        store.record_success(TARGET, jobs, at=NOW - 1, duration=0.1)
        text = Exposition(store, interval=60).render(store.state, Variant(TEXT_0_0_4, False), NOW).decode()
        present = {
            family.name + ("_total" if family.type == "counter" else "")
            for family in text_string_to_metric_families(text) if family.samples
        }
        assert (present & PER_JOB_FAMILIES == set()) == dropped, limit
        assert "scene7_tasks" in present and "scene7_active_jobs" in present
        assert store.state.series_dropped_total == (cost if dropped else 0)
