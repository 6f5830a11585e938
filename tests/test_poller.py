"""The poller, one poll at a time: a fake client, a stepped clock, and the store it reports to.

Most tests call the poll the scheduler would call and read what the store recorded; the jobs
scheduled are read from APScheduler. One test lets the scheduler run (at a 50 ms interval, waiting
on the store's events), and two wait out the real backstop and stop timeouts (1 s and 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
import weakref
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from support import logged

from exporter.errors import (
    ApiFault,
    AuthenticationFault,
    AuthorizationFault,
    HttpStatusError,
    IpsConnectionError,
    IpsTimeout,
    MalformedResponse,
    OversizedResponse,
    Reason,
)
from exporter.models import ActiveJob, Company, CompanyMembership, TaskProgress
from exporter.parse import ActiveJobsResult
from exporter.poller import Account, Poller
from exporter.snapshot import CompanyTarget, SeriesGuard, State, Store

WHEN = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
START = 1_800_000_000.0


class SteppedClock:
    """Every reading is `step` seconds after the one before."""

    def __init__(self, start: float, step: float) -> None:
        self.now, self.step = start - step, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeClient:
    """Answers from a script: each call takes the next entry (an exception is raised, an event is
    waited on before an empty answer); the company memberships come from their own script."""

    password = "Pa55-w0rd"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.password,)

    def __init__(self, answers: Iterator[object], memberships: list[CompanyMembership] | None = None,
                 discoveries: Iterator[object] | None = None) -> None:
        self.answers = answers
        self.discoveries = itertools.repeat(memberships or []) if discoveries is None else discoveries
        self.calls: list[tuple[str, bool]] = []
        self.known: list[Mapping[bytes, ActiveJob] | None] = []

    async def get_company_memberships(self) -> list[CompanyMembership]:
        answer = next(self.discoveries)
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, list)
        return answer

    async def get_active_jobs(
        self, company_handle: str, *, keep_items: bool = True, known: Mapping[bytes, ActiveJob] | None = None
    ) -> ActiveJobsResult:
        self.calls.append((company_handle, keep_items))
        self.known.append(known)
        answer = next(self.answers)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, asyncio.Event):
            await answer.wait()
            return ActiveJobsResult(())
        assert isinstance(answer, ActiveJobsResult)
        return answer


def job(name: str) -> ActiveJob:
    return ActiveJob(company_handle="c|1", job_handle=f"j|{name}", name=name, original_name=name,
                     job_type="UrlUpload", state="Running", start_date=WHEN, last_progress_update=WHEN)


def membership(handle: str, name: str) -> CompanyMembership:
    return CompanyMembership(company=Company(company_handle=handle, name=name))


TARGET = CompanyTarget("main", "c|1", "Acme")


def make_poller(*answers: object, memberships: list[CompanyMembership] | None = None,
                discoveries: Iterator[object] | None = None, companies: tuple[str, ...] = (),
                **options: Any) -> tuple[Poller, Store]:
    """A poller of one account "main" with a fake client; `options` override the Poller's."""
    store = Store(max_age=180.0)
    client = FakeClient(iter(answers), memberships, discoveries)
    settings = {"interval": 60, "timeout": 20, "clock": SteppedClock(START, 10.0),
                "timer": SteppedClock(100.0, 0.25)} | options
    poller = Poller([Account("main", client, companies)], store, **settings)  # type: ignore[arg-type]
    return poller, store


def client_of(poller: Poller) -> FakeClient:
    client = poller.accounts["main"].client
    assert isinstance(client, FakeClient)
    return client


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [logged(r) for r in caplog.records if r.name == "exporter.poller" and r.levelno >= level]


@pytest.fixture(autouse=True)
def poller_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.poller")


PLACEHOLDER = CompanyTarget("main", "", "main")
MEMBERSHIPS = [membership("c|1", "Acme"), membership("c|2", "Bits"), membership("c|3", "Core")]


async def test_discovery_replaces_the_account_placeholder_by_its_companies():
    poller, store = make_poller(memberships=[membership("c|1", "Acme"), membership("c|2", "Bits")])
    poller.start()
    try:
        (placeholder,) = [c.target for c in store.state.companies]
        assert placeholder == CompanyTarget("main", "", "main")
        await poller._discover(placeholder)
        assert [c.target for c in store.state.companies] == [
            CompanyTarget("main", "c|1", "Acme"), CompanyTarget("main", "c|2", "Bits")]
        # The discovery itself stays scheduled, to run again every discovery interval.
        assert sorted(j.id for j in poller.scheduler.get_jobs()) == ["main\x00", "main\x00c|1", "main\x00c|2"]
    finally:
        await poller.stop()


