#!/usr/bin/env python3
"""Performance benchmark of issue 6: scrape latency, poll cost, memory and load, at 1,000 and
10,000 active jobs of the IPS simulator, beside a naive baseline and a static-bytes limit.

Every server runs in its own process: the simulator, the real exporter (`exporter.cli run`), the
baseline (prometheus-client Gauges served by `start_http_server`) and the limit (the exporter's
own bytes served from memory by `http.server`). Poll costs are measured in fresh processes so
that ru_maxrss is the peak of that one poll. Run `python benchmarks/bench.py --help`; the
figures are explained in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import gzip
import hashlib
import http.client
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # support.py, shared with the tests
from support import (
    Process,
    by_label,
    exporter_command,
    family,
    free_port,
    median,
    parse_samples,
    percentile,
    port_open,
    proc_status,
    running,
    series_count,
    wait_until,
)

# The exporter measured: this checkout, or a copy (to measure a change before making it).
ROOT = Path(os.environ.get("SCENE7_BENCH_EXPORTER_ROOT") or Path(__file__).resolve().parent.parent).resolve()
BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
USER, PASSWORD = "demo@example.com", "demo"
MIB = 1024 * 1024
MAX_SERIES = 100_000_000  # poll.max_series: nothing is dropped, up to 50,000 jobs and beyond
MAX_RESPONSE = 2**30  # a 50,000-job answer is about 240 MB (the default cap is 64 MiB)
CHUNK = 64 * 1024  # what httpx hands the reader per read, roughly
GZIP, PLAIN = "gzip", "plain"
# The scrapers stand for Prometheus servers and the simulator for IPS: other machines, in real
# life. Here all share 2 CPUs, and at the same priority 20 scraping threads starved the simulator:
# under the load, a 10,000-job getActiveJobs from another process took 6.7 to 9.7 s, longer than
# the load test's poll timeout whatever the exporter did. Niced, they take what the exporter and
# the simulator leave, as a remote load would. The limit is measured under the same load.
LOAD_NICENESS = 10
# getActiveJobs answers the load test's IPS replays in turn (see cmd_replay), recorded a poll apart.
REPLAYED = 4
BROWSERS = 5  # browsers on the jobs page in the second load run
PAGE_SAMPLES = 20
BROWSER_RELOAD_S = 1.0  # a browser reloads the page every second: five people pressing F5


# --------------------------------------------------------------------------- small helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def self_rss() -> int:
    return proc_status(os.getpid())["VmRSS"]


def peak_rss() -> int:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its
    # parent's peak.
    return proc_status(os.getpid())["VmHWM"]


def self_command(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def run_json(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a helper subcommand of this script; its last stdout line is a JSON object."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- scraping


def scrape(port: int, encoding: str, timeout: float = 120.0, path: str = "/metrics") -> tuple[float, bytes]:
    """One scrape on a new connection, as Prometheus's text-format request without an Accept
    header; returns (seconds from connect to the last body byte, the body as sent)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip" if encoding == GZIP else "identity"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"scrape of :{port}{path} answered {response.status}")
        if encoding == GZIP and response.getheader("Content-Encoding") != "gzip":
            raise RuntimeError(f"scrape of :{port} did not gzip")
    finally:
        conn.close()
    return time.perf_counter() - started, body


# What a browser on the jobs page asks for: the page and its assets at a load, then what its
# script asks every few seconds.
PAGE_LOAD = ("/", "/static/jobs.css", "/static/jobs.js", "/static/favicon.svg", "/api/v1/jobs", "/api/v1/status")


