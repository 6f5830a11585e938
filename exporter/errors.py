"""What can go wrong when talking to IPS, as a small hierarchy the poller counts by `reason`.

Each class carries the `reason` label value of `scene7_poll_errors_total`. Messages carry the
fault code and IPS's reason text, never a credential.
"""

from __future__ import annotations

from typing import ClassVar


class IpsError(Exception):
    """Base of every failure of an IPS call."""

    reason: ClassVar[str] = "malformed"
    retryable: ClassVar[bool] = False


class IpsFault(IpsError):
    """A SOAP fault answered by IPS, with the code and reason from its `detail`."""

    element: ClassVar[str] = "ipsApiFault"

    def __init__(self, code: int | None, fault_reason: str) -> None:
        self.code = code
        self.fault_reason = fault_reason
        super().__init__(f"{self.element} {code if code is not None else '-'}: {fault_reason}")


class AuthenticationFault(IpsFault):
    """Codes 10000-10002: no, invalid or unknown credentials. Never retried."""

    reason = "authentication"
    element = "authenticationFault"


class AuthorizationFault(IpsFault):
    """Codes 20000-20009: the user may not do this for this company. Never retried."""

    reason = "authorization"
    element = "authorizationFault"


class ApiFault(IpsFault):
    """Codes 30000-30003, or a SOAP fault without an IPS detail."""

    reason = "api_fault"
    element = "ipsApiFault"


class HttpStatusError(IpsError):
    """A non-SOAP HTTP error answer, such as a proxy's HTML 502 page or a 401."""

    reason = "http"

    def __init__(self, status: int, detail: str = "") -> None:
        self.status = status
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))

    @property
    def transient(self) -> bool:
        """5xx and 429 may pass; other statuses will not change by asking again."""
        return self.status >= 500 or self.status == 429


class IpsTimeout(IpsError):
    """IPS did not answer within the timeout."""

    reason = "timeout"
    retryable = True


class IpsConnectionError(IpsError):
    """IPS could not be reached: DNS failure, refused or reset connection, TLS failure."""

    reason = "connection"
    retryable = True


class MalformedResponse(IpsError):
    """The answer is not the SOAP document expected: broken, truncated or hostile XML."""

    reason = "malformed"


class OversizedResponse(IpsError):
    """The answer grew past the configured response size cap and was cut off."""

    reason = "oversized"


FAULT_CLASSES: dict[str, type[IpsFault]] = {
    cls.element: cls for cls in (AuthenticationFault, AuthorizationFault, ApiFault)
}

ERROR_REASONS: tuple[str, ...] = (
    "timeout",
    "connection",
    "http",
    "authentication",
    "authorization",
    "api_fault",
    "malformed",
    "oversized",
    "skipped",
)
