"""Fuzzes the IPS response reader, and the rendering of whatever it accepts, for a budget of inputs.

    python tests/fuzz_parser.py --examples 200000 [--seconds 300] [--engine auto|atheris|hypothesis]
    python tests/fuzz_parser.py --replay CRASH_FILE...

A separate command, not a pytest module: a useful budget takes minutes. Each input is read the way
the client reads an answer (fed in pieces, then closed, then checked), and the jobs it yields are
rendered as a scrape would render them. A crash is any exception but an `IpsError`, or an input
taking more than a second; each distinct crash is saved under --crash-dir. Exit status 1 on a crash.

atheris (coverage-guided libFuzzer, `pip install atheris`) is used when installed, with the
captures as seed corpus and a dictionary of XML and IPS tokens; otherwise hypothesis generates
bytes and mutations of the captures.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CAPTURES = Path(__file__).parent / "data" / "captures"
HANG_SECONDS = 1.0
OPERATIONS = ("getActiveJobs", "getCompanyInfo", "getCompanyMembership", "renameAsset", "stopJob")
RETURN_ELEMENT = re.compile(rb"<(?:[\w.-]+:)?(\w+)Return\b")
NOW = 1_800_000_000.0

# Modern shapes the 2011 captures lack: task states, items, trigger time, SOAP 1.2, a membership.
EXTRA_SEEDS = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    b'<ns1:getActiveJobsReturn xmlns:ns1="http://www.scene7.com/IpsApi/xsd/2014-04-03"><ns1:jobArray><ns1:items>'
    b"<ns1:companyHandle>c|1</ns1:companyHandle><ns1:jobHandle>j|1</ns1:jobHandle><ns1:name>n_1</ns1:name>"
    b"<ns1:originalName>n</ns1:originalName><ns1:type>UrlUpload</ns1:type><ns1:state>Running</ns1:state>"
    b"<ns1:serverName>s</ns1:serverName><ns1:startDate>2026-11-26T05:00:00.000+01:00</ns1:startDate>"
    b"<ns1:triggerTime>2026-11-26T05:00:00Z</ns1:triggerTime><ns1:totalSize>10</ns1:totalSize>"
    b"<ns1:progress>5</ns1:progress><ns1:progressMessage>m</ns1:progressMessage>"
    b"<ns1:lastProgressUpdate>2026-11-26T06:00:00Z</ns1:lastProgressUpdate><ns1:taskProgressArray><ns1:items>"
    b"<ns1:taskType>com.scene7.upload.UploadAsyncTaskMonitor</ns1:taskType><ns1:taskState>Processing</ns1:taskState>"
    b"<ns1:numProcessed>1</ns1:numProcessed><ns1:numProcessing>1</ns1:numProcessing><ns1:numPending>3</ns1:numPending>"
    b"<ns1:progress>0.2</ns1:progress><ns1:progressMessage/>"
    b"<ns1:lastProgressUpdate>2026-11-26T06:00:00Z</ns1:lastProgressUpdate><ns1:taskItemProgressArray><ns1:items>"
    b"<ns1:itemName>a.jpg</ns1:itemName><ns1:progress>0.5</ns1:progress><ns1:progressMessage/>"
    b"<ns1:lastProgressUpdate>2026-11-26T06:00:00Z</ns1:lastProgressUpdate></ns1:items></ns1:taskItemProgressArray>"
    b"</ns1:items></ns1:taskProgressArray></ns1:items></ns1:jobArray></ns1:getActiveJobsReturn></s:Body></s:Envelope>",
    b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Receiver'
    b"</e:Value></e:Code><e:Reason><e:Text>x</e:Text></e:Reason><e:Detail>"
    b'<authorizationFault xmlns="http://www.scene7.com/IpsApi/xsd"><code>20003</code><reason>why</reason>'
    b"</authorizationFault></e:Detail></e:Fault></e:Body></e:Envelope>",
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
    b'<getCompanyMembershipReturn xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03"><membershipArray><items>'
    b"<company><companyHandle>c|1</companyHandle><name>Example</name><rootPath>Example/</rootPath></company>"
    b"<role>Admin</role><isActive>true</isActive></items></membershipArray></getCompanyMembershipReturn>"
    b"</s:Body></s:Envelope>",
)
DICTIONARY = (
    "<!DOCTYPE", "<!ENTITY", "SYSTEM", "&", "&amp;", "&lt;", "&#", "&#x", ";", "]]>", "<![CDATA[", "<!--", "-->",
    "<?", "?>", "<?xml", 'encoding="', "UTF-16", "ISO-8859-1", "xmlns=", "xmlns:", "</", "/>", '"', "'",
    "http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope",
    "http://www.scene7.com/IpsApi/xsd", "http://www.scene7.com/IpsApi/xsd/2014-04-03",
    "Envelope", "Body", "Header", "Fault", "faultstring", "detail", "Detail", "Reason", "Text",
    "authenticationFault", "authorizationFault", "ipsApiFault", "code", "reason", "getActiveJobsReturn",
    "jobArray", "items", "taskProgressArray", "taskItemProgressArray", "taskState", "state", "numPending",
    "progress", "startDate", "lastProgressUpdate", "companyInfo", "membershipArray", "company", "isActive",
    "Running", "Done", "Failed", "NaN", "INF", "-1", "99999999999999999999", "2026-11-26T06:00:00Z", "+14:00",
)


@dataclass
class Campaign:
    """Runs inputs through the reader, counts them, and keeps one input per distinct crash."""

    examples: int
    seconds: float | None
    crash_dir: Path
    target: Callable[[bytes], None]
    tried: int = 0
    crashes: dict[str, tuple[int, Path, str]] = field(default_factory=dict)
    slowest: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def run_one(self, data: bytes) -> None:
        from exporter.errors import IpsError

        self.tried += 1
        begun = time.perf_counter()
        try:
            self.target(data)
        except IpsError:
            pass
        except Exception as exc:  # the very thing looked for
            self._record(data, f"{type(exc).__name__} at {_where(exc)}", traceback.format_exc())
        elapsed = time.perf_counter() - begun
        self.slowest = max(self.slowest, elapsed)
        if elapsed > HANG_SECONDS:
            self._record(data, f"hang > {HANG_SECONDS:g}s", f"took {elapsed:.2f}s\n")

    def done(self) -> bool:
        over_time = self.seconds is not None and time.monotonic() - self.started >= self.seconds
        return self.tried >= self.examples or over_time

    def _record(self, data: bytes, signature: str, trace: str) -> None:
        count, path, first_trace = self.crashes.get(signature, (0, Path(), trace))
        if count == 0:
            self.crash_dir.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", signature)[:60]
            path = self.crash_dir / f"crash-{name}-{hashlib.sha1(data).hexdigest()[:12]}"
            path.write_bytes(data)
        self.crashes[signature] = (count + 1, path, first_trace)

    def report(self, engine: str) -> int:
        elapsed = time.monotonic() - self.started
        print(f"\nfuzz_parser ({engine}): {self.tried} inputs tried in {elapsed:.1f}s "
              f"({self.tried / max(elapsed, 1e-9):.0f}/s), slowest input {self.slowest * 1000:.1f} ms")
        crashes = sum(count for count, _, _ in self.crashes.values())
        print(f"crashes: {crashes} inputs, {len(self.crashes)} distinct")
        for signature, (count, path, trace) in sorted(self.crashes.items()):
            print(f"\n  {signature}: {count} inputs, first saved as {path}")
            print("    " + trace.rstrip().replace("\n", "\n    "))
        sys.stdout.flush()
        return 1 if self.crashes else 0


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame of the exporter (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}exporter{os.sep}" in f.filename] or frames
    frame = ours[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def operation_of(data: bytes) -> str:
    """The operation whose answer this looks like, so the mutations of a capture keep their path."""
    match = RETURN_ELEMENT.search(data[:4096])
    name = match.group(1).decode() if match else ""
    return name if name in OPERATIONS else "getActiveJobs"


def chunk_size(data: bytes) -> int:
    """A piece size derived from the input, so a crash replays the same way: often tiny."""
    crc = zlib.crc32(data)
    return 1 + crc % 7 if crc % 4 == 0 else 1 + crc % 8192


def make_target() -> Callable[[bytes], None]:
    """The read path of the client for one answer, then a scrape of the jobs it gave."""
    from exporter.exposition import OPENMETRICS_1_0_0, TEXT_0_0_4, Exposition, Variant
    from exporter.parse import (
        ResponseReader,
        check_job_array,
        companies_from_membership,
    )
    from exporter.snapshot import CompanyTarget, Store

    exposition = Exposition(Store(max_age=180.0), interval=60.0, clock=lambda: NOW)
    variants = (Variant(TEXT_0_0_4, False), Variant(OPENMETRICS_1_0_0, False))

    def target(data: bytes) -> None:
        operation = operation_of(data)
        reader = ResponseReader(operation, keep_items=len(data) % 2 == 0)
        size = chunk_size(data)
        for start in range(0, len(data), size):
            reader.feed(data[start : start + size])
        element = reader.close()
        if operation == "getCompanyMembership":
            companies_from_membership(element)
        elif operation == "getActiveJobs":
            check_job_array(element)
            result = reader.result()
            if result.jobs:
                state = Store(max_age=180.0).record_success(
                    CompanyTarget("main", "c|1", "c"), result.jobs, at=NOW - 1, duration=0.1,
                    invalid_records=result.invalid_records)
                for variant in variants:
                    exposition.render(state, variant, NOW)

    return target


def seeds() -> list[bytes]:
    return [path.read_bytes() for path in sorted(CAPTURES.glob("*.xml"))] + list(EXTRA_SEEDS)


def _dictionary_line(token: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" for c in token)
    return f'"{escaped}"'


def run_atheris(args: argparse.Namespace, work: Path) -> int:
    import atheris

    with atheris.instrument_imports(include=["exporter"]):
        target = make_target()
    campaign = Campaign(args.examples, args.seconds, args.crash_dir, target)
    corpus = args.corpus or work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(seeds()):
        (corpus / f"seed-{number}").write_bytes(seed)
    dictionary = work / "xml.dict"
    dictionary.write_text("\n".join(_dictionary_line(token) for token in DICTIONARY) + "\n")

    def test_one_input(data: bytes) -> None:
        campaign.run_one(data)
        if campaign.done():
            code = campaign.report("atheris")
            shutil.rmtree(work, ignore_errors=True)
            os._exit(code)  # libFuzzer never returns to us: stop here with our own summary

    args.crash_dir.mkdir(parents=True, exist_ok=True)
    # libFuzzer's own -timeout only catches a real hang, which ends the run: we measure the 1 s.
    libfuzzer_args = [sys.argv[0], str(corpus), f"-dict={dictionary}", "-max_len=65536", "-timeout=30",
                      "-rss_limit_mb=4096", f"-artifact_prefix={args.crash_dir}{os.sep}"]
    atheris.Setup(libfuzzer_args, test_one_input)
    atheris.Fuzz()
    return 0  # not reached


def run_hypothesis(args: argparse.Namespace) -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    campaign = Campaign(args.examples, args.seconds, args.crash_dir, make_target())
    tokens = [token.encode() for token in DICTIONARY]
    corpus = seeds()

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(corpus)))
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data)))
            kind = draw(st.integers(0, 3))
            if kind == 0 and at < len(data):
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == 1:
                data[at:at] = draw(st.one_of(st.sampled_from(tokens), st.binary(min_size=1, max_size=16)))
            elif kind == 2:
                del data[at : at + draw(st.integers(1, 64))]
            else:
                del data[at:]
        return bytes(data)

    @settings(max_examples=args.examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(mutated(), st.binary(max_size=4096)))
    def fuzz(data: bytes) -> None:
        if not campaign.done():
            campaign.run_one(data)

    fuzz()
    return campaign.report("hypothesis")


def replay(paths: Sequence[Path]) -> int:
    from exporter.errors import IpsError

    target = make_target()
    failed = 0
    for path in paths:
        begun = time.perf_counter()
        try:
            target(path.read_bytes())
            outcome = "accepted"
        except IpsError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        except Exception:
            failed += 1
            outcome = "CRASH\n" + traceback.format_exc()
        print(f"{path} ({(time.perf_counter() - begun) * 1000:.1f} ms): {outcome}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200_000, help="inputs to try (default 200000)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long, whatever is left")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--crash-dir", type=Path, default=Path(tempfile.gettempdir()) / "scene7-fuzz-crashes")
    parser.add_argument("--corpus", type=Path, default=None, help="atheris corpus directory to keep between runs")
    parser.add_argument("--replay", type=Path, nargs="+", help="run these saved inputs once and show tracebacks")
    args = parser.parse_args(argv)
    # One warning per invalid record would drown the report, and slow the run.
    logging.disable(logging.CRITICAL)
    if args.replay:
        return replay(args.replay)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "hypothesis"
        else:
            engine = "atheris"
    if engine == "atheris":
        return run_atheris(args, Path(tempfile.mkdtemp(prefix="scene7-fuzz-")))
    return run_hypothesis(args)


if __name__ == "__main__":
    sys.exit(main())
