"""How an account reaches IPS: through an outbound proxy (named, or from the environment), and
with the locale IPS answers in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from lxml import etree
from pydantic import ValidationError
from servers import simulated

from exporter import __version__
from exporter.client import PROXY_REFUSED, IpsClient, ResponseBudget, RetryPolicy
from exporter.config import AccountConfig, describe_errors
from exporter.errors import HttpStatusError, IpsConnectionError, OversizedResponse, Reason
from exporter.soap import IPS_COMMON_NS, AuthHeader, build_envelope


class ForwardProxy:
    """A plain HTTP forward proxy: absolute-form requests passed on in origin form, each
    connection's first request logged; optionally asking for basic credentials (407)."""

    def __init__(self, credentials: str | None = None) -> None:
        self.credentials = credentials
        self.refuse_connect = False
        self.requests: list[str] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            self.requests.append(f"{method} {target}")
            if method == "CONNECT" and self.refuse_connect:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            headers = [line for line in header_lines if line]
            auth = next((line.split(":", 1)[1].strip() for line in headers
                         if line.lower().startswith("proxy-authorization:")), None)
            if self.credentials is not None and auth != "Basic " + base64.b64encode(self.credentials.encode()).decode():
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\n"
                             b"Content-Type: text/html\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            rest = target.split("://", 1)[1]
            hostport, _, path = rest.partition("/")
            host, _, port = hostport.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            kept = [line for line in headers if not line.lower().startswith(("proxy-", "connection:"))]
            up_writer.write(f"{method} /{path} {version}\r\n".encode("latin-1")
                            + "".join(f"{line}\r\n" for line in [*kept, "Connection: close"]).encode("latin-1")
                            + b"\r\n")

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
            up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ForwardProxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


async def test_polls_go_through_the_proxy_named_in_proxy_url():
    async with simulated() as sim, ForwardProxy().running() as proxy:
        account = AccountConfig(name="p", endpoint=sim.url, user="demo@example.com", password="demo",  # type: ignore[arg-type]
                                proxy_url=f"http://127.0.0.1:{proxy.port}")  # type: ignore[arg-type]
        async with IpsClient(sim.url, "demo@example.com", "demo", proxy=account.proxy()) as client:
            memberships = await client.get_company_memberships()
        assert [m.company.name for m in memberships] == [c.name for c in sim.world.companies]
        assert proxy.requests == [f"POST {sim.url}"]


async def test_a_proxy_that_asks_for_credentials_is_an_http_error_that_says_so():
    async with simulated() as sim, ForwardProxy(credentials="squid:Pr0xy-Pa55").running() as proxy:
        async with IpsClient(sim.url, "demo@example.com", "demo", proxy=f"http://127.0.0.1:{proxy.port}") as client:
            with pytest.raises(HttpStatusError) as refused:
                await client.get_company_memberships()
        assert refused.value.reason is Reason.HTTP and refused.value.status == 407
        assert str(refused.value) == f"HTTP 407: {PROXY_REFUSED}"
        with_credentials = f"http://squid:Pr0xy-Pa55@127.0.0.1:{proxy.port}"
        async with IpsClient(sim.url, "demo@example.com", "demo", proxy=with_credentials) as client:
            assert await client.get_company_memberships()
            assert client.secrets == ("demo", "Pr0xy-Pa55")  # masked in every message shown


@pytest.mark.parametrize(("environment", "endpoint", "proxy"), [
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https://s7sps1apissl.scene7.com/scene7/services/IpsApiService",
     "http://proxy:3128"),
    ({"https_proxy": "http://lower:3128"}, "https://s7sps1apissl.scene7.com/x", "http://lower:3128"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".scene7.com"}, "https://s7sps1apissl.scene7.com/x", None),
    ({"HTTP_PROXY": "http://plain:3128"}, "https://s7sps1apissl.scene7.com/x", None),  # no proxy for https
    ({"HTTP_PROXY": "http://plain:3128"}, "http://ips.internal:8080/x", "http://plain:3128"),
    ({}, "https://s7sps1apissl.scene7.com/x", None),
])
def test_proxy_from_environment_follows_https_proxy_and_no_proxy(monkeypatch, environment, endpoint, proxy):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    account = AccountConfig(user="u", endpoint=endpoint, proxy_from_environment=True)
    assert account.proxy() == proxy
    assert AccountConfig(user="u", endpoint=endpoint).proxy() is None  # only when asked for


def test_a_proxy_url_is_checked_and_never_echoed():
    with pytest.raises(ValidationError, match="proxy_url must be an http") as bad:
        AccountConfig(user="u", proxy_url="ftp://user:S3cret@proxy")  # type: ignore[arg-type]
    assert describe_errors(bad.value) == ["proxy_url: proxy_url must be an http(s) or socks5 URL, e.g. "
                                          "http://proxy.example.com:3128 (check the value)"]
    assert "S3cret" not in repr(AccountConfig(user="u", proxy_url="http://user:S3cret@proxy:3128"))  # type: ignore[arg-type]


