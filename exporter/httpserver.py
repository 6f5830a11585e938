"""The exporter's own HTTP/1.1 server: asyncio streams for I/O, h11 for the protocol.

The exporter polls IPS on an asyncio loop, and serves /metrics from the same loop so no locks
are needed around the metric state. The standard library's servers are thread-based and have no
defence against slow or idle clients, so this module adds what an exposed exporter needs:
keep-alive with an idle limit, a deadline for the request head (slow-loris), a head size limit,
TLS (optionally with client certificates) and exporter-toolkit basic auth, and it applies the
fair shares of `guard` (connections and handshakes per client, password checks per client).
A connection is read from only once admitted: one that must make room for it is closed first.
h11 does all the HTTP parsing and framing; this module only moves bytes and applies policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import h11

from exporter.errors import forget_traceback
from exporter.guard import AuthThrottle, Connection, ConnectionTable, EveryNSeconds, Phase, client_key
from exporter.memory import release_freed_memory
from exporter.webconfig import REALM, BasicAuth

log = logging.getLogger("exporter.httpserver")

_READ_SIZE = 16 * 1024
# After an error answer: how long and how much of the unread request to discard before closing.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1024 * 1024
# After this many connections ended, their memory is given back to the system, at most once per
# delay: a burst of hundreds costs megabytes, a scrape now and then nothing.
_RELEASE_AFTER = 64
_RELEASE_DELAY = 1.0
# Connections the kernel may queue before they are accepted (the kernel caps it at somaxconn):
# asyncio's 100 drops the SYNs of a burst, and with them a scrape arriving in it.
_BACKLOG = 1024
# Time a connection that is shutting down gets to finish the response it is writing.
_CLOSE_GRACE = 0.5
# A big body is written in slices of this, without copies: asyncio (Python 3.11) copies what a
# write() cannot send at once, so a 47 MB exposition would be copied whole, twice.
_WRITE_SLICE = 1024 * 1024


class ListenError(Exception):
    """The server cannot take its address (in use, not this host's, a name that does not
    resolve); the message names the address and why, in one line."""


def host_port(host: str, port: int) -> str:
    """`host:port` as a listen address is written: `[::1]:80`, and `:80` for every interface."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(exc: OSError) -> str:
    """Why a bind failed, as "address already in use": asyncio wraps the system's reason in
    its own sentence, and a name that does not resolve has a resolver's reason instead."""
    if exc.errno and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno).lower()
    return (exc.strerror or str(exc)).lower()


def _every_interface(port: int) -> socket.socket:
    """One listening socket for IPv4 and IPv6 (IPv6 with V6ONLY off); IPv4 alone where the host
    has no IPv6 (no IPv6 socket, or none that binds)."""
    try:
        return _bound(socket.AF_INET6, "::", port)
    except OSError:
        return _bound(socket.AF_INET, "0.0.0.0", port)  # noqa: S104 - every interface, as asked


