"""The IPS client at the HTTP level: what it sends, and how each failure maps to an error."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from lxml import etree
from servers import simulated
from support import free_port, write_self_signed_certificate

from exporter import __version__
from exporter.client import IpsClient, RetryPolicy
from exporter.errors import (
    ApiFault,
    AuthenticationFault,
    AuthorizationFault,
    HttpStatusError,
    IpsConnectionError,
    IpsError,
    IpsTimeout,
    MalformedResponse,
    OversizedResponse,
)
from exporter.soap import IPS_COMMON_NS, SOAP11_ENV

PASSWORD = "s3cr3t-<&\"'-pw"
ENDPOINT = "https://ips.invalid/scene7/services/IpsApiService"
FAST_RETRY = RetryPolicy(deadline=1.0, attempt_timeout=0.5, initial_backoff=0.01, max_backoff=0.05)
JOBS_OK = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
    b'<getActiveJobsReturn xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03"><jobArray/>'
    b"</getActiveJobsReturn></s:Body></s:Envelope>"
)


def fault(element: str, code: int) -> bytes:
    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        f"<faultcode>s:Server</faultcode><faultstring>{element}</faultstring><detail>"
        f'<t:{element} xmlns:t="http://www.scene7.com/IpsApi/xsd"><t:code>{code}</t:code>'
        f"<t:reason>reason {code}</t:reason></t:{element}></detail></s:Fault></s:Body></s:Envelope>"
    ).encode()


class Recorder:
    """A mock IPS: answers each request with the next response and records requests."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response] | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request) if callable(answer) else answer


def client_for(recorder: Recorder, **kwargs) -> IpsClient:
    kwargs.setdefault("retry", FAST_RETRY)
    return IpsClient(ENDPOINT, "ops@example.com", PASSWORD, transport=httpx.MockTransport(recorder), **kwargs)


def xml_response(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"Content-Type": "text/xml; charset=UTF-8"})


