"""Job-log polling against the simulator: every finished job counted once, whatever the date filter.

The poller's own polls (`_poll_company`, `_poll_job_logs`) are called one at a time on a stepped
clock the simulator shares; what the store counted is checked against the simulator's own logs.
The exporter tests at the end run the whole exporter in-process with job-log faults switched on.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from servers import Clock, all_up, by_company, eventually, exporting, settings_for, simulated
from support import by_label

from exporter.client import IpsClient
from exporter.config import JobLogsConfig
from exporter.joblogs import MAX_CALLS_PER_POLL, NUM_ROWS, JobLogBook, Plan, lookback_for
from exporter.poller import Account, JobLogPolling, Poller
from exporter.simulator import SimulatorServer
from exporter.simulator.joblogs import JobLog as SimLog
from exporter.snapshot import CompanyTarget, JobLogSettings, Store

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
VERSION = "2016-01-14-beta"  # lists waiting jobs too: a job leaves the list only when it is over


class Run:
    """One exporter process, polling one company of the simulator by hand on the shared clock."""

    def __init__(self, sim: SimulatorServer, clock: Clock, client: IpsClient, company: int = 0, *,
                 plan: Plan, recent_max: int = 200) -> None:
        self.sim, self.clock, self.plan = sim, clock, plan
        self.company = sim.world.companies[company]
        self.target = CompanyTarget("test", self.company.handle, self.company.name)
        self.started = clock.now.timestamp()
        self.store = Store(job_logs=JobLogSettings(plan, recent_max), started_at=self.started)
        self.store.track(self.target)
        self.poller = Poller([Account("test", client)], self.store, interval=60, timeout=20,
                             clock=lambda: clock.now.timestamp(), job_logs=JobLogPolling(300, 150, plan))
        self.listed: set[str] = set()  # every job name the active polls listed
        self.last_listed: set[str] = set()
        self.calls: list[int] = []

    async def active(self) -> None:
        await self.poller._poll_company(self.target)
        self.last_listed = {job.name for job in self.store.state.company(self.target).jobs}  # type: ignore[union-attr]
        self.listed |= self.last_listed

    async def job_logs(self) -> None:
        before = self.book.calls_total
        await self.poller._poll_job_logs(self.target)
        assert self.book.last_success == self.clock.now.timestamp(), self.book.errors_total
        self.calls.append(self.book.calls_total - before)

    @property
    def book(self) -> JobLogBook:
        return self.store.job_log_book(self.target)

    def truth(self) -> dict[str, SimLog]:
        """The simulator's finished logs of the company now, by handle."""
        self.sim.world.advance()
        return {log.handle: log for log in self.sim.world.job_logs(self.company.handle) if log.end is not None}

    def check_counted_once(self) -> dict[str, SimLog]:
        """Every finished job that ended since start and is no longer listed is counted, nothing
        else is, and the counters say exactly what the counted logs say. Returns those logs."""
        now = self.clock.now.timestamp()
        truth = self.truth()
        since_start = {h: log for h, log in truth.items() if log.end is not None and self.started <= log.end <= now}
        expected = {h for h, log in since_start.items() if log.name not in self.last_listed}
        counted = set(self.book.counted)
        assert expected - counted == set(), [truth[h].name for h in expected - counted]
        assert counted <= set(since_start), counted - set(since_start)
        logs = {h: since_start[h] for h in counted}
        tally = Counter((log.log_type, log.outcome) for log in logs.values())
        finished = {(t, o): n for t, counts in self.book.finished.items() for o, n in counts.items() if n}
        assert finished == dict(tally)
        for log_type, files in self.book.files.items():
            mine = [log for log in logs.values() if log.log_type == log_type]
            assert files == tuple(sum(getattr(log, f) for log in mine) for f in
                                  ("success", "error", "warning", "duplicate", "update")), log_type
            assert sum(self.book.durations[log_type].buckets) == len(mine)
        return logs


async def polled(sim: SimulatorServer, clock: Clock, run: Run, minutes: int, every: int = 5) -> None:
    """An active poll a minute, a job-log poll every `every` minutes (after the active poll)."""
    for minute in range(minutes):
        await run.active()
        if minute % every == 0:
            await run.job_logs()
        clock.step(minutes=1)
    await run.active()
    await run.job_logs()


