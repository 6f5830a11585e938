"""Async client of the IPS SOAP API: the calls the exporter makes, and nothing more.

Each call posts one SOAP 1.1 envelope, streams the answer through the incremental reader with
a size cap, and maps every failure onto the typed errors of `exporter.errors`. Timeouts,
connection errors and 5xx answers are retried with exponential backoff and full jitter, within
one deadline per call; faults are final.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import httpx
from pydantic import BaseModel

from exporter import APP_NAME, __version__
from exporter.errors import (
    HttpStatusError,
    IpsConnectionError,
    IpsError,
    IpsTimeout,
    MalformedResponse,
    OversizedResponse,
    tame,
)
from exporter.models import XS_INT_MAX, ActiveJob, CompanyMembership, JobLogSortBy, SortDirection
from exporter.parse import (
    ActiveJobsResult,
    JobLogsResult,
    ResponseReader,
    check_job_array,
    check_job_log_array,
    companies_from_membership,
)
from exporter.soap import SOAP11_CONTENT_TYPE, AuthHeader, build_envelope
from exporter.versions import DEFAULT_API_VERSION, ApiVersion

log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# A decoded gzip chunk can be a MB of XML, tens of ms of parsing: it is parsed in slices of
# this size, and the event loop gets a turn once FEED_TURN_SECONDS of parsing is done, so
# scrapes are served during a poll. (A turn per slice made a big poll wait behind every scrape.)
FEED_SLICE = 64 * 1024
FEED_TURN_SECONDS = 0.01
T = TypeVar("T")


class ResponseBudget:
    """The bytes of IPS answers being read at once, by every client together: what all polls
    under way may hold in memory. One event loop reads them all, so no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reading = 0

    def take(self, size: int) -> bool:
        """Reserve `size` more bytes; False, and nothing reserved, if that would pass the limit."""
        if self.reading + size > self.limit:
            return False
        self.reading += size
        return True

    def give(self, size: int) -> None:
        self.reading -= size