async def test_request_envelope_headers_and_round_trip_of_odd_values():
    recorder = Recorder(xml_response(JOBS_OK))
    async with client_for(recorder, api_version="2013-02-15") as client:
        await client.get_active_jobs("c|110", job_handle="j|110||x|7", original_name='a <&"> b')
    (request,) = recorder.requests
    assert request.method == "POST" and str(request.url) == ENDPOINT
    assert request.headers["SOAPAction"] == "getActiveJobs"
    assert request.headers["Accept-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "text/xml; charset=UTF-8"
    assert request.headers["User-Agent"] == f"scene7-exporter/{__version__}"
    root = etree.fromstring(request.content)
    assert root.tag == f"{{{SOAP11_ENV}}}Envelope"
    auth = root.find(f"{{{SOAP11_ENV}}}Header/{{{IPS_COMMON_NS}}}authHeader")
    assert {etree.QName(c).localname: c.text for c in auth} == {
        "user": "ops@example.com", "password": PASSWORD, "locale": "en-US", "appName": "scene7-exporter",
        "appVersion": auth.findtext(f"{{{IPS_COMMON_NS}}}appVersion"),
    }
    param = root.find(f"{{{SOAP11_ENV}}}Body/{{http://www.scene7.com/IpsApi/xsd/2013-02-15}}getActiveJobsParam")
    assert [(etree.QName(c).localname, c.text) for c in param] == [
        ("companyHandle", "c|110"), ("jobHandle", "j|110||x|7"), ("originalName", 'a <&"> b'),
    ]


@pytest.mark.parametrize(("version", "kwargs", "sent"), [
    ("2010-01-31", {}, None),
    ("2014-04-03", {"include_waiting_jobs": True}, None),
    ("2016-01-14-beta", {}, "true"),
    ("2016-01-14-beta", {"include_waiting_jobs": False}, "false"),
    ("2022-11-01-beta", {"include_waiting_jobs": True}, "true"),
])
async def test_include_waiting_jobs_is_sent_only_to_versions_whose_schema_has_it(version, kwargs, sent):
    recorder = Recorder(xml_response(JOBS_OK))
    async with client_for(recorder, api_version=version) as client:
        await client.get_active_jobs("c|110", **kwargs)
    param = etree.fromstring(recorder.requests[0].content).find(
        f"{{{SOAP11_ENV}}}Body/{{http://www.scene7.com/IpsApi/xsd/{version}}}getActiveJobsParam")
    expected = {"companyHandle": "c|110"} | ({"includeWaitingJobs": sent} if sent else {})
    assert {etree.QName(c).localname: c.text for c in param} == expected


ITEMS = "".join(
    f"<items><itemName>img{i}.tif</itemName><progress>0.5</progress><progressMessage/>"
    f"<lastProgressUpdate>2011-03-30T14:32:10.458-05:00</lastProgressUpdate></items>"
    for i in range(3)
)


@pytest.mark.parametrize(("kwargs", "kept"), [({}, 3), ({"keep_items": True}, 3), ({"keep_items": False}, 0)])
async def test_item_entries_are_kept_unless_asked_not_to_and_always_counted(capture, kwargs, kept):
    answer = capture("get_active_jobs-one_publish_job.xml").replace(
        b"<taskItemProgressArray/>", f"<taskItemProgressArray>{ITEMS}</taskItemProgressArray>".encode(), 1)
    async with client_for(Recorder(xml_response(answer))) as client:
        job = (await client.get_active_jobs("111", **kwargs)).jobs[0]
    first = job.task_progress_array[0]
    assert first.item_count == 3
    assert [item.item_name for item in first.task_item_progress_array] == ["img0.tif", "img1.tif", "img2.tif"][:kept]


async def test_company_memberships_are_asked_with_an_empty_param():
    recorder = Recorder(xml_response(
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<getCompanyMembershipReturn xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03"><membershipArray/>'
        b"</getCompanyMembershipReturn></s:Body></s:Envelope>"))
    async with client_for(recorder, api_version="2014-04-03") as client:
        assert await client.get_company_memberships() == []
    (request,) = recorder.requests
    assert request.headers["SOAPAction"] == "getCompanyMembership"
    body = etree.fromstring(request.content).find(f"{{{SOAP11_ENV}}}Body")
    assert [(c.tag, len(c)) for c in body] == [
        ("{http://www.scene7.com/IpsApi/xsd/2014-04-03}getCompanyMembershipParam", 0)]


async def test_gzip_answer_is_decoded():
    recorder = Recorder(httpx.Response(200, content=gzip.compress(JOBS_OK),
                                       headers={"Content-Type": "text/xml", "Content-Encoding": "gzip"}))
    async with client_for(recorder) as client:
        assert (await client.get_active_jobs("1")).jobs == ()


@pytest.mark.parametrize(
    ("element", "code", "error", "status"),
    [
        ("authenticationFault", 10001, AuthenticationFault, 500),
        ("authorizationFault", 20000, AuthorizationFault, 500),
        ("ipsApiFault", 30001, ApiFault, 500),
        ("authenticationFault", 10002, AuthenticationFault, 200),  # faultHttpStatusCode 200
    ],
)
async def test_faults_are_typed_and_never_retried(element, code, error, status):
    recorder = Recorder(xml_response(fault(element, code), status))
    async with client_for(recorder) as client:
        with pytest.raises(error) as caught:
            await client.get_active_jobs("1")
    assert caught.value.code == code and caught.value.fault_reason == f"reason {code}"
    assert len(recorder.requests) == 1


async def test_html_401_is_an_http_error_not_retried():
    recorder = Recorder(httpx.Response(401, text="<html>no</html>", headers={"Content-Type": "text/html"}))
    async with client_for(recorder) as client:
        with pytest.raises(HttpStatusError) as caught:
            await client.get_company_memberships()
    assert caught.value.status == 401 and caught.value.reason == "http"
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("status", "headers", "body", "message"),
    [
        (404, {"Content-Type": "text/html; charset=iso-8859-1"}, b"<html/>", "HTTP 404: text/html"),
        (300, {"Content-Type": "text/html"}, b"<html/>", "HTTP 300: text/html"),
        (404, {}, b"not found", "HTTP 404"),
        (404, {"Content-Type": "text/xml; charset=UTF-8"}, JOBS_OK, "HTTP 404: SOAP answer without fault"),
        (300, {"Content-Type": "text/xml; charset=UTF-8"}, JOBS_OK, "HTTP 300: SOAP answer without fault"),
        (302, {"Location": "https://elsewhere.invalid/ips", "Content-Type": "text/html"}, b"", "HTTP 302: text/html"),
    ],
    ids=["html-404", "html-300", "404-without-type", "soap-404-without-fault", "soap-300-without-fault",
         "redirect-not-followed"],
)
async def test_error_statuses_of_3xx_and_4xx_are_final_http_errors(status, headers, body, message):
    recorder = Recorder(httpx.Response(status, content=body, headers=headers), xml_response(JOBS_OK))
    async with client_for(recorder) as client:
        with pytest.raises(HttpStatusError) as caught:
            await client.get_active_jobs("1")
    assert str(caught.value) == message and caught.value.status == status
    assert len(recorder.requests) == 1