# A lookback of 15 minutes: with job-log polls every 5 minutes no window reaches back more than
# 20 minutes, so many jobs run longer than any window.
PLAN = Plan(lookback=900.0, recent_window=3 * 3600.0)


@pytest.mark.parametrize("date_filter", ["start", "end"])
async def test_every_finished_job_is_counted_once_whatever_the_date_filter(date_filter):
    clock = Clock(T0)
    async with simulated(clock, seed=5, job_log_date_filter=date_filter) as sim, \
            IpsClient(sim.url, "demo@example.com", "demo", api_version=VERSION) as client:
        run = Run(sim, clock, client, plan=PLAN)
        await polled(sim, clock, run, 4 * 60)
        logs = run.check_counted_once()
        # jobs of a few seconds that no active poll ever saw, of every outcome
        short = [log for log in logs.values() if log.end is not None and log.end - log.start < 10]
        assert len(short) >= 5 and not {log.name for log in short} & run.listed
        assert {log.outcome for log in short} == {"fatal", "errors", "warnings", "succeeded"}
        # jobs that ran longer than any window, seen active, counted when they ended
        longest = max(log.end - log.start for log in logs.values() if log.end is not None)
        assert longest > PLAN.lookback + 300 + 3600, longest
        # overlapping windows: another poll at the same moment counts nothing more
        before = dict(run.book.counted)
        await run.job_logs()
        assert dict(run.book.counted) == before
        run.check_counted_once()
        # calls: one window a poll, and now and then a look-up of a vanished job (needed when the
        # filter reads starts; with ends, only for a job whose log never gets an endDate)
        assert max(run.calls) <= MAX_CALLS_PER_POLL
        assert sum(run.calls) - len(run.calls) > 0 or date_filter == "end", run.calls


@pytest.mark.parametrize("date_filter", ["start", "end"])
async def test_a_restart_counts_from_zero_and_shows_the_recent_window_at_once(date_filter):
    clock = Clock(T0)
    async with simulated(clock, seed=3, job_log_date_filter=date_filter) as sim, \
            IpsClient(sim.url, "demo@example.com", "demo", api_version=VERSION) as client:
        first = Run(sim, clock, client, plan=PLAN)
        await polled(sim, clock, first, 90)
        assert sum(n for counts in first.book.finished.values() for n in counts.values()) > 0
        clock.step(minutes=7)  # the process restarts: nothing of the old one is kept
        again = Run(sim, clock, client, plan=PLAN, recent_max=1000)
        await again.active()
        await again.job_logs()
        finished = again.book.finished
        assert finished and all(n == 0 for counts in finished.values() for n in counts.values())
        assert all(files == (0, 0, 0, 0, 0) for files in again.book.files.values())
        now = clock.now.timestamp()
        truth = again.truth()
        recent = {h for h, log in truth.items() if log.end is not None and log.end >= now - PLAN.recent_window}
        low = now - PLAN.recent_window - PLAN.lookback
        reachable = {h for h in recent if truth[h].start >= low}  # any log the first sweep can see
        shown = {job.key for job in again.book.recent}
        assert reachable <= shown <= recent and len(shown) > 10
        assert [job.end for job in again.book.recent] == sorted((job.end for job in again.book.recent), reverse=True)
        for job in again.book.recent:
            log = truth[job.key]
            # the wire carries milliseconds
            assert job.duration == pytest.approx(max(log.end - log.start, 0.0), abs=0.002)
            assert job.end == pytest.approx(log.end, abs=0.001)
        assert any(job.duration > 0 for job in again.book.recent)
        await polled(sim, clock, again, 60)
        again.check_counted_once()
        assert again.book.counted and min(again.book.counted.values()) >= again.started


