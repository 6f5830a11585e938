"""What can go wrong when polling IPS: the reasons counted, and the errors that carry them.

`Reason` is the `reason` label of `scene7_poll_errors_total`: every value is exported for every
company (0 included), the dashboards and README list the same values. Each error class carries
its reason and whether asking again may help (`retryable`, the client's only retry rule).
Messages carry the fault code and IPS's reason text, never a credential: IPS text is untrusted
and may echo the request, so `tame()` masks the password in it and bounds it before it is
logged or stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import ClassVar

MAX_TEXT = 512  # characters of IPS-derived text kept for a log line, a page or the store
_PASSWORD_ELEMENT = re.compile(r"(<(?:[\w.-]+:)?password\b[^>]*>).*?(</(?:[\w.-]+:)?password\s*>)", re.I | re.S)
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def tame(text: str, secrets: Iterable[str] = ()) -> str:
    """IPS-derived `text` fit for a log line or a page: every `<password>` element and every
    secret masked, on one line (control characters shown as `?`), at most MAX_TEXT characters."""
    text = _PASSWORD_ELEMENT.sub(r"\1***\2", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _CONTROL.sub("?", _LINE_BREAKS.sub(" ", text).strip())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class Reason(StrEnum):
    """Why a poll failed, or did not run."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP = "http"
    AUTHENTICATION = "authentication"
    AUTHORIZATION = "authorization"
    API_FAULT = "api_fault"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    SKIPPED = "skipped"  # a scheduled poll did not start: the previous one still ran
    INTERNAL = "internal"  # a bug of the exporter, not a problem of IPS


class IpsError(Exception):
    """Base of every failure of an IPS call."""

    reason: ClassVar[Reason] = Reason.MALFORMED

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again."""
        return False


class IpsFault(IpsError):
    """A SOAP fault answered by IPS, with the code and reason from its `detail`."""

    element: ClassVar[str] = "ipsApiFault"

    def __init__(self, code: int | None, fault_reason: str) -> None:
        self.code = code
        self.fault_reason = fault_reason
        super().__init__(f"{self.element} {code if code is not None else '-'}: {fault_reason}")


class AuthenticationFault(IpsFault):
    """Codes 10000-10002: no, invalid or unknown credentials. Never retried."""

    reason = Reason.AUTHENTICATION
    element = "authenticationFault"


class AuthorizationFault(IpsFault):
    """Codes 20000-20009: the user may not do this for this company. Never retried."""

    reason = Reason.AUTHORIZATION
    element = "authorizationFault"


class ApiFault(IpsFault):
    """Codes 30000-30003, or a SOAP fault without an IPS detail."""

    reason = Reason.API_FAULT
    element = "ipsApiFault"


class HttpStatusError(IpsError):
    """A non-SOAP HTTP error answer, such as a proxy's HTML 502 page or a 401."""

    reason = Reason.HTTP

    def __init__(self, status: int, detail: str = "") -> None:
        self.status = status
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))

    @property
    def retryable(self) -> bool:
        """5xx and 429 may pass; other statuses will not change by asking again."""
        return self.status >= 500 or self.status == 429


class IpsTimeout(IpsError):
    """IPS did not answer within the timeout.

    Asked again only if the request never reached IPS (no connection in time). A request IPS
    got may still be running there: sending it again would add the same work to a server that is
    slow already (a 10,000-job getActiveJobs is seconds of its time), and the answer to the
    second would wait behind the first."""

    reason = Reason.TIMEOUT

    def __init__(self, message: str, *, reached_ips: bool = False) -> None:
        super().__init__(message)
        self.reached_ips = reached_ips

    @property
    def retryable(self) -> bool:
        return not self.reached_ips


class IpsConnectionError(IpsError):
    """IPS could not be reached: DNS failure, refused or reset connection, TLS failure."""

    reason = Reason.CONNECTION

    @property
    def retryable(self) -> bool:
        return True


class MalformedResponse(IpsError):
    """The answer is not the SOAP document expected: broken, truncated or hostile XML."""

    reason = Reason.MALFORMED


class OversizedResponse(IpsError):
    """The answer grew past the configured response size cap and was cut off."""

    reason = Reason.OVERSIZED


FAULT_CLASSES: dict[str, type[IpsFault]] = {
    cls.element: cls for cls in (AuthenticationFault, AuthorizationFault, ApiFault)
}


def forget_traceback(exc: BaseException) -> None:
    """Drop the frames an exception holds, once it has been handled. An exception kept by an
    object its frames hold makes a cycle: asyncio's stream and TLS objects keep the exception
    that ended them, the client's retry loop the last error it re-raises. Until a full garbage
    collection, the cycle holds everything those frames held: a dropped connection's buffers,
    the jobs a failed poll had read."""
    chain: BaseException | None = exc
    for _ in range(8):  # a chain is short; a bound in case one loops
        if chain is None:
            return
        chain.__traceback__ = None
        chain = chain.__cause__ or chain.__context__
