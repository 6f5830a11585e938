"""The published State is kept out of the cyclic collector's sight, and the heap is reviewed whole
once in a while so that no cycle leaks for good."""

from __future__ import annotations

import gc
import platform
import weakref
from collections.abc import Iterator

import pytest

from exporter.memory import LongLivedHeap, cyclic_gc_paused, release_freed_memory


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_what_lives_at_a_publish_is_frozen_and_a_cycle_among_it_waits_for_the_review():
    now = [0.0]
    heap = LongLivedHeap(clock=lambda: now[0])  # the review is hourly by default
    cycle = Node()
    dead = weakref.ref(cycle)
    heap.published(object())
    assert gc.get_freeze_count() > 0
    del cycle
    gc.collect()
    assert dead() is not None  # frozen: full collections no longer walk it
    now[0] = 3599.0
    heap.published(object())
    gc.collect()
    assert dead() is not None
    now[0] = 3600.0
    heap.published(object())  # the hourly review: unfrozen, collected, frozen again
    assert dead() is None
    assert gc.get_freeze_count() > 0
    # The next hour counts from this review.
    cycle = Node()
    dead = weakref.ref(cycle)
    heap.published(object())
    del cycle
    now[0] = 7199.0
    heap.published(object())
    gc.collect()
    assert dead() is not None
    now[0] = 7200.0
    heap.published(object())
    assert dead() is None


def test_a_state_replaced_by_the_next_is_freed_at_once_by_reference_counting():
    heap = LongLivedHeap(clock=lambda: 0.0)
    state: list[object] = [object() for _ in range(10)]
    marker = Node.__new__(Node)  # no cycle: freed by its count alone
    alive = weakref.ref(marker)
    state.append(marker)
    heap.published(state)
    del state, marker
    assert alive() is None


def test_the_collector_is_paused_for_a_block_and_back_after_it_even_on_error():
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        raise RuntimeError("a parse that fails")
    assert gc.isenabled()


def test_a_collector_paused_by_someone_else_stays_paused():
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_freed_memory_is_given_back_where_the_c_library_can():
    # glibc has malloc_trim (Debian, the image); elsewhere (musl, macOS) this is a no-op.
    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")
