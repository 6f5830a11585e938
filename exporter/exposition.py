"""Exposition bytes, rendered once per State and served from memory to every scrape.

The State only changes when a poll ends, so the text (0.0.4 or OpenMetrics, plain or gzip) is
rendered once per State and kept: the per-job families by `render`, the rest by
prometheus-client's own encoder of the content type. A render runs in a forked child (see
`forked`), so the event loop keeps answering scrapes on the other core; where no child can be
started, on the event loop in slices of a few milliseconds. The exposition subscribes to the
store: the variants scrapers asked for recently are rendered as soon as the store publishes a new
State; a scrape only renders itself for a variant nobody asked for recently, or when a company
went stale since the bytes were made. A variant nobody asked for within
`max(FORGET_VARIANT_AFTER, 3 polls)` is forgotten at the next render, its bytes with it: a one-off
request in an odd format costs a few renders, not one at every poll for ever. `?name[]=`
filtering is rare and rendered on demand.

The process metrics (memory, CPU, file descriptors) are read at every scrape and written after
the cached bytes: the gzip stream of a variant is kept open (flushed to a byte boundary) so that
they, and OpenMetrics' `# EOF`, end the same stream, compressed on their own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

from exporter import forked
from exporter.collector import SnapshotCollector
from exporter.process import ProcessMetrics
from exporter.render import EOF, Encoder, encoded, is_openmetrics, pieces, writes_itself
from exporter.snapshot import State, Store

log = logging.getLogger(__name__)

# Level 1 costs a fifth of level 9 here for bodies about a third larger: scrapes are on a LAN.
GZIP_LEVEL = 1
# The header zlib writes for a gzip stream at level 1 (no name, no time, "fastest", Unix).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
TAIL_WINDOW_BITS = 9  # a scrape's own text is a few kilobytes: the smallest window is enough
MAX_VARIANTS = 8
# Seconds (or three poll intervals, if longer) after which a variant nobody asked for is forgotten.
# Prometheus scrapes every 15 s to 1 min: several scrape intervals keep every real scraper's variant
# warm, and a variant a client asked for once is rendered at a few publishes at most.
FORGET_VARIANT_AFTER = 300.0
# Longest stretch a render keeps the event loop before letting scrapes be answered.
TURN_SECONDS = 0.005

TEXT_0_0_4 = text_format.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_1_0_0 = openmetrics_format.CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Variant:
    """One form of the exposition: a content type (which names its encoder) and gzip or not."""

    content_type: str
    gzip: bool


@dataclass(frozen=True)
class Rendered:
    """The bytes of one State in one variant, without the end: OpenMetrics' `# EOF` and, for
    gzip, the end of the stream are added by `parts`, after whatever the scrape adds.

    A gzip body is a gzip header and a deflate stream flushed to a byte boundary; `crc` and
    `size` are the CRC-32 and length of the text it holds, all a scrape needs to end the stream
    with its own text (plain data: a render can be made in another process)."""

    generation: int
    stale: frozenset[str]
    body: bytes
    openmetrics: bool
    gzip: bool = False
    crc: int = 0
    size: int = 0

    def parts(self, extra: bytes = b"") -> tuple[bytes, bytes]:
        """The answer: the kept bytes, then `extra` (text of the same content type) and the end."""
        end = extra + EOF if self.openmetrics else extra
        if not self.gzip:
            return self.body, end
        # Deflate blocks that refer to nothing before them may follow a byte-aligned flush.
        tail = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -TAIL_WINDOW_BITS, 1)
        trailer = struct.pack("<II", zlib.crc32(end, self.crc), (self.size + len(end)) & 0xFFFFFFFF)
        return self.body, tail.compress(end) + tail.flush() + trailer

    def __bytes__(self) -> bytes:
        return b"".join(self.parts())


class _Sink:
    """Collects one variant's bytes as they are written, compressing them on the way for gzip."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self._parts: list[bytes] = []
        self._crc = 0
        self._size = 0
        self._compressor = None
        if variant.gzip:
            self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            self._parts.append(GZIP_HEADER)

    def write(self, data: bytes) -> None:
        if self._compressor is not None:
            self._crc = zlib.crc32(data, self._crc)
            self._size += len(data)
            data = self._compressor.compress(data)
        if data:
            self._parts.append(data)

    def close(self, generation: int, stale: frozenset[str]) -> Rendered:
        if self._compressor is not None:
            self._parts.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        body = b"".join(self._parts)
        self._parts = []
        openmetrics = is_openmetrics(self.variant.content_type)
        return Rendered(generation, stale, body, openmetrics, self.variant.gzip, self._crc, self._size)