UNKNOWN = "a configured company is not among the user's companies; check the handle or name company=Nope"


@pytest.mark.parametrize(("companies", "labels", "lines"), [
    (("c|1", "Core", "Nope"), ["Acme", "Core"], [UNKNOWN, "polling 2 companies account=main companies=Acme, Core"]),
    (("c|2", "Bits"), ["Bits"], ["polling 1 companies account=main companies=Bits"]),  # one company, asked for twice
    (("Nope",), [], [UNKNOWN, "polling 0 companies account=main companies=none"]),
])
async def test_discovery_polls_the_companies_asked_for_by_handle_or_name(caplog, companies, labels, lines):
    poller, store = make_poller(memberships=MEMBERSHIPS, companies=companies)
    poller.start()
    try:
        await poller._discover(PLACEHOLDER)
        targets = {c.target for c in store.state.companies}
        assert sorted(t.label for t in targets) == labels
        # The discovery stays scheduled beside the companies, to run again every discovery interval.
        assert {j.id for j in poller.scheduler.get_jobs()} == {"main\x00"} | {f"main\x00{t.handle}" for t in targets}
        assert set(poller._targets.values()) == targets | {PLACEHOLDER}
        assert messages(caplog) == lines
    finally:
        await poller.stop()


async def test_a_failed_discovery_is_kept_scheduled_and_its_recovery_logged(caplog):
    fault = ApiFault(30000, "Internal error")
    poller, store = make_poller(discoveries=iter([fault, [membership("c|1", "Acme")]]))
    poller.start()
    try:
        await poller._discover(PLACEHOLDER)
        placeholder = store.state.company(PLACEHOLDER)
        assert placeholder is not None and (placeholder.up, dict(placeholder.errors_total)) == (
            False, {Reason.API_FAULT: 1})
        assert [j.id for j in poller.scheduler.get_jobs()] == ["main\x00"]
        await poller._discover(PLACEHOLDER)
        assert [c.target for c in store.state.companies] == [TARGET]
        assert messages(caplog) == [
            "poll failed company=main reason=api_fault error=ipsApiFault 30000: Internal error",
            "poll recovered company=main",
            "polling 1 companies account=main companies=Acme",
        ]
    finally:
        await poller.stop()


async def test_a_company_of_two_accounts_is_polled_once_and_a_shared_name_gets_the_handle(caplog):
    first = FakeClient(iter(()), [membership("c|1", "Acme"), membership("c|2", "Bits")])
    second = FakeClient(iter(()), [membership("c|2", "Bits"), membership("x|9", "Acme")])
    store = Store()
    poller = Poller([Account("first", first), Account("second", second)], store,  # type: ignore[arg-type]
                    interval=60, timeout=20)
    poller.start()
    try:
        await poller._discover(CompanyTarget("first", "", "first"))
        await poller._discover(CompanyTarget("second", "", "second"))
        assert {c.target for c in store.state.companies} == {
            CompanyTarget("first", "c|1", "Acme"), CompanyTarget("first", "c|2", "Bits"),
            CompanyTarget("second", "x|9", "Acme (x|9)")}
        assert messages(caplog) == [
            "polling 2 companies account=first companies=Acme, Bits",
            "the company is polled with another account already company=Bits",
            "polling 1 companies account=second companies=Acme (x|9)",
        ]
    finally:
        await poller.stop()


@pytest.fixture
def host_in_india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's local time zone is UTC+05:30."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("interval", "jitter", "spread", "grace"), [
    (60, None, 5.0, 30),  # jitter: a tenth of the interval, at most 5 s; misfire grace: half the interval
    (30, None, 3.0, 15),
    (1, None, 0.1, 1),  # the grace is at least 1 s
    (60, 0, 0, 30),  # no jitter: the first poll is due at once
    (60, 2.5, 2.5, 30),
])
async def test_each_poll_is_scheduled_in_utc_with_its_jitter_and_misfire_grace(host_in_india, interval, jitter,
                                                                               spread, grace):
    poller, _ = make_poller(interval=interval, jitter=jitter)
    before = datetime.now(UTC)
    poller.start()
    after = datetime.now(UTC)
    try:
        (scheduled,) = poller.scheduler.get_jobs()
        assert (scheduled.trigger.interval, scheduled.trigger.jitter) == (timedelta(seconds=interval), spread or None)
        assert (scheduled.max_instances, scheduled.coalesce, scheduled.misfire_grace_time) == (1, True, grace)
        assert scheduled.trigger.timezone == UTC
        assert before <= scheduled.next_run_time <= after + timedelta(seconds=spread)
    finally:
        await poller.stop()


