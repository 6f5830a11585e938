"""The whole exporter in-process against the simulator over real HTTP: polling, metrics, and
every upstream failure the reliability table names, with /metrics answering through all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from servers import (
    Clock,
    all_down,
    all_up,
    by_company,
    errors,
    eventually,
    exporting,
    get,
    scrape,
    settings_for,
    simulated,
)
from support import Samples, family, logged, parse_samples, value

from exporter.app import password_reader
from exporter.client import IpsClient
from exporter.config import AccountConfig, ConfigError, JobLogsConfig, Settings
from exporter.exposition import TEXT_0_0_4, Exposition, Variant
from exporter.snapshot import CompanyTarget, Store

GOLDEN = Path(__file__).parent / "data" / "golden.prom"


# -- the metrics ------------------------------------------------------------------------------


FINISHED = ("Done", "Failed")


def count_finished(polls: list[dict[tuple[str, str, str], str]]) -> dict[tuple[str, str, str], int]:
    """What the finished counters must say after `polls`, written from the simulator's side:
    (company, job, task type) -> task state at each poll; the first poll counts nothing."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for before, now in itertools.pairwise(polls):
        for (company, job, task_type), state in now.items():
            if state in FINISHED and before.get((company, job, task_type)) not in FINISHED:
                counts[(company, task_type, state)] += 1
        for (company, job, task_type), state in before.items():
            if (company, job, task_type) not in now and state not in FINISHED:
                counts[(company, task_type, "Vanished")] += 1
    return dict(counts)


