"""The exporter's port against a hostile network: the real exporter process, attacked by
tests/attackers.py from 127.0.0.2 (another client, as far as the exporter can tell), while the
test scrapes and probes it from 127.0.0.1 and measures what it gets. Each attack lasts seconds.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from servers import simulator
from support import (
    Process,
    exporter_command,
    free_port,
    http_ok,
    proc_status,
    running,
    wait_until,
    write_self_signed_certificate,
)

pytestmark = pytest.mark.timeout(120)

ATTACKS = Path(__file__).with_name("attackers.py")
USER, PASSWORD = "prometheus", "right horse battery staple"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Exporter:
    process: Process
    url: str
    port: int
    verify: ssl.SSLContext | bool

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """A request on a new connection, as a scraper that does not keep connections alive."""
        return httpx.get(self.url + path, verify=self.verify, timeout=10, **kwargs)


@contextlib.contextmanager
def exporter(tmp_path: Path, web_config: dict[str, Any] | None = None, *flags: str) -> Iterator[Exporter]:
    """The exporter (`run`) against the simulator, on 127.0.0.1; TLS and basic auth as the web
    config says."""
    with simulator(tmp_path, jobs=20) as (_, endpoint):
        port = free_port()
        config = tmp_path / "config.yml"
        config.write_text(json.dumps({
            "accounts": [{"name": "hostile", "endpoint": endpoint, "user": "demo@example.com"}],
            "poll": {"interval": "2s", "timeout": "1500ms"},
            "web": {"listen_address": f"127.0.0.1:{port}"},
        }))
        args = exporter_command("run", f"--config.file={config}", *flags)
        verify: ssl.SSLContext | bool = True
        scheme = "http"
        if web_config is not None:
            web = tmp_path / "web.yml"
            web.write_text(json.dumps(web_config))
            args.append(f"--web.config.file={web}")
            if "tls_server_config" in web_config:
                scheme, verify = "https", ssl.create_default_context(cafile=tmp_path / "server.crt")
        url = f"{scheme}://127.0.0.1:{port}"
        with running("exporter", args, tmp_path, lambda: http_ok(url + "/healthz", verify=verify),
                     env={"SCENE7_EXPORTER_PASSWORD": "demo"}) as process:
            yield Exporter(process, url, port, verify)


def tls(tmp_path: Path) -> dict[str, Any]:
    """A self-signed certificate for 127.0.0.1 (server.crt, its own CA), as a web config section."""
    cert, key = write_self_signed_certificate(tmp_path)
    return {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}


@contextlib.contextmanager
def attack(kind: str, port: int, *options: str) -> Iterator[dict[str, Any]]:
    """tests/attackers.py KIND against the port while the block runs; the dict it yields is
    filled with the attack's summary when the block ends."""
    summary: dict[str, Any] = {}
    child = subprocess.Popen([sys.executable, str(ATTACKS), kind, f"--port={port}", "--seconds=60", *options],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield summary
    finally:
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=20)
        assert child.returncode == 0, err
        summary.update(json.loads(out))


@dataclass
class Probes:
    """Requests made one after another in a thread: (path, status or exception name, seconds)."""

    results: list[tuple[str, str, float]]

    def failures(self, slower_than: float) -> list[tuple[str, str, float]]:
        return [r for r in self.results if r[1] != "200" or r[2] > slower_than]

    def __str__(self) -> str:
        seconds = sorted(r[2] for r in self.results)
        return (f"{len(seconds)} probes, {len(self.failures(float('inf')))} failed, "
                f"p50 {seconds[len(seconds) // 2] * 1000:.0f} ms, max {seconds[-1] * 1000:.0f} ms")


@contextlib.contextmanager
def probing(target: Exporter, paths: tuple[str, ...], **kwargs: Any) -> Iterator[Probes]:
    probes = Probes([])
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for path in paths:
                started = time.monotonic()
                try:
                    outcome = str(target.get(path, **kwargs).status_code)
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                probes.results.append((path, outcome, time.monotonic() - started))
            stop.wait(0.2)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield probes
    finally:
        stop.set()
        thread.join(30)


@pytest.mark.parametrize("kind", ["idle", "slowloris"])
def test_hundreds_of_idle_or_slow_sockets_of_one_client_leave_scrapes_and_probes_working(tmp_path, kind):
    with exporter(tmp_path) as target, attack(kind, target.port, "--count=600") as summary:
        time.sleep(2)  # 600 sockets held, each reopened as soon as the exporter closes it
        with probing(target, ("/healthz", "/metrics")) as probes:
            time.sleep(6)
    print(f"{kind}: {probes}; attack {summary}")
    assert summary["opened"] >= 600 and summary["closed by the server"] > 0, summary
    assert len(probes.results) >= 10
    assert probes.failures(slower_than=2.0) == [], (probes.failures(2.0), summary)


