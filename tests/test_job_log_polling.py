"""Job-log polling against the simulator: every finished job counted once, whatever the date filter.

The poller's own polls (`_poll_company`, `_poll_job_logs`) are called one at a time on a stepped
clock the simulator shares; what the store counted is checked against the simulator's own logs.
The exporter tests that follow run the whole exporter in-process with job-log faults switched on.
At the end, the sweep (`exporter.joblogs.sweep`) asks a stand-in for getJobLogs that keeps every
call, and the book (`JobLogBook`) is given sweep results built by hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from servers import Clock, all_up, by_company, eventually, exporting, settings_for, simulated
from support import by_label, logged
from test_poller import START, TARGET, FakeClient, SteppedClock

from exporter import joblogs
from exporter.client import IpsClient
from exporter.config import JobLogsConfig
from exporter.errors import ApiFault, Reason
from exporter.joblogs import (
    LOOKUP_ATTEMPTS,
    MAX_BACKLOG,
    MAX_CALLS_PER_POLL,
    NUM_ROWS,
    Histogram,
    JobLogBook,
    Pending,
    Plan,
    RecentJob,
    SweepResult,
    _merge_backlog,
    cap_label,
    log_key,
    lookback_for,
    retention_for,
    sweep,
)
from exporter.models import JobLog, JobLogSortBy, SortDirection
from exporter.parse import JobLogsResult
from exporter.poller import Account, JobLogPolling, Pause, Poller
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


# -- the sweep and the book on their own, with a stand-in for getJobLogs ----------------------------

T = T0.timestamp()
Answer = Callable[[int, float, float, int], JobLogsResult]


def job_log(name: str, start: float | None, end: float | None, *, handle: str | None = None,
            log_type: str = "Upload", fatal: bool = False,
            files: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)) -> JobLog:
    success, error, warning, duplicate, update = files
    return JobLog(company_handle="c|1", job_handle=f"j|{name}" if handle is None else handle, job_name=name,
                  log_type=log_type, start_date=None if start is None else datetime.fromtimestamp(start, UTC),
                  end_date=None if end is None else datetime.fromtimestamp(end, UTC),
                  file_success_count=success, file_error_count=error, file_warning_count=warning,
                  file_duplicate_count=duplicate, file_update_count=update, total_file_count=sum(files),
                  fatal_error=fatal)


def nothing(call: int, start: float, end: float, rows: int) -> JobLogsResult:
    return JobLogsResult(())


def full(call: int, start: float, end: float, rows: int) -> JobLogsResult:
    """As many logs as asked for: the window may hold more."""
    return JobLogsResult(tuple(job_log(f"full-{call}-{n}", start, end) for n in range(rows)))


class Ips:
    """getJobLogs: each call's (startDate, endDate, numRows) is kept, `answer` says what it returns."""

    def __init__(self, answer: Answer = nothing) -> None:
        self.answer = answer
        self.calls: list[tuple[float, float, int]] = []

    async def __call__(self, start: datetime, end: datetime, rows: int) -> JobLogsResult:
        assert start.tzinfo is UTC and end.tzinfo is UTC
        self.calls.append((start.timestamp(), end.timestamp(), rows))
        return self.answer(len(self.calls) - 1, start.timestamp(), end.timestamp(), rows)


def test_lookback_and_retention_reach_as_far_as_the_longest_of_their_reasons():
    assert lookback_for(300, 60) == 3600
    assert lookback_for(2000, 60) == 4000
    assert lookback_for(300, 1500) == 4500
    assert retention_for(3600, 900) == 86400 + 900
    assert retention_for(2 * 86400, 900) == 2 * 86400 + 900
    assert Plan(lookback=900, recent_window=3600).retention == 86400 + 900


def test_label_values_are_cut_to_128_characters_with_an_ellipsis():
    assert cap_label("x" * 128) == "x" * 128
    assert cap_label("x" * 127 + "yz") == "x" * 127 + "\u2026"
    assert cap_label("abcdef", 4) == "abc\u2026"
    assert cap_label("abcd", 4) == "abcd"


def test_a_log_is_known_by_its_handle_or_else_by_its_name_and_start():
    assert log_key(job_log("a", T, None, handle="j|7")) == "j|7"
    assert log_key(job_log("a", T, None, handle="")) == f"a\x00{T}"
    assert log_key(job_log("a", T + 1, None, handle="")) != log_key(job_log("a", T, None, handle=""))
    assert log_key(job_log("a", None, None, handle="")) == "a\x00"


