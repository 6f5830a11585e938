"""Screenshots of the jobs page for README: the exporter polling the simulator, seen by Debian's
Chromium (apt install chromium) through Playwright, at a desktop's and a phone's width.

    .venv/bin/python docs/screenshots.py        # writes docs/jobs-page-desktop.png and -phone.png
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import async_playwright

from exporter.app import Exporter
from exporter.config import AccountConfig, PollConfig, Settings, WebSection
from exporter.simulator import SimulatorConfig, SimulatorServer

DOCS = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


async def main() -> None:
    simulator = SimulatorServer(SimulatorConfig(seed=3, jobs=24, time_scale=30.0), host="127.0.0.1", port=0)
    await simulator.start()
    settings = Settings(
        accounts=[AccountConfig(name="demo", endpoint=simulator.url, user="demo@example.com",  # type: ignore[arg-type]
                                password="demo")],  # noqa: S106
        poll=PollConfig(interval=2.0, timeout=1.5), web=WebSection(listen_address="127.0.0.1:0"))
    exporter = Exporter(settings)
    await exporter.start()
    try:
        await asyncio.sleep(7)  # a few polls: the rates, and so the ETAs, are measured
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for name, width, height in (("desktop", 1280, 1000), ("phone", 390, 1400)):
                page = await browser.new_page(viewport={"width": width, "height": height})
                await page.goto(f"http://127.0.0.1:{exporter.port}/?per_page=12")
                await page.screenshot(path=str(DOCS / f"jobs-page-{name}.png"))
                print(DOCS / f"jobs-page-{name}.png")
            await browser.close()
    finally:
        await exporter.stop()
        await simulator.close()


if __name__ == "__main__":
    asyncio.run(main())
