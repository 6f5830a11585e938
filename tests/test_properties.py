"""Property-based tests: what odd or hostile input does to the response reader and the renderer.

Whatever IPS, a proxy or an attacker in between sends, the reader must give jobs or a typed
`IpsError`, never another exception, and one bad record must never cost the good ones. Whatever
text IPS puts in a name, the exposition must stay valid and give the text back unchanged.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from support import Samples, parse_samples

from exporter.errors import FAULT_CLASSES, IpsError, IpsFault, MalformedResponse
from exporter.exposition import OPENMETRICS_1_0_0, TEXT_0_0_4, Exposition, Variant
from exporter.models import ActiveJob, JobState, TaskProgress, TaskState
from exporter.parse import (
    ActiveJobsResult,
    ResponseReader,
    check_job_array,
    companies_from_membership,
)
from exporter.snapshot import FINAL_STATES, CompanySnapshot, CompanyTarget, State, Store
from exporter.soap import IPS_COMMON_NS, SOAP11_ENV, SOAP12_ENV, add_text_child, api_namespace

CAPTURES = Path(__file__).parent / "data" / "captures"
NOW = 1_800_000_000.0
MAX_AGE = 180.0


def budget(examples: int) -> settings:
    """`examples` examples, no deadline (documents of 10 KB strings take their time)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- text ---------------------------------------------------------------------------------

# Every character XML 1.0 can carry: no C0 controls but tab, LF and CR, no U+FFFE/U+FFFF, no surrogates.
XML_CHARS = st.characters(
    codec="utf-8",
    exclude_characters=[chr(c) for c in range(0x20) if c not in (0x9, 0xA, 0xD)] + ["\ufffe", "\uffff"],
)
TRICKY = ['"', "\\", "\n", "\r", "\r\n", "\t", " ", "{", "}", "=", ",", "#", "&", "&amp;", "<", ">", "]]>", "'",
          "\\n", '\\"', "\\\\", "𝄞", "é", "\u2028", "\x85", "\u00a0", "\u200b", "# HELP x", "# EOF", "NaN", "+Inf"]


