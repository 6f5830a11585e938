"""Memory: giving freed memory back to the operating system, and keeping the garbage collector
off the long-lived State and out of the way of big parses.

glibc keeps memory freed by Python in its heap for reuse; after a burst of connections (each TLS
one holds a 256 KiB buffer of asyncio's) that is megabytes the process's RSS, and so a container's
memory limit, counts for ever. `malloc_trim` returns it. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable, Iterator


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Return the heap's free memory to the system; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class LongLivedHeap:
    """Keeps the cyclic garbage collector off the published State.

    A State lives until the next poll replaces it, and at 10,000 jobs it is millions of objects:
    the full collections its arrival triggers walked them all, 150-320 ms with the event loop
    stopped. Frozen after each publish (`gc.freeze`), they are out of the collector's sight; an old
    State is still freed by reference counting when the next one replaces it. A cycle among frozen
    objects is not, so once every `review_every` seconds the heap is unfrozen and collected whole:
    one such pause an hour instead of one at every poll.
    """

    def __init__(self, *, review_every: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.review_every = review_every
        self.clock = clock
        self._reviewed = clock()

    def published(self, _state: object) -> None:
        now = self.clock()
        if now - self._reviewed >= self.review_every:
            self._reviewed = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while an answer is parsed or built.

    A 10,000-job answer allocates a million short-lived lxml proxies, records and models, none in
    a cycle (reference counting frees them all). Each burst of allocations triggers collections
    that rescan every object not yet frozen, the growing result among them: 10-25% of a parse's
    CPU, for nothing found. Collection resumes, and catches up, as soon as the block ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
