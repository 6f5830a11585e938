"""Giving freed memory back to the operating system.

glibc keeps memory freed by Python in its heap for reuse; after a burst of connections (each TLS
one holds a 256 KiB buffer of asyncio's) that is megabytes the process's RSS, and so a container's
memory limit, counts for ever. `malloc_trim` returns it. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


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
