#!/usr/bin/env python3
"""Soak test: the real exporter against the IPS simulator with random faults, for N minutes,
under concurrent scrapes. It answers "does it stay up, keep serving, and not leak?", which the
unit tests (seconds long) and bench.py (performance) do not.

Two child processes on 127.0.0.1: `exporter.cli simulate` (200 jobs, 3 companies, time scale
60) and `exporter.cli run` (poll every 2 s, timeout 1.5 s, max_response_size 4 MiB), serving
HTTPS with basic auth (`--web.config.file`: a self-signed certificate made for the run, one
user whose password has a bcrypt hash of cost 10, probes open without auth). While `--scrapers`
threads scrape /metrics (gzip, the right user and password, the certificate verified) in a loop
and one more thread probes /healthz (no credentials, as a kubelet would), a switcher turns a
random fault of the simulator on (`POST /simulator/faults`: any kind, sometimes for one company,
sometimes for a few requests only) or off every 2-6 s.

Beside the IPS faults, an attack phase (off with `--no-attacks`) attacks the exporter's own
port from 127.0.0.2-127.0.0.9 (`--attack-sources`), never from the scrapers' 127.0.0.1:
benchmarks/attacks.py, one niced child process with one asyncio loop, runs five kinds of attack,
each switched on for 3-30 s and off for 5-40 s at random, independently, so they overlap:
`idle` (600 connections held open, half before and half after the TLS handshake), `slowloris`
(300 connections dripping a request head a byte every 2-5 s), `handshake` (bursts of 500
connections that never finish a TLS handshake, some with a partial ClientHello),
`wrong_password` (64 clients flooding /metrics with the right user and wrong passwords) and
`corrupt_tls` (garbage written under an established TLS session). attacks.py's docstring has the
details. Each legitimate scrape must succeed within `--scrape-bound` seconds, attacks on or off;
the figures are reported per phase (attacks on, off, and during each kind), and per attack what
the attackers saw (connections opened, closed by the server and after how long, answers by
status, 429s with and without Retry-After).

Phases: a warm-up (default 60 s) switches every fault kind on once in turn, so that the first
use of every code path (imports, lxml and httpx state, malloc arenas) happens before the start
sample; then faults are cleared and the exporter settles. With attacks, RSS is sampled ("before
attacks": what the attacks' memory must come back to), each kind of attack runs once for 5 s
(the first use of what they reach, such as the server's worker threads) and the exporter
settles again. RSS and fds are sampled ("start"); the random phase lasts `--minutes`; faults and
attacks stop, the exporter must let go of every attacker's connection (within 30 s) and recover
(every company `scene7_up 1`), settles the same way, and is sampled again ("end"). Exit status
1 if a scrape failed or took longer than the bound, RSS grew beyond the threshold (from the
start, and from before the first attack), fds grew, the exporter still held an attacker's
connection, died, logged an ERROR line or an unexpected exception, did not recover, answered a
wrong password with 200 or a 429 without Retry-After. Run `python benchmarks/soak.py --help`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import http.client
import ipaddress
import json
import os
import platform
import queue
import random
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import bcrypt
import httpx
from attacks import KINDS as ATTACK_KINDS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # support.py, shared with the tests
from support import (
    Process,
    Samples,
    by_label,
    exporter_command,
    family,
    free_port,
    http_ok,
    median,
    parse_samples,
    percentile,
    proc_status,
    running,
    wait_until,
    write_self_signed_certificate,
)

from exporter.simulator.faults import FaultKind

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "soak.json"
MIB = 1024 * 1024
POLL_INTERVAL, POLL_TIMEOUT = 2.0, 1.5
# The largest normal answer (200 jobs) is 0.4 MB. With 20 MiB the oversized fault mostly ended
# as a timeout (the 1 s attempt timeout came first on a busy 2-CPU machine), and the ~0.9 MiB
# of parsed jobs the reader holds per MiB received until the cap trips made RSS swing by tens
# of MiB; 4 MiB trips in tens of ms and keeps the exporter's RSS readable.
MAX_RESPONSE_MIB = 4
SETTLE_SECONDS = 6.0  # three poll intervals with faults off before each RSS/fd sample
SCRAPE_TIMEOUT = 10.0
# Growth of VmRSS from the start to the end sample that fails the soak. Absolute, not relative:
# the noise is allocator fragmentation, which does not scale with the process; measured below
# 1 MiB over 3 minutes (66 MiB process). 8 MiB (12% of it) still catches a leak of ~9 KiB per
# poll (900 polls in 10 minutes) or ~0.4 KiB per scrape (~20,000 scrapes).
DEFAULT_RSS_THRESHOLD_MIB = 8.0
TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}
ATTACKS = Path(__file__).resolve().parent / "attacks.py"
SCRAPE_USER = "soak"  # the attackers' wrong passwords go with the same user name
BCRYPT_COST = 10
# Each legitimate scrape must be answered within this, attacks on or off. Without attacks the
# slowest of ~26,000 scrapes in 10 minutes took 0.25 s (plain HTTP).
DEFAULT_SCRAPE_BOUND = 2.0
DEFAULT_ATTACK_SOURCES = 8  # 127.0.0.2 and up
ATTACK_ON = (3.0, 30.0)  # seconds each kind of attack stays on, then off, at random
ATTACK_OFF = (5.0, 40.0)
ATTACK_FIRST = (0.0, 20.0)  # before each kind is first switched on in the random phase
ATTACK_WARMUP_STEP = 5.0  # seconds each kind of attack is on in the warm-up
ATTACK_DRAIN_TIMEOUT = 30.0  # for the exporter to let go of every attacker's connection at the end
ATTACKER_NICE = 10
ERROR_ATTRIBUTION = 2.0  # seconds: an ERROR line is put down to the attacks on then or this much before


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc sampling


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp{,6} (32-bit words in host order, little-endian here) as text;
    an IPv4-mapped IPv6 address as its IPv4 address."""
    raw = bytes.fromhex(hex_address)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def tcp_sockets(pid: int) -> dict[int, tuple[int, str, int, str]]:
    """inode -> (local port, remote address, remote port, state) of the process's network
    namespace."""
    table: dict[int, tuple[int, str, int, str]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
                if inode == 0:  # TIME_WAIT and the like: no socket of any process
                    continue
                remote_address, _, remote_port = remote.rpartition(":")
                table[inode] = (int(local.rsplit(":", 1)[1], 16), _address(remote_address), int(remote_port, 16),
                                TCP_STATES.get(state, state))
    return table


@dataclass
class FdCount:
    """Open fds of the exporter. `transient` are the connected sockets that come and go with
    traffic: scrapes being served, and the IPS client's keep-alive pool to the simulator;
    `attack_sockets` are the sockets of connections from an attacker's address, in any state;
    `stable` is everything else (files, pipes, epoll, listening sockets, sockets in
    CLOSE_WAIT), which must not grow."""

    total: int
    stable: int
    scrape_sockets: int
    ips_sockets: int
    attack_sockets: int
    kinds: dict[str, int]


def count_fds(pid: int, exporter_port: int, simulator_port: int, attackers: frozenset[str] = frozenset()) -> FdCount:
    sockets = tcp_sockets(pid)
    kinds: Counter[str] = Counter()
    scrape = ips = attack = 0
    names = os.listdir(f"/proc/{pid}/fd")
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            local, remote_address, remote, state = sockets.get(int(target[8:-1]), (0, "", 0, "non-tcp"))
            role = ("" if state == "LISTEN" else "attack " if local == exporter_port and remote_address in attackers
                    else "scrape " if local == exporter_port else "ips " if remote == simulator_port else "")
            kinds[f"socket {role}{state}"] += 1
            attack += role == "attack "
            if state == "ESTABLISHED":
                scrape += role == "scrape "
                ips += role == "ips "
        elif target.startswith("/"):
            kinds["file"] += 1
        else:
            kinds[target.split(":", 1)[0]] += 1
    total = sum(kinds.values())
    return FdCount(total, total - scrape - ips - attack, scrape, ips, attack, dict(sorted(kinds.items())))


@dataclass
class Sample:
    t: float  # seconds since the exporter started
    rss: int
    hwm: int
    fds: int
    attack_sockets: int  # the exporter's sockets of connections from attackers
    cpu: float
    load1: float


@dataclass
class Checkpoint:
    """RSS (median of 5 reads over 1 s) and fds (the read with the fewest stable fds, then the
    fewest transient, of 10 over 2 s: a connection opening at one read is not a leak)."""

    t: float
    rss: int
    fds: FdCount
    load: tuple[float, float, float]


def checkpoint(pid: int, exporter_port: int, simulator_port: int, t0: float,
               attackers: frozenset[str] = frozenset()) -> Checkpoint:
    rss: list[int] = []
    fds: list[FdCount] = []
    for i in range(10):
        if i % 2 == 0:
            rss.append(proc_status(pid)["VmRSS"])
        fds.append(count_fds(pid, exporter_port, simulator_port, attackers))
        time.sleep(0.2)
    best = min(fds, key=lambda f: (f.stable, f.total))
    return Checkpoint(round(time.monotonic() - t0, 1), int(median(rss)), best, os.getloadavg())


# --------------------------------------------------------------------------- scrapers


@dataclass(frozen=True)
class Endpoint:
    """How the legitimate clients reach the exporter: HTTPS verified against the run's own
    certificate, basic auth with the right password for /metrics."""

    port: int
    context: ssl.SSLContext
    user: str
    password: str

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


@dataclass
class ScrapeStats:
    served: int = 0
    failed: int = 0
    slow: int = 0  # served, but after longer than the bound
    max_latency: float = 0.0
    max_latency_at: float = 0.0
    # Every scrape: (start, seconds since t0; duration, seconds; path; error or None).
    records: list[tuple[float, float, str, str | None]] = field(default_factory=list)


class Scrapers:
    """`count` threads scraping /metrics with Accept-Encoding gzip and the right credentials,
    and one more probing /healthz without credentials, a new connection each time (as
    Prometheus does after an idle interval), a random pause of 0..2*pause between scrapes. A
    scrape fails on a connection or TLS error, a timeout, a status other than 200, a /metrics
    body that is not gzip or lacks the build info, a /healthz body other than "ok"; one that
    succeeds after more than `bound` seconds is slow, which fails the soak too."""

    def __init__(self, endpoint: Endpoint, count: int, pause: float, bound: float, t0: float, seed: int) -> None:
        self.endpoint, self.count, self.pause, self.bound, self.t0 = endpoint, count, pause, bound, t0
        self.stats = ScrapeStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        targets = ["/metrics"] * count + ["/healthz"]
        self._threads = [
            threading.Thread(target=self._loop, args=(path, random.Random(seed + i)), name=f"scraper-{i}", daemon=True)
            for i, path in enumerate(targets)
        ]

    @property
    def threads(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(SCRAPE_TIMEOUT + 5)

    def _loop(self, path: str, rng: random.Random) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            error = self._scrape(path)
            elapsed = time.monotonic() - started
            with self._lock:
                self.stats.records.append((round(started - self.t0, 3), elapsed, path, error))
                if error is None:
                    self.stats.served += 1
                    self.stats.slow += elapsed > self.bound
                    if elapsed > self.stats.max_latency:
                        self.stats.max_latency, self.stats.max_latency_at = elapsed, round(started - self.t0, 1)
                else:
                    self.stats.failed += 1
            self._stop.wait(rng.uniform(0, 2 * self.pause))

    def _scrape(self, path: str) -> str | None:
        conn = http.client.HTTPSConnection("127.0.0.1", self.endpoint.port, timeout=SCRAPE_TIMEOUT,
                                           context=self.endpoint.context)
        try:
            if path == "/metrics":
                conn.request("GET", path, headers={"Accept-Encoding": "gzip",
                                                   "Authorization": self.endpoint.authorization})
            else:
                conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return f"HTTP {response.status}"
            if path != "/metrics":
                return None if body == b"ok\n" else f"unexpected body {body[:40]!r}"
            if response.getheader("content-encoding") != "gzip":
                return "answer not gzip-encoded"
            text = gzip.decompress(body)
            if b"scene7_exporter_build_info" not in text or not text.endswith(b"\n"):
                return f"incomplete exposition ({len(text)} bytes)"
            return None
        except (OSError, http.client.HTTPException, EOFError) as exc:  # ssl.SSLError is an OSError
            return f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def overlaps(start: float, end: float, intervals: list[list[float]]) -> bool:
    """Whether [start, end] meets one of the [on, off] intervals (off is infinite while on)."""
    return any(start <= off and end >= on for on, off in intervals)


def scrape_figures(records: list[tuple[float, float, str, str | None]], bound: float) -> dict[str, Any]:
    ok = [d for _, d, _, error in records if error is None]
    return {
        "scrapes": len(records), "failed": len(records) - len(ok), "slow": sum(d > bound for d in ok),
        "p50_seconds": round(percentile(ok, 50), 4) if ok else 0.0,
        "p99_seconds": round(percentile(ok, 99), 4) if ok else 0.0,
        "max_seconds": round(max(ok), 4) if ok else 0.0,
    }


def scrape_report(stats: ScrapeStats, bound: float, schedule: dict[str, list[list[float]]],
                  elapsed: float) -> dict[str, Any]:
    """The scrape figures of the whole run (as before the attack phase existed), by path, and
    by phase: attacks off, on (any kind), and during each kind. A scrape belongs to a phase if
    it overlapped it at all."""
    records = stats.records
    latencies = [d for _, d, _, error in records if error is None]

    def attacks_during(start: float, duration: float) -> list[str]:
        return [kind for kind, intervals in schedule.items() if overlaps(start, start + duration, intervals)]

    failed: list[str] = []
    slow: list[str] = []
    for start, duration, path, error in records:
        if error is None and duration <= bound:
            continue
        during = ", ".join(attacks_during(start, duration)) or "no attack"
        if error is None:
            slow.append(f"t={start:.1f}s {path} ({during}): {duration:.2f} s")
        else:
            failed.append(f"t={start:.1f}s {path} ({during}): {error} after {duration:.2f} s")
    report: dict[str, Any] = {
        "served": stats.served, "failed": stats.failed, "slow": stats.slow, "bound_seconds": bound,
        "per_second": round(stats.served / max(1.0, elapsed), 1),
        "p50_seconds": round(percentile(latencies, 50), 4) if latencies else 0.0,
        "p99_seconds": round(percentile(latencies, 99), 4) if latencies else 0.0,
        "max_seconds": round(stats.max_latency, 4), "max_at_t": stats.max_latency_at,
        "failures": failed[:20], "slow_scrapes": slow[:20],
        "by_path": {path: scrape_figures([r for r in records if r[2] == path], bound)
                    for path in sorted({r[2] for r in records})},
    }
    if any(schedule.values()):
        on = [r for r in records if attacks_during(r[0], r[1])]
        off = [r for r in records if not attacks_during(r[0], r[1])]
        report["by_phase"] = {"attacks off": scrape_figures(off, bound), "attacks on": scrape_figures(on, bound)}
        for kind, intervals in schedule.items():
            report["by_phase"][f"during {kind}"] = scrape_figures(
                [r for r in records if overlaps(r[0], r[0] + r[1], intervals)], bound)
    return report


# --------------------------------------------------------------------------- faults

KINDS = [kind.value for kind in FaultKind]
PROXY_STATUSES = (500, 502, 503, 504, 403, 404, 407, 429)


def random_fault(rng: random.Random, handles: list[str]) -> dict[str, Any]:
    kind = rng.choice(KINDS)
    plan: dict[str, Any] = {"kind": kind}
    if kind == FaultKind.LATENCY:
        plan["latency"] = round(rng.uniform(0.2, 3.0), 2)  # around the 1.5 s poll timeout
    elif kind == FaultKind.HTTP_STATUS:
        plan["status"] = rng.choice(PROXY_STATUSES)
    if rng.random() < 0.4:
        plan["company"] = rng.choice(handles)
    if rng.random() < 0.5:
        plan["times"] = rng.randint(1, 6)
    return plan


class FaultSwitcher:
    """Switches the simulator's fault on or off every `min..max` seconds."""

    def __init__(self, base_url: str, handles: list[str], rng: random.Random, t0: float) -> None:
        self.url = base_url + "/simulator/faults"
        self.handles, self.rng, self.t0 = handles, rng, t0
        self.switched: Counter[str] = Counter()
        self.cleared = 0
        self.errors: list[str] = []
        self.events: list[tuple[float, dict[str, Any] | None]] = []
        self._client = httpx.Client(timeout=5, trust_env=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set(self, plan: dict[str, Any] | None) -> None:
        try:
            if plan is None:
                response = self._client.delete(self.url)
                self.cleared += 1
            else:
                response = self._client.post(self.url, json=plan)
                self.switched[plan["kind"]] += 1
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.errors.append(f"{plan}: {exc!r}")
        self.events.append((round(time.monotonic() - self.t0, 1), plan))

    def injected(self) -> int | None:
        try:
            return int(self._client.get(self.url).json()["injected"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def start_random(self, low: float = 2.0, high: float = 6.0) -> None:
        def loop() -> None:
            while not self._stop.wait(self.rng.uniform(low, high)):
                self.set(None if self.rng.random() < 0.25 else random_fault(self.rng, self.handles))

        self._thread = threading.Thread(target=loop, name="faults", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.set(None)

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------- attacks


class Attackers:
    """benchmarks/attacks.py in a child process (its stderr in `attacks.log`), and when each
    kind of attack was on: `schedule[kind]` is a list of [on, off] in seconds since t0, off
    infinite while the attack is on."""

    def __init__(self, work: Path, port: int, sources: list[str], seed: int, t0: float) -> None:
        self.sources, self.t0 = sources, t0
        self.schedule: dict[str, list[list[float]]] = {kind: [] for kind in ATTACK_KINDS}
        self.rng = random.Random(f"attacks-{seed}")  # the faults' sequence stays that of --no-attacks
        self._log = (work / "attacks.log").open("wb")
        # Its own end of stdin ends it if this process dies: no PR_SET_PDEATHSIG needed.
        self.proc = subprocess.Popen(
            [sys.executable, str(ATTACKS), f"--port={port}", f"--sources={','.join(sources)}",
             f"--user={SCRAPE_USER}", f"--seed={seed}", f"--nice={ATTACKER_NICE}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        threading.Thread(target=self._read, args=(self.proc.stdout,), name="attacks-out", daemon=True).start()

    def _read(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self._lines.put(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, line: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # a dead child is reported by alive()
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def active(self) -> list[str]:
        return [kind for kind, intervals in self.schedule.items() if intervals and intervals[-1][1] == float("inf")]

    def switch(self, kind: str, on: bool) -> None:
        intervals = self.schedule[kind]
        is_on = bool(intervals) and intervals[-1][1] == float("inf")
        if on == is_on:
            return
        now = round(time.monotonic() - self.t0, 2)
        if on:
            intervals.append([now, float("inf")])
        else:
            intervals[-1][1] = now
        self._send(f"{'on' if on else 'off'} {kind}")

    def warm_up(self, step: float, alive: Callable[[], bool]) -> None:
        """Each kind on for `step` seconds, in turn."""
        for kind in ATTACK_KINDS:
            self.switch(kind, True)
            time.sleep(step)
            self.switch(kind, False)
            if not alive():
                return

    def start_random(self) -> None:
        """Each kind on for ATTACK_ON and off for ATTACK_OFF seconds at random, independently."""
        def loop() -> None:
            due = {kind: time.monotonic() + self.rng.uniform(*ATTACK_FIRST) for kind in ATTACK_KINDS}
            while not self._stop.wait(0.2):
                now = time.monotonic()
                for kind, at in due.items():
                    if now >= at:
                        on = kind not in self.active()
                        self.switch(kind, on)
                        due[kind] = now + self.rng.uniform(*(ATTACK_ON if on else ATTACK_OFF))

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="attacks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Every attack off (the attackers close their connections)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for kind in ATTACK_KINDS:
            self.switch(kind, False)

    def report(self, command: str = "report", timeout: float = 10.0) -> dict[str, Any] | None:
        """The child's counters, None if it does not answer within `timeout` seconds."""
        with contextlib.suppress(queue.Empty):
            while True:  # a late answer to an earlier request
                self._lines.get_nowait()
        self._send(command)
        try:
            report: dict[str, Any] = json.loads(self._lines.get(timeout=timeout))
        except (queue.Empty, ValueError):
            return None
        return report

    def open_now(self) -> str:
        """Connections the attackers hold now, by kind, or why that is unknown."""
        report = self.report()
        if report is None:
            return "not answering"
        return ", ".join(f"{kind} {f['open_now']}" for kind, f in report["by_kind"].items() if f["open_now"]) or "-"

    def close(self) -> dict[str, Any] | None:
        """Stop the child; its last report, None if it gave none."""
        self.stop()
        report = self.report("quit", timeout=60)
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        return report

    def schedule_json(self) -> dict[str, list[list[float | None]]]:
        return {kind: [[on, None if off == float("inf") else off] for on, off in intervals]
                for kind, intervals in self.schedule.items()}


def attack_failures(report: dict[str, Any]) -> list[str]:
    """What the attackers saw that fails the soak by itself."""
    failures = []
    flood = report["by_kind"].get("wrong_password", {}).get("counts", {})
    if flood.get("answered 200"):
        failures.append(f"{flood['answered 200']} requests with a wrong password were answered 200")
    if flood.get("429 WITHOUT Retry-After"):
        failures.append(f"{flood['429 WITHOUT Retry-After']} answers 429 without Retry-After")
    for kind, figures in report["by_kind"].items():
        if figures.get("attacker_errors"):
            failures.append(f"the {kind} attacker itself failed (a bug of the soak): {figures['attacker_errors'][0]}")
    return failures


# --------------------------------------------------------------------------- metrics


def read_metrics(endpoint: Endpoint) -> Samples:
    """The exporter's health families: what all_up() and poll_figures() read."""
    text = httpx.get(endpoint.url("/metrics"), timeout=SCRAPE_TIMEOUT, trust_env=False, verify=endpoint.context,
                     auth=(endpoint.user, endpoint.password)).text
    return parse_samples(text, names=["scene7_up", "scene7_polls_total", "scene7_poll_errors_total",
                                      "scene7_invalid_records_total"])


def poll_figures(samples: Samples) -> dict[str, Any]:
    return {
        "polls": int(sum(family(samples, "scene7_polls_total").values())),
        "polls_by_company": by_label(samples, "scene7_polls_total", "company"),
        "errors_by_reason": {k: int(v) for k, v in by_label(samples, "scene7_poll_errors_total", "reason").items()},
        "invalid_records": int(sum(family(samples, "scene7_invalid_records_total").values())),
    }


def exporter_log_summary(path: Path, wall_t0: float = 0.0,
                         schedule: dict[str, list[list[float]]] | None = None) -> dict[str, Any]:
    """Lines by level of the exporter's JSON log, the unexpected exceptions in it, and its ERROR
    (and CRITICAL) lines: the first 20, each with the attacks on when it was logged (or up to
    ERROR_ATTRIBUTION seconds before: a connection outlives its attack's switch-off a little),
    and their count by those attacks (`wall_t0` is the wall-clock time of t0)."""
    levels: Counter[str] = Counter()
    exceptions: list[str] = []
    errors: list[str] = []
    errors_during: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            levels["not json"] += 1
            if "Traceback" in line:
                exceptions.append(line[:300])
            continue
        levels[entry.get("level", "?")] += 1
        text = str(entry.get("msg"))
        if "exc" in entry:
            text = f"{text}: {entry['exc'].splitlines()[-1]}"
            exceptions.append(text[:300])
        if entry.get("level") in ("error", "critical"):
            during = "no attack"
            with contextlib.suppress(KeyError, ValueError, TypeError):
                t = datetime.fromisoformat(entry["time"]).timestamp() - wall_t0
                during = ", ".join(k for k, v in (schedule or {}).items()
                                   if overlaps(t - ERROR_ATTRIBUTION, t, v)) or "no attack"
                text = f"t={t:.1f}s ({during}): {text}"
            errors_during[during] += 1
            if len(errors) < 20:
                errors.append(text[:300])
    return {"lines_by_level": dict(levels), "exceptions": exceptions[:50], "exceptions_total": len(exceptions),
            "errors": errors, "errors_by_attacks_on": dict(errors_during)}


# --------------------------------------------------------------------------- the soak


def write_config(work: Path, simulator_port: int, exporter_port: int) -> Path:
    # 127.0.0.1 only: the attackers' 127.0.0.2-9 reach it all the same (lo carries 127.0.0.0/8).
    path = work / "exporter.yml"
    path.write_text(
        "accounts:\n"
        "  - name: soak\n"
        f"    endpoint: http://127.0.0.1:{simulator_port}/scene7/services/IpsApiService\n"
        "    user: demo@example.com\n"
        f"    max_response_size: {MAX_RESPONSE_MIB}MiB\n"
        f"poll: {{interval: {POLL_INTERVAL:g}s, timeout: {POLL_TIMEOUT:g}s}}\n"
        f'web: {{listen_address: "127.0.0.1:{exporter_port}", probes_without_auth: true}}\n'
        "log: {level: info, format: json}\n"
    )
    return path


def write_web_config(work: Path, password: str) -> tuple[Path, ssl.SSLContext]:
    """The exporter-toolkit web config (TLS, basic auth of SCRAPE_USER) and a client context
    that verifies the exporter's certificate."""
    cert_file, key_file = write_self_signed_certificate(work, "scene7-exporter soak")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    path = work / "web.yml"
    path.write_text(
        f"tls_server_config: {{cert_file: {json.dumps(str(cert_file))}, key_file: {json.dumps(str(key_file))}}}\n"
        f"basic_auth_users: {{{SCRAPE_USER}: {json.dumps(hashed)}}}\n"
    )
    return path, ssl.create_default_context(cafile=str(cert_file))


@contextlib.contextmanager
def children(work: Path, seed: int, jobs: int) -> Iterator[tuple[Process, Process, int, Endpoint]]:
    simulator_port, exporter_port = free_port(), free_port()
    simulate = exporter_command("simulate", f"--web.listen-address=127.0.0.1:{simulator_port}", f"--jobs={jobs}",
                                "--time-scale=60", f"--seed={seed}")
    password = secrets.token_urlsafe(18)
    web_config, context = write_web_config(work, password)
    endpoint = Endpoint(exporter_port, context, SCRAPE_USER, password)
    with running("simulator", simulate, work, lambda: http_ok(f"http://127.0.0.1:{simulator_port}/simulator/faults"),
                 timeout=60, cwd=ROOT) as simulator:
        run = exporter_command("run", f"--config.file={write_config(work, simulator_port, exporter_port)}",
                               f"--web.config.file={web_config}")
        with running("exporter", run, work, lambda: http_ok(endpoint.url("/readyz"), verify=context),
                     timeout=60, cwd=ROOT, env={"SCENE7_EXPORTER_PASSWORD": "demo"}) as exporter:
            yield simulator, exporter, simulator_port, endpoint


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sources = [f"127.0.0.{i}" for i in range(2, 2 + args.attack_sources)]
    result: dict[str, Any] = {
        "settings": {
            "minutes": args.minutes, "warmup_seconds": args.warmup, "scrapers": args.scrapers,
            "scrape_pause_seconds": args.scrape_pause, "seed": args.seed, "jobs": args.jobs,
            "time_scale": 60, "poll_interval": POLL_INTERVAL, "poll_timeout": POLL_TIMEOUT,
            "max_response_size_mib": MAX_RESPONSE_MIB, "rss_threshold_mib": args.rss_threshold_mib,
            "settle_seconds": SETTLE_SECONDS, "scrape_bound_seconds": args.scrape_bound,
            "tls": True, "basic_auth_bcrypt_cost": BCRYPT_COST, "healthz_probers": 1,
            "attacks": not args.no_attacks, "attack_sources": [] if args.no_attacks else sources,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "failures": [],
    }
    failures: list[str] = result["failures"]
    attacker_set = frozenset(sources)
    with children(work, args.seed, args.jobs) as (simulator, exporter, simulator_port, endpoint):
        t0 = time.monotonic()
        wall_t0 = time.time()
        exporter_port = endpoint.port
        base = f"http://127.0.0.1:{simulator_port}"
        handles = [c["handle"] for c in httpx.get(base + "/simulator/world", timeout=10).json()["companies"]]

        def all_up() -> bool:
            up = family(read_metrics(endpoint), "scene7_up")
            return len(up) == len(handles) and all(v == 1 for v in up.values())

        def fds() -> FdCount:
            return count_fds(exporter.pid, exporter_port, simulator_port, attacker_set)

        wait_until(all_up, 30, "every company polled once")
        log(f"simulator pid {simulator.pid} :{simulator_port}, exporter pid {exporter.pid} :{exporter_port} "
            f"(https, basic auth), companies {handles}")

        samples: list[Sample] = []
        stop_sampling = threading.Event()

        def sample_loop() -> None:
            while exporter.alive() and not stop_sampling.is_set():
                with contextlib.suppress(OSError, KeyError):
                    status = proc_status(exporter.pid)
                    count = fds()
                    samples.append(Sample(round(time.monotonic() - t0, 1), status["VmRSS"], status["VmHWM"],
                                          count.total, count.attack_sockets,
                                          round(cpu_seconds(exporter.pid), 2), os.getloadavg()[0]))
                stop_sampling.wait(args.sample_every)

        sampler = threading.Thread(target=sample_loop, name="sampler", daemon=True)
        sampler.start()
        scrapers = Scrapers(endpoint, args.scrapers, args.scrape_pause, args.scrape_bound, t0, args.seed)
        scrapers.start()
        switcher = FaultSwitcher(base, handles, rng, t0)
        attackers = None if args.no_attacks else Attackers(work, exporter_port, sources, args.seed, t0)
        attack_report: dict[str, Any] | None = None
        try:
            # Warm-up: every kind once, on every company, for an equal share of the time.
            step = max(2.0, (args.warmup - SETTLE_SECONDS) / len(KINDS))
            log(f"warm-up: each of the {len(KINDS)} fault kinds for {step:.1f}s")
            for kind in KINDS:
                plan: dict[str, Any] = {"kind": kind}
                if kind == FaultKind.LATENCY:
                    plan["latency"] = 2.0
                switcher.set(plan)
                time.sleep(step)
                if not exporter.alive():
                    break
            switcher.set(None)
            time.sleep(SETTLE_SECONDS)
            before_attacks: Checkpoint | None = None
            if attackers is not None and exporter.alive():
                # The RSS the attacks' memory must come back to, then each attack once (its
                # first use: the server's worker threads, say) before the start sample.
                before_attacks = checkpoint(exporter.pid, exporter_port, simulator_port, t0, attacker_set)
                result["before_attacks"] = asdict(before_attacks)
                log(f"before attacks: RSS {before_attacks.rss / MIB:.1f} MiB; warm-up: each of the "
                    f"{len(ATTACK_KINDS)} attacks for {ATTACK_WARMUP_STEP:g}s")
                attackers.warm_up(ATTACK_WARMUP_STEP, exporter.alive)
                result["warmup_attack_sockets_drained_seconds"] = drain_attack_sockets(fds, exporter.alive)
                time.sleep(SETTLE_SECONDS)
            if exporter.alive():
                start = checkpoint(exporter.pid, exporter_port, simulator_port, t0, attacker_set)
                start_metrics = poll_figures(read_metrics(endpoint))
                cpu_start = cpu_seconds(exporter.pid)
                log(f"start: RSS {start.rss / MIB:.1f} MiB, fds {start.fds.total} "
                    f"(stable {start.fds.stable}), load {start.load[0]:.2f}")

                log(f"random faults for {args.minutes:g} min"
                    + ("" if attackers is None else ", and attacks on the exporter's port"))
                switcher.start_random()
                if attackers is not None:
                    attackers.start_random()
                deadline = time.monotonic() + args.minutes * 60
                next_note = time.monotonic() + 60
                while time.monotonic() < deadline and exporter.alive() and simulator.alive():
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                    if attackers is not None and not attackers.alive():
                        failures.append(f"the attacker process died (exit {attackers.proc.returncode}), "
                                        "see attacks.log")
                        break
                    if time.monotonic() >= next_note:
                        next_note += 60
                        last = samples[-1] if samples else None
                        log(f"t={time.monotonic() - t0:.0f}s scrapes {scrapers.stats.served} "
                            f"(failed {scrapers.stats.failed}, slow {scrapers.stats.slow}), "
                            f"faults {sum(switcher.switched.values())}"
                            + (f", RSS {last.rss / MIB:.1f} MiB, fds {last.fds} "
                               f"(attackers' {last.attack_sockets}), load {last.load1:.2f}" if last else "")
                            + ("" if attackers is None else f", attacks on: {', '.join(attackers.active()) or '-'} "
                               f"(attackers' connections open: {attackers.open_now()})"))
                switcher.stop()
                measured = time.monotonic() - t0 - start.t
                if attackers is not None:
                    attackers.stop()
                    drained = drain_attack_sockets(fds, exporter.alive)
                    if drained is None:
                        left = fds()
                        failures.append(f"the exporter still held {left.attack_sockets} connections from attackers "
                                        f"{ATTACK_DRAIN_TIMEOUT:g} s after the attacks stopped: {left.kinds}")
                    result["attack_sockets_drained_seconds"] = drained
                if exporter.alive():
                    cleared = time.monotonic()
                    try:
                        wait_until(all_up, max(15.0, 5 * POLL_INTERVAL), "every company up again", interval=0.5)
                        result["recovery_seconds"] = round(time.monotonic() - cleared, 1)
                    except AssertionError as exc:
                        failures.append(f"exporter did not recover after the faults were cleared: {exc}")
                    time.sleep(max(0.0, SETTLE_SECONDS - (time.monotonic() - cleared)))
                if exporter.alive():
                    end = checkpoint(exporter.pid, exporter_port, simulator_port, t0, attacker_set)
                    cpu_end = cpu_seconds(exporter.pid)
                    end_metrics = poll_figures(read_metrics(endpoint))
                    log(f"end: RSS {end.rss / MIB:.1f} MiB, fds {end.fds.total} (stable {end.fds.stable})")
                    result["start"], result["end"] = asdict(start), asdict(end)
                    result["measured_seconds"] = round(measured, 1)
                    result["exporter_cpu_percent"] = round(100 * (cpu_end - cpu_start) / (end.t - start.t), 1)
                    result["polls_total"] = end_metrics
                    result["polls_measured"] = {
                        "polls": end_metrics["polls"] - start_metrics["polls"],
                        "expected_about": round(measured / POLL_INTERVAL * len(handles)),
                        "errors_by_reason": {
                            k: v - start_metrics["errors_by_reason"].get(k, 0)
                            for k, v in end_metrics["errors_by_reason"].items()
                        },
                    }
                    growth = (end.rss - start.rss) / MIB
                    if growth > args.rss_threshold_mib:
                        failures.append(f"RSS grew by {growth:.1f} MiB (threshold {args.rss_threshold_mib:g} MiB)")
                    if before_attacks is not None:
                        kept = (end.rss - before_attacks.rss) / MIB
                        if kept > args.rss_threshold_mib:
                            failures.append(f"the attacks' memory did not come back: RSS {kept:.1f} MiB above "
                                            f"its level before the first attack, "
                                            f"{(start.rss - before_attacks.rss) / MIB:.1f} MiB of it left by the "
                                            f"warm-up's attacks (threshold {args.rss_threshold_mib:g} MiB)")
                    if end.fds.stable > start.fds.stable:
                        failures.append(f"stable fds grew from {start.fds.stable} to {end.fds.stable}: "
                                        f"{start.fds.kinds} -> {end.fds.kinds}")
                    if end.fds.ips_sockets > max(start.fds.ips_sockets, len(handles)):
                        failures.append(f"IPS client sockets grew: {start.fds.ips_sockets} -> {end.fds.ips_sockets}")
                    if end.fds.scrape_sockets > scrapers.threads:
                        failures.append(f"{end.fds.scrape_sockets} scrape sockets open for {scrapers.threads} "
                                        "scrapers")
                    if end.fds.attack_sockets:
                        failures.append(f"{end.fds.attack_sockets} sockets of attackers' connections still open "
                                        f"at the end: {end.fds.kinds}")
        except Exception as exc:  # e.g. /proc vanishing under a dying exporter: report, not crash
            failures.append(f"soak aborted: {type(exc).__name__}: {exc}")
        finally:
            switcher.stop()
            result["faults"] = {
                "switched_on_by_kind": dict(sorted(switcher.switched.items())),
                "cleared": switcher.cleared,
                "injected_by_simulator": switcher.injected(),
                "switch_errors": switcher.errors[:20],
            }
            switcher.close()
            schedule: dict[str, list[list[float]]] = {}
            if attackers is not None:
                attack_report = attackers.close()
                schedule = attackers.schedule
            scrapers.stop()
            stop_sampling.set()
            sampler.join(10)
            stats = scrapers.stats
            result["scrapes"] = scrape_report(stats, args.scrape_bound, schedule, time.monotonic() - t0)
            if stats.failed:
                failures.append(f"{stats.failed} scrapes failed, first: {result['scrapes']['failures'][0]}")
            if stats.slow:
                failures.append(f"{stats.slow} scrapes took longer than {args.scrape_bound:g} s, first: "
                                f"{result['scrapes']['slow_scrapes'][0]}; max {stats.max_latency:.2f} s "
                                f"at t={stats.max_latency_at}s")
            if attackers is not None:
                result["attacks"] = attack_summary(attack_report, attackers, samples)
                if attack_report is None:
                    failures.append("the attacker process gave no report, see attacks.log")
                else:
                    failures.extend(attack_failures(attack_report))
            loads = [s.load1 for s in samples]
            result["load_average"] = {
                "at_end": [round(x, 2) for x in os.getloadavg()],
                "load1_min": min(loads, default=0.0), "load1_max": max(loads, default=0.0),
                "load1_mean": round(statistics.fmean(loads), 2) if loads else 0.0,
            }
            result["peak_rss_bytes"] = max((s.hwm for s in samples), default=0)
            result["samples"] = [asdict(s) for s in samples]
            if not exporter.alive():
                failures.append(f"the exporter died (exit {exporter.proc.returncode})")
            if not simulator.alive():
                failures.append(f"the simulator died (exit {simulator.proc.returncode})")
            exporter_ok = exporter.alive()
    # Out of the `with`: the children have been sent SIGTERM and have exited.
    if exporter_ok:
        result["exporter_exit_code_on_sigterm"] = exporter.proc.returncode
        if exporter.proc.returncode != 0:
            failures.append(f"the exporter exited with {exporter.proc.returncode} on SIGTERM")
    result["exporter_log"] = exporter_log_summary(exporter.log_path, wall_t0, schedule)
    exporter_log = result["exporter_log"]
    errors = sum(exporter_log["errors_by_attacks_on"].values())
    if errors or exporter_log["exceptions_total"]:
        first = (exporter_log["errors"] or exporter_log["exceptions"])[0]
        failures.append(f"the exporter logged {errors} ERROR lines and {exporter_log['exceptions_total']} "
                        f"unexpected exceptions, first: {first}")
    return result


def drain_attack_sockets(fds: Callable[[], FdCount], alive: Callable[[], bool]) -> float | None:
    """Seconds until the exporter holds no connection from an attacker any more; None if it
    still does after ATTACK_DRAIN_TIMEOUT."""
    started = time.monotonic()
    while time.monotonic() - started < ATTACK_DRAIN_TIMEOUT and alive():
        with contextlib.suppress(OSError):
            if fds().attack_sockets == 0:
                return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def attack_summary(report: dict[str, Any] | None, attackers: Attackers, samples: list[Sample]) -> dict[str, Any]:
    return {
        "sources": attackers.sources,
        "attacker_cpu_seconds": report["cpu_seconds"] if report else None,
        "exporter_attack_sockets_max": max((s.attack_sockets for s in samples), default=0),
        "schedule": attackers.schedule_json(),
        "by_kind": report["by_kind"] if report else {},
    }


def markdown(result: dict[str, Any]) -> str:
    s, scrapes, load = result["settings"], result["scrapes"], result["load_average"]
    rows = [
        ("duration", f"{s['warmup_seconds']:g} s warm-up + {s['minutes']:g} min random faults "
                     f"(measured {result.get('measured_seconds', '-')} s)"),
        ("scrapers", f"{s['scrapers']} threads on /metrics (gzip, basic auth) and {s.get('healthz_probers', 0)} "
                     f"on /healthz, over TLS, pause 0..{2 * s['scrape_pause_seconds']:g} s"),
    ]
    if "start" in result:
        start, end = result["start"], result["end"]
        measured = result["polls_measured"]
        errors = ", ".join(f"{k} {v}" for k, v in measured["errors_by_reason"].items() if v) or "none"
        total_errors = ", ".join(f"{k} {v}" for k, v in result["polls_total"]["errors_by_reason"].items() if v)
        rows += [
            ("polls (random phase)", f"{measured['polls']} (about {measured['expected_about']} expected)"),
            ("failed polls by reason (random phase)", errors),
            ("polls / failed by reason (whole run)", f"{result['polls_total']['polls']} / {total_errors or 'none'}"),
            ("invalid records skipped (whole run)", str(result["polls_total"]["invalid_records"])),
            ("recovery after faults cleared", f"{result.get('recovery_seconds', '-')} s"),
            ("RSS start -> end", f"{start['rss'] / MIB:.1f} -> {end['rss'] / MIB:.1f} MiB "
                                 f"({(end['rss'] - start['rss']) / MIB:+.1f}; threshold {s['rss_threshold_mib']:g})"),
            *([("RSS before the first attack -> end",
                f"{result['before_attacks']['rss'] / MIB:.1f} -> {end['rss'] / MIB:.1f} MiB "
                f"({(end['rss'] - result['before_attacks']['rss']) / MIB:+.1f}; threshold {s['rss_threshold_mib']:g})")]
              if "before_attacks" in result else []),
            ("peak RSS (VmHWM)", f"{result['peak_rss_bytes'] / MIB:.1f} MiB"),
            ("fds start -> end", f"{start['fds']['total']} -> {end['fds']['total']} (stable "
                                 f"{start['fds']['stable']} -> {end['fds']['stable']})"),
            ("exporter CPU", f"{result['exporter_cpu_percent']}% of one core"),
        ]
    faults = result["faults"]
    rows += [
        ("scrapes served / failed / slow",
         f"{scrapes['served']} / {scrapes['failed']} / {scrapes.get('slow', 0)} "
         f"({scrapes['per_second']}/s; slow: over {s.get('scrape_bound_seconds')} s)"),
        ("scrape latency p50 / p99 / max",
         f"{scrapes['p50_seconds'] * 1000:.1f} / {scrapes['p99_seconds'] * 1000:.1f} / "
         f"{scrapes['max_seconds'] * 1000:.1f} ms (max at t={scrapes['max_at_t']}s)"),
        ("faults switched on", f"{sum(faults['switched_on_by_kind'].values())} "
                               f"({', '.join(f'{k} {v}' for k, v in faults['switched_on_by_kind'].items())}); "
                               f"cleared {faults['cleared']}; injected {faults['injected_by_simulator']}"),
        ("load average 1 min (min / mean / max)", f"{load['load1_min']:.2f} / {load['load1_mean']:.2f} / "
                                                  f"{load['load1_max']:.2f} on {result['machine']['cpus']} CPUs"),
        ("exporter log", ", ".join(f"{k} {v}" for k, v in result["exporter_log"]["lines_by_level"].items())),
    ]
    attacks = result.get("attacks")
    if attacks:
        rows += [
            ("attacks", f"from {attacks['sources'][0]}-{attacks['sources'][-1]}; attacker CPU "
                        f"{attacks['attacker_cpu_seconds']} s; exporter held at most "
                        f"{attacks['exporter_attack_sockets_max']} attackers' sockets (sampled); let go of the last "
                        f"{result.get('attack_sockets_drained_seconds', '-')} s after they stopped"),
        ]
    rows.append(("verdict", "PASS" if not result["failures"] else "FAIL: " + "; ".join(result["failures"])))
    tables = ["\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])]
    if "by_path" in scrapes:
        lines = ["| scrapes | count | failed | slow | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
        for name, f in [*scrapes["by_path"].items(), *scrapes.get("by_phase", {}).items()]:
            lines.append(f"| {name} | {f['scrapes']} | {f['failed']} | {f['slow']} | {f['p50_seconds'] * 1000:.1f} | "
                         f"{f['p99_seconds'] * 1000:.1f} | {f['max_seconds'] * 1000:.1f} |")
        tables.append("\n".join(lines))
    if attacks and attacks["by_kind"]:
        lines = ["| attack | on | connections (max open) | what happened |", "|---|---|---|---|"]
        for kind, f in attacks["by_kind"].items():
            counts = {k: v for k, v in f["counts"].items() if k != "connections opened"}
            held = "; ".join(f"{k}: held p50 {v['p50']} s, max {v['max']} s" for k, v in
                             f["held_until_server_closed_seconds"].items() if v["n"])
            answer = f"; answer p50 {f['answer_seconds']['p50']} s, max {f['answer_seconds']['max']} s" \
                if "answer_seconds" in f else ""
            lines.append(f"| {kind} | {f['switched_on']}x, {f['on_seconds']} s | "
                         f"{f['counts'].get('connections opened', 0)} ({f['open_max']}) | "
                         + ", ".join(f"{k} {v}" for k, v in counts.items()) + (f"; {held}" if held else "")
                         + answer + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the random phase (IPS faults and attacks)")
    parser.add_argument("--scrapers", type=int, default=4, help="concurrent scraper threads")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults and of the simulator")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of warm-up before the start sample")
    parser.add_argument("--jobs", type=int, default=200, help="active jobs of the simulator")
    parser.add_argument("--scrape-pause", type=float, default=0.1,
                        help="mean pause of each scraper between scrapes, seconds")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument("--rss-threshold-mib", type=float, default=DEFAULT_RSS_THRESHOLD_MIB,
                        help="RSS growth from start (and from before the first attack) to end that fails the soak")
    parser.add_argument("--scrape-bound", type=float, default=DEFAULT_SCRAPE_BOUND,
                        help="seconds within which every legitimate scrape must be answered")
    parser.add_argument("--no-attacks", action="store_true",
                        help="no attack phase on the exporter's port: IPS faults alone")
    parser.add_argument("--attack-sources", type=int, default=DEFAULT_ATTACK_SOURCES,
                        help="attacker source addresses, 127.0.0.2 and up (1-250)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.scrapers < 1:
        parser.error("--minutes must be positive and --scrapers at least 1")
    if not 1 <= args.attack_sources <= 250 or args.scrape_bound <= 0:
        parser.error("--attack-sources must be 1-250 and --scrape-bound positive")

    # SIGTERM (e.g. from a CI timeout) unwinds through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="scene7-soak-"))
    result: dict[str, Any] = {}
    try:
        result = soak(args, work)
    finally:
        failed = not result or bool(result.get("failures"))
        if failed or args.keep:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    log(f"JSON written to {args.output}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
