"""The IPS client at the HTTP level: what it sends, and how each failure maps to an error."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from lxml import etree

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
        await client.get_active_jobs("c|110", original_name='a <&"> b')
    (request,) = recorder.requests
    assert request.headers["SOAPAction"] == "getActiveJobs"
    assert request.headers["Accept-Encoding"] == "gzip"
    assert request.headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(request.content)
    assert root.tag == f"{{{SOAP11_ENV}}}Envelope"
    auth = root.find(f"{{{SOAP11_ENV}}}Header/{{{IPS_COMMON_NS}}}authHeader")
    assert {etree.QName(c).localname: c.text for c in auth} == {
        "user": "ops@example.com", "password": PASSWORD, "locale": "en-US", "appName": "scene7-exporter",
        "appVersion": auth.findtext(f"{{{IPS_COMMON_NS}}}appVersion"),
    }
    param = root.find(f"{{{SOAP11_ENV}}}Body/{{http://www.scene7.com/IpsApi/xsd/2013-02-15}}getActiveJobsParam")
    assert [(etree.QName(c).localname, c.text) for c in param] == [
        ("companyHandle", "c|110"), ("originalName", 'a <&"> b'),
    ]


@pytest.mark.parametrize(("version", "sent"), [
    ("2010-01-31", False), ("2014-04-03", False), ("2016-01-14-beta", True), ("2022-11-01-beta", True),
])
async def test_include_waiting_jobs_is_sent_only_to_versions_whose_schema_has_it(version, sent):
    recorder = Recorder(xml_response(JOBS_OK))
    async with client_for(recorder, api_version=version) as client:
        await client.get_active_jobs("c|110")
    param = etree.fromstring(recorder.requests[0].content).find(
        f"{{{SOAP11_ENV}}}Body/{{http://www.scene7.com/IpsApi/xsd/{version}}}getActiveJobsParam")
    names = [etree.QName(c).localname for c in param]
    assert names == (["companyHandle", "includeWaitingJobs"] if sent else ["companyHandle"])


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


def raiser(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ReadTimeout("slow"), IpsTimeout),
        (httpx.ConnectError("refused"), IpsConnectionError),
        (httpx.ConnectError("[Errno -2] Name or service not known"), IpsConnectionError),
    ],
)
async def test_transport_failures_are_retried_within_the_deadline(exc, error):
    recorder = Recorder(raiser(exc))
    async with client_for(recorder) as client:
        with pytest.raises(error):
            await client.get_active_jobs("1")
    assert len(recorder.requests) > 1


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