async def test_the_first_sweep_asks_for_the_recent_window_and_the_lookback_in_utc():
    ips = Ips()
    plan = Plan(lookback=900, recent_window=3600, num_rows=50)
    result = await sweep(ips, JobLogBook(), now=T, plan=plan)
    assert ips.calls == [(T - 4500, T, 50)]
    assert result == SweepResult((), 1, T)
    # a recent window of a day or more reaches as far back as the retention, no further
    ips = Ips()
    await sweep(ips, JobLogBook(), now=T, plan=Plan(lookback=900, recent_window=2 * 86400))
    assert ips.calls == [(T - 2 * 86400 - 900, T, NUM_ROWS)]


@pytest.mark.parametrize(("swept_until", "low"), [
    (T - 300, T - 300 - 900),
    (T + 50, T - 900),  # the clock went back: never a window in the future
    (T - 10 * 86400, T - 86400 - 900),  # long stopped: no further back than the retention
])
async def test_a_later_sweep_reaches_back_the_lookback_from_the_previous_one(swept_until, low):
    ips = Ips()
    await sweep(ips, JobLogBook(swept_until=swept_until), now=T, plan=Plan(lookback=900, recent_window=3600))
    assert ips.calls == [(low, T, NUM_ROWS)]


@pytest.mark.parametrize(("logs", "kept"), [
    (["running", "ended"], ["ended"]),
    (["ended", "running"], ["ended"]),
    (["ended", "ended later"], ["ended"]),
    (["running", "running later"], ["running"]),
])
async def test_a_log_found_twice_is_kept_once_finished_if_it_ever_was(logs, kept):
    versions = {"running": job_log("a", T - 60, None), "running later": job_log("a", T - 59, None, handle="j|a"),
                "ended": job_log("a", T - 60, T - 10), "ended later": job_log("a", T - 60, T - 5)}
    other = job_log("b", T - 30, T - 20)
    ips = Ips(lambda *_: JobLogsResult((*(versions[v] for v in logs), other)))
    result = await sweep(ips, JobLogBook(), now=T, plan=Plan())
    assert result.logs == (*(versions[v] for v in kept), other)


async def test_invalid_records_are_summed_and_the_first_one_told():
    answers = [JobLogsResult(()), JobLogsResult((), 2, "first"), JobLogsResult((), 3, "second")]
    ips = Ips(lambda call, *_: answers[call])
    book = JobLogBook(swept_until=T, backlog=((T - 7200, T - 6000), (T - 9000, T - 8000)))
    result = await sweep(ips, book, now=T, plan=Plan())
    assert ips.calls == [(T - 3600, T, NUM_ROWS), (T - 7200, T - 6000, NUM_ROWS), (T - 9000, T - 8000, NUM_ROWS)]
    assert (result.invalid_records, result.first_invalid, result.calls) == (5, "first", 3)
    assert result.backlog == ()


async def test_a_window_answered_with_num_rows_logs_is_halved_the_newer_half_first():
    answers = {0: full, 2: full}
    ips = Ips(lambda call, *args: answers.get(call, nothing)(call, *args))
    result = await sweep(ips, JobLogBook(swept_until=T), now=T, plan=Plan(lookback=1024, num_rows=3))
    assert ips.calls == [(T - 1024, T, 3), (T - 512, T, 3), (T - 1024, T - 512, 3),
                         (T - 768, T - 512, 3), (T - 1024, T - 768, 3)]
    assert (result.calls, result.saturated, result.backlog) == (5, 0, ())
    assert len(result.logs) == 6


@pytest.mark.parametrize(("logs", "invalid", "halved"), [(2, 0, False), (3, 0, True), (2, 1, True), (4, 0, True)])
async def test_invalid_records_count_towards_a_full_window(logs, invalid, halved):
    def answer(call: int, start: float, end: float, rows: int) -> JobLogsResult:
        return JobLogsResult(tuple(job_log(f"{call}-{n}", start, end) for n in range(logs)) if call == 0 else (),
                             invalid if call == 0 else 0)

    ips = Ips(answer)
    await sweep(ips, JobLogBook(swept_until=T), now=T, plan=Plan(lookback=1024, num_rows=3))
    assert len(ips.calls) == (3 if halved else 1)


@pytest.mark.parametrize(("width", "calls", "saturated"), [(1.0, 1, 1), (0.5, 1, 1), (1.5, 3, 2), (2.0, 3, 2)])
async def test_a_full_window_is_halved_down_to_one_second_and_then_counted_as_saturated(width, calls, saturated):
    ips = Ips(full)
    result = await sweep(ips, JobLogBook(swept_until=T), now=T, plan=Plan(lookback=width, num_rows=2))
    assert (result.calls, result.saturated, result.backlog) == (calls, saturated, ())
    assert all(end - start <= width for start, end, _ in ips.calls)


