#!/usr/bin/env python3
"""Soak test: the real exporter against the IPS simulator with random faults, for N minutes,
under concurrent scrapes. It answers "does it stay up, keep serving, and not leak?", which the
unit tests (seconds long) and bench.py (performance) do not.

Two child processes on 127.0.0.1: `exporter.cli simulate` (200 jobs, 3 companies, time scale
60) and `exporter.cli run` (poll every 2 s, timeout 1.5 s, max_response_size 20 MiB). While
`--scrapers` threads scrape /metrics (gzip) in a loop, a switcher turns a random fault of the
simulator on (`POST /simulator/faults`: any kind, sometimes for one company, sometimes for a few
requests only) or off every 2-6 s.

Phases: a warm-up (default 60 s) switches every fault kind on once in turn, so that the first
use of every code path (imports, lxml and httpx state, malloc arenas) happens before the start
sample; then faults are cleared, the exporter settles and RSS and fds are sampled ("start"); the
random phase lasts `--minutes`; faults are cleared again, the exporter must recover (every
company `scene7_up 1`), settles the same way, and is sampled again ("end"). Exit status 1 if a
scrape failed, RSS grew beyond the threshold, fds grew, the exporter died, logged an unexpected
exception or did not recover. Run `python benchmarks/soak.py --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc sampling


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_sockets(pid: int) -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of the process's network namespace."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
                table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                                TCP_STATES.get(state, state))
    return table


@dataclass
class FdCount:
    """Open fds of the exporter. `transient` are the connected sockets that come and go with
    traffic: scrapes being served, and the IPS client's keep-alive pool to the simulator;
    `stable` is everything else (files, pipes, epoll, listening sockets, sockets in
    CLOSE_WAIT), which must not grow."""

    total: int
    stable: int
    scrape_sockets: int
    ips_sockets: int
    kinds: dict[str, int]


def count_fds(pid: int, exporter_port: int, simulator_port: int) -> FdCount:
    sockets = tcp_sockets(pid)
    kinds: Counter[str] = Counter()
    scrape = ips = 0
    names = os.listdir(f"/proc/{pid}/fd")
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            local, remote, state = sockets.get(int(target[8:-1]), (0, 0, "non-tcp"))
            role = ("" if state == "LISTEN" else "scrape " if local == exporter_port
                    else "ips " if remote == simulator_port else "")
            kinds[f"socket {role}{state}"] += 1
            if state == "ESTABLISHED":
                scrape += role == "scrape "
                ips += role == "ips "
        elif target.startswith("/"):
            kinds["file"] += 1
        else:
            kinds[target.split(":", 1)[0]] += 1
    total = sum(kinds.values())
    return FdCount(total, total - scrape - ips, scrape, ips, dict(sorted(kinds.items())))


@dataclass
class Sample:
    t: float  # seconds since the exporter started
    rss: int
    hwm: int
    fds: int
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


def checkpoint(pid: int, exporter_port: int, simulator_port: int, t0: float) -> Checkpoint:
    rss: list[int] = []
    fds: list[FdCount] = []
    for i in range(10):
        if i % 2 == 0:
            rss.append(proc_status(pid)["VmRSS"])
        fds.append(count_fds(pid, exporter_port, simulator_port))
        time.sleep(0.2)
    best = min(fds, key=lambda f: (f.stable, f.total))
    return Checkpoint(round(time.monotonic() - t0, 1), int(median(rss)), best, os.getloadavg())


# --------------------------------------------------------------------------- scrapers


@dataclass
class ScrapeStats:
    served: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    max_latency: float = 0.0
    max_latency_at: float = 0.0
    failures: list[str] = field(default_factory=list)  # the first 20, with their time


class Scrapers:
    """`count` threads scraping /metrics with Accept-Encoding gzip, a new connection each time
    (as Prometheus does after an idle interval), a random pause of 0..2*pause between scrapes.
    A scrape fails on a connection error, a timeout, a status other than 200, a body that is
    not gzip or lacks the build info."""

    def __init__(self, port: int, count: int, pause: float, t0: float, seed: int) -> None:
        self.port, self.count, self.pause, self.t0 = port, count, pause, t0
        self.stats = ScrapeStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(random.Random(seed + i),), name=f"scraper-{i}", daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(SCRAPE_TIMEOUT + 5)

    def _loop(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            error = self._scrape()
            elapsed = time.monotonic() - started
            with self._lock:
                if error is None:
                    self.stats.served += 1
                    self.stats.latencies.append(elapsed)
                    if elapsed > self.stats.max_latency:
                        self.stats.max_latency, self.stats.max_latency_at = elapsed, round(started - self.t0, 1)
                else:
                    self.stats.failed += 1
                    if len(self.stats.failures) < 20:
                        self.stats.failures.append(f"t={started - self.t0:.1f}s: {error}")
            self._stop.wait(rng.uniform(0, 2 * self.pause))

    def _scrape(self) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SCRAPE_TIMEOUT)
        try:
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return f"HTTP {response.status}"
            if response.getheader("content-encoding") != "gzip":
                return "answer not gzip-encoded"
            text = gzip.decompress(body)
            if b"scene7_exporter_build_info" not in text or not text.endswith(b"\n"):
                return f"incomplete exposition ({len(text)} bytes)"
            return None
        except (OSError, http.client.HTTPException, EOFError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


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


# --------------------------------------------------------------------------- metrics


def read_metrics(port: int) -> Samples:
    """The exporter's health families: what all_up() and poll_figures() read."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT, trust_env=False).text
    return parse_samples(text, names=["scene7_up", "scene7_polls_total", "scene7_poll_errors_total",
                                      "scene7_invalid_records_total"])


