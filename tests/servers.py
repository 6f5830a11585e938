"""The servers the tests run, beside the generic helpers of support.py.

Real processes, for end-to-end tests: the simulator, Prometheus, Alertmanager. Each is started
on 127.0.0.1 with a free port and a temporary directory, waited for until it answers, and
stopped (terminated, then killed) when the `with` block ends, also on failure.

In-process, for tests of the whole exporter over real HTTP: the simulator (`simulated`) and the
exporter (`exporting`), scraped into samples (`scrape`, `eventually`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from support import Process, Samples, by_label, exporter_command, free_port, http_ok, parse_samples, port_open, running

from exporter.app import Exporter
from exporter.config import AccountConfig, PollConfig, Settings, WebSection
from exporter.simulator import SimulatorConfig, SimulatorServer

# --------------------------------------------------------------------------- real processes


def simulator(log_dir: Path, *, jobs: int = 30, seed: int = 1, time_scale: float = 1.0,
              extra: Sequence[str] = ()) -> contextlib.AbstractContextManager[tuple[Process, str]]:
    """`scene7-exporter simulate` on a free port; yields (process, endpoint URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/scene7/services/IpsApiService"
    args = exporter_command("simulate", f"--web.listen-address=127.0.0.1:{port}", f"--jobs={jobs}",
                            f"--seed={seed}", f"--time-scale={time_scale}", *extra)

    @contextlib.contextmanager
    def cm() -> Iterator[tuple[Process, str]]:
        with running("simulator", args, log_dir, lambda: port_open(port)) as process:
            yield process, url

    return cm()


def prometheus(log_dir: Path, config: Path, port: int) -> contextlib.AbstractContextManager[Process]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: tests/run installs Debian's prometheus"
    data = log_dir / "tsdb"
    args = [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return running("prometheus", args, log_dir, lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"))


def alertmanager(log_dir: Path, config: Path, port: int) -> contextlib.AbstractContextManager[Process]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "alertmanager is not installed: tests/run installs Debian's prometheus-alertmanager"
    args = [binary, f"--config.file={config}", f"--storage.path={log_dir / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    return running("alertmanager", args, log_dir, lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"))


# --------------------------------------------------------------------------- in-process


class Clock:
    """A clock the test steps by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def step(self, **delta: float) -> None:
        """Forward by timedelta(**delta)."""
        self.now += timedelta(**delta)


@contextlib.asynccontextmanager
async def simulated(clock: Callable[[], datetime] | None = None, **config: Any) -> AsyncIterator[SimulatorServer]:
    """The simulator on a free port; `config` as SimulatorConfig's, 15 jobs and seed 7 unless given."""
    config.setdefault("jobs", 15)
    config.setdefault("seed", 7)
    async with SimulatorServer(SimulatorConfig(**config), clock=clock) as server:
        yield server


def settings_for(endpoint: str, *, interval: float = 0.5, timeout: float = 0.4, max_age: float | None = None,
                 **account: Any) -> Settings:
    """One account "test" on `endpoint` (demo@example.com / demo), served on a free port."""
    return Settings(
        accounts=[AccountConfig(name="test", endpoint=endpoint, user="demo@example.com", password="demo",  # type: ignore[arg-type]
                                **account)],
        poll=PollConfig(interval=interval, timeout=timeout, max_age=max_age),
        web=WebSection(listen_address="127.0.0.1:0"),
    )


@contextlib.asynccontextmanager
async def exporting(settings: Settings) -> AsyncIterator[Exporter]:
    exporter = Exporter(settings)
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop()


async def get(exporter: Exporter, path: str = "/metrics", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{exporter.port}{path}", headers=headers)


async def scrape(exporter: Exporter) -> Samples:
    response = await get(exporter)
    assert response.status_code == 200
    return parse_samples(response.text)


def by_company(samples: Samples, name: str) -> dict[str, float]:
    return by_label(samples, name, "company")


def errors(samples: Samples, reason: str) -> float:
    """Failed polls counted under `reason`, every company together."""
    return by_label(samples, "scene7_poll_errors_total", "reason").get(reason, 0.0)


def all_up(samples: Samples) -> bool:
    ups = by_company(samples, "scene7_up")
    return bool(ups) and all(v == 1 for v in ups.values())


def all_down(samples: Samples) -> bool:
    ups = by_company(samples, "scene7_up")
    return bool(ups) and all(v == 0 for v in ups.values())


async def eventually(check: Callable[[Samples], bool], exporter: Exporter, timeout: float = 10.0) -> Samples:
    """Scrape until `check` holds; the last scrape on timeout is shown."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(exporter)
        if check(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            failing = {k: v for k, v in samples.items() if k[0] == "scene7_poll_errors_total" and v}
            raise AssertionError(f"not met within {timeout}s; up={by_company(samples, 'scene7_up')}, errors={failing}")
        await asyncio.sleep(0.1)