async def test_the_scheduler_discovers_polls_and_skips_a_run_while_the_poll_before_still_runs(caplog):
    never = asyncio.Event()
    poller, store = make_poller(never, memberships=[membership("c|1", "Acme")], interval=0.05, jitter=0)
    client = client_of(poller)
    calls_at_first_skip: list[list[tuple[str, bool]]] = []
    skipped = asyncio.Event()

    def on_state(state: State) -> None:
        company = state.company(TARGET)
        if company is not None and company.errors_total.get(Reason.SKIPPED) and not skipped.is_set():
            calls_at_first_skip.append(list(client.calls))
            skipped.set()

    store.subscribe(on_state)
    poller.start()
    try:
        await asyncio.wait_for(skipped.wait(), 10)
        assert calls_at_first_skip == [[("c|1", False)]]
        assert poller.first_poll_attempted.is_set()
        assert "poll skipped: the previous poll is still running company=Acme" in messages(caplog)
    finally:
        await poller.stop()
    assert client.calls == [("c|1", False)]


async def test_stop_cancels_a_poll_under_way_and_waits_for_it(caplog):
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    poller, _ = make_poller()
    started, polled = asyncio.Event(), []

    async def hanging_poll(target: CompanyTarget) -> None:
        polled.append(target)
        started.set()
        await asyncio.Event().wait()

    run = asyncio.create_task(poller._run(TARGET, hanging_poll))
    await started.wait()
    assert not poller.first_poll_attempted.is_set()
    await poller.stop()
    assert run.done() and not run.cancelled() and polled == [TARGET]
    assert messages(caplog, logging.DEBUG) == ["poll cancelled company=Acme"]
    assert poller.first_poll_attempted.is_set()
    assert not poller._running  # a poll that ended is not kept


async def test_stop_gives_up_after_2_seconds_on_a_poll_that_will_not_end():
    poller, _ = make_poller()
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn_poll(target: CompanyTarget) -> None:  # e.g. a clean-up that hangs
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    run = asyncio.create_task(poller._run(TARGET, stubborn_poll))
    await started.wait()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(poller.stop(), 10)
    waited = loop.time() - began
    release.set()
    await run
    assert 1.9 <= waited < 3


