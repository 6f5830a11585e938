"""The exporter's HTTP routes: /metrics (web.telemetry_path), the jobs page and its JSON API,
/healthz and /readyz.

The handler only serves: /metrics hands out the bytes `exposition` keeps for the current
State, the jobs page and `/api/v1/` read the State through `JobsView`. Nothing here calls IPS
or waits on a poll.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources
from typing import Any

from exporter import page
from exporter.exposition import Exposition
from exporter.httpserver import Request, Response
from exporter.jobsview import BadQuery, JobsView, Query

HTML = "text/html; charset=utf-8"
JSON = "application/json"
PROBE_PATHS = frozenset({"/healthz", "/readyz"})  # answered without basic auth if so configured
STATIC_TYPES = {"jobs.css": "text/css; charset=utf-8", "jobs.js": "text/javascript; charset=utf-8",
                "favicon.svg": "image/svg+xml"}
_NO_SNIFF = (("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))
_PAGE_HEADERS = (("Content-Security-Policy", page.CSP), ("Referrer-Policy", "no-referrer"), *_NO_SNIFF)


def _static_files() -> dict[str, bytes]:
    folder = resources.files("exporter") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_TYPES if (folder / name).is_file()}


class WebApp:
    def __init__(self, exposition: Exposition, jobs: JobsView, *, ready: Callable[[], bool], prefix: str = "",
                 telemetry_path: str = "/metrics") -> None:
        self.prefix = prefix  # "" or a path without a trailing slash: web.route_prefix
        self.telemetry_path = telemetry_path  # under the prefix: web.telemetry_path
        self.exposition = exposition
        self.jobs = jobs
        self.ready = ready
        self.static = _static_files()

    async def handle(self, request: Request) -> Response:
        if self.prefix:
            if request.path in ("/", self.prefix):  # the page's relative links need the slash
                return Response(302, b"", headers=(("Location", self.prefix + "/"),))
            if not request.path.startswith(self.prefix + "/"):
                return Response(404, b"not found\n")
            request = replace(request, path=request.path[len(self.prefix):])
        return await self._route(request)

    async def _route(self, request: Request) -> Response:
        if request.path == self.telemetry_path:
            return await self.metrics(request)
        if request.path == "/healthz":
            return Response(200, b"ok\n")
        if request.path == "/readyz":
            if self.ready():
                return Response(200, b"ready\n")
            return Response(503, b"not ready: no poll attempted yet\n")
        if request.path == "/":
            return await self._answer(request, self._page, HTML)
        if request.path == "/api/v1/jobs":
            return await self._answer(request, self._jobs_json, JSON)
        if request.path == "/api/v1/status":
            return Response(200, _json(self.jobs.status()), JSON, _NO_SNIFF)
        if request.path.startswith("/static/") and request.path[8:] in self.static:
            name = request.path[8:]
            return Response(200, self.static[name], STATIC_TYPES[name], (("X-Content-Type-Options", "nosniff"),))
        return Response(404, b"not found\n")

    async def _page(self, query: Query) -> bytes:
        jobs = await self.jobs.page(query)
        return page.render(jobs, self.jobs.status(), self.jobs.filters(),
                           metrics_href="." + self.telemetry_path).encode("utf-8")

    async def _jobs_json(self, query: Query) -> bytes:
        return _json((await self.jobs.page(query)).as_json())

    @staticmethod
    async def _answer(request: Request, body: Callable[[Query], Awaitable[bytes]], content_type: str) -> Response:
        try:
            query = Query.from_params(request.query)
        except BadQuery as exc:
            if content_type == JSON:
                return Response(400, _json({"error": str(exc)}), JSON, _NO_SNIFF)
            return Response(400, f"bad query: {exc}\n".encode(), headers=_NO_SNIFF)
        return Response(200, await body(query), content_type, _PAGE_HEADERS if content_type == HTML else _NO_SNIFF)

    async def metrics(self, request: Request) -> Response:
        variant = self.exposition.negotiate(request.headers.get("accept"), request.headers.get("accept-encoding"))
        names = request.query.get("name[]", [])
        body = await self.exposition.answer(variant, names)
        headers: tuple[tuple[str, str], ...] = (("Vary", "Accept, Accept-Encoding"),)
        if variant.gzip:
            headers += (("Content-Encoding", "gzip"),)
        return Response(200, body, variant.content_type, headers)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