async def test_windows_left_when_the_calls_run_out_are_the_backlog_newest_first():
    ips = Ips(full)
    result = await sweep(ips, JobLogBook(swept_until=T), now=T, plan=Plan(lookback=1024, num_rows=2, max_calls=4))
    assert ips.calls == [(T - 1024, T, 2), (T - 512, T, 2), (T - 256, T, 2), (T - 128, T, 2)]
    assert result.backlog == ((T - 64, T), (T - 128, T - 64), (T - 256, T - 128), (T - 512, T - 256),
                              (T - 1024, T - 512))
    assert (result.calls, result.saturated) == (4, 0)


def pending(name: str, start: float, vanished_at: float, attempts: int = 0) -> tuple[str, Pending]:
    return name, Pending(name, start, vanished_at, attempts)


async def test_vanished_jobs_started_before_the_window_are_looked_up_oldest_vanished_first():
    waiting = dict([pending("late", T - 5000, T - 100), pending("early", T - 7000, T - 300),
                    pending("edge", T - 3600, T - 400), pending("inside", T - 1000, T - 500)])
    looked_up = job_log("early", T - 7000, T - 200)

    def answer(call: int, start: float, end: float, rows: int) -> JobLogsResult:
        return JobLogsResult((looked_up,) if start == T - 7001 else ())

    ips = Ips(answer)
    result = await sweep(ips, JobLogBook(swept_until=T, pending=waiting), now=T, plan=Plan(lookback=3600))
    # the window reaches back to T - 3600: "edge" and "inside" started in it
    assert ips.calls == [(T - 3600, T, NUM_ROWS), (T - 7001, T - 6999, NUM_ROWS), (T - 5001, T - 4999, NUM_ROWS)]
    assert result.looked_up == {"early", "late"}
    assert result.logs == (looked_up,) and result.calls == 3


async def test_a_vanished_job_whose_finished_log_the_sweep_found_is_not_looked_up():
    waiting = dict([pending("done", T - 7000, T - 300), pending("still running", T - 8000, T - 200)])
    found = (job_log("done", T - 7000, T - 900), job_log("still running", T - 8000, None))
    ips = Ips(lambda call, *_: JobLogsResult(found if call == 0 else ()))
    result = await sweep(ips, JobLogBook(swept_until=T, pending=waiting), now=T, plan=Plan(lookback=3600))
    assert ips.calls[1:] == [(T - 8001, T - 7999, NUM_ROWS)]
    assert result.looked_up == {"still running"}


@pytest.mark.parametrize(("due", "windows"), [(0, 6), (1, 5), (3, 3), (5, 3)])
async def test_look_ups_get_up_to_half_the_calls_and_the_windows_the_rest(due, windows):
    waiting = dict(pending(f"job{n}", T - 9000 - n, T - 100 + n) for n in range(due))
    ips = Ips(lambda call, start, end, rows: full(call, start, end, rows) if end - start > 2 else nothing(
        call, start, end, rows))
    result = await sweep(ips, JobLogBook(swept_until=T, pending=waiting), now=T,
                         plan=Plan(lookback=1024, num_rows=2, max_calls=6))
    assert result.calls == len(ips.calls) == min(6, windows + due)
    assert [end - start for start, end, _ in ips.calls[windows:]] == [2.0] * min(due, 6 - windows)
    assert result.looked_up == {f"job{n}" for n in range(min(due, 6 - windows))}
    assert len(result.backlog) == windows + 1  # each full window left two halves


def test_the_backlog_keeps_what_is_newer_than_the_retention_and_not_inside_another_window():
    plan = Plan(lookback=900, recent_window=3600)
    oldest = T - plan.retention
    windows = [(oldest - 50, oldest), (oldest - 50, oldest - 1), (T - 100, T), (T - 90, T - 10), (T - 100, T),
               (T - 200, T - 50), (T - 300, T - 50), (T - 400, T - 300)]
    assert _merge_backlog(windows, T, plan) == ((T - 100, T), (T - 300, T - 50), (T - 400, T - 300),
                                                (oldest - 50, oldest))
    assert _merge_backlog([(T - 20, T - 10), (T - 30, T - 10)], T, plan) == ((T - 30, T - 10),)
    assert _merge_backlog([(T - 30, T - 20), (T - 30, T - 10)], T, plan) == ((T - 30, T - 10),)
    assert _merge_backlog([(T - 20, T - 10), (T - 30, T - 10), (T - 20, T - 5)], T, plan) == (
        (T - 20, T - 5), (T - 30, T - 10))


