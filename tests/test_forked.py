"""exporter.forked: work done in a forked child, its result or its exception handed back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support import ticks_while

from exporter import forked

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ")[1].startswith("Z")  # exited, not yet reaped


async def test_the_result_comes_back_from_another_process():
    parent = os.getpid()
    pid, big = await forked.call(lambda: (os.getpid(), b"x" * 30_000_000))
    assert pid != parent and big == b"x" * 30_000_000


async def test_the_childs_exception_is_raised_in_the_parent():
    def fails() -> None:
        raise ValueError("a metric failed")

    with pytest.raises(ValueError, match="a metric failed"):
        await forked.call(fails)


async def test_a_child_that_dies_without_a_result_is_an_error_not_a_hang():
    with pytest.raises(forked.ChildFailed, match="without a result"):
        await forked.call(lambda: os.kill(os.getpid(), signal.SIGKILL))


async def test_an_unpicklable_result_is_an_error():
    with pytest.raises(forked.ChildFailed, match="unpicklable"):
        await forked.call(lambda: (lambda: None))


async def test_the_loop_runs_while_the_child_works():
    started = time.monotonic()
    ticks = await ticks_while(forked.call(lambda: time.sleep(0.5)), every=0.01)
    assert time.monotonic() - started >= 0.5
    assert ticks >= 20  # one tick per 10 ms, had the loop been free all along: 50


async def test_the_child_holds_none_of_the_parents_connections(tmp_path):
    """A client socket the parent closes must close at once, even while a child runs: a child
    holding a copy would keep the client waiting for the end of its answer until the child ends."""
    ours, clients = socket.socketpair()
    started = tmp_path / "started"
    work = asyncio.ensure_future(forked.call(lambda: (started.write_text("1"), time.sleep(3))))
    while not started.exists():
        await asyncio.sleep(0.01)
    ours.close()
    clients.settimeout(1.0)
    assert clients.recv(10) == b""  # end of stream, not a timeout
    clients.close()
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work


async def test_a_cancelled_call_kills_its_child(tmp_path):
    pid_file = tmp_path / "pid"
    work = asyncio.ensure_future(forked.call(lambda: (pid_file.write_text(str(os.getpid())), time.sleep(30))))
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.01)
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _gone(pid)
    await asyncio.sleep(0.1)  # the reaper collects it
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def test_a_child_is_collected_before_its_result_is_returned():
    """Not left to a task of the event loop: a loop that ends right after (a test's, a
    shutdown's) would leave a zombie, and a process that waits for any child (mutmut's
    runner) would collect one it never started."""
    for _ in range(5):
        pid = await forked.call(os.getpid)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


async def test_no_process_to_start_is_an_os_error(monkeypatch):
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="temporarily unavailable"):
        await forked.call(os.getpid)
    assert len(os.listdir("/proc/self/fd")) == fds  # the pipe and the memory file closed