def first_byte(port: int, path: str, timeout: float = 60.0) -> float:
    """Seconds from connecting to the first byte of the answer to GET `path` (its head), the
    body read to the end."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "identity"})
        response = conn.getresponse()
        elapsed = time.perf_counter() - started
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET :{port}{path} answered {response.status}")
    finally:
        conn.close()
    return elapsed


def first_json(log_path: Path, into: dict[str, Any]) -> bool:
    """Whether a helper process has logged its first JSON line (its port); read into `into`."""
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    if lines:
        into.update(json.loads(lines[0]))
    return bool(lines)


def text_of(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


# --------------------------------------------------------------------------- helper processes


def cmd_baseline(args: argparse.Namespace) -> int:
    """The baseline a user would write: Gauges set from one snapshot, served by
    prometheus-client's start_http_server. Series and labels come from the exporter's
    collector (so both expose the same families); serving never touches it."""
    import prometheus_client

    from exporter.client import IpsClient, RetryPolicy
    from exporter.collector import SnapshotCollector
    from exporter.metrics import FAMILIES
    from exporter.snapshot import CompanySnapshot, CompanyTarget, State

    async def fetch() -> Any:
        retry = RetryPolicy(deadline=120, attempt_timeout=120)
        async with IpsClient(args.endpoint, USER, PASSWORD, retry=retry, max_response_bytes=MAX_RESPONSE) as client:
            return await client.get_active_jobs(args.company, keep_items=False)

    started = time.perf_counter()
    result = asyncio.run(fetch())
    fetched = time.perf_counter()
    snapshot = CompanySnapshot(CompanyTarget("bench", args.company, args.label)).after_success(
        result.jobs, at=time.time(), duration=fetched - started, invalid_records=result.invalid_records
    )
    state = State((snapshot,), 1)
    metrics: dict[str, Any] = {}
    for spec in FAMILIES:
        if spec.kind == "histogram":  # the job-log durations: no job logs in this State, no samples
            continue
        if spec.kind == "counter":
            metrics[spec.name] = prometheus_client.Counter(spec.name.removesuffix("_total"), spec.help, spec.labels)
        else:
            metrics[spec.name] = prometheus_client.Gauge(spec.name, spec.help, spec.labels)
    collector = SnapshotCollector(state, now=time.time(), interval=5, job_log_interval=300)
    for metric_family in collector.collect():
        if metric_family.type == "histogram":
            continue
        target = metrics[metric_family.name if metric_family.type == "gauge" else metric_family.name + "_total"]
        for sample in metric_family.samples:
            child = target.labels(**sample.labels) if sample.labels else target
            if metric_family.type == "counter":
                child.inc(sample.value)
            else:
                child.set(sample.value)
    port = free_port()
    prometheus_client.start_http_server(port, addr="127.0.0.1")
    print(json.dumps({"port": port, "jobs": len(result.jobs), "fetch_s": fetched - started,
                      "set_gauges_s": time.perf_counter() - fetched}), flush=True)
    threading.Event().wait()
    return 0


def cmd_limit(args: argparse.Namespace) -> int:
    """The limit: the exporter's bytes served from memory by a minimal HTTP/1.0 handler. Each
    response (head and body) is built once and written whole; the connection closes after it.
    `--server asyncio` is a bare asyncio Protocol (one thread, like ours); `--server http.server`
    the standard library's threading server (a thread per connection)."""
    def response(body: bytes, encoding: str) -> bytes:
        head = ["HTTP/1.0 200 OK", f"Content-Type: {args.content_type}", "Vary: Accept, Accept-Encoding",
                f"Content-Length: {len(body)}"]
        if encoding == GZIP:
            head.append("Content-Encoding: gzip")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    responses = {PLAIN: response(Path(args.plain).read_bytes(), PLAIN),
                 GZIP: response(Path(args.gzip).read_bytes(), GZIP)}

    def choose(head: bytes) -> bytes:
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"accept-encoding:") and b"gzip" in line:
                return responses[GZIP]
        return responses[PLAIN]

    if args.server == "asyncio":
        class Serve(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport
                self.head = b""

            def data_received(self, data: bytes) -> None:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end >= 0:
                    self.transport.write(choose(self.head[:end]))
                    self.transport.close()  # once the buffer is flushed

        async def serve() -> None:
            server = await asyncio.get_running_loop().create_server(Serve, "127.0.0.1", 0, backlog=1024)
            print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
            await server.serve_forever()

        asyncio.run(serve())
        return 0

    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self.wfile.write(responses[GZIP if "gzip" in self.headers.get("Accept-Encoding", "") else PLAIN])
            self.close_connection = True

        def log_message(self, *_: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # the default of 5 drops connections of 20 scrapers

    server = Server(("127.0.0.1", 0), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
    return 0


def _envelope(company: str) -> tuple[bytes, dict[str, str]]:
    from exporter import APP_NAME, __version__
    from exporter.soap import SOAP11_CONTENT_TYPE, AuthHeader, build_envelope
    from exporter.versions import DEFAULT_API_VERSION

    envelope = build_envelope("getActiveJobs", DEFAULT_API_VERSION, {"companyHandle": company},
                              AuthHeader(USER, PASSWORD, APP_NAME, __version__))
    headers = {"Content-Type": SOAP11_CONTENT_TYPE, "SOAPAction": "getActiveJobs",
               "Accept-Encoding": "gzip", "User-Agent": f"{APP_NAME}/{__version__}"}
    return envelope, headers


def cmd_poll_ours(args: argparse.Namespace) -> int:
    """One poll as the exporter makes it: IpsClient.get_active_jobs(keep_items=False) streamed
    through the reader, then the company's snapshot built. Wall time and peak RSS."""
    import tracemalloc

    from exporter.client import IpsClient, RetryPolicy
    from exporter.snapshot import CompanySnapshot, CompanyTarget

    target = CompanyTarget("bench", args.company, "bench")

    async def main() -> dict[str, Any]:
        retry = RetryPolicy(deadline=120, attempt_timeout=120)
        async with IpsClient(args.endpoint, USER, PASSWORD, retry=retry, max_response_bytes=MAX_RESPONSE) as client:
            base_rss, base_peak = self_rss(), peak_rss()
            if args.trace:
                tracemalloc.start()
            started = time.perf_counter()
            result = await client.get_active_jobs(args.company, keep_items=False)
            snapshot = CompanySnapshot(target).after_success(
                result.jobs, at=time.time(), duration=0.0, invalid_records=result.invalid_records
            )
            wall = time.perf_counter() - started
            out = {"wall_s": wall, "base_rss": base_rss, "base_peak": base_peak, "peak_rss": peak_rss(),
                   "rss_after": self_rss(), "jobs": len(snapshot.jobs),
                   "tasks": sum(len(j.task_progress_array) for j in snapshot.jobs),
                   "items": sum(t.item_count for j in snapshot.jobs for t in j.task_progress_array)}
            if args.trace:
                # Python heap the snapshot keeps (lxml's C buffers are not traced, and are freed).
                out["retained_py_heap"], out["peak_py_heap"] = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            return out

    print(json.dumps(asyncio.run(main())), flush=True)
    return 0


def cmd_poll_limit(args: argparse.Namespace) -> int:
    """The limit of a poll: the same request with httpx, each chunk fed to expat with no
    handler (a parse that checks well-formedness and builds nothing)."""
    import xml.parsers.expat

    import httpx

    envelope, headers = _envelope(args.company)

    async def main() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
            base_rss, base_peak = self_rss(), peak_rss()
            parser = xml.parsers.expat.ParserCreate()
            size = 0
            saved: list[bytes] = []
            started = time.perf_counter()
            async with client.stream("POST", args.endpoint, content=envelope, headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if args.parse:
                        parser.Parse(chunk, False)
                    if args.save:
                        saved.append(chunk)
                if args.parse:
                    parser.Parse(b"", True)
                wire = response.num_bytes_downloaded
                encoding = response.headers.get("content-encoding", "identity")
            wall = time.perf_counter() - started
            if args.save:
                Path(args.save).write_bytes(b"".join(saved))
            return {"wall_s": wall, "base_rss": base_rss, "base_peak": base_peak, "peak_rss": peak_rss(),
                    "bytes": size, "wire_bytes": wire, "content_encoding": encoding}

    print(json.dumps(asyncio.run(main())), flush=True)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """IPS as the load test sees it: on another machine. Every request is passed to the simulator
    (`upstream`), and its first `record` getActiveJobs answers are kept as they came (gzip); from
    then on getActiveJobs is answered with them in turn, so that the simulator, idle, takes none
    of the 2 CPUs the exporter and the scrapers share, and the counts still change at every poll.
    `GET /replay` tells how many answers were recorded and replayed."""
    import httpx

    recorded: list[tuple[str, str, bytes]] = []  # content type, content encoding, body as sent
    served = [0]

    async def forward(client: httpx.AsyncClient, path: str, headers: dict[str, str],
                      body: bytes) -> tuple[int, str, str, bytes]:
        passed = {k: v for k, v in headers.items() if k in ("content-type", "soapaction", "accept-encoding",
                                                           "user-agent", "authorization")}
        request = client.build_request("POST", args.upstream.rstrip("/") + path, headers=passed, content=body)
        response = await client.send(request, stream=True)
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return (response.status_code, response.headers.get("content-type", "text/xml"),
                response.headers.get("content-encoding", ""), raw)

    async def answer(writer: asyncio.StreamWriter, status: int, content_type: str, encoding: str,
                     body: bytes) -> None:
        head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Answer'}", f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}"] + ([f"Content-Encoding: {encoding}"] if encoding else [])
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def serve(client: httpx.AsyncClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/replay":
                    status = json.dumps({"recorded": len(recorded), "replayed": served[0]}).encode()
                    await answer(writer, 200, "application/json", "", status)
                    continue
                active_jobs = headers.get("soapaction", "").strip('"') == "getActiveJobs"
                if active_jobs and len(recorded) >= args.record:
                    content_type, encoding, raw = recorded[served[0] % len(recorded)]
                    served[0] += 1
                    await answer(writer, 200, content_type, encoding, raw)
                    continue
                status_code, content_type, encoding, raw = await forward(client, path, headers, body)
                if active_jobs and status_code == 200 and len(recorded) < args.record:
                    recorded.append((content_type, encoding, raw))
                await answer(writer, status_code, content_type, encoding, raw)
        finally:
            writer.close()

    async def main() -> None:
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
            server = await asyncio.start_server(functools.partial(serve, client), "127.0.0.1", 0)
            print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
            await server.serve_forever()

    asyncio.run(main())
    return 0


def cmd_cpu(args: argparse.Namespace) -> int:
    """Parse cost without the network, over one saved response, in 64 KiB chunks: the
    exporter's reader + snapshot beside expat with no handler. Median of `reps` runs."""
    import xml.parsers.expat

    from exporter.parse import ResponseReader, check_job_array
    from exporter.snapshot import CompanySnapshot, CompanyTarget
    from exporter.soap import hardened_pull_parser

    data = Path(args.file).read_bytes()
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    target = CompanyTarget("bench", "c", "bench")

    def read(chunks: list[bytes], known: dict[bytes, Any] | None) -> Any:
        reader = ResponseReader("getActiveJobs", keep_items=False, known=known)
        for chunk in chunks:
            reader.feed(chunk)
        check_job_array(reader.close())
        return reader.result()

    def ours() -> None:
        result = read(chunks, None)
        CompanySnapshot(target).after_success(result.jobs, at=0.0, duration=0.0, invalid_records=0)

    # As the poller reads an answer: knowing the jobs of the one before, by fingerprint. Those
    # live on, frozen out of the collector's sight, as the exporter freezes the State they are in.
    earlier = Path(args.previous or args.file).read_bytes()
    known = dict(read([earlier[i:i + CHUNK] for i in range(0, len(earlier), CHUNK)], {}).fingerprints)
    kept = {id(job) for job in known.values()}
    current = read(chunks, known).jobs
    unchanged, jobs = sum(id(job) in kept for job in current), len(current)
    del current
    gc.collect()
    gc.freeze()

    def ours_knowing() -> None:
        result = read(chunks, known)
        CompanySnapshot(target).after_success(result.jobs, at=0.0, duration=0.0, invalid_records=0)

    def bare() -> None:
        parser = xml.parsers.expat.ParserCreate()
        for chunk in chunks:
            parser.Parse(chunk, False)
        parser.Parse(b"", True)

    def lxml_only() -> None:
        """Where ours starts from: the exporter's hardened lxml parser, told only where the job
        array starts, each complete job freed after each chunk, nothing read from it."""
        parser = hardened_pull_parser(tag=["{*}jobArray"], events=("start",))
        arrays: list[Any] = []
        for chunk in chunks:
            parser.feed(chunk)
            arrays.extend(element for _event, element in parser.read_events())
            for array in arrays:
                del array[: max(len(array) - 1, 0)]
        parser.close()

    # CPU time of this process, not wall time: on a shared 2-core machine the wall time of a
    # one-second run also counts whatever else got the core, and the ratio moved by 50% with it.
    times: dict[str, list[float]] = {"ours": [], "bare": [], "lxml_only": [], "ours_knowing": []}
    for _ in range(args.reps):
        for name, fn in (("ours", ours), ("bare", bare), ("lxml_only", lxml_only), ("ours_knowing", ours_knowing)):
            started = time.process_time()
            fn()
            times[name].append(time.process_time() - started)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(ours)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(json.dumps({"ours_s": times["ours"], "bare_s": times["bare"], "lxml_only_s": times["lxml_only"],
                      "ours_knowing_s": times["ours_knowing"], "jobs": jobs, "jobs_unchanged": unchanged,
                      "bytes": len(data)}), flush=True)
    return 0


def cmd_load_worker(args: argparse.Namespace) -> int:
    """`threads` scrapers, each scraping in a loop from `start_at` for `seconds`, at a lower
    priority (LOAD_NICENESS) than the exporter and the simulator. With --browse, browsers
    instead: each loads the jobs page and its assets and asks the JSON API as the page's script
    does, again every BROWSER_RELOAD_S (its latencies: the page's first byte)."""
    os.nice(LOAD_NICENESS)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    end = args.start_at + args.seconds

    def loop() -> None:
        mine, bad = [], []
        time.sleep(max(0.0, args.start_at - time.time()))
        while time.time() < end:
            try:
                if args.browse:
                    began = time.monotonic()
                    mine.append(first_byte(args.port, PAGE_LOAD[0], timeout=30))
                    for path in PAGE_LOAD[1:]:
                        first_byte(args.port, path, timeout=30)
                    time.sleep(max(0.0, BROWSER_RELOAD_S - (time.monotonic() - began)))
                else:
                    elapsed, _ = scrape(args.port, GZIP, timeout=30)
                    mine.append(elapsed)
            except Exception as exc:  # counted and reported
                bad.append(repr(exc))
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=loop) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"latencies": latencies, "errors": errors[:20], "error_count": len(errors)}), flush=True)
    return 0


# --------------------------------------------------------------------------- the benchmark


@dataclass
class Bench:
    jobs: int
    reps: int
    load_seconds: float
    scrapers: int
    workers: int
    companies: int
    seed: int
    work: Path
    limit_load_seconds: float
    load_poll: tuple[float, float]
    result: dict[str, Any] = field(default_factory=dict)

    def start(self, name: str, args: Sequence[str], ready: Callable[[], Any],
              timeout: float = 120.0) -> contextlib.AbstractContextManager[Process]:
        """A process of this run, logging into the work directory, started in ROOT (measured)."""
        return running(name, args, self.work, ready, timeout=timeout, cwd=ROOT)

    def simulator(self) -> contextlib.AbstractContextManager[Process]:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}/scene7/services/IpsApiService"
        args = exporter_command("simulate", f"--web.listen-address=127.0.0.1:{port}", f"--jobs={self.jobs}",
                                f"--companies={self.companies}", "--time-scale=1", f"--seed={self.seed}")
        return self.start(f"simulator-{self.jobs}", args, lambda: port_open(port))

    def discover(self) -> None:
        """The company with the most active jobs (getCompanyMembership, then getActiveJobs)."""
        from exporter.client import IpsClient, RetryPolicy

        async def main() -> list[tuple[int, str, str, float]]:
            retry = RetryPolicy(deadline=120, attempt_timeout=120)
            async with IpsClient(self.endpoint, USER, PASSWORD, retry=retry, max_response_bytes=MAX_RESPONSE) as client:
                found = []
                for membership in await client.get_company_memberships():
                    company = membership.company
                    started = time.perf_counter()
                    result = await client.get_active_jobs(company.company_handle, keep_items=False)
                    found.append((len(result.jobs), company.company_handle, company.name or company.company_handle,
                                  time.perf_counter() - started))
                return found

        found = wait_until(lambda: asyncio.run(main()), 120, "the simulator to answer getActiveJobs", 1.0)
        jobs, self.company, self.label, _ = max(found)
        self.result["companies"] = [{"handle": h, "jobs": n} for n, h, _, _ in found]
        self.result["active_jobs"] = jobs
        log(f"{self.jobs} jobs: polling company {self.label!r} ({jobs} active jobs)")

    def exporter(self, name: str, interval: str, timeout: str, max_age: str,
                 endpoint: str | None = None) -> contextlib.AbstractContextManager[Process]:
        port = free_port()
        config = self.work / f"{name}.yml"
        config.write_text(
            "accounts:\n"
            # 2016-01-14-beta: the exporter asks for waiting jobs too, as it did at every version before.
            f"  - {{name: bench, endpoint: '{endpoint or self.endpoint}', user: {USER}, password: {PASSWORD}, "
            f"api_version: 2016-01-14-beta, max_response_size: {MAX_RESPONSE}}}\n"
            f"poll: {{interval: {interval}, timeout: {timeout}, max_age: {max_age}, max_series: {MAX_SERIES}, "
            f"max_total_response_size: {MAX_RESPONSE}}}\n"
            f"web: {{listen_address: '127.0.0.1:{port}'}}\n"
            "log: {level: info}\n"
        )
        self.exporter_port = port
        return self.start(name, exporter_command("run", f"--config.file={config}"), lambda: port_open(port))

    @contextlib.contextmanager
    def replayed(self) -> Iterator[str]:
        """The simulator behind `_replay` (IPS as if on another machine); yields the endpoint."""
        name, info = f"replay-{self.jobs}", {}
        base = urllib.parse.urlsplit(self.endpoint)
        args = self_command("_replay", "--upstream", f"{base.scheme}://{base.netloc}", "--record", str(REPLAYED))
        with self.start(name, args, lambda: first_json(self.work / f"{name}.log", info)):
            self.replay_port = info["port"]
            yield f"http://127.0.0.1:{info['port']}{base.path}"

    def replay_status(self) -> dict[str, int]:
        conn = http.client.HTTPConnection("127.0.0.1", self.replay_port, timeout=30)
        try:
            conn.request("GET", "/replay")
            status: dict[str, int] = json.loads(conn.getresponse().read())
            return status
        finally:
            conn.close()

    def wait_polled(self, timeout: float) -> bytes:
        """Until the exporter exports the company's jobs; returns that gzip scrape."""
        def polled() -> bytes | None:
            _, body = scrape(self.exporter_port, GZIP)
            return body if parse_samples(text_of(body), names=["scene7_active_jobs"]) else None

        body: bytes = wait_until(polled, timeout, "the exporter's first poll", 0.5)
        return body

    def wait_job_logs(self, timeout: float, started: float) -> dict[str, Any]:
        """Until the exporter's first job-log poll has ended (its one-day sweep at start is
        tens of getJobLogs calls): a measurement of scrapes or polls that overlaps it measures
        that sweep too. Returns how long after `started` (monotonic) it ended, and how."""
        def ended() -> dict[str, Any] | None:
            samples = parse_samples(text_of(scrape(self.exporter_port, GZIP)[1]),
                                    names=["scene7_job_log_polls_total", "scene7_job_log_poll_errors_total"])
            if not sum(family(samples, "scene7_job_log_polls_total").values()):
                return None
            errors = {k: v for k, v in by_label(samples, "scene7_job_log_poll_errors_total", "reason").items() if v}
            return {"ended_after_s": time.monotonic() - started, "errors": errors}

        found: dict[str, Any] = wait_until(ended, timeout, "the exporter's first job-log poll", 0.5)
        log(f"{self.jobs} jobs: first job-log poll ended {found['ended_after_s']:.1f} s after the exporter started"
            + (f" ({found['errors']})" if found["errors"] else ""))
        return found

    # ---- 1 and 3: scrape latency beside baseline and limit; RSS after a poll

    def scrape_phase(self) -> None:
        started = time.monotonic()
        with self.exporter(f"exporter-quiet-{self.jobs}", "600s", "120s", "3600s") as ours:
            self.wait_polled(180)
            self.result["job_logs_first_poll"] = self.wait_job_logs(300, started)
            bodies = {}
            # As Prometheus scrapes: gzip only. The first scrape of a variant renders it, the
            # second is served from the cache.
            _, bodies[GZIP] = scrape(self.exporter_port, GZIP)
            time.sleep(1.0)
            status = proc_status(ours.pid)
            for _ in range(2):
                _, bodies[PLAIN] = scrape(self.exporter_port, PLAIN)
            _, bodies[GZIP] = scrape(self.exporter_port, GZIP)
            time.sleep(1.0)
            text = bodies[PLAIN]
            self.result["exporter_rss"] = {"after_poll_and_render": status["VmRSS"], "peak": status["VmHWM"],
                                           "with_plain_cached_too": proc_status(ours.pid)["VmRSS"]}
            self.result["exposition"] = {
                "series": series_count(text), "plain_bytes": len(text), "gzip_bytes": len(bodies[GZIP]),
            }
            (self.work / "plain.txt").write_bytes(bodies[PLAIN])
            (self.work / "body.gz").write_bytes(bodies[GZIP])
            log(f"{self.jobs} jobs: exposition {series_count(text)} series, {len(text) / MIB:.1f} MiB plain, "
                f"{len(bodies[GZIP]) / MIB:.2f} MiB gzip; exporter RSS {status['VmRSS'] / MIB:.0f} MiB")
            pages = {path: [first_byte(self.exporter_port, path) for _ in range(PAGE_SAMPLES)]
                     for path in ("/", "/api/v1/jobs")}
            self.result["jobs_page_idle"] = {
                "samples": PAGE_SAMPLES, "page_first_byte_median_s": median(pages["/"]),
                "page_first_byte_max_s": max(pages["/"]), "api_first_byte_median_s": median(pages["/api/v1/jobs"]),
                "api_first_byte_max_s": max(pages["/api/v1/jobs"])}
            log(f"{self.jobs} jobs: jobs page first byte, median of {PAGE_SAMPLES}: page "
                f"{median(pages['/']) * 1000:.1f} ms, JSON API {median(pages['/api/v1/jobs']) * 1000:.1f} ms")

            base_args = self_command("_baseline", "--endpoint", self.endpoint, "--company", self.company,
                                     "--label", self.label)

            def limit_args(server: str) -> list[str]:
                return self_command("_limit", "--plain", str(self.work / "plain.txt"),
                                    "--gzip", str(self.work / "body.gz"), "--server", server,
                                    "--content-type", "text/plain; version=0.0.4; charset=utf-8")

            names = {"baseline": f"baseline-{self.jobs}", "limit_asyncio": f"limit-asyncio-{self.jobs}",
                     "limit_http_server": f"limit-http-server-{self.jobs}"}
            infos: dict[str, dict[str, Any]] = {name: {} for name in names}

            def ready(name: str) -> Callable[[], bool]:
                return lambda: first_json(self.work / f"{names[name]}.log", infos[name])

            with self.start(names["baseline"], base_args, ready("baseline"), 240) as base, \
                    self.start(names["limit_asyncio"], limit_args("asyncio"), ready("limit_asyncio")), \
                    self.start(names["limit_http_server"], limit_args("http.server"), ready("limit_http_server")):
                ports = {"ours": self.exporter_port, **{name: info["port"] for name, info in infos.items()}}
                # Ours was scraped twice per variant above; the limits are warmed the same way. The
                # baseline renders every scrape anew (a warm-up would only cost minutes at 10,000 jobs).
                for _ in range(2):
                    for encoding in (GZIP, PLAIN):
                        scrape(ports["limit_asyncio"], encoding)
                        scrape(ports["limit_http_server"], encoding)
                sizes: dict[str, dict[str, int]] = {name: {} for name in ports}
                base_text = b""
                times: dict[str, dict[str, list[float]]] = {n: {GZIP: [], PLAIN: []} for n in ports}
                # The fast servers are scraped three times per round: their medians are noisier.
                for rep in range(self.reps * 3):
                    order = [n for n in ports if n != "baseline" or rep % 3 == 0]
                    order = order[rep % len(order):] + order[:rep % len(order)]
                    for name in order:
                        for encoding in (GZIP, PLAIN):
                            elapsed, body = scrape(ports[name], encoding)
                            times[name][encoding].append(elapsed)
                            sizes[name][encoding] = len(body)
                            if name == "baseline" and encoding == PLAIN:
                                base_text = body
                self.result["baseline_setup"] = {**infos["baseline"], "series": series_count(base_text),
                                                 "rss": proc_status(base.pid)["VmRSS"]}
                if self.limit_load_seconds > 0:
                    self.result["load_limit"] = self.load(ports["limit_asyncio"], self.limit_load_seconds)
                    log(f"{self.jobs} jobs: load on the limit: p50 {self.result['load_limit']['p50_s'] * 1000:.1f} ms, "
                        f"p99 {self.result['load_limit']['p99_s'] * 1000:.1f} ms")
            self.result["scrape"] = {
                name: {enc: {"median_s": median(v), "runs_s": v, "body_bytes": sizes[name][enc]}
                       for enc, v in by_enc.items()}
                for name, by_enc in times.items()
            }
            for encoding in (GZIP, PLAIN):
                ours_s = median(times["ours"][encoding])
                limit = min(("limit_asyncio", "limit_http_server"), key=lambda n: median(times[n][encoding]))
                self.result["scrape"][f"ratio_{encoding}"] = {
                    "limit": limit,
                    "limit_median_s": median(times[limit][encoding]),
                    "ours_over_limit": ours_s / median(times[limit][encoding]),
                    "baseline_over_ours": median(times["baseline"][encoding]) / ours_s,
                }
            log(f"{self.jobs} jobs: scrape medians (ms) " + ", ".join(
                f"{n} {enc} {median(times[n][enc]) * 1000:.1f}" for n in ports for enc in (GZIP, PLAIN)))

    # ---- 2: poll cost

    def poll_phase(self) -> None:
        ours_runs, limit_runs, fetch_runs = [], [], []
        response = self.work / f"response-{self.jobs}.xml"
        earlier = self.work / f"response-{self.jobs}-earlier.xml"
        run_json(self_command("_poll-limit", "--endpoint", self.endpoint, "--company", self.company,
                              "--save", str(earlier)), 180)
        time.sleep(5.0)  # the next answer, a 5 s poll later
        run_json(self_command("_poll-limit", "--endpoint", self.endpoint, "--company", self.company,
                              "--save", str(response)), 180)
        for _ in range(self.reps):
            limit_runs.append(run_json(self_command(
                "_poll-limit", "--endpoint", self.endpoint, "--company", self.company, "--parse"), 180))
            ours_runs.append(run_json(self_command(
                "_poll-ours", "--endpoint", self.endpoint, "--company", self.company), 180))
            fetch_runs.append(run_json(self_command(
                "_poll-limit", "--endpoint", self.endpoint, "--company", self.company), 180))
        traced = run_json(self_command("_poll-ours", "--endpoint", self.endpoint, "--company", self.company,
                                       "--trace"), 300)
        cpu = run_json(self_command("_cpu", "--file", str(response), "--previous", str(earlier),
                                    "--reps", str(max(self.reps, 5))), 600)
        size = median([r["bytes"] for r in limit_runs])
        ours_wall = median([r["wall_s"] for r in ours_runs])
        limit_wall = median([r["wall_s"] for r in limit_runs])
        peak_delta = median([r["peak_rss"] - r["base_rss"] for r in ours_runs])
        self.result["poll"] = {
            "response_bytes": size,
            "response_wire_bytes": median([r["wire_bytes"] for r in limit_runs]),
            "content_encoding": limit_runs[0]["content_encoding"],
            "jobs": ours_runs[0]["jobs"], "tasks": ours_runs[0]["tasks"], "items": ours_runs[0]["items"],
            "ours": {"median_wall_s": ours_wall, "runs_s": [r["wall_s"] for r in ours_runs],
                     "median_peak_rss": median([r["peak_rss"] for r in ours_runs]),
                     "median_base_rss": median([r["base_rss"] for r in ours_runs]),
                     "median_peak_rss_delta": peak_delta,
                     "retained_py_heap": traced["retained_py_heap"], "peak_py_heap_traced": traced["peak_py_heap"]},
            "limit": {"parser": "pyexpat, no handlers, fed each chunk as httpx yields it",
                      "median_wall_s": limit_wall, "runs_s": [r["wall_s"] for r in limit_runs],
                      "median_peak_rss_delta": median([r["peak_rss"] - r["base_rss"] for r in limit_runs])},
            "fetch_only": {"median_wall_s": median([r["wall_s"] for r in fetch_runs]),
                           "runs_s": [r["wall_s"] for r in fetch_runs]},
            "ours_over_limit": ours_wall / limit_wall,
            "cpu_only": {"ours_median_s": median(cpu["ours_s"]), "bare_median_s": median(cpu["bare_s"]),
                         "lxml_only_median_s": median(cpu["lxml_only_s"]),
                         "lxml_only_over_bare": median(cpu["lxml_only_s"]) / median(cpu["bare_s"]),
                         "ours_over_bare": median(cpu["ours_s"]) / median(cpu["bare_s"]),
                         "ours_knowing_median_s": median(cpu["ours_knowing_s"]),
                         "ours_knowing_over_bare": median(cpu["ours_knowing_s"]) / median(cpu["bare_s"]),
                         "jobs_unchanged": cpu["jobs_unchanged"], "jobs": cpu["jobs"],
                         "chunk_bytes": CHUNK},
        }
        log(f"{self.jobs} jobs: poll {ours_wall:.2f}s (limit {limit_wall:.2f}s, fetch only "
            f"{self.result['poll']['fetch_only']['median_wall_s']:.2f}s), response {size / 1e6:.1f} MB, "
            f"peak RSS delta {peak_delta / MIB:.0f} MiB; CPU only ours {median(cpu['ours_s']):.2f}s "
            f"bare {median(cpu['bare_s']):.3f}s")

    # ---- 4: load

    def load(self, port: int, seconds: float, browsers: int = 0) -> dict[str, Any]:
        """`scrapers` threads over `workers` processes, scraping `port` with gzip in a loop; with
        `browsers`, as many more threads (one process) loading the jobs page in a loop."""
        start_at = time.time() + 2.0
        per_worker = [self.scrapers // self.workers + (i < self.scrapers % self.workers) for i in range(self.workers)]
        procs = [subprocess.Popen(self_command("_load-worker", "--port", str(port), "--threads", str(n),
                                               "--seconds", str(seconds), "--start-at", str(start_at)),
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT) for n in per_worker]
        browsing = subprocess.Popen(self_command("_load-worker", "--port", str(port), "--threads", str(browsers),
                                                 "--seconds", str(seconds), "--start-at", str(start_at), "--browse"),
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT) if browsers else None
        outputs = [p.communicate(timeout=seconds + 120)[0] for p in procs]
        pages: dict[str, Any] = {}
        if browsing is not None:
            data = json.loads(browsing.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])
            pages = {"browsers": browsers, "page_loads": len(data["latencies"]), "page_errors": data["error_count"],
                     "page_first_byte_p50_s": percentile(data["latencies"], 50),
                     "page_first_byte_p99_s": percentile(data["latencies"], 99)}
        latencies: list[float] = []
        errors: list[str] = []
        error_count = 0
        for out in outputs:
            data = json.loads(out.strip().splitlines()[-1])
            latencies.extend(data["latencies"])
            errors.extend(data["errors"])
            error_count += data["error_count"]
        return {"scrapers": self.scrapers, "processes": self.workers, "seconds": seconds,
                "scrapes": len(latencies), "scrape_errors": error_count, "error_samples": errors[:5],
                "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99), "max_s": max(latencies),
                **pages}

    def load_phase(self) -> None:
        interval, timeout = self.load_poll
        started = time.monotonic()
        with self.replayed() as endpoint, \
                self.exporter(f"exporter-load-{self.jobs}", f"{interval:g}s", f"{timeout:g}s", "60s", endpoint) as ours:
            try:
                self.wait_polled(90)
                polled_before_load = True
            except AssertionError:
                polled_before_load = False  # measured anyway: the failures are the finding
            # The next job-log poll is job_logs.interval (5 min) away: the load meets none.
            job_logs = self.wait_job_logs(300, started)
            wait_until(lambda: self.replay_status()["recorded"] >= REPLAYED, interval * (REPLAYED + 2) + 60,
                       "the replay to record the simulator's answers", 0.5)
            replayed_before = self.replay_status()["replayed"]
            for _ in range(2):
                scrape(self.exporter_port, GZIP)
            stop = threading.Event()
            polls: dict[float, float] = {}  # poll start (wall) -> its duration, as exported
            rss_max = [0]
            with_children_max = [0]  # the exporter's RSS plus its render children's own memory

            def health() -> dict[str, Any]:
                last, duration = "scene7_last_successful_poll_timestamp_seconds", "scene7_poll_duration_seconds"
                samples = parse_samples(text_of(scrape(self.exporter_port, GZIP)[1]),
                                        names=["scene7_polls_total", "scene7_poll_errors_total", last, duration])
                return {"polls": sum(family(samples, "scene7_polls_total").values()),
                        "errors": {k: v for k, v in by_label(samples, "scene7_poll_errors_total", "reason").items()
                                   if v},
                        "last": max(family(samples, last).values(), default=0.0),
                        "duration": max(family(samples, duration).values(), default=0.0)}

            def monitor() -> None:
                next_sample = 0.0
                while not stop.wait(0.25):
                    rss = proc_status(ours.pid)["VmRSS"]
                    rss_max[0] = max(rss_max[0], rss)
                    with_children_max[0] = max(with_children_max[0], rss + children_private(ours.pid))
                    if time.monotonic() >= next_sample:
                        next_sample = time.monotonic() + 2.0
                        with contextlib.suppress(Exception):
                            h = health()
                            polls.setdefault(h["last"], h["duration"])

            before = health()
            polls[before["last"]] = before["duration"]
            watcher = threading.Thread(target=monitor)
            watcher.start()
            try:
                result = self.load(self.exporter_port, self.load_seconds)
            finally:
                stop.set()
                watcher.join()
            after = health()
            polls.setdefault(after["last"], after["duration"])
            hwm = proc_status(ours.pid)["VmHWM"]
            replayed = self.replay_status()["replayed"] - replayed_before
            # The same load again, with browsers on the jobs page beside the scrapers (the polls
            # and memory rows are of the run above).
            with_browsers = self.load(self.exporter_port, self.load_seconds, browsers=BROWSERS)
        starts = sorted(t for t in polls if t >= before["last"] and t > 0)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        jitter = min(interval / 10, 5.0)  # the poller's
        late = [g for g in gaps if g > interval + jitter + 0.5]
        error_delta = {k: v - before["errors"].get(k, 0) for k, v in after["errors"].items()
                       if v - before["errors"].get(k, 0)}
        skipped = error_delta.get("skipped", 0.0)
        self.result["load"] = {
            **result, "poll_interval_s": interval, "poll_timeout_s": timeout,
            "polled_before_load": polled_before_load, "job_logs_first_poll": job_logs,
            "ips_answers_replayed": replayed, "ips_answers_recorded": REPLAYED,
            "polls": after["polls"] - before["polls"], "poll_errors": error_delta, "skipped": skipped,
            "failed": sum(error_delta.values()) - skipped,
            "successful_poll_starts_seen": len(starts) - 1, "poll_start_gaps_s": gaps, "late_polls": len(late),
            "successful_poll_durations_s": [polls[t] for t in starts[1:]],
            "exporter_rss_max_sampled": rss_max[0], "exporter_rss_peak": hwm,
            "exporter_with_children_max_sampled": with_children_max[0],
            "exporter_memory_peak": max(hwm, with_children_max[0]),
            "with_browsers": with_browsers,
        }
        log(f"{self.jobs} jobs: load {result['scrapes']} scrapes, p50 {result['p50_s'] * 1000:.1f} ms, "
            f"p99 {result['p99_s'] * 1000:.1f} ms, max {result['max_s'] * 1000:.0f} ms; "
            f"polls {after['polls'] - before['polls']:g}, errors {error_delta}, late {len(late)}")
        log(f"{self.jobs} jobs: load with {BROWSERS} browsers: scrape p99 {with_browsers['p99_s'] * 1000:.1f} ms; "
            f"{with_browsers['page_loads']} page loads, first byte p50 "
            f"{with_browsers['page_first_byte_p50_s'] * 1000:.1f} ms, p99 "
            f"{with_browsers['page_first_byte_p99_s'] * 1000:.1f} ms")

    # ---- 5: render of a new State

    def render_phase(self) -> None:
        """benchmarks/render_speed.py over States of a world like the simulator's (its counts move
        at every poll): ours against prometheus-client's encoders, every variant, same States."""
        self.result["render"] = run_json(
            [sys.executable, str(BENCHMARKS / "render_speed.py"), "--jobs", str(self.jobs),
             "--states", str(self.reps)], 1800)
        render = self.result["render"]
        log(f"{self.jobs} jobs: render of a new State, every variant: ours {render['ours_median_s']:.2f} s, "
            f"prometheus-client {render['reference_median_s']:.2f} s ({render['speedup']:.1f}x)")

    def run(self) -> dict[str, Any]:
        self.result["simulator_jobs_flag"] = self.jobs
        self.render_phase()
        with self.simulator() as sim:
            self.discover()
            self.scrape_phase()
            self.poll_phase()
            self.load_phase()
            self.result["simulator_rss"] = proc_status(sim.pid)["VmRSS"]
        return self.result


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    import lxml.etree

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "memory_bytes": mem,
        "python": platform.python_version(), "platform": platform.platform(),
        "lxml": ".".join(map(str, lxml.etree.LXML_VERSION)), "libxml2": ".".join(map(str, lxml.etree.LIBXML_VERSION)),
        "prometheus_client": version("prometheus-client"), "httpx": version("httpx"), "pydantic": version("pydantic"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "exporter_root": str(ROOT), "exporter_sources_sha256": sources_digest(),
    }