async def test_proxy_502_is_retried_then_succeeds():
    page = httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>", headers={"Content-Type": "text/html"})
    recorder = Recorder(page, page, xml_response(JOBS_OK))
    async with client_for(recorder) as client:
        assert (await client.get_active_jobs("1")).jobs == ()
    assert len(recorder.requests) == 3


async def test_429_is_retried_then_succeeds():
    busy = httpx.Response(429, text="slow down", headers={"Content-Type": "text/plain"})
    recorder = Recorder(busy, xml_response(JOBS_OK))
    async with client_for(recorder) as client:
        assert (await client.get_active_jobs("1")).jobs == ()
    assert len(recorder.requests) == 2


async def test_503_until_the_deadline_gives_the_http_error():
    recorder = Recorder(httpx.Response(503, text="busy", headers={"Content-Type": "text/plain"}))
    async with client_for(recorder) as client:
        with pytest.raises(HttpStatusError) as caught:
            await client.get_active_jobs("1")
    assert caught.value.status == 503
    assert len(recorder.requests) > 1


async def test_a_retry_sleep_that_overshoots_the_deadline_still_gives_the_http_error(monkeypatch):
    # On a loaded machine the backoff sleep can end after the deadline: the error that kept
    # coming is the answer, not a timeout that never happened.
    real_sleep = asyncio.sleep

    async def overshooting_sleep(delay: float) -> None:
        await real_sleep(delay + FAST_RETRY.deadline)

    monkeypatch.setattr("exporter.client.asyncio.sleep", overshooting_sleep)
    recorder = Recorder(httpx.Response(503, text="busy", headers={"Content-Type": "text/plain"}))
    async with client_for(recorder) as client:
        with pytest.raises(HttpStatusError) as caught:
            await client.get_active_jobs("1")
    assert caught.value.status == 503 and len(recorder.requests) == 1


@pytest.mark.parametrize(("attempt", "bound"), [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (7, 8.0)])
def test_backoff_is_full_jitter_up_to_the_capped_exponential(monkeypatch, attempt, bound):
    drawn = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high / 2

    monkeypatch.setattr("exporter.client.random.uniform", uniform)
    assert RetryPolicy(initial_backoff=0.5, max_backoff=8.0).backoff(attempt) == bound / 2
    assert drawn == [(0, bound)]


async def test_each_retry_is_logged_with_its_attempt_and_growing_backoff(monkeypatch, caplog):
    monkeypatch.setattr("exporter.client.random.uniform", lambda low, high: high)  # the longest jitter
    caplog.set_level(logging.DEBUG, logger="exporter.client")
    busy = httpx.Response(503, text="busy", headers={"Content-Type": "text/plain"})
    recorder = Recorder(busy, busy, busy, xml_response(JOBS_OK))
    retry = RetryPolicy(deadline=10.0, attempt_timeout=1.0, initial_backoff=0.01, max_backoff=0.03)
    async with client_for(recorder, retry=retry) as client:
        assert (await client.get_active_jobs("1")).jobs == ()
    assert [r.getMessage() for r in caplog.records if r.name == "exporter.client"] == [
        "getActiveJobs attempt 1 failed (HTTP 503: text/plain), retrying in 0.01s",
        "getActiveJobs attempt 2 failed (HTTP 503: text/plain), retrying in 0.02s",
        "getActiveJobs attempt 3 failed (HTTP 503: text/plain), retrying in 0.03s",
    ]
    assert len(recorder.requests) == 4


async def test_a_backoff_that_would_end_past_the_deadline_is_not_slept(monkeypatch):
    slept = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr("exporter.client.asyncio.sleep", sleep)
    monkeypatch.setattr("exporter.client.random.uniform", lambda low, high: high)
    recorder = Recorder(httpx.Response(503, text="busy", headers={"Content-Type": "text/plain"}))
    retry = RetryPolicy(deadline=0.5, attempt_timeout=0.5, initial_backoff=1.0, max_backoff=1.0)
    async with client_for(recorder, retry=retry) as client:
        with pytest.raises(HttpStatusError):
            await client.get_active_jobs("1")
    assert slept == [] and len(recorder.requests) == 1


