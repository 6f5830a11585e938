#!/usr/bin/env python3
"""Attackers on the exporter's own HTTPS port: the attack phase of benchmarks/soak.py.

soak.py starts this file as one child process and switches each kind of attack on and off by
writing to its stdin. All the attackers share one asyncio loop in this one process, niced
(`--nice`), so that their CPU does not come out of the soak script's own scrapers (a real
attacker brings its own CPU). Every connection comes from one of the `--sources` addresses,
127.0.0.2 and up (Linux routes all of 127.0.0.0/8 to lo), never from 127.0.0.1, which the
legitimate scrapers use: a server that limits per client can tell them apart.

The kinds, each at the size the soak issue names:

- `idle`: 600 connections held open without sending a byte of HTTP, half of them bare TCP (no
  TLS handshake started), half after a completed TLS handshake. Each one the server closes is
  opened again after 0.2-1 s.
- `slowloris`: 300 connections that complete the TLS handshake, then drip a request head that
  never ends, one byte every 2-5 s. Reopened when the server closes them.
- `handshake`: bursts of 500 TCP connections that never finish a TLS handshake. 80% send
  nothing, 20% the first part of a real ClientHello. Each is held until the server closes it or
  15 s pass; the next burst starts 1-3 s after the last connection of the previous one ends.
- `wrong_password`: 64 clients sending `GET /metrics` with the right user name and a wrong
  password (a new one each time, so no cache can help), keep-alive while the server allows it,
  each as fast as it is answered but at most 20 requests a second. A 429's Retry-After is
  recorded and not obeyed, as an attacker would not.
- `corrupt_tls`: 8 workers, each completing a TLS handshake and then writing garbage on the raw
  socket under the TLS session: random bytes, a well-formed application-data record whose MAC
  cannot verify, or such a record after the start of a genuine request. Then they wait up to
  12 s for the server to close, and start again after 0.2 s.

Protocol: one command a line on stdin, `on KIND`, `off KIND`, `report` (one JSON line on stdout
with the counters of every kind) or `quit` (everything closed, a last report, exit 0). The end
of stdin is a `quit`: the attackers never outlive soak.py. Log lines go to stderr, and so do the
stacks of every thread on SIGUSR1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import faulthandler
import itertools
import json
import os
import random
import resource
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, ClassVar

KINDS = ("idle", "slowloris", "handshake", "wrong_password", "corrupt_tls")

CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
IDLE_CONNECTIONS = 600
IDLE_RAMP = 0.005  # seconds between opening two of them: 600 in 3 s
SLOWLORIS_CONNECTIONS = 300
SLOWLORIS_DRIP = (2.0, 5.0)  # seconds between two bytes
BURST_CONNECTIONS = 500
BURST_PARTIAL_SHARE = 0.2
BURST_HOLD = 15.0
FLOOD_CLIENTS = 64
FLOOD_MIN_GAP = 0.05  # at most 20 requests a second per client
FLOOD_ANSWER_TIMEOUT = 30.0
CORRUPT_WORKERS = 8
CORRUPT_HOLD = 12.0
CORRUPT_PAUSE = 0.2
REOPEN_PAUSE = (0.2, 1.0)
FAILED_OPEN_PAUSE = (0.5, 1.5)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] attacks: {message}", file=sys.stderr, flush=True)


class ServerClosed(Exception):
    """The server ended the connection (end of stream) before we were done."""


def failure(exc: BaseException) -> str:
    """A short name for why a connection attempt or a connection ended."""
    if isinstance(exc, ServerClosed | asyncio.IncompleteReadError):
        return "eof"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, ssl.SSLError):
        return f"tls {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(ordered[len(ordered) // 2], 3),
            "p99": round(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)], 3), "max": round(ordered[-1], 3)}


class Stats:
    """What one kind of attack did: counters by event, connections open now and at most, and
    how long connections lived before the server closed them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.open_now = 0
        self.open_max = 0
        self.held: dict[str, list[float]] = {}
        self.answers: list[float] = []
        self.errors: list[str] = []
        self.switched_on = 0
        self.on_seconds = 0.0
        self.on_since: float | None = None

    def count(self, event: str, n: int = 1) -> None:
        self.counts[event] += n

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        self.counts["connections opened"] += 1
        self.open_now += 1
        self.open_max = max(self.open_max, self.open_now)
        try:
            yield
        except asyncio.CancelledError:
            self.counts["still open when switched off"] += 1
            raise
        finally:
            self.open_now -= 1

    def held_for(self, label: str, seconds: float) -> None:
        self.held.setdefault(label, []).append(seconds)

    def report(self) -> dict[str, Any]:
        on = self.on_seconds + (time.monotonic() - self.on_since if self.on_since is not None else 0.0)
        result: dict[str, Any] = {
            "switched_on": self.switched_on, "on_seconds": round(on, 1),
            "open_now": self.open_now, "open_max": self.open_max,
            "counts": dict(sorted(self.counts.items())),
            "held_until_server_closed_seconds": {k: summary(v) for k, v in sorted(self.held.items())},
        }
        if self.answers:
            result["answer_seconds"] = summary(self.answers)
        if self.errors:
            result["attacker_errors"] = self.errors
        return result