def sources_digest() -> str:
    """What was measured: a digest of the exporter's sources (the tree changes quickly)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


JUDGED = 10_000  # the size the targets are judged at (issue 14); larger sizes are information


def children_private(pid: int) -> int:
    """The memory of `pid`'s children that is their own (not shared with it): what a forked
    render costs beyond the exporter's RSS. 0 if none runs now."""
    total = 0
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{child}/smaps_rollup").read_text().splitlines():
                    key, _, rest = line.partition(":")
                    if key in ("Private_Clean", "Private_Dirty"):
                        total += int(rest.split()[0]) * 1024
    return total


def memory_peak(load: dict[str, Any]) -> int:
    # Runs before render children were measured have only the exporter's own peak.
    return int(max(load["exporter_rss_peak"], load.get("exporter_with_children_max_sampled", 0)))


def judged_size(runs: dict[str, dict[str, Any]]) -> str:
    return str(JUDGED) if str(JUDGED) in runs else max(runs, key=int)


def targets(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14's targets, at 10,000 jobs; how each figure grows with the number of jobs beside."""
    big = runs[judged_size(runs)]
    scrape, poll, load = big["scrape"], big["poll"], big["load"]
    under_load = load["p99_s"] / big["load_limit"]["p99_s"]
    polls_wrong = load["failed"] + load["skipped"] + load["late_polls"]
    rows = [
        ("scrape p99 under load / the limit's p99 under the same load", "<= 2x", under_load, under_load <= 2, "x"),
        ("render of a new State (every variant): prometheus-client / ours", ">= 8x",
         big["render"]["speedup"], big["render"]["speedup"] >= 8, "x"),
        ("polls under load: failed, skipped or late", "0", polls_wrong, polls_wrong == 0, ""),
        ("exporter peak RSS under load (with its render child's own memory)", "< 150 MiB",
         memory_peak(load) / MIB, memory_peak(load) < 150 * MIB, "MiB"),
        ("poll CPU, parse + snapshot / bare expat", "<= 3x", poll["cpu_only"]["ours_over_bare"],
         poll["cpu_only"]["ours_over_bare"] <= 3, "x"),
        ("scrape gzip, idle / limit", "<= 1.3x", scrape["ratio_gzip"]["ours_over_limit"],
         scrape["ratio_gzip"]["ours_over_limit"] <= 1.3, "x"),
        ("scrape plain, idle / limit", "<= 1.3x", scrape["ratio_plain"]["ours_over_limit"],
         scrape["ratio_plain"]["ours_over_limit"] <= 1.3, "x"),
    ]
    return [{"target": t, "goal": g, "measured": round(m, 3), "unit": u, "met": bool(ok)} for t, g, m, ok, u in rows]


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    sizes = sorted(runs, key=int)
    m, st = report["machine"], report["settings"]

    def row(label: str, get: Callable[[dict[str, Any]], str]) -> str:
        cells = []
        for size in sizes:
            try:
                cells.append(get(runs[size]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                cells.append("n/a")
        return f"| {label} | " + " | ".join(cells) + " |"

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"

    def latencies(load: dict[str, Any]) -> str:
        return f"{ms(load['p50_s'])} / {ms(load['p99_s'])} / {ms(load['max_s'])}"

    def reasons(load: dict[str, Any]) -> str:
        return ", ".join(sorted(load["poll_errors"])) or "-"

    def sc(name: str, enc: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: ms(r["scrape"][name][enc]["median_s"])

    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_bytes'] / 2**30:.1f} GiB, Python {m['python']}, "
        f"lxml {m['lxml']} (libxml2 {m['libxml2']}), prometheus-client {m['prometheus_client']}, "
        f"httpx {m['httpx']}, pydantic {m['pydantic']}. Run {m['date']}, took {report['elapsed_s']:.0f} s; "
        f"load average at start {' '.join(m['loadavg_at_start'])}, at end {' '.join(report['loadavg_at_end'])}. "
        f"Exporter sources {m['exporter_sources_sha256']} (sha256 of exporter/**/*.py).",
        f"Medians of {report['settings']['reps']} repetitions; the simulator and every server run in their own "
        "process on 127.0.0.1. See benchmarks/README.md for what each figure means.",
        "",
        "| | " + " | ".join(f"{int(s):,} jobs" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
        row("active jobs / tasks / item entries (polled company)",
            lambda r: f"{r['poll']['jobs']:,} / {r['poll']['tasks']:,} / {r['poll']['items']:,}"),
        row("exposition: series, plain, gzip",
            lambda r: f"{r['exposition']['series']:,}, {r['exposition']['plain_bytes'] / MIB:.1f} MiB, "
                      f"{r['exposition']['gzip_bytes'] / MIB:.2f} MiB"),
        row("**0. render** of a new State, every variant: ours / prometheus-client",
            lambda r: f"{ms(r['render']['ours_median_s'])} / {ms(r['render']['reference_median_s'])} = "
                      f"{r['render']['speedup']:.1f}x"),
        row("render: series changed from one State to the next",
            lambda r: ", ".join(f"{n:,}" for n in r["render"]["series_changed_per_state"])),
        row("**1. scrape gzip**: ours", sc("ours", GZIP)),
        row("scrape gzip: limit, asyncio / http.server", lambda r: f"{sc('limit_asyncio', GZIP)(r)} / "
                                                                   f"{sc('limit_http_server', GZIP)(r)}"),
        row("scrape gzip: baseline (Gauges + start_http_server)", sc("baseline", GZIP)),
        row("scrape gzip: ours / limit (the faster)", lambda r: f"{r['scrape']['ratio_gzip']['ours_over_limit']:.2f}x"),
        row("scrape gzip: baseline / ours", lambda r: f"{r['scrape']['ratio_gzip']['baseline_over_ours']:.0f}x"),
        row("**1. scrape plain**: ours", sc("ours", PLAIN)),
        row("scrape plain: limit, asyncio / http.server", lambda r: f"{sc('limit_asyncio', PLAIN)(r)} / "
                                                                    f"{sc('limit_http_server', PLAIN)(r)}"),
        row("scrape plain: baseline", sc("baseline", PLAIN)),
        row("scrape plain: ours / limit (the faster)",
            lambda r: f"{r['scrape']['ratio_plain']['ours_over_limit']:.2f}x"),
        row("scrape plain: baseline / ours", lambda r: f"{r['scrape']['ratio_plain']['baseline_over_ours']:.0f}x"),
        row("**2. poll**: response size (decoded; on the wire)",
            lambda r: f"{r['poll']['response_bytes'] / 1e6:.1f} MB; {r['poll']['response_wire_bytes'] / 1e6:.1f} MB "
                      f"({r['poll']['content_encoding']})"),
        row("poll wall: ours (fetch + parse + snapshot)", lambda r: ms(r["poll"]["ours"]["median_wall_s"])),
        row("poll wall: limit (fetch + expat, no handlers)", lambda r: ms(r["poll"]["limit"]["median_wall_s"])),
        row("poll wall: fetch only (simulator + transfer)", lambda r: ms(r["poll"]["fetch_only"]["median_wall_s"])),
        row("poll: ours / limit", lambda r: f"{r['poll']['ours_over_limit']:.2f}x"),
        row("poll CPU only (saved bytes): ours / bare",
            lambda r: f"{ms(r['poll']['cpu_only']['ours_median_s'])} / {ms(r['poll']['cpu_only']['bare_median_s'])}"
                      f" = {r['poll']['cpu_only']['ours_over_bare']:.1f}x"),
        row("poll CPU only: ours, knowing the jobs of the answer 5 s before (jobs unchanged)",
            lambda r: f"{ms(r['poll']['cpu_only']['ours_knowing_median_s'])} = "
                      f"{r['poll']['cpu_only']['ours_knowing_over_bare']:.1f}x bare "
                      f"({r['poll']['cpu_only']['jobs_unchanged']:,} of {r['poll']['cpu_only']['jobs']:,})"),
        row("poll CPU only: lxml pull parser alone (no records, no models)",
            lambda r: f"{ms(r['poll']['cpu_only']['lxml_only_median_s'])} = "
                      f"{r['poll']['cpu_only']['lxml_only_over_bare']:.1f}x bare"),
        row("poll peak RSS (process) / delta over idle",
            lambda r: f"{r['poll']['ours']['median_peak_rss'] / MIB:.0f} / "
                      f"{r['poll']['ours']['median_peak_rss_delta'] / MIB:.0f} MiB"),
        row("poll: Python heap kept by the snapshot",
            lambda r: f"{r['poll']['ours']['retained_py_heap'] / MIB:.0f} MiB"),
        row("limit poll: peak RSS delta", lambda r: f"{r['poll']['limit']['median_peak_rss_delta'] / MIB:.0f} MiB"),
        row("**3. exporter RSS** after a poll, gzip rendered (peak so far)",
            lambda r: f"{r['exporter_rss']['after_poll_and_render'] / MIB:.0f} MiB "
                      f"({r['exporter_rss']['peak'] / MIB:.0f} MiB)"),
        row("exporter RSS once plain is rendered too",
            lambda r: f"{r['exporter_rss']['with_plain_cached_too'] / MIB:.0f} MiB"),
        row("baseline process RSS", lambda r: f"{r['baseline_setup']['rss'] / MIB:.0f} MiB"),
        row("load on the limit (static bytes, no polls): p50 / p99 / max",
            lambda r: latencies(r["load_limit"])),
        row(f"**4. load** ({st['scrapers']} scrapers, {st['load_seconds']:g} s, polls every "
            f"{st['load_poll']['interval_s']:g} s, timeout {st['load_poll']['timeout_s']:g} s): scrapes",
            lambda r: f"{r['load']['scrapes']:,} ({r['load']['scrape_errors']} errors)"),
        row("load: scrape p50 / p99 / max", lambda r: latencies(r["load"])),
        row("load: scrape p99, ours / limit", lambda r: f"{r['load']['p99_s'] / r['load_limit']['p99_s']:.2f}x"),
        row("load: getActiveJobs answers replayed (of the simulator's, recorded a poll apart)",
            lambda r: f"{r['load'].get('ips_answers_replayed', 0)} (of {r['load'].get('ips_answers_recorded', 0)})"),
        row("load: polls / skipped / failed (reasons) / late",
            lambda r: f"{r['load']['polls']:g} / {r['load']['skipped']:g} / {r['load']['failed']:g} "
                      f"({reasons(r['load'])}) / {r['load']['late_polls']}"),
        row("load: durations of the successful polls seen",
            lambda r: ", ".join(f"{d:.2f}" for d in r["load"]["successful_poll_durations_s"]) + " s"
            if r["load"]["successful_poll_durations_s"] else "none"),
        row("load: exporter peak RSS; with its render child's own memory",
            lambda r: f"{r['load']['exporter_rss_peak'] / MIB:.0f} MiB; {memory_peak(r['load']) / MIB:.0f} MiB"),
        row("**6. jobs page**, idle: first byte of the page / of /api/v1/jobs (median of 20; max)",
            lambda r: f"{ms(r['jobs_page_idle']['page_first_byte_median_s'])} / "
                      f"{ms(r['jobs_page_idle']['api_first_byte_median_s'])} "
                      f"({ms(r['jobs_page_idle']['page_first_byte_max_s'])}; "
                      f"{ms(r['jobs_page_idle']['api_first_byte_max_s'])})"
            if "jobs_page_idle" in r else "-"),
        row(f"jobs page under the load ({BROWSERS} browsers beside the scrapers, each reloading it every "
            f"{BROWSER_RELOAD_S:g} s): page loads, first byte p50 / p99",
            lambda r: f"{r['load']['with_browsers']['page_loads']:,} ({r['load']['with_browsers']['page_errors']} "
                      f"errors), {ms(r['load']['with_browsers']['page_first_byte_p50_s'])} / "
                      f"{ms(r['load']['with_browsers']['page_first_byte_p99_s'])}"
            if "with_browsers" in r["load"] else "-"),
        row(f"load: scrape p99 without / with the {BROWSERS} browsers (the same load, run after)",
            lambda r: f"{ms(r['load']['p99_s'])} / {ms(r['load']['with_browsers']['p99_s'])} "
                      f"({r['load']['with_browsers']['p99_s'] / r['load']['p99_s']:.2f}x)"
            if "with_browsers" in r["load"] else "-"),
        "",
        f"## Targets ({int(judged_size(runs)):,} jobs, {m['nproc']} CPUs)",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for t in report.get("targets", []):
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} {t['unit']} | {met} |")
    return "\n".join(lines) + "\n"


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    sizes = [int(s) for s in args.jobs.split(",")]
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {"jobs": sizes, "reps": args.reps, "load_seconds": args.load_seconds,
                     "limit_load_seconds": args.limit_load_seconds,
                     "load_poll": {"interval_s": args.load_interval, "timeout_s": args.load_timeout},
                     "scrapers": args.scrapers, "companies": args.companies, "seed": args.seed},
        "runs": {},
    }
    work = Path(tempfile.mkdtemp(prefix="scene7-bench-"))
    log(f"work directory {work}; measuring the exporter in {ROOT}")
    if float(report["machine"]["loadavg_at_start"][0]) > 0.5:
        log(f"warning: load average {report['machine']['loadavg_at_start'][0]}: the machine is not idle")
    try:
        for size in sizes:
            bench = Bench(size, args.reps, args.load_seconds, args.scrapers, args.workers, args.companies,
                          args.seed, work, args.limit_load_seconds, (args.load_interval, args.load_timeout))
            report["runs"][str(size)] = bench.run()
        if len(sizes) > 1:
            report["targets"] = targets(report["runs"])
    finally:
        report["elapsed_s"] = time.monotonic() - started
        report["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
        if report["runs"]:
            (out / "latest.md").write_text(markdown(report))
        if args.keep:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {report['elapsed_s']:.0f} s: {out / 'latest.md'}")
    print((out / "latest.md").read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="the whole benchmark (the default)")
    run.add_argument("--jobs", default="1000,10000", help="active job counts, comma-separated")
    run.add_argument("--reps", type=int, default=5, help="repetitions per timed figure (median reported)")
    run.add_argument("--load-seconds", type=float, default=30.0)
    run.add_argument("--limit-load-seconds", type=float, default=15.0,
                     help="the same load on the static-bytes limit, for reference (0: skip)")
    run.add_argument("--load-interval", type=float, default=5.0, help="poll interval of the load test (s)")
    run.add_argument("--load-timeout", type=float, default=4.0, help="poll timeout of the load test (s)")
    run.add_argument("--scrapers", type=int, default=20, help="concurrent scrapers of the load test")
    run.add_argument("--workers", type=int, default=4, help="processes the scrapers are spread over")
    run.add_argument("--companies", type=int, default=1, help="simulated companies (the biggest is polled)")
    run.add_argument("--seed", type=int, default=6)
    run.add_argument("--out", default=str(RESULTS), help="where latest.md and latest.json go")
    run.add_argument("--keep", action="store_true", help="keep the work directory (process logs)")

    baseline = sub.add_parser("_baseline")
    poll_ours = sub.add_parser("_poll-ours")
    poll_limit = sub.add_parser("_poll-limit")
    for p in (baseline, poll_ours, poll_limit):
        p.add_argument("--endpoint", required=True)
        p.add_argument("--company", required=True)
    baseline.add_argument("--label", required=True)
    poll_ours.add_argument("--trace", action="store_true")
    poll_limit.add_argument("--parse", action="store_true")
    poll_limit.add_argument("--save")
    limit = sub.add_parser("_limit")
    limit.add_argument("--plain", required=True)
    limit.add_argument("--gzip", required=True)
    limit.add_argument("--content-type", required=True)
    limit.add_argument("--server", choices=["asyncio", "http.server"], default="asyncio")
    cpu = sub.add_parser("_cpu")
    cpu.add_argument("--file", required=True)
    cpu.add_argument("--previous", help="an earlier answer: ours is also timed knowing its jobs")
    cpu.add_argument("--reps", type=int, default=5)
    cpu.add_argument("--profile", action="store_true")
    replay = sub.add_parser("_replay")
    replay.add_argument("--upstream", required=True)
    replay.add_argument("--record", type=int, required=True)
    worker = sub.add_parser("_load-worker")
    worker.add_argument("--port", type=int, required=True)
    worker.add_argument("--threads", type=int, required=True)
    worker.add_argument("--seconds", type=float, required=True)
    worker.add_argument("--start-at", type=float, required=True)
    worker.add_argument("--browse", action="store_true")

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("--"):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run, "_baseline": cmd_baseline, "_limit": cmd_limit, "_poll-ours": cmd_poll_ours,
        "_poll-limit": cmd_poll_limit, "_cpu": cmd_cpu, "_load-worker": cmd_load_worker,
        "_replay": cmd_replay,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