@pytest.mark.parametrize("count", [MAX_BACKLOG, MAX_BACKLOG + 1, MAX_BACKLOG + 5])
def test_a_backlog_of_more_than_32_windows_merges_the_oldest(count):
    windows = [(T - 100 * n - 50, T - 100 * n) for n in range(count)]
    merged = _merge_backlog(reversed(windows), T, Plan())
    assert len(merged) == min(count, MAX_BACKLOG)
    assert merged[: MAX_BACKLOG - 1] == tuple(windows[: MAX_BACKLOG - 1])
    assert merged[-1] == (windows[-1][0], windows[MAX_BACKLOG - 1][1])


def test_a_duration_falls_in_the_first_bucket_it_does_not_exceed():
    histogram = Histogram().add(60.0).add(60.5).add(86400.0).add(86400.5).add(0.0)
    assert histogram.buckets == (2, 1, 0, 0, 0, 0, 0, 0, 1, 1)
    assert histogram.total == 60.0 + 60.5 + 86400.0 + 86400.5
    assert histogram.cumulative() == [("60", 2.0), ("300", 3.0), ("900", 3.0), ("1800", 3.0), ("3600", 3.0),
                                      ("7200", 3.0), ("14400", 3.0), ("28800", 3.0), ("86400", 4.0), ("+Inf", 5.0)]
    assert Histogram().cumulative()[-1] == ("+Inf", 0.0)


def test_vanished_jobs_wait_for_their_log_unless_it_was_seen(monkeypatch):
    book = JobLogBook(ended_names=MappingProxyType({"seen": T - 10}))
    assert book.after_vanished([("seen", T - 500)], at=T) is book
    assert book.after_vanished([], at=T) is book
    later = book.after_vanished([("a", T - 500), ("seen", T - 400), ("b", T - 300)], at=T)
    assert dict(later.pending) == dict([pending("a", T - 500, T), pending("b", T - 300, T)])
    monkeypatch.setattr(joblogs, "MAX_PENDING", 3)
    full_book = later.after_vanished([("c", T - 200)], at=T + 60).after_vanished([("d", T - 100)], at=T + 120)
    assert set(full_book.pending) == {"b", "c", "d"}  # "a" and "b" vanished together: the first one goes
    assert full_book.pending["d"] == Pending("d", T - 100, T + 120)


def test_a_failed_job_log_poll_is_counted_by_reason_and_a_skipped_one_is_no_poll():
    book = JobLogBook().after_failure(Reason.TIMEOUT).after_failure(Reason.TIMEOUT).after_failure(Reason.SKIPPED)
    assert dict(book.errors_total) == {Reason.TIMEOUT: 2, Reason.SKIPPED: 1}
    assert book.polls_total == 2
    assert (book.last_success, book.counted, book.swept_until) == (None, {}, None)


ONE_OF_EACH = {"fatal": 1, "errors": 1, "warnings": 1, "succeeded": 1}