@pytest.mark.parametrize(("deadline", "attempt_timeout"), [(10.0, 0.5), (0.25, 5.0)])
async def test_each_attempt_gets_at_most_what_is_left_of_the_deadline(deadline, attempt_timeout):
    recorder = Recorder(xml_response(JOBS_OK))
    async with client_for(recorder, retry=RetryPolicy(deadline=deadline, attempt_timeout=attempt_timeout)) as client:
        await client.get_active_jobs("1")
    timeouts = recorder.requests[0].extensions["timeout"]
    assert set(timeouts) == {"connect", "read", "write", "pool"}
    # Reaching IPS and sending get an attempt's time; the answer, what is left of the deadline.
    assert 0 < timeouts["read"] <= deadline and timeouts["read"] > deadline - 0.2
    if attempt_timeout < deadline:
        assert timeouts["connect"] == timeouts["write"] == timeouts["pool"] == attempt_timeout
    else:
        assert timeouts["connect"] == timeouts["write"] == timeouts["pool"] == timeouts["read"]


async def test_a_call_without_time_left_asks_nothing():
    recorder = Recorder(xml_response(JOBS_OK))
    async with client_for(recorder, retry=RetryPolicy(deadline=0.0)) as client:
        with pytest.raises(IpsTimeout) as caught:
            await client.get_active_jobs("1")
    assert str(caught.value) == "getActiveJobs: no answer within the deadline"
    assert recorder.requests == []


async def test_an_answer_trickling_past_the_deadline_times_out():
    retry = RetryPolicy(deadline=0.1, attempt_timeout=0.1)

    async def trickle() -> AsyncIterator[bytes]:
        yield JOBS_OK[:50]
        await asyncio.sleep(retry.deadline * 1.5)  # the server's pace: the next bytes come after the deadline
        yield JOBS_OK[50:]

    recorder = Recorder(lambda request: httpx.Response(200, content=trickle(), headers={"Content-Type": "text/xml"}))
    async with client_for(recorder, retry=retry) as client:
        with pytest.raises(IpsTimeout) as caught:
            await client.get_active_jobs("1")
    assert str(caught.value) == "getActiveJobs: answer not complete within the deadline"
    assert len(recorder.requests) == 1


def raiser(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.mark.parametrize(
    ("exc", "error", "message"),
    [
        (httpx.ConnectTimeout("slow"), IpsTimeout, "getActiveJobs: timed out"),
        (httpx.PoolTimeout("busy"), IpsTimeout, "getActiveJobs: timed out"),
        (httpx.ConnectError("refused"), IpsConnectionError, "getActiveJobs: ConnectError: refused"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), IpsConnectionError,
         "getActiveJobs: ConnectError: [Errno -2] Name or service not known"),
    ],
)
async def test_transport_failures_are_retried_within_the_deadline(exc, error, message):
    recorder = Recorder(raiser(exc))
    async with client_for(recorder) as client:
        with pytest.raises(error) as caught:
            await client.get_active_jobs("1")
    assert str(caught.value) == message
    assert len(recorder.requests) > 1


async def test_a_request_ips_got_and_did_not_answer_in_time_is_not_sent_again():
    # IPS may still be working on it: a second one would only queue the same work behind it.
    recorder = Recorder(raiser(httpx.ReadTimeout("slow")), xml_response(JOBS_OK))
    async with client_for(recorder) as client:
        with pytest.raises(IpsTimeout, match=r"^getActiveJobs: timed out$") as caught:
            await client.get_active_jobs("1")
    assert caught.value.reached_ips and not caught.value.retryable
    assert len(recorder.requests) == 1


async def test_a_slow_answer_may_take_the_whole_deadline():
    """IPS taking longer than an attempt's time to answer, but less than the deadline: the
    answer is waited for, once. Reaching IPS has an attempt's time, the answer what is left."""
    from exporter.simulator import SimulatorConfig, SimulatorServer

    class Counting(httpx.AsyncHTTPTransport):
        requests = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.requests += 1
            return await super().handle_async_request(request)

    async with SimulatorServer(SimulatorConfig(jobs=5, companies=1)) as sim:
        handle = sim.world.companies[0].handle
        retry = RetryPolicy(deadline=3.0, attempt_timeout=0.3, initial_backoff=0.01, max_backoff=0.02)
        transport = Counting()
        async with IpsClient(sim.url, "demo@example.com", "demo", retry=retry, transport=transport) as client:
            sim.faults.set(kind="latency", latency=0.8)
            result = await client.get_active_jobs(handle)
        assert result.jobs
        assert transport.requests == 1


