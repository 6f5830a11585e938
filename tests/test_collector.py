"""The metric contract rendered from hand-made snapshots: values, staleness, finished tasks."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.errors import Reason
from exporter.exposition import OPENMETRICS_1_0_0, TEXT_0_0_4, Exposition, Variant
from exporter.metrics import FAMILIES, JOB_STATES, METRIC_NAMES, TASK_STATES, series_guard
from exporter.models import ActiveJob, TaskProgress
from exporter.snapshot import CompanyTarget, Store

NOW = 1_800_000_000.0
TARGET = CompanyTarget("main", "c|110", 'Bits & "Bytes" <EU>')
WHEN = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def task(task_type: str, state: str | None, processed: int = 1, pending: int = 2) -> TaskProgress:
    return TaskProgress(
        task_type=task_type, task_state=state, num_processed=processed, num_processing=1,
        num_pending=pending, progress=0.25, last_progress_update=WHEN,
    )


def job(name: str, *tasks: TaskProgress, state: str = "Running", job_type: str = "UrlUpload") -> ActiveJob:
    return ActiveJob(
        company_handle="c|110", job_handle=f"j|{name}", name=name, original_name=name.split("_")[0],
        job_type=job_type, state=state, server_name="srv1", start_date=WHEN, last_progress_update=WHEN,
        task_progress_array=tasks,
    )


def render(store: Store, now: float = NOW) -> dict[tuple[str, tuple], float]:
    exposition = Exposition(store, interval=60.0, clock=lambda: now)
    text = exposition.render(store.state, Variant(TEXT_0_0_4, gzip=False), now).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def new_store(**kwargs: object) -> Store:
    return Store(max_age=180.0, **kwargs)  # type: ignore[arg-type]


def poll(store: Store, *jobs: ActiveJob, at: float = NOW - 10) -> None:
    store.record_success(TARGET, tuple(jobs), at=at, duration=0.5)


PLAIN = Variant(TEXT_0_0_4, False)


def text_of(store: Store, variant: Variant = PLAIN) -> str:
    return Exposition(store, interval=60).render(store.state, variant, NOW).decode()


def labels(**kv: str) -> tuple:
    return tuple(sorted(kv.items()))


def test_task_and_job_series():
    store = new_store()
    poll(store, job("upload_1", task("com.scene7.upload.UploadAsyncTaskMonitor", "Processing", 3, 4)))
    samples = render(store)
    company = TARGET.label
    task_labels = dict(company=company, job_name="upload_1", job_type="UrlUpload",
                       task_type="com.scene7.upload.UploadAsyncTaskMonitor")
    assert samples[("scene7_task_items", labels(**task_labels, item_state="processed"))] == 3
    assert samples[("scene7_task_items", labels(**task_labels, item_state="processing"))] == 1
    assert samples[("scene7_task_items", labels(**task_labels, item_state="pending"))] == 4
    assert samples[("scene7_task_progress_ratio", labels(**task_labels))] == 0.25
    states = {s: samples[("scene7_task_state", labels(**task_labels, state=s))] for s in TASK_STATES}
    assert states == {"Unknown": 0, "New": 0, "Processing": 1, "Stopping": 0, "Done": 0, "Failed": 0}
    assert samples[("scene7_task_last_progress_update_timestamp_seconds", labels(**task_labels))] == WHEN.timestamp()
    job_labels = dict(company=company, job_name="upload_1", job_type="UrlUpload")
    assert samples[("scene7_job_info", labels(**job_labels, original_name="upload", server_name="srv1"))] == 1
    assert sum(samples[("scene7_job_state", labels(**job_labels, state=s))] for s in JOB_STATES) == 1
    assert samples[("scene7_job_state", labels(**job_labels, state="Running"))] == 1
    assert samples[("scene7_job_start_timestamp_seconds", labels(**job_labels))] == WHEN.timestamp()
    assert samples[("scene7_active_jobs", labels(company=company))] == 1
    assert samples[("scene7_up", labels(company=company))] == 1
    assert samples[("scene7_tasks", labels(company=company, job_type="UrlUpload",
                                           task_type="com.scene7.upload.UploadAsyncTaskMonitor",
                                           state="Processing"))] == 1
    assert samples[("scene7_polls_total", labels(company=company))] == 1
    assert samples[("scene7_last_successful_poll_timestamp_seconds", labels(company=company))] == NOW - 10
    assert not any(dict(key[1]).get("job") or dict(key[1]).get("instance") for key in samples)


def test_old_api_task_without_state_is_unknown_and_new_values_too():
    store = new_store()
    poll(store, job("a_1", task("t.old", None), task("t.new", "Paused"), state="Hibernating"))
    samples = render(store)
    for task_type in ("t.old", "t.new"):
        key = labels(company=TARGET.label, job_name="a_1", job_type="UrlUpload", task_type=task_type, state="Unknown")
        assert samples[("scene7_task_state", key)] == 1
    key = labels(company=TARGET.label, job_name="a_1", job_type="UrlUpload", state="Unknown")
    assert samples[("scene7_job_state", key)] == 1


def test_job_that_left_disappears_from_the_next_scrape():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")), job("b_1", task("t", "Processing")))
    assert any(dict(k[1]).get("job_name") == "b_1" for k in render(store))
    poll(store, job("a_1", task("t", "Processing")))
    after = render(store)
    assert not any(dict(k[1]).get("job_name") == "b_1" for k in after)
    assert after[("scene7_active_jobs", labels(company=TARGET.label))] == 1


def test_stale_snapshot_exports_only_health_with_up_0():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")), at=NOW - 181)
    samples = render(store)
    names = {name for name, _ in samples}
    assert samples[("scene7_up", labels(company=TARGET.label))] == 0
    assert not names & {"scene7_task_items", "scene7_job_info", "scene7_active_jobs", "scene7_tasks"}
    assert "scene7_polls_total" in names
    # At exactly max_age the same snapshot is still fresh.
    assert render(store, now=NOW - 1)[("scene7_up", labels(company=TARGET.label))] == 1


def test_failed_poll_keeps_recent_series_but_up_0():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")))
    store.record_failure(TARGET, Reason.TIMEOUT, "slow", at=NOW - 5, duration=20.0)
    samples = render(store)
    assert samples[("scene7_up", labels(company=TARGET.label))] == 0
    assert samples[("scene7_poll_errors_total", labels(company=TARGET.label, reason="timeout"))] == 1
    assert samples[("scene7_poll_errors_total", labels(company=TARGET.label, reason="http"))] == 0
    assert samples[("scene7_poll_duration_seconds", labels(company=TARGET.label))] == 20.0


def test_finished_tasks_are_counted_once_and_vanished_ones_too():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")), job("b_1", task("t", "Processing")),
         job("c_1", task("t", "Failed")))
    poll(store, job("a_1", task("t", "Failed")), job("c_1", task("t", "Failed")))
    poll(store, job("c_1", task("t", "Failed")))
    snapshot = store.state.company(TARGET)
    assert snapshot is not None
    counts = dict(snapshot.finished_total)
    # a_1 failed (seen), b_1 vanished unfinished, c_1 was already failed at start-up: not counted;
    # a_1 leaving after it failed is not a vanish.
    assert counts == {("t", "Done"): 0, ("t", "Failed"): 1, ("t", "Vanished"): 1}


def test_duplicate_task_types_do_not_duplicate_series():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing"), task("t", "New")))
    text = text_of(store)
    lines = [line for line in text.splitlines() if line.startswith("scene7_task_progress_ratio{")]
    assert len(lines) == 1


def test_max_series_guard_keeps_aggregates_and_counts_drops(caplog):
    caplog.set_level(logging.INFO)
    store = new_store(guard=series_guard(25))
    poll(store, *(job(f"j{i}_1", task("t", "Processing")) for i in range(3)))
    poll(store, *(job(f"j{i}_1", task("t", "Processing")) for i in range(3)))
    assert [r.levelname for r in caplog.records if "max_series" in r.getMessage()] == ["WARNING"]
    samples = render(store)
    names = {name for name, _ in samples}
    assert "scene7_task_items" not in names and "scene7_job_info" not in names
    assert samples[("scene7_active_jobs", labels(company=TARGET.label))] == 3
    assert samples[("scene7_tasks", labels(company=TARGET.label, job_type="UrlUpload", task_type="t",
                                           state="Processing"))] == 3
    assert samples[("scene7_series_dropped_total", ())] == 2 * 3 * 20
    poll(store, job("j0_1", task("t", "Processing")))
    assert any(k[0] == "scene7_task_items" for k in render(store))
    messages = [r.getMessage() for r in caplog.records if "max_series" in r.getMessage()]
    assert messages == [
        "60 per-job series exceed poll.max_series=25: exporting only per-company aggregates and health until "
        "they fit again",
        "per-job series (20) fit poll.max_series again: exporting them",
    ]


def test_every_declared_metric_is_rendered_and_promtool_accepts_it():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")))
    poll(store, job("a_1", task("t", "Done")))
    text = text_of(store)
    families = text_string_to_metric_families(text)
    names = {f.name if f.type != "counter" else f.name + "_total" for f in families}
    assert names == METRIC_NAMES
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr.decode()


@pytest.mark.parametrize("openmetrics", [False, True])
def test_help_names_the_poll_interval(openmetrics):
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")))
    text = text_of(store, Variant(OPENMETRICS_1_0_0 if openmetrics else TEXT_0_0_4, False))
    assert "# HELP scene7_up 1 if the last poll of the company succeeded and is recent, else 0. " \
           "From a background poll of IPS every 60s." in text
    assert text.endswith("# EOF\n") == openmetrics


def test_a_task_first_seen_already_finished_after_start_up_is_counted():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")))
    poll(store, job("a_1", task("t", "Processing")), job("b_1", task("t", "Failed")), job("c_1", task("t", "Done")))
    snapshot = store.state.company(TARGET)
    assert snapshot is not None
    assert dict(snapshot.finished_total) == {("t", "Done"): 1, ("t", "Failed"): 1, ("t", "Vanished"): 0}


def test_a_repeated_job_name_gives_one_set_of_job_series_and_every_task_state_its_count():
    store = new_store()
    poll(store, job("a_1", task("t", "Processing")), job("a_1", task("t", "Processing")))
    lines = text_of(store).splitlines()
    assert sum(1 for line in lines if line.startswith("scene7_job_info{")) == 1
    assert sum(1 for line in lines if line.startswith("scene7_job_start_timestamp_seconds{")) == 1
    samples = render(store)
    counts = {s: samples[("scene7_tasks", labels(company=TARGET.label, job_type="UrlUpload", task_type="t", state=s))]
              for s in TASK_STATES}
    assert counts == {"Unknown": 0, "New": 0, "Processing": 2, "Stopping": 0, "Done": 0, "Failed": 0}
    (build,) = [v for (name, _), v in samples.items() if name == "scene7_exporter_build_info"]
    assert build == 1


def test_help_names_the_interval_each_family_is_polled_at():
    store = new_store()
    poll(store, job("upload_1", task("com.scene7.upload.UploadAsyncTaskMonitor", "Processing")))
    text = Exposition(store, interval=45, job_log_interval=600).render(store.state, PLAIN, NOW).decode()
    helps = {line.split(" ", 3)[2]: line for line in text.splitlines() if line.startswith("# HELP ")}
    job_log_families = {spec.name for spec in FAMILIES if spec.from_job_logs}
    assert "scene7_jobs_finished_total" in job_log_families and "scene7_up" not in job_log_families
    for name, help_line in helps.items():
        if name in job_log_families:
            assert help_line.endswith(" From a background poll of IPS job logs every 600s."), help_line
        else:
            assert help_line.endswith(" From a background poll of IPS every 45s."), help_line
    assert job_log_families <= helps.keys()
