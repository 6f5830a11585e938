"""The simulator's SOAP layer: reads IPS requests, writes IPS answers. No sockets here.

Requests are untrusted: `exporter.soap.PrologGuard` refuses any DTD before lxml sees the body,
and lxml parses without entities, DTDs or network. Answers come out of lxml only, in the SOAP
version and API namespace of the request, with the element order of the reference schema.

A getActiveJobs answer can hold 10,000 jobs and a million elements. Building that many lxml
elements from Python takes seconds; serializing them takes a fraction of one. So the responder
keeps one lxml tree per job and API namespace, rewrites only the texts that changed since the
last answer (item entries only for tasks whose items moved), and lets `etree.xmlfile` serialize
the trees into chunks the server streams.
"""

from __future__ import annotations

import copy
import functools
import hmac
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

from lxml import etree

from exporter.memory import cyclic_gc_paused
from exporter.simulator.joblogs import JobLog, asset_handle, asset_type
from exporter.simulator.world import (
    DETAIL_ELEMENT_NAMES,
    DETAIL_ELEMENTS,
    DETAIL_FIELD_NAMES,
    JOB_STATES,
    Company,
    ItemRow,
    Job,
    JobNotFound,
    JobStatus,
    TaskStatus,
    World,
    state_counts,
)
from exporter.soap import (
    SOAP11_CONTENT_TYPE,
    SOAP11_ENV,
    SOAP12_ENV,
    SOAP_ENVELOPES,
    ForbiddenXML,
    PrologGuard,
    hardened_pull_parser,
    local_name,
    split_tag,
)
from exporter.versions import IPS_COMMON_NS, ApiVersion, api_namespace, is_ips_namespace, version_of_namespace

SOAP12_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
OPERATIONS = frozenset(
    {
        "getCompanyMembership",
        "getCompanyInfo",
        "getActiveJobs",
        "stopJob",
        "pauseJob",
        "resumeJob",
        "getJobLogs",
        "getJobLogDetails",
    }
)
FAULT_STRINGS = {
    "authenticationFault": "AuthenticationException",
    "authorizationFault": "AuthorizationException",
    "ipsApiFault": "ipsApiFault",
}
AXIS2_REFUSAL = "org.apache.axis2.databinding.ADBException: "
CHUNK_BYTES = 64 * 1024
_TREE_NAMESPACES = 2  # job trees are kept for this many API namespaces at a time


def content_type_of(envelope: str) -> str:
    return SOAP12_CONTENT_TYPE if envelope == SOAP12_ENV else SOAP11_CONTENT_TYPE


@dataclass(frozen=True)
class SoapFault:
    """An IPS fault: `element` is authenticationFault, authorizationFault or ipsApiFault. With
    `element` None, a plain SOAP fault whose faultstring is `reason` (Axis2's own refusals)."""

    element: str | None
    code: int
    reason: str


def request_elements(operation: str, version: ApiVersion) -> tuple[str, ...]:
    """The children `<operation>Param` may have in `version`, in schema order, each optional."""
    if operation == "getActiveJobs":
        return ("companyHandle", "jobHandle", "originalName") + ("includeWaitingJobs",) * version.include_waiting_jobs
    if operation == "getCompanyMembership":
        return ("userHandle",)
    if operation == "getCompanyInfo":
        return ("companyHandle", "companyName")
    if operation == "getJobLogs":
        # userHandle since 3.8: every namespaced version, and the bare one of 3.8 too
        return ("companyHandle", "userHandle", "sortBy", "sortDirection", "startDate", "endDate", "numRows")
    if operation == "getJobLogDetails":
        paging = ("logTypeArray", "recordsPerPage", "resultsPage", "sortBy", "sortDirection")
        return ("companyHandle", "jobHandle", "originalName") + paging * version.job_log_descriptions
    return ("companyHandle", "jobHandle")  # stopJob, pauseJob, resumeJob


# Request elements that hold a StringArray (`items` children) rather than text.
ARRAY_ELEMENTS = frozenset({"logTypeArray"})


def unexpected_subelement(namespace: str | None, children: Iterable[tuple[str | None, str]],
                          allowed: tuple[str, ...]) -> str | None:
    """The first child that a generated Axis2 parser of this schema would refuse, as Axis2 names
    it (`{ns}name`): one in another namespace, unknown, repeated or out of order. None if none."""
    position = 0
    for child_ns, name in children:
        if child_ns == namespace and name in allowed[position:]:
            position = allowed.index(name, position) + 1
            continue
        return f"{{{child_ns or ''}}}{name}"
    return None


@dataclass(frozen=True)
class SoapRequest:
    envelope: str
    operation: str
    namespace: str
    api_version: str
    params: dict[str, str]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    fault_http_status: int | None = None
    gzip_response: bool | None = None
    arrays: dict[str, tuple[str, ...]] = field(default_factory=dict)  # StringArray children


class RequestError(Exception):
    """The request cannot be read; answered with an ipsApiFault."""

    def __init__(self, envelope: str, fault: SoapFault) -> None:
        super().__init__(fault.reason)
        self.envelope = envelope
        self.fault = fault


