"""Who may hold connections and spend bcrypt time: the decisions of exporter.guard, and the
HTTP server applying them (401 and 429 answers, per client address)."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading

import bcrypt
import pytest

from exporter.guard import AuthThrottle, ConnectionTable, EveryNSeconds, Phase, client_key
from exporter.httpserver import HttpServer, Request, Response
from exporter.webconfig import BasicAuth

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("fe80::1%odd%name", "fe80::/64"),  # Linux allows "%" in an interface name; ipaddress does not
    ("", ""),
    ("/run/exporter.sock", "/run/exporter.sock"),
])
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(host: str, key: str) -> None:
    assert client_key(host) == key


class Closed:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda: self.names.append(name)


def test_a_client_past_its_share_displaces_its_own_oldest_connection_not_others() -> None:
    table, closed = ConnectionTable(cap=10, per_client=3, handshakes_per_client=3), Closed()
    other = table.admit("b", Phase.WAITING, closed("b0"))
    first = [table.admit("a", Phase.WAITING, closed(f"a{i}")) for i in range(3)]
    assert first[0] is not None and other is not None
    first[0].phase = Phase.BUSY  # being answered: never displaced
    assert table.admit("a", Phase.WAITING, closed("a3")) is not None
    assert closed.names == ["a1"]
    assert (table.of("a"), table.of("b"), len(table), table.evicted) == (3, 1, 4, 1)


def test_handshakes_have_their_own_smaller_share() -> None:
    table, closed = ConnectionTable(cap=10, per_client=5, handshakes_per_client=2), Closed()
    waiting = table.admit("a", Phase.WAITING, closed("w"))
    for i in range(4):
        table.admit("a", Phase.HANDSHAKE, closed(f"h{i}"))
    assert closed.names == ["h0", "h1"]  # the waiting one, older, is not a handshake
    assert waiting is not None and table.of("a") == 3
    assert table.evicted == 2


def test_at_the_cap_among_clients_holding_as_many_the_oldest_connection_goes() -> None:
    table, closed = ConnectionTable(cap=4, per_client=4, handshakes_per_client=4), Closed()
    table.admit("late", Phase.WAITING, closed("late0"))
    table.admit("early", Phase.HANDSHAKE, closed("early0"))
    table.admit("late", Phase.WAITING, closed("late1"))
    table.admit("early", Phase.HANDSHAKE, closed("early1"))
    assert table.admit("new", Phase.HANDSHAKE, closed("new0")) is not None
    assert closed.names == ["late0"]  # two each: late's oldest arrived first
    assert table.admit("newer", Phase.HANDSHAKE, closed("newer0")) is not None
    assert closed.names == ["late0", "early0"]  # early now holds most
    assert table.admit("newest", Phase.HANDSHAKE, closed("newest0")) is not None
    # one each: the oldest goes, never a handshake that just arrived
    assert closed.names == ["late0", "early0", "late1"]


def test_at_the_cap_a_tie_goes_by_age_not_by_which_client_came_first() -> None:
    table, closed = ConnectionTable(cap=4, per_client=4, handshakes_per_client=4), Closed()
    first = table.admit("first", Phase.WAITING, closed("first0"))
    table.admit("second", Phase.WAITING, closed("second0"))
    table.admit("first", Phase.WAITING, closed("first1"))
    second = table.admit("second", Phase.WAITING, closed("second1"))
    assert first is not None and second is not None
    first.phase = second.phase = Phase.BUSY
    assert table.admit("new", Phase.WAITING, closed("new0")) is not None
    assert closed.names == ["second0"]  # two each; first's candidate (first1) came after second0


def test_at_the_cap_the_client_holding_most_loses_its_oldest_idle_connection() -> None:
    table, closed = ConnectionTable(cap=5, per_client=5, handshakes_per_client=5), Closed()
    table.admit("few", Phase.WAITING, closed("few0"))
    for i in range(3):
        table.admit("many", Phase.WAITING, closed(f"many{i}"))
    table.admit("few", Phase.WAITING, closed("few1"))
    assert table.admit("new", Phase.WAITING, closed("new0")) is not None
    assert closed.names == ["many0"]
    assert (len(table), table.of("many"), table.of("few"), table.of("new")) == (5, 2, 2, 1)


def test_at_the_cap_a_client_past_its_share_makes_room_once_by_its_own_connection() -> None:
    table, closed = ConnectionTable(cap=3, per_client=2, handshakes_per_client=2), Closed()
    table.admit("b", Phase.WAITING, closed("b0"))
    for i in range(2):
        table.admit("a", Phase.WAITING, closed(f"a{i}"))
    assert table.admit("a", Phase.WAITING, closed("a2")) is not None
    assert closed.names == ["a0"]  # its own share made the room the cap needs: nobody else goes
    assert (len(table), table.of("a"), table.of("b"), table.evicted) == (3, 2, 1, 1)


def test_at_the_cap_a_busy_client_spares_its_connections_and_another_one_gives() -> None:
    table, closed = ConnectionTable(cap=3, per_client=3, handshakes_per_client=3), Closed()
    for i in range(2):
        connection = table.admit("many", Phase.WAITING, closed(f"many{i}"))
        assert connection is not None
        connection.phase = Phase.BUSY
    table.admit("few", Phase.WAITING, closed("few0"))
    assert table.admit("new", Phase.WAITING, closed("new0")) is not None
    assert closed.names == ["few0"]


def test_a_newcomer_is_refused_when_every_connection_is_busy_and_nothing_is_closed() -> None:
    table, closed = ConnectionTable(cap=2, per_client=2, handshakes_per_client=2), Closed()
    for i in range(2):
        connection = table.admit("a", Phase.WAITING, closed(f"a{i}"))
        assert connection is not None
        connection.phase = Phase.BUSY
    assert table.admit("a", Phase.WAITING, closed("a2")) is None
    assert table.admit("b", Phase.WAITING, closed("b0")) is None
    assert (closed.names, len(table), table.refused, table.evicted) == ([], 2, 2, 0)


def test_removing_a_connection_twice_is_harmless() -> None:
    table = ConnectionTable(cap=2, per_client=2, handshakes_per_client=2)
    connection = table.admit("a", Phase.WAITING, lambda: None)
    assert connection is not None
    table.remove(connection)
    table.remove(connection)
    assert (len(table), table.of("a"), list(table)) == (0, 0, [])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_clients_password_checks_come_from_a_bucket_that_refills() -> None:
    clock = Clock()
    throttle = AuthThrottle(burst=3, rate=0.5, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.spend("a")
    assert throttle.retry_after("a") == 2  # one token at 0.5 a second
    assert throttle.retry_after("b") is None  # another client has its own bucket
    clock.now += 1.0
    assert throttle.retry_after("a") == 1
    clock.now += 1.0
    assert throttle.retry_after("a") is None
    clock.now += 3600
    for _ in range(3):  # refilled to the burst, not beyond
        assert throttle.retry_after("a") is None
        throttle.spend("a")
    assert throttle.retry_after("a") == 2
    assert throttle.throttled == 3


def test_by_default_five_checks_at_once_then_one_a_second() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock=clock)
    for _ in range(5):
        assert throttle.retry_after("a") is None
        throttle.spend("a")
    assert throttle.retry_after("a") == 1
    clock.now += 0.5
    assert throttle.retry_after("a") == 1  # half a token
    clock.now += 0.5
    assert throttle.retry_after("a") is None
    throttle.spend("a")
    assert throttle.retry_after("a") == 1


def test_by_default_the_buckets_of_10000_clients_are_kept() -> None:
    throttle = AuthThrottle(clock=Clock())
    throttle.spend("first")
    for client in range(9_999):
        throttle.retry_after(str(client))
    for _ in range(4):  # still remembered: four checks left, not five
        assert throttle.retry_after("first") is None
        throttle.spend("first")
    assert throttle.retry_after("first") == 1
    for client in range(10_000):  # 10,000 others seen since: forgotten, a full bucket again
        throttle.retry_after(f"other {client}")
    for _ in range(5):
        assert throttle.retry_after("first") is None
        throttle.spend("first")


def test_the_buckets_kept_are_bounded_forgetting_the_least_recently_seen() -> None:
    clock = Clock()
    throttle = AuthThrottle(burst=1, rate=0.001, max_clients=3, clock=clock)
    for client in "abc":
        throttle.spend(client)
    assert throttle.retry_after("a") is not None  # a seen again: b is now the oldest
    throttle.spend("d")
    assert throttle.retry_after("b") is None  # forgotten: a new, full bucket
    assert throttle.retry_after("a") is not None


Check = asyncio.Task[bool | None]


async def fill(throttle: AuthThrottle, checks: int, release: threading.Event) -> tuple[list[Check], Check]:
    """`checks` checks that wait for `release`, then one more; all of them started."""
    held = [asyncio.create_task(throttle.run(lambda: release.wait(5))) for _ in range(checks)]
    extra = asyncio.create_task(throttle.run(lambda: True))
    await asyncio.sleep(0)  # each task has taken its place in the pool, or been turned away
    return held, extra


async def test_checks_wait_on_a_bounded_pool_and_past_it_get_none() -> None:
    throttle = AuthThrottle(workers=1, max_pending=2)
    releases = [threading.Event(), threading.Event()]
    try:
        for release in releases:  # twice: a finished check gives its place back, once
            running, extra = await fill(throttle, 3, release)
            assert extra.done() and extra.result() is None  # one running, two waiting: full
            release.set()
            assert await asyncio.gather(*running) == [True, True, True]
        assert await throttle.run(lambda: "after") == "after"
        assert throttle.throttled == 2
    finally:
        for release in releases:
            release.set()
        throttle.close()


async def test_by_default_one_check_runs_and_four_wait() -> None:
    throttle = AuthThrottle()
    release = threading.Event()
    try:
        running, extra = await fill(throttle, 5, release)
        assert extra.done() and extra.result() is None
        release.set()
        assert await asyncio.gather(*running) == [True] * 5
    finally:
        release.set()
        throttle.close()


async def test_checks_run_one_at_a_time_on_a_thread_of_their_own() -> None:
    throttle = AuthThrottle()
    second_started = threading.Event()
    threads: list[str] = []

    def first() -> bool:
        threads.append(threading.current_thread().name)
        return second_started.wait(0.05)  # never, with one thread: the second waits for the first

    def second() -> bool:
        threads.append(threading.current_thread().name)
        second_started.set()
        return True

    try:
        assert await asyncio.gather(throttle.run(first), throttle.run(second)) == [False, True]
        assert threads == ["bcrypt_0", "bcrypt_0"]  # not the loop's default pool, which renders
    finally:
        throttle.close()


async def test_closing_drops_the_waiting_checks_and_does_not_wait_for_the_running_one() -> None:
    throttle = AuthThrottle()
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def running() -> bool:
        started.set()
        return release.wait(2)  # True: released by the test, not by the time running out

    def waiting() -> bool:
        ran.append("waiting")
        return True

    first = asyncio.create_task(throttle.run(running))
    second = asyncio.create_task(throttle.run(waiting))
    try:
        while not started.is_set():
            await asyncio.sleep(0.001)
        throttle.close()  # returns at once...
        release.set()
        assert await first is True  # ...so the running check was released, not timed out
        with pytest.raises(asyncio.CancelledError):
            await second
        assert ran == []
    finally:
        release.set()
        throttle.close()


def test_a_log_line_once_a_second_at_most_saying_how_many_were_held(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.guard")
    limited = EveryNSeconds(logger, period=1.0, clock=clock)
    caplog.set_level(logging.DEBUG, logger="test.guard")
    for step in range(25):
        limited.debug("dropped %s", step)
        clock.now += 0.125
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0", "dropped 8 (and 7 more like it)", "dropped 16 (and 7 more like it)",
        "dropped 24 (and 7 more like it)",
    ]
    assert not any(r.filename == "guard.py" for r in caplog.records)  # the caller is the source


def test_by_default_a_log_line_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = EveryNSeconds(logging.getLogger("test.guard"), clock=clock)
    caplog.set_level(logging.DEBUG, logger="test.guard")
    for step in range(5):
        limited.debug("dropped %s", step)
        clock.now += 0.5
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0", "dropped 2 (and 1 more like it)", "dropped 4 (and 1 more like it)",
    ]


class StackLevels(logging.Logger):
    def __init__(self) -> None:
        super().__init__("stack levels")
        self.levels: list[object] = []

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        self.levels.append(kwargs.get("stacklevel"))


def test_a_log_line_names_the_caller_of_debug_as_its_source() -> None:
    # One frame up from debug's own: its caller. (Checked as the level logging is given, since
    # under mutmut a trampoline sits between the caller and debug, and a record names that.)
    logger = StackLevels()
    EveryNSeconds(logger, clock=Clock()).debug("dropped")
    assert logger.levels == [2]


# -- the server applying them ------------------------------------------------------------

USER, PASSWORD = "prometheus", b"right"


def basic(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


async def ok(request: Request) -> Response:
    return Response(200, b"ok\n")


async def ask(port: int, authorization: str, source: str) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: {authorization}\r\nconnection: close\r\n\r\n"
                 .encode())
    data = await reader.read()
    writer.close()
    head = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), headers


async def test_a_client_out_of_checks_gets_429_even_with_the_right_password_and_others_do_not() -> None:
    auth = BasicAuth({USER: bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4))})
    server = HttpServer(ok, "127.0.0.1", 0, basic_auth=auth)
    server.auth_throttle.burst, server.auth_throttle.rate = 3, 0.01
    await server.start()
    try:
        assert (await ask(server.port, basic(USER, PASSWORD), "127.0.0.1"))[0] == 200
        answers = [await ask(server.port, basic(USER, b"guess%d" % i), "127.0.0.3") for i in range(5)]
        assert [status for status, _ in answers] == [401, 401, 401, 429, 429]
        assert answers[-1][1]["retry-after"] == "100"
        # Throttled, the client cannot tell a right password from a wrong one...
        assert (await ask(server.port, basic(USER, PASSWORD), "127.0.0.3"))[0] == 429
        # ...nor an unknown user: no check happens at all.
        assert (await ask(server.port, basic("nobody", b"x"), "127.0.0.3"))[0] == 429
        # Others are unaffected: the remembered user without a check, a new one with its own bucket.
        assert (await ask(server.port, basic(USER, PASSWORD), "127.0.0.1"))[0] == 200
        assert (await ask(server.port, basic(USER, b"wrong"), "127.0.0.4"))[0] == 401
        # No credentials at all cost nothing and take nothing from the bucket.
        assert (await ask(server.port, "Bearer x", "127.0.0.5"))[0] == 401
        assert server.auth_throttle.retry_after("127.0.0.5") is None
    finally:
        await server.close()


async def test_remembered_credentials_take_nothing_from_the_bucket() -> None:
    auth = BasicAuth({USER: bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4))})
    server = HttpServer(ok, "127.0.0.1", 0, basic_auth=auth)
    server.auth_throttle.burst, server.auth_throttle.rate = 2, 0.01
    await server.start()
    try:
        statuses = [(await ask(server.port, basic(USER, PASSWORD), "127.0.0.1"))[0] for _ in range(20)]
        assert statuses == [200] * 20
        assert server.auth_throttle.throttled == 0
    finally:
        await server.close()
