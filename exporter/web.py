"""The exporter's HTTP routes: /metrics, the landing page, /healthz and /readyz.

The handler only serves: /metrics hands out the bytes `exposition` keeps for the current
State, the other pages read the State. Nothing here calls IPS or waits on a poll.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

from exporter import APP_NAME, __version__
from exporter.exposition import Exposition
from exporter.httpserver import Request, Response
from exporter.snapshot import CompanySnapshot, Store

HTML = "text/html; charset=utf-8"
PROBE_PATHS = frozenset({"/healthz", "/readyz"})  # answered without basic auth if so configured


class WebApp:
    def __init__(
        self,
        exposition: Exposition,
        store: Store,
        *,
        ready: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.exposition = exposition
        self.store = store
        self.ready = ready
        self.clock = clock

    async def handle(self, request: Request) -> Response:
        if request.path == "/metrics":
            return await self.metrics(request)
        if request.path == "/healthz":
            return Response(200, b"ok\n")
        if request.path == "/readyz":
            if self.ready():
                return Response(200, b"ready\n")
            return Response(503, b"not ready: no poll attempted yet\n")
        if request.path == "/":
            return Response(200, self.landing_page().encode("utf-8"), HTML)
        return Response(404, b"not found\n")

    async def metrics(self, request: Request) -> Response:
        variant = self.exposition.negotiate(request.headers.get("accept"), request.headers.get("accept-encoding"))
        names = request.query.get("name[]", [])
        body = await self.exposition.answer(variant, names)
        headers: tuple[tuple[str, str], ...] = (("Vary", "Accept, Accept-Encoding"),)
        if variant.gzip:
            headers += (("Content-Encoding", "gzip"),)
        return Response(200, body, variant.content_type, headers)

    def landing_page(self) -> str:
        now = self.clock()
        rows = "\n".join(self._row(company, now) for company in self.store.state.companies)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{APP_NAME}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em 1em;text-align:left}}</style>
</head><body>
<h1>{APP_NAME}</h1>
<p>Prometheus exporter for Adobe Scene7 IPS job progress, version {html.escape(__version__)}.</p>
<p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a> &middot; <a href="/readyz">Readiness</a></p>
<table><tr><th>Company</th><th>Last poll</th><th>Age</th><th>Active jobs</th></tr>
{rows}
</table></body></html>
"""

    @staticmethod
    def _row(company: CompanySnapshot, now: float) -> str:
        if company.attempted_at is None:
            result, age = "not polled yet", "-"
        else:
            result = "ok" if company.up else f"failed ({company.last_error})"
            age = f"{now - company.attempted_at:.0f}s ago"
        cells = (company.target.label, result, age, str(len(company.jobs)))
        return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