async def test_golden_exposition_after_polls_that_see_tasks_finish_fail_and_vanish():
    clock = Clock(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    seen: list[dict[tuple[str, str, str], str]] = []
    async with simulated(clock, jobs=12, seed=11) as sim:
        store = Store(max_age=float("inf"))
        # 2016-01-14-beta: the first version that lists jobs waiting for a client or coordinator.
        async with IpsClient(sim.url, "demo@example.com", "demo", api_version="2016-01-14-beta") as client:
            companies = [membership.company for membership in await client.get_company_memberships()]
            for poll in range(6):
                if poll:
                    clock.step(minutes=4)
                if poll == 2:  # an operator stops a running job: its tasks vanish unfinished
                    sim.world.advance()
                    running = next(job for job in sim.world.active_jobs()
                                   if job.status(sim.world.now).state == "Running")
                    sim.world.stop_job(running.company.handle, running.handle)
                for company in companies:
                    result = await client.get_active_jobs(company.company_handle, keep_items=False)
                    target = CompanyTarget("test", company.company_handle, company.name)
                    store.record_success(target, result.jobs, at=clock.now.timestamp(), duration=0.25)
                now = sim.world.advance()
                jobs = sim.world.active_jobs(include_waiting=True)
                seen.append({(job.company.name, job.handle, task.task_type): task.state
                             for job in jobs for task in job.status(now).tasks})
                names_of_last_poll = {(job.company.name, job.name, task.task_type): task.state
                                      for job in jobs for task in job.status(now).tasks}
    text = Exposition(store, interval=60).render(store.state, Variant(TEXT_0_0_4, False),
                                                              clock.now.timestamp()).decode()
    text = re.sub(r'python_version="[^"]*"', 'python_version="X"', text)
    text = re.sub(r'scene7_exporter_build_info\{version="[^"]*"', 'scene7_exporter_build_info{version="X"', text)
    if os.environ.get("SCENE7_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed; SCENE7_UPDATE_GOLDEN=1 rewrites tests/data/golden.prom"

    # The golden file is checked against the simulator's own account of the same six polls, so
    # that it is not merely the exporter's output written down.
    samples = {(name, tuple(sorted(labels))): v for (name, labels), v in parse_samples(text).items()}
    finished = {(labels["company"], labels["task_type"], labels["final_state"]): v
                for (name, pairs), v in samples.items() if name == "scene7_tasks_finished_total" and v
                for labels in [dict(pairs)]}
    expected = count_finished(seen)
    assert finished == expected
    assert {final_state for _, _, final_state in expected} == {"Done", "Failed", "Vanished"}
    states = {(labels["company"], labels["job_name"], labels["task_type"]): labels["state"]
              for (name, pairs), v in samples.items() if name == "scene7_task_state" and v == 1
              for labels in [dict(pairs)]}
    assert states == names_of_last_poll
    assert set(states.values()) == {"Unknown", "New", "Processing", "Stopping", "Done", "Failed"}


async def test_scrape_serves_every_company_and_answers_every_format():
    async with simulated() as sim, exporting(settings_for(sim.url)) as exporter:
        samples = await eventually(all_up, exporter)
        assert set(by_company(samples, "scene7_up")) == {c.name for c in sim.world.companies}
        plain = await get(exporter, **{"Accept-Encoding": "identity"})
        assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "content-encoding" not in plain.headers
        # The process metrics of every Go exporter, read at the scrape, after the cached bytes.
        process = {line.split(" ")[0] for line in plain.text.splitlines() if line.startswith("process_")}
        assert process == {"process_virtual_memory_bytes", "process_resident_memory_bytes",
                           "process_start_time_seconds", "process_cpu_seconds_total", "process_open_fds",
                           "process_max_fds"}
        check = subprocess.run(["promtool", "check", "metrics"], input=plain.content, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr
        om = await get(exporter, Accept="application/openmetrics-text; version=1.0.0", **{"Accept-Encoding": "gzip"})
        assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.headers["content-encoding"] == "gzip" and om.text.endswith("# EOF\n")
        only = await get(exporter, "/metrics?name[]=scene7_up")
        assert {line.split("{")[0] for line in only.text.splitlines() if not line.startswith("#")} == {"scene7_up"}
        assert (await get(exporter, "/healthz")).status_code == 200
        assert (await get(exporter, "/readyz")).status_code == 200
        landing = await get(exporter, "/")
        assert "Bits &amp; &quot;Bytes&quot; &lt;EU&gt;" in landing.text and 'href="./metrics"' in landing.text
        assert (await get(exporter, "/nope")).status_code == 404


async def test_a_job_that_ends_disappears_from_the_next_scrape():
    clock = Clock(datetime.now(UTC))
    async with simulated(clock, time_scale=30.0) as sim, exporting(settings_for(sim.url)) as exporter:
        before = await eventually(all_up, exporter)
        names_before = {dict(k[1])["job_name"] for k in before if k[0] == "scene7_job_info"}
        polls = sum(by_company(before, "scene7_polls_total").values())
        clock.step(hours=6)  # every job of then has finished and left by now
        companies = len(sim.world.companies)
        # Two polls of every company later, the (frozen) world has been read since the step.
        after = await eventually(lambda s: sum(by_company(s, "scene7_polls_total").values()) >= polls + 2 * companies
                                 and all_up(s), exporter)
        # 2014-04-03 has no includeWaitingJobs: IPS lists the jobs that are not waiting.
        names_now = {job.name for job in sim.world.active_jobs(include_waiting=False)}
        assert {dict(k[1])["job_name"] for k in after if k[0] == "scene7_job_info"} == names_now
        names_after = {dict(k[1])["job_name"] for k in after if k[0] == "scene7_job_info"}
        assert names_before - names_after, "no job ended"
        gone = next(iter(names_before - names_after))
        assert not any(dict(k[1]).get("job_name") == gone for k in after)


async def test_the_configured_max_series_guards_the_exposition():
    async with simulated(companies=1) as sim:
        settings = settings_for(sim.url)
        settings = settings.model_copy(update={"poll": settings.poll.model_copy(update={"max_series": 10})})
        async with exporting(settings) as exporter:
            samples = await eventually(
                lambda s: all_up(s) and (value(s, "scene7_series_dropped_total") or 0) > 0, exporter)
    names = {name for name, _ in samples}
    assert "scene7_task_items" not in names and "scene7_job_info" not in names
    assert sum(by_company(samples, "scene7_active_jobs").values()) > 0


# -- failures ---------------------------------------------------------------------------------


async def test_ips_unreachable_gives_connection_and_the_endpoint_keeps_serving():
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        async with exporting(settings_for(f"http://127.0.0.1:{port}/x")) as exporter:
            samples = await eventually(lambda s: errors(s, "connection") >= 2, exporter)
            assert by_company(samples, "scene7_up") == {"test": 0}
            assert (await get(exporter, "/healthz")).status_code == 200


async def test_dns_failure_is_a_connection_error():
    async with exporting(settings_for("http://ips.invalid/scene7/services/IpsApiService", interval=1.0,
                                      timeout=0.8)) as exporter:
        await eventually(lambda s: errors(s, "connection") >= 1, exporter)


async def test_slow_ips_is_cancelled_at_the_timeout_and_never_stacked():
    # The interval leaves the poll (0.4 s, cancelled at 1.4 s at worst) room enough that a loaded
    # machine cannot make the next one find it still running.
    async with simulated() as sim, exporting(settings_for(sim.url, interval=2.0, timeout=0.4)) as exporter:
        await eventually(all_up, exporter)
        sim.faults.set(kind="latency", latency=5.0, operation="getActiveJobs")
        samples = await eventually(lambda s: errors(s, "timeout") >= 6, exporter)
        assert errors(samples, "skipped") == 0
        durations = by_company(samples, "scene7_poll_duration_seconds")
        # Ended by the client's deadline (0.4 s), not by the 5 s answer nor the backstop at 1.4 s;
        # no tighter window, so that a loaded machine cannot fail it.
        assert all(0.4 <= d < 1.4 for d in durations.values()), durations
        assert all_down(samples)
        sim.faults.clear()
        await eventually(all_up, exporter)


@pytest.mark.parametrize("plan", [{"kind": "http_status", "status": 503}, {"kind": "http_status", "status": 500},
                                  {"kind": "reset"}])
async def test_http_errors_are_retried_within_the_deadline(plan):
    async with simulated() as sim, exporting(settings_for(sim.url, interval=2.0, timeout=1.8)) as exporter:
        await eventually(all_up, exporter)
        polls = sum(by_company(await scrape(exporter), "scene7_polls_total").values())
        sim.faults.set(operation="getActiveJobs", **plan)
        reason = "connection" if plan["kind"] == "reset" else "http"
        samples = await eventually(lambda s: errors(s, reason) >= 3, exporter, timeout=15)
        polled = sum(by_company(samples, "scene7_polls_total").values()) - polls
        assert sim.faults.injected > polled, "no request was retried"


def without_job_logs(settings: Settings) -> Settings:
    """For tests of the active-jobs polls: the in-process simulator answering the job-log polls
    of 20 companies shares the test's event loop, and those calls are not the ones counted."""
    return settings.model_copy(update={"job_logs": JobLogsConfig(enabled=False)})


async def test_refused_credentials_pause_the_whole_account_instead_of_locking_it_out(caplog):
    caplog.set_level(logging.INFO, logger="exporter")
    async with simulated(companies=20, jobs=20) as sim:
        settings = without_job_logs(settings_for(sim.url, interval=1.0, timeout=0.8))
        settings = settings.model_copy(update={"poll": settings.poll.model_copy(update={"auth_backoff_max": 2.0})})
        async with exporting(settings) as exporter:
            await eventually(lambda s: all_up(s) and len(by_company(s, "scene7_up")) == 20, exporter)
            sim.faults.set(kind="authentication")
            # 20 companies polled every second would send IPS 120 refused logins in 6 s; paused,
            # the account sends what was under way when IPS first refused, then one probe after
            # 1, 2, 2 ... s (a probe that times out says nothing and is tried again).
            def refused(samples: Samples) -> dict[str, float]:
                return {dict(labels)["company"]: v for labels, v in family(samples, "scene7_poll_errors_total").items()
                        if dict(labels)["reason"] == "authentication"}

            before = await eventually(lambda s: all_down(s) and len(refused(s)) == 20 and all(refused(s).values()),
                                      exporter)
            sent = sim.faults.injected
            await asyncio.sleep(6)
            samples = await scrape(exporter)
            # Meanwhile every company went on saying `authentication` at each interval, without
            # a call: only the probes reached IPS.
            assert sim.faults.injected <= 30 and sim.faults.injected - sent <= 10, (sent, sim.faults.injected)
            assert all_down(samples)
            assert errors(samples, "authentication") - errors(before, "authentication") >= 40
            sim.faults.clear()
            # Recovery, not its speed, is the point: 20 companies polled every second by an
            # in-process simulator on the test's own loop can take longer than 10 s on a loaded machine.
            await eventually(all_up, exporter, timeout=30)
    lines = [logged(r) for r in caplog.records]
    pauses = [line for line in lines if line.startswith("IPS refused the credentials") and "account=test" in line]
    assert 3 <= len(pauses) <= 7, pauses  # one line per pause, with the time of the next attempt
    assert "IPS accepts the credentials again; polling resumes account=test" in lines


async def test_a_rotated_password_file_is_read_again_and_ends_the_pause(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="exporter")
    secret = tmp_path / "ips_password"
    secret.write_text("wrong\n")
    async with simulated() as sim:
        settings = settings_for(sim.url, interval=1.0, timeout=0.8)
        account = settings.accounts[0].model_copy(update={"password": None, "password_file": secret})
        settings = settings.model_copy(update={"accounts": [account], "poll": settings.poll.model_copy(
            update={"auth_backoff_max": 3600.0})})
        async with exporting(settings) as exporter:
            await eventually(lambda s: errors(s, "authentication") >= 2, exporter)  # paused for 1 s, then 2 s ...
            secret.write_text("demo\n")  # the secret is rotated: no restart, no waiting for the backoff
            samples = await eventually(all_up, exporter)
            assert len(by_company(samples, "scene7_up")) == len(sim.world.companies)
    assert ("the password changed; it is used from now on, and the pause after refused "
            "credentials ends account=test") in [logged(r) for r in caplog.records]
    assert "demo" not in caplog.text.replace("demo@example.com", "")


def test_the_password_file_read_again_before_each_call_stays_capped(tmp_path):
    secret = tmp_path / "ips_password"
    secret.write_text("demo\n")
    read = password_reader(AccountConfig(user="u", password_file=secret))
    assert read is not None and read() == "demo"
    secret.write_bytes(b"x" * 4097)  # the wrong file swapped in: not sent to IPS
    assert read() is None
    secret.write_text("demo\n")
    assert read() == "demo"


async def test_authorization_fault_on_one_company_leaves_the_others_up():
    async with simulated() as sim, exporting(settings_for(sim.url)) as exporter:
        await eventually(all_up, exporter)
        victim = sim.world.companies[0]
        sim.faults.set(kind="authorization", company=victim.handle)
        samples = await eventually(lambda s: by_company(s, "scene7_up").get(victim.name) == 0
                                   and errors(s, "authorization") >= 2, exporter)
        ups = by_company(samples, "scene7_up")
        assert all(v == 1 for name, v in ups.items() if name != victim.name)
        jobs = by_company(samples, "scene7_active_jobs")
        assert all(name in jobs for name in ups if name != victim.name)


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        ({"kind": "malformed"}, "malformed"),
        ({"kind": "truncated"}, "malformed"),
        ({"kind": "entity_bomb"}, "malformed"),
        ({"kind": "xxe"}, "malformed"),
        ({"kind": "html_200"}, "malformed"),
        ({"kind": "api"}, "api_fault"),
        ({"kind": "oversized", "size": 50_000_000}, "oversized"),
    ],
)
async def test_bad_answers_give_their_reason_and_memory_stays_bounded(plan, reason):
    # The simulator shares this process: on a loaded machine, writing 2 MB of a big answer can
    # take longer than a tight deadline, which would make the reason `timeout`.
    timeout = 2.5 if reason == "oversized" else 0.9
    async with simulated() as sim:
        settings = settings_for(sim.url, interval=timeout + 0.1, timeout=timeout, max_response_size=2_000_000)
        async with exporting(settings) as exporter:
            await eventually(all_up, exporter)
            sim.faults.set(operation="getActiveJobs", **plan)
            await eventually(lambda s: errors(s, reason) >= 2 and all_down(s), exporter, timeout=30)
            sim.faults.clear()
            await eventually(all_up, exporter)


async def test_one_invalid_record_is_skipped_and_the_rest_exported():
    async with simulated(companies=1) as sim, exporting(settings_for(sim.url)) as exporter:
        before = await eventually(all_up, exporter)
        jobs_before = sum(by_company(before, "scene7_active_jobs").values())
        sim.faults.set(kind="invalid_record")
        samples = await eventually(lambda s: sum(by_company(s, "scene7_invalid_records_total").values()) >= 1,
                                   exporter)
        assert all_up(samples)
        assert sum(by_company(samples, "scene7_active_jobs").values()) >= min(jobs_before, 2) - 1


async def test_recovery_brings_series_back_without_restart():
    async with simulated() as sim, exporting(settings_for(sim.url, max_age=1.0)) as exporter:
        await eventually(all_up, exporter)
        sim.faults.set(kind="http_status", status=502)
        stale = await eventually(lambda s: all_down(s) and not by_company(s, "scene7_active_jobs"), exporter)
        assert not any(k[0] == "scene7_task_items" for k in stale), "stale per-job series were served"
        assert by_company(stale, "scene7_polls_total")  # health series stay
        sim.faults.clear()
        back = await eventually(lambda s: all_up(s) and bool(by_company(s, "scene7_active_jobs")), exporter)
        assert any(k[0] == "scene7_task_items" for k in back)


async def test_concurrent_scrapes_never_see_half_a_poll():
    async with simulated(time_scale=600.0, jobs=20) as sim, \
            exporting(settings_for(sim.url, interval=0.3, timeout=0.25)) as exporter:
        await eventually(all_up, exporter)
        checked = 0

        async def scraper() -> None:
            nonlocal checked
            loop = asyncio.get_running_loop()
            end = loop.time() + 3.0
            async with httpx.AsyncClient() as client:
                while loop.time() < end:
                    response = await client.get(f"http://127.0.0.1:{exporter.port}/metrics")
                    samples = parse_samples(response.text)
                    for company, active in by_company(samples, "scene7_active_jobs").items():
                        infos = [k for k in samples if k[0] == "scene7_job_info" and dict(k[1])["company"] == company]
                        ratios = [k for k in samples if k[0] == "scene7_task_progress_ratio"
                                  and dict(k[1])["company"] == company]
                        tasks = sum(v for k, v in samples.items() if k[0] == "scene7_tasks"
                                    and dict(k[1])["company"] == company)
                        assert active == len(infos) and tasks == len(ratios), company
                    checked += 1

        polls_before = sum(by_company(await scrape(exporter), "scene7_polls_total").values())
        await asyncio.gather(*(scraper() for _ in range(8)))
        polls = sum(by_company(await scrape(exporter), "scene7_polls_total").values()) - polls_before
        assert checked > 20 and polls >= 3 * len(sim.world.companies)


async def test_scrapes_never_call_ips():
    # The next poll is due at least 27 s after the first (30 s less jitter), long after the test:
    # every IPS call seen in between would be a scrape's.
    async with simulated() as sim, exporting(
        without_job_logs(settings_for(sim.url, interval=30, timeout=2))
    ) as exporter:
        await eventually(all_up, exporter)
        calls = 0
        answer = sim.simulator.responder.answer

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return answer(*args, **kwargs)

        sim.simulator.responder.answer = counted  # type: ignore[method-assign]

        async def scraper() -> int:
            async with httpx.AsyncClient(timeout=30) as client:
                answered = 0
                for _ in range(10):
                    answered += (await client.get(f"http://127.0.0.1:{exporter.port}/metrics")).status_code == 200
                return answered

        answered = await asyncio.gather(*(scraper() for _ in range(20)))
        assert sum(answered) == 200
        assert calls == 0
        # The counting is live: a call the exporter does make is seen.
        async with IpsClient(sim.url, "demo@example.com", "demo") as client:
            await client.get_company_memberships()
        assert calls == 1


async def test_readyz_waits_for_the_first_poll_attempt():
    async with simulated() as sim:
        sim.faults.set(kind="latency", latency=3.0)
        async with exporting(settings_for(sim.url, interval=2.0, timeout=1.5)) as exporter:
            assert (await get(exporter, "/readyz")).status_code == 503
            assert (await get(exporter, "/healthz")).status_code == 200
            await eventually(lambda s: errors(s, "timeout") >= 1, exporter)
            assert (await get(exporter, "/readyz")).status_code == 200


async def test_explicit_companies_by_handle_or_name_and_unknown_ones():
    async with simulated() as sim:
        first, second = sim.world.companies[0], sim.world.companies[1]
        settings = settings_for(sim.url, companies=[first.handle, second.name, "no-such-company"])
        async with exporting(settings) as exporter:
            samples = await eventually(all_up, exporter)
            assert set(by_company(samples, "scene7_up")) == {first.name, second.name}


async def test_the_password_never_appears_on_any_page(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "Very-Secret-Pa55word"
    async with simulated(password=secret) as sim:
        settings = settings_for(sim.url).model_copy(update={"accounts": [AccountConfig(
            name="test", endpoint=sim.url, user="demo@example.com", password=secret)]})  # type: ignore[arg-type]
        async with exporting(settings) as exporter:
            await eventually(all_up, exporter)
            sim.faults.set(kind="authentication")
            await eventually(lambda s: errors(s, "authentication") >= 1, exporter)
            pages = [(await get(exporter, path)).text
                     for path in ("/", "/metrics", "/healthz", "/readyz", "/api/v1/status", "/api/v1/jobs")]
            await exporter.reload(settings)  # ends the pause the refusal began
            # IPS echoing the request in a fault: the password is masked wherever the text goes.
            sim.faults.set(kind="api", reason=f"Invalid request XML: <password>{secret}</password> ({secret})")
            await eventually(lambda s: errors(s, "api_fault") >= 1, exporter)
            landing = (await get(exporter, "/")).text
            pages += [landing, (await get(exporter, "/api/v1/status")).text]
    assert "Invalid request XML: &lt;password&gt;***&lt;/password&gt; (***)" in landing
    assert not any(secret in text for text in [*pages, caplog.text, repr(settings)])


# -- reloading the configuration ----------------------------------------------------------------


async def test_reload_keeps_the_companies_that_stay_and_drops_the_others(tmp_path):
    async with simulated() as sim:
        settings = settings_for(sim.url)
        async with exporting(settings) as exporter:
            before = await eventually(lambda s: all_up(s) and min(by_company(s, "scene7_polls_total").values()) >= 2,
                                      exporter)
            polls_before = by_company(before, "scene7_polls_total")
            kept = sim.world.companies[0]

            # The same account, now limited to one company, polled more often.
            narrowed = settings.model_copy(update={
                "accounts": [settings.accounts[0].model_copy(update={"companies": [kept.handle]})],
                "poll": settings.poll.model_copy(update={"interval": 0.3}),
                "job_logs": settings.job_logs.model_copy(update={"interval": 120.0}),
            })
            await exporter.reload(narrowed)
            # The account is not shown as its placeholder (a company without a handle) meanwhile.
            assert all(company.target.handle for company in exporter.store.state.companies)
            # The counters of the company that stayed go on from where they were, never back.
            counted = [polls_before[kept.name]]

            def narrowed_and_counting(samples: Samples) -> bool:
                counted.append(by_company(samples, "scene7_polls_total")[kept.name])
                return set(by_company(samples, "scene7_up")) == {kept.name} and counted[-1] > counted[0] + 2

            await eventually(narrowed_and_counting, exporter)
            assert counted == sorted(counted), counted
            # HELP names the intervals now in force.
            text = (await get(exporter)).text
            assert "# HELP scene7_up " in text and "poll of IPS every 0.3s." in text
            assert "poll of IPS job logs every 120s." in text

            # A configuration that cannot be used changes nothing.
            broken = narrowed.model_copy(update={"accounts": [narrowed.accounts[0].model_copy(
                update={"password": None, "password_file": Path("/nonexistent/password")})]})
            poller = exporter.poller
            with pytest.raises(ConfigError):
                await exporter.reload(broken)
            assert exporter.poller is poller and exporter.settings is narrowed

            # The web config is read again too: basic auth from now on, probes still open.
            web = tmp_path / "web.yml"
            hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(4)).decode()
            web.write_text(f"basic_auth_users:\n  prom: {hashed}\n")
            guarded = narrowed.model_copy(update={"web": narrowed.web.model_copy(update={"config_file": web})})
            await exporter.reload(guarded)
            assert (await get(exporter)).status_code == 401
            assert (await get(exporter, "/healthz")).status_code == 200
            async with httpx.AsyncClient(auth=("prom", "scrape-me"), timeout=10) as client:
                assert (await client.get(f"http://127.0.0.1:{exporter.port}/metrics")).status_code == 200
            await exporter.reload(narrowed)
            assert (await get(exporter)).status_code == 200

            # Another account: the old one's companies go at once, the new one's come.
            renamed = narrowed.model_copy(update={"accounts": [narrowed.accounts[0].model_copy(
                update={"name": "other", "companies": []})]})
            await exporter.reload(renamed)
            assert {company.target.account for company in exporter.store.state.companies} == {"other"}
            await eventually(lambda s: set(by_company(s, "scene7_up")) == {c.name for c in sim.world.companies}
                             and all_up(s), exporter)
            assert (await get(exporter, "/readyz")).status_code == 200
