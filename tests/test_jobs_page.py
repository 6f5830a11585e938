"""The jobs page and its JSON API: what is stuck or failing first, ETAs from measured rates,
server-side filters and pages, every IPS name shown as text, and the API as its schema says."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import bcrypt
import httpx
import jsonschema
import pytest
from lxml import html as lxml_html
from servers import all_up, eventually, exporting, get, settings_for, simulated
from test_parse import ENVELOPE, job_xml

from exporter import jobindex, jobsview, page
from exporter.config import WebSection
from exporter.errors import Reason
from exporter.jobindex import JobIndexer
from exporter.jobsview import MAX_PER_PAGE, STUCK_AFTER_SECONDS, BadQuery, JobsView, Query
from exporter.models import ActiveJob
from exporter.parse import ResponseReader, check_job_array
from exporter.rates import TIME_CONSTANT_SECONDS, Measure, eta_seconds, next_measure
from exporter.snapshot import NO_GUARD, CompanyTarget, Store

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "api-v1.schema.json").read_text())
UPDATED = datetime(2026, 11, 26, 6, 0, tzinfo=UTC).timestamp()  # lastProgressUpdate in job_xml
ACME = CompanyTarget("demo", "c|1", "Acme")
BITS = CompanyTarget("demo", "c|2", 'Bits & "Bytes" <EU>')


def parsed(*xml: str) -> tuple[ActiveJob, ...]:
    reader = ResponseReader("getActiveJobs", keep_items=False)
    reader.feed(ENVELOPE.format("<jobArray>" + "".join(xml) + "</jobArray>").encode())
    check_job_array(reader.close())
    return reader.result().jobs


def job(name: str, *, processed: int = 1, updated: float = UPDATED, start: float | None = None,
        task_state: str = "Processing", pending: int = 3, job_type: str = "UrlUpload") -> ActiveJob:
    base = parsed(job_xml(escape(name), task_state=task_state, pending=str(pending)).replace(
        "<type>UrlUpload</type>", f"<type>{job_type}</type>"))[0]
    task = base.task_progress_array[0].model_copy(update={
        "num_processed": processed, "last_progress_update": datetime.fromtimestamp(updated, UTC)})
    update: dict[str, object] = {"task_progress_array": (task,)}
    if start is not None:
        update["start_date"] = datetime.fromtimestamp(start, UTC)
    return base.model_copy(update=update)


class World:
    """A store, the jobs index of its State, and a view of both at a clock the test moves. After
    each poll the index is built, as when someone has the page open."""

    def __init__(self, now: float = UPDATED + 60) -> None:
        self.now = now
        self.store = Store()
        self.index = JobIndexer(lambda: self.store.state)
        self.view = JobsView(lambda: self.store.state, self.index, clock=lambda: self.now,
                             next_poll=lambda target: self.now + 30 if target == ACME else None)

    def measures(self, target: CompanyTarget) -> dict:
        return dict(self.index.current.measures.get(target, {}))

    def poll(self, target: CompanyTarget, *jobs: ActiveJob, at: float | None = None, viewed: bool = True) -> None:
        self.store.record_success(target, jobs, at=self.now if at is None else at, duration=0.1)
        if viewed:
            self.index.now()

    async def page(self, **params: str) -> dict:
        answer = (await self.view.page(Query.from_params({k: [v] for k, v in params.items()}))).as_json()
        jsonschema.validate(answer, SCHEMA["$defs"]["jobs"] | {"$defs": SCHEMA["$defs"]})
        return answer


# -- rates and ETA -------------------------------------------------------------------------------


def test_a_rate_is_measured_from_the_second_poll_and_smoothed_after():
    world = World()
    world.poll(ACME, job("a", processed=10), at=1000.0)
    assert world.measures(ACME)[("j|a", "com.scene7.upload.UploadAsyncTaskMonitor")].rate is None
    world.poll(ACME, job("a", processed=70), at=1060.0)
    key = ("j|a", "com.scene7.upload.UploadAsyncTaskMonitor")
    assert world.measures(ACME)[key].rate == pytest.approx(1.0)  # 60 items in 60 s
    world.poll(ACME, job("a", processed=70), at=1120.0)  # no progress for a poll: the rate falls, not to 0
    weight = 1 - 2.718281828459045 ** (-60 / TIME_CONSTANT_SECONDS)
    measure = world.measures(ACME)[key]
    assert measure.rate == pytest.approx(1.0 - weight) and (measure.at, measure.processed) == (1120.0, 70)


def test_a_count_that_falls_starts_the_measure_again_and_a_task_gone_is_forgotten():
    world = World()
    world.poll(ACME, job("a", processed=10), job("b"), at=1000.0)
    world.poll(ACME, job("a", processed=5), job("b"), at=1060.0)
    assert world.measures(ACME)[("j|a", "com.scene7.upload.UploadAsyncTaskMonitor")] == Measure(1060.0, 5)
    world.poll(ACME, job("b"), at=1120.0)
    assert [key[0] for key in world.measures(ACME)] == ["j|b"]


def test_a_failed_poll_or_a_job_log_change_measures_nothing():
    world = World()
    world.poll(ACME, job("a", processed=10), at=1000.0)
    world.store.record_failure(ACME, Reason.TIMEOUT, "slow", at=1060.0, duration=4.0)
    world.poll(ACME, job("a", processed=70), at=1120.0)
    assert world.measures(ACME)[("j|a", "com.scene7.upload.UploadAsyncTaskMonitor")].rate == pytest.approx(0.5)


@pytest.mark.parametrize(("measure", "remaining", "eta"), [
    (Measure(0, 0, 2.0), 100, 50.0), (Measure(0, 0, 0.0), 100, None), (Measure(0, 0, None), 100, None),
    (None, 100, None), (Measure(0, 0, 2.0), 0, 0.0), (Measure(0, 0, -1.0), 10, None), (None, 0, 0.0),
    (Measure(0, 0, 2.0), 1, 0.5),
])
def test_an_eta_is_given_only_for_a_measured_rate_above_zero(measure, remaining, eta):
    assert eta_seconds(measure, remaining) == eta


async def test_the_api_gives_a_task_its_rate_and_eta_and_none_to_a_stuck_one():
    world = World(now=UPDATED + 60)
    world.poll(ACME, job("moving", processed=10, pending=100), job("slow", processed=3), at=UPDATED - 60)
    world.poll(ACME, job("moving", processed=70, pending=100), job("slow", processed=3), at=UPDATED)
    tasks = {j["name"]: j["tasks"][0] for j in (await world.page())["jobs"]}
    assert tasks["moving"]["items_per_second"] == pytest.approx(1.0)  # 60 items in 60 s
    assert tasks["moving"]["eta_seconds"] == pytest.approx(100 + 1)  # pending and processing, at 1 a second
    assert tasks["slow"]["items_per_second"] == 0 and tasks["slow"]["eta_seconds"] is None
    world.now = UPDATED + STUCK_AFTER_SECONDS + 10  # stuck is judged every STUCK_STEP_SECONDS (5)
    stuck = {j["name"]: j["tasks"][0] for j in (await world.page())["jobs"]}["moving"]
    assert stuck["stuck"] and stuck["eta_seconds"] is None and stuck["items_per_second"] == pytest.approx(1.0)


# -- order, filters, pages -----------------------------------------------------------------------


async def test_stuck_jobs_come_first_longest_without_progress_first_then_failed_then_the_oldest():
    world = World(now=UPDATED + STUCK_AFTER_SECONDS + 600)
    world.poll(ACME,
               job("young", start=UPDATED - 100, updated=world.now - 10),
               job("old", start=UPDATED - 5000, updated=world.now - 10),
               job("stuck-recently", updated=world.now - STUCK_AFTER_SECONDS - 5),
               job("failed", task_state="Failed", updated=world.now - 10),
               job("stuck-long", updated=world.now - STUCK_AFTER_SECONDS - 500),
               job("new-not-stuck", task_state="New", start=UPDATED - 3000,
                   updated=world.now - STUCK_AFTER_SECONDS - 900))
    answer = await world.page()
    assert [j["name"] for j in answer["jobs"]] == [
        "stuck-long", "stuck-recently", "failed", "old", "new-not-stuck", "young"]
    assert (answer["stuck"], answer["failed"], answer["matching"]) == (2, 1, 6)
    assert [j["name"] for j in (await world.page(attention="1"))["jobs"]] == ["stuck-long", "stuck-recently", "failed"]


async def test_a_task_becomes_stuck_as_time_passes_without_a_poll():
    world = World(now=UPDATED + 60)
    world.poll(ACME, job("a", start=UPDATED - 10), job("b", start=UPDATED - 20, updated=UPDATED + 50))
    assert [j["name"] for j in (await world.page())["jobs"]] == ["b", "a"] and (await world.page())["stuck"] == 0
    world.now = UPDATED + STUCK_AFTER_SECONDS + 30
    assert [j["name"] for j in (await world.page())["jobs"]] == ["a", "b"] and (await world.page())["stuck"] == 1


async def test_filters_combine_and_pages_split_what_matches():
    world = World()
    world.poll(ACME, *(job(f"upload-{i}", start=UPDATED - 1000 + i) for i in range(7)),
               job("publish-x", job_type="ImageServingPublishJob", start=UPDATED - 2000))
    world.poll(BITS, job("Upload-bits", start=UPDATED - 3000))
    assert (await world.page())["matching"] == 9
    publishes = await world.page(company="Acme", type="ImageServingPublishJob")
    assert [j["name"] for j in publishes["jobs"]] == ["publish-x"]
    assert (await world.page(company='Bits & "Bytes" <EU>'))["jobs"][0]["company"] == 'Bits & "Bytes" <EU>'
    assert (await world.page(q="UPLOAD"))["matching"] == 8 and (await world.page(q="bits"))["matching"] == 1
    assert (await world.page(state="Running"))["matching"] == 9 and (await world.page(state="Done"))["matching"] == 0
    first = await world.page(company="Acme", q="upload-", per_page="4")
    second = await world.page(company="Acme", q="upload-", per_page="4", page="2")
    assert (first["pages"], first["matching"]) == (2, 7)
    assert [j["name"] for j in first["jobs"] + second["jobs"]] == [f"upload-{i}" for i in range(7)]
    assert (await world.page(page="9"))["jobs"] == []


@pytest.mark.parametrize("params", [
    {"page": ["0"]}, {"page": ["x"]}, {"per_page": [str(MAX_PER_PAGE + 1)]}, {"per_page": ["-1"]},
    {"q": ["x" * 201]}, {"attention": ["maybe"]},
])
def test_a_query_the_api_does_not_take_is_refused_with_a_reason(params):
    with pytest.raises(BadQuery):
        Query.from_params(params)


async def test_the_status_tells_each_companys_poll_health():
    world = World()
    world.store.track(BITS)
    world.poll(ACME, job("a"), at=world.now - 5)
    world.store.record_failure(ACME, Reason.AUTHENTICATION, "authenticationFault 10001: bad", at=world.now,
                               duration=0.2)
    status = world.view.status()
    jsonschema.validate(status, SCHEMA["$defs"]["status"] | {"$defs": SCHEMA["$defs"]})
    acme, bits = status["companies"]
    assert (acme["up"], acme["polled"], acme["active_jobs"]) == (False, True, 1)
    assert acme["last_error"] == {"reason": "authentication", "message": "authenticationFault 10001: bad"}
    assert acme["next_poll"] is not None and acme["last_success"] < acme["last_attempt"]
    assert (bits["polled"], bits["last_error"], bits["next_poll"]) == (False, None, None)


# -- the page ------------------------------------------------------------------------------------

HOSTILE = [
    "<script>window.injected=1</script>", '"><img src=x onerror="window.injected=2">', "Tom & Jerry's \"best\"",
    "\u202etxt.exe", "x" * 10_000, "",
]


async def rendered(world: World, **params: str) -> str:
    query = Query.from_params({k: [v] for k, v in params.items()})
    return page.render(await world.view.page(query), world.view.status(), world.view.filters())


async def test_every_name_from_ips_is_shown_as_the_text_it_is():
    world = World()
    target = CompanyTarget("demo", "c|9", "<b>evil</b> & co")
    world.poll(target, *(job(name, start=UPDATED - i) for i, name in enumerate(HOSTILE)))
    text = await rendered(world)
    tree = lxml_html.fromstring(text)
    assert not tree.xpath("//script[not(@src)]") and not tree.xpath("//img") and not tree.xpath("//b")
    assert not tree.xpath("//@onerror") and not tree.xpath("//@style") and not tree.xpath("//style")
    names = [cell.text_content().removeprefix("stuck ").strip() for cell in tree.xpath("//tbody[@id='jobs']/tr/th")]
    shown = {name if len(name) <= page.MAX_SHOWN else name[: page.MAX_SHOWN - 1] + "…" for name in HOSTILE}
    assert set(names) == shown
    long = tree.xpath("//tbody[@id='jobs']/tr/th/bdi[@title]")
    assert [b.get("title") for b in long] == ["x" * 10_000]  # the whole name, as an attribute's text
    assert tree.xpath("//table[@class='companies']//th/bdi")[0].text == "<b>evil</b> & co"


async def test_the_page_marks_stuck_and_failed_rows_and_shows_progress_as_a_bar():
    world = World(now=UPDATED + STUCK_AFTER_SECONDS + 60)
    world.poll(ACME, job("stuck"), job("failed", task_state="Failed", updated=world.now),
               job("fine", updated=world.now))
    tree = lxml_html.fromstring(await rendered(world))
    rows = tree.xpath("//tbody[@id='jobs']/tr")
    assert [row.get("class") for row in rows] == ["stuck", "failed", None]
    assert [row.xpath("string(th)").split()[0] for row in rows] == ["stuck", "failed", "fine"]
    bars = tree.xpath("//progress")
    assert len(bars) == 3 and all(bar.get("max") == "1" and bar.get("aria-label") for bar in bars)
    assert bars[0].get("value") == "0.2000"
    assert "no ETA" in rows[0].text_content() and "rate not measured" in rows[2].text_content()


async def test_the_page_works_without_javascript_filters_and_pages_are_links_and_a_form():
    world = World()
    world.poll(ACME, *(job(f"j{i}", start=UPDATED - i) for i in range(60)))
    tree = lxml_html.fromstring(await rendered(world, q="j", page="1"))
    form = tree.xpath("//form[@class='filters']")[0]
    assert form.get("method") == "get" and form.get("action") == "./"
    assert {e.get("name") for e in form.xpath(".//select|.//input")} == {"company", "state", "type", "q", "attention"}
    assert tree.xpath("//a[@rel='next']/@href") == ["./?q=j&page=2"]
    assert tree.xpath("//link[@rel='stylesheet']/@href") == ["static/jobs.css"]
    assert tree.xpath("//script/@src") == ["static/jobs.js"]
    # Relative links only: the page works behind a proxy at any prefix.
    assert all(not href.startswith(("/", "http")) for href in tree.xpath("//a/@href|//link/@href|//script/@src"))


# -- over HTTP, against the simulator --------------------------------------------------------------


async def test_the_exporter_serves_the_page_the_api_and_the_assets_from_the_store():
    async with simulated(jobs=12) as sim, exporting(settings_for(sim.url)) as exporter:
        await eventually(all_up, exporter)
        status = await get(exporter, "/api/v1/status")
        jsonschema.validate(status.json(), SCHEMA)
        assert {c["company"] for c in status.json()["companies"]} == {c.name for c in sim.world.companies}
        answer = await get(exporter, "/api/v1/jobs?per_page=500")
        assert answer.headers["content-type"] == "application/json"
        jsonschema.validate(answer.json(), SCHEMA)
        expected = {job.handle for company in sim.world.companies for job in sim.world.active_jobs(company.handle)}
        assert answer.json()["jobs"] and {j["job_handle"] for j in answer.json()["jobs"]} <= expected
        hostile = 'Bits & "Bytes" <EU>'
        only = await get(exporter, "/api/v1/jobs?" + urlencode({"company": hostile}))
        assert {j["company"] for j in only.json()["jobs"]} == {hostile}
        bad = await get(exporter, "/api/v1/jobs?per_page=0")
        assert bad.status_code == 400 and "per_page" in bad.json()["error"]
        landing = await get(exporter, "/")
        assert landing.headers["content-security-policy"] == page.CSP
        assert landing.headers["x-content-type-options"] == "nosniff"
        assert "Bits &amp; &quot;Bytes&quot; &lt;EU&gt;" in landing.text
        css = await get(exporter, "/static/jobs.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await get(exporter, "/static/../web.py")).status_code == 404


async def test_behind_a_route_prefix_every_route_moves_under_it_and_the_probes_stay_open(tmp_path):
    hashed = bcrypt.hashpw(b"look", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  oncall: {hashed}\n")
    async with simulated(jobs=5) as sim:
        settings = settings_for(sim.url)
        settings = settings.model_copy(update={"web": WebSection(
            listen_address=settings.web.listen_address, route_prefix="/scene7/", config_file=web)})
        async with exporting(settings) as exporter, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{exporter.port}", timeout=10) as anonymous, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{exporter.port}", auth=("oncall", "look"), timeout=10) as client:
            assert settings.web.route_prefix == "/scene7"
            for path in ("/scene7/", "/scene7/api/v1/jobs", "/scene7/api/v1/status", "/scene7/metrics",
                         "/scene7/static/jobs.js"):
                assert (await anonymous.get(path)).status_code == 401, path  # the page is guarded as /metrics
                assert (await client.get(path)).status_code == 200, path
            assert (await anonymous.get("/scene7/healthz")).status_code == 200
            for path in ("/metrics", "/api/v1/jobs", "/scene7x/metrics", "/healthz"):
                assert (await client.get(path)).status_code == 404, path
            for path in ("/", "/scene7"):
                moved = await client.get(path)
                assert (moved.status_code, moved.headers["location"]) == (302, "/scene7/")
            tree = lxml_html.fromstring((await client.get("/scene7/")).text)
            for link in tree.xpath("//a/@href|//link/@href|//script/@src"):
                target = httpx.URL(f"http://127.0.0.1:{exporter.port}/scene7/").join(link)
                assert target.path.startswith("/scene7/"), link
                assert (await client.get(target)).status_code == 200, link


async def test_the_web_configs_headers_are_on_every_response_the_pages_own_kept(tmp_path):
    hashed = bcrypt.hashpw(b"look", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  oncall: {hashed}\nhttp_server_config:\n  headers:\n"
                   "    X-Frame-Options: deny\n    Content-Security-Policy: default-src 'none'\n"
                   "    Strict-Transport-Security: max-age=31536000\n")
    async with simulated(jobs=5) as sim:
        settings = settings_for(sim.url)
        settings = settings.model_copy(update={"web": WebSection(
            listen_address=settings.web.listen_address, config_file=web)})
        async with exporting(settings) as exporter, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{exporter.port}", auth=("oncall", "look"), timeout=10) as client:
            answers = {
                path: await client.get(path)
                for path in ("/metrics", "/", "/api/v1/jobs", "/healthz", "/static/jobs.css", "/nowhere")
            }
            answers["401"] = await client.get("/metrics", auth=("oncall", "wrong"))
            answers["400"] = await client.get("/api/v1/jobs?per_page=0")
            assert {path: a.status_code for path, a in answers.items()} == {
                "/metrics": 200, "/": 200, "/api/v1/jobs": 200, "/healthz": 200, "/static/jobs.css": 200,
                "/nowhere": 404, "401": 401, "400": 400}
            for path, answer in answers.items():
                assert answer.headers["x-frame-options"] == "deny", path
                assert answer.headers["strict-transport-security"] == "max-age=31536000", path
                assert answer.headers.get_list("x-frame-options") == ["deny"], path
            # the server's own answer to a request it cannot read, too
            reader, writer = await asyncio.open_connection("127.0.0.1", exporter.port)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            raw = (await asyncio.wait_for(reader.read(), 10)).decode()
            writer.close()
            assert raw.startswith("HTTP/1.1 400") and "x-frame-options: deny" in raw.lower(), raw
            # a response's own header wins, as in exporter-toolkit: the page keeps its policy
            assert answers["/"].headers.get_list("content-security-policy") == [page.CSP]
            assert answers["/metrics"].headers["content-security-policy"] == "default-src 'none'"


async def test_the_telemetry_path_moves_the_metrics_and_the_page_links_there(tmp_path):
    async with simulated(jobs=5) as sim:
        settings = settings_for(sim.url)
        settings = settings.model_copy(update={"web": WebSection(
            listen_address=settings.web.listen_address, route_prefix="/scene7", telemetry_path="/internal/metrics/")})
        async with exporting(settings) as exporter, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{exporter.port}", timeout=10) as client:
            assert settings.web.telemetry_path == "/internal/metrics"
            moved = await client.get("/scene7/internal/metrics")
            assert moved.status_code == 200 and "scene7_up{" in moved.text
            for path in ("/scene7/metrics", "/internal/metrics", "/metrics"):
                assert (await client.get(path)).status_code == 404, path
            for path in ("/scene7/healthz", "/scene7/readyz", "/scene7/api/v1/status"):
                assert (await client.get(path)).status_code in (200, 503), path
            tree = lxml_html.fromstring((await client.get("/scene7/")).text)
            (metrics_link,) = [link for link in tree.xpath("//nav/a") if link.text == "Metrics"]
            target = httpx.URL(f"http://127.0.0.1:{exporter.port}/scene7/").join(metrics_link.get("href"))
            assert target.path == "/scene7/internal/metrics"


@pytest.mark.parametrize("path", ["metrics", "/", "/healthz", "/readyz", "/api/v1/jobs", "/static/x", "/a b", "/m?x"])
def test_a_telemetry_path_that_is_taken_or_not_a_plain_path_is_refused(path):
    with pytest.raises(ValueError, match="telemetry_path"):
        WebSection(telemetry_path=path)


@pytest.mark.parametrize("prefix", ["scene7", "/a//b", "/a/../b", "/a b", "/a?b", "/a\r\nb"])
def test_a_route_prefix_that_is_not_a_plain_path_is_refused(prefix):
    with pytest.raises(ValueError, match="route_prefix"):
        WebSection(route_prefix=prefix)


# -- the index, built off the scrapes' way ---------------------------------------------------------


async def test_the_index_is_built_when_asked_for_in_turns_once_for_every_request_waiting(monkeypatch):
    monkeypatch.setattr(jobindex, "SLICE_SECONDS", 0.0)  # a turn at every look at the clock
    built: list[int] = []
    real = jobindex.build_index_in_turns

    async def counting(state, previous):
        index = await real(state, previous)
        built.append(index.generation)
        return index

    monkeypatch.setattr(jobindex, "build_index_in_turns", counting)
    store = Store()
    indexer = JobIndexer(lambda: store.state)
    many = tuple(job(f"j{i}") for i in range(300))
    first = store.record_success(ACME, many, at=UPDATED, duration=1.0)
    store.record_success(ACME, many, at=UPDATED + 60, duration=1.0)
    await asyncio.sleep(0)
    assert built == [] and indexer.current.generation == -1  # a poll builds nothing: nobody asked
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    answers = await asyncio.gather(*(indexer.fresh() for _ in range(3)))
    task.cancel()
    assert built == [first.generation + 1] and all(a is answers[0] for a in answers)  # one build for all three
    assert ticks >= 300 // jobindex._CHECK_EVERY and len(answers[0].entries) == 300  # the loop turned meanwhile
    assert await indexer.fresh() is answers[0] and len(built) == 1  # the same State: no build
    await indexer.close()


async def test_an_index_that_cannot_be_built_leaves_the_last_one_and_is_said(monkeypatch, caplog):
    store, clock = Store(), [1000.0]
    indexer = JobIndexer(lambda: store.state, clock=lambda: clock[0])
    store.record_success(ACME, (job("a"),), at=UPDATED, duration=1.0)
    good = await indexer.fresh()

    def broken(state, previous):
        raise RuntimeError("a bug")
        yield

    monkeypatch.setattr(jobindex, "index_steps", broken)
    store.record_success(ACME, (job("a"), job("b")), at=UPDATED + 60, duration=1.0)
    clock[0] += jobindex.STALE_SECONDS + 1  # too old to be answered without waiting for the build
    assert await indexer.fresh() is good
    assert "the jobs page's index of State 2 could not be built" in caplog.messages
    monkeypatch.undo()
    again = store.record_success(ACME, (job("b"),), at=UPDATED + 120, duration=1.0)
    assert (await indexer.fresh()).generation == again.generation
    await indexer.close()


def test_the_route_prefix_and_telemetry_path_flags_reach_the_settings_of_run_and_demo(tmp_path):
    from exporter.cli import _demo_settings, _overrides, parse_args
    from exporter.config import load_settings

    config = tmp_path / "config.yml"
    config.write_text("accounts:\n  - {name: a, endpoint: 'https://ips.example.com/x', user: u, password: p}\n")
    run = parse_args(["--config.file", str(config), "--web.route-prefix", "/scene7/", "--web.telemetry-path", "/prom"])
    web = load_settings(run.config_file, **_overrides(run)).web
    assert (web.prefix, web.telemetry_path) == ("/scene7", "/prom")
    default = load_settings(config).web
    assert (default.prefix, default.telemetry_path) == ("", "/metrics")
    demo = _demo_settings(parse_args(["demo", "--web.route-prefix=/jobs", "--web.telemetry-path=/m"])).web
    assert (demo.prefix, demo.telemetry_path) == ("/jobs", "/m")


def test_a_job_unchanged_since_the_last_poll_keeps_its_index_entry_and_a_changed_one_gets_a_new_one():
    world = World()
    same, moving = job("same"), job("moving", processed=1)
    world.poll(ACME, same, moving, at=UPDATED)
    before = {e.job.name: e for e in world.index.current.entries}
    world.poll(ACME, same, job("moving", processed=5), at=UPDATED + 60)  # the reader gives `same` again
    after = {e.job.name: e for e in world.index.current.entries}
    assert after["same"] is before["same"] and after["moving"] is not before["moving"]
    world.poll(BITS, same, at=UPDATED + 60)  # the same model in another company: its own entry
    assert {e.target for e in world.index.current.entries if e.job is same} == {ACME, BITS}
    assert world.measures(ACME)[("j|moving", "com.scene7.upload.UploadAsyncTaskMonitor")].rate == pytest.approx(4 / 60)


def test_polls_nobody_looked_at_are_measured_over_the_span_between_two_looks():
    world = World()
    key = ("j|a", "com.scene7.upload.UploadAsyncTaskMonitor")
    world.poll(ACME, job("a", processed=0), at=1000.0)
    world.poll(ACME, job("a", processed=30), at=1060.0, viewed=False)  # no index built: no sample
    world.poll(ACME, job("a", processed=120), at=1120.0)
    assert world.measures(ACME)[key].rate == pytest.approx(1.0)  # 120 items over the 120 s between the looks


async def test_a_young_index_is_answered_while_the_next_is_built_and_an_old_one_waits_for_it():
    store, clock = Store(), [1000.0]
    indexer = JobIndexer(lambda: store.state, clock=lambda: clock[0])
    store.record_success(ACME, (job("a"),), at=UPDATED, duration=1.0)
    first = await indexer.fresh()
    second_state = store.record_success(ACME, (job("a"), job("b")), at=UPDATED + 60, duration=1.0)
    clock[0] += jobindex.STALE_SECONDS - 0.5
    assert await indexer.fresh() is first  # answered at once, the build under way
    await asyncio.sleep(0.05)
    assert indexer.current.generation == second_state.generation
    third_state = store.record_success(ACME, (job("c"),), at=UPDATED + 120, duration=1.0)
    clock[0] += jobindex.STALE_SECONDS + 0.5
    assert (await indexer.fresh()).generation == third_state.generation  # too old: waited for
    await indexer.close()


async def test_pages_of_the_same_filters_are_sorted_once_and_follow_each_other():
    world = World()
    world.poll(ACME, *(job(f"j{i:02d}", start=UPDATED - 100 + i) for i in range(30)))
    first, second = await world.page(per_page="10"), await world.page(per_page="10", page="2")
    assert len(world.view._orders) == 1
    assert [j["name"] for j in first["jobs"] + second["jobs"]] == [f"j{i:02d}" for i in range(20)]
    await world.page(q="j1")
    assert len(world.view._orders) == 2
    world.poll(ACME, job("new"))  # a new index: sorted again
    assert (await world.page(per_page="10"))["matching"] == 1 and len(world.view._orders) == 3


async def test_a_build_that_takes_long_does_not_make_the_pages_asked_for_meanwhile_wait(monkeypatch):
    store, clock = Store(), [1000.0]
    indexer = JobIndexer(lambda: store.state, clock=lambda: clock[0])
    store.record_success(ACME, (job("a"),), at=UPDATED, duration=1.0)
    first = await indexer.fresh()
    release = asyncio.Event()
    real = jobindex.build_index_in_turns

    async def slow(state, previous):
        await release.wait()
        return await real(state, previous)

    monkeypatch.setattr(jobindex, "build_index_in_turns", slow)
    store.record_success(ACME, (job("b"),), at=UPDATED + 60, duration=1.0)
    clock[0] += 1.0  # the build begins 1 s after the last one ended
    assert await indexer.fresh() is first
    clock[0] += 10 * jobindex.STALE_SECONDS  # the build takes long (a busy loop): still not waited for
    assert await indexer.fresh() is first
    release.set()
    await asyncio.sleep(0.05)
    assert indexer.current is not first and (await indexer.fresh()) is indexer.current
    await indexer.close()


def test_a_query_gives_back_every_filter_it_has_for_the_links_between_pages_and_leaves_out_defaults():
    query = Query(company="A & B", state="Running", job_type="T", text="x y", attention=True, page=2, per_page=10)
    assert query.params(page=3) == {"company": "A & B", "state": "Running", "type": "T", "q": "x y",
                                    "attention": "1", "page": "3", "per_page": "10"}
    assert Query().params() == {} and Query(per_page=50, page=1).params() == {}
    assert Query.from_params({k: [v] for k, v in query.params().items()}) == query


async def test_a_row_reads_as_its_job_and_tasks_are():
    world = World(now=UPDATED + STUCK_AFTER_SECONDS + 60)
    stuck_task = job("x").task_progress_array[0]
    failed_task = job("x", task_state="Failed", updated=world.now - 30).task_progress_array[0].model_copy(
        update={"task_type": "com.scene7.autoset.AutoSetAsyncTaskMonitor", "progress": 0.9})
    moving_task = job("x", updated=world.now - 30, pending=100).task_progress_array[0].model_copy(
        update={"progress": float("nan"), "num_processed": 70})
    both = job("both", start=UPDATED - 3600).model_copy(update={"task_progress_array": (stuck_task, failed_task)})
    empty = job("empty", start=UPDATED - 60).model_copy(update={"task_progress_array": ()})
    moving = job("moving", start=UPDATED - 30).model_copy(update={"task_progress_array": (moving_task,)})
    before = job("moving", start=UPDATED - 30, processed=10, updated=world.now - 90)
    world.poll(ACME, both, empty, before, at=world.now - 60)
    world.poll(ACME, both, empty, moving, at=world.now)
    tree = lxml_html.fromstring(await rendered(world))
    rows = {row.get("data-job"): row for row in tree.xpath("//tbody[@id='jobs']/tr")}
    assert list(rows) == ["j|both", "j|empty", "j|moving"]
    row = rows["j|both"]
    assert row.get("class") == "stuck failed"
    assert " ".join(row.xpath("th")[0].text_content().split()) == "stuck failed both"
    started = row.xpath("td[@data-label='Started']")[0]
    assert started.text_content() == f"2026-11-26T05:00:00Z ({page.duration(world.now - UPDATED + 3600)} ago)"
    first, second = row.xpath(".//ul[@class='tasks']/li")
    assert first.xpath("span[@class='task']/bdi")[0].text == "UploadAsyncTaskMonitor"
    assert first.xpath("span[@class='task']/bdi/@title") == ["com.scene7.upload.UploadAsyncTaskMonitor"]
    assert first.xpath("span[@class='badge bad']/text()") == ["stuck"]
    assert first.xpath("progress/@value") == ["0.2000"] and first.xpath("progress/text()") == ["20%"]
    assert first.xpath("progress/@aria-label") == ["com.scene7.upload.UploadAsyncTaskMonitor: 20%"]
    assert first.xpath("span[@class='counts']/text()") == ["1 done · 1 processing · 3 pending of 5"]
    assert first.xpath("span[@class='since']/text()") == [
        f"last progress {page.duration(world.now - UPDATED)} ago · no ETA"]
    assert second.xpath("span[@class='badge bad']/text()") == ["failed"] and second.xpath("progress/text()") == ["90%"]
    assert rows["j|empty"].get("class") is None and rows["j|empty"].xpath(".//li/text()") == ["no task reported"]
    bar = rows["j|moving"].xpath(".//progress")[0]
    assert bar.get("value") is None and bar.text == "?"  # IPS sent NaN: an indeterminate bar
    assert rows["j|moving"].xpath(".//span[@class='since']/text()") == [
        f"last progress 30s ago · ETA {page.duration(101 / 1.0)}"]  # 60 items in 60 s; 100 + 1 to go


def test_a_second_reading_at_the_same_time_starts_the_measure_again_rather_than_divide_by_nothing():
    assert next_measure(Measure(10.0, 5, 1.0), 10.0, 7) == Measure(10.0, 7)
    assert next_measure(Measure(10.0, 5, 1.0), 9.0, 7) == Measure(9.0, 7)


@pytest.mark.parametrize(("oldest", "stuck"), [(0.0, False), (1.0, True), (999.0, True), (1000.0, False),
                                                (float("inf"), False)])
def test_a_job_is_stuck_when_a_processing_task_last_moved_before_the_threshold_and_after_the_epoch(oldest, stuck):
    entry = jobindex.Entry(ACME, job("a"), 0.0, oldest, False)
    assert entry.stuck(1000.0) is stuck


def test_the_index_gives_the_loop_a_turn_every_so_many_jobs_and_forgets_a_company_gone():
    world = World()
    world.poll(ACME, *(job(f"j{i}") for i in range(300)), viewed=False)
    world.poll(BITS, job("b", job_type="ImageServingPublishJob"), viewed=False)
    steps = jobindex.index_steps(world.store.state, world.index.current)
    turns = 0
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
            turns += 1
    assert turns == 301 // jobindex._CHECK_EVERY  # one turn after every _CHECK_EVERY jobs
    index = done.value.value
    assert (index.states, index.types) == (("Running",), ("ImageServingPublishJob", "UrlUpload"))
    assert set(index.polled_at) == {ACME, BITS}
    assert set(world.index.now().polled_at) == {ACME, BITS}
    world.store.reconfigure({"other"}, max_age=math.inf, guard=NO_GUARD)
    assert world.index.now().polled_at == {} and world.index.current.measures == {}
    assert world.view.filters() == {"company": [], "state": [], "type": []}


async def test_an_index_built_at_once_counts_as_built_for_the_requests_after_it():
    store = Store()
    indexer = JobIndexer(lambda: store.state)
    store.record_success(ACME, (job("a"),), at=UPDATED, duration=1.0)
    built = indexer.now()
    store.record_success(ACME, (job("b"),), at=UPDATED + 60, duration=1.0)
    assert await indexer.fresh() is built  # built a moment ago: answered while the next one is built
    await asyncio.sleep(0.05)
    assert [e.job.name for e in indexer.current.entries] == ["b"]
    await indexer.close()


async def test_a_page_of_filters_asked_before_reads_the_order_kept_and_the_oldest_order_goes_first(monkeypatch):
    world = World()
    world.poll(ACME, *(job(f"j{i}") for i in range(5)))
    calls = []
    real = jobsview._matches
    monkeypatch.setattr(jobsview, "_matches", lambda *args: calls.append(1) or real(*args))
    await world.page()
    assert len(calls) == 5
    first = next(iter(world.view._orders.values()))
    await world.page(page="2")
    assert len(calls) == 5 and next(iter(world.view._orders.values())) is first  # read, not sorted again
    for i in range(jobsview.MAX_ORDERS):
        await world.page(q=f"j{i}")
    assert len(world.view._orders) == jobsview.MAX_ORDERS and first not in world.view._orders.values()


async def test_a_failed_job_comes_before_older_ones_that_are_fine():
    world = World()
    world.poll(ACME, job("fine-old", start=UPDATED - 5000, updated=world.now),
               job("failed-young", task_state="Failed", start=UPDATED - 10, updated=world.now))
    assert [j["name"] for j in (await world.page())["jobs"]] == ["failed-young", "fine-old"]


async def test_a_task_without_a_state_reads_as_unknown_and_one_updated_now_as_zero_seconds_ago():
    world = World(now=UPDATED)
    stateless = job("a").task_progress_array[0].model_copy(update={"task_state": None})
    world.poll(ACME, job("a").model_copy(update={"task_progress_array": (stateless,)}), job("b", task_state="New"))
    tasks = {j["name"]: j["tasks"][0] for j in (await world.page())["jobs"]}
    assert (tasks["a"]["state"], tasks["b"]["state"]) == ("Unknown", "New")
    assert tasks["a"]["seconds_since_progress"] == 0


async def test_the_page_says_why_a_task_has_no_eta_and_when_nothing_matches():
    world = World(now=UPDATED + 60)
    plain = job("plain").task_progress_array[0].model_copy(update={"task_type": "Upload"})
    world.poll(ACME, job("slow", processed=3).model_copy(update={"task_progress_array": (plain,)}), at=UPDATED - 60)
    world.poll(ACME, job("slow", processed=3).model_copy(update={"task_progress_array": (plain,)}), at=UPDATED)
    tree = lxml_html.fromstring(await rendered(world))
    item = tree.xpath("//tbody[@id='jobs']//li")[0]
    assert " ".join(item.text_content().split()) == (
        f"Upload Processing 20% 1 done · 1 processing · 3 pending of 5 last progress "
        f"{page.duration(60)} ago · no ETA: no progress measured")
    assert sorted(item.xpath("progress")[0].attrib) == ["aria-label", "max", "value"]
    assert item.xpath("span[@class='task']/bdi")[0].text == "Upload"
    empty = lxml_html.fromstring(await rendered(world, q="nothing"))
    assert [c.text_content() for c in empty.xpath("//table[@class='jobs']//th")] == [
        "Job", "Company", "Type", "State", "Started", "Tasks"]
    assert empty.xpath("//tbody[@id='jobs']//td/text()") == ["No active job matches."]