def poll_figures(samples: Samples) -> dict[str, Any]:
    return {
        "polls": int(sum(family(samples, "scene7_polls_total").values())),
        "polls_by_company": by_label(samples, "scene7_polls_total", "company"),
        "errors_by_reason": {k: int(v) for k, v in by_label(samples, "scene7_poll_errors_total", "reason").items()},
        "invalid_records": int(sum(family(samples, "scene7_invalid_records_total").values())),
    }


def exporter_log_summary(path: Path) -> dict[str, Any]:
    """Lines by level of the exporter's JSON log, and the unexpected exceptions in it."""
    levels: Counter[str] = Counter()
    exceptions: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            levels["not json"] += 1
            if "Traceback" in line:
                exceptions.append(line[:300])
            continue
        levels[entry.get("level", "?")] += 1
        if "exc" in entry:
            exceptions.append(f"{entry.get('msg')}: {entry['exc'].splitlines()[-1]}"[:300])
    return {"lines_by_level": dict(levels), "exceptions": exceptions}


# --------------------------------------------------------------------------- the soak


def write_config(work: Path, simulator_port: int, exporter_port: int) -> Path:
    path = work / "exporter.yml"
    path.write_text(
        "accounts:\n"
        "  - name: soak\n"
        f"    endpoint: http://127.0.0.1:{simulator_port}/scene7/services/IpsApiService\n"
        "    user: demo@example.com\n"
        f"    max_response_size: {MAX_RESPONSE_MIB}MiB\n"
        f"poll: {{interval: {POLL_INTERVAL:g}s, timeout: {POLL_TIMEOUT:g}s}}\n"
        f'web: {{listen_address: "127.0.0.1:{exporter_port}"}}\n'
        "log: {level: info, format: json}\n"
    )
    return path


