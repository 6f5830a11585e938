"""Exposition bytes, rendered once per State and served from memory to every scrape.

The State only changes when a poll ends, so the text (0.0.4 or OpenMetrics, plain or gzip) is
rendered by prometheus-client's own encoders once per State and kept. Rendering runs in a worker
thread, off the event loop. The exposition subscribes to the store: the variants scrapers asked
for recently are rendered as soon as the store publishes a new State; a scrape only renders itself
for a variant nobody asked for recently, or when a company went stale since the bytes were made.
A variant nobody asked for within `max(FORGET_VARIANT_AFTER, 3 polls)` is forgotten at the next
render, its bytes with it: a one-off request in an odd format costs a few renders, not one at
every poll for ever. `?name[]=` filtering is rare and rendered on demand.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

from exporter.collector import SnapshotCollector
from exporter.snapshot import State, Store

log = logging.getLogger(__name__)

# Level 1 costs a fifth of level 9 here for bodies about a third larger: scrapes are on a LAN.
GZIP_LEVEL = 1
MAX_VARIANTS = 8
# Seconds (or three poll intervals, if longer) after which a variant nobody asked for is forgotten.
# Prometheus scrapes every 15 s to 1 min: several scrape intervals keep every real scraper's variant
# warm, and a variant a client asked for once is rendered at a few publishes at most.
FORGET_VARIANT_AFTER = 300.0


Encoder = Callable[[Collector], bytes]
TEXT_0_0_4 = text_format.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_1_0_0 = openmetrics_format.CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Variant:
    """One form of the exposition: a content type (which names its encoder) and gzip or not."""

    content_type: str
    gzip: bool


@dataclass(frozen=True)
class Rendered:
    generation: int
    stale: frozenset[str]
    body: bytes


def gzip_wanted(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` asks for gzip: prometheus-client's `gzip_accepted` (any case),
    except that `gzip;q=0` means "not acceptable" (RFC 9110)."""
    for coding in (accept_encoding or "").split(","):
        name, *params = (part.strip().lower() for part in coding.split(";"))
        if name == "gzip":
            weights = [value for key, _, value in (p.partition("=") for p in params) if key.strip() == "q"]
            try:
                return not weights or float(weights[0]) > 0
            except ValueError:
                return False
    return False


class Exposition:
    """Cached exposition of the Store's current State."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float,
        job_log_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.interval = interval
        self.job_log_interval = job_log_interval
        self.clock = clock
        self._encoders: dict[str, Encoder] = {
            TEXT_0_0_4: text_format.generate_latest,
            OPENMETRICS_1_0_0: openmetrics_format.generate_latest,
        }
        self._cache: dict[Variant, Rendered] = {}
        self._wanted: dict[Variant, float] = {}  # when each variant was last asked for
        self._lock = asyncio.Lock()
        self._renderer: asyncio.Task[None] | None = None
        self._dirty = False
        store.subscribe(self._published)

    def negotiate(self, accept: str | None, accept_encoding: str | None) -> Variant:
        """The variant a scraper asked for, chosen as prometheus-client chooses it."""
        try:
            encoder, content_type = text_format.choose_encoder(accept or "")
        except (TypeError, ValueError):  # prometheus-client 0.2x on `version=abc`: the default format
            encoder, content_type = text_format.choose_encoder("")
        if content_type not in self._encoders:
            # The version comes from the client: bound what it can make us keep.
            if len(self._encoders) >= MAX_VARIANTS:
                content_type = TEXT_0_0_4
            else:
                self._encoders[content_type] = encoder
        return Variant(content_type, gzip_wanted(accept_encoding))

    def _published(self, state: State) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # changed outside the event loop: the next scrape renders
            return
        self.refresh()

    def registry(self, state: State, now: float) -> CollectorRegistry:
        registry = CollectorRegistry()  # SnapshotCollector.describe() names its families for `names`
        registry.register(SnapshotCollector(
            state, now=now, interval=self.interval, job_log_interval=self.job_log_interval
        ))
        return registry

    def render(self, state: State, variant: Variant, now: float, names: Sequence[str] = ()) -> bytes:
        """Encode `state` (optionally only the families in `names`); CPU-bound."""
        return self._render_many(state, [variant], now, names)[variant]

    def _render_many(
        self, state: State, variants: Sequence[Variant], now: float, names: Sequence[str] = ()
    ) -> dict[Variant, bytes]:
        """Encode once per content type, compress for the gzip variants."""
        registry = self.registry(state, now)
        source = registry.restricted_registry(names) if names else registry
        rendered = {}
        for content_type in {variant.content_type for variant in variants}:
            plain = self._encoders[content_type](source)
            for variant in variants:
                if variant.content_type == content_type:
                    rendered[variant] = (
                        gzip.compress(plain, compresslevel=GZIP_LEVEL, mtime=0) if variant.gzip else plain
                    )
        return rendered

    def _current(self, variant: Variant, state: State, stale: frozenset[str]) -> bytes | None:
        cached = self._cache.get(variant)
        if cached is not None and cached.generation == state.generation and cached.stale == stale:
            return cached.body
        return None

    async def body(self, variant: Variant, names: Sequence[str] = ()) -> bytes:
        """The bytes for a scrape, from memory. While a newer State is being rendered the
        scrape gets the previous one, whole; only a variant not asked for recently waits."""
        now = self.clock()
        if names:
            return await asyncio.to_thread(self.render, self.store.state, variant, now, names)
        self._wanted[variant] = now
        state = self.store.state
        body = self._current(variant, state, state.stale_labels(now))
        if body is not None:
            return body
        cached = self._cache.get(variant)
        if cached is not None:
            self.refresh()
            return cached.body
        await self._render_wanted()
        cached = self._cache.get(variant)
        if cached is None:  # forgotten while it waited: the clock stepped past the window
            return await asyncio.to_thread(self.render, self.store.state, variant, now)
        return cached.body

    def refresh(self) -> None:
        """Start rendering the current State in the background; a poll never waits for it.
        Publishes during a render coalesce into one more render of the newest State."""
        if self._renderer is not None and not self._renderer.done():
            self._dirty = True
            return
        self._renderer = asyncio.get_running_loop().create_task(self._render_until_clean())

    async def settle(self) -> None:
        """Wait until the bytes of the current State are rendered (tests, shutdown)."""
        while self._renderer is not None and not self._renderer.done():
            await asyncio.shield(self._renderer)

    async def _render_until_clean(self) -> None:
        while True:
            self._dirty = False
            if self._wanted:
                try:
                    await self._render_wanted()
                except Exception:  # scrapes keep the previous bytes; the next publish retries
                    log.exception("rendering the exposition failed")
            if not self._dirty:
                return

    async def _render_wanted(self) -> None:
        async with self._lock:  # one render at a time; a waiter finds the work done
            now = self.clock()
            self._forget_unasked(now)
            state = self.store.state
            stale = state.stale_labels(now)
            todo = [v for v in self._wanted if self._current(v, state, stale) is None]
            if not todo:
                return
            rendered = await asyncio.to_thread(self._render_many, state, todo, now)
            for variant, body in rendered.items():
                self._cache[variant] = Rendered(state.generation, stale, body)

    def _forget_unasked(self, now: float) -> None:
        """Drop the variants nobody asked for within the window, and their bytes."""
        since = now - max(FORGET_VARIANT_AFTER, 3 * self.interval)
        self._wanted = {variant: asked for variant, asked in self._wanted.items() if asked >= since}
        self._cache = {variant: rendered for variant, rendered in self._cache.items() if variant in self._wanted}
