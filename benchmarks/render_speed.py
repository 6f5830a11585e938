"""Render speed: the exporter's exposition against prometheus-client's encoders, on the same States.

A simulated company with N active jobs is polled every few simulated seconds (its counts change at
every poll, as a busy account's do); each new State is rendered in every variant a scraper can ask
for (text 0.0.4 and OpenMetrics, plain and gzip):

- *ours*: `Exposition.render`, one pass per variant, as a publish renders them;
- *reference*: prometheus-client's `generate_latest` of each format over the same collector,
  then `gzip.compress` of each, as the exporter did before it wrote the per-job families itself.

Both must give the same text (checked at every State). Prints JSON (one line): how many series
changed from one State to the next,: seconds per State for each,
medians, and the ratio. Usage: `python benchmarks/render_speed.py --jobs 10000 --states 5`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The exporter measured: this checkout's, or the one bench.py measures.
sys.path.insert(0, os.environ.get("SCENE7_BENCH_EXPORTER_ROOT") or str(Path(__file__).resolve().parents[1]))

from exporter import APP_NAME, __version__
from exporter.exposition import GZIP_LEVEL, OPENMETRICS_1_0_0, TEXT_0_0_4, Exposition, Variant
from exporter.parse import ResponseReader
from exporter.simulator.responses import Responder, parse_request
from exporter.simulator.world import SimulatorConfig, World
from exporter.snapshot import CompanyTarget, State, Store
from exporter.soap import AuthHeader, build_envelope
from exporter.versions import DEFAULT_API_VERSION

VARIANTS = [Variant(ct, gz) for ct in (TEXT_0_0_4, OPENMETRICS_1_0_0) for gz in (False, True)]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def states(jobs: int, count: int, step: float) -> list[State]:
    clock = Clock()
    world = World(SimulatorConfig(seed=3, companies=1, jobs=jobs, time_scale=1.0), clock)
    responder = Responder(world)
    company = world.companies[0]
    target = CompanyTarget("bench", company.handle, company.name)
    config = world.config
    envelope = build_envelope("getActiveJobs", DEFAULT_API_VERSION, {"companyHandle": company.handle},
                              AuthHeader(config.user, config.password, APP_NAME, __version__))
    store = Store()
    result = []
    for _ in range(count):
        clock.now += timedelta(seconds=step)
        answer = responder.answer(parse_request(envelope, "text/xml; charset=UTF-8"))
        reader = ResponseReader("getActiveJobs", keep_items=False)
        body = answer.body()
        for start in range(0, len(body), 65536):
            reader.feed(body[start:start + 65536])
        reader.close()
        result.append(store.record_success(target, reader.result().jobs, at=clock.now.timestamp(), duration=1.0))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--states", type=int, default=5, help="States rendered (polls), each timed once")
    parser.add_argument("--step", type=float, default=5.0, help="simulated seconds between polls")
    args = parser.parse_args()
    built = states(args.jobs, args.states, args.step)
    exposition = Exposition(Store(), interval=60)
    ours, reference, changed = [], [], []
    series = 0
    previous: set[bytes] = set()
    for state in built:
        now = state.companies[0].fetched_at or 0.0
        started = time.perf_counter()
        mine = exposition.render_variants(state, VARIANTS, now)
        ours.append(time.perf_counter() - started)

        started = time.perf_counter()
        registry = exposition.registry(state, now)
        theirs = {}
        for content_type, encode in exposition._encoders.items():
            plain = encode(registry)
            theirs[Variant(content_type, False)] = plain
            theirs[Variant(content_type, True)] = gzip.compress(plain, compresslevel=GZIP_LEVEL, mtime=0)
        reference.append(time.perf_counter() - started)

        for variant in VARIANTS:
            same = (gzip.decompress(mine[variant]) == gzip.decompress(theirs[variant]) if variant.gzip
                    else mine[variant] == theirs[variant])
            if not same:
                raise SystemExit(f"{variant}: the bytes differ from prometheus-client's")
        series = mine[VARIANTS[0]].count(b"\n") - 2 * mine[VARIANTS[0]].count(b"# TYPE")
        lines = set(mine[VARIANTS[0]].splitlines())
        if previous:
            changed.append(len(lines - previous))  # series whose value (or whose job) is new
        previous = lines
    report = {
        "jobs": args.jobs, "series": series, "states": args.states,
        "text_bytes": len(mine[VARIANTS[0]]),
        "series_changed_per_state": changed,
        "ours_s": ours, "reference_s": reference,
        "ours_median_s": statistics.median(ours), "reference_median_s": statistics.median(reference),
        "speedup": statistics.median(reference) / statistics.median(ours),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
