"""Reads IPS SOAP responses incrementally into models, as the bytes arrive.

A getActiveJobs answer for a big tenant is tens of MB. The reader turns each job into an
`ActiveJob` as soon as its element ends and frees the element, so memory stays near one job, not
one response. Item entries of a task can be counted without being kept. getJobLogs answers are
read the same way, one `JobLog` per record. Elements are matched by namespace and local name,
whatever the prefixes, for every IPS API version and SOAP 1.1 or 1.2.

Between two polls most jobs of a company do not change. Given the fingerprints of the last
answer's jobs, the reader keeps the model of each job whose XML is byte for byte the same: only
changed jobs are read and validated, and the new State shares the rest with the old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from pydantic import BaseModel, ValidationError

from exporter.errors import FAULT_CLASSES, ApiFault, IpsFault, MalformedResponse
from exporter.memory import cyclic_gc_paused
from exporter.models import ActiveJob, CompanyMembership, JobLog
from exporter.soap import (
    SOAP_ENVELOPES,
    PrologGuard,
    child_text,
    hardened_pull_parser,
    iter_children,
    local_name,
    memoised_local_name,
    split_tag,
)
from exporter.versions import is_ips_namespace


@dataclass(frozen=True)
class ActiveJobsResult:
    """The jobs of one getActiveJobs answer, and what was left out of them."""

    jobs: tuple[ActiveJob, ...]
    invalid_records: int = 0
    first_invalid: str = ""  # why the first invalid record was left out (IPS text: untrusted)
    # Each job by the fingerprint of its XML, when the reader was given those of an earlier answer.
    fingerprints: Mapping[bytes, ActiveJob] = field(default_factory=dict)


@dataclass(frozen=True)
class JobLogsResult:
    """The job logs of one getJobLogs answer, and what was left out of them."""

    logs: tuple[JobLog, ...]
    invalid_records: int = 0
    first_invalid: str = ""  # why the first invalid record was left out (IPS text: untrusted)


@dataclass(frozen=True)
class Records:
    """Where the records of an operation's answer are, and how one is read.

    The records are the `items` of the array element named `array`; `read(element,
    keep_items, cut)` makes one a model or raises ValidationError (`cut`: how many item entries
    the reader already freed from each of the record's item lists). An invalid record is told
    as `<what> '<text of its name element>'`.
    """

    array: str
    read: Callable[[etree._Element, bool, dict[etree._Element, int]], BaseModel]
    what: str
    name: str


def _active_job(element: etree._Element, keep_items: bool, cut: dict[etree._Element, int]) -> ActiveJob:
    return ActiveJob.model_validate(job_record(element, keep_items, cut))


def _job_log(element: etree._Element, _keep_items: bool, _cut: dict[etree._Element, int]) -> JobLog:
    return JobLog.model_validate(job_log_record(element))


# The operations whose answers hold records read one by one as they stream in.
RECORDS: dict[str, Records] = {
    "getActiveJobs": Records("jobArray", _active_job, "job", "name"),
    "getJobLogs": Records("jobLogArray", _job_log, "job log", "jobName"),
}


class ResponseReader:
    """Parses one SOAP response to `<operation>Param` as it streams in.

    `feed()` the body chunk by chunk, then `close()` returns the `<operation>Return` element or
    raises the typed error of a SOAP fault or a malformed answer. For the operations of
    `RECORDS` the records are read on the way, each element freed once read: `result()` gives
    the jobs of getActiveJobs, `job_logs()` the job logs of getJobLogs.

    lxml builds the tree in C; the reader looks at it once per chunk fed, not once per element:
    the parser reports only where a record array and a list to trim start. After each chunk,
    every child of a record array but the last is complete, so it is read and freed; the lists
    that can be long within one record (a task's item entries, counted unless kept; a job log's
    messages, never read) are cut back to their last entry the same way.
    """

    def __init__(
        self, operation: str, *, keep_items: bool = True, known: Mapping[bytes, BaseModel] | None = None
    ) -> None:
        self.operation = operation
        self.keep_items = keep_items
        # With `known`, the records of an earlier answer by fingerprint: a record whose XML has
        # not changed since is that same model, neither read nor validated again.
        self._known = known
        self._fingerprints: dict[bytes, Any] = {}
        self._records = RECORDS.get(operation)
        self._guard = PrologGuard()
        self._trim = {"detailArray"} | (set() if keep_items else {"taskItemProgressArray"})
        watched = [f"{{*}}{name}" for name in sorted(self._trim)]
        if self._records is not None:
            watched.append(f"{{*}}{self._records.array}")
        self._parser = hardened_pull_parser(tag=watched, events=("start",))
        self._arrays: list[etree._Element] = []  # record arrays, in document order
        self._lists: list[etree._Element] = []  # lists to trim that may still grow
        self._cut: dict[etree._Element, int] = {}  # item entries freed from each list, by list
        self._read: list[Any] = []  # models of self._records.read
        self._invalid = 0
        self._first_invalid = ""

    def feed(self, data: bytes) -> None:
        try:
            self._guard.feed(data)
        except ValueError as exc:  # a DTD refused, or broken XML: the guard's message says which
            raise MalformedResponse(str(exc)) from None
        with cyclic_gc_paused():
            try:
                self._parser.feed(data)
            except (ValueError, LookupError, etree.XMLSyntaxError) as exc:
                raise MalformedResponse(f"not well-formed XML: {exc}") from None
            self._drain(finished=False)

    def close(self) -> etree._Element:
        with cyclic_gc_paused():
            try:
                root = self._parser.close()
            except (etree.XMLSyntaxError, LookupError) as exc:
                raise MalformedResponse(f"incomplete or broken XML: {exc}") from None
            self._drain(finished=True)
        return _operation_return(root, self.operation)

    def result(self) -> ActiveJobsResult:
        """The jobs read so far (getActiveJobs), once `close()` accepted the document."""
        return ActiveJobsResult(tuple(self._read), self._invalid, self._first_invalid, self._fingerprints)

    def job_logs(self) -> JobLogsResult:
        """The job logs read so far (getJobLogs), once `close()` accepted the document."""
        return JobLogsResult(tuple(self._read), self._invalid, self._first_invalid)

    def _drain(self, *, finished: bool) -> None:
        for _event, element in self._parser.read_events():
            if not isinstance(element, etree._Element):
                continue
            if local_name(element.tag) in self._trim:
                self._lists.append(element)
            elif self._records is not None:
                self._arrays.append(element)
        # A list that started before the last one started has ended (lists do not nest):
        # once cut back, only the last can grow.
        for entries in self._lists:
            kept = len(entries)
            if kept > 1:
                del entries[: kept - 1]
                if local_name(entries.tag) == "taskItemProgressArray":
                    self._cut[entries] = self._cut.get(entries, 0) + kept - 1
        self._lists = self._lists[-1:]
        if self._records is None:
            return
        for index, array in enumerate(self._arrays):
            # The last child of the last array may still be arriving.
            complete = len(array) - (0 if finished or index < len(self._arrays) - 1 else 1)
            for _ in range(complete):
                self._read_record(array[0], self._records)
                del array[0]
        self._arrays = self._arrays[-1:]

    def _read_record(self, element: etree._Element, records: Records) -> None:
        if local_name(element.tag) != "items":
            return
        fingerprint = None
        if self._known is not None:
            item_lists = list(element.iter("{*}taskItemProgressArray"))
            fingerprint = self._fingerprint(element, item_lists)
            known = self._known.get(fingerprint)
            if known is not None:
                for entries in item_lists:
                    self._cut.pop(entries, None)
                self._fingerprints[fingerprint] = known
                self._read.append(known)
                return
        try:
            record = records.read(element, self.keep_items, self._cut)
        except ValidationError as exc:
            # Counted, and the first one kept for the poller's one line: a hostile answer of a
            # million bad records must not become a million log lines.
            self._invalid += 1
            if self._invalid == 1:
                fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors())
                self._first_invalid = f"{records.what} {child_text(element, records.name)!r}: bad {fields}"
            return
        if fingerprint is not None:
            self._fingerprints[fingerprint] = record
        self._read.append(record)

    def _fingerprint(self, element: etree._Element, item_lists: list[etree._Element]) -> bytes:
        """A digest of all a record's model is made of: its XML as it stands (item lists cut
        back to their last entry; not the whitespace after it), the item entries already freed
        from each of its `item_lists`, and whether items are kept."""
        digest = hashlib.blake2b(etree.tostring(element, with_tail=False), digest_size=16)
        digest.update(b"items kept" if self.keep_items else b"items counted")
        for entries in item_lists:
            digest.update(self._cut.get(entries, 0).to_bytes(8, "little"))
        return digest.digest()


def job_record(
    element: etree._Element, keep_items: bool, cut: dict[etree._Element, int] | None = None
) -> dict[str, Any]:
    """An ActiveJob element as a mapping of wire names; job-detail elements are left out."""
    record: dict[str, Any] = {}
    for child in element:
        tag = child.tag
        name = memoised_local_name(tag) or local_name(tag)
        if name == "taskProgressArray":
            record[name] = [task_record(task, keep_items, cut) for task in iter_children(child, "items")]
        elif len(child) == 0:
            text = child.text or ""
            record[name] = (_shared_texts.get(text) or _shared(text)) if name in _REPEATING else text
    return record


def task_record(
    element: etree._Element, keep_items: bool, cut: dict[etree._Element, int] | None = None
) -> dict[str, Any]:
    """A TaskProgress element as a mapping of wire names, with its item count (`cut`: the
    entries already freed from its item list, which are counted too)."""
    record: dict[str, Any] = {}
    for child in element:
        tag = child.tag
        name = memoised_local_name(tag) or local_name(tag)
        if name == "taskItemProgressArray":
            record["itemCount"] = len(child) + (cut.pop(child, 0) if cut else 0)
            if keep_items:
                record[name] = [_leaf_record(item) for item in child]
        elif len(child) == 0:
            text = child.text or ""
            record[name] = (_shared_texts.get(text) or _shared(text)) if name in _REPEATING else text
    return record


# Fields whose values repeat from job to job (the company, a job type, a server, a message): one
# string per value rather than one per job, a few MiB of a 10,000-job State. Bounded, as the
# values come from the answer.
_REPEATING = frozenset(
    {"companyHandle", "type", "submitUserEmail", "locale", "serverName", "progressMessage", "taskType", "description"}
)
_MAX_SHARED_TEXTS = 4096
_MAX_SHARED_TEXT_LENGTH = 256
_shared_texts: dict[str, str] = {}


def _shared(text: str) -> str:
    if len(_shared_texts) < _MAX_SHARED_TEXTS and len(text) <= _MAX_SHARED_TEXT_LENGTH:
        _shared_texts[text] = text
    return text


def _leaf_record(element: etree._Element) -> dict[str, str]:
    return {local_name(child.tag): child.text or "" for child in element}


def job_log_record(element: etree._Element) -> dict[str, str]:
    """A JobLog element as a mapping of wire names; `detailArray` and any other element with
    children of its own is left out."""
    return {local_name(child.tag): child.text or "" for child in element if len(child) == 0}


def _operation_return(root: etree._Element, operation: str) -> etree._Element:
    """The `<operation>Return` element of a SOAP envelope; raises for faults and surprises."""
    namespace, name = split_tag(root.tag)
    if name != "Envelope" or namespace not in SOAP_ENVELOPES:
        raise MalformedResponse(f"expected a SOAP Envelope, got <{name}>")
    bodies = [child for child in root if split_tag(child.tag) == (namespace, "Body")]
    if len(bodies) != 1:
        raise MalformedResponse("SOAP Envelope without exactly one Body")
    if len(bodies[0]) == 0:  # the parser drops comments and PIs: every child is an element
        raise MalformedResponse("empty SOAP Body")
    first = bodies[0][0]
    if split_tag(first.tag) == (namespace, "Fault"):
        raise fault_error(first)
    ns, name = split_tag(first.tag)
    if name != f"{operation}Return" or not is_ips_namespace(ns):
        raise MalformedResponse(f"expected <{operation}Return>, got <{name}>")
    return first


def fault_error(fault: etree._Element) -> IpsFault:
    """The typed error of a SOAP 1.1 or 1.2 Fault element."""
    for detail in _children_named(fault, ("detail", "Detail")):
        for entry in detail:
            ns, name = split_tag(entry.tag)
            if name in FAULT_CLASSES and is_ips_namespace(ns):
                code_text = (child_text(entry, "code") or "").strip()
                code = int(code_text) if code_text.isascii() and code_text.isdigit() and len(code_text) < 10 else None
                return FAULT_CLASSES[name](code, (child_text(entry, "reason") or "").strip())
    text = child_text(fault, "faultstring")
    if text is None:  # SOAP 1.2: Reason/Text
        for reason in _children_named(fault, ("Reason",)):
            text = child_text(reason, "Text")
    return ApiFault(None, (text or "SOAP fault without detail").strip())


def _children_named(element: etree._Element, names: Iterable[str]) -> list[etree._Element]:
    wanted = set(names)
    return [child for child in element if local_name(child.tag) in wanted]


def read_document(data: bytes, operation: str) -> etree._Element:
    """Parse a whole (small) response at once: the `<operation>Return` element."""
    reader = ResponseReader(operation)
    reader.feed(data)
    return reader.close()


def companies_from_membership(element: etree._Element) -> list[CompanyMembership]:
    """The CompanyMemberships of a getCompanyMembershipReturn element: `membershipArray` from
    API 6.0 (2012-02-14) on, `companyArray` of bare Company records before it."""
    records: list[dict[str, Any]] = []
    for array in iter_children(element, "membershipArray"):
        for item in iter_children(array, "items"):
            record: dict[str, Any] = _leaf_record(item)
            company = next(iter_children(item, "company"), None)
            if company is None:
                raise MalformedResponse("CompanyMembership without company")
            records.append({**record, "company": _leaf_record(company)})
    for array in iter_children(element, "companyArray"):
        for item in iter_children(array, "items"):
            records.append({"company": _leaf_record(item)})
    try:
        return [CompanyMembership.model_validate(record) for record in records]
    except ValidationError as exc:
        raise MalformedResponse(f"invalid CompanyMembership: {exc.error_count()} errors") from None


def check_job_array(element: etree._Element) -> None:
    """getActiveJobsReturn must hold a jobArray, even an empty one."""
    if next(iter_children(element, "jobArray"), None) is None:
        raise MalformedResponse("getActiveJobsReturn without jobArray")


def check_job_log_array(element: etree._Element) -> None:
    """getJobLogsReturn must hold a jobLogArray (the schema requires it), even an empty one: an
    answer without one is not read as "no job finished"."""
    if next(iter_children(element, "jobLogArray"), None) is None:
        raise MalformedResponse("getJobLogsReturn without jobLogArray")


__all__ = [
    "RECORDS",
    "ActiveJobsResult",
    "JobLogsResult",
    "Records",
    "ResponseReader",
    "check_job_array",
    "check_job_log_array",
    "companies_from_membership",
    "fault_error",
    "read_document",
]
