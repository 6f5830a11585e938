"""The simulator over HTTP, at the real IPS path, on the exporter's own HTTP server.

`Simulator.handle` is a plain async request handler (no sockets of its own), so tests can call
it directly; `SimulatorServer` binds it to a port. Besides the SOAP endpoint it serves the fault
switch (`GET`/`POST`/`DELETE /simulator/faults`, JSON) and a summary of the world
(`GET /simulator/world`). Those control paths have no authentication: the simulator is a test
tool and listens on 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime

from pydantic import ValidationError

from exporter.httpserver import HttpServer, Request, Response
from exporter.simulator.faults import (
    SOAP_FAULT_ELEMENTS,
    FaultKind,
    FaultPlan,
    Faults,
    answer_elements,
    entity_bomb_document,
    maintenance_page,
    malformed_document,
    oversized_stream,
    proxy_error_page,
    xxe_document,
)
from exporter.simulator.responses import (
    Answer,
    RequestError,
    Responder,
    SoapFault,
    SoapRequest,
    content_type_of,
    fault_answer,
    fault_document,
    parse_request,
)
from exporter.simulator.world import SimulatorConfig, World
from exporter.versions import DEFAULT_API_VERSION

log = logging.getLogger("exporter.simulator")

SOAP_PATH = "/scene7/services/IpsApiService"
FAULTS_PATH = "/simulator/faults"
WORLD_PATH = "/simulator/world"
MAX_REQUEST_BYTES = 1024 * 1024
GZIP_LEVEL = 1  # the simulator must not be what a benchmark measures
_HTML = "text/html; charset=UTF-8"
_JSON = "application/json"


class Simulator:
    """A world, a fault switch and the SOAP layer, answering HTTP requests."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.world = World(config, clock)
        self.config = self.world.config
        self.faults = Faults()
        self.responder = Responder(self.world)

    def warm_up(self, api_version: str = DEFAULT_API_VERSION) -> None:
        self.responder.warm_up(api_version)

    async def handle(self, request: Request) -> Response:
        if request.path == SOAP_PATH:
            if request.method != "POST":
                return Response(405, b"Method Not Allowed\n", headers=(("allow", "POST"),))
            return await self._soap(request)
        if request.path == FAULTS_PATH:
            return self._fault_switch(request)
        if request.path == WORLD_PATH and request.method in ("GET", "HEAD"):
            summary = await asyncio.to_thread(self.responder.summary)
            return _json(200, summary)
        return Response(404, b"Not Found\n")

    # -- SOAP ------------------------------------------------------------------------------

    async def _soap(self, request: Request) -> Response:
        try:
            soap = parse_request(request.body, request.headers.get("content-type"))
        except RequestError as exc:
            log.debug("unreadable request: %s", exc.fault.reason)
            return _send(fault_answer(exc.envelope, exc.fault), request, None)
        company = soap.params.get("companyHandle")
        plan = self.faults.take(soap.operation, company)
        if plan is not None:
            log.debug("injecting %s into %s for %s", plan.kind, soap.operation, company)
            if plan.latency:
                await asyncio.sleep(plan.latency)
            if plan.kind is not FaultKind.LATENCY:
                return await self._inject(plan, soap, request)
        basic = basic_credentials(request.headers.get("authorization"))
        answer = await asyncio.to_thread(self.responder.answer, soap, basic)
        log.debug("%s for %s: HTTP %d, %d bytes", soap.operation, company, answer.status, answer.size)
        return _send(answer, request, soap)

    async def _inject(self, plan: FaultPlan, soap: SoapRequest, request: Request) -> Response:
        envelope, version = soap.envelope, soap.api_version
        content_type = content_type_of(envelope)
        kind = plan.kind
        if kind is FaultKind.HTTP_STATUS:
            return Response(plan.status, proxy_error_page(plan.status), _HTML)
        if kind in SOAP_FAULT_ELEMENTS:
            element, code, reason = SOAP_FAULT_ELEMENTS[kind]
            fault = SoapFault(element, plan.code or code, plan.reason or reason)
            status = plan.fault_http_status or soap.fault_http_status or 500
            return Response(status, fault_document(envelope, fault), content_type)
        operation = soap.operation
        if kind is FaultKind.MALFORMED:
            return Response(200, malformed_document(envelope, version, operation), content_type)
        if kind is FaultKind.ENTITY_BOMB:
            return Response(200, entity_bomb_document(envelope, version, operation), content_type)
        if kind is FaultKind.XXE:
            return Response(200, xxe_document(envelope, version, operation), content_type)
        if kind is FaultKind.HTML_200:
            return Response(200, maintenance_page(), _HTML)
        if kind is FaultKind.RESET:
            _drop_connection()
        basic = basic_credentials(request.headers.get("authorization"))
        if kind is FaultKind.INVALID_RECORD:
            answer = await asyncio.to_thread(
                self.responder.answer, soap, basic, corrupt_record=True, corrupt_value=plan.value
            )
            return _send(answer, request, soap)
        if kind is FaultKind.TRUNCATED:
            answer = await asyncio.to_thread(self.responder.answer, soap, basic)
            body = answer.body()
            return Response(
                answer.status,
                _truncated(body[: len(body) // 2]),
                answer.content_type,
                headers=(("content-length", str(len(body))),),
            )
        # OVERSIZED
        logs = answer_elements(operation)[0] != "getActiveJobsReturn"
        sample = self.responder.sample_job_log if logs else self.responder.sample_job
        job = await asyncio.to_thread(sample, soap)
        if job is None:  # nothing to repeat in an empty world
            return Response(200, malformed_document(envelope, version, operation), content_type)
        stream = oversized_stream(envelope, soap.namespace, job, plan.size, operation=operation)
        return Response(200, _iterate(stream), content_type)

    # -- control ---------------------------------------------------------------------------

    def _fault_switch(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return _json(200, self.faults.describe())
        if request.method == "DELETE":
            self.faults.clear()
            log.info("faults cleared")
            return _json(200, self.faults.describe())
        if request.method == "POST":
            try:
                plan = FaultPlan.model_validate_json(request.body or b"{}")
            except ValidationError as exc:
                errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
                return _json(400, {"error": "invalid fault plan", "details": errors})
            self.faults.set(plan)
            log.info("fault switched on: %s", plan.model_dump(mode="json", exclude_defaults=True))
            return _json(200, self.faults.describe())
        return Response(405, b"Method Not Allowed\n", headers=(("allow", "GET, POST, DELETE"),))


class SimulatorServer:
    """The simulator on a real socket, for tests (port 0) and `scene7-exporter simulate`."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        warm_up: bool = True,
    ) -> None:
        self.simulator = Simulator(config, clock)
        self.host = host
        self._warm_up = warm_up
        self._warming: asyncio.Future[None] | None = None
        self._http = HttpServer(
            self.simulator.handle,
            host,
            port,
            methods=frozenset({"GET", "HEAD", "POST", "DELETE"}),
            max_body_bytes=MAX_REQUEST_BYTES,
        )

    @property
    def world(self) -> World:
        return self.simulator.world

    @property
    def faults(self) -> Faults:
        return self.simulator.faults

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]", ""):  # noqa: S104 - naming the wildcard, not binding it
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The SOAP endpoint, as an account's `endpoint`."""
        return self.base_url + SOAP_PATH

    async def start(self) -> None:
        await self._http.start()
        if self._warm_up:
            # Build the answer trees of the default API version while nobody is asking yet.
            self._warming = asyncio.ensure_future(asyncio.to_thread(self.simulator.warm_up))

    async def close(self) -> None:
        await self._http.close()
        if self._warming is not None:
            await self._warming

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header, or None."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _send(answer: Answer, request: Request, soap: SoapRequest | None) -> Response:
    """The HTTP response of an answer: gzip if asked and not refused in the authHeader;
    streamed when it is more than one chunk."""
    wants_gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    use_gzip = wants_gzip and (soap is None or soap.gzip_response is not False)
    headers: tuple[tuple[str, str], ...] = (("vary", "Accept-Encoding"),)
    if use_gzip:
        headers += (("content-encoding", "gzip"),)
    if len(answer.chunks) <= 1:
        body = answer.body()
        if use_gzip:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        return Response(answer.status, body, answer.content_type, headers)
    if not use_gzip:
        headers += (("content-length", str(answer.size)),)
    return Response(answer.status, _stream(answer.chunks, use_gzip), answer.content_type, headers)


async def _stream(chunks: list[bytes], use_gzip: bool) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if use_gzip else None
    for chunk in chunks:
        yield compressor.compress(chunk) if compressor is not None else chunk
    if compressor is not None:
        yield compressor.flush()


async def _iterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    try:
        for chunk in chunks:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def _truncated(part: bytes) -> AsyncIterator[bytes]:
    yield part
    _drop_connection()


def _drop_connection() -> None:
    """End the connection without (finishing) an answer.

    `exporter.httpserver` has no call for this. It takes a CancelledError from the handler or
    the body for "connection going away" and closes the socket without writing more, which is
    the behaviour wanted; tests/test_simulator.py checks that it stays so.
    """
    raise asyncio.CancelledError


def _json(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload, indent=2).encode() + b"\n", _JSON)