def test_tls_handshakes_never_started_leave_no_memory_behind(tmp_path):
    with exporter(tmp_path, tls(tmp_path)) as target:
        for _ in range(3):
            assert target.get("/metrics").status_code == 200
        time.sleep(1)
        baseline = proc_status(target.process.pid)["VmRSS"]
        # Three bursts of 500 connections from 100 addresses, none of them starting a handshake.
        with attack("silent-bursts", target.port, "--count=500", "--bursts=3", "--hold=2", "--sources=100",
                    "--seconds=12") as summary, probing(target, ("/metrics",)) as probes:
            time.sleep(11)
        peak = proc_status(target.process.pid)["VmHWM"]
        settled = wait_until(lambda: (rss := proc_status(target.process.pid)["VmRSS"]) < baseline + 64 * MiB
                             and rss, 10, "RSS back within 64 MiB of its baseline")
        assert target.get("/metrics").status_code == 200
    print(f"RSS baseline {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, after {settled / MiB:.0f} MiB; "
          f"scrapes meanwhile: {probes}")
    assert summary["opened"] == 1500, summary
    assert probes.failures(slower_than=2.0) == [], probes.failures(2.0)  # a newcomer never waits for a slot


def test_the_memory_of_hundreds_of_tls_connections_goes_back_to_the_system_when_they_close(tmp_path):
    with exporter(tmp_path, tls(tmp_path)) as target:
        for _ in range(3):
            assert target.get("/metrics").status_code == 200
        time.sleep(1)
        baseline = proc_status(target.process.pid)["VmRSS"]
        # 500 connections from 50 addresses (within every share), each with its TLS session and
        # asyncio's 256 KiB buffer: they hold memory, which is the point of the test.
        with attack("idle", target.port, "--count=500", "--sources=50", "--tls") as summary:
            time.sleep(4)
            held = wait_until(lambda: (rss := proc_status(target.process.pid)["VmRSS"]) > baseline + 96 * MiB
                              and rss, 30, "the TLS connections to hold memory")
        settled = wait_until(lambda: (rss := proc_status(target.process.pid)["VmRSS"]) < baseline + 16 * MiB
                             and rss, 10, "RSS back within 16 MiB of its baseline")
    print(f"RSS baseline {baseline / MiB:.0f} MiB, TLS connections held {held / MiB:.0f} MiB, "
          f"after {settled / MiB:.0f} MiB; attack {summary}")
    assert summary["opened"] >= 400, summary


@pytest.mark.parametrize("sources", [1, 64])
def test_a_wrong_password_flood_leaves_the_right_users_scrapes_fast(tmp_path, sources):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()
    with exporter(tmp_path, {"basic_auth_users": {USER: hashed}}) as target:
        assert target.get("/metrics", auth=(USER, PASSWORD)).status_code == 200  # remembered from now on
        with attack("wrong-password", target.port, "--count=64", f"--sources={sources}") as summary:
            time.sleep(1)
            with probing(target, ("/metrics",), auth=(USER, PASSWORD)) as probes:
                time.sleep(6)
    print(f"{sources} addresses: {probes}; attack {summary}")
    assert len(probes.results) >= 10
    assert probes.failures(slower_than=1.0) == [], (probes.failures(1.0), summary)
    assert summary["429"] > 0 and summary["429 with retry-after"] == summary["429"], summary
    if sources == 1:
        # bcrypt ran at most for the bucket (5) and its refill (1 a second): never a core's worth.
        assert summary.get("401", 0) <= 5 + summary["seconds"] + 2, summary


def test_corrupt_tls_records_are_dropped_quietly(tmp_path):
    with exporter(tmp_path, tls(tmp_path), "--log.level=debug") as target:
        with attack("corrupt-tls", target.port) as summary, probing(target, ("/metrics",)) as probes:
            time.sleep(5)
        log = target.process.log()
    print(f"corrupt records: {probes}; attack {summary}")
    assert summary["handshakes"] >= 20, summary
    assert probes.failures(slower_than=2.0) == []
    assert "Traceback" not in log and "level=error" not in log, log[-3000:]
    dropped = [line for line in log.splitlines() if "dropped" in line]
    assert 1 <= len(dropped) <= 5 + 3, dropped  # one line a second at most, saying how many it held back