async def test_saturated_windows_are_halved_and_the_calls_stay_bounded():
    clock = Clock(T0)
    async with simulated(clock, seed=5, time_scale=3.0) as sim, \
            IpsClient(sim.url, "demo@example.com", "demo", api_version=VERSION) as client:
        plan = Plan(lookback=900.0, recent_window=4 * 3600.0, num_rows=5, max_calls=8)
        run = Run(sim, clock, client, plan=plan, recent_max=10_000)
        await run.active()
        await run.job_logs()
        # the first poll reaches back 4 h 15 m: 5 rows a call cannot hold it in 8 calls
        assert run.calls == [8] and run.book.backlog
        assert len(set(run.book.backlog)) == len(run.book.backlog) <= 32
        await polled(sim, clock, run, 120)
        assert max(run.calls) <= 8 and sum(run.calls) > 2 * len(run.calls)
        for _ in range(20):  # the backlog is worked off; the counting was exact all along
            if not run.book.backlog:
                break
            await run.job_logs()
        assert not run.book.backlog
        run.check_counted_once()


@pytest.mark.parametrize("date_filter", ["start", "end"])
async def test_ips_calls_per_job_log_poll_at_1000_finished_jobs_a_day(date_filter, capsys):
    """The figure of the closing note: calls per poll at the defaults (5 m interval, 1 h
    lookback, 24 h recent window, 1,000 rows a call) for one company finishing 1,000 jobs a day."""
    clock = Clock(T0)
    period = 86400 / 1000  # a short job every 86.4 s, and the world's own jobs besides
    async with simulated(clock, seed=5, jobs=0, companies=1, keepers=False, short_job_period=period,
                         job_log_date_filter=date_filter, job_log_max=5000) as sim, \
            IpsClient(sim.url, "demo@example.com", "demo", api_version=VERSION) as client:
        plan = Plan(lookback=lookback_for(300, 60), recent_window=86400)
        run = Run(sim, clock, client, plan=plan, recent_max=200)
        for step in range(12 * 2 + 1):  # two hours, a job-log poll every 5 minutes
            if step:
                clock.step(minutes=5)
            await run.active()
            await run.job_logs()
        per_day = len([log for log in run.truth().values() if log.end is not None and log.end > run.started])
        with capsys.disabled():
            print(f"\n[filter={date_filter}] {per_day} jobs ended in 2 h (1,000 a day): first poll "
                  f"{run.calls[0]} calls (24 h + 1 h of logs, {NUM_ROWS} rows a call), then "
                  f"{Counter(run.calls[1:])} calls a poll; at most {MAX_CALLS_PER_POLL} a poll")
        assert 70 <= per_day <= 100
        assert run.calls[0] <= 4 and set(run.calls[1:]) == {1}
        run.check_counted_once()


# -- the whole exporter, with faults for the job logs alone ----------------------------------------


def job_log_settings(url: str, **account: Any):
    settings = settings_for(url, interval=0.8, timeout=0.7, **account)
    return settings.model_copy(update={"job_logs": JobLogsConfig(interval=0.5)})


def active_series(samples) -> dict[str, float]:
    return by_company(samples, "scene7_active_jobs")


def job_log_errors(samples, reason: str) -> float:
    return by_label(samples, "scene7_job_log_poll_errors_total", "reason").get(reason, 0.0)


@pytest.mark.parametrize(("plan", "reason"), [
    ({"kind": "api"}, "api_fault"),
    ({"kind": "latency", "latency": 2.0}, "timeout"),
    ({"kind": "entity_bomb"}, "malformed"),
    ({"kind": "malformed"}, "malformed"),
    ({"kind": "oversized", "size": 400_000}, "oversized"),
    ({"kind": "authorization"}, "authorization"),
])
async def test_job_log_faults_leave_scene7_up_and_the_active_series_unharmed(plan, reason):
    async with simulated() as sim:
        settings = job_log_settings(sim.url, max_response_size=300_000)
        async with exporting(settings) as exporter:
            await eventually(lambda s: all_up(s) and len(active_series(s)) == 3
                             and min(by_company(s, "scene7_job_log_polls_total").values()) >= 1, exporter)
            sim.faults.set(operations=("getJobLogs", "getJobLogDetails"), **plan)
            polls: list[float] = []

            def failing_but_up(samples) -> bool:
                assert all_up(samples), by_company(samples, "scene7_up")
                assert len(active_series(samples)) == 3 and by_company(samples, "scene7_task_items")
                polls.append(sum(by_company(samples, "scene7_polls_total").values()))
                return job_log_errors(samples, reason) >= 3 and polls[-1] >= polls[0] + 6

            samples = await eventually(failing_but_up, exporter, timeout=30)
            assert sum(by_label(samples, "scene7_poll_errors_total", "reason").values()) == 0
            sim.faults.clear()
            last = by_company(samples, "scene7_job_logs_last_successful_poll_timestamp_seconds")
            await eventually(lambda s: all(v > last.get(c, 0) for c, v in by_company(
                s, "scene7_job_logs_last_successful_poll_timestamp_seconds").items()), exporter, timeout=20)