async def test_a_poll_stuck_past_its_timeout_is_cut_off_by_the_backstop_a_second_later():
    poller, store = make_poller(asyncio.Event(), timeout=0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(poller._poll_company(TARGET), 10)
    assert loop.time() - began >= 1.0  # the client keeps the timeout itself: the backstop leaves it time
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and dict(snapshot.errors_total) == {Reason.TIMEOUT: 1}
    assert snapshot.last_error == "timeout: no answer within the poll timeout of 0.05s"


async def test_a_poll_is_recorded_with_its_start_time_and_duration():
    poller, store = make_poller(ActiveJobsResult((job("a"), job("b")), invalid_records=2))
    await poller._poll_company(TARGET)
    assert client_of(poller).calls == [("c|1", False)]  # the jobs without their items
    snapshot = store.state.company(TARGET)
    assert snapshot is not None
    assert [j.name for j in snapshot.jobs] == ["a", "b"]
    assert (snapshot.fetched_at, snapshot.poll_duration) == (START, 0.25)
    assert (snapshot.up, snapshot.polls_total, snapshot.invalid_records_total) == (True, 1, 2)
    assert store.state.is_fresh(snapshot, START + 180) and not store.state.is_fresh(snapshot, START + 180.5)


async def test_each_poll_is_given_the_fingerprints_of_the_last_good_one():
    first = ActiveJobsResult((job("a"),), fingerprints={b"a": job("a")})
    poller, _ = make_poller(first, IpsTimeout("slow"), ActiveJobsResult(()))
    for _ in range(3):
        await poller._poll_company(TARGET)
    # Nothing known at the first poll; a failed poll leaves the last good one's.
    assert client_of(poller).known == [{}, first.fingerprints, first.fingerprints]
    poller._unschedule(TARGET)
    assert TARGET not in poller._known_jobs


@pytest.mark.parametrize(("error", "reason"), [
    (IpsTimeout("slow"), Reason.TIMEOUT),
    (IpsConnectionError("refused"), Reason.CONNECTION),
    (HttpStatusError(502), Reason.HTTP),
    (AuthenticationFault(10001, "Invalid credentials"), Reason.AUTHENTICATION),
    (AuthorizationFault(20001, "No access"), Reason.AUTHORIZATION),
    (ApiFault(30000, "Bad request"), Reason.API_FAULT),
    (MalformedResponse("broken"), Reason.MALFORMED),
    (OversizedResponse("too big"), Reason.OVERSIZED),
    (KeyError("bug"), Reason.INTERNAL),
])
async def test_each_failure_is_recorded_under_its_reason_and_the_jobs_are_kept(error, reason):
    poller, store = make_poller(ActiveJobsResult((job("a"),)), error)
    await poller._poll_company(TARGET)
    await poller._poll_company(TARGET)
    snapshot = store.state.company(TARGET)
    assert snapshot is not None
    assert dict(snapshot.errors_total) == {reason: 1}
    assert (snapshot.up, snapshot.polls_total, [j.name for j in snapshot.jobs]) == (False, 2, ["a"])
    assert snapshot.fetched_at == START and snapshot.attempted_at == START + 10
    assert snapshot.poll_duration == 0.25
    assert snapshot.last_error is not None and snapshot.last_error.startswith(f"{reason}: ")
    assert snapshot.last_error.removeprefix(f"{reason}: ") in (str(error), "unexpected KeyError: a bug of the exporter")


async def test_a_bug_of_ours_is_internal_with_its_traceback_logged_once(caplog):
    poller, store = make_poller(ZeroDivisionError(), ZeroDivisionError(), ZeroDivisionError())
    for _ in range(3):
        await poller._poll_company(TARGET)
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and dict(snapshot.errors_total) == {Reason.INTERNAL: 3}
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is ZeroDivisionError
    assert logged(tracebacks[0]) == "unexpected error while polling company=Acme"


async def test_failures_are_logged_once_per_change_and_recovery_once(caplog):
    caplog.set_level(logging.DEBUG, logger="exporter.poller")
    fault = ApiFault(30000, "Internal error")
    poller, _ = make_poller(fault, fault, fault, ActiveJobsResult(()))
    for _ in range(4):
        await poller._poll_company(TARGET)
    lines = [logged(r) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [
        "poll failed company=Acme reason=api_fault error=ipsApiFault 30000: Internal error",
        "poll recovered company=Acme",
    ]
    again = [logged(r) for r in caplog.records if r.levelno == logging.DEBUG and r.getMessage() != "poll done"]
    assert again == ["poll failed again company=Acme reason=api_fault error=ipsApiFault 30000: Internal error"] * 2


async def test_a_run_the_scheduler_could_not_start_is_counted_as_skipped(caplog):
    poller, store = make_poller()
    poller._targets["main\x00c|1"] = TARGET
    store.track(TARGET)
    published: list[int] = []
    store.subscribe(lambda state: published.append(state.generation))
    poller._on_missed_run(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "main\x00c|1", "default", []))
    poller._on_missed_run(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "unknown", "default", []))
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and dict(snapshot.errors_total) == {Reason.SKIPPED: 1}
    assert len(published) == 1
    assert messages(caplog) == ["poll skipped: the previous poll is still running company=Acme"]


def test_every_transition_publishes_one_new_state_to_each_subscriber():
    store = Store(max_age=180.0)
    seen: list[tuple[int, int]] = []
    store.subscribe(lambda state: seen.append((1, state.generation)))
    store.subscribe(lambda state: seen.append((2, state.generation)))
    store.track(TARGET)
    store.record_success(TARGET, (job("a"),), at=START, duration=1.0)
    store.record_failure(TARGET, Reason.HTTP, "HTTP 502", at=START + 60, duration=1.0)
    store.record_skipped(TARGET)
    store.record_discovered(TARGET, [])
    assert seen == [(i, g) for g in range(1, 6) for i in (1, 2)]
    assert store.record_skipped(TARGET) is None and len(seen) == 10


