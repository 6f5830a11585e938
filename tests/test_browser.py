"""The jobs page in a real browser: Debian's Chromium, driven by Playwright, against an exporter
polling the simulator. tests/run installs Chromium when it is missing; nothing here skips."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from servers import exporting, settings_for, simulated

from exporter.config import WebSection

CHROMIUM = "/usr/bin/chromium"
# As root and with no network beyond this machine: no sandbox, and none of Chromium's own traffic.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
HOSTILE = "<script>window.injected=1</script><img src=x onerror=\"window.injected=2\">"
REFRESH_WAIT_S = 20.0  # the page refreshes every 5 s


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def watched(browser: Browser, url: str, width: int = 1280) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page at `url`, and the console messages and page errors it gives."""
    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    response = await page.goto(url)
    assert response is not None and response.status == 200
    try:
        yield page, messages
    finally:
        await context.close()


async def refreshed(page: Page) -> None:
    """Wait for the page's script to have redrawn it (polled from here: the page's policy refuses
    the eval that Playwright's wait_for_function needs)."""
    deadline = asyncio.get_running_loop().time() + REFRESH_WAIT_S
    while await page.evaluate("document.body.dataset.refreshed") is None:
        assert asyncio.get_running_loop().time() < deadline, "the page did not refresh itself"
        await asyncio.sleep(0.2)


async def rows(page: Page) -> list[dict[str, Any]]:
    return await page.eval_on_selector_all("#jobs tr[data-job]", """rows => rows.map(row => ({
        job: row.dataset.job, cls: row.className, name: row.querySelector('th bdi').textContent,
        bars: [...row.querySelectorAll('progress')].map(bar => bar.position),
        counts: [...row.querySelectorAll('.counts')].map(span => span.textContent)}))""")


@asynccontextmanager
async def exporter_of(sim: Any, prefix: str = "/") -> AsyncIterator[str]:
    settings = settings_for(sim.url, interval=1.0, timeout=0.9)
    settings = settings.model_copy(update={"web": WebSection(
        listen_address=settings.web.listen_address, route_prefix=prefix)})
    async with exporting(settings) as exporter:
        deadline = asyncio.get_running_loop().time() + 15
        while not (exporter.store.state.companies and all(c.up for c in exporter.store.state.companies)):
            assert asyncio.get_running_loop().time() < deadline, "the exporter did not poll every company"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.2)  # two polls more: the rates are measured
        yield f"http://127.0.0.1:{exporter.port}{settings.web.prefix}/"


async def test_the_page_shows_the_simulators_jobs_stuck_first_and_moves_without_a_reload():
    async with simulated(time_scale=60.0, jobs=20) as sim, exporter_of(sim) as url, chromium() as browser, \
            watched(browser, url) as (page, messages):
        shown = await rows(page)
        expected = {job.handle for c in sim.world.companies for job in sim.world.active_jobs(c.handle)}
        assert shown and {row["job"] for row in shown} <= expected
        stuck = [row for row in shown if "stuck" in row["cls"]]
        assert stuck, "the simulator has stuck tasks: the test needs one"
        assert "stuck" in shown[0]["cls"]  # first
        assert [row["cls"] for row in shown[: len(stuck)]] == [row["cls"] for row in stuck]
        await page.evaluate("window.notReloaded = true")
        await refreshed(page)
        after = await rows(page)
        assert await page.evaluate("window.notReloaded === true")
        before_bars = {row["job"]: (row["bars"], row["counts"]) for row in shown}
        moved = [row for row in after if row["job"] in before_bars
                 and (row["bars"], row["counts"]) != before_bars[row["job"]]]
        assert moved, "no progress bar or count changed after a refresh"
        assert not [m for m in messages if m.startswith(("error", "pageerror"))], messages


async def test_a_hostile_job_name_is_text_and_an_injected_inline_script_is_blocked_by_the_policy():
    async with simulated(jobs=6) as sim:
        target = sim.world.active_jobs(sim.world.companies[0].handle)[0]
        target.name = HOSTILE
        async with exporter_of(sim) as url, chromium() as browser, watched(browser, url) as (page, messages):
            names = [row["name"] for row in await rows(page)]
            assert HOSTILE in names
            await refreshed(page)
            assert HOSTILE in [row["name"] for row in await rows(page)]  # drawn again by the script: text still
            assert await page.evaluate("window.injected") is None
            # An inline script slipped into the page would not run: the Content-Security-Policy refuses it.
            await page.evaluate("""() => { const s = document.createElement('script');
                s.textContent = 'window.inlineRan = 1'; document.body.append(s); }""")
            await asyncio.sleep(0.2)
            assert await page.evaluate("window.inlineRan") is None
            assert any("Content Security Policy" in m for m in messages), messages


async def test_behind_a_route_prefix_the_page_its_assets_and_its_refresh_work():
    async with simulated(jobs=6) as sim, exporter_of(sim, prefix="/scene7") as url, chromium() as browser:
        assert url.endswith("/scene7/")
        async with watched(browser, url) as (page, messages):
            assert await page.evaluate("getComputedStyle(document.body).maxWidth") == "1400px"  # the stylesheet
            await refreshed(page)
            assert await page.evaluate("document.body.dataset.refreshError") is None
            assert await rows(page)
            assert not [m for m in messages if m.startswith(("error", "pageerror"))], messages


@pytest.mark.parametrize("width", [1280, 390])
async def test_the_page_fits_a_desktop_and_a_phone_without_sideways_scrolling(width, tmp_path):
    async with simulated(jobs=12) as sim:
        sim.world.active_jobs(sim.world.companies[0].handle)[0].name = "x" * 10_000
        async with exporter_of(sim) as url, chromium() as browser, \
                watched(browser, url, width=width) as (page, _messages):
            assert await page.evaluate("document.documentElement.scrollWidth") <= width
            await page.screenshot(path=str(tmp_path / f"jobs-{width}.png"), full_page=True)
            assert (tmp_path / f"jobs-{width}.png").stat().st_size > 10_000