def test_finished_logs_are_counted_once_by_type_and_outcome_with_their_files_and_duration():
    plan = Plan(lookback=600, recent_window=3600)
    book = JobLogBook(counted=MappingProxyType({"j|counted": T - 5000}), calls_total=7, polls_total=3,
                      last_end=MappingProxyType({"Publish": T + 99}))
    logs = (
        job_log("fatal", T - 500, T - 100, log_type="Upload", fatal=True, files=(1, 2, 3, 4, 5)),
        job_log("errors", None, T - 50, log_type="Upload", files=(0, 1, 0, 0, 0)),
        job_log("warnings", T - 10, T - 20, log_type="Upload", files=(0, 0, 1, 0, 0)),
        job_log("succeeded", T - 4000, T - 1000, log_type="Upload", files=(10, 0, 0, 0, 0)),
        job_log("counted", T - 6000, T - 5000, log_type="Upload", files=(100, 0, 0, 0, 0)),
        job_log("before start", T - 3000, T - 2000, log_type="Publish", fatal=True, files=(100, 0, 0, 0, 0)),
        job_log("running", T - 100, None, log_type="Running"),
    )
    after = book.after_sweep(SweepResult(logs, 5, T, backlog=((T - 10, T),)), started_at=T - 1500, plan=plan,
                             recent_max=10)
    assert {k: dict(v) for k, v in after.finished.items()} == {
        "Upload": ONE_OF_EACH, "Publish": dict.fromkeys(ONE_OF_EACH, 0)}
    assert dict(after.files) == {"Upload": (11, 3, 4, 4, 5), "Publish": (0, 0, 0, 0, 0)}
    assert after.durations["Upload"] == Histogram((2, 0, 1, 0, 1, 0, 0, 0, 0, 0), 3400.0)
    assert after.durations["Publish"] == Histogram()
    assert dict(after.last_end) == {"Upload": T - 20, "Publish": T + 99}
    assert dict(after.counted) == {"j|counted": T - 5000, "j|succeeded": T - 1000, "j|fatal": T - 100,
                                   "j|errors": T - 50, "j|warnings": T - 20}
    assert dict(after.ended_names) == {"counted": T - 5000, "before start": T - 2000, "succeeded": T - 1000,
                                       "fatal": T - 100, "errors": T - 50, "warnings": T - 20}
    assert [(job.key, job.outcome, job.end, job.files) for job in after.recent] == [
        ("j|warnings", "warnings", T - 20, (0, 0, 1, 0, 0)), ("j|errors", "errors", T - 50, (0, 1, 0, 0, 0)),
        ("j|fatal", "fatal", T - 100, (1, 2, 3, 4, 5)), ("j|succeeded", "succeeded", T - 1000, (10, 0, 0, 0, 0)),
        ("j|before start", "fatal", T - 2000, (100, 0, 0, 0, 0))]
    assert (after.polls_total, after.last_success, after.calls_total, after.last_calls) == (4, T, 12, 5)
    assert (after.swept_until, after.backlog) == (T, ((T - 10, T),))
    again = after.after_sweep(SweepResult(logs, 1, T + 60), started_at=T - 1500, plan=plan, recent_max=10)
    assert again.finished == after.finished and again.files == after.files and again.durations == after.durations


def test_the_file_counts_of_counted_logs_add_up_result_by_result():
    logs = tuple(job_log(f"job{n}", None, T - 10 * n, files=(1 * n, 2 * n, 3 * n, 4 * n, 5 * n)) for n in (1, 10, 100))
    after = JobLogBook().after_sweep(SweepResult(logs, 1, T), started_at=0, plan=Plan(), recent_max=10)
    assert dict(after.files) == {"Upload": (111, 222, 333, 444, 555)}


def test_what_ended_before_the_retention_is_neither_counted_nor_remembered():
    plan = Plan(lookback=600, recent_window=3600)
    oldest = T - plan.retention
    book = JobLogBook(counted=MappingProxyType({"kept": oldest, "forgotten": oldest - 1}),
                      ended_names=MappingProxyType({"kept": oldest, "forgotten": oldest - 1}))
    logs = (job_log("at the edge", None, oldest), job_log("too old", None, oldest - 1))
    after = book.after_sweep(SweepResult(logs, 1, T), started_at=T - 10 * 86400, plan=plan, recent_max=10)
    assert dict(after.counted) == {"kept": oldest, "j|at the edge": oldest}
    assert dict(after.ended_names) == {"kept": oldest, "at the edge": oldest, "too old": oldest - 1}
    assert dict(after.finished["Upload"]) == {"fatal": 0, "errors": 0, "warnings": 0, "succeeded": 1}


def test_the_recent_jobs_are_those_of_the_recent_window_newest_first_up_to_recent_max():
    plan = Plan(lookback=600, recent_window=3600)
    earlier = JobLogBook().after_sweep(SweepResult((job_log("edge", None, T - 3600), job_log("b", None, T - 3601)),
                                                   1, T), started_at=0, plan=plan, recent_max=10)
    assert [job.key for job in earlier.recent] == ["j|edge"]
    logs = tuple(job_log(name, None, T + 60 - 1 if name < "c" else T + 60 - 2) for name in "abcd")
    later = earlier.after_sweep(SweepResult(logs, 1, T + 1), started_at=0, plan=plan, recent_max=3)
    assert [job.key for job in later.recent] == ["j|b", "j|a", "j|d"]
    kept = earlier.after_sweep(SweepResult((), 1, T), started_at=0, plan=plan, recent_max=10)
    assert kept.recent == earlier.recent
    gone = earlier.after_sweep(SweepResult((), 1, T + 1), started_at=0, plan=plan, recent_max=10)
    assert gone.recent == ()


def test_the_recent_job_shows_the_capped_name_and_type_and_its_files():
    logs = (job_log("n" * 200, T - 60, T - 30, handle="j|1", log_type="t" * 200, files=(1, 0, 2, 0, 3)),)
    after = JobLogBook().after_sweep(SweepResult(logs, 1, T), started_at=0, plan=Plan(), recent_max=10)
    capped = "t" * 127 + "\u2026"
    assert after.recent == (RecentJob("j|1", "n" * 127 + "\u2026", capped, "warnings", T - 30, (1, 0, 2, 0, 3), 30.0),)
    assert list(after.finished) == list(after.files) == list(after.durations) == list(after.last_end) == [capped]


