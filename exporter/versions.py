"""What each IPS API version has: the one table the client, the parser and the simulator read.

The API version is chosen by the namespace of the request's body element, and IPS runs on
Axis2, whose generated parsers refuse an element the version's schema does not define: so what
a version has decides what the client may send and what an answer can hold. Every such fact
lives here, with the version it appeared in (see README "IPS API versions").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The common namespace of authHeader and the faults; before API 4.0 (2008) also the namespace of
# every operation.
IPS_COMMON_NS = "http://www.scene7.com/IpsApi/xsd"
IPS_VERSIONED_PREFIX = IPS_COMMON_NS + "/"

DOCUMENTED_VERSIONS = (
    "2008-01-15", "2008-09-10", "2009-07-31", "2010-01-31", "2012-02-14", "2013-02-15", "2014-04-03",
)
LATER_VERSIONS = ("2016-01-14-beta", "2017-10-29-beta", "2021-04-26-beta", "2022-11-01-beta")
KNOWN_VERSIONS = DOCUMENTED_VERSIONS + LATER_VERSIONS
DEFAULT_API_VERSION = "2014-04-03"
# Releases before 4.0 (2008) had no version in the namespace: the common one. It has the least of
# every feature, so its name sorts before every date.
UNVERSIONED = ""

_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-[A-Za-z0-9]+)?")


@dataclass(frozen=True)
class ApiVersion:
    """One API version and what its schema has. Versions compare by date, so a later version
    not listed above gets everything its date implies."""

    name: str

    def __post_init__(self) -> None:
        if self.name != UNVERSIONED and not _VERSION.fullmatch(self.name):
            raise ValueError(f'not an IPS API version: {self.name!r} (looks like "{DEFAULT_API_VERSION}")')

    def _since(self, version: str) -> bool:
        return self.name >= version  # ISO dates compare as strings; "-beta" sorts after the date

    @property
    def namespace(self) -> str:
        return IPS_VERSIONED_PREFIX + self.name if self.name != UNVERSIONED else IPS_COMMON_NS

    @property
    def task_state(self) -> bool:
        """TaskProgress `taskState` and `triggerTime` (IPS 6.0)."""
        return self._since("2012-02-14")

    @property
    def membership_array(self) -> bool:
        """getCompanyMembership answers `membershipArray` of CompanyMembership; before,
        `companyArray` of Company."""
        return self._since("2012-02-14")

    @property
    def include_waiting_jobs(self) -> bool:
        """getActiveJobsParam `includeWaitingJobs`: confirmed in the 2016-01-14-beta schema."""
        return self._since("2016-01-14-beta")

    @property
    def job_log_descriptions(self) -> bool:
        """JobLog `originalJobName`, `jobSubType` and `description` (4.0)."""
        return self._since("2008-01-15")

    @property
    def job_log_transfer_counts(self) -> bool:
        """JobLog `transferSuccessCount`, `transferErrorCount`, `transferWarningCount` (4.4)."""
        return self._since("2009-07-31")


def api_namespace(api_version: str) -> str:
    """The namespace of an API version: `http://www.scene7.com/IpsApi/xsd/<version>`."""
    return ApiVersion(api_version).namespace


def version_of_namespace(namespace: str | None) -> str | None:
    """`2014-04-03` of `http://www.scene7.com/IpsApi/xsd/2014-04-03`, UNVERSIONED of the common
    namespace; None if not an IPS namespace."""
    if namespace == IPS_COMMON_NS:
        return UNVERSIONED
    if namespace is None or not namespace.startswith(IPS_VERSIONED_PREFIX):
        return None
    version = namespace[len(IPS_VERSIONED_PREFIX) :]
    return version if _VERSION.fullmatch(version) else None


def is_ips_namespace(namespace: str | None) -> bool:
    """True for the common IPS namespace and for every versioned one."""
    return namespace is not None and (
        namespace == IPS_COMMON_NS or namespace.startswith(IPS_VERSIONED_PREFIX)
    )
