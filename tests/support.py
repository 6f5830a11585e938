"""What the tests and the benchmarks share: child processes and waiting for them, percentiles,
reading an exposition back as samples, and a self-signed certificate.

The tests import it from tests/ (pytest's `pythonpath`), benchmarks/bench.py and soak.py put
tests/ on sys.path themselves. It imports nothing of the `exporter` package: bench.py measures
the exporter of SCENE7_BENCH_EXPORTER_ROOT, which it imports later, and its poll processes
report their resident memory, which modules loaded for this one would raise. Servers that need
the exporter are in servers.py, for the tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str, **kwargs: Any) -> bool:
    return httpx.get(url, timeout=2, **kwargs).status_code == 200


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call `check` until it returns a truthy value (returned) or `timeout` passes: then
    AssertionError, naming `what` and the last exception `check` raised (each one is retried)."""
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


def exporter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter.cli", *args]


# Looked up here, not in the forked child. Linux only: elsewhere children outlive a killed parent.
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """A child process whose output goes to `<log_dir>/<name>.log`.

    It gets SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG), so that a test run
    or benchmark killed outright leaves no server behind: start children from the main thread.
    """

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(args), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
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
def running(name: str, args: Sequence[str], log_dir: Path, ready: Callable[[], Any], *, timeout: float = 30.0,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[Process]:
    """A `Process`, once `ready()` is truthy (AssertionError with the tail of its log if it exits
    first or is not ready within `timeout`); stopped when the block ends, also on failure."""
    process = Process(name, args, log_dir, env=env, cwd=cwd)
    try:
        try:
            wait_until(lambda: not process.alive() or ready(), timeout, f"{name} to start")
            if not process.alive():
                raise AssertionError(f"{name} exited with {process.proc.returncode}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {name} log ---\n{process.log()[-3000:]}") from None
        yield process
    finally:
        process.stop()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


@contextlib.contextmanager
def memory_capped(headroom: int = 512 << 20) -> Iterator[None]:
    """This process's address space capped at what it maps now plus `headroom` within the block:
    code that reads an endless file (/dev/zero) whole then fails the test with a MemoryError,
    instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + headroom if hard == resource.RLIM_INFINITY else min(mapped + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------- statistics


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile, q from 0 to 100, interpolated linearly between the two nearest ranks
    (numpy's default, statistics.quantiles' "inclusive"): 0 is the smallest value, 100 the
    largest, 50 the median. No values: ValueError."""
    ordered = sorted(values)
    if not ordered or not 0 <= q <= 100:
        raise ValueError(f"percentile {q} of {len(ordered)} values")
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    """percentile(values, 50): the middle value, or the mean of the two middle ones."""
    return statistics.median(values)


# --------------------------------------------------------------------------- expositions

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse_samples(text: str | bytes, *, names: Iterable[str] = (), openmetrics: bool = False) -> Samples:
    """Every sample of an exposition by (sample name, labels), read by prometheus-client's parser
    (its OpenMetrics one with `openmetrics`). A series given twice is an AssertionError.

    With `names`, only those families are read, each from its `# HELP <name> ` line to the next
    `# HELP` (text format 0.0.4): a 47 MB exposition then costs what those families cost.
    """
    # Imported here: bench.py's poll processes, which import this module, measure their RSS.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    data = text.encode() if isinstance(text, str) else text
    if names:
        data = b"".join(_family_lines(data, name) for name in names)
    samples: Samples = {}
    for family in (parse_openmetrics if openmetrics else parse_text)(data.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"series {key} given twice"
            samples[key] = sample.value
    return samples


def _family_lines(data: bytes, name: str) -> bytes:
    head = b"# HELP " + name.encode() + b" "
    start = data.find(head)
    while start > 0 and data[start - 1] != ord("\n"):
        start = data.find(head, start + 1)
    if start < 0:
        return b""
    end = data.find(b"\n# HELP ", start)
    return data[start:] if end < 0 else data[start:end + 1]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly these labels, or None."""
    return samples.get((name, frozenset(labels.items())))


def family(samples: Samples, name: str) -> dict[Labels, float]:
    """The samples called `name`, by their labels."""
    return {labels: v for (sample, labels), v in samples.items() if sample == name}


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples called `name` summed by the value of `label` ("" where they lack it), sorted."""
    totals: dict[str, float] = {}
    for labels, v in family(samples, name).items():
        key = dict(labels).get(label, "")
        totals[key] = totals.get(key, 0.0) + v
    return dict(sorted(totals.items()))


def series_count(text: bytes) -> int:
    """The sample lines of a text exposition (0.0.4): len(parse_samples(text)), counted without
    parsing (milliseconds at 47 MB)."""
    lines = text.count(b"\n") + (0 if text.endswith(b"\n") else 1)
    comments = text.count(b"\n#") + (1 if text.startswith(b"#") else 0)
    return lines - comments


# --------------------------------------------------------------------------- TLS


def write_self_signed_certificate(directory: Path, common_name: str = "scene7-exporter test", *,
                                  valid_for: timedelta = timedelta(days=1)) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1 (its own CA, so clients trust it with
    `cafile=`) and its unencrypted EC key: (`server.crt`, `server.key`) in `directory`."""
    # Imported here: bench.py's poll processes, which import this module, measure their RSS.
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


async def ticks_while(work: Awaitable[Any], every: float = 0.0) -> int:
    """How many times another task got the event loop, sleeping `every` seconds between turns,
    while `work` was awaited: how free the loop stayed."""
    ticks = 0
    working = True

    async def ticker() -> None:
        nonlocal ticks
        while working:
            ticks += 1
            await asyncio.sleep(every)

    task = asyncio.get_running_loop().create_task(ticker())
    try:
        await work
    finally:
        working = False
        await task
    return ticks


def logged(record: logging.LogRecord) -> str:
    """A log record as the tests compare it: its message, then its fields as key=value (leaving
    out durations, which are timing, and the account of a line about a company)."""
    from exporter.logs import extra_fields

    fields = extra_fields(record)
    fields.pop("duration", None)
    if "company" in fields:
        fields.pop("account", None)
    return " ".join([record.getMessage(), *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in fields.items())])