def test_log_types_beyond_the_limit_are_counted_as_other(monkeypatch):
    monkeypatch.setattr(joblogs, "MAX_LOG_TYPES", 2)
    logs = (job_log("a", None, T - 50, log_type="A"), job_log("b", None, T - 40, log_type="B"),
            job_log("c", None, T - 30, log_type="C"), job_log("d", None, T - 20, log_type="A"),
            job_log("e", None, T - 10, log_type="E"))
    after = JobLogBook().after_sweep(SweepResult(logs, 1, T), started_at=0, plan=Plan(), recent_max=10)
    assert {k: v["succeeded"] for k, v in after.finished.items()} == {"A": 2, "B": 1, "other": 2}
    assert after.recent[0].log_type == "other"
    # a type first seen ends first, whatever order IPS answers in
    after = JobLogBook().after_sweep(SweepResult(tuple(reversed(logs)), 1, T), started_at=0, plan=Plan(),
                                     recent_max=10)
    assert {k: v["succeeded"] for k, v in after.finished.items()} == {"A": 2, "B": 1, "other": 2}


def test_the_latest_end_of_a_job_name_is_remembered():
    logs = (job_log("same", None, T - 10, handle="j|2"), job_log("same", None, T - 20, handle="j|1"))
    after = JobLogBook().after_sweep(SweepResult(logs, 1, T), started_at=0, plan=Plan(), recent_max=10)
    assert dict(after.ended_names) == {"same": T - 10}


def test_the_keys_remembered_are_bounded_keeping_the_newest(monkeypatch):
    monkeypatch.setattr(joblogs, "MAX_REMEMBERED", 2)
    logs = tuple(job_log(f"job{n}", None, T - 10 * n) for n in (3, 1, 2))
    after = JobLogBook().after_sweep(SweepResult(logs, 1, T), started_at=0, plan=Plan(), recent_max=10)
    assert dict(after.counted) == {"j|job2": T - 20, "j|job1": T - 10}
    assert dict(after.ended_names) == {"job2": T - 20, "job1": T - 10}
    logs = tuple(job_log(f"job{n}", None, T - 10 * n) for n in (2, 1))
    after = JobLogBook().after_sweep(SweepResult(logs, 1, T), started_at=0, plan=Plan(), recent_max=10)
    assert len(after.counted) == len(after.ended_names) == 2


def test_vanished_jobs_are_given_up_after_12_look_ups_or_the_retention(caplog):
    caplog.set_level(logging.DEBUG, logger="exporter.joblogs")
    plan = Plan(lookback=600, recent_window=3600)
    oldest = T - plan.retention
    waiting = dict([
        pending("found now", T - 9000, T - 100), pending("found before", T - 9000, T - 100),
        pending("asked", T - 9000, T - 100, 3), pending("asked a 12th time", T - 9000, T - 100, LOOKUP_ATTEMPTS - 1),
        pending("not asked", T - 9000, T - 100, LOOKUP_ATTEMPTS - 1), pending("at the edge", T - 9000, oldest),
        pending("too old", T - 9000, oldest - 1),
    ])
    book = JobLogBook(pending=MappingProxyType(waiting), ended_names=MappingProxyType({"found before": T - 50}))
    result = SweepResult((job_log("found now", T - 9000, T - 30),), 4, T,
                         looked_up=frozenset({"asked", "asked a 12th time", "found now"}))
    after = book.after_sweep(result, started_at=0, plan=plan, recent_max=10)
    assert dict(after.pending) == dict([pending("asked", T - 9000, T - 100, 4),
                                        pending("not asked", T - 9000, T - 100, LOOKUP_ATTEMPTS - 1),
                                        pending("at the edge", T - 9000, oldest)])
    assert [logged(r) for r in caplog.records if r.name == "exporter.joblogs"] == [
        "no finished log found for job 'asked a 12th time'; given up",
        "no finished log found for job 'too old'; given up"]


# -- the poller's job-log poll, with a fake client -------------------------------------------------


