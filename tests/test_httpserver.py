"""Behaviour of the exporter's HTTP server over real sockets: routing, limits, timeouts, auth."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import bcrypt
import httpx
import pytest

from exporter.config import split_listen_address
from exporter.guard import Phase
from exporter.httpserver import HttpServer, Request, Response
from exporter.webconfig import BasicAuth

pytestmark = pytest.mark.timeout(30)


async def toy_handler(request: Request) -> Response:
    if request.path == "/":
        return Response(200, b"home\n", headers=(("x-toy", "1"),))
    if request.path == "/echo":
        query = ",".join(f"{k}={'|'.join(v)}" for k, v in sorted(request.query.items()))
        text = f"{request.method} {query} ua={request.headers.get('user-agent', '')}\n"
        return Response(200, text.encode() + request.body)
    if request.path == "/healthz":
        return Response(200, b"ok\n")
    if request.path == "/boom":
        raise RuntimeError("the handler broke")
    if request.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part{i}\n".encode()

        return Response(200, chunks())
    if request.path == "/client":
        assert request.client is not None
        return Response(200, request.client[0].encode())
    return Response(404, b"not found\n")


async def started(**kwargs: object) -> HttpServer:
    return await started_on("127.0.0.1", 0, **kwargs)


async def started_on(host: str, port: int, **kwargs: object) -> HttpServer:
    server = HttpServer(toy_handler, host, port, **kwargs)  # type: ignore[arg-type]
    await server.start()
    return server


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send `data`, return everything the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = await started()
    yield srv
    await srv.close()


async def test_get_head_and_404(server: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        get = await client.get("/")
        head = await client.head("/")
        missing = await client.get("/nope")
        echo = await client.get("/echo?b=2&a=1&a=x&empty=", headers={"user-agent": "t/1"})
    assert get.status_code == 200
    assert get.text == "home\n"
    assert get.headers["content-type"] == "text/plain; charset=utf-8"
    assert get.headers["x-toy"] == "1"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == "5"
    assert head.headers["x-toy"] == "1"
    assert missing.status_code == 404
    assert echo.text == "GET a=1|x,b=2,empty= ua=t/1\n"


async def test_head_sends_no_body_bytes_on_the_wire(server: HttpServer) -> None:
    data = await raw_exchange(server.port, b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 5" in head.lower()
    assert rest == b""


async def test_path_is_decoded_and_client_is_known(server: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("/%65cho")).text.startswith("GET ")
        assert (await client.get("/client")).text == "127.0.0.1"


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
async def test_methods_not_allowed(server: HttpServer, method: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        response = await client.request(method, "/")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_post_allowed_with_body_limit() -> None:
    srv = await started(methods=frozenset({"GET", "POST"}), max_body_bytes=10)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as client:
            small = await client.post("/echo", content=b"12345")
            large = await client.post("/echo", content=b"x" * 100)
            head = await client.head("/")
        assert small.status_code == 200
        assert small.content.endswith(b"\n12345")
        assert large.status_code == 413
        assert head.status_code == 405
        assert head.headers["allow"] == "GET, POST"
        # A chunked body has no length up front: it is cut off when it grows past the limit.
        chunked = await raw_exchange(
            srv.port,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
        )
        assert chunked.startswith(b"HTTP/1.1 413")
    finally:
        await srv.close()


async def test_oversized_head_gets_431(server: HttpServer) -> None:
    big = b"a" * (64 * 1024)
    data = await raw_exchange(server.port, b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + big + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 431")
    assert b"connection: close" in data.lower()


async def test_head_just_over_the_limit_in_one_piece_gets_431() -> None:
    # Arrives in one read and is complete, so h11's incomplete-event limit never fires.
    srv = await started(max_header_bytes=2048)
    try:
        data = await raw_exchange(srv.port, b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2100 + b"\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 431")
        ok = await raw_exchange(srv.port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")
    finally:
        await srv.close()


async def test_malformed_request_gets_400(server: HttpServer) -> None:
    data = await raw_exchange(server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")


async def test_slow_loris_head_is_cut_off() -> None:
    srv = await started(header_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /metr")
        await writer.drain()
        begin = time.monotonic()
        async with asyncio.timeout(10):
            data = await reader.read(-1)
        elapsed = time.monotonic() - begin
        writer.close()
        assert data.startswith(b"HTTP/1.1 408")
        assert elapsed >= 0.4  # the header timeout, not earlier; the 10 s bound is the test's own

        # A connection that says nothing at all is dropped on the same deadline.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        begin = time.monotonic()
        async with asyncio.timeout(10):
            assert await reader.read(-1) == b""
        assert time.monotonic() - begin >= 0.4
        writer.close()
    finally:
        await srv.close()


async def test_slow_loris_dripping_bytes_is_cut_off() -> None:
    # Each byte resets no timer: the head as a whole has header_timeout to arrive.
    srv = await started(header_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        received = bytearray()

        async def collect() -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(1024):
                    received.extend(chunk)

        collector = asyncio.create_task(collect())
        begin = time.monotonic()
        for byte in b"GET / HTTP/1.1\r\nhost: x\r\n" * 10:
            if collector.done() or received:
                break
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            await collector
        closed_at = time.monotonic() - begin
        writer.close()
        data = bytes(received)
        assert data.startswith(b"HTTP/1.1 408")
        # The drip would take 13 s: cut off by the 0.5 s header timeout, not by its end.
        assert closed_at < 10
    finally:
        await srv.close()


async def test_keep_alive_then_idle_close() -> None:
    srv = await started(idle_timeout=0.5, header_timeout=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b"home\n"
        begin = time.monotonic()
        async with asyncio.timeout(4.5):  # the idle timeout (0.5 s), well before the header timeout (5 s)
            assert await reader.read(-1) == b""
        assert time.monotonic() - begin >= 0.4
        writer.close()
    finally:
        await srv.close()


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /nope HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    statuses = []
    for _ in range(3):
        head, _ = await read_response(reader)
        statuses.append(head.split(b" ")[1])
    assert statuses == [b"200", b"404", b"200"]
    assert await reader.read(-1) == b""
    writer.close()


async def test_many_concurrent_connections() -> None:
    # One client's share is 64 connections by default; this is about the server's concurrency.
    server = await started(max_connections_per_client=256)

    async def one(i: int) -> bytes:
        return await raw_exchange(
            server.port, f"GET /echo?i={i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
        )

    try:
        results = await asyncio.gather(*(one(i) for i in range(200)))
    finally:
        await server.close()
    for i, data in enumerate(results):
        assert data.startswith(b"HTTP/1.1 200")
        assert data.endswith(f"GET i={i} ua=\n".encode())


async def test_a_newcomer_at_the_cap_closes_the_oldest_idle_connection() -> None:
    srv = await started(max_connections=3)
    try:
        held = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await read_response(reader)  # served, and kept alive
            held.append((reader, writer))
        # Served at once, not queued until a held connection's idle timeout (30 s) frees a slot.
        ok = await raw_exchange(srv.port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", timeout=2)
        assert ok.startswith(b"HTTP/1.1 200")
        async with asyncio.timeout(2):
            assert await held[0][0].read() == b""  # the oldest idle one made room
        for reader, writer in held[1:]:
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            status, _ = await read_response(reader)
            assert status.startswith(b"HTTP/1.1 200")
        assert (len(srv.connections), srv.connections.evicted, srv.connections.refused) == (2, 1, 0)
        for _, writer in held:
            writer.close()
    finally:
        await srv.close()


async def test_connections_displaced_before_they_ever_ran_leave_nothing_behind() -> None:
    srv = await started(max_connections_per_client=3)
    try:
        opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", srv.port) for _ in range(100)))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(srv.connections) <= 3 and len(srv._tasks) <= 3:
                break
        assert len(srv.connections) == len(srv._tasks) == 3
        assert srv.connections.evicted == 97
        for _, writer in opened:
            writer.close()
    finally:
        await srv.close()
    assert len(srv.connections) == len(srv._tasks) == 0


async def test_a_newcomer_is_refused_only_when_every_connection_is_busy() -> None:
    release = asyncio.Event()

    async def blocking(request: Request) -> Response:
        await release.wait()
        return Response(200, b"done\n")

    srv = HttpServer(blocking, "127.0.0.1", 0, max_connections=2)
    await srv.start()
    try:
        busy = [asyncio.create_task(raw_exchange(srv.port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"))
                for _ in range(2)]
        while sum(c.phase is Phase.BUSY for c in srv.connections) < 2:
            await asyncio.sleep(0.01)
        async with asyncio.timeout(2):
            refused = await raw_exchange(srv.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert refused == b""
        assert srv.connections.refused == 1
        release.set()
        for answer in await asyncio.gather(*busy):
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"done\n")
    finally:
        await srv.close()


async def test_handler_exception_gives_500_and_server_keeps_serving(
    server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="exporter.httpserver")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        boom = await client.get("/boom")
        after = await client.get("/")
    assert boom.status_code == 500
    assert boom.text == "Internal Server Error\n"
    assert "the handler broke" not in boom.text
    assert after.status_code == 200
    records = [r for r in caplog.records if r.name == "exporter.httpserver"]
    assert any("/boom" in r.getMessage() and r.exc_info for r in records)


async def test_streamed_body_is_chunked(server: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        get = await client.get("/stream")
        head = await client.head("/stream")
    assert get.text == "part0\npart1\npart2\n"
    assert get.headers["transfer-encoding"] == "chunked"
    assert head.content == b""
    assert head.headers["transfer-encoding"] == "chunked"


async def test_close_is_prompt_with_open_connections() -> None:
    srv = await started()
    conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(5)]
    conns[0][1].write(b"GET /me")  # one mid-request
    await asyncio.sleep(0.05)
    async with asyncio.timeout(5):  # not held until the header (10 s) or idle (30 s) timeout
        await srv.close()
    for reader, writer in conns:
        async with asyncio.timeout(2):
            with contextlib.suppress(ConnectionError):
                await reader.read(-1)
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", srv.port)


# -- basic auth ---------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
async def auth_server() -> AsyncIterator[HttpServer]:
    auth = BasicAuth({"alice": bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=4))})
    srv = await started(basic_auth=auth, auth_exempt_paths=frozenset({"/healthz"}))
    yield srv
    await srv.close()


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (basic("alice", "wonderland"), 200),
        (basic("alice", "wrong"), 401),
        (basic("bob", "wonderland"), 401),
        (None, 401),
        ("Bearer abc", 401),
        ("Basic not-base64!", 401),
    ],
)
async def test_basic_auth(auth_server: HttpServer, authorization: str | None, status: int) -> None:
    headers = {"authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{auth_server.port}") as client:
        response = await client.get("/", headers=headers)
        head = await client.head("/", headers=headers)
    assert response.status_code == status
    assert head.status_code == status
    assert head.content == b""
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="scene7-exporter"'
        assert "home" not in response.text


async def test_basic_auth_exempt_path(auth_server: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{auth_server.port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        # Same decoded path, same decision: no way around auth by spelling.
        assert (await client.get("/%68ealthz")).status_code == 200
        assert (await client.get("/healthz/")).status_code == 401
        assert (await client.get("/nope")).status_code == 401


async def test_basic_auth_comes_before_method_check(auth_server: HttpServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{auth_server.port}") as client:
        assert (await client.post("/")).status_code == 401
        authed = await client.post("/", headers={"authorization": basic("alice", "wonderland")})
        assert authed.status_code == 405


async def test_expect_100_continue() -> None:
    srv = await started(methods=frozenset({"POST"}), max_body_bytes=10)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"hello")
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
        assert body.endswith(b"\nhello")
        # Too large: refused without inviting the body.
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\nexpect: 100-continue\r\n\r\n")
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()
    finally:
        await srv.close()


async def test_a_body_of_several_megabytes_arrives_whole_on_a_kept_alive_connection() -> None:
    body = bytes(range(256)) * 20_000 + b"tail"  # 5 MB, written in slices without copies

    async def handler(request: Request) -> Response:
        return Response(200, body, "application/octet-stream")

    server = HttpServer(handler, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                response = await client.get(f"http://127.0.0.1:{server.port}/x")
                assert response.content == body
            head = await client.head(f"http://127.0.0.1:{server.port}/x")
            assert head.headers["content-length"] == str(len(body)) and head.content == b""
    finally:
        await server.close()


async def answers_on(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        head, _ = await read_response(reader)
        return head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


@pytest.mark.parametrize(("address", "ipv4", "ipv6"), [
    (":{port}", True, True),  # every interface of both families, as Go's `:port`
    ("0.0.0.0:{port}", True, False),
    ("[::]:{port}", False, True),
])
async def test_listen_address_families(address: str, ipv4: bool, ipv6: bool) -> None:
    host, port = split_listen_address(address.format(port=0))
    srv = await started_on(host, port)
    try:
        assert await answers_on("127.0.0.1", srv.port) is ipv4
        assert await answers_on("::1", srv.port) is ipv6
    finally:
        await srv.close()
