"""Fault injection for the simulator: what a broken IPS, proxy or network looks like.

The exporter must survive slow answers, 5xx pages from a proxy, SOAP faults, broken and hostile
XML, truncated and endless bodies, and dropped connections, and recover when IPS does. A test or
an operator switches one `FaultPlan` on at run time (in-process with `Faults.set`, over HTTP
with `POST /simulator/faults`), optionally only for one company, one `operation` or several
(`operations`, e.g. the job logs alone) and for a number of requests, after which it clears itself.
The hostile bodies take the shape of the operation's answer (getActiveJobs or the job logs).

The hostile documents are hand-made on purpose: no XML library writes a billion-laughs DTD or
a body cut in the middle of a tag. Everything else is written with lxml.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from enum import StrEnum

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from exporter.simulator.responses import default_nsmap, envelope_tree, serialize
from exporter.versions import api_namespace

DEFAULT_OVERSIZED_BYTES = 1 << 30


class FaultKind(StrEnum):
    LATENCY = "latency"  # only the added delay; the answer itself is normal
    HTTP_STATUS = "http_status"  # a proxy's HTML error page with `status`
    AUTHENTICATION = "authentication"  # SOAP fault, authenticationFault
    AUTHORIZATION = "authorization"  # SOAP fault, authorizationFault
    API = "api"  # SOAP fault, ipsApiFault
    MALFORMED = "malformed"  # a body that is not well-formed XML
    TRUNCATED = "truncated"  # Content-Length promises more than is sent, then close
    OVERSIZED = "oversized"  # a valid-looking getActiveJobs answer that goes on for `size` bytes
    ENTITY_BOMB = "entity_bomb"  # billion laughs
    XXE = "xxe"  # an external entity pointing at a local file
    INVALID_RECORD = "invalid_record"  # one job with a non-numeric numPending; one job log
    # whose fileErrorCount is `value` (default -3: negative; "99999999999": beyond xs:int)
    HTML_200 = "html_200"  # an HTML page with status 200 (login or maintenance page)
    RESET = "reset"  # the connection closes without an answer


SOAP_FAULT_ELEMENTS = {
    FaultKind.AUTHENTICATION: ("authenticationFault", 10001, "Invalid credentials"),
    FaultKind.AUTHORIZATION: ("authorizationFault", 20003, "No operation permission"),
    FaultKind.API: ("ipsApiFault", 30000, "Internal server error"),
}


class FaultPlan(BaseModel):
    """One fault to inject. `latency` (seconds before answering) applies to every kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind = FaultKind.LATENCY
    latency: float = Field(default=0.0, ge=0.0, le=600.0)
    status: int = Field(default=503, ge=400, le=599)
    code: int | None = None
    reason: str | None = None
    fault_http_status: int | None = Field(default=None, ge=100, le=599)
    company: str | None = None
    operation: str | None = None
    operations: tuple[str, ...] | None = None  # e.g. ["getJobLogs", "getJobLogDetails"]
    times: int | None = Field(default=None, ge=1)
    size: int = Field(default=DEFAULT_OVERSIZED_BYTES, ge=1024)
    value: str | None = Field(default=None, max_length=1000)

    def applies_to(self, operation: str, company: str | None) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        if self.operations is not None and operation not in self.operations:
            return False
        return self.company is None or self.company == company