async def test_transient_failure_then_success():
    recorder = Recorder(raiser(httpx.ConnectError("refused")), xml_response(JOBS_OK))
    async with client_for(recorder) as client:
        assert (await client.get_active_jobs("1")).jobs == ()


async def test_oversized_answer_is_cut_off_while_streaming():
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield JOBS_OK[: JOBS_OK.index(b"<jobArray/>")] + b"<jobArray><items><progressMessage>"
        while True:
            sent += 65536
            yield b"a" * 65536

    recorder = Recorder(lambda request: httpx.Response(200, content=endless(), headers={"Content-Type": "text/xml"}))
    async with client_for(recorder, max_response_bytes=1_000_000) as client:
        with pytest.raises(OversizedResponse):
            await client.get_active_jobs("1")
    assert sent < 1_000_000 + 2 * 65536  # stopped at the cap, not buffered whole


async def chunks_then(error: Exception | None, *chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if error is not None:
        raise error


@pytest.mark.parametrize(
    ("error", "chunks", "headers", "name"),
    [
        (httpx.RemoteProtocolError("peer closed connection without sending complete message body"), [JOBS_OK[:60]],
         {}, "RemoteProtocolError"),
        (httpx.ReadError("connection reset"), [JOBS_OK[:60]], {}, "ReadError"),
        (None, [gzip.compress(JOBS_OK)[:10], b"not deflate data at all"], {"Content-Encoding": "gzip"},
         "DecodingError"),
    ],
    ids=["closed-mid-body", "reset-mid-body", "broken-gzip"],
)
async def test_a_body_broken_off_or_undecodable_is_malformed(error, chunks, headers, name):
    recorder = Recorder(lambda request: httpx.Response(
        200, content=chunks_then(error, *chunks), headers={"Content-Type": "text/xml", **headers}))
    async with client_for(recorder) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.get_active_jobs("1")
    assert str(caught.value) == f"getActiveJobs: truncated answer ({name})"
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(("spare", "oversized"), [(0, False), (-1, True)])
async def test_the_size_cap_is_the_largest_answer_accepted(spare, oversized):
    cap = len(JOBS_OK) + spare
    async with client_for(Recorder(xml_response(JOBS_OK)), max_response_bytes=cap) as client:
        if oversized:
            with pytest.raises(OversizedResponse) as caught:
                await client.get_active_jobs("1")
            assert str(caught.value) == f"getActiveJobs: answer larger than {cap} bytes"
        else:
            assert (await client.get_active_jobs("1")).jobs == ()


@pytest.mark.parametrize(("turn_seconds", "turns"), [(0.0, 5), (60.0, 0)])
async def test_parsing_gives_the_event_loop_a_turn_after_each_stretch_of_work(monkeypatch, turn_seconds, turns):
    # Slices of 1 KB, and a turn once `turn_seconds` of parsing is done: after every slice, or never.
    monkeypatch.setattr("exporter.client.FEED_SLICE", 1024)
    monkeypatch.setattr("exporter.client.FEED_TURN_SECONDS", turn_seconds)
    real_sleep = asyncio.sleep
    slept = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr("exporter.client.asyncio.sleep", sleep)
    answer = JOBS_OK.replace(b"<jobArray/>", b"<jobArray/>" + b" " * (4 * 1024 + 100 - len(JOBS_OK)))
    assert len(answer) == 4 * 1024 + 100  # five slices
    async with client_for(Recorder(xml_response(answer))) as client:
        assert (await client.get_active_jobs("1")).jobs == ()
    assert slept == [0] * turns


async def test_truncated_gzip_body_is_malformed():
    body = gzip.compress(JOBS_OK)[:-30]
    headers = {"Content-Type": "text/xml", "Content-Encoding": "gzip"}
    recorder = Recorder(httpx.Response(200, content=body, headers=headers))
    async with client_for(recorder) as client:
        with pytest.raises(MalformedResponse):
            await client.get_active_jobs("1")


async def test_html_page_with_status_200_is_malformed():
    recorder = Recorder(httpx.Response(200, text="<html><body>Maintenance</body></html>",
                                       headers={"Content-Type": "text/html"}))
    async with client_for(recorder) as client:
        with pytest.raises(MalformedResponse):
            await client.get_active_jobs("1")


async def test_the_password_never_appears_in_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        xml_response(fault("authenticationFault", 10001), 500),
        httpx.Response(502, text="bad gateway", headers={"Content-Type": "text/html"}),
        raiser(httpx.ConnectError("refused")),
        raiser(httpx.ReadTimeout("slow")),
        httpx.Response(200, text="garbage", headers={"Content-Type": "text/xml"}),
    ]
    texts = []
    for answer in answers:
        client = client_for(Recorder(answer))
        texts.append(repr(client))
        with pytest.raises(IpsError) as caught:
            await client.get_active_jobs("1")
        texts += [str(caught.value), repr(caught.value)]
        await client.aclose()
    texts.append(caplog.text)
    assert all(PASSWORD not in text and "s3cr3t" not in text for text in texts)