def test_counts_add_up_over_polls_and_only_unfinished_tasks_vanish():
    store = Store(max_age=180.0)

    def running(name: str, state: str = "Processing") -> ActiveJob:
        task = TaskProgress(task_type="t", task_state=state, num_processed=0, num_processing=0, num_pending=1,
                            progress=0.0, last_progress_update=WHEN)
        return job(name).model_copy(update={"task_progress_array": (task,)})

    def finished() -> dict[tuple[str, str], int]:
        snapshot = store.state.company(TARGET)
        assert snapshot is not None
        return dict(snapshot.finished_total)

    store.record_success(TARGET, (running("a"), running("b"), running("c"), running("d")), at=START, duration=1)
    store.record_success(TARGET, (running("a", "Failed"), running("b", "Failed"), running("c")), at=START, duration=1)
    assert finished() == {("t", "Done"): 0, ("t", "Failed"): 2, ("t", "Vanished"): 1}
    store.record_success(TARGET, (), at=START, duration=1)  # a, b left finished; c vanished unfinished
    assert finished() == {("t", "Done"): 0, ("t", "Failed"): 2, ("t", "Vanished"): 2}


def test_a_success_clears_the_error_and_is_stamped_as_the_last_attempt():
    store = Store(max_age=180.0)
    store.record_failure(TARGET, Reason.HTTP, "HTTP 502", at=START, duration=1)
    store.record_success(TARGET, (job("a"),), at=START + 60, duration=1)
    snapshot = store.state.company(TARGET)
    assert snapshot is not None
    assert (snapshot.last_error, snapshot.attempted_at, snapshot.invalid_records_total) == (None, START + 60, 0)
    assert store.state.stale_labels(START + 60) == frozenset()
    assert store.state.stale_labels(START + 241) == {"Acme"}


def test_discovery_of_one_account_keeps_the_companies_of_the_others():
    store = Store(max_age=180.0)
    other = CompanyTarget("second", "x|1", "Other")
    store.track(other)
    placeholder = CompanyTarget("main", "", "main")
    store.track(placeholder)
    store.record_discovered(placeholder, [TARGET])
    assert [c.target for c in store.state.companies] == [TARGET, other]


@pytest.mark.parametrize(("max_series", "tripped"), [(0, False), (1, True), (2, False)])
def test_the_guard_is_off_at_0_and_trips_above_its_limit(max_series, tripped):
    store = Store(max_age=180.0, guard=SeriesGuard(max_series, per_job=1, per_task=0))
    store.record_success(TARGET, (job("a"), job("b")), at=START, duration=1)
    assert store.state.per_job_series is not tripped


# -- refused credentials: pause, probe, back off; rediscovery ------------------------------------