def texts(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Short text, strings of the tokens that escaping gets wrong, and 10 KB strings."""
    return st.one_of(
        st.text(chars, max_size=30),
        st.lists(st.sampled_from(TRICKY), max_size=12).map("".join),
        st.text(chars, min_size=1, max_size=8).map(lambda s: (s * (10_240 // len(s) + 1))[:10_240]),
    )


XML_TEXT = texts(XML_CHARS)

# --- getActiveJobs documents ----------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """One leaf as sent (None: element left out) and what the model must then hold."""

    text: str | None
    value: Any = None
    ok: bool = True


@dataclass
class TaskSpec:
    fields: dict[str, Wire]
    items: list[dict[str, Wire]]


@dataclass
class JobSpec:
    fields: dict[str, Wire]
    tasks: list[TaskSpec] = field(default_factory=list)

    def valid(self, keep_items: bool) -> bool:
        # Items are only validated when kept; one bad task or item spoils the whole job.
        leaves = [*self.fields.values()]
        for task in self.tasks:
            leaves += task.fields.values()
            if keep_items:
                leaves += [wire for item in task.items for wire in item.values()]
        return all(wire.ok for wire in leaves)


def sometimes(bad: st.SearchStrategy[Wire], good: st.SearchStrategy[Wire]) -> st.SearchStrategy[Wire]:
    """Mostly `good`, one time in forty `bad`: a job has some forty leaves, about half the jobs stay valid."""
    return st.integers(0, 39).flatmap(lambda n: bad if n == 0 else good)


NOT_A_NUMBER = st.one_of(
    XML_TEXT.map(lambda s: Wire(s + "x", ok=False)),  # no int, float or date ends in x
    st.just(Wire("", ok=False)),
)
MISSING = st.just(Wire(None, ok=False))
# xs:int, what the schema says IPS sends; larger numbers have their own property below.
INT = sometimes(NOT_A_NUMBER, st.integers(-(2**31), 2**31 - 1).map(lambda i: Wire(str(i), i)))
FLOAT = sometimes(
    st.one_of(NOT_A_NUMBER, MISSING),
    st.one_of(
        st.floats().map(lambda f: Wire(repr(f), f)),
        st.sampled_from([("NaN", math.nan), ("INF", math.inf), ("-INF", -math.inf), ("1E3", 1000.0)]).map(
            lambda t: Wire(t[0], t[1])
        ),
    ),
)
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
AWARE = st.datetimes(timezones=OFFSETS)
DATE = sometimes(
    st.one_of(NOT_A_NUMBER, MISSING, st.datetimes().map(lambda d: Wire(d.isoformat(), ok=False))),  # naive
    AWARE.map(lambda d: Wire(d.isoformat(), d)),
)
OPTIONAL_DATE = st.one_of(
    st.just(Wire(None, None)), sometimes(NOT_A_NUMBER, AWARE.map(lambda d: Wire(d.isoformat(), d)))
)


def states(known: type[JobState] | type[TaskState], text: st.SearchStrategy[str]) -> st.SearchStrategy[Wire]:
    """A documented state (read as the enum member) or any text (kept raw)."""
    return st.one_of(
        st.sampled_from([state.value for state in known]).map(lambda v: Wire(v, known(v))),
        text.map(lambda v: Wire(v, known(v) if v in known._value2member_map_ else v)),
    )


def job_specs(text: st.SearchStrategy[str], count: st.SearchStrategy[Wire]) -> st.SearchStrategy[JobSpec]:
    """Jobs whose text fields are `text` and whose counts are `count`, some fields broken."""
    present = text.map(lambda s: Wire(s, s))
    required = sometimes(MISSING, present)
    required_count = sometimes(MISSING, count)
    defaulted_count = st.one_of(st.just(Wire(None, 0)), count)
    optional = st.one_of(st.just(Wire(None, None)), present)
    defaulted = st.one_of(st.just(Wire(None, "")), present)
    item = st.fixed_dictionaries(
        {"itemName": required, "progress": FLOAT, "progressMessage": defaulted, "lastProgressUpdate": DATE}
    )
    task = st.builds(
        TaskSpec,
        st.fixed_dictionaries(
            {"taskType": required, "numProcessed": required_count, "numProcessing": required_count,
             "numPending": required_count,
             "progress": FLOAT, "progressMessage": defaulted, "lastProgressUpdate": DATE},
            optional={"taskState": states(TaskState, text)},
        ),
        st.lists(item, max_size=3),
    )
    return st.builds(
        JobSpec,
        st.fixed_dictionaries(
            {"companyHandle": required, "jobHandle": required, "name": required, "originalName": required,
             "type": required, "state": sometimes(MISSING, states(JobState, text)), "submitUserEmail": defaulted,
             "locale": optional, "description": optional, "serverName": defaulted, "startDate": DATE,
             "triggerTime": OPTIONAL_DATE, "totalSize": defaulted_count,
             "progress": st.one_of(st.just(Wire(None, 0)), INT), "progressMessage": defaulted,
             "lastProgressUpdate": DATE},
        ),
        st.lists(task, max_size=3),
    )


JOB = job_specs(XML_TEXT, INT)


@dataclass(frozen=True)
class Envelope:
    soap: str
    version: str
    prefix: str | None


ENVELOPES = st.builds(
    Envelope,
    st.sampled_from([SOAP11_ENV, SOAP12_ENV]),
    st.sampled_from(["2010-01-31", "2012-02-14", "2014-04-03", "2099-12-31"]),
    st.sampled_from([None, "ns1", "ips"]),
)


def active_jobs_document(jobs: Sequence[JobSpec], envelope: Envelope) -> bytes:
    """A getActiveJobs answer built by lxml, so whatever the text it is well-formed."""
    root = etree.Element(f"{{{envelope.soap}}}Envelope", nsmap={"soapenv": envelope.soap})
    body = etree.SubElement(root, f"{{{envelope.soap}}}Body")
    ns = api_namespace(envelope.version)
    answer = etree.SubElement(body, f"{{{ns}}}getActiveJobsReturn", nsmap={envelope.prefix: ns})  # type: ignore[dict-item]

    def leaves(parent: etree._Element, wires: dict[str, Wire]) -> None:
        for name, wire in wires.items():
            if wire.text is not None:
                add_text_child(parent, f"{{{ns}}}{name}", wire.text)

    array = etree.SubElement(answer, f"{{{ns}}}jobArray")
    for job in jobs:
        element = etree.SubElement(array, f"{{{ns}}}items")
        leaves(element, job.fields)
        tasks = etree.SubElement(element, f"{{{ns}}}taskProgressArray")
        for task in job.tasks:
            task_element = etree.SubElement(tasks, f"{{{ns}}}items")
            leaves(task_element, task.fields)
            items = etree.SubElement(task_element, f"{{{ns}}}taskItemProgressArray")
            for item in task.items:
                leaves(etree.SubElement(items, f"{{{ns}}}items"), item)
        # A job-detail element: nested, never read.
        detail = etree.SubElement(element, f"{{{ns}}}uploadUrlsJob")
        add_text_child(etree.SubElement(detail, f"{{{ns}}}urlArray"), f"{{{ns}}}items", "https://example.com/a.jpg")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def chunked(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """`data` cut in pieces of the given sizes, cycled."""
    start, turn = 0, 0
    while start < len(data):
        size = sizes[turn % len(sizes)]
        yield data[start : start + size]
        start, turn = start + size, turn + 1


CHUNK_SIZES = st.lists(st.integers(1, 5000), min_size=1, max_size=20)
OPERATIONS = ["getActiveJobs", "getCompanyInfo", "getCompanyMembership", "renameAsset", "stopJob"]


def read_like_client(data: bytes, operation: str, sizes: Sequence[int], keep_items: bool = True) -> object:
    """The whole read path of `client` for one answer, fed in pieces as the network would."""
    reader = ResponseReader(operation, keep_items=keep_items)
    for piece in chunked(data, sizes):
        reader.feed(piece)
    element = reader.close()
    if operation == "getActiveJobs":
        check_job_array(element)
        return reader.result()
    if operation == "getCompanyMembership":
        return companies_from_membership(element)
    return element


def comparable(value: Any) -> Any:
    """A model dump in which NaN equals NaN and a datetime keeps its offset."""
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(item) for item in value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return (value, value.utcoffset())
    return value


def dump(result: ActiveJobsResult) -> Any:
    return comparable(
        ([job.model_dump(by_alias=True) for job in result.jobs], result.invalid_records)
    )


def expected_leaves(wires: dict[str, Wire], defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{name: wire.value for name, wire in wires.items()}}


@budget(120)
@given(st.lists(JOB, max_size=4), ENVELOPES, CHUNK_SIZES, st.booleans())
def test_active_jobs_round_trip_and_bad_records_are_only_skipped(jobs, envelope, sizes, keep_items):
    data = active_jobs_document(jobs, envelope)
    whole = read_like_client(data, "getActiveJobs", [len(data)], keep_items)
    pieces = read_like_client(data, "getActiveJobs", sizes, keep_items)
    assert isinstance(whole, ActiveJobsResult) and isinstance(pieces, ActiveJobsResult)
    assert dump(pieces) == dump(whole)

    valid = [job for job in jobs if job.valid(keep_items)]
    assert whole.invalid_records == len(jobs) - len(valid)
    assert len(whole.jobs) == len(valid)
    for spec, job in zip(valid, whole.jobs, strict=True):
        got = job.model_dump(by_alias=True)
        tasks = got.pop("taskProgressArray")
        assert comparable(got) == comparable(expected_leaves(spec.fields, {}))
        assert len(tasks) == len(spec.tasks)
        for task_spec, task in zip(spec.tasks, tasks, strict=True):
            items = task.pop("taskItemProgressArray")
            assert task.pop("itemCount") == len(task_spec.items)
            assert comparable(task) == comparable(expected_leaves(task_spec.fields, {"taskState": None}))
            assert comparable(items) == (
                comparable([expected_leaves(item, {}) for item in task_spec.items]) if keep_items else []
            )


def must_read_or_raise_ips_error(data: bytes, operation: str, sizes: Sequence[int], keep_items: bool = True) -> None:
    # Any other exception fails the test with its traceback.
    with contextlib.suppress(IpsError):
        read_like_client(data, operation, sizes, keep_items)


@budget(300)
@given(st.binary(max_size=3000), st.sampled_from(OPERATIONS), CHUNK_SIZES, st.booleans())
def test_any_bytes_give_a_result_or_an_ips_error(data, operation, sizes, keep_items):
    must_read_or_raise_ips_error(data, operation, sizes, keep_items)


def capture_operation(name: str) -> str:
    stem = name.split("-")[0]
    head, *rest = stem.split("_")
    return head + "".join(word.capitalize() for word in rest)


CAPTURE_FILES = sorted(CAPTURES.glob("*.xml"))
INSERTS = [b"<!DOCTYPE s [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>", b"<!DOCTYPE s>", b"&", b"&e;", b"&amp;",
           b"&#0;", b"&#x1F600;", b"]]>", b"<![CDATA[", b"<!--", b"-->", b"<?pi x?>", b"<items>", b"</items>",
           b"\x00", b"\xff\xfe", b"\xc3", b"\xef\xbb\xbf", b"<", b">", b'"', b"xmlns:x='y'", b"\r\n"]


@st.composite
def mutated_captures(draw: st.DrawFn) -> tuple[bytes, str]:
    path = draw(st.sampled_from(CAPTURE_FILES))
    data = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "bytes"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data), capture_operation(path.name)


def test_capture_operations_are_the_real_ones():
    assert {capture_operation(p.name) for p in CAPTURE_FILES} == {
        "getActiveJobs", "getCompanyInfo", "renameAsset", "stopJob"}


@budget(400)
@given(mutated_captures(), CHUNK_SIZES, st.booleans())
def test_mutated_captures_give_a_result_or_an_ips_error(mutated, sizes, keep_items):
    data, operation = mutated
    must_read_or_raise_ips_error(data, operation, sizes, keep_items)


def test_an_unknown_encoding_is_a_malformed_answer():
    # One flipped bit in "UTF-8" made expat's encoding lookup raise LookupError past the reader.
    with pytest.raises(MalformedResponse):
        read_like_client(b'<?xml version="1.0" encoding="UTF-9"?><a/>', "getActiveJobs", [64])


DTD_BODY = ('<!DOCTYPE s [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&e;</s:Body></s:Envelope>')


# The guard names the DTD when it can read the prolog; an encoding it cannot read (or a lying
# declaration) is refused as broken before any DTD is looked at.
DTD = "DTDs are not accepted"
BROKEN = "not well-formed XML"


@pytest.mark.parametrize(
    ("declared", "codec", "bom", "refusal"),
    [("UTF-8", "utf-8", b"", DTD), ("UTF-16", "utf-16-le", b"\xff\xfe", DTD),
     ("UTF-16", "utf-16-be", b"\xfe\xff", DTD), (None, "utf-16-le", b"\xff\xfe", DTD),
     ("UTF-16LE", "utf-16-le", b"", DTD), ("ISO-8859-1", "latin-1", b"", DTD), ("US-ASCII", "ascii", b"", DTD),
     ("cp037", "cp037", b"", BROKEN), ("UTF-16", "utf-8", b"", BROKEN), ("UTF-8", "utf-16-le", b"\xff\xfe", BROKEN),
     (None, "utf-32-le", b"\xff\xfe\x00\x00", BROKEN), ("Shift_JIS", "shift_jis", b"", BROKEN)],
)
@pytest.mark.parametrize("piece", [1, 4096])
def test_a_dtd_is_refused_by_the_guard_in_any_encoding(declared, codec, bom, refusal, piece):
    # The DOCTYPE guard (expat) and lxml (libxml2) must never disagree on where the prolog ends,
    # and it is the guard that refuses: lxml alone would read the document.
    declaration = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    document = bom + (declaration + DTD_BODY).encode(codec)
    with pytest.raises(MalformedResponse, match=refusal):
        read_like_client(document, "getActiveJobs", [piece])


# Well-formed trees of the names IPS uses, in the wrong places, with odd text.
NAMESPACES = [SOAP11_ENV, SOAP12_ENV, IPS_COMMON_NS, api_namespace("2014-04-03"), None, "urn:other"]
NAMES = ["Envelope", "Body", "Header", "Fault", "faultstring", "faultcode", "detail", "Detail", "Reason", "Text",
         *FAULT_CLASSES, "code", "reason", "getActiveJobsReturn", "getCompanyInfoReturn",
         "getCompanyMembershipReturn", "jobArray", "items", "taskProgressArray", "taskItemProgressArray",
         "companyInfo", "membershipArray", "company", "companyHandle", "name", "state", "taskState", "numPending",
         "progress", "startDate", "lastProgressUpdate", "isActive", "expires"]
TAGS = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES))
LEAF_TEXT = st.one_of(XML_TEXT, st.sampled_from(["1", "-1", "²", "٣", "1" * 5000, "2026-11-26T06:00:00Z", "true",
                                                 "Running", "Done", "NaN", " 30000 ", ""]))
TREES = st.recursive(
    st.tuples(TAGS, LEAF_TEXT),
    lambda children: st.tuples(TAGS, st.lists(children, max_size=4)),
    max_leaves=30,
)


def build_tree(tree: tuple[tuple[str | None, str], Any], parent: etree._Element | None = None) -> etree._Element:
    (ns, name), content = tree
    tag = f"{{{ns}}}{name}" if ns else name
    element = etree.Element(tag) if parent is None else etree.SubElement(parent, tag)
    if isinstance(content, str):
        element.text = content
    else:
        for child in content:
            build_tree(child, element)
    return element


@budget(250)
@given(TREES, st.sampled_from([SOAP11_ENV, SOAP12_ENV]), st.sampled_from(OPERATIONS), CHUNK_SIZES, st.booleans())
def test_well_formed_nonsense_gives_a_result_or_an_ips_error(tree, soap, operation, sizes, keep_items):
    root = etree.Element(f"{{{soap}}}Envelope")
    build_tree(tree, etree.SubElement(root, f"{{{soap}}}Body"))
    must_read_or_raise_ips_error(etree.tostring(root), operation, sizes, keep_items)


FAULT_CODES = st.one_of(
    st.integers(0, 10**12).map(str), XML_TEXT, st.sampled_from(["²", "٣", "1" * 5000, " 30000 ", "+1", "-1", "1_0"])
)


@budget(150)
@given(st.sampled_from([SOAP11_ENV, SOAP12_ENV]), st.sampled_from(list(FAULT_CLASSES)),
       st.sampled_from([IPS_COMMON_NS, api_namespace("2014-04-03")]), FAULT_CODES, XML_TEXT, CHUNK_SIZES)
def test_soap_faults_are_typed_whatever_their_code_and_reason(soap, detail_name, ns, code, reason, sizes):
    envelope = etree.Element(f"{{{soap}}}Envelope")
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{soap}}}Body"), f"{{{soap}}}Fault")
    add_text_child(fault, "faultstring", "fault")
    detail = etree.SubElement(fault, "detail" if soap == SOAP11_ENV else f"{{{soap}}}Detail")
    entry = etree.SubElement(detail, f"{{{ns}}}{detail_name}")
    add_text_child(entry, f"{{{ns}}}code", code)
    add_text_child(entry, f"{{{ns}}}reason", reason)
    with pytest.raises(IpsFault) as caught:
        read_like_client(etree.tostring(envelope), "getActiveJobs", sizes)
    assert type(caught.value) is FAULT_CLASSES[detail_name]
    assert caught.value.fault_reason == reason.strip()
    digits = code.strip()
    if digits.isascii() and digits.isdigit() and len(digits) <= 9:
        assert caught.value.code == int(digits)
    else:
        assert caught.value.code is None or isinstance(caught.value.code, int)


@pytest.mark.parametrize("code", ["²", "1" * 5000])
def test_fault_code_that_is_not_a_plain_number_is_still_a_fault(code):
    # str.isdigit() is True for "²", which int() refuses; int() refuses 5000 digits too.
    document = (
        '<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><e:Fault>'
        "<faultcode>e:Server</faultcode><faultstring>x</faultstring><detail>"
        f'<x:ipsApiFault xmlns:x="http://www.scene7.com/IpsApi/xsd"><x:code>{code}</x:code>'
        "<x:reason>why</x:reason></x:ipsApiFault></detail></e:Fault></e:Body></e:Envelope>"
    ).encode()
    with pytest.raises(IpsFault) as caught:
        read_like_client(document, "getActiveJobs", [len(document)])
    assert caught.value.fault_reason == "why"


# --- exposition -----------------------------------------------------------------------------

ANY_TEXT = texts(st.characters(codec="utf-8"))  # labels may also come from the config file
WHEN = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=OFFSETS)
# Task counts as the model bounds them (64 bits); the exporter's own counters may grow larger.
TASK_COUNT = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**31, 2**63 - 1]))
COUNT = st.one_of(st.integers(0, 2**64), st.sampled_from([2**53 + 1, 10**18, 10**300]))


@st.composite
def tasks_of(draw: st.DrawFn, task_types: st.SearchStrategy[str]) -> TaskProgress:
    # Not st.builds: the signature of a pydantic model names the aliases.
    return TaskProgress(
        task_type=draw(task_types), task_state=draw(st.one_of(st.none(), st.sampled_from(list(TaskState)), ANY_TEXT)),
        num_processed=draw(TASK_COUNT), num_processing=draw(TASK_COUNT), num_pending=draw(TASK_COUNT),
        progress=draw(st.floats()), last_progress_update=draw(WHEN),
    )


@st.composite
def active_jobs(draw: st.DrawFn, names: st.SearchStrategy[str]) -> ActiveJob:
    # Few distinct types, so repeated task types and job names happen.
    return ActiveJob(
        company_handle="c|1", job_handle=draw(ANY_TEXT), name=draw(names), original_name=draw(ANY_TEXT),
        job_type=draw(ANY_TEXT), state=draw(st.one_of(st.sampled_from(list(JobState)), ANY_TEXT)),
        server_name=draw(ANY_TEXT), start_date=draw(WHEN), last_progress_update=draw(WHEN),
        task_progress_array=tuple(draw(st.lists(tasks_of(st.one_of(ANY_TEXT, st.sampled_from(["", "T"]))),
                                                max_size=3))),
    )


@st.composite
def company_snapshots(draw: st.DrawFn, label: str, max_jobs: int = 4) -> CompanySnapshot:
    names = st.one_of(ANY_TEXT, st.sampled_from(["", "job"]))
    jobs = tuple(draw(st.lists(active_jobs(names), max_size=max_jobs)))
    task_types = {task.task_type for job in jobs for task in job.task_progress_array}
    finished = {(task_type, final): draw(COUNT) for task_type in task_types for final in FINAL_STATES}
    age = draw(st.one_of(st.none(), st.floats(0, 2 * MAX_AGE)))
    return CompanySnapshot(
        target=CompanyTarget("main", draw(ANY_TEXT), label),
        jobs=jobs,
        fetched_at=None if age is None else NOW - age,
        up=draw(st.booleans()),
        attempted_at=NOW - 1,
        poll_duration=draw(st.one_of(st.none(), st.floats(min_value=0))),
        polls_total=draw(COUNT),
        errors_total=MappingProxyType({"timeout": draw(COUNT), "malformed": 1}),
        invalid_records_total=draw(COUNT),
        finished_total=MappingProxyType(finished),
    )


@st.composite
def states_of(draw: st.DrawFn, companies: tuple[int, int] = (1, 3), max_jobs: int = 4) -> State:
    labels = draw(st.lists(ANY_TEXT, min_size=companies[0], max_size=companies[1], unique=True))
    companies = tuple(draw(company_snapshots(label, max_jobs)) for label in labels)
    return State(
        tuple(sorted(companies, key=lambda c: c.target.label)), generation=1,
        series_dropped_total=draw(COUNT), per_job_series=draw(st.booleans()), max_age=MAX_AGE,
    )


def render(state: State, content_type: str) -> str:
    exposition = Exposition(Store(max_age=MAX_AGE), interval=60.0, clock=lambda: NOW)
    return exposition.render(state, Variant(content_type, False), NOW).decode()


def parsed(text: str, content_type: str) -> Samples:
    return parse_samples(text, openmetrics=content_type == OPENMETRICS_1_0_0)


def same(value: float, expected: float) -> bool:
    return (math.isnan(value) and math.isnan(expected)) or value == float(expected)


def check_exposition(state: State, samples: Samples) -> None:
    """The series of every company are there, under their labels unchanged, with their values."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for (name, labels), value in samples.items():
        by_name.setdefault(name, []).append((dict(labels), value))

    def series(name: str, company: str) -> list[tuple[dict[str, str], float]]:
        return [(labels, value) for labels, value in by_name.get(name, []) if labels["company"] == company]

    assert {labels["company"] for labels, _ in by_name["scene7_up"]} == {c.target.label for c in state.companies}
    for company in state.companies:
        label = company.target.label
        fresh = company.fetched_at is not None and NOW - company.fetched_at <= MAX_AGE
        ((_, up),) = series("scene7_up", label)
        assert up == (1 if company.up and fresh else 0)
        ((_, polls),) = series("scene7_polls_total", label)
        assert same(polls, company.polls_total)
        finished = {(labels["task_type"], labels["final_state"]): value
                    for labels, value in series("scene7_tasks_finished_total", label)}
        assert finished.keys() == company.finished_total.keys()
        assert all(same(value, company.finished_total[key]) for key, value in finished.items())

        first_job: dict[str, ActiveJob] = {}
        first_task: dict[tuple[str, str], tuple[ActiveJob, TaskProgress]] = {}
        if fresh and state.per_job_series:
            for job in company.jobs:
                first_job.setdefault(job.name, job)
                for task in job.task_progress_array:
                    first_task.setdefault((job.name, task.task_type), (job, task))
        info = {labels["job_name"]: labels for labels, _ in series("scene7_job_info", label)}
        assert info.keys() == first_job.keys()
        for name, job in first_job.items():
            assert info[name] == {"company": label, "job_name": job.name, "job_type": job.job_type,
                                  "original_name": job.original_name, "server_name": job.server_name}
        ratios = {(labels["job_name"], labels["task_type"]): (labels, value)
                  for labels, value in series("scene7_task_progress_ratio", label)}
        assert ratios.keys() == first_task.keys()
        for key, (job, task) in first_task.items():
            labels, value = ratios[key]
            assert labels["job_type"] == job.job_type
            assert same(value, task.progress)
        items = {(labels["job_name"], labels["task_type"], labels["item_state"]): value
                 for labels, value in series("scene7_task_items", label)}
        for (name, task_type), (_, task) in first_task.items():
            assert same(items[(name, task_type, "pending")], task.num_pending)
            assert same(items[(name, task_type, "processed")], task.num_processed)
        tasks = {(labels["job_type"], labels["task_type"]) for labels, _ in series("scene7_tasks", label)}
        expected = {(job.job_type, task.task_type) for job in company.jobs for task in job.task_progress_array}
        assert tasks == (expected if fresh else set())


@budget(60)
@given(states_of())
def test_any_text_renders_as_valid_exposition_that_gives_it_back(state):
    for content_type in (TEXT_0_0_4, OPENMETRICS_1_0_0):
        check_exposition(state, parsed(render(state, content_type), content_type))


@budget(4)
@given(states_of(companies=(5, 25), max_jobs=2))
def test_promtool_accepts_the_exposition_of_many_random_companies(state):
    # One promtool run checks up to 25 random companies at once.
    text = render(state, TEXT_0_0_4)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()[:2000]


# --- from the wire to the scrape ------------------------------------------------------------

HUGE = st.one_of(st.integers(2**31, 10**400), st.integers(-(10**400), -(2**31))).map(lambda i: Wire(str(i), i))
# Counts out of xs:int range, up to 400 digits; short text, as names are not the point here.
ODD_JOB = job_specs(st.text(XML_CHARS, max_size=8), st.one_of(HUGE, INT))


def scrape_after_poll(data: bytes) -> dict[str, Samples]:
    result = read_like_client(data, "getActiveJobs", [len(data)], keep_items=False)
    assert isinstance(result, ActiveJobsResult)
    state = Store(max_age=MAX_AGE).record_success(
        CompanyTarget("main", "c|1", "c"), result.jobs, at=NOW - 1, duration=0.1,
        invalid_records=result.invalid_records)
    return {content_type: parsed(render(state, content_type), content_type)
            for content_type in (TEXT_0_0_4, OPENMETRICS_1_0_0)}


@budget(80)
@given(st.lists(ODD_JOB, max_size=3), ENVELOPES)
def test_whatever_the_reader_accepts_can_be_scraped(jobs, envelope):
    scrape_after_poll(active_jobs_document(jobs, envelope))


def test_a_count_beyond_float_range_does_not_break_every_scrape():
    job = (
        "<items><companyHandle>c|1</companyHandle><jobHandle>j|1</jobHandle><name>n</name>"
        "<originalName>n</originalName><type>UrlUpload</type><state>Running</state>"
        "<startDate>2026-11-26T05:00:00Z</startDate><lastProgressUpdate>2026-11-26T05:00:00Z</lastProgressUpdate>"
        "<taskProgressArray><items><taskType>T</taskType><numProcessed>0</numProcessed>"
        f"<numProcessing>0</numProcessing><numPending>{'9' * 400}</numPending><progress>0.5</progress>"
        "<lastProgressUpdate>2026-11-26T05:00:00Z</lastProgressUpdate></items></taskProgressArray></items>"
    )
    document = (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<getActiveJobsReturn xmlns="{api_namespace("2014-04-03")}"><jobArray>{job}</jobArray>'
        "</getActiveJobsReturn></s:Body></s:Envelope>"
    ).encode()
    for samples in scrape_after_poll(document).values():
        assert ("scene7_up", frozenset({("company", "c")})) in samples


def test_a_task_with_an_empty_task_type_keeps_its_series():
    when = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    task = TaskProgress(task_type="", num_processed=1, num_processing=0, num_pending=0, progress=0.5,
                        last_progress_update=when)
    job = ActiveJob(company_handle="c|1", job_handle="j|1", name="n", original_name="n", job_type="UrlUpload",
                    state="Running", start_date=when, last_progress_update=when, task_progress_array=(task,))
    state = Store(max_age=MAX_AGE).record_success(
        CompanyTarget("main", "c|1", "c"), (job,), at=NOW - 1, duration=0.1)
    samples = parsed(render(state, TEXT_0_0_4), TEXT_0_0_4)
    key = frozenset({"company": "c", "job_name": "n", "job_type": "UrlUpload", "task_type": ""}.items())
    assert samples[("scene7_task_progress_ratio", key)] == 0.5
