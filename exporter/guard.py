"""What keeps the HTTP port fair when some clients are hostile: who may hold connections and
TLS handshakes, and who may make us spend bcrypt time.

A client is an IPv4 address or an IPv6 /64 (one host usually owns a whole /64). The HTTP server
asks `ConnectionTable` before it serves a new connection and `AuthThrottle` before it checks a
password it has not accepted before. Both only decide; the server closes and answers.

- Connections: each client may hold `per_client` connections and `handshakes_per_client` of them
  before their TLS handshake; past either share, or past the server's `cap`, the oldest
  connection that is not being answered is closed to make room (at the cap, the client holding
  the most loses one first). A newcomer is refused only when every connection is busy answering.
  So a client holding hundreds of idle or slow sockets only ever displaces its own, and scrapes
  and probes from anyone else get in.
- Passwords: checking one costs a bcrypt run (~0.25 s of a core at cost 12), so every attempt
  that is not a remembered success takes a token from the client's bucket, whether it then
  passes or not (a bucket refills at `rate` a second); an empty bucket is a 429 with
  `Retry-After`, decided before the remembered successes are looked at, so a throttled client
  learns nothing from the answer, and guesses are never faster than the refill. bcrypt runs on
  its own small pool, never the one that renders, and at most `max_pending` checks wait for it:
  more is a 429 too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

T = TypeVar("T")


def client_key(host: str) -> str:
    """The client an address belongs to: the IPv4 address (also when mapped into IPv6), or the
    IPv6 /64; anything else (a Unix socket, no peer) as it is."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Phase(Enum):
    HANDSHAKE = "handshake"  # accepted, TLS not yet established
    WAITING = "waiting"  # for a request head: a new, slow or kept-alive idle connection
    BUSY = "busy"  # a request is being answered: never closed to make room


@dataclass(eq=False)
class Connection:
    """One accepted connection, as the table sees it."""

    client: str
    phase: Phase
    close: Callable[[], None]
    number: int = 0  # in the order of arrival


class ConnectionTable:
    """Open connections per client, oldest first, and who makes room for a newcomer."""

    def __init__(self, *, cap: int, per_client: int, handshakes_per_client: int) -> None:
        self.cap = cap
        self.per_client = per_client
        self.handshakes_per_client = handshakes_per_client
        self._by_client: dict[str, dict[Connection, None]] = {}  # a dict for its order
        self._count = 0
        self._arrivals = itertools.count()
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Connection]:
        for connections in list(self._by_client.values()):
            yield from list(connections)

    def of(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    def admit(self, client: str, phase: Phase, close: Callable[[], None]) -> Connection | None:
        """Register a new connection, closing whichever connections must make room for it;
        None (and nothing closed) when no room can be made: every candidate is busy."""
        mine = list(self._by_client.get(client, ()))
        victims: list[Connection] = []
        try:
            if len(mine) >= self.per_client:
                victims.append(_oldest(mine, victims))
            if phase is Phase.HANDSHAKE:
                handshaking = [c for c in mine if c.phase is Phase.HANDSHAKE and c not in victims]
                if len(handshaking) >= self.handshakes_per_client:
                    victims.append(_oldest(handshaking, victims))
            if self._count - len(victims) >= self.cap:
                victims.append(self._oldest_of_the_greediest(victims))
        except _NoRoom:
            self.refused += 1
            return None
        for victim in victims:
            self.remove(victim)
            self.evicted += 1
            victim.close()
        connection = Connection(client, phase, close, next(self._arrivals))
        self._by_client.setdefault(client, {})[connection] = None
        self._count += 1
        return connection

    def remove(self, connection: Connection) -> None:
        """Forget a connection (closed, or closing); forgetting it twice is harmless."""
        mine = self._by_client.get(connection.client)
        if mine is None or connection not in mine:
            return
        del mine[connection]
        self._count -= 1
        if not mine:
            del self._by_client[connection.client]

    def _oldest_of_the_greediest(self, exclude: list[Connection]) -> Connection:
        """The oldest connection not busy of the client holding the most (of those holding as
        many, the one whose candidate is oldest: a newcomer's handshake is never the first to go)."""
        candidates = []
        for connections in self._by_client.values():
            with contextlib.suppress(_NoRoom):
                oldest = _oldest(list(connections), exclude)
                candidates.append((len(connections), -oldest.number, oldest))
        if not candidates:
            raise _NoRoom
        return max(candidates, key=lambda candidate: candidate[:2])[2]


class _NoRoom(LookupError):
    """Every connection that could make room is busy answering (or already leaving)."""


def _oldest(connections: list[Connection], exclude: list[Connection]) -> Connection:
    for connection in connections:
        if connection.phase is not Phase.BUSY and connection not in exclude:
            return connection
    raise _NoRoom


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AuthThrottle:
    """Per-client token buckets for password checks, and the bounded pool that runs them."""

    def __init__(
        self,
        *,
        burst: int = 5,
        rate: float = 1.0,
        workers: int = 1,
        max_pending: int = 4,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.max_pending = max_pending
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt")
        self._workers = workers
        self._running = 0
        self.throttled = 0

    def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait before its next password check, or None: it has one."""
        bucket = self._bucket(client)
        if bucket.tokens >= 1.0:
            return None
        self.throttled += 1
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def spend(self, client: str) -> None:
        """The client makes a password check: one token less."""
        self._bucket(client).tokens -= 1.0

    def _bucket(self, client: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.pop(client, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[client] = bucket  # the most recently seen last, the first to forget first
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return bucket

    async def run(self, check: Callable[[], T]) -> T | None:
        """`check()` on the password pool; None, without running it, when the pool is full."""
        if self._running >= self._workers + self.max_pending:
            self.throttled += 1
            return None
        self._running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, check)
        finally:
            self._running -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class EveryNSeconds:
    """Lets a log line through at most once per `period`, and says how many it held back."""

    def __init__(
        self, logger: logging.Logger, period: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.period = period
        self.clock = clock
        self._next = -math.inf
        self._held = 0

    def debug(self, message: str, *args: object) -> None:
        now = self.clock()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            message += " (and %d more like it)"
            args = (*args, self._held)
        self._held = 0
        self._next = now + self.period
        self.logger.debug(message, *args, stacklevel=2)