@dataclass(frozen=True)
class Answer:
    """A SOAP answer: HTTP status, body in chunks, content type."""

    status: int
    chunks: list[bytes]
    content_type: str

    @property
    def size(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def body(self) -> bytes:
        return b"".join(self.chunks)


# -- reading requests ------------------------------------------------------------------------


def parse_request(body: bytes, content_type: str | None = None) -> SoapRequest:
    """The operation, parameters and credentials of a SOAP request; RequestError if unreadable."""
    envelope = SOAP12_ENV if "application/soap+xml" in (content_type or "").lower() else SOAP11_ENV

    def invalid(reason: str) -> RequestError:
        return RequestError(envelope, SoapFault("ipsApiFault", 30003, reason))

    guard = PrologGuard()
    try:
        guard.feed(body)
    except ForbiddenXML as exc:
        raise invalid(str(exc)) from None
    except ValueError:
        raise invalid("Invalid request XML") from None
    parser = hardened_pull_parser()
    try:
        parser.feed(body)
        root = parser.close()
    except etree.XMLSyntaxError:
        raise invalid("Invalid request XML") from None
    env_ns, env_local = split_tag(root.tag)
    if env_local != "Envelope" or env_ns not in SOAP_ENVELOPES:
        raise invalid("Not a SOAP envelope")
    envelope = env_ns
    header = soap_body = None
    for child in root:
        namespace, name = split_tag(child.tag) if isinstance(child.tag, str) else (None, "")
        if namespace == envelope and name == "Header":
            header = child
        elif namespace == envelope and name == "Body":
            soap_body = child
    operation_el = next((c for c in (soap_body if soap_body is not None else ()) if isinstance(c.tag, str)), None)
    if operation_el is None:
        raise invalid("SOAP body without an operation")
    namespace, name = split_tag(operation_el.tag)
    api_version = version_of_namespace(namespace)
    if api_version is None or namespace is None:
        raise invalid(f"Unknown API namespace: {namespace}")
    if not name.endswith("Param") or name[: -len("Param")] not in OPERATIONS:
        raise invalid(f"Unsupported operation: {name}")
    elements = [child for child in operation_el if isinstance(child.tag, str)]
    operation = name[: -len("Param")]
    refused = unexpected_subelement(namespace, (split_tag(child.tag) for child in elements),
                                    request_elements(operation, ApiVersion(api_version)))
    if refused is not None:
        raise RequestError(envelope, SoapFault(None, 0, f"{AXIS2_REFUSAL}Unexpected subelement {refused}"))
    params = {local_name(child.tag): child.text or "" for child in elements}
    arrays: dict[str, tuple[str, ...]] = {}
    for child in elements:
        name = local_name(child.tag)
        if name in ARRAY_ELEMENTS:
            entries = [entry for entry in child if isinstance(entry.tag, str)]
            refused = unexpected_subelement(namespace, (split_tag(entry.tag) for entry in entries),
                                            ("items",) * len(entries))
            if refused is not None:
                raise RequestError(envelope, SoapFault(None, 0, f"{AXIS2_REFUSAL}Unexpected subelement {refused}"))
            arrays[name] = tuple(entry.text or "" for entry in entries)
    auth: dict[str, str] = {}
    if header is not None:
        for child in header:
            tag_ns = split_tag(child.tag)[0] if isinstance(child.tag, str) else None
            if local_name(child.tag) == "authHeader" and is_ips_namespace(tag_ns):
                auth = {local_name(c.tag): c.text or "" for c in child if isinstance(c.tag, str)}
    return SoapRequest(
        envelope=envelope,
        operation=operation,
        namespace=namespace,
        api_version=api_version,
        params=params,
        arrays=arrays,
        user=auth.get("user"),
        password=auth.get("password"),
        fault_http_status=_status_code(auth.get("faultHttpStatusCode")),
        gzip_response=_boolean(auth.get("gzipResponse")),
    )


def _status_code(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    code = int(text)
    return code if 100 <= code <= 599 else None


def _boolean(text: str | None) -> bool | None:
    value = (text or "").strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return None


# -- writing answers -------------------------------------------------------------------------


class TimestampFormatter:
    """xs:dateTime with milliseconds and a fixed offset, as IPS writes them."""

    def __init__(self, tz: timezone) -> None:
        self._tz = tz
        minutes = round((tz.utcoffset(None) or timedelta(0)).total_seconds() / 60)
        sign = "-" if minutes < 0 else "+"
        hours, minutes = divmod(abs(minutes), 60)
        self._suffix = "Z" if hours == minutes == 0 else f"{sign}{hours:02d}:{minutes:02d}"
        self._seconds: dict[int, str] = {}
        self._last = float("nan")
        self._last_text = ""

    def __call__(self, timestamp: float) -> str:
        if timestamp == self._last:  # runs of equal times are common (items still waiting)
            return self._last_text
        seconds, millis = divmod(round(timestamp * 1000), 1000)
        prefix = self._seconds.get(seconds)
        if prefix is None:
            if len(self._seconds) > 500_000:
                self._seconds.clear()
            stamp = datetime.fromtimestamp(seconds, self._tz)
            prefix = self._seconds[seconds] = stamp.strftime("%Y-%m-%dT%H:%M:%S")
        self._last = timestamp
        self._last_text = text = f"{prefix}.{millis:03d}{self._suffix}"
        return text


def format_double(value: float) -> str:
    """xs:double as IPS writes it: `1.0`, `0.0`, `0.35`."""
    if value == 0.0:
        return "0.0"
    if value == 1.0:
        return "1.0"
    return repr(round(value, 4))


def _text(value: str) -> str | None:
    # An empty string serializes as <x></x>; IPS writes empty elements as <x/>.
    return value or None


def default_nsmap(namespace: str) -> Mapping[str, str]:
    """An nsmap making `namespace` the default (lxml-stubs do not admit the None key)."""
    return cast("Mapping[str, str]", {None: namespace})


def envelope_tree(envelope: str) -> tuple[etree._Element, etree._Element]:
    """A SOAP envelope and its Body."""
    root = etree.Element(f"{{{envelope}}}Envelope", nsmap={"soapenv": envelope})
    return root, etree.SubElement(root, f"{{{envelope}}}Body")


def serialize(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def fault_document(envelope: str, fault: SoapFault) -> bytes:
    """A SOAP 1.1 or 1.2 fault whose detail holds the IPS fault in the common namespace."""
    root, body = envelope_tree(envelope)
    fault_el = etree.SubElement(body, f"{{{envelope}}}Fault")
    faultstring = FAULT_STRINGS[fault.element] if fault.element is not None else fault.reason
    if envelope == SOAP12_ENV:
        code = etree.SubElement(fault_el, f"{{{envelope}}}Code")
        etree.SubElement(code, f"{{{envelope}}}Value").text = "soapenv:Receiver"
        reason = etree.SubElement(fault_el, f"{{{envelope}}}Reason")
        text = etree.SubElement(reason, f"{{{envelope}}}Text")
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = faultstring
        detail = etree.SubElement(fault_el, f"{{{envelope}}}Detail")
    else:
        etree.SubElement(fault_el, "faultcode").text = "soapenv:Server"
        etree.SubElement(fault_el, "faultstring").text = faultstring
        detail = etree.SubElement(fault_el, "detail")
    if fault.element is None:
        fault_el.remove(detail)
        return serialize(root)
    ips = etree.SubElement(detail, f"{{{IPS_COMMON_NS}}}{fault.element}", nsmap={"tns": IPS_COMMON_NS})
    etree.SubElement(ips, f"{{{IPS_COMMON_NS}}}code").text = str(fault.code)
    etree.SubElement(ips, f"{{{IPS_COMMON_NS}}}reason").text = fault.reason
    return serialize(root)


def fault_answer(envelope: str, fault: SoapFault, status: int = 500) -> Answer:
    return Answer(status, [fault_document(envelope, fault)], content_type_of(envelope))


_JOBS_MARK = b"<!--jobs-->"


@functools.lru_cache(maxsize=16)
def _active_jobs_document(envelope: str, namespace: str, marked: bool) -> bytes:
    """getActiveJobs' answer around its job array: with _JOBS_MARK where the jobs go, or empty."""
    ret = etree.Element(f"{{{namespace}}}getActiveJobsReturn", nsmap=default_nsmap(namespace))
    array = etree.SubElement(ret, f"{{{namespace}}}jobArray")
    if marked:
        array.append(etree.Comment("jobs"))
    sink = _ChunkSink()
    with etree.xmlfile(sink, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(f"{{{envelope}}}Envelope", nsmap={"soapenv": envelope}), xf.element(f"{{{envelope}}}Body"):
            xf.write(ret)
    sink.take()
    return b"".join(sink.chunks)


class _ChunkSink:
    """File-like target of `etree.xmlfile` that collects the output in chunks."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= CHUNK_BYTES:
            self.take()

    def take(self) -> None:
        if self._parts:
            self.chunks.append(b"".join(self._parts))
            self._parts.clear()
            self._size = 0


_TAG_NAMES = (
    "holder",
    "items",
    "companyHandle",
    "jobHandle",
    "name",
    "originalName",
    "type",
    "state",
    "submitUserEmail",
    "locale",
    "description",
    "serverName",
    "startDate",
    "triggerTime",
    "totalSize",
    "progress",
    "progressMessage",
    "lastProgressUpdate",
    "taskProgressArray",
    "taskType",
    "taskState",
    "numProcessed",
    "numProcessing",
    "numPending",
    "taskItemProgressArray",
    "itemName",
    "getActiveJobsReturn",
    "jobArray",
    "membershipArray",
    "companyArray",
    "company",
    "companyInfo",
    "rootPath",
    "expires",
    "imsOrgId",
    "role",
    "isActive",
    "jobLogArray",
    "jobName",
    "originalJobName",
    "logType",
    "jobSubType",
    "endDate",
    "fileSuccessCount",
    "fileErrorCount",
    "fileWarningCount",
    "fileDuplicateCount",
    "fileUpdateCount",
    "totalFileCount",
    "transferSuccessCount",
    "transferErrorCount",
    "transferWarningCount",
    "fatalError",
    "detailTotalRows",
    "detailArray",
    "logMessage",
    "dateCreated",
    "assetName",
    "assetType",
    "assetHandle",
)


def _tags(namespace: str, extra: Iterable[str] = ()) -> dict[str, str]:
    """Qualified tag names of one API namespace (a plain dict: this is the hot path)."""
    names = (*_TAG_NAMES, *DETAIL_ELEMENT_NAMES, *DETAIL_FIELD_NAMES, *extra)
    return {name: f"{{{namespace}}}{name}" for name in names}


def _item_key(status_state: str, cut: float) -> tuple[str, float]:
    # New and Unknown tasks have not touched their items: nothing to rewrite while they wait.
    return (status_state, 0.0) if status_state in ("New", "Unknown") else (status_state, cut)


@dataclass(eq=False, slots=True)
class _TaskNode:
    state: etree._Element | None
    processed: etree._Element
    processing: etree._Element
    pending: etree._Element
    progress: etree._Element
    message: etree._Element
    last_update: etree._Element
    items: etree._Element
    key: tuple[str, float]
    rows: list[ItemRow]
    status: TaskStatus


@dataclass(eq=False, slots=True)
class _JobNode:
    root: etree._Element
    state: etree._Element
    progress: etree._Element
    message: etree._Element
    last_update: etree._Element
    tasks: list[_TaskNode]
    status: JobStatus
    xml: bytes | None = None  # the job's serialized element, until the job changes


# What decides the element structure of one job's tree (see _JobTrees._template).
_Shape = tuple[bool, bool, tuple[int, ...], str | None, tuple[str, ...]]


class _JobTrees:
    """The lxml tree of every active job, for one API namespace.

    A new tree is a deep copy (one C call) of a template of the job's shape, its texts then
    filled in document order: far fewer Python-to-lxml calls than building it element by
    element, which is what makes the first 10,000-job answer affordable.
    """

    def __init__(self, namespace: str, modern: bool, fmt: Callable[[float], str]) -> None:
        self.namespace = namespace
        self.tags = _tags(namespace)
        self.modern = modern
        self.fmt = fmt
        self.nodes: dict[int, _JobNode] = {}
        self._templates: dict[_Shape, etree._Element] = {}
        self._bare_items = b"<items"
        self._declared_items = f'<items xmlns="{namespace}"'.encode()

    def node(self, job: Job, status: JobStatus) -> _JobNode:
        node = self.nodes.get(job.number)
        if node is None:
            node = self.nodes[job.number] = self._build(job, status)
        else:
            self._update(node, job, status)
        return node

    def xml(self, node: _JobNode) -> bytes:
        """The job's element as it is written inside the answer, where its namespace is
        already declared; kept until the job changes, as most jobs do not between polls."""
        if node.xml is None:
            node.xml = self.serialize(node)
        return node.xml

    def serialize(self, node: _JobNode) -> bytes:
        text = etree.tostring(node.root, encoding="UTF-8")
        declared = self._declared_items
        if not text.startswith(declared):
            raise AssertionError(f"job element does not start with {declared!r}")
        return self._bare_items + text[len(declared) :]

    def prune(self, live: set[int]) -> None:
        for number in [n for n in self.nodes if n not in live]:
            del self.nodes[number]

    def _template(self, shape: _Shape) -> etree._Element:
        has_locale, has_description, item_counts, detail, detail_fields = shape
        t, sub = self.tags, etree.SubElement
        root = etree.Element(t["items"], nsmap=default_nsmap(self.namespace))
        names = ["companyHandle", "jobHandle", "name", "originalName", "type", "state"]
        names.append("submitUserEmail")
        names += ["locale"] * has_locale + ["description"] * has_description
        names += ["serverName", "startDate"] + ["triggerTime"] * self.modern
        names += ["totalSize", "progress", "progressMessage", "lastProgressUpdate"]
        for name in names:
            sub(root, t[name])
        array = sub(root, t["taskProgressArray"])
        task_names = ["taskType"] + ["taskState"] * self.modern
        task_names += ["numProcessed", "numProcessing", "numPending", "progress"]
        task_names += ["progressMessage", "lastProgressUpdate"]
        for count in item_counts:
            entry = sub(array, t["items"])
            for name in task_names:
                sub(entry, t[name])
            items = sub(entry, t["taskItemProgressArray"])
            for _ in range(count):
                item = sub(items, t["items"])
                for name in ("itemName", "progress", "progressMessage", "lastProgressUpdate"):
                    sub(item, t[name])
        if detail is not None:
            detail_el = sub(root, t[detail])
            for name in detail_fields:
                sub(detail_el, t[name])
        return root

    def _build(self, job: Job, status: JobStatus) -> _JobNode:
        fmt, modern = self.fmt, self.modern
        detail = DETAIL_ELEMENTS.get(job.job_type)
        shape: _Shape = (
            job.locale is not None,
            job.description is not None,
            tuple(len(task.names) for task in job.tasks),
            detail,
            tuple(name for name, _ in job.detail) if detail is not None else (),
        )
        template = self._templates.get(shape)
        if template is None:
            template = self._templates[shape] = self._template(shape)
        # The texts in document order; None for elements that hold only children.
        texts: list[str | None] = [
            None,
            job.company.handle,
            job.handle,
            job.name,
            job.original_name,
            job.job_type,
            status.state,
            job.submit_user_email,
        ]
        if job.locale is not None:
            texts.append(job.locale)
        if job.description is not None:
            texts.append(job.description)
        texts += (job.server_name, fmt(job.base + job.start_offset))
        if modern:
            texts.append(fmt(job.base))
        texts += (
            str(job.total_size),
            str(status.progress),
            status.message,
            fmt(status.last_update),
            None,
        )
        all_rows: list[list[ItemRow]] = []
        for task, task_status in zip(job.tasks, status.tasks, strict=True):
            texts += (None, task_status.task_type)
            if modern:
                texts.append(task_status.state)
            texts += (
                str(task_status.processed),
                str(task_status.processing),
                str(task_status.pending),
                format_double(task_status.progress),
                task_status.message,
                fmt(task_status.last_update),
                None,
            )
            rows = job.item_rows(task, task_status)
            all_rows.append(rows)
            for name, item_progress, item_message, item_update in rows:
                texts += (None, name, format_double(item_progress), item_message, fmt(item_update))
        if detail is not None:
            texts.append(None)
            texts += (value for _, value in job.detail)
        root = copy.deepcopy(template)
        for element, text in zip(root.iter(), texts, strict=True):
            if text:
                element.text = text
        # children of the job: 7 fixed, locale?, description?, serverName, startDate,
        # triggerTime?, then totalSize at `at`, progress, progressMessage, lastProgressUpdate,
        # taskProgressArray
        at = 7 + (job.locale is not None) + (job.description is not None) + 2 + modern
        tasks: list[_TaskNode] = []
        for entry, task_status, rows in zip(root[at + 4], status.tasks, all_rows, strict=True):
            fields = list(entry)
            state_el = fields.pop(1) if modern else None
            tasks.append(
                _TaskNode(
                    state=state_el,
                    processed=fields[1],
                    processing=fields[2],
                    pending=fields[3],
                    progress=fields[4],
                    message=fields[5],
                    last_update=fields[6],
                    items=fields[7],
                    key=_item_key(task_status.state, task_status.cut),
                    rows=rows,
                    status=task_status,
                )
            )
        return _JobNode(root, root[5], root[at + 1], root[at + 2], root[at + 3], tasks, status)

    def _update(self, node: _JobNode, job: Job, status: JobStatus) -> None:
        """Rewrite what changed since the tree last showed this job (most jobs: nothing)."""
        if status == node.status:
            return
        node.xml = None
        fmt = self.fmt
        node.state.text = status.state
        node.progress.text = str(status.progress)
        node.message.text = _text(status.message)
        node.last_update.text = fmt(status.last_update)
        node.status = status
        for task_node, task, task_status in zip(node.tasks, job.tasks, status.tasks, strict=True):
            if task_status == task_node.status:
                continue
            task_node.status = task_status
            if task_node.state is not None:
                task_node.state.text = task_status.state
            task_node.processed.text = str(task_status.processed)
            task_node.processing.text = str(task_status.processing)
            task_node.pending.text = str(task_status.pending)
            task_node.progress.text = format_double(task_status.progress)
            task_node.message.text = _text(task_status.message)
            task_node.last_update.text = fmt(task_status.last_update)
            key = _item_key(task_status.state, task_status.cut)
            if key == task_node.key:
                continue
            rows = job.item_rows(task, task_status)
            for item, row, old in zip(task_node.items, rows, task_node.rows, strict=True):
                if row != old:
                    _, progress_el, message_el, update_el = item
                    progress_el.text = format_double(row[1])
                    message_el.text = _text(row[2])
                    update_el.text = fmt(row[3])
            task_node.rows = rows
            task_node.key = key


class Responder:
    """Answers SOAP requests from a World. Thread-safe: one answer at a time."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.config = world.config
        self.lock = threading.Lock()
        self.fmt = TimestampFormatter(world.tz)
        self._trees: dict[str, _JobTrees] = {}
        self.corrupt_value = "-3"  # what an invalid_record fault writes into a JobLog count

    # -- entry point -----------------------------------------------------------------------

    def answer(
        self,
        request: SoapRequest,
        basic: tuple[str, str] | None = None,
        *,
        corrupt_record: bool = False,
        corrupt_value: str | None = None,
    ) -> Answer:
        """The answer to an authenticated-or-not request. `basic` holds HTTP Basic
        credentials; `corrupt_record` makes one job's numPending non-numeric, or one job log's
        fileErrorCount `corrupt_value` (default -3) (fault tests)."""
        fault = self.authenticate(request, basic)
        if fault is None:
            with self.lock, cyclic_gc_paused():
                self.corrupt_value = corrupt_value if corrupt_value is not None else "-3"
                self.world.advance()
                try:
                    return self._dispatch(request, corrupt_record)
                except _Refused as refused:
                    fault = refused.fault
        return fault_answer(request.envelope, fault, request.fault_http_status or 500)

    def authenticate(self, request: SoapRequest, basic: tuple[str, str] | None) -> SoapFault | None:
        if request.user is not None or request.password is not None:
            user, password = request.user or "", request.password or ""
        elif basic is not None:
            user, password = basic
        else:
            return SoapFault("authenticationFault", 10000, "No credentials")
        user_ok = hmac.compare_digest(user.encode(), self.config.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.config.password.encode())
        if not (user_ok and password_ok):
            return SoapFault("authenticationFault", 10001, "Invalid credentials")
        return None

    def _dispatch(self, request: SoapRequest, corrupt_record: bool) -> Answer:
        operation, params = request.operation, request.params
        if operation == "getActiveJobs":
            company_handle = params.get("companyHandle")
            if company_handle is not None:
                self._company(company_handle)
            include = params.get("includeWaitingJobs")
            include_waiting = _boolean(include) if include is not None else False
            if include_waiting is None:
                raise _Refused(SoapFault("ipsApiFault", 30001, "Invalid includeWaitingJobs"))
            jobs = self.world.active_jobs(
                company_handle, params.get("jobHandle"), params.get("originalName"), include_waiting
            )
            return self._active_jobs(request, jobs, corrupt_record)
        if operation == "getCompanyMembership":
            if ApiVersion(request.api_version).membership_array:
                return self._simple(request, "getCompanyMembershipReturn", self._membership)
            return self._simple(request, "getCompanyMembershipReturn", self._company_array)
        if operation == "getCompanyInfo":
            by_handle, by_name = params.get("companyHandle"), params.get("companyName")
            if by_handle is not None:
                company = self._company(by_handle)
            elif by_name is not None:
                found = self.world.company_by_name(by_name)
                if found is None:
                    raise _Refused(SoapFault("authorizationFault", 20000, "Invalid company"))
                company = found
            else:
                raise _Refused(SoapFault("ipsApiFault", 30002, "companyHandle or companyName is required"))
            return self._simple(
                request,
                "getCompanyInfoReturn",
                lambda ret, t: self._company_element(ret, t, "companyInfo", company),
            )
        if operation == "getJobLogs":
            return self._job_logs(request, corrupt_record)
        if operation == "getJobLogDetails":
            return self._job_log_details(request, corrupt_record)
        # stopJob, pauseJob, resumeJob
        handle, job_handle = params.get("companyHandle"), params.get("jobHandle")
        if not handle or not job_handle:
            raise _Refused(SoapFault("ipsApiFault", 30002, "companyHandle and jobHandle are required"))
        self._company(handle)
        action = {
            "stopJob": self.world.stop_job,
            "pauseJob": self.world.pause_job,
            "resumeJob": self.world.resume_job,
        }[operation]
        try:
            action(handle, job_handle)
        except JobNotFound:
            raise _Refused(SoapFault("ipsApiFault", 30001, "Invalid job handle")) from None
        return self._simple(request, f"{operation}Return", lambda ret, t: None)

    def _company(self, handle: str) -> Company:
        company = self.world.company(handle)
        if company is None:
            raise _Refused(SoapFault("authorizationFault", 20000, "Invalid company"))
        return company

    # -- small answers ---------------------------------------------------------------------

    def _simple(
        self,
        request: SoapRequest,
        element: str,
        fill: Callable[[etree._Element, dict[str, str]], None],
    ) -> Answer:
        tags = _tags(request.namespace, (element,))
        root, body = envelope_tree(request.envelope)
        ret = etree.SubElement(body, tags[element], nsmap=default_nsmap(request.namespace))
        fill(ret, tags)
        return Answer(200, [serialize(root)], content_type_of(request.envelope))

    def _membership(self, ret: etree._Element, t: dict[str, str]) -> None:
        array = etree.SubElement(ret, t["membershipArray"])
        for company in self.world.companies:
            item = etree.SubElement(array, t["items"])
            self._company_element(item, t, "company", company)
            etree.SubElement(item, t["role"]).text = company.role
            etree.SubElement(item, t["isActive"]).text = "true"

    def _company_array(self, ret: etree._Element, t: dict[str, str]) -> None:
        array = etree.SubElement(ret, t["companyArray"])
        for company in self.world.companies:
            self._company_element(array, t, "items", company)

    def _company_element(self, parent: etree._Element, t: dict[str, str], name: str, company: Company) -> None:
        element = etree.SubElement(parent, t[name])
        for child, value in (
            ("companyHandle", company.handle),
            ("name", company.name),
            ("rootPath", company.root_path),
            ("expires", self.fmt(company.expires.timestamp())),
            ("imsOrgId", company.ims_org_id),
        ):
            if value is not None:
                etree.SubElement(element, t[child]).text = value

    # -- getActiveJobs ---------------------------------------------------------------------

    def _job_trees(self, namespace: str, api_version: str) -> _JobTrees:
        trees = self._trees.pop(namespace, None)
        if trees is None:
            trees = _JobTrees(namespace, ApiVersion(api_version).task_state, self.fmt)
        self._trees[namespace] = trees  # most recently used last
        while len(self._trees) > _TREE_NAMESPACES:
            del self._trees[next(iter(self._trees))]
        return trees

    def warm_up(self, api_version: str) -> None:
        """Build the job trees of `api_version` now, so the first big answer is not slow."""
        with self.lock, cyclic_gc_paused():
            now = self.world.advance()
            trees = self._job_trees(api_namespace(api_version), api_version)
            for job in self.world.active_jobs(include_waiting=True):
                trees.node(job, job.status(now))

    def summary(self) -> dict[str, object]:
        """What the world looks like now: jobs and task states per company (for humans)."""
        with self.lock:
            now = self.world.advance()
            companies: list[dict[str, object]] = []
            for company in self.world.companies:
                statuses = [job.status(now) for job in self.world.active_jobs(company.handle, include_waiting=True)]
                job_states = dict.fromkeys(JOB_STATES, 0)
                for status in statuses:
                    job_states[status.state] += 1
                companies.append(
                    {
                        "handle": company.handle,
                        "name": company.name,
                        "jobs": len(statuses),
                        "job_states": job_states,
                        "task_states": state_counts(statuses),
                    }
                )
            return {"time": self.fmt(now), "companies": companies}

    def sample_job(self, request: SoapRequest) -> etree._Element | None:
        """A detached copy of the first active job's element in the request's namespace (the
        oversized-answer fault repeats it), or None in an empty world."""
        with self.lock:
            now = self.world.advance()
            jobs = self.world.active_jobs(include_waiting=True)
            if not jobs:
                return None
            trees = self._job_trees(request.namespace, request.api_version)
            return copy.deepcopy(trees.node(jobs[0], jobs[0].status(now)).root)

    def _active_jobs(self, request: SoapRequest, jobs: Iterable[Job], corrupt: bool) -> Answer:
        trees = self._job_trees(request.namespace, request.api_version)
        trees.prune(self.world.job_numbers())
        now = self.world.now
        nodes = [trees.node(job, job.status(now)) for job in jobs]
        if not nodes:
            return Answer(200, [_active_jobs_document(request.envelope, request.namespace, False)],
                          content_type_of(request.envelope))
        before, after = _active_jobs_document(request.envelope, request.namespace, True).split(_JOBS_MARK)
        sink = _ChunkSink()
        sink.write(before)
        corrupted = False
        for node in nodes:
            if corrupt and not corrupted and node.tasks:
                pending = node.tasks[0].pending
                kept, pending.text = pending.text, "many"
                try:
                    sink.write(trees.serialize(node))
                finally:
                    pending.text = kept
                corrupted = True
            else:
                sink.write(trees.xml(node))
        sink.write(after)
        sink.take()
        return Answer(200, sink.chunks, content_type_of(request.envelope))


    # -- getJobLogs, getJobLogDetails ------------------------------------------------------

    def _job_logs(self, request: SoapRequest, corrupt: bool) -> Answer:
        params = request.params
        company = params.get("companyHandle")
        if company is not None:
            self._company(company)
        sort_by = params.get("sortBy", "StartDate")
        key = JOB_LOG_SORT_KEYS.get(sort_by)
        if key is None:
            raise _Refused(SoapFault("ipsApiFault", 30001, f"Invalid sortBy: {sort_by}"))
        descending = _direction(params.get("sortDirection"), "Descending")
        start, end = _date_param(params, "startDate"), _date_param(params, "endDate")
        rows = _int_param(params, "numRows", DEFAULT_JOB_LOG_ROWS)
        if rows < 1:
            raise _Refused(SoapFault("ipsApiFault", 30001, "Invalid numRows"))
        by_end = self.config.job_log_date_filter == "end"
        user = params.get("userHandle")
        logs = []
        for log in self.world.job_logs(company):
            if user is not None and log.submit_user_email != user:
                continue
            when = log.end if by_end else log.start
            if (start is not None or end is not None) and when is None:
                continue
            if start is not None and when is not None and when < start:
                continue
            if end is not None and when is not None and when > end:
                continue
            logs.append(log)
        logs.sort(key=lambda log: (log.start, log.handle), reverse=descending)  # ties: by start
        logs.sort(key=key, reverse=descending)
        return self._job_log_answer(request, "getJobLogsReturn", logs[:rows], None, corrupt)

    def _job_log_details(self, request: SoapRequest, corrupt: bool) -> Answer:
        params = request.params
        company = params.get("companyHandle")
        if not company:
            raise _Refused(SoapFault("ipsApiFault", 30002, "companyHandle is required"))
        self._company(company)
        job_handle, original = params.get("jobHandle"), params.get("originalName")
        if job_handle is None and original is None:
            raise _Refused(SoapFault("ipsApiFault", 30002, "jobHandle or originalName is required"))
        logs = [
            log
            for log in self.world.job_logs(company)
            if (job_handle is None or job_handle in (log.handle, log.active_handle))
            and (original is None or log.original_name == original)
        ]
        if job_handle is not None and not logs:
            raise _Refused(SoapFault("ipsApiFault", 30001, "Invalid job handle"))
        logs.sort(key=lambda log: (log.start, log.handle))
        per_page = _int_param(params, "recordsPerPage", MAX_DETAIL_ROWS)
        if not 1 <= per_page <= MAX_DETAIL_ROWS:
            raise _Refused(SoapFault("ipsApiFault", 30001, f"recordsPerPage must be 1 to {MAX_DETAIL_ROWS}"))
        page = _int_param(params, "resultsPage", 1)
        if page < 1:
            raise _Refused(SoapFault("ipsApiFault", 30001, "Invalid resultsPage"))
        sort_by = params.get("sortBy", "Date")
        if sort_by not in ("Date", "LogType"):
            raise _Refused(SoapFault("ipsApiFault", 30001, f"Invalid sortBy: {sort_by}"))
        descending = _direction(params.get("sortDirection"), "Ascending")
        wanted = request.arrays.get("logTypeArray")
        detail = _DetailQuery(wanted, sort_by == "LogType", descending, per_page, page)
        return self._job_log_answer(request, "getJobLogDetailsReturn", logs, detail, corrupt)

    def _job_log_answer(
        self, request: SoapRequest, element: str, logs: list[JobLog], detail: _DetailQuery | None, corrupt: bool
    ) -> Answer:
        version = ApiVersion(request.api_version)
        modern, transfers = version.job_log_descriptions, version.job_log_transfer_counts
        fmt = self.fmt

        def fill(ret: etree._Element, t: dict[str, str]) -> None:
            sub = etree.SubElement
            array = sub(ret, t["jobLogArray"])
            for index, log in enumerate(logs):
                item = sub(array, t["items"])
                fields: list[tuple[str, str | None]] = [
                    ("companyHandle", log.company.handle),
                    ("jobHandle", log.handle),
                    ("jobName", log.name),
                ]
                if modern:
                    fields.append(("originalJobName", log.original_name))
                fields += [("submitUserEmail", log.submit_user_email), ("logType", log.log_type)]
                if modern:
                    fields.append(("jobSubType", log.job_sub_type))
                fields.append(("startDate", fmt(log.start)))
                if log.end is not None:
                    fields.append(("endDate", fmt(log.end)))
                if modern:
                    fields.append(("description", log.description))
                error = str(log.error) if not (corrupt and index == 0) else self.corrupt_value
                fields += [
                    ("fileSuccessCount", str(log.success)),
                    ("fileErrorCount", error),
                    ("fileWarningCount", str(log.warning)),
                    ("fileDuplicateCount", str(log.duplicate)),
                    ("fileUpdateCount", str(log.update)),
                    ("totalFileCount", str(log.total)),
                ]
                if transfers:
                    fields += [
                        ("transferSuccessCount", str(log.transfer_success)),
                        ("transferErrorCount", str(log.transfer_error)),
                        ("transferWarningCount", str(log.transfer_warning)),
                    ]
                fields.append(("fatalError", "true" if log.fatal else "false"))
                for name, value in fields:
                    sub(item, t[name]).text = _text(value or "")
                if detail is not None:
                    self._details(item, t, log, detail, modern)

        return self._simple(request, element, fill)

    def _details(
        self, item: etree._Element, t: dict[str, str], log: JobLog, query: _DetailQuery, modern: bool
    ) -> None:
        rows = log.details()
        if query.log_types is not None:
            rows = [row for row in rows if row[1] in query.log_types]
        if query.by_type:
            rows.sort(key=lambda row: row[1], reverse=query.descending)
        elif query.descending:
            rows.reverse()
        sub, fmt = etree.SubElement, self.fmt
        if modern:
            sub(item, t["detailTotalRows"]).text = str(len(rows))
            first = (query.page - 1) * query.per_page
            rows = rows[first : first + query.per_page]
        array = sub(item, t["detailArray"])
        for message, log_type, created, file_name in rows:
            entry = sub(array, t["items"])
            sub(entry, t["logMessage"]).text = _text(message)
            sub(entry, t["logType"]).text = log_type
            sub(entry, t["dateCreated"]).text = fmt(created)
            if modern and file_name is not None:
                sub(entry, t["assetName"]).text = file_name.rpartition("/")[2]
                sub(entry, t["assetType"]).text = asset_type(file_name, log.job_type)
                sub(entry, t["assetHandle"]).text = asset_handle(log.company, file_name)

    def sample_job_log(self, request: SoapRequest) -> etree._Element | None:
        """A detached JobLog element in the request's namespace (the oversized-answer fault
        repeats it), or None when there is no log."""
        with self.lock:
            self.world.advance()
            logs = self.world.job_logs()
            if not logs:
                return None
            answer = self._job_log_answer(request, "getJobLogsReturn", logs[:1], None, corrupt=False)
        ret = etree.fromstring(answer.body())[0][0]
        return copy.deepcopy(ret[0][0])


JOB_LOG_SORT_KEYS: dict[str, Callable[[JobLog], str | int | float]] = {
    "JobName": lambda log: log.name,
    "LogType": lambda log: log.log_type,
    "StartDate": lambda log: log.start,
    "CompanyName": lambda log: log.company.name,
    "UserId": lambda log: log.submit_user_email,  # the simulator's users have no other id
    "Email": lambda log: log.submit_user_email,
    "FileErrorCount": lambda log: log.error,
    "FileWarningCount": lambda log: log.warning,
    "FileSuccessCount": lambda log: log.success,
}
DEFAULT_JOB_LOG_ROWS = 1000  # getJobLogs without numRows: at most this many (newest first)
MAX_DETAIL_ROWS = 1000  # getJobLogDetails recordsPerPage: default and maximum


@dataclass(frozen=True)
class _DetailQuery:
    log_types: tuple[str, ...] | None
    by_type: bool
    descending: bool
    per_page: int
    page: int


def _direction(value: str | None, default: str) -> bool:
    """True for Descending."""
    value = default if value is None else value
    if value not in ("Ascending", "Descending"):
        raise _Refused(SoapFault("ipsApiFault", 30001, f"Invalid sortDirection: {value}"))
    return value == "Descending"


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise _Refused(SoapFault("ipsApiFault", 30001, f"Invalid {name}")) from None
    if not -(2**31) <= value < 2**31:
        raise _Refused(SoapFault("ipsApiFault", 30001, f"Invalid {name}"))
    return value


def _date_param(params: Mapping[str, str], name: str) -> float | None:
    """An xs:dateTime parameter as unix seconds (no offset: UTC); None if absent."""
    text = params.get(name)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Refused(SoapFault("ipsApiFault", 30001, f"Invalid {name}")) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class _Refused(Exception):
    def __init__(self, fault: SoapFault) -> None:
        super().__init__(fault.reason)
        self.fault = fault