def test_the_locale_is_sent_in_the_auth_header_before_the_application():
    header = AuthHeader("u@example.com", "p", "scene7-exporter", "1.0", locale="de-DE")
    root = etree.fromstring(build_envelope("getCompanyMembership", "2014-04-03", {}, header))
    auth = root.find(f".//{{{IPS_COMMON_NS}}}authHeader")
    assert auth is not None
    assert [(etree.QName(child).localname, child.text) for child in auth] == [
        ("user", "u@example.com"), ("password", "p"), ("locale", "de-DE"), ("appName", "scene7-exporter"),
        ("appVersion", "1.0")]
    assert AccountConfig(user="u").locale == "en-US"
    with pytest.raises(ValueError, match="locale"):
        AccountConfig(user="u", locale="en US; drop")


async def test_a_proxy_refusing_the_tunnel_to_an_https_endpoint_is_the_same_http_error():
    async with ForwardProxy(credentials="squid:Pr0xy-Pa55").running() as proxy:
        async with IpsClient("https://ips.example.com/scene7/services/IpsApiService", "demo@example.com", "demo",
                             proxy=f"http://127.0.0.1:{proxy.port}") as client:
            with pytest.raises(HttpStatusError) as refused:
                await client.get_company_memberships()
        assert str(refused.value) == f"HTTP 407: {PROXY_REFUSED}"
        assert proxy.requests == ["CONNECT ips.example.com:443"]


CAPTURE = (Path(__file__).parent / "data" / "captures" / "get_active_jobs-one_publish_job.xml").read_bytes()


class HeldStream(httpx.AsyncByteStream):
    """A real answer in two halves, the second sent only once `release` is set."""

    def __init__(self, release: asyncio.Event | None) -> None:
        self.release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = len(CAPTURE) // 2
        yield CAPTURE[:half]
        if self.release is not None:
            await self.release.wait()
        yield CAPTURE[half:]


async def test_answers_read_at_once_share_one_budget_and_give_it_back():
    budget = ResponseBudget(len(CAPTURE) + 100)
    release = asyncio.Event()

    def client(held: bool) -> IpsClient:
        transport = httpx.MockTransport(lambda request: httpx.Response(
            200, headers={"content-type": "text/xml; charset=UTF-8"}, stream=HeldStream(release if held else None)))
        return IpsClient("http://ips.test/scene7/services/IpsApiService", "u", "p", transport=transport, budget=budget)

    async with client(held=True) as slow, client(held=False) as fast:
        first = asyncio.create_task(slow.get_active_jobs("111"))
        while budget.reading == 0:  # the slow answer's first half is in
            await asyncio.sleep(0.01)
        with pytest.raises(OversizedResponse) as refused:
            await fast.get_active_jobs("111")  # alone it would fit; with the other under way it does not
        assert str(refused.value) == ("getActiveJobs: the answers being read together passed "
                                      f"poll.max_total_response_size ({len(CAPTURE) + 100} bytes)")
        release.set()
        assert len((await first).jobs) == 2  # the capture holds two jobs
        assert budget.reading == 0
        assert len((await fast.get_active_jobs("111")).jobs) == 2  # the budget is free again


async def test_the_client_sends_its_locale_and_version_and_masks_secrets_in_its_retry_lines(caplog):
    caplog.set_level(logging.DEBUG, logger="exporter.client")
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        # A server whose error page names the password in its content type, of all places.
        return httpx.Response(503, headers={"content-type": "Pa55-w0rd/html"}, text="busy")

    client = IpsClient("http://ips.test/scene7/services/IpsApiService", "u", "Pa55-w0rd", locale="fr-FR",
                       transport=httpx.MockTransport(answer),
                       retry=RetryPolicy(deadline=0.5, initial_backoff=0.01, max_backoff=0.02))
    async with client:
        with pytest.raises(HttpStatusError):
            await client.get_company_memberships()
    auth = etree.fromstring(sent[0]).find(f".//{{{IPS_COMMON_NS}}}authHeader")
    assert auth is not None
    assert (auth.findtext(f"{{{IPS_COMMON_NS}}}locale"), auth.findtext(f"{{{IPS_COMMON_NS}}}appVersion")) == (
        "fr-FR", __version__)
    retries = [line for line in caplog.messages if "retrying" in line]
    assert retries and all("HTTP 503: ***/html" in line for line in retries), retries
    assert "Pa55-w0rd" not in caplog.text


async def test_a_proxy_that_fails_otherwise_is_a_connection_error_naming_the_proxy():
    async with ForwardProxy(credentials=None).running() as proxy:
        proxy.refuse_connect = True
        async with IpsClient("https://ips.example.com/scene7/services/IpsApiService", "u", "p",
                             proxy=f"http://127.0.0.1:{proxy.port}",
                             retry=RetryPolicy(deadline=0.3, initial_backoff=0.01, max_backoff=0.02)) as client:
            with pytest.raises(IpsConnectionError) as failed:
                await client.get_company_memberships()
    assert str(failed.value).startswith("getCompanyMembership: the proxy failed: ")
    assert "502" in str(failed.value)
