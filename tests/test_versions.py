"""The table of API versions, and the messages the errors carry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from servers import Clock, simulated

from exporter.client import IpsClient
from exporter.errors import ApiFault, AuthenticationFault, HttpStatusError, IpsTimeout, MalformedResponse, Reason
from exporter.versions import (
    DEFAULT_API_VERSION,
    IPS_COMMON_NS,
    KNOWN_VERSIONS,
    UNVERSIONED,
    ApiVersion,
    api_namespace,
    is_ips_namespace,
    version_of_namespace,
)


def test_what_each_version_has():
    has = {v: (ApiVersion(v).task_state, ApiVersion(v).membership_array, ApiVersion(v).include_waiting_jobs)
           for v in ("2010-01-31", "2012-02-14", "2014-04-03", "2016-01-14-beta", "2022-11-01-beta")}
    assert has == {
        "2010-01-31": (False, False, False),
        "2012-02-14": (True, True, False),
        "2014-04-03": (True, True, False),
        "2016-01-14-beta": (True, True, True),
        "2022-11-01-beta": (True, True, True),
    }
    assert [v for v in KNOWN_VERSIONS if not ApiVersion(v).job_log_transfer_counts] == ["2008-01-15", "2008-09-10"]
    assert all(ApiVersion(v).job_log_descriptions for v in KNOWN_VERSIONS)
    assert DEFAULT_API_VERSION in KNOWN_VERSIONS


@pytest.mark.parametrize("name", ["2014-4-3", "latest", "2014-04-03/x", "2014-04-03-"])
def test_a_malformed_version_is_refused_with_an_example(name):
    with pytest.raises(ValueError, match=f'not an IPS API version: {name!r} \\(looks like "2014-04-03"\\)'):
        ApiVersion(name)


def test_namespaces_and_back():
    assert api_namespace("2016-01-14-beta") == "http://www.scene7.com/IpsApi/xsd/2016-01-14-beta"
    assert version_of_namespace(api_namespace("2016-01-14-beta")) == "2016-01-14-beta"
    for namespace in (None, "urn:other", IPS_COMMON_NS + "/latest", IPS_COMMON_NS + "/2014-04-03x"):
        assert version_of_namespace(namespace) is None, namespace
    # Before 4.0, the common namespace was every operation's: the version with the least of all.
    assert version_of_namespace(IPS_COMMON_NS) == UNVERSIONED
    assert ApiVersion(UNVERSIONED).namespace == IPS_COMMON_NS
    unversioned = ApiVersion(UNVERSIONED)
    assert not (unversioned.task_state or unversioned.membership_array or unversioned.include_waiting_jobs
                or unversioned.job_log_descriptions or unversioned.job_log_transfer_counts)
    assert is_ips_namespace(IPS_COMMON_NS) and is_ips_namespace(api_namespace("2008-01-15"))
    assert not is_ips_namespace(None) and not is_ips_namespace("urn:other")
    assert not is_ips_namespace("http://www.scene7.com/IpsApi/xsdother")


def test_error_messages_and_reasons():
    assert str(HttpStatusError(502)) == "HTTP 502"
    assert str(HttpStatusError(502, "text/html")) == "HTTP 502: text/html"
    assert str(AuthenticationFault(10001, "Invalid credentials")) == "authenticationFault 10001: Invalid credentials"
    assert str(ApiFault(None, "Unexpected subelement")) == "ipsApiFault -: Unexpected subelement"
    assert (HttpStatusError(429).retryable, HttpStatusError(503).retryable, HttpStatusError(404).retryable) == (
        True, True, False)
    assert IpsTimeout("x").retryable and not MalformedResponse("x").retryable
    assert MalformedResponse("x").reason is Reason.MALFORMED


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
async def test_the_client_speaks_every_version_to_a_server_as_strict_as_axis2(version):
    clock = Clock(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    has = ApiVersion(version)
    async with simulated(clock, jobs=20, seed=5) as sim, \
            IpsClient(sim.url, "demo@example.com", "demo", api_version=version) as client:
        memberships = await client.get_company_memberships()
        assert [m.company.name for m in memberships] == [c.name for c in sim.world.companies]
        assert [m.company.company_handle for m in memberships] == [c.handle for c in sim.world.companies]
        assert all(m.is_active for m in memberships)
        now = sim.world.advance()
        for company in sim.world.companies:
            result = await client.get_active_jobs(company.handle, keep_items=False)
            expected = sim.world.active_jobs(company.handle, include_waiting=has.include_waiting_jobs)
            assert [job.job_handle for job in result.jobs] == [job.handle for job in expected]
            states = [task.known_state.value for job in result.jobs for task in job.task_progress_array]
            truth = [task.state for job in expected for task in job.status(now).tasks]
            assert states == (truth if has.task_state else ["Unknown"] * len(truth))


async def test_an_element_the_version_lacks_is_an_api_fault_with_axis2s_words():
    # What every poll of a default installation got when includeWaitingJobs went to 2014-04-03.
    async with simulated() as sim, IpsClient(sim.url, "demo@example.com", "demo", api_version="2014-04-03") as client:
        with pytest.raises(ApiFault) as refused:
            await client._call("getActiveJobs", {"includeWaitingJobs": "true"})
    assert refused.value.reason is Reason.API_FAULT and refused.value.code is None
    assert str(refused.value) == ("ipsApiFault -: org.apache.axis2.databinding.ADBException: Unexpected subelement "
                                  "{http://www.scene7.com/IpsApi/xsd/2014-04-03}includeWaitingJobs")