@contextlib.contextmanager
def children(work: Path, seed: int, jobs: int) -> Iterator[tuple[Process, Process, int, int]]:
    simulator_port, exporter_port = free_port(), free_port()
    simulate = exporter_command("simulate", f"--web.listen-address=127.0.0.1:{simulator_port}", f"--jobs={jobs}",
                                "--time-scale=60", f"--seed={seed}")
    with running("simulator", simulate, work, lambda: http_ok(f"http://127.0.0.1:{simulator_port}/simulator/faults"),
                 timeout=60, cwd=ROOT) as simulator:
        run = exporter_command("run", f"--config.file={write_config(work, simulator_port, exporter_port)}")
        with running("exporter", run, work, lambda: http_ok(f"http://127.0.0.1:{exporter_port}/readyz"),
                     timeout=60, cwd=ROOT, env={"SCENE7_EXPORTER_PASSWORD": "demo"}) as exporter:
            yield simulator, exporter, simulator_port, exporter_port


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "settings": {
            "minutes": args.minutes, "warmup_seconds": args.warmup, "scrapers": args.scrapers,
            "scrape_pause_seconds": args.scrape_pause, "seed": args.seed, "jobs": args.jobs,
            "time_scale": 60, "poll_interval": POLL_INTERVAL, "poll_timeout": POLL_TIMEOUT,
            "max_response_size_mib": MAX_RESPONSE_MIB, "rss_threshold_mib": args.rss_threshold_mib,
            "settle_seconds": SETTLE_SECONDS,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "failures": [],
    }
    failures: list[str] = result["failures"]
    with children(work, args.seed, args.jobs) as (simulator, exporter, simulator_port, exporter_port):
        t0 = time.monotonic()
        base = f"http://127.0.0.1:{simulator_port}"
        handles = [c["handle"] for c in httpx.get(base + "/simulator/world", timeout=10).json()["companies"]]

        def all_up() -> bool:
            up = family(read_metrics(exporter_port), "scene7_up")
            return len(up) == len(handles) and all(v == 1 for v in up.values())

        wait_until(all_up, 30, "every company polled once")
        log(f"simulator pid {simulator.pid} :{simulator_port}, exporter pid {exporter.pid} :{exporter_port}, "
            f"companies {handles}")

        samples: list[Sample] = []
        stop_sampling = threading.Event()

        def sample_loop() -> None:
            while exporter.alive() and not stop_sampling.is_set():
                with contextlib.suppress(OSError, KeyError):
                    status = proc_status(exporter.pid)
                    fds = len(os.listdir(f"/proc/{exporter.pid}/fd"))
                    samples.append(Sample(round(time.monotonic() - t0, 1), status["VmRSS"], status["VmHWM"], fds,
                                          round(cpu_seconds(exporter.pid), 2), os.getloadavg()[0]))
                stop_sampling.wait(args.sample_every)

        sampler = threading.Thread(target=sample_loop, name="sampler", daemon=True)
        sampler.start()
        scrapers = Scrapers(exporter_port, args.scrapers, args.scrape_pause, t0, args.seed)
        scrapers.start()
        switcher = FaultSwitcher(base, handles, rng, t0)
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
            if exporter.alive():
                start = checkpoint(exporter.pid, exporter_port, simulator_port, t0)
                start_metrics = poll_figures(read_metrics(exporter_port))
                cpu_start = cpu_seconds(exporter.pid)
                log(f"start: RSS {start.rss / MIB:.1f} MiB, fds {start.fds.total} "
                    f"(stable {start.fds.stable}), load {start.load[0]:.2f}")

                log(f"random faults for {args.minutes:g} min")
                switcher.start_random()
                deadline = time.monotonic() + args.minutes * 60
                next_note = time.monotonic() + 60
                while time.monotonic() < deadline and exporter.alive() and simulator.alive():
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                    if time.monotonic() >= next_note:
                        next_note += 60
                        last = samples[-1] if samples else None
                        log(f"t={time.monotonic() - t0:.0f}s scrapes {scrapers.stats.served} "
                            f"(failed {scrapers.stats.failed}), faults {sum(switcher.switched.values())}"
                            + (f", RSS {last.rss / MIB:.1f} MiB, fds {last.fds}, load {last.load1:.2f}"
                               if last else ""))
                switcher.stop()
                measured = time.monotonic() - t0 - start.t
                if exporter.alive():
                    cleared = time.monotonic()
                    try:
                        wait_until(all_up, max(15.0, 5 * POLL_INTERVAL), "every company up again", interval=0.5)
                        result["recovery_seconds"] = round(time.monotonic() - cleared, 1)
                    except AssertionError as exc:
                        failures.append(f"exporter did not recover after the faults were cleared: {exc}")
                    time.sleep(max(0.0, SETTLE_SECONDS - (time.monotonic() - cleared)))
                if exporter.alive():
                    end = checkpoint(exporter.pid, exporter_port, simulator_port, t0)
                    cpu_end = cpu_seconds(exporter.pid)
                    end_metrics = poll_figures(read_metrics(exporter_port))
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
                    if end.fds.stable > start.fds.stable:
                        failures.append(f"stable fds grew from {start.fds.stable} to {end.fds.stable}: "
                                        f"{start.fds.kinds} -> {end.fds.kinds}")
                    if end.fds.ips_sockets > max(start.fds.ips_sockets, len(handles)):
                        failures.append(f"IPS client sockets grew: {start.fds.ips_sockets} -> {end.fds.ips_sockets}")
                    if end.fds.scrape_sockets > args.scrapers:
                        failures.append(f"{end.fds.scrape_sockets} scrape sockets open for {args.scrapers} scrapers")
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
            scrapers.stop()
            stop_sampling.set()
            sampler.join(10)
            stats = scrapers.stats
            result["scrapes"] = {
                "served": stats.served, "failed": stats.failed,
                "per_second": round(stats.served / max(1.0, time.monotonic() - t0), 1),
                "p50_seconds": round(percentile(stats.latencies, 50), 4) if stats.latencies else 0.0,
                "p99_seconds": round(percentile(stats.latencies, 99), 4) if stats.latencies else 0.0,
                "max_seconds": round(stats.max_latency, 4), "max_at_t": stats.max_latency_at,
                "failures": stats.failures,
            }
            if stats.failed:
                failures.append(f"{stats.failed} scrapes failed, first: {stats.failures[0]}")
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
    result["exporter_log"] = exporter_log_summary(exporter.log_path)
    if result["exporter_log"]["exceptions"]:
        failures.append(f"the exporter logged {len(result['exporter_log']['exceptions'])} unexpected exceptions")
    return result