class Target:
    """Where to attack from and to, and what every attack needs to connect."""

    def __init__(self, host: str, port: int, sources: list[str], user: str, seed: int) -> None:
        self.host, self.port, self.user = host, port, user
        self.rng = random.Random(seed)
        self._sources = itertools.cycle(sources)
        # Attackers do not care whom they talk to: no verification.
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.client_hello = self._client_hello()

    def _client_hello(self) -> bytes:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_hostname=self.host)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        return outgoing.read()

    async def tcp(self) -> socket.socket:
        """A connected non-blocking socket from the next source address."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The port is chosen at connect(), per destination: 28,000 per source and destination.
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((next(self._sources), 0))
            sock.setblocking(False)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def tls(self, sock: socket.socket) -> TlsStream:
        """A TLS session over `sock`, its handshake done (HANDSHAKE_TIMEOUT)."""
        stream = TlsStream(sock, self.context, self.host)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await stream.handshake()
        return stream


class TlsStream:
    """TLS driven by hand over a raw non-blocking socket, which stays ours to write on (the
    garbage of `corrupt_tls`). No asyncio transports in this process: closing a socket that a
    transport still maps makes asyncio refuse the next socket given the same fd number."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, host: str) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        self._buffer = bytearray()
        self._loop = asyncio.get_running_loop()

    async def _flush(self) -> None:
        pending = self.outgoing.read()
        if pending:
            await self._loop.sock_sendall(self.sock, pending)

    async def _receive(self) -> None:
        data = await self._loop.sock_recv(self.sock, 65536)
        if not data:
            raise ServerClosed
        self.incoming.write(data)

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._receive()
        await self._flush()

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def send_raw(self, data: bytes) -> None:
        """Bytes on the socket, outside of TLS."""
        await self._loop.sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        """Decrypted bytes; b"" when the server closed (with or without close_notify)."""
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    await self._receive()
                except ServerClosed:
                    return b""
                continue
            except ssl.SSLZeroReturnError:
                return b""
            await self._flush()  # what reading produced (a TLS 1.3 key update, say)
            return data  # b"" after the server's close_notify

    async def read_until(self, separator: bytes) -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            data = await self.recv()
            if not data:
                raise ServerClosed
            self._buffer += data
        head = bytes(self._buffer[:end + len(separator)])
        del self._buffer[:end + len(separator)]
        return head

    async def read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = await self.recv()
            if not data:
                raise ServerClosed
            self._buffer += data
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        return body

    async def until_closed(self) -> str:
        """Read and drop until the server closes: how it did."""
        try:
            while await self.recv():
                pass
        except OSError as exc:
            return failure(exc)
        return "eof"

    def close(self) -> None:
        self.sock.close()


