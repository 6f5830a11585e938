#!/usr/bin/env python3
"""Hostile clients of the exporter's HTTP port, in a process of their own so that the exporter
under test has its CPU to itself: `python tests/attackers.py KIND --port P [options]`.

Every attack connects from `--source` (default 127.0.0.2: Linux routes all of 127.0.0.0/8 to
the loopback interface), so a test can scrape from 127.0.0.1 as a different client; with
`--sources N`, from N addresses in turn, as many hosts would. When the
attack ends (after `--seconds`, or SIGTERM) a JSON summary is printed on stdout.

Kinds:
- idle: hold `--count` connections that send nothing; reopen each one the server closes
  (with `--tls`, after completing a TLS handshake).
- slowloris: the same, dripping a request head one byte a second, never finishing it.
- silent-bursts: `--bursts` times, open `--count` connections at once, send nothing (on a TLS
  port: never start the handshake) for `--hold` seconds, close them all.
- corrupt-tls: complete a TLS handshake, then write bytes that are no TLS record; over and over.
- wrong-password: `--count` clients ask for /metrics with a wrong password, as fast as they are
  answered, on kept-alive connections, ignoring `Retry-After`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections import Counter
from typing import Any


class Attack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts: Counter[str] = Counter()
        self.stop = asyncio.Event()
        first = ipaddress.ip_address(args.source)
        self.sources = [str(first + i) for i in range(args.sources)]
        self._next = 0

    def source(self) -> str:
        """The next source address, round robin."""
        self._next += 1
        return self.sources[self._next % len(self.sources)]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection from the next source address; with --tls, once its handshake is done."""
        context = None
        if self.args.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(
            self.args.host, self.args.port, local_addr=(self.source(), 0), ssl=context
        )
        self.counts["opened"] += 1
        return reader, writer

    async def reconnect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next connection, trying again after a failed connect; None once the attack stops."""
        while not self.stop.is_set():
            try:
                return await self.connect()
            except OSError:
                self.counts["connect failed"] += 1
                await asyncio.sleep(0.05)
        return None

    async def hold(self, drip: bytes = b"") -> None:
        """Keep one connection open, reopening it whenever the server closes it; on each, send
        `drip` a byte a second (never all of it)."""
        while (streams := await self.reconnect()) is not None:
            reader, writer = streams
            sent = 0
            try:
                while not self.stop.is_set():
                    if drip and sent < len(drip) - 1:
                        writer.write(drip[sent : sent + 1])
                        sent += 1
                    try:
                        if not await asyncio.wait_for(reader.read(1024), timeout=1.0):
                            break
                    except TimeoutError:
                        continue
            except OSError:
                pass
            finally:
                writer.transport.abort()
            if not self.stop.is_set():
                self.counts["closed by the server"] += 1

    async def idle(self) -> None:
        await asyncio.gather(*(self.hold() for _ in range(self.args.count)))

    async def slowloris(self) -> None:
        head = b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 4096
        await asyncio.gather(*(self.hold(head) for _ in range(self.args.count)))

    async def silent_bursts(self) -> None:
        for _ in range(self.args.bursts):
            results = await asyncio.gather(*(self.connect() for _ in range(self.args.count)), return_exceptions=True)
            held = [r for r in results if not isinstance(r, BaseException)]
            self.counts["connect failed"] += len(results) - len(held)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.hold)
            for _, writer in held:
                writer.transport.abort()
            if self.stop.is_set():
                return
            await asyncio.sleep(1.0)

    async def corrupt_tls(self) -> None:
        await asyncio.to_thread(self._corrupt_tls_loop)

    def _corrupt_tls_loop(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while not self.stop.is_set():
            raw = socket.socket()
            try:
                raw.bind((self.source(), 0))
                raw.settimeout(5)
                raw.connect((self.args.host, self.args.port))
                tls = context.wrap_socket(raw)
                self.counts["handshakes"] += 1
                garbage = socket.socket(fileno=os.dup(tls.fileno()))
                garbage.sendall(os.urandom(64) * 4)  # not a TLS record: the server must just drop it
                garbage.close()
                tls.recv(1)  # until the server closes
                self.counts["closed by the server"] += 1
            except OSError:
                self.counts["closed by the server"] += 1
            finally:
                raw.close()

    async def wrong_password(self) -> None:
        token = base64.b64encode(f"{self.args.user}:wrong-{os.getpid()}".encode()).decode()
        request = f"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Basic {token}\r\n\r\n".encode()

        async def client() -> None:
            while (streams := await self.reconnect()) is not None:
                reader, writer = streams
                try:
                    while not self.stop.is_set():
                        writer.write(request)
                        head = await reader.readuntil(b"\r\n\r\n")
                        status = head.split(b" ", 2)[1].decode()
                        self.counts[status] += 1
                        if status == "429" and b"\r\nretry-after: " in head.lower():
                            self.counts["429 with retry-after"] += 1
                        length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                                       if line.startswith(b"content-length:")), 0)
                        await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError):
                    self.counts["closed by the server"] += 1
                finally:
                    writer.transport.abort()

        await asyncio.gather(*(client() for _ in range(self.args.count)))

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.call_later(self.args.seconds, self.stop.set)
        started = time.monotonic()
        kind = getattr(self, self.args.kind.replace("-", "_"))
        task = asyncio.create_task(kind())
        await self.stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return {"kind": self.args.kind, "seconds": round(time.monotonic() - started, 1), **self.counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["idle", "slowloris", "silent-bursts", "corrupt-tls", "wrong-password"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.2", help="address the attack connects from")
    parser.add_argument("--sources", type=int, default=1, help="spread over this many addresses from --source on")
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds a burst is held")
    parser.add_argument("--user", default="prometheus")
    parser.add_argument("--tls", action="store_true", help="idle, slowloris: complete a TLS handshake first")
    args = parser.parse_args()
    summary = asyncio.run(Attack(args).run())
    print(json.dumps(summary), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