PROXY_REFUSED = "the proxy asks for credentials: give them in proxy_url (http://user:password@proxy:3128)"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a deadline per call."""

    deadline: float = 20.0
    attempt_timeout: float = 15.0
    initial_backoff: float = 0.5
    max_backoff: float = 8.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.initial_backoff * 2**attempt))  # noqa: S311


def xs_date_time(moment: datetime) -> str:
    """An aware datetime as xs:dateTime in UTC with milliseconds: `2026-11-26T05:00:00.000Z`."""
    if moment.utcoffset() is None:
        raise ValueError(f"a naive datetime has no place in time: {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IpsClient:
    """One IPS account: an endpoint, a user, an API version.

    Use as an async context manager, or call `aclose()`.
    """

    def __init__(
        self,
        endpoint: str,
        user: str,
        password: str,
        *,
        api_version: str = DEFAULT_API_VERSION,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        locale: str = "en-US",
        proxy: str | None = None,
        budget: ResponseBudget | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.version = ApiVersion(api_version)
        self.retry = retry or RetryPolicy()
        self.max_response_bytes = max_response_bytes
        self.budget = budget or ResponseBudget(max_response_bytes)
        self._auth = AuthHeader(user, password, APP_NAME, __version__, locale)
        self._proxy_password = httpx.URL(proxy).password if proxy else None
        self._http = httpx.AsyncClient(
            verify=verify,
            transport=transport,
            proxy=proxy,
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> IpsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"IpsClient(endpoint={self.endpoint!r}, user={self._auth.user!r})"

    @property
    def password(self) -> str:
        """The password sent: what IPS text is cleaned of before it is logged or shown."""
        return self._auth.password

    @password.setter
    def password(self, password: str) -> None:  # a rotated secret, read again
        self._auth = replace(self._auth, password=password)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: the password, and the proxy's if its URL holds one."""
        return (self._auth.password, self._proxy_password or "")

    async def get_company_memberships(self) -> list[CompanyMembership]:
        """The companies the calling user belongs to (getCompanyMembership)."""
        reader = await self._call("getCompanyMembership", {})
        return companies_from_membership(reader.close())

    async def get_active_jobs(
        self,
        company_handle: str | None = None,
        *,
        job_handle: str | None = None,
        original_name: str | None = None,
        include_waiting_jobs: bool = True,
        keep_items: bool = True,
        known: Mapping[bytes, ActiveJob] | None = None,
    ) -> ActiveJobsResult:
        """The active jobs (getActiveJobs). Jobs waiting for a client or the coordinator are
        asked for where the API version has `includeWaitingJobs`. With `keep_items=False` each
        task's item entries are counted but not kept: they can be thousands. With `known` (the
        `fingerprints` of an earlier result), a job unchanged since is that result's model."""
        params: dict[str, str] = {}
        if company_handle is not None:
            params["companyHandle"] = company_handle
        if job_handle is not None:
            params["jobHandle"] = job_handle
        if original_name is not None:
            params["originalName"] = original_name
        if self.version.include_waiting_jobs:
            params["includeWaitingJobs"] = "true" if include_waiting_jobs else "false"
        reader = await self._call("getActiveJobs", params, keep_items=keep_items, known=known)
        check_job_array(reader.close())
        return reader.result()

    async def get_job_logs(
        self,
        company_handle: str | None = None,
        *,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        num_rows: int | None = None,
        sort_by: JobLogSortBy | None = None,
        sort_direction: SortDirection | None = None,
    ) -> JobLogsResult:
        """The job logs of finished jobs (getJobLogs), every parameter optional. Dates must be
        aware; they are sent in UTC. IPS has no paging: an answer of exactly `num_rows` logs
        may have left some out. `userHandle` is never sent: the logs of every user are wanted."""
        params: dict[str, str] = {}  # in the order of getJobLogsParam: Axis2 reads a sequence
        if company_handle is not None:
            params["companyHandle"] = company_handle
        if sort_by is not None:
            params["sortBy"] = str(sort_by)
        if sort_direction is not None:
            params["sortDirection"] = str(sort_direction)
        if start_date is not None:
            params["startDate"] = xs_date_time(start_date)
        if end_date is not None:
            params["endDate"] = xs_date_time(end_date)
        if num_rows is not None:
            if isinstance(num_rows, bool) or not 1 <= num_rows <= XS_INT_MAX:
                raise ValueError(f"num_rows must be an int from 1 to {XS_INT_MAX}, not {num_rows!r}")
            params["numRows"] = str(num_rows)
        reader = await self._call("getJobLogs", params)
        check_job_log_array(reader.close())
        return reader.job_logs()

    async def _call(
        self,
        operation: str,
        params: Mapping[str, str],
        *,
        keep_items: bool = True,
        known: Mapping[bytes, BaseModel] | None = None,
    ) -> ResponseReader:
        """Post one operation with retries; returns a reader that has been fed the whole
        answer (its `close()` yields the result or raises the fault)."""
        envelope = build_envelope(operation, self.version.name, params, self._auth)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry.deadline
        attempt = 0
        error: IpsError | None = None
        while True:
            clipped = deadline - loop.time() < self.retry.attempt_timeout
            try:
                reader = ResponseReader(operation, keep_items=keep_items, known=known)
                return await self._attempt(operation, envelope, reader, deadline)
            except IpsError as exc:
                if clipped and isinstance(exc, IpsTimeout) and error is not None:
                    # Only the time left ran out: report what kept failing (a refused
                    # certificate, a 503), not a timeout IPS never caused.
                    raise error from None
                if not exc.retryable:
                    raise
                error = exc
            delay = self.retry.backoff(attempt)
            if loop.time() + delay >= deadline:
                raise error
            log.debug("%s attempt %d failed (%s), retrying in %.2fs", operation, attempt + 1,
                      tame(str(error), self.secrets), delay)
            await asyncio.sleep(delay)
            if loop.time() >= deadline:  # the sleep overshot (a busy loop): report what kept failing
                raise error
            attempt += 1

    async def _attempt(
        self, operation: str, envelope: bytes, reader: ResponseReader, deadline: float
    ) -> ResponseReader:
        """One request. The deadline is kept by httpx's own timeouts and a check between body
        chunks, never by cancelling httpx mid-request: a cancelled request can leave its
        connection checked out of the pool for good (httpcore), and a pool that fills up so
        wedges every later poll."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise IpsTimeout(f"{operation}: no answer within the deadline")
        headers = {
            "Content-Type": SOAP11_CONTENT_TYPE,
            "SOAPAction": operation,
            "Accept-Encoding": "gzip",
            "User-Agent": f"{APP_NAME}/{__version__}",
        }
        received = 0
        turn_started = loop.time()
        # Reaching IPS and sending the request get an attempt's time; once sent, the answer may
        # take what is left of the deadline, as a timed-out read is not asked again.
        reaching = min(self.retry.attempt_timeout, remaining)
        try:
            async with self._http.stream(
                "POST", self.endpoint, content=envelope, headers=headers,
                timeout=httpx.Timeout(reaching, read=remaining),
            ) as response:
                content_type = response.headers.get("content-type", "")
                if response.status_code == 407:
                    raise HttpStatusError(407, PROXY_REFUSED)
                if response.status_code >= 300 and "xml" not in content_type:
                    raise HttpStatusError(response.status_code, content_type.split(";")[0])
                try:
                    async for chunk in response.aiter_bytes():
                        if loop.time() > deadline:  # a trickle that never trips the read timeout
                            raise IpsTimeout(f"{operation}: answer not complete within the deadline", reached_ips=True)
                        if received + len(chunk) > self.max_response_bytes:
                            raise OversizedResponse(
                                f"{operation}: answer larger than {self.max_response_bytes} bytes"
                            )
                        if not self.budget.take(len(chunk)):
                            raise OversizedResponse(
                                f"{operation}: the answers being read together passed "
                                f"poll.max_total_response_size ({self.budget.limit} bytes)"
                            )
                        received += len(chunk)
                        for start in range(0, len(chunk), FEED_SLICE):
                            reader.feed(chunk[start : start + FEED_SLICE])
                            if loop.time() - turn_started > FEED_TURN_SECONDS:
                                await asyncio.sleep(0)
                                turn_started = loop.time()
                except (httpx.RemoteProtocolError, httpx.DecodingError, httpx.ReadError) as exc:
                    raise MalformedResponse(f"{operation}: truncated answer ({type(exc).__name__})") from None
                if response.status_code >= 300:
                    # A SOAP fault is the expected content of an error status: close() raises it.
                    reader.close()
                    raise HttpStatusError(response.status_code, "SOAP answer without fault")
        except httpx.TimeoutException as exc:
            raise IpsTimeout(f"{operation}: timed out", reached_ips=isinstance(exc, httpx.ReadTimeout)) from None
        except httpx.ProxyError as exc:  # the proxy refused the CONNECT of an https endpoint
            if "407" in str(exc):
                raise HttpStatusError(407, PROXY_REFUSED) from None
            raise IpsConnectionError(f"{operation}: the proxy failed: {exc}") from None
        except httpx.TransportError as exc:
            raise IpsConnectionError(f"{operation}: {type(exc).__name__}: {exc}") from None
        finally:
            self.budget.give(received)  # read into the reader: the parsed jobs are what is left
        return reader