def markdown(result: dict[str, Any]) -> str:
    s, scrapes, load = result["settings"], result["scrapes"], result["load_average"]
    rows = [
        ("duration", f"{s['warmup_seconds']:g} s warm-up + {s['minutes']:g} min random faults "
                     f"(measured {result.get('measured_seconds', '-')} s)"),
        ("scrapers", f"{s['scrapers']} threads, gzip, pause 0..{2 * s['scrape_pause_seconds']:g} s"),
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
            ("peak RSS (VmHWM)", f"{result['peak_rss_bytes'] / MIB:.1f} MiB"),
            ("fds start -> end", f"{start['fds']['total']} -> {end['fds']['total']} (stable "
                                 f"{start['fds']['stable']} -> {end['fds']['stable']})"),
            ("exporter CPU", f"{result['exporter_cpu_percent']}% of one core"),
        ]
    faults = result["faults"]
    rows += [
        ("scrapes served / failed", f"{scrapes['served']} / {scrapes['failed']} ({scrapes['per_second']}/s)"),
        ("scrape latency p50 / p99 / max",
         f"{scrapes['p50_seconds'] * 1000:.1f} / {scrapes['p99_seconds'] * 1000:.1f} / "
         f"{scrapes['max_seconds'] * 1000:.1f} ms (max at t={scrapes['max_at_t']}s)"),
        ("faults switched on", f"{sum(faults['switched_on_by_kind'].values())} "
                               f"({', '.join(f'{k} {v}' for k, v in faults['switched_on_by_kind'].items())}); "
                               f"cleared {faults['cleared']}; injected {faults['injected_by_simulator']}"),
        ("load average 1 min (min / mean / max)", f"{load['load1_min']:.2f} / {load['load1_mean']:.2f} / "
                                                  f"{load['load1_max']:.2f} on {result['machine']['cpus']} CPUs"),
        ("exporter log", ", ".join(f"{k} {v}" for k, v in result["exporter_log"]["lines_by_level"].items())),
        ("verdict", "PASS" if not result["failures"] else "FAIL: " + "; ".join(result["failures"])),
    ]
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the random-fault phase")
    parser.add_argument("--scrapers", type=int, default=4, help="concurrent scraper threads")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults and of the simulator")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of warm-up before the start sample")
    parser.add_argument("--jobs", type=int, default=200, help="active jobs of the simulator")
    parser.add_argument("--scrape-pause", type=float, default=0.1,
                        help="mean pause of each scraper between scrapes, seconds")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument("--rss-threshold-mib", type=float, default=DEFAULT_RSS_THRESHOLD_MIB,
                        help="RSS growth from start to end that fails the soak")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.scrapers < 1:
        parser.error("--minutes must be positive and --scrapers at least 1")

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