class Timer:
    """A monotonic timer the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingClient(FakeClient):
    """A FakeClient that counts the calls that reached IPS, with memberships the test changes."""

    def __init__(self, answers: Iterator[object], memberships: list[CompanyMembership] | None = None) -> None:
        super().__init__(answers)
        self.memberships = memberships or []
        self.ips_calls = 0
        self.membership_error: BaseException | None = None

    async def get_company_memberships(self) -> list[CompanyMembership]:
        self.ips_calls += 1
        if self.membership_error is not None:
            raise self.membership_error
        return self.memberships

    async def get_active_jobs(
        self, company_handle: str, *, keep_items: bool = True, known: Mapping[bytes, ActiveJob] | None = None
    ) -> ActiveJobsResult:
        self.ips_calls += 1
        await asyncio.sleep(0)  # an answer takes a turn of the loop: polls of two companies overlap
        return await super().get_active_jobs(company_handle, keep_items=keep_items)


def paused_poller(answers: Iterator[object], memberships: list[CompanyMembership] | None = None,
                  ) -> tuple[Poller, Store, CountingClient, Timer]:
    store, timer = Store(max_age=180.0), Timer()
    client = CountingClient(answers, memberships)
    poller = Poller([Account("main", client)], store, interval=60, timeout=20, auth_backoff_max=300,  # type: ignore[arg-type]
                    clock=lambda: START + timer.now - 1000, timer=timer)
    return poller, store, client, timer


REFUSED = AuthenticationFault(10001, "Invalid credentials")
OTHER = CompanyTarget("main", "c|2", "Bits")


async def test_refused_credentials_pause_the_account_with_one_probe_per_doubling_backoff(caplog):
    caplog.set_level(logging.INFO, logger="exporter.poller")
    poller, store, client, timer = paused_poller(itertools.repeat(REFUSED))
    await poller._poll_company(TARGET)
    assert client.ips_calls == 1
    # Every company of the account now waits, without a call, and says why.
    for target in (TARGET, OTHER, TARGET):
        await poller._poll_company(target)
    assert client.ips_calls == 1
    other = store.state.company(OTHER)
    assert other is not None and not other.up and dict(other.errors_total) == {Reason.AUTHENTICATION: 1}
    assert other.last_error == ("authentication: not polled until 2027-01-15T08:01:00+00:00: "
                                "authenticationFault 10001: Invalid credentials")
    assert (other.attempted_at, other.poll_duration) == (START, 0.0)  # stamped now, and no call took time
    probes = []
    for pause in (60, 120, 240, 300, 300):  # doubling from the interval, up to auth_backoff_max
        timer.now += pause - 1
        await poller._poll_company(OTHER)
        assert client.ips_calls == 1 + len(probes), "a call before the pause ended"
        timer.now += 1
        await poller._poll_company(OTHER)
        probes.append(client.ips_calls)
    assert probes == [2, 3, 4, 5, 6]
    pauses = [logged(r) for r in caplog.records if "IPS refused" in logged(r)]
    assert len(pauses) == 6 and pauses[0] == (
        "IPS refused the credentials: no call until next_attempt, then one; each refusal doubles the pause up to "
        "pause_max "
        "account=main reason=authentication error=authenticationFault 10001: Invalid credentials "
        "next_attempt=2027-01-15T08:01:00+00:00 pause=60 pause_max=300")
    assert [line.split(" pause=")[1].split()[0] for line in pauses] == ["60", "120", "240", "300", "300", "300"]


async def test_a_probe_that_passes_ends_the_pause_and_calls_under_way_do_not_extend_it(caplog):
    caplog.set_level(logging.INFO, logger="exporter.poller")
    poller, store, client, timer = paused_poller(iter([REFUSED, REFUSED, IpsTimeout("slow"),
                                                       ActiveJobsResult((job("a"),)), ActiveJobsResult(())]))
    # Two polls under way at once, both refused: the second refusal does not extend the pause.
    await asyncio.gather(poller._poll_company(TARGET), poller._poll_company(OTHER))
    assert client.ips_calls == 2
    timer.now += 60
    await poller._poll_company(TARGET)  # the probe: 60 s, not 120 s, after the first refusal
    assert client.ips_calls == 3
    # The probe timed out: that says nothing of the credentials, the next poll probes again.
    await poller._poll_company(TARGET)
    assert client.ips_calls == 4
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and snapshot.up and [j.name for j in snapshot.jobs] == ["a"]
    await poller._poll_company(OTHER)  # the account polls as before
    assert client.ips_calls == 5
    assert logged(caplog.records[-1]) == "poll recovered company=Bits"
    assert "IPS accepts the credentials again; polling resumes account=main" in [logged(r) for r in caplog.records]


async def test_a_refused_company_pauses_alone(caplog):
    caplog.set_level(logging.INFO, logger="exporter.poller")
    refused = AuthorizationFault(20000, "Invalid company")
    poller, store, client, timer = paused_poller(iter([refused, ActiveJobsResult(()), ActiveJobsResult(())]))
    await poller._poll_company(OTHER)
    await poller._poll_company(OTHER)
    await poller._poll_company(TARGET)
    assert client.ips_calls == 2  # the refused company waits; the others are polled
    other = store.state.company(OTHER)
    assert other is not None and dict(other.errors_total) == {Reason.AUTHORIZATION: 2}
    timer.now += 60
    await poller._poll_company(OTHER)
    assert client.ips_calls == 3 and store.state.company(OTHER).up  # type: ignore[union-attr]
    assert [line for line in [logged(r) for r in caplog.records] if "IPS" in line] == [
        "IPS refused the access: no call until next_attempt, then one; each refusal doubles the pause up to "
        "pause_max company=Bits reason=authorization error=authorizationFault 20000: Invalid company "
        "next_attempt=2027-01-15T08:01:00+00:00 pause=60 pause_max=300",
        "IPS accepts the access again; polling resumes company=Bits",
    ]


async def test_one_probe_at_a_time_when_the_pause_ends():
    poller, _, client, timer = paused_poller(iter([REFUSED, ActiveJobsResult(()), ActiveJobsResult(())]))
    await poller._poll_company(TARGET)
    timer.now += 60
    # Two companies' polls fall due together: one probes, the other waits for its answer.
    await asyncio.gather(poller._poll_company(TARGET), poller._poll_company(OTHER))
    assert client.ips_calls == 2
    await poller._poll_company(OTHER)  # the probe passed: polling as before
    assert client.ips_calls == 3


async def test_rediscovery_follows_companies_added_and_removed_and_a_failed_one_changes_nothing(caplog):
    caplog.set_level(logging.INFO, logger="exporter.poller")
    poller, store, client, _ = paused_poller(itertools.repeat(ActiveJobsResult(())),
                                             [membership("c|1", "Acme"), membership("c|2", "Bits")])
    poller.start()
    try:
        placeholder = CompanyTarget("main", "", "main")
        await poller._discover(placeholder)
        await poller._poll_company(TARGET)
        kept = store.state.company(TARGET)
        discovery = poller.scheduler.get_job("main\x00")
        assert discovery is not None and discovery.trigger.interval.total_seconds() == 900

        client.memberships = [membership("c|1", "Acme"), membership("c|3", "Cogs")]
        await poller._discover(placeholder)
        assert [c.target.handle for c in store.state.companies] == ["c|1", "c|3"]
        assert store.state.company(TARGET) is kept
        assert sorted(j.id for j in poller.scheduler.get_jobs()) == ["main\x00", "main\x00c|1", "main\x00c|3"]
        assert [logged(r) for r in caplog.records][-1] == "polling 2 companies account=main companies=Acme, Cogs"

        client.membership_error = IpsConnectionError("refused")
        await poller._discover(placeholder)
        assert [c.target.handle for c in store.state.companies] == ["c|1", "c|3"]  # no placeholder shown
        assert [logged(r) for r in caplog.records][-1] == "poll failed company=main reason=connection error=refused"
        client.membership_error = None
        lines = len([logged(r) for r in caplog.records])
        await poller._discover(placeholder)  # nothing changed: nothing said but the recovery
        assert [logged(r) for r in caplog.records][lines:] == ["poll recovered company=main"]
    finally:
        await poller.stop()


# -- IPS text is untrusted ------------------------------------------------------------------------


async def test_a_fault_that_echoes_the_password_is_masked_and_cut_before_log_and_store(caplog):
    echo = ApiFault(30003, "Invalid request XML: <authHeader><user>u</user><password>Pa55-w0rd</password>"
                           "</authHeader> (password Pa55-w0rd)" + " padding" * 100)
    poller, store = make_poller(echo)
    await poller._poll_company(TARGET)
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and snapshot.last_error is not None
    assert snapshot.last_error.startswith("api_fault: ipsApiFault 30003: Invalid request XML: <authHeader><user>u"
                                          "</user><password>***</password></authHeader> (password ***) padding")
    assert len(snapshot.last_error) == len("api_fault: ") + 512 and snapshot.last_error.endswith("…")
    text = "\n".join(logged(r) for r in caplog.records)
    assert "Pa55-w0rd" not in text and "<password>***</password>" in text


async def test_invalid_records_are_one_line_per_poll_not_one_per_record(caplog):
    caplog.set_level(logging.INFO, logger="exporter")
    first = "job 'Pa55-w0rd\nforged line': bad taskProgressArray.0.numPending"
    poller, store = make_poller(ActiveJobsResult((job("a"),), invalid_records=375_000, first_invalid=first))
    await poller._poll_company(TARGET)
    assert [logged(r) for r in caplog.records] == ["invalid job records left out company=Acme records=375000 first="
                               "job '*** forged line': bad taskProgressArray.0.numPending"]
    assert store.state.company(TARGET).invalid_records_total == 375_000  # type: ignore[union-attr]


async def test_a_new_password_is_used_at_once_and_ends_the_pause(caplog):
    caplog.set_level(logging.INFO, logger="exporter.poller")
    secret = ["Pa55-w0rd"]
    store, timer = Store(max_age=180.0), Timer()
    client = CountingClient(iter([REFUSED, AuthorizationFault(20000, "Invalid company"), ActiveJobsResult(()),
                                  ActiveJobsResult(()), ActiveJobsResult(())]))
    poller = Poller([Account("main", client, password=lambda: secret[0])], store,  # type: ignore[arg-type]
                    interval=60, timeout=20, clock=lambda: START, timer=timer)
    await poller._poll_company(TARGET)
    await poller._poll_company(OTHER)
    assert client.ips_calls == 1  # paused
    timer.now += 60
    await poller._poll_company(OTHER)  # the probe: this company alone is refused now
    await poller._poll_company(OTHER)
    assert client.ips_calls == 2
    secret[0] = "N3w-Pa55"  # the secret was rotated
    await poller._poll_company(TARGET)
    await poller._poll_company(OTHER)
    assert client.ips_calls == 4 and client.password == "N3w-Pa55"
    assert all(store.state.company(t).up for t in (TARGET, OTHER))  # type: ignore[union-attr]
    assert [logged(r) for r in caplog.records][1] == (  # the poller's own default: up to 30 minutes
        "IPS refused the credentials: no call until next_attempt, then one; each refusal doubles the pause up to "
        "pause_max "
        "account=main reason=authentication error=authenticationFault 10001: Invalid credentials "
        "next_attempt=2027-01-15T08:01:00+00:00 pause=60 pause_max=1800")
    assert [line for line in [logged(r) for r in caplog.records] if line.endswith("account=main")] == [
        # the probe was refused the company, not the credentials
        "IPS accepts the credentials again; polling resumes account=main",
        "the password changed; it is used from now on, and the pause after refused credentials ends account=main",
    ]
    secret[0] = "Th1rd"
    await poller._poll_company(TARGET)  # no pause to end this time
    assert [logged(r) for r in caplog.records][-1] == "the password changed; it is used from now on account=main"


async def test_a_new_password_ends_only_its_own_accounts_pause():
    secrets = {"a": "one", "b": "two"}
    store, timer = Store(), Timer()
    clients = {name: CountingClient(itertools.repeat(REFUSED)) for name in secrets}
    accounts = [Account(name, clients[name], password=lambda name=name: secrets[name])  # type: ignore[arg-type, misc]
                for name in secrets]
    poller = Poller(accounts, store, interval=60, timeout=20, clock=lambda: START, timer=timer)
    a, b = CompanyTarget("a", "1", "A"), CompanyTarget("b", "2", "B")
    await poller._poll_company(a)
    await poller._poll_company(b)
    secrets["b"] = "tw0"
    await poller._poll_company(b)  # b's pause ends: it calls at once
    await poller._poll_company(a)  # a's stays
    assert (clients["a"].ips_calls, clients["b"].ips_calls) == (1, 2)


class Held:
    """Stands for what a failed call had read (its parsed jobs)."""


class RetryingClient(FakeClient):
    """Fails as IpsClient's retry loop does: the last error kept in a local and raised again, so
    that the error's frames hold the error (a cycle) and what the attempt had read."""

    def __init__(self) -> None:
        super().__init__(iter(()))
        self.read: list[weakref.ref[Held]] = []

    async def get_active_jobs(
        self, company_handle: str, *, keep_items: bool = True, known: Mapping[bytes, ActiveJob] | None = None
    ) -> ActiveJobsResult:
        error: Exception | None = None
        for _ in range(2):
            try:
                await self._attempt()
            except IpsTimeout as exc:
                error = exc
        assert error is not None
        raise error

    async def _attempt(self) -> None:
        jobs_read = Held()
        self.read.append(weakref.ref(jobs_read))
        raise IpsTimeout("answer not complete within the deadline")


async def test_a_failed_poll_leaves_nothing_it_read_to_the_garbage_collector():
    """The exporter freezes the heap after each publish (memory.LongLivedHeap): what a failed
    poll had read, if only a cycle held it, would be frozen with the State until the next
    hourly review. Measured: 40 MB more at each poll that timed out at 10,000 jobs."""
    store = Store(max_age=180.0)
    client = RetryingClient()
    poller = Poller([Account("main", client)], store, interval=60, timeout=20,  # type: ignore[arg-type]
                    clock=SteppedClock(START, 10.0), timer=SteppedClock(100.0, 0.25))
    gc.collect()
    gc.disable()
    try:
        await poller._poll_company(TARGET)
        assert len(client.read) == 2
        assert [ref() for ref in client.read] == [None, None]  # freed by reference counting alone
    finally:
        gc.enable()
    snapshot = store.state.company(TARGET)
    assert snapshot is not None and dict(snapshot.errors_total) == {Reason.TIMEOUT: 1}
