"""The store's transitions that change which companies there are: discovery and a reload."""

from __future__ import annotations

from datetime import UTC, datetime

from exporter.models import ActiveJob, TaskProgress
from exporter.snapshot import CompanyTarget, SeriesGuard, Store

WHEN = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
NOW = WHEN.timestamp()


def one_job(handle: str) -> tuple[ActiveJob, ...]:
    task = TaskProgress(task_type="t", task_state="Processing", num_processed=1, num_processing=1, num_pending=1,
                        progress=0.5, last_progress_update=WHEN)
    return (ActiveJob(company_handle=handle, job_handle=f"j|{handle}", name="n", original_name="n",
                      job_type="UrlUpload", state="Running", server_name="s", start_date=WHEN,
                      last_progress_update=WHEN, task_progress_array=(task,)),)


def polled(store: Store, *targets: CompanyTarget, at: float = NOW) -> None:
    for target in targets:
        store.record_success(target, one_job(target.handle), at=at, duration=0.1)


A1, A2, A3 = (CompanyTarget("a", handle, f"A {handle}") for handle in ("1", "2", "3"))
B1 = CompanyTarget("b", "9", "B 9")


def test_discovery_keeps_the_companies_it_knows_and_drops_the_ones_gone():
    store = Store()
    placeholder = CompanyTarget("a", "", "a")
    store.track(placeholder)
    store.record_discovered(placeholder, [A1, A2])
    polled(store, A1, A2, B1)
    kept = store.state.company(A1)
    store.record_discovered(placeholder, [A1, A3])  # a rediscovery: 2 left the user, 3 joined
    assert [c.target for c in store.state.companies] == [A1, A3, B1]
    assert store.state.company(A1) is kept  # its counters and jobs, untouched
    assert store.state.company(A3) is not None and store.state.company(A3).fetched_at is None  # type: ignore[union-attr]


def test_a_reload_drops_the_accounts_gone_and_applies_staleness_and_guard():
    store = Store(max_age=60)
    polled(store, A1, B1, at=NOW - 100)
    kept = store.state.company(A1)
    assert store.state.fresh_companies(NOW) == ()
    store.reconfigure({"a"}, max_age=120, guard=SeriesGuard(max_series=1, per_job=1, per_task=1))
    assert [c.target for c in store.state.companies] == [A1]
    assert store.state.company(A1) is kept
    assert store.state.fresh_companies(NOW) == (kept,)  # 100 s old, fresh under the new 120 s
    assert not store.state.per_job_series  # 2 series of one job over the new guard's 1
    store.reconfigure({"a", "b"}, max_age=120, guard=SeriesGuard(max_series=0, per_job=1, per_task=1))
    assert store.state.per_job_series and [c.target for c in store.state.companies] == [A1]