@pytest.mark.parametrize("value", ["-3", "99999999999", "many"])
async def test_a_job_log_with_negative_or_huge_counts_is_refused_and_counted(value):
    async with simulated() as sim, exporting(job_log_settings(sim.url)) as exporter:
        await eventually(lambda s: all_up(s) and min(by_company(s, "scene7_job_log_polls_total").values()) >= 1,
                         exporter)
        before = await eventually(lambda s: True, exporter)
        files_before = sum(v for (name, _), v in before.items() if name == "scene7_job_files_total")
        sim.faults.set(kind="invalid_record", operations=("getJobLogs",), value=value, times=3)
        samples = await eventually(
            lambda s: sum(by_company(s, "scene7_invalid_records_total").values()) >= 3, exporter)
        assert all_up(samples) and len(active_series(samples)) == 3
        assert job_log_errors(samples, "malformed") == 0
        files = [v for (name, _), v in samples.items() if name == "scene7_job_files_total"]
        assert sum(files) >= files_before and max(files) < 2**31  # never the hostile count


async def test_job_logs_disabled_calls_no_getjoblogs():
    async with simulated() as sim:
        settings = job_log_settings(sim.url)
        settings = settings.model_copy(update={"job_logs": JobLogsConfig(enabled=False)})
        async with exporting(settings) as exporter:
            samples = await eventually(lambda s: all_up(s) and min(by_company(s, "scene7_polls_total").values()) >= 3,
                                       exporter)
            assert not by_company(samples, "scene7_job_log_polls_total")
            assert not [k for k in samples if k[0] == "scene7_recent_job_info"]
            assert exporter.poller.job_logs is None


async def test_recent_jobs_and_counters_survive_a_reload_and_the_guard_counts_them():
    async with simulated() as sim, exporting(job_log_settings(sim.url)) as exporter:
        samples = await eventually(lambda s: len(by_company(s, "scene7_recent_job_end_timestamp_seconds")) == 3
                                   and all_up(s), exporter)
        recent = [k for k in samples if k[0] == "scene7_recent_job_info"]
        assert 3 * 10 < len(recent) <= 3 * 200, len(recent)
        names = [dict(labels)["job_name"] for name, labels in samples if name == "scene7_recent_job_info"]
        assert max(len(name) for name in names) <= 128
        finished = sum(v for (name, _), v in samples.items() if name == "scene7_jobs_finished_total")
        book = {c.target: c.job_logs.counted for c in exporter.store.state.companies}
        await exporter.reload(exporter.settings)
        after = await eventually(lambda s: min(by_company(s, "scene7_job_log_polls_total").values()) >= 3, exporter)
        assert sum(v for (name, _), v in after.items() if name == "scene7_jobs_finished_total") >= finished
        for company in exporter.store.state.companies:
            assert set(book[company.target]) <= set(company.job_logs.counted) | {
                k for k, end in book[company.target].items() if end < 0}
        # the guard counts the recent-job series: a limit below them drops them
        active = exporter.store.guard.series(job for c in exporter.store.state.companies for job in c.jobs)
        tight = exporter.settings.model_copy(update={"poll": exporter.settings.poll.model_copy(
            update={"max_series": active + 5})})
        await exporter.reload(tight)
        dropped = await eventually(lambda s: not [k for k in s if k[0] == "scene7_recent_job_info"], exporter)
        assert dropped[("scene7_series_dropped_total", frozenset())] > 0