class LogClient(FakeClient):
    """A FakeClient that answers getJobLogs from its own script (an exception is raised, an event is
    waited on) and keeps the arguments of each call."""

    def __init__(self, logs: Iterator[object]) -> None:
        super().__init__(iter(()))
        self.logs = logs
        self.log_calls: list[dict[str, Any]] = []

    async def get_job_logs(self, company_handle: str, **params: Any) -> JobLogsResult:
        self.log_calls.append({"company_handle": company_handle, **params})
        answer = next(self.logs)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, asyncio.Event):
            await answer.wait()
        return answer if isinstance(answer, JobLogsResult) else JobLogsResult(())


LOG_PLAN = Plan(lookback=900, recent_window=3600)


def log_poller(*answers: object, timeout: float = 150.0, plan: Plan = LOG_PLAN,
               password: Callable[[], str | None] | None = None) -> tuple[Poller, Store, LogClient]:
    """A poller of the company TARGET of account "main", job logs polled every 300 s by `plan`."""
    store = Store(job_logs=JobLogSettings(plan), started_at=START - 86400)
    store.track(TARGET)
    client = LogClient(iter(answers))
    poller = Poller([Account("main", client, password=password)], store, interval=60, timeout=20,  # type: ignore[arg-type]
                    clock=SteppedClock(START, 10.0), timer=SteppedClock(100.0, 0.25),
                    job_logs=JobLogPolling(300, timeout, plan))
    return poller, store, client


def log_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[tuple[int, str]]:
    return [(r.levelno, logged(r)) for r in caplog.records if r.name == "exporter.poller" and r.levelno >= level]


async def test_a_job_log_poll_asks_for_its_window_by_start_date_newest_first_and_records_what_it_found(caplog):
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    found = job_log("a", START - 600, START - 60)
    poller, store, client = log_poller(JobLogsResult((found,), 2, f"count -3 <password>{FakeClient.password}"))
    await poller._poll_job_logs(TARGET)
    assert client.log_calls == [{
        "company_handle": "c|1", "start_date": datetime.fromtimestamp(START - 4500, UTC),
        "end_date": datetime.fromtimestamp(START, UTC), "num_rows": NUM_ROWS, "sort_by": JobLogSortBy.START_DATE,
        "sort_direction": SortDirection.DESCENDING}]
    book = store.job_log_book(TARGET)
    assert (book.last_success, book.calls_total, set(book.counted)) == (START, 1, {"j|a"})
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and snapshot.invalid_records_total == 2
    assert (snapshot.polls_total, snapshot.fetched_at, snapshot.up) == (0, None, False)  # the active poll's alone
    assert log_lines(caplog, logging.DEBUG) == [
        (logging.WARNING, "invalid job-log records left out company=Acme records=2 first=count -3 <password>***"),
        (logging.DEBUG, "job-log poll done company=Acme calls=1 logs=1"),
    ]
    (done,) = [r for r in caplog.records if r.getMessage() == "job-log poll done"]
    assert (done.account, done.duration) == (TARGET.account, 0.25)  # type: ignore[attr-defined]


async def test_the_next_job_log_poll_reaches_back_the_lookback_from_the_last_one():
    poller, store, client = log_poller(JobLogsResult(()), JobLogsResult(()))
    await poller._poll_job_logs(TARGET)
    await poller._poll_job_logs(TARGET)
    assert [(call["start_date"].timestamp(), call["end_date"].timestamp()) for call in client.log_calls] == [
        (START - 4500, START), (START - 900, START + 10)]
    assert store.job_log_book(TARGET).swept_until == START + 10


async def test_a_job_log_poll_still_saturated_at_one_second_says_logs_may_be_missed(caplog):
    plan = Plan(lookback=0.5, recent_window=0.5, num_rows=2)
    poller, store, client = log_poller(full(0, START - 1, START, 2), plan=plan)
    await poller._poll_job_logs(TARGET)
    assert len(client.log_calls) == 1 and store.job_log_book(TARGET).last_success == START
    assert log_lines(caplog) == [
        (logging.WARNING, "one-second windows of job logs still held the most logs a call returns: some may be missed "
                             "company=Acme windows=1 rows=2")]


@pytest.mark.parametrize(("paused", "reason"), [("main", Reason.AUTHENTICATION), (TARGET, Reason.AUTHORIZATION)])
async def test_a_paused_account_or_company_gets_no_job_log_call(paused, reason):
    poller, store, client = log_poller(JobLogsResult(()))
    poller._paused[paused] = Pause(60, 1e9, "later", "refused")
    await poller._poll_job_logs(TARGET)
    assert client.log_calls == []
    book = store.job_log_book(TARGET)
    assert (dict(book.errors_total), book.polls_total, book.last_success) == ({reason: 1}, 1, None)
    assert paused in poller._paused  # the job-log poll neither ends a pause nor probes


