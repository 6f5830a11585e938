"""Run a CPU-bound function in a forked child, so that the event loop keeps serving.

Rendering a big State takes a second of CPU at 10,000 jobs. On the event loop, even in slices,
it takes that second from the scrapes; in a thread it holds the GIL the loop needs. A forked
child has the State already (the pages are shared until written), uses the other core, and
hands back its result, pickled into an anonymous memory file. The loop only waits on a pipe.

The child keeps nothing of the parent's but the two descriptors it writes to: a client socket or
the listening socket held open by a child would keep connections (and the port) alive after
the parent closed them. It never returns into the parent's code: it ends with `os._exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import pickle
import signal
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")

_MAX_STATUS_BYTES = 1 << 20


def available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "memfd_create")


class ChildFailed(RuntimeError):
    """The child died without a result (killed, out of memory), or its result was unreadable."""


async def call(function: Callable[[], T]) -> T:
    """`function()` computed in a forked child; its exception, if it raised one, raised here.
    OSError if no child could be started (the caller may then do the work itself)."""
    loop = asyncio.get_running_loop()
    memfd = os.memfd_create("scene7-exporter-result", os.MFD_CLOEXEC)
    try:
        status_read, status_write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(status_read)
            os.close(status_write)
            raise
        if pid == 0:  # pragma: no cover  (the child; its work is checked through the parent)
            _child(function, status_write, memfd)
        os.close(status_write)
        try:
            status = await _read_to_end(loop, status_read)
        except BaseException:  # cancelled (a shutdown): the work is not wanted any more
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            os.close(status_read)
            # The pipe ends when the child's descriptors close, after its memory is gone and just
            # before it exits (or it was killed): collected here, at once, it never lingers as a
            # zombie, even if the event loop stops right after (a test's, a shutdown's), and a
            # process that waits for any child (mutmut's runner) never collects it instead.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        return cast("T", _result(status, memfd))
    finally:
        os.close(memfd)


def _result(status: bytes, memfd: int) -> object:
    kind, _, detail = status.partition(b" ")
    if kind not in (b"ok", b"raised"):
        raise ChildFailed("the child process ended without a result" + (f": {status[:200]!r}" if status else ""))
    size = int(detail)
    with mmap.mmap(memfd, size, access=mmap.ACCESS_READ) as data:
        value = pickle.loads(data)  # noqa: S301  (our own child wrote it, into memory no one else can reach)
    if kind == b"raised":
        raise value if isinstance(value, BaseException) else ChildFailed(repr(value))
    return value


def _child(function: Callable[[], object], status_fd: int, memfd: int) -> None:  # pragma: no cover
    status = b"failed"
    try:
        _forget_parent(keep=(status_fd, memfd))
        try:
            kind, value = b"ok", function()
        except Exception as exc:  # handed to the parent, which raises it
            kind, value = b"raised", exc
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            kind, data = b"raised", pickle.dumps(ChildFailed(f"unpicklable result: {exc!r}"))
        view = memoryview(data)
        while view:
            view = view[os.write(memfd, view) :]
        status = kind + b" " + str(len(data)).encode()
    finally:
        with contextlib.suppress(BaseException):
            os.write(status_fd, status)
        os._exit(0)


def _forget_parent(keep: tuple[int, ...]) -> None:  # pragma: no cover  (runs in the child)
    # asyncio's signal handlers write to a socket the parent reads: a signal to this child
    # must not look like one to the parent.
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _read_to_end(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    os.set_blocking(fd, False)
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []
    size = 0

    def readable() -> None:
        nonlocal size
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            chunks.append(f"unreadable status: {exc}".encode())
        size += len(data)
        if data and size <= _MAX_STATUS_BYTES:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