async def test_proxy_settings_of_the_environment_are_not_used(monkeypatch):
    # A proxy that refuses every connection: a client that heeded the environment could not reach IPS.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    async with simulated(jobs=1) as sim, IpsClient(sim.url, "demo@example.com", "demo", retry=FAST_RETRY) as client:
        assert len(await client.get_company_memberships()) == len(sim.world.companies)


@contextlib.asynccontextmanager
async def tls_ips(cert_file: Path, key_file: Path) -> AsyncIterator[str]:
    """An HTTPS endpoint on 127.0.0.1 answering every request with JOBS_OK; yields its URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(JOBS_OK), JOBS_OK))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client refused the handshake
        finally:
            writer.close()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/scene7/services/IpsApiService"


async def test_tls_certificates_are_verified_unless_told_whom_to_trust(tmp_path):
    cert_file, key_file = write_self_signed_certificate(tmp_path, "ips.test", valid_for=timedelta(hours=1))
    # Room for a TLS handshake on a loaded machine (the refused certificate is retried to the deadline).
    retry = RetryPolicy(deadline=3, attempt_timeout=3, initial_backoff=0.01, max_backoff=0.02)
    async with tls_ips(cert_file, key_file) as url:
        async with IpsClient(url, "ops@example.com", PASSWORD, retry=retry) as client:
            with pytest.raises(IpsConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get_active_jobs("1")
        trusting = ssl.create_default_context(cafile=str(cert_file))
        async with IpsClient(url, "ops@example.com", PASSWORD, retry=retry, verify=trusting) as client:
            assert (await client.get_active_jobs("1")).jobs == ()


async def test_timed_out_polls_do_not_leak_pooled_connections():
    """Many polls ending at their deadline under a hanging IPS must not use up a small pool."""
    from exporter.simulator import SimulatorConfig, SimulatorServer

    async with SimulatorServer(SimulatorConfig(jobs=5, companies=1)) as sim:
        handle = sim.world.companies[0].handle
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=2))
        retry = RetryPolicy(deadline=0.3, attempt_timeout=0.3, initial_backoff=0.01, max_backoff=0.02)
        async with IpsClient(sim.url, "demo@example.com", "demo", retry=retry, transport=transport) as client:
            sim.faults.set(kind="latency", latency=2.0)
            for _ in range(5):
                results = await asyncio.gather(*(client.get_active_jobs(handle) for _ in range(3)),
                                               return_exceptions=True)
                assert all(isinstance(r, IpsTimeout) for r in results), results
            sim.faults.clear()
            result = await client.get_active_jobs(handle)
            assert result.jobs


@pytest.mark.parametrize(("unclipped", "expected"), [
    (httpx.ConnectError("certificate verify failed"), IpsConnectionError),
    (httpx.ConnectTimeout("slow"), IpsTimeout),
])
async def test_an_attempt_cut_short_by_the_deadline_reports_what_kept_failing(unclipped, expected):
    # The last attempt only has what is left of the deadline; if that runs out, the error of the
    # attempts before it is the reason (a loaded machine turned a refused certificate into `timeout`).
    tried: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        connect_timeout = request.extensions["timeout"]["connect"]
        tried.append(connect_timeout)
        if connect_timeout < 0.4:  # the deadline clipped this attempt
            raise httpx.ReadTimeout("deadline", request=request)
        raise type(unclipped)(str(unclipped), request=request)

    # A second of margin before the first attempt is clipped: a slow runner (mutmut) took the 0.1 s there was.
    retry = RetryPolicy(deadline=1.5, attempt_timeout=0.4, initial_backoff=0.05, max_backoff=0.05)
    async with IpsClient(ENDPOINT, "ops@example.com", PASSWORD, retry=retry,
                         transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(expected):
            await client.get_active_jobs("1")
    assert tried[0] == 0.4 and tried[-1] < 0.4