class Faults:
    """The fault switch: at most one plan at a time. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: FaultPlan | None = None
        self._left: int | None = None
        self.injected = 0  # faults injected since start, for tests

    def set(self, plan: FaultPlan | None = None, /, **fields: object) -> FaultPlan:
        """Switch a fault on: a FaultPlan, or its fields as keywords."""
        if plan is None:
            plan = FaultPlan.model_validate(fields)
        with self._lock:
            self._plan = plan
            self._left = plan.times
        return plan

    def clear(self) -> None:
        with self._lock:
            self._plan = None
            self._left = None

    @property
    def current(self) -> FaultPlan | None:
        return self._plan

    @property
    def remaining(self) -> int | None:
        """Requests the current plan still applies to (None: until cleared)."""
        return self._left

    def take(self, operation: str, company: str | None) -> FaultPlan | None:
        """The plan to apply to this request, if any; counts it against `times`."""
        with self._lock:
            plan = self._plan
            if plan is None or not plan.applies_to(operation, company):
                return None
            if self._left is not None:
                self._left -= 1
                if self._left <= 0:
                    self._plan = None
                    self._left = None
            self.injected += 1
            return plan

    def describe(self) -> dict[str, object]:
        plan = self._plan
        return {
            "plan": plan.model_dump(mode="json") if plan is not None else None,
            "remaining": self._left,
            "injected": self.injected,
        }


# -- bodies ----------------------------------------------------------------------------------

_PROXY_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def html_page(title: str, heading: str, text: str, footer: str | None = None) -> bytes:
    html = etree.Element("html")
    head = etree.SubElement(html, "head")
    etree.SubElement(head, "title").text = title
    body = etree.SubElement(html, "body")
    etree.SubElement(body, "h1").text = heading
    etree.SubElement(body, "p").text = text
    if footer is not None:
        etree.SubElement(body, "hr")
        etree.SubElement(body, "address").text = footer
    return bytes(etree.tostring(html, method="html", doctype="<!DOCTYPE html>"))


def proxy_error_page(status: int) -> bytes:
    """What a load balancer in front of IPS answers when the service behind it is down."""
    reason = _PROXY_REASONS.get(status, "Error")
    return html_page(
        f"{status} {reason}",
        reason,
        "The server is temporarily unable to service your request.",
        "Apache Server at s7sps1apissl.scene7.com Port 443",
    )


def maintenance_page() -> bytes:
    """An HTML page with status 200: what a captive portal or maintenance window serves."""
    return html_page(
        "Dynamic Media Classic - Scheduled Maintenance",
        "Scheduled maintenance",
        "The service is unavailable during scheduled maintenance. Please try again later.",
    )


def answer_elements(operation: str) -> tuple[str, str]:
    """The return element and the array inside it of the operation's answer that a hostile
    document imitates: the job logs' for getJobLogs and getJobLogDetails, else getActiveJobs'."""
    if operation in ("getJobLogs", "getJobLogDetails"):
        return f"{operation}Return", "jobLogArray"
    return "getActiveJobsReturn", "jobArray"


def _active_jobs_shell(
    envelope: str, api_version: str, operation: str = "getActiveJobs"
) -> tuple[etree._Element, etree._Element]:
    """An envelope holding <operation>Return/<array>/items; returns (envelope, items)."""
    namespace = api_namespace(api_version)
    element, array_name = answer_elements(operation)
    root, body = envelope_tree(envelope)
    ret = etree.SubElement(body, f"{{{namespace}}}{element}", nsmap=default_nsmap(namespace))
    array = etree.SubElement(ret, f"{{{namespace}}}{array_name}")
    return root, etree.SubElement(array, f"{{{namespace}}}items")


def malformed_document(envelope: str, api_version: str, operation: str = "getActiveJobs") -> bytes:
    """An answer cut inside a tag and closed with the wrong end tags."""
    root, item = _active_jobs_shell(envelope, api_version, operation)
    namespace = api_namespace(api_version)
    etree.SubElement(item, f"{{{namespace}}}companyHandle").text = "c|110"
    etree.SubElement(item, f"{{{namespace}}}jobHandle").text = "j|110||broken|1"
    whole = serialize(root)
    cut = whole.index(b"</jobHandle>") + 5
    return whole[:cut] + b"<state>Running</progress></soapenv:Body>"


def entity_bomb_document(envelope: str, api_version: str, operation: str = "getActiveJobs") -> bytes:
    """Billion laughs: nine levels of ten references, 10^9 copies of "lol" once expanded."""
    root, item = _active_jobs_shell(envelope, api_version, operation)
    namespace = api_namespace(api_version)
    handle = etree.SubElement(item, f"{{{namespace}}}companyHandle")
    handle.append(etree.Entity("lol9"))
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    doctype = f"<!DOCTYPE soapenv:Envelope [{''.join(entities)}]>"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", doctype=doctype))


def xxe_document(envelope: str, api_version: str, operation: str = "getActiveJobs") -> bytes:
    """An external entity that a careless parser would fill with /etc/passwd."""
    root, item = _active_jobs_shell(envelope, api_version, operation)
    namespace = api_namespace(api_version)
    handle = etree.SubElement(item, f"{{{namespace}}}companyHandle")
    handle.append(etree.Entity("xxe"))
    doctype = '<!DOCTYPE soapenv:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", doctype=doctype))


def oversized_stream(
    envelope: str,
    namespace: str,
    job: etree._Element,
    size: int,
    chunk_bytes: int = 64 * 1024,
    operation: str = "getActiveJobs",
) -> Iterator[bytes]:
    """A well-formed-looking answer repeating `job` (an ActiveJob, or a JobLog for the job-log
    operations) until `size` bytes are out; the closing tags never come unless the size is
    reached."""
    element, array_name = answer_elements(operation)
    sent = 0
    parts: list[bytes] = []
    pending = 0

    class _Sink:
        def write(self, data: bytes) -> None:
            nonlocal pending
            parts.append(data)
            pending += len(data)

    with etree.xmlfile(_Sink(), encoding="UTF-8") as xf:
        xf.write_declaration()
        with (
            xf.element(f"{{{envelope}}}Envelope", nsmap={"soapenv": envelope}),
            xf.element(f"{{{envelope}}}Body"),
            xf.element(f"{{{namespace}}}{element}", nsmap=default_nsmap(namespace)),
            xf.element(f"{{{namespace}}}{array_name}"),
        ):
            while sent < size:
                xf.write(job)
                xf.flush()
                if pending >= chunk_bytes:
                    chunk = b"".join(parts)
                    parts.clear()
                    pending = 0
                    sent += len(chunk)
                    yield chunk
    if parts:
        yield b"".join(parts)