def _bound(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Request:
    """One HTTP request, body fully read."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client: tuple[str, int] | None


@dataclass(frozen=True)
class Response:
    """What a handler answers. A tuple body is its parts, sent one after the other without
    being joined; an async iterator body is streamed as it is produced."""

    status: int
    body: bytes | tuple[bytes, ...] | AsyncIterator[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


class _Abort(Exception):
    """The connection cannot go on (timeout, protocol error, peer gone): drop it."""


class _Gate(asyncio.Protocol):
    """The first protocol of every accepted connection: it stops reading at once, so nothing
    is read (and, on a TLS port, no handshake buffer is allocated) before the server admits
    the connection and is ready for it."""

    def __init__(self, admit: Callable[[asyncio.Transport], None]) -> None:
        self._admit = admit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream server's
        transport.pause_reading()
        self._admit(transport)


class HttpServer:
    """Serves `handler` on host:port until `close()`."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        basic_auth: BasicAuth | None = None,
        auth_exempt_paths: frozenset[str] = frozenset(),
        methods: frozenset[str] = frozenset({"GET", "HEAD"}),
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 0,
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_connections: int = 512,
        max_connections_per_client: int = 64,
        max_handshakes_per_client: int = 8,
        also: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._handler = handler
        # the first address, then those of a repeated --web.listen-address; ports as bound
        self._addresses = [(host, port), *also]
        self._ssl_context = ssl_context
        self._basic_auth = basic_auth
        self._auth_exempt_paths = auth_exempt_paths
        self._headers: tuple[tuple[str, str], ...] = ()
        self._methods = methods
        self._allow = ", ".join(sorted(methods))
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        # A TLS connection holds a read buffer of asyncio's (256 KiB) from the start of its
        # handshake: the cap bounds that memory, and `memory` gives it back when they close.
        self.connections = ConnectionTable(
            cap=max_connections,
            per_client=max_connections_per_client,
            handshakes_per_client=max_handshakes_per_client,
        )
        self.auth_throttle = AuthThrottle()
        self._tasks: dict[Connection, asyncio.Task[None]] = {}
        self._servers: list[asyncio.Server] = []
        self._closing = False
        # Hostile clients can make these by the thousand a second: debug lines, and few.
        self._dropped = EveryNSeconds(log)
        self._handshake_failed = EveryNSeconds(log)
        self._ended_since_release = 0
        self._release: asyncio.TimerHandle | None = None

    def configure(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        basic_auth: BasicAuth | None,
        auth_exempt_paths: frozenset[str],
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """TLS and basic auth for the connections accepted from now on (a reloaded web config),
        and headers for every response that does not set them itself (from now on)."""
        self._ssl_context = ssl_context
        self._basic_auth = basic_auth
        self._auth_exempt_paths = auth_exempt_paths
        self._headers = headers

    async def start(self) -> None:
        """Bind every address and start accepting; port 0 picks a free port. An empty host is
        every interface of both address families, on one port, as Go's `:port`. `ListenError`
        if one cannot be bound (then none is)."""
        loop = asyncio.get_running_loop()
        for index, (host, port) in enumerate(self._addresses):
            try:
                if host:
                    server = await loop.create_server(
                        lambda: _Gate(self._admit), host, port, reuse_address=True, backlog=_BACKLOG
                    )
                else:
                    server = await loop.create_server(
                        lambda: _Gate(self._admit), sock=_every_interface(port), backlog=_BACKLOG
                    )
            except OSError as exc:
                for started in self._servers:
                    started.close()
                self._servers.clear()
                raise ListenError(f"cannot listen on {host_port(host, port)}: {_bind_error(exc)}") from None
            self._servers.append(server)
            self._addresses[index] = (host, int(server.sockets[0].getsockname()[1]))
        for address in self._addresses:
            log.info("listening on %s (%s)", host_port(*address), "https" if self._ssl_context is not None else "http")

    @property
    def port(self) -> int:
        """The bound port of the first address (the real one after `start()` with port 0)."""
        return self._addresses[0][1]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every address listened on, with its bound port."""
        return list(self._addresses)

    async def close(self) -> None:
        """Stop accepting, let responses being written finish briefly, drop the rest."""
        self._closing = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            if connection.phase is not Phase.BUSY:
                connection.close()
        pending = set(self._tasks.values())
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=_CLOSE_GRACE)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=_CLOSE_GRACE)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE):
                    await server.wait_closed()
        self._servers.clear()
        self.auth_throttle.close()
        if self._release is not None:
            self._release.cancel()

    def _release_memory(self) -> None:
        """Give the memory of connections that ended back to the system (see `memory`)."""
        self._release = None
        self._ended_since_release = 0
        release_freed_memory()

    # -- connection handling -------------------------------------------------------------

    def _admit(self, transport: asyncio.Transport) -> None:
        """A new connection: make room for it (see `guard`), or drop it at once."""
        peer = _peer(transport)
        phase = Phase.HANDSHAKE if self._ssl_context is not None else Phase.WAITING
        task: asyncio.Task[None] | None = None

        def close() -> None:
            transport.abort()
            if task is not None:
                task.cancel()

        client = client_key(peer[0] if peer else "")
        connection = None if self._closing else self.connections.admit(client, phase, close)
        if connection is None:
            log.debug("connection from %s refused: %d connections open, none idle",
                      _fmt_client(peer), len(self.connections))
            transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._connection(transport, connection, peer))
        self._tasks[connection] = task

        def forget(_: asyncio.Task[None]) -> None:  # also when cancelled before it ever ran
            self.connections.remove(connection)
            del self._tasks[connection]
            self._ended_since_release += 1
            if self._ended_since_release >= _RELEASE_AFTER and self._release is None:
                self._release = asyncio.get_running_loop().call_later(_RELEASE_DELAY, self._release_memory)

        task.add_done_callback(forget)

    async def _connection(
        self, transport: asyncio.Transport, connection: Connection, peer: tuple[str, int] | None
    ) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            deadline = asyncio.get_running_loop().time() + self._header_timeout
            reader, writer = await self._streams(transport, peer, deadline)
            connection.phase = Phase.WAITING
            await self._serve_connection(reader, writer, connection, peer, deadline)
        except _Abort as exc:  # explained where it was raised, if it needs to be
            forget_traceback(exc)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError too: a corrupt record
            self._dropped.debug("connection from %s dropped: %s", _fmt_client(peer), exc or type(exc).__name__)
            forget_traceback(exc)
        except asyncio.CancelledError:
            # Only close() and making room cancel; asyncio would log a cancelled task.
            pass
        except Exception as exc:
            log.exception("unexpected error on an HTTP connection")
            forget_traceback(exc)
        finally:
            if writer is not None:
                await _shut(writer)
            transport.abort()

    async def _streams(
        self, transport: asyncio.Transport, peer: tuple[str, int] | None, deadline: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Reader and writer over the connection, TLS established first on a TLS port."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        if self._ssl_context is None:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            transport.resume_reading()
            return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            async with asyncio.timeout_at(deadline):
                tls = await loop.start_tls(
                    transport,
                    protocol,
                    self._ssl_context,
                    server_side=True,
                    ssl_handshake_timeout=max(deadline - loop.time(), 0.1),
                )
        except (OSError, TimeoutError) as exc:
            self._handshake_failed.debug("TLS handshake with %s failed: %s", _fmt_client(peer), exc or "timeout")
            forget_traceback(exc)
            raise _Abort from None
        if tls is None:  # the transport closed meanwhile
            raise _Abort
        protocol.connection_made(tls)
        return reader, asyncio.StreamWriter(tls, protocol, reader, loop)

    async def _serve_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: Connection,
        client: tuple[str, int] | None,
        deadline: float,
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header_bytes)
        first = True
        while not self._closing:
            request = await self._receive_head(conn, reader, writer, deadline if first else None)
            if request is None:
                return
            first = False
            connection.phase = Phase.BUSY
            await self._respond(conn, reader, writer, request, client)
            connection.phase = Phase.WAITING
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                return

    async def _receive_head(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float | None,
    ) -> h11.Request | None:
        """The next request head, or None when the connection should close quietly.

        `deadline` None means a kept-alive connection: it may idle for idle_timeout, then the
        head must be complete header_timeout after its first bytes.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, reader, writer, exc.error_status_hint, str(exc))
                return None
            if isinstance(event, h11.Request):
                if _head_size(event) > self._max_header_bytes:
                    await self._send_error(conn, reader, writer, 431, "request head too large")
                    return None
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if deadline is None:
                if conn.trailing_data[0]:
                    deadline = loop.time() + self._header_timeout
                else:
                    try:
                        async with asyncio.timeout(self._idle_timeout):
                            data = await reader.read(_READ_SIZE)
                    except TimeoutError:
                        return None
                    deadline = loop.time() + self._header_timeout
                    conn.receive_data(data)
                    continue
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                if conn.trailing_data[0]:
                    await self._send_error(conn, reader, writer, 408, "request head not received in time")
                return None
            conn.receive_data(data)

    async def _respond(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        event: h11.Request,
        client: tuple[str, int] | None,
    ) -> None:
        method = event.method.decode("ascii")
        head = method == "HEAD"
        path, query = _split_target(event.target.decode("ascii"))
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            name = raw_name.decode("ascii")
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value

        length = headers.get("content-length")
        if length is not None and int(length) > self._max_body_bytes:
            # h11 has checked the value is digits. Reading it anyway would be the attack.
            await self._send_error(conn, reader, writer, 413, "request body too large", head_only=head)
            return
        body = await self._read_body(conn, reader, writer, head_only=head)
        if body is None:
            return

        refusal = None
        if self._basic_auth is not None and path not in self._auth_exempt_paths:
            refusal = await self._authenticate(self._basic_auth, headers.get("authorization"), client)
        if refusal is not None:
            response = refusal
        elif method not in self._methods:
            response = Response(405, b"Method Not Allowed\n", headers=(("allow", self._allow),))
        else:
            request = Request(method, path, query, headers, body, client)
            try:
                response = await self._handler(request)
            except Exception:
                log.exception("handler failed for %s %s", method, path)
                response = Response(500, b"Internal Server Error\n")
        await self._send_response(conn, writer, response, head_only=head)

    async def _authenticate(
        self, basic_auth: BasicAuth, authorization: str | None, client: tuple[str, int] | None
    ) -> Response | None:
        """None if the request may go on, else the answer: 401, or 429 when the client has
        used its share of password checks (see `guard`)."""
        unauthorized = Response(401, b"Unauthorized\n", headers=(("www-authenticate", f'Basic realm="{REALM}"'),))
        credentials = basic_auth.credentials(authorization)
        if credentials is None:
            return unauthorized  # nothing to check: costs nothing
        key = client_key(client[0] if client else "")
        wait = self.auth_throttle.retry_after(key)
        if wait is None:
            if basic_auth.remembered(credentials):
                return None
            self.auth_throttle.spend(key)
            verdict = await self.auth_throttle.run(lambda: basic_auth.verify(credentials))
            if verdict is not None:
                return None if verdict else unauthorized
            wait = 1
        log.debug("answering 429 to %s: too many password checks", _fmt_client(client))
        return Response(429, b"Too Many Requests\n", headers=(("retry-after", str(wait)),))

    async def _read_body(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        head_only: bool,
    ) -> bytes | None:
        """The request body, or None after an error answer (the connection then closes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._header_timeout
        if conn.they_are_waiting_for_100_continue:
            await self._write(writer, conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, reader, writer, exc.error_status_hint, str(exc), head_only=head_only)
                return None
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body_bytes:
                    await self._send_error(conn, reader, writer, 413, "request body too large", head_only=head_only)
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif event is h11.NEED_DATA:
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(_READ_SIZE)
                except TimeoutError:
                    await self._send_error(
                        conn,
                        reader,
                        writer,
                        408,
                        "request body not received in time",
                        head_only=head_only,
                    )
                    return None
                conn.receive_data(data)
            else:  # ConnectionClosed mid-body
                return None

    async def _send_response(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: Response,
        *,
        head_only: bool,
    ) -> None:
        body = (response.body,) if isinstance(response.body, bytes) else response.body
        names = {name.lower() for name, _ in response.headers}
        headers: list[tuple[str, str]] = []
        if "content-type" not in names:
            headers.append(("content-type", response.content_type))
        headers.append(("date", email.utils.formatdate(usegmt=True)))
        if isinstance(body, tuple):
            # The length of a bytes body is known; a handler's own framing headers would only
            # be a chance to get it wrong.
            headers.extend(
                (n, v) for n, v in response.headers if n.lower() not in ("content-length", "transfer-encoding")
            )
            headers.append(("content-length", str(sum(len(part) for part in body))))
        else:
            headers.extend(response.headers)
        headers.extend((name, value) for name, value in self._headers if name.lower() not in names)
        if self._closing:
            headers.append(("connection", "close"))
        try:
            await self._write(writer, conn.send(h11.Response(status_code=response.status, headers=headers)))
            if isinstance(body, tuple):
                for part in body if not head_only else ():
                    view = memoryview(part)
                    for start in range(0, len(part), _WRITE_SLICE):
                        piece = h11.Data(data=view[start : start + _WRITE_SLICE])  # type: ignore[arg-type]  # h11 accepts any bytes-like
                        for data in conn.send_with_data_passthrough(piece) or []:
                            await self._write(writer, data)
            elif head_only:
                await _close_iterator(body)
            else:
                await self._stream(conn, writer, body)
            await self._write(writer, conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            log.error("cannot send response %d: %s", response.status, exc)
            raise _Abort from exc

    async def _stream(self, conn: h11.Connection, writer: asyncio.StreamWriter, body: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in body:
                if chunk:
                    await self._write(writer, conn.send(h11.Data(data=chunk)))
        except (_Abort, h11.LocalProtocolError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # The status line is gone already: all that can be said is to cut the response.
            log.exception("response body failed while streaming")
            raise _Abort from exc
        finally:
            await _close_iterator(body)

    async def _send_error(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        reason: str,
        *,
        head_only: bool = False,
    ) -> None:
        """Answer a broken request with `status` and make the connection close."""
        log.debug("answering %d: %s", status, reason)
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{_PHRASES.get(status, 'Error')}\n".encode()
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("connection", "close"),
            *self._headers,
        ]
        try:
            await self._write(writer, conn.send(h11.Response(status_code=status, headers=headers)))
            if not head_only:
                await self._write(writer, conn.send(h11.Data(data=body)))
            await self._write(writer, conn.send(h11.EndOfMessage()))
        except (h11.LocalProtocolError, _Abort, ConnectionError):
            return
        # Closing with unread request bytes makes the kernel send a reset, which can destroy
        # the answer before the client reads it: signal the end, then discard what is in flight.
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
        discarded = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(min(_LINGER_SECONDS, self._header_timeout)):
                while discarded < _LINGER_BYTES:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        break
                    discarded += len(data)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes | memoryview | None) -> None:
        if not data:
            return
        writer.write(data)
        try:
            # A client that stops reading would otherwise hold the connection for ever.
            async with asyncio.timeout(self._idle_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            raise _Abort from exc


_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


async def _shut(writer: asyncio.StreamWriter) -> None:
    """Close politely so buffered response bytes go out, but never wait long for it."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (Exception, asyncio.CancelledError) as exc:  # cancelled too: this ends the connection's task
        # The exception that ended the connection (a reset, say) is also kept by the stream:
        # without its frames, none of the connection's objects waits for a garbage collection.
        forget_traceback(exc)
    writer.transport.abort()


async def _close_iterator(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _head_size(event: h11.Request) -> int:
    # Roughly the bytes on the wire. h11's own limit only fires while a head is incomplete,
    # so a large head that arrives in one read would otherwise slip through.
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers:
        size += len(name) + len(value) + 4
    return size


def _split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    if target.startswith("/"):
        raw_path, _, raw_query = target.partition("?")
    else:  # absolute-form (proxies) or "*"
        parts = urllib.parse.urlsplit(target)
        raw_path, raw_query = parts.path or "/", parts.query
    return (
        urllib.parse.unquote(raw_path),
        urllib.parse.parse_qs(raw_query, keep_blank_values=True),
    )



def _peer(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return None


def _fmt_client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown client"