def _closed(sinks: Sequence[_Sink], state: State, now: float) -> dict[Variant, Rendered]:
    """The rendered bytes of each sink, marked with the State and its stale companies at `now`."""
    stale = state.stale_labels(now)
    return {sink.variant: sink.close(state.generation, stale) for sink in sinks}


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
        process: Collector | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.job_log_interval = job_log_interval
        self.clock = clock
        self.process = process  # read at every scrape: not part of the State
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

    def collector(self, state: State, now: float, only: frozenset[str] | None = None) -> SnapshotCollector:
        return SnapshotCollector(state, now=now, interval=self.interval, job_log_interval=self.job_log_interval,
                                 only=only)

    def registry(self, state: State, now: float, only: frozenset[str] | None = None) -> CollectorRegistry:
        registry = CollectorRegistry()  # SnapshotCollector.describe() names its families for `names`
        registry.register(self.collector(state, now, only))
        return registry

    def scrape_time_text(self, variant: Variant, names: Sequence[str] = ()) -> bytes:
        """What a scrape adds to the kept bytes: the process metrics, read now (those in
        `names`, if given)."""
        if self.process is None:
            return b""
        if isinstance(self.process, ProcessMetrics) and not names:
            return self.process.text(variant.content_type, self._encoders[variant.content_type])
        source: Collector = self.process
        if names:
            registry = CollectorRegistry(auto_describe=True)
            registry.register(self.process)
            source = registry.restricted_registry(names)
        return encoded(self._encoders[variant.content_type], variant.content_type, source)

    def render(self, state: State, variant: Variant, now: float) -> bytes:
        """The whole document of `state` in `variant`, without the process metrics; CPU-bound."""
        return self.render_variants(state, [variant], now)[variant]

    def render_variants(self, state: State, variants: Sequence[Variant], now: float) -> dict[Variant, bytes]:
        """The whole documents of `state` in each variant, written in one pass, as a publish
        renders them; CPU-bound."""
        return {variant: bytes(rendered) for variant, rendered in self._render_now(state, variants, now).items()}

    def _render_now(self, state: State, variants: Sequence[Variant], now: float) -> dict[Variant, Rendered]:
        sinks = [_Sink(variant) for variant in variants]
        for _ in self._write(state, sinks, now):
            pass
        return _closed(sinks, state, now)

    def _render_named(self, state: State, variant: Variant, now: float, names: Sequence[str]) -> Rendered:
        sink = _Sink(variant)
        registry = self.registry(state, now, only=frozenset(names))
        sink.write(encoded(self._encoders[variant.content_type], variant.content_type,
                           registry.restricted_registry(names)))
        return sink.close(state.generation, frozenset())

    def _write(self, state: State, sinks: Sequence[_Sink], now: float) -> Iterator[None]:
        """Write `state` into the sinks, yielding between pieces of a few hundred kilobytes."""
        collector = self.collector(state, now)
        content_types = {sink.variant.content_type for sink in sinks}
        own = {ct: self._encoders[ct] for ct in content_types if writes_itself(ct)}
        for target, data in pieces(collector, own):
            for sink in sinks:
                if (target is None and sink.variant.content_type in own) or target == sink.variant.content_type:
                    sink.write(data)
            yield
        for content_type in content_types - own.keys():  # names rewritten (dots, values): all theirs
            text = encoded(self._encoders[content_type], content_type, self.registry(state, now))
            for sink in sinks:
                if sink.variant.content_type == content_type:
                    sink.write(text)
            yield

    async def _render_many(self, state: State, variants: Sequence[Variant], now: float) -> dict[Variant, Rendered]:
        """Render in a forked child, where it takes nothing from the event loop; if no child
        can be started, on the event loop, letting it answer scrapes every TURN_SECONDS."""
        if forked.available():
            try:
                return await forked.call(functools.partial(self._render_now, state, variants, now))
            except OSError as exc:
                log.warning("cannot start a process to render in, rendering on the event loop: %s", exc)
        loop = asyncio.get_running_loop()
        sinks = [_Sink(variant) for variant in variants]
        turn_started = loop.time()
        for _ in self._write(state, sinks, now):
            if loop.time() - turn_started > TURN_SECONDS:
                await asyncio.sleep(0)
                turn_started = loop.time()
        return _closed(sinks, state, now)

    def _current(self, variant: Variant, state: State, stale: frozenset[str]) -> Rendered | None:
        cached = self._cache.get(variant)
        if cached is not None and cached.generation == state.generation and cached.stale == stale:
            return cached
        return None

    async def answer(self, variant: Variant, names: Sequence[str] = ()) -> tuple[bytes, ...]:
        """The body of a scrape: the State's bytes from memory, then the process metrics."""
        rendered = await self.body(variant, names)
        return rendered.parts(self.scrape_time_text(variant, names))

    async def body(self, variant: Variant, names: Sequence[str] = ()) -> Rendered:
        """The State's bytes for a scrape, from memory. While a newer State is being rendered
        the scrape gets the previous one, whole; only a variant not asked for recently waits."""
        now = self.clock()
        if names:
            return await asyncio.to_thread(self._render_named, self.store.state, variant, now, names)
        self._wanted[variant] = now
        state = self.store.state
        current = self._current(variant, state, state.stale_labels(now))
        if current is not None:
            return current
        cached = self._cache.get(variant)
        if cached is not None:
            self.refresh()
            return cached
        await self._render_wanted()
        cached = self._cache.get(variant)
        if cached is None:  # forgotten while it waited: the clock stepped past the window
            return (await self._render_many(self.store.state, [variant], now))[variant]
        return cached

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
            self._cache.update(await self._render_many(state, todo, now))

    def _forget_unasked(self, now: float) -> None:
        """Drop the variants nobody asked for within the window, and their bytes."""
        since = now - max(FORGET_VARIANT_AFTER, 3 * self.interval)
        self._wanted = {variant: asked for variant, asked in self._wanted.items() if asked >= since}
        self._cache = {variant: rendered for variant, rendered in self._cache.items() if variant in self._wanted}
