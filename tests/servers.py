"""Real processes for end-to-end tests: the simulator, the exporter, Prometheus, Alertmanager.

Each is started on 127.0.0.1 with a free port and a temporary directory, waited for until it
answers, and stopped (terminated, then killed) when the `with` block ends, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call `check` until it returns a truthy value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # any failure is retried until the deadline
            last = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + (f": {last!r}" if last else ""))


class Process:
    """A child process whose output goes to a log file, shown when a test fails."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(args), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(name: str, args: Sequence[str], log_dir: Path, ready: Callable[[], Any], *,
            timeout: float = 30.0, env: dict[str, str] | None = None) -> Iterator[Process]:
    process = Process(name, args, log_dir, env)
    try:
        def is_ready() -> Any:
            if process.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.proc.returncode}:\n{process.log()[-3000:]}")
            return ready()

        try:
            wait_until(is_ready, timeout, f"{name} to start")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {name} log ---\n{process.log()[-3000:]}") from None
        yield process
    finally:
        process.stop()


def http_ok(url: str, **kwargs: Any) -> bool:
    return httpx.get(url, timeout=2, **kwargs).status_code == 200


def exporter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter.cli", *args]


def simulator(log_dir: Path, *, jobs: int = 30, seed: int = 1, time_scale: float = 1.0,
              extra: Sequence[str] = ()) -> contextlib.AbstractContextManager[tuple[Process, str]]:
    """`scene7-exporter simulate` on a free port; yields (process, endpoint URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/scene7/services/IpsApiService"
    args = exporter_command("simulate", f"--web.listen-address=127.0.0.1:{port}", f"--jobs={jobs}",
                            f"--seed={seed}", f"--time-scale={time_scale}", *extra)

    @contextlib.contextmanager
    def cm() -> Iterator[tuple[Process, str]]:
        with running("simulator", args, log_dir, lambda: _port_open(port)) as process:
            yield process, url

    return cm()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