async def test_a_new_password_ends_the_pause_before_the_job_log_poll():
    poller, store, client = log_poller(JobLogsResult(()), password=lambda: "n3w-Pa55")
    poller._paused["main"] = Pause(60, 1e9, "later", "refused")
    await poller._poll_job_logs(TARGET)
    assert len(client.log_calls) == 1 and client.password == "n3w-Pa55" and not poller._paused
    assert store.job_log_book(TARGET).last_success == START


async def test_a_failed_job_log_poll_is_logged_once_per_change_and_its_recovery_once(caplog):
    caplog.set_level(logging.INFO, logger="exporter.poller")
    fault = ApiFault(30000, f"Internal error for {FakeClient.password}")
    poller, store, _ = log_poller(fault, fault, ZeroDivisionError(), ZeroDivisionError(), JobLogsResult(()),
                                  JobLogsResult(()))
    for _ in range(6):
        await poller._poll_job_logs(TARGET)
    book = store.job_log_book(TARGET)
    assert dict(book.errors_total) == {Reason.API_FAULT: 2, Reason.INTERNAL: 2}
    assert (book.polls_total, book.last_success) == (6, START + 50)
    assert log_lines(caplog) == [
        (logging.WARNING, "job-log poll failed company=Acme reason=api_fault error=ipsApiFault 30000: Internal error "
                          "for ***"),
        (logging.ERROR, "unexpected error while polling the job logs company=Acme"),
        (logging.WARNING, "job-log poll failed company=Acme reason=internal "
                          "error=unexpected ZeroDivisionError: a bug of "
                          "the exporter"),
        (logging.INFO, "job-log poll recovered company=Acme"),
    ]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is ZeroDivisionError
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and (snapshot.polls_total, dict(snapshot.errors_total)) == (0, {})
    assert not poller._last_failure and not poller._paused  # the active poll's log lines and pauses are its own


async def test_a_job_log_poll_is_cut_off_at_its_own_timeout(caplog):
    poller, store, _ = log_poller(asyncio.Event(), timeout=0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(poller._poll_job_logs(TARGET), 10)
    assert loop.time() - began < 1.0  # no backstop second: the poll timeout cuts it off itself
    assert dict(store.job_log_book(TARGET).errors_total) == {Reason.TIMEOUT: 1}
    assert log_lines(caplog) == [
        (logging.WARNING, "job-log poll failed company=Acme reason=timeout error=not complete within the job-log poll "
                          "timeout of 0.05s")]


@pytest.mark.parametrize(("log_interval", "jitter", "spread"), [(300, None, 5.0), (20, None, 2.0), (300, 0, 0)])
async def test_each_company_gets_a_job_log_poll_of_its_own_interval_and_jitter(log_interval, jitter, spread):
    store = Store()
    poller = Poller([Account("main", FakeClient(iter(())))], store, interval=60, timeout=20,  # type: ignore[arg-type]
                    jitter=jitter, job_logs=JobLogPolling(log_interval, 10))
    poller.start()
    try:
        poller._schedule_job_logs(TARGET)
        scheduled = poller.scheduler.get_job("main\x00c|1\x00job logs")
        assert scheduled is not None and scheduled.args == (TARGET, poller._poll_job_logs)
        assert (scheduled.trigger.interval, scheduled.trigger.jitter) == (timedelta(seconds=log_interval),
                                                                         spread or None)
        assert poller._log_targets == {"main\x00c|1\x00job logs": TARGET}
        poller._unschedule(TARGET)
        assert poller.scheduler.get_job("main\x00c|1\x00job logs") is None and not poller._log_targets
    finally:
        await poller.stop()


async def test_no_job_log_poll_is_scheduled_when_job_logs_are_off():
    poller = Poller([Account("main", FakeClient(iter(())))], Store(), interval=60, timeout=20)  # type: ignore[arg-type]
    poller._schedule_job_logs(TARGET)
    assert not poller._log_targets and not poller.scheduler.get_jobs()


async def test_a_job_log_poll_the_scheduler_could_not_start_is_counted_as_skipped(caplog):
    poller, store, _ = log_poller()
    poller._log_targets["main\x00c|1\x00job logs"] = TARGET
    poller._on_missed_run(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "main\x00c|1\x00job logs", "default", []))
    poller._on_missed_run(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "main\x00c|1", "default", []))
    book = store.job_log_book(TARGET)
    assert (dict(book.errors_total), book.polls_total) == ({Reason.SKIPPED: 1}, 0)
    assert log_lines(caplog) == [
        (logging.WARNING, "job-log poll skipped: the previous one is still running company=Acme")]