async def until_closed(sock: socket.socket, limit: float | None) -> str | None:
    """Read and drop what the server sends until it closes: how it closed ("eof", "reset", ...)
    or None if it still holds the connection after `limit` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit):
            while await loop.sock_recv(sock, 4096):
                pass
    except TimeoutError:
        return None
    except OSError as exc:
        return failure(exc)
    return "eof"


class Attack:
    kind: ClassVar[str]

    def __init__(self, target: Target) -> None:
        self.target = target
        self.rng = target.rng
        self.stats = Stats()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def on(self) -> bool:
        return self.stats.on_since is not None

    def start(self) -> None:
        if self.on:
            return
        self.stats.switched_on += 1
        self.stats.on_since = time.monotonic()
        self.spawn(self.run())

    async def stop(self) -> None:
        if self.stats.on_since is None:
            return
        self.stats.on_seconds += time.monotonic() - self.stats.on_since
        self.stats.on_since = None
        # Cancelled again until gone: Python 3.11's asyncio.timeout() can turn a cancellation
        # that meets its own deadline into a TimeoutError, which a loop would take for a quiet
        # server (every loop also checks `on`, so such a task ends at its next turn).
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=2.0)
            if pending:
                log(f"{self.kind}: {len(pending)} tasks still stopping")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of the attacker, not of the server: counted, shown in the report
            self.stats.count(f"attacker error {type(exc).__name__}")
            if len(self.stats.errors) < 10:
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        raise NotImplementedError

    async def pause(self, bounds: tuple[float, float]) -> None:
        await asyncio.sleep(self.rng.uniform(*bounds))

    async def open_tls(self, label: str = "") -> TlsStream | None:
        """A connection after its TLS handshake; None (counted, after a pause) if it failed."""
        try:
            sock = await self.target.tcp()
        except OSError as exc:
            self.stats.count(f"{label}connect failed: {failure(exc)}")
            await self.pause(FAILED_OPEN_PAUSE)
            return None
        try:
            return await self.target.tls(sock)
        except (OSError, ServerClosed) as exc:
            sock.close()
            self.stats.count(f"{label}tls handshake failed: {failure(exc)}")
            await self.pause(FAILED_OPEN_PAUSE)
            return None
        except BaseException:
            sock.close()
            raise


class Idle(Attack):
    kind = "idle"

    async def run(self) -> None:
        for i in range(IDLE_CONNECTIONS):
            self.spawn(self.slot(tls=i % 2 == 1))
            await asyncio.sleep(IDLE_RAMP)

    async def slot(self, *, tls: bool) -> None:
        label = "tls" if tls else "tcp"
        while self.on:
            stream = None
            if tls:
                stream = await self.open_tls()
                if stream is None:
                    continue
                sock = stream.sock
            else:
                try:
                    sock = await self.target.tcp()
                except OSError as exc:
                    self.stats.count(f"tcp connect failed: {failure(exc)}")
                    await self.pause(FAILED_OPEN_PAUSE)
                    continue
            with self.stats.connection(), contextlib.closing(sock):
                started = time.monotonic()
                how = await stream.until_closed() if stream else await until_closed(sock, None) or "eof"
                self.stats.count(f"{label} closed by server: {how}")
                self.stats.held_for(label, time.monotonic() - started)
            await self.pause(REOPEN_PAUSE)


class Slowloris(Attack):
    kind = "slowloris"

    @staticmethod
    def head() -> Iterator[int]:
        """A request head that never ends."""
        yield from b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
        for i in itertools.count():
            yield from b"X-Drip-%d: %d\r\n" % (i, i)

    async def run(self) -> None:
        for _ in range(SLOWLORIS_CONNECTIONS):
            self.spawn(self.slot())
            await asyncio.sleep(IDLE_RAMP)

    async def slot(self) -> None:
        while self.on:
            stream = await self.open_tls()
            if stream is None:
                continue
            with self.stats.connection(), contextlib.closing(stream.sock):
                started = time.monotonic()
                how = await self.drip(stream)
                self.stats.count(f"closed by server: {how}")
                self.stats.held_for("dripping", time.monotonic() - started)
            await self.pause(REOPEN_PAUSE)

    async def drip(self, stream: TlsStream) -> str:
        # One read stays pending across the drips: a read cancelled by a timeout can lose bytes it
        # already took from the socket, and with them the TLS record stream.
        reading: asyncio.Task[bytes] | None = None
        try:
            for byte in self.head():
                if not self.on:
                    return "stopped"
                try:
                    await stream.send(bytes((byte,)))
                except OSError as exc:
                    return failure(exc)
                self.stats.count("bytes dripped")
                if reading is None:
                    reading = asyncio.create_task(stream.recv())
                done, _ = await asyncio.wait({reading}, timeout=self.rng.uniform(*SLOWLORIS_DRIP))
                if not done:
                    continue
                try:
                    data = reading.result()
                except OSError as exc:
                    return failure(exc)
                reading = None
                if not data:
                    return "eof"
                if data.startswith(b"HTTP/1."):
                    self.stats.count(f"answered {data[9:12].decode('ascii', 'replace')}")
            return "eof"  # not reached: the head never ends
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await reading


class Handshake(Attack):
    kind = "handshake"

    async def run(self) -> None:
        while self.on:
            self.stats.count("bursts")
            results = await asyncio.gather(*(self.one() for _ in range(BURST_CONNECTIONS)), return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    self.stats.count(f"attacker error {type(result).__name__}")
            await self.pause((1.0, 3.0))

    async def one(self) -> None:
        try:
            sock = await self.target.tcp()
        except OSError as exc:
            self.stats.count(f"connect failed: {failure(exc)}")
            return
        with self.stats.connection(), contextlib.closing(sock):
            label = "silent"
            hello = self.target.client_hello
            if self.rng.random() < BURST_PARTIAL_SHARE:
                label = "partial hello"
                try:
                    await asyncio.get_running_loop().sock_sendall(sock, hello[:self.rng.randint(1, len(hello) - 1)])
                except OSError as exc:
                    self.stats.count(f"{label}: closed by server before it was sent: {failure(exc)}")
                    return
            started = time.monotonic()
            how = await until_closed(sock, BURST_HOLD)
            if how is None:
                self.stats.count(f"{label}: still open after {BURST_HOLD:g} s")
            else:
                self.stats.count(f"{label}: closed by server: {how}")
                self.stats.held_for(label, time.monotonic() - started)


class WrongPassword(Attack):
    kind = "wrong_password"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.retry_after: Counter[str] = Counter()

    async def run(self) -> None:
        for _ in range(FLOOD_CLIENTS):
            self.spawn(self.client())
            await asyncio.sleep(0.01)

    def request(self) -> bytes:
        token = base64.b64encode(f"{self.target.user}:{secrets.token_urlsafe(12)}".encode()).decode()
        return (f"GET /metrics HTTP/1.1\r\nHost: {self.target.host}:{self.target.port}\r\n"
                f"Authorization: Basic {token}\r\nUser-Agent: wrong-password\r\n\r\n").encode()

    async def client(self) -> None:
        while self.on:
            stream = await self.open_tls()
            if stream is None:
                continue
            with self.stats.connection(), contextlib.closing(stream.sock):
                await self.requests(stream)
            await asyncio.sleep(FLOOD_MIN_GAP)

    async def requests(self, stream: TlsStream) -> None:
        """Requests on one connection until the server closes it or asks to."""
        first = True
        while self.on:
            sent = time.monotonic()
            try:
                await stream.send(self.request())
                async with asyncio.timeout(FLOOD_ANSWER_TIMEOUT):
                    status, headers = await self.answer(stream)
            except (OSError, ServerClosed, ValueError, IndexError) as exc:
                where = "before the first answer" if first else "while kept alive"
                self.stats.count(f"closed by server {where}: {failure(exc)}")
                return
            first = False
            self.stats.answers.append(time.monotonic() - sent)
            self.stats.count(f"answered {status}")
            if status == 429:
                value = headers.get("retry-after")
                self.stats.count("429 with Retry-After" if value else "429 WITHOUT Retry-After")
                if value:
                    self.retry_after[value] += 1
            if headers.get("connection", "").lower() == "close":
                self.stats.count("asked to close")
                return
            await asyncio.sleep(FLOOD_MIN_GAP)

    @staticmethod
    async def answer(stream: TlsStream) -> tuple[int, dict[str, str]]:
        head = await stream.read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        await stream.read_exactly(int(headers.get("content-length", "0")))
        return status, headers

    def report(self) -> dict[str, Any]:
        result = self.stats.report()
        if self.retry_after:
            result["retry_after_values"] = dict(self.retry_after.most_common(10))
        return result


class CorruptTls(Attack):
    kind = "corrupt_tls"
    VARIANTS = ("random bytes", "bad record", "bad record mid-request")

    async def run(self) -> None:
        for i in range(CORRUPT_WORKERS):
            self.spawn(self.worker(i))

    async def worker(self, first: int) -> None:
        for n in itertools.count(first):
            if not self.on:
                return
            await self.one(self.VARIANTS[n % len(self.VARIANTS)])
            await asyncio.sleep(CORRUPT_PAUSE)

    def garbage(self, variant: str, stream: TlsStream) -> bytes:
        size = self.rng.randint(32, 1024)
        if variant == "random bytes":
            return os.urandom(size)
        record = b"\x17\x03\x03" + size.to_bytes(2, "big") + os.urandom(size)  # application data, bad MAC
        if variant == "bad record mid-request":
            stream.tls.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            return stream.outgoing.read() + record
        return record

    async def one(self, variant: str) -> None:
        try:
            sock = await self.target.tcp()
        except OSError as exc:
            self.stats.count(f"connect failed: {failure(exc)}")
            return
        with self.stats.connection(), contextlib.closing(sock):
            try:
                stream = await self.target.tls(sock)
            except (OSError, ServerClosed) as exc:
                self.stats.count(f"tls handshake failed: {failure(exc)}")
                return
            self.stats.count("handshakes completed")
            try:
                await stream.send_raw(self.garbage(variant, stream))
            except OSError as exc:
                self.stats.count(f"{variant}: closed by server before it was sent: {failure(exc)}")
                return
            started = time.monotonic()
            how = await until_closed(sock, CORRUPT_HOLD)
            if how is None:
                self.stats.count(f"{variant}: still open after {CORRUPT_HOLD:g} s")
            else:
                self.stats.count(f"{variant}: closed by server: {how}")
                self.stats.held_for(variant, time.monotonic() - started)


def report(attacks: dict[str, Attack]) -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    by_kind = {kind: (a.report() if isinstance(a, WrongPassword) else a.stats.report()) for kind, a in attacks.items()}
    return json.dumps({"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "by_kind": by_kind})


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line)
        loop.call_soon_threadsafe(commands.put_nowait, "quit")

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    target = Target(args.host, args.port, args.sources.split(","), args.user, args.seed)
    classes: list[type[Attack]] = [Idle, Slowloris, Handshake, WrongPassword, CorruptTls]
    attacks = {cls.kind: cls(target) for cls in classes}
    log(f"ready: {args.host}:{args.port} from {args.sources}")
    while True:
        command, _, kind = (await commands.get()).strip().partition(" ")
        if command in ("on", "off") and kind not in attacks:
            log(f"unknown attack {kind!r}")
        elif command == "on":
            log(f"{kind} on")
            attacks[kind].start()
        elif command == "off":
            started = time.monotonic()
            await attacks[kind].stop()
            log(f"{kind} off ({time.monotonic() - started:.1f} s to stop)")
        elif command in ("report", "quit"):
            if command == "quit":
                await asyncio.gather(*(a.stop() for a in attacks.values()))
            sys.stdout.write(report(attacks) + "\n")
            sys.stdout.flush()
            if command == "quit":
                return
        elif command:
            log(f"unknown command {command!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="the exporter's address")
    parser.add_argument("--port", type=int, required=True, help="the exporter's port (HTTPS)")
    parser.add_argument("--sources", default=",".join(f"127.0.0.{i}" for i in range(2, 10)),
                        help="comma-separated source addresses, used in turn")
    parser.add_argument("--user", default="soak", help="the user name the wrong passwords go with")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nice", type=int, default=10, help="niceness added to this process")
    args = parser.parse_args(argv)
    # 600 idle + 300 slowloris + 500 in a burst + the rest: more than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    if args.nice:
        os.nice(args.nice)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID`: every thread's stack to stderr
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
