"""The IPS simulator: its SOAP answers against the schema, its living world on a stepped clock,
its authentication, its fault injection, and over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema
from lxml import etree
from servers import Clock
from support import median

from exporter.httpserver import Request
from exporter.simulator import FaultKind, FaultPlan, Simulator, SimulatorConfig, SimulatorServer, World
from exporter.simulator.responses import RequestError, Responder, SoapFault, fault_answer, parse_request
from exporter.simulator.world import AUTOSET_TASK, PUBLISH_TYPES, TASK_STATES, UPLOAD_TASK, UPLOAD_TYPES, Job
from exporter.soap import (
    IPS_COMMON_NS,
    SOAP11_ENV,
    SOAP12_ENV,
    ForbiddenXML,
    PrologGuard,
    api_namespace,
    local_name,
)
from exporter.versions import KNOWN_VERSIONS, UNVERSIONED, ApiVersion

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).parent / "data"
XSD = DATA / "ips-jobs.xsd"
NS_2014 = api_namespace("2014-04-03")
WAITING = "2016-01-14-beta"  # the first version that has includeWaitingJobs
NS_2010 = api_namespace("2010-01-31")
USER, PASSWORD = "demo@example.com", "demo"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STALE = 45 * 60

ACTIVE_JOB_ORDER = [
    "companyHandle",
    "jobHandle",
    "name",
    "originalName",
    "type",
    "state",
    "submitUserEmail",
    "locale",
    "description",
    "serverName",
    "startDate",
    "triggerTime",
    "totalSize",
    "progress",
    "progressMessage",
    "lastProgressUpdate",
    "taskProgressArray",
]


# -- schema ----------------------------------------------------------------------------------

_EMPTY_RETURNS = ("stopJob", "pauseJob", "resumeJob")
# The responses ips-jobs.xsd does not declare, built from its own types.
EXTRA_ELEMENTS = f"""
  <xs:element name="getCompanyInfoReturn">
    <xs:complexType><xs:sequence>
      <xs:element name="companyInfo" type="t:Company"/>
    </xs:sequence></xs:complexType>
  </xs:element>
  {"".join(f'<xs:element name="{op}Return"><xs:complexType/></xs:element>' for op in _EMPTY_RETURNS)}
"""


def _schema(xsd_text: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(xsd_text.replace("</xs:schema>", EXTRA_ELEMENTS + "</xs:schema>"))


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return _schema(XSD.read_text())


@pytest.fixture(scope="module")
def schema_2010() -> xmlschema.XMLSchema:
    """The same schema with taskState optional: the shape of the API before 2012-02-14."""
    text = XSD.read_text()
    strict = '<xs:element name="taskState" type="t:TaskState"/>'
    assert strict in text
    return _schema(text.replace(strict, '<xs:element name="taskState" type="t:TaskState" minOccurs="0"/>'))


def operation_element(document: bytes, envelope: str = SOAP11_ENV) -> etree._Element:
    root = etree.fromstring(document)
    assert root.tag == f"{{{envelope}}}Envelope"
    body = root.find(f"{{{envelope}}}Body")
    assert body is not None
    return body[0]


def as_2014(element: etree._Element) -> etree._Element:
    """A copy of `element` with every versioned IPS namespace rewritten to 2014-04-03."""
    copy = etree.fromstring(etree.tostring(element))
    for el in copy.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{http://www.scene7.com/IpsApi/xsd/"):
            el.tag = f"{{{NS_2014}}}{local_name(el.tag)}"
    etree.cleanup_namespaces(copy)
    return etree.fromstring(etree.tostring(copy))


def assert_valid(schema: xmlschema.XMLSchema, document: bytes, envelope: str = SOAP11_ENV) -> etree._Element:
    element = operation_element(document, envelope)
    schema.validate(as_2014(element))
    return element


def find_all(element: etree._Element, path: str) -> list[etree._Element]:
    """Children by a path of local names, in any namespace."""
    found = [element]
    for name in path.split("/"):
        found = [child for parent in found for child in parent if local_name(child.tag) == name]
    return found


def text(element: etree._Element, name: str) -> str | None:
    for child in element:
        if local_name(child.tag) == name:
            return child.text or ""
    return None


def jobs_of(document: bytes, envelope: str = SOAP11_ENV) -> list[etree._Element]:
    return find_all(operation_element(document, envelope), "jobArray/items")


def fault_of(document: bytes, envelope: str = SOAP11_ENV) -> tuple[str, int, str]:
    """(fault element, code, reason) of a SOAP fault answer, checked structurally."""
    fault = operation_element(document, envelope)
    assert fault.tag == f"{{{envelope}}}Fault"
    if envelope == SOAP11_ENV:
        assert text(fault, "faultcode") == "soapenv:Server"
        assert text(fault, "faultstring")
        detail = fault.find("detail")
    else:
        assert fault.find(f"{{{envelope}}}Code/{{{envelope}}}Value") is not None
        assert fault.find(f"{{{envelope}}}Reason/{{{envelope}}}Text") is not None
        detail = fault.find(f"{{{envelope}}}Detail")
    assert detail is not None and len(detail) == 1
    ips = detail[0]
    assert ips.tag.startswith(f"{{{IPS_COMMON_NS}}}")
    code, reason = ips.find(f"{{{IPS_COMMON_NS}}}code"), ips.find(f"{{{IPS_COMMON_NS}}}reason")
    assert code is not None and reason is not None and code.text is not None
    return local_name(ips.tag), int(code.text), reason.text or ""


# -- requests --------------------------------------------------------------------------------


def envelope(
    operation: str,
    params: dict[str, str] | None = None,
    *,
    version: str = "2014-04-03",
    auth: str | None = "common",
    user: str = USER,
    password: str = PASSWORD,
    soap12: bool = False,
    header_extra: dict[str, str] | None = None,
) -> bytes:
    """A request as a client writes it; `auth` is "common", "versioned" or None (no header)."""
    env = SOAP12_ENV if soap12 else SOAP11_ENV
    namespace = api_namespace(version)
    root = etree.Element(f"{{{env}}}Envelope", nsmap={"soap": env})
    if auth is not None:
        header = etree.SubElement(root, f"{{{env}}}Header")
        auth_ns = IPS_COMMON_NS if auth == "common" else namespace
        auth_el = etree.SubElement(header, f"{{{auth_ns}}}authHeader", nsmap={"ips": auth_ns})
        fields = {"user": user, "password": password, "appName": "tests", "appVersion": "1"}
        for name, value in {**fields, **(header_extra or {})}.items():
            etree.SubElement(auth_el, f"{{{auth_ns}}}{name}").text = value
    body = etree.SubElement(root, f"{{{env}}}Body")
    param = etree.SubElement(body, f"{{{namespace}}}{operation}Param", nsmap={"ns1": namespace})
    for name, value in (params or {}).items():
        etree.SubElement(param, f"{{{namespace}}}{name}").text = value
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def answer(
    responder: Responder,
    operation: str,
    params: dict[str, str] | None = None,
    *,
    version: str = "2014-04-03",
    soap12: bool = False,
) -> bytes:
    """The body the simulator's server sends: a request it cannot read gets its fault."""
    try:
        request = parse_request(envelope(operation, params, version=version, soap12=soap12))
    except RequestError as refused:
        return fault_answer(refused.envelope, refused.fault).body()
    return responder.answer(request).body()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def world(clock: Clock) -> World:
    return World(SimulatorConfig(seed=11), clock)


@pytest.fixture
def responder(world: World) -> Responder:
    return Responder(world)


@pytest.fixture
async def server(clock: Clock) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(seed=5), clock=clock, warm_up=False) as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


async def post(client: httpx.AsyncClient, server: SimulatorServer, body: bytes, **headers: str) -> httpx.Response:
    content_type = "application/soap+xml; charset=UTF-8" if SOAP12_ENV.encode() in body else "text/xml; charset=UTF-8"
    return await client.post(server.url, content=body, headers={"content-type": content_type, **headers})


# -- answers against the schema --------------------------------------------------------------


def test_active_jobs_2014_valid_in_order_and_in_the_request_namespace(
    responder: Responder, schema: xmlschema.XMLSchema
) -> None:
    document = answer(responder, "getActiveJobs")
    ret = assert_valid(schema, document)
    assert ret.tag == f"{{{NS_2014}}}getActiveJobsReturn"
    jobs = find_all(ret, "jobArray/items")
    assert len(jobs) >= 20
    types = set()
    for job in jobs:
        names = [local_name(child.tag) for child in job]
        fixed = [name for name in names if name in ACTIVE_JOB_ORDER]
        assert fixed == [name for name in ACTIVE_JOB_ORDER if name in fixed]
        assert "triggerTime" in names
        assert len(names) - len(fixed) <= 1  # at most one job-detail element, last
        if len(names) > len(fixed):
            assert names[-1].endswith("Job")
        job_type = text(job, "type")
        types.add(job_type)
        tasks = find_all(job, "taskProgressArray/items")
        task_types = [text(task, "taskType") for task in tasks]
        if job_type in UPLOAD_TYPES:
            assert task_types == [UPLOAD_TASK, AUTOSET_TASK]
        elif job_type in PUBLISH_TYPES:
            assert task_types == []
        else:
            assert len(task_types) == 1 and (task_types[0] or "").startswith("com.scene7.simulated.")
        for task in tasks:
            assert [local_name(c.tag) for c in task][1] == "taskState"
            counts = [int(text(task, name) or "") for name in ("numProcessed", "numProcessing", "numPending")]
            items = find_all(task, "taskItemProgressArray/items")
            assert sum(counts) == len(items)
            for item in items:
                assert 0.0 <= float(text(item, "progress") or "") <= 1.0
    assert len(types) >= 3
    # dates carry milliseconds and the server's offset
    start = text(jobs[0], "startDate") or ""
    assert datetime.fromisoformat(start).utcoffset() == timedelta(hours=-5)
    assert len(start.split(".")[1]) == len("000-05:00")


def test_every_answer_shows_each_job_as_it_is_now(world: World, responder: Responder, clock: Clock) -> None:
    """The simulator keeps each job's serialized element until the job changes: an answer must
    still show every job's state and counts of the moment, whether it changed or not."""
    changed_between_answers = 0
    previous: dict[str, bytes] = {}
    for _ in range(6):
        document = answer(responder, "getActiveJobs", version=WAITING)
        now = world.now
        by_handle = {job.handle: job for job in world.active_jobs(include_waiting=True)}
        shown = jobs_of(document)
        assert [text(job, "jobHandle") for job in shown] == list(by_handle)
        for element in shown:
            handle = text(element, "jobHandle") or ""
            status = by_handle[handle].status(now)
            assert text(element, "state") == status.state
            tasks = find_all(element, "taskProgressArray/items")
            counts = ("numProcessed", "numProcessing", "numPending")
            assert [(text(task, "taskState"), *(int(text(task, n) or "") for n in counts)) for task in tasks] == [
                (t.state, t.processed, t.processing, t.pending) for t in status.tasks
            ]
            serialized = etree.tostring(element)
            changed_between_answers += handle in previous and previous[handle] != serialized
            previous[handle] = serialized
        clock.step(seconds=20)
    assert changed_between_answers >= 10


def test_publish_jobs_have_an_empty_task_array(world: World, responder: Responder) -> None:
    document = answer(responder, "getActiveJobs")
    publish = [job for job in jobs_of(document) if text(job, "type") in PUBLISH_TYPES]
    assert publish  # seed 11 has some at T0
    assert all(len(find_all(job, "taskProgressArray")[0]) == 0 for job in publish)
    assert b"<taskProgressArray/>" in document


def test_active_jobs_2010_have_no_task_state_nor_trigger_time(
    responder: Responder, schema: xmlschema.XMLSchema, schema_2010: xmlschema.XMLSchema
) -> None:
    document = answer(responder, "getActiveJobs", version="2010-01-31")
    ret = assert_valid(schema_2010, document)
    assert ret.tag == f"{{{NS_2010}}}getActiveJobsReturn"
    assert b"taskState" not in document and b"triggerTime" not in document
    assert find_all(ret, "jobArray/items/taskProgressArray/items")
    # the relaxed schema is the old shape: the real 2010 captures pass it, not the strict one
    capture = (DATA / "captures" / "get_active_jobs-one_publish_job.xml").read_bytes()
    assert_valid(schema_2010, capture)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        assert_valid(schema, capture)


def test_soap12_request_gets_a_soap12_answer(responder: Responder, schema: xmlschema.XMLSchema) -> None:
    document = answer(responder, "getCompanyMembership", soap12=True)
    assert_valid(schema, document, SOAP12_ENV)


def test_company_membership_and_info(world: World, responder: Responder, schema: xmlschema.XMLSchema) -> None:
    ret = assert_valid(schema, answer(responder, "getCompanyMembership"))
    companies = find_all(ret, "membershipArray/items/company")
    handles = [text(c, "companyHandle") for c in companies]
    assert handles == ["c|110", "47", "c|2001"]
    names = [text(c, "name") for c in companies]
    assert 'Bits & "Bytes" <EU>' in names  # escaped on the wire, intact once parsed
    for company in world.companies:
        by_handle = assert_valid(schema, answer(responder, "getCompanyInfo", {"companyHandle": company.handle}))
        by_name = assert_valid(schema, answer(responder, "getCompanyInfo", {"companyName": company.name}))
        for ret in (by_handle, by_name):
            info = find_all(ret, "companyInfo")[0]
            assert text(info, "companyHandle") == company.handle
            assert text(info, "name") == company.name
    unknown = answer(responder, "getCompanyInfo", {"companyHandle": "c|999"})
    assert fault_of(unknown)[:2] == ("authorizationFault", 20000)
    missing = answer(responder, "getCompanyInfo")
    assert fault_of(missing)[:2] == ("ipsApiFault", 30002)


def test_stop_pause_resume_answers_validate(responder: Responder, world: World, schema: xmlschema.XMLSchema) -> None:
    world.advance()
    job = next(j for j in world.active_jobs() if j.status(world.now).state == "Running")
    params = {"companyHandle": job.company.handle, "jobHandle": job.handle}
    for operation in ("pauseJob", "resumeJob", "stopJob"):
        ret = assert_valid(schema, answer(responder, operation, params))
        assert ret.tag == f"{{{NS_2014}}}{operation}Return" and len(ret) == 0
    unknown = answer(responder, "stopJob", {"companyHandle": job.company.handle, "jobHandle": "j|1||nope|1"})
    assert fault_of(unknown)[:2] == ("ipsApiFault", 30001)
    assert fault_of(answer(responder, "stopJob", {"companyHandle": job.company.handle}))[1] == 30002


# -- as strict as the real server, version by version ---------------------------------------


def plain_fault(document: bytes) -> str:
    """The faultstring of a SOAP 1.1 fault that has no IPS detail (Axis2's own refusals)."""
    fault = operation_element(document)
    assert fault.tag == f"{{{SOAP11_ENV}}}Fault" and fault.find("detail") is None
    return text(fault, "faultstring") or ""


@pytest.mark.parametrize("version", [UNVERSIONED, *KNOWN_VERSIONS])
def test_each_version_refuses_what_its_schema_lacks(responder: Responder, version: str) -> None:
    namespace = ApiVersion(version).namespace
    waiting = ApiVersion(version).include_waiting_jobs
    everything = {"companyHandle": "47", "jobHandle": "none", "originalName": "none"}
    assert jobs_of(answer(responder, "getActiveJobs", everything, version=version)) == []
    asked = answer(responder, "getActiveJobs", {"includeWaitingJobs": "true"}, version=version)
    if waiting:
        assert jobs_of(asked)
    else:
        assert plain_fault(asked) == ("org.apache.axis2.databinding.ADBException: Unexpected subelement "
                                      f"{{{namespace}}}includeWaitingJobs")


@pytest.mark.parametrize(("children", "refused"), [
    ([("jobHandle", NS_2014), ("companyHandle", NS_2014)], f"{{{NS_2014}}}companyHandle"),  # out of order
    ([("companyHandle", NS_2014), ("companyHandle", NS_2014)], f"{{{NS_2014}}}companyHandle"),  # twice
    ([("companyHandle", IPS_COMMON_NS)], f"{{{IPS_COMMON_NS}}}companyHandle"),  # another namespace
    ([("companyHandle", None)], "{}companyHandle"),  # no namespace
    ([("userHandle", NS_2014)], f"{{{NS_2014}}}userHandle"),  # another operation's
])
def test_a_request_element_out_of_its_schema_is_refused(children: list[tuple[str, str | None]], refused: str) -> None:
    root = etree.fromstring(envelope("getActiveJobs"))
    param = root.find(f"{{{SOAP11_ENV}}}Body/{{{NS_2014}}}getActiveJobsParam")
    assert param is not None
    for name, namespace in children:
        etree.SubElement(param, f"{{{namespace}}}{name}" if namespace else name).text = "47"
    with pytest.raises(RequestError) as refusal:
        parse_request(etree.tostring(root))
    assert refusal.value.fault == SoapFault(None, 0, f"org.apache.axis2.databinding.ADBException: "
                                                     f"Unexpected subelement {refused}")


@pytest.mark.parametrize("version", ["2010-01-31", "2012-02-14", UNVERSIONED])
def test_company_discovery_answers_in_the_shape_of_the_version(responder: Responder, world: World,
                                                               version: str) -> None:
    ret = operation_element(answer(responder, "getCompanyMembership", version=version))
    namespace = ApiVersion(version).namespace
    assert ret.tag == f"{{{namespace}}}getCompanyMembershipReturn"
    if ApiVersion(version).membership_array:  # 6.0 on: membershipArray of CompanyMembership
        items = find_all(ret, "membershipArray/items")
        names = [text(item.find(f"{{{namespace}}}company"), "name") for item in items]
        assert [text(item, "isActive") for item in items] == ["true"] * len(items)
    else:  # before: companyArray of Company, no role, no isActive
        assert [local_name(child.tag) for child in ret] == ["companyArray"]
        items = find_all(ret, "companyArray/items")
        names = [text(item, "name") for item in items]
        assert all(text(item, "role") is None and text(item, "companyHandle") for item in items)
    assert names == [company.name for company in world.companies]
    assert {child.tag.split("}")[0][1:] for item in items for child in item.iter()} == {namespace}


def test_the_unversioned_namespace_before_4_0_is_answered_in_kind(responder: Responder) -> None:
    jobs = jobs_of(answer(responder, "getActiveJobs", version=UNVERSIONED))
    assert jobs
    tags = {child.tag for job in jobs for child in job.iter()}
    assert all(tag.startswith(f"{{{IPS_COMMON_NS}}}") for tag in tags)
    tasks = [task for job in jobs for task in find_all(job, "taskProgressArray/items")]
    assert tasks and all(text(task, "taskState") is None for task in tasks)
    assert all(text(job, "triggerTime") is None for job in jobs)


# -- filters ---------------------------------------------------------------------------------


def test_filters(world: World, responder: Responder) -> None:
    everything = jobs_of(answer(responder, "getActiveJobs"))
    company = "47"
    only = jobs_of(answer(responder, "getActiveJobs", {"companyHandle": company}))
    assert only and all(text(j, "companyHandle") == company for j in only)
    assert len(only) == sum(text(j, "companyHandle") == company for j in everything)

    target = everything[3]
    handle = text(target, "jobHandle") or ""
    by_handle = jobs_of(answer(responder, "getActiveJobs", {"jobHandle": handle}))
    assert [text(j, "jobHandle") for j in by_handle] == [handle]

    original = text(target, "originalName") or ""
    by_original = jobs_of(answer(responder, "getActiveJobs", {"originalName": original}))
    assert by_original and all(text(j, "originalName") == original for j in by_original)

    unknown = answer(responder, "getActiveJobs", {"companyHandle": "nope"})
    assert fault_of(unknown)[:2] == ("authorizationFault", 20000)
    bad_flag = answer(responder, "getActiveJobs", {"includeWaitingJobs": "perhaps"}, version=WAITING)
    assert fault_of(bad_flag)[:2] == ("ipsApiFault", 30001)


def test_paused_jobs_are_waiting_jobs(world: World, responder: Responder, clock: Clock) -> None:
    world.advance()
    job = next(j for j in world.active_jobs() if j.status(world.now).state == "Running")
    params = {"companyHandle": job.company.handle, "jobHandle": job.handle}
    answer(responder, "pauseJob", params)
    clock.step(minutes=30)
    assert jobs_of(answer(responder, "getActiveJobs", {"jobHandle": job.handle})) == []
    waiting = jobs_of(answer(responder, "getActiveJobs", {"jobHandle": job.handle, "includeWaitingJobs": "true"},
                                version=WAITING))
    assert [text(j, "state") for j in waiting] == ["WaitingClient"]
    before = etree.tostring(waiting[0])
    clock.step(minutes=30)
    again = jobs_of(answer(responder, "getActiveJobs", {"jobHandle": job.handle, "includeWaitingJobs": "true"},
                                version=WAITING))
    assert etree.tostring(again[0]) == before  # a paused job does not move
    answer(responder, "resumeJob", params)
    resumed = jobs_of(answer(responder, "getActiveJobs", {"jobHandle": job.handle}))
    assert [text(j, "state") for j in resumed] == ["Running"]


# -- the living world ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [SimulatorConfig(), SimulatorConfig(seed=2, jobs=24, time_scale=30.0)],
    ids=["default", "demo"],
)
def test_every_state_and_a_stall_at_all_times_in_every_company(clock: Clock, config: SimulatorConfig) -> None:
    world = World(config, clock)
    seen_jobs: set[str] = set()
    first_jobs = {job.handle for job in world.active_jobs(include_waiting=True)}
    for _ in range(8 * 12):  # eight hours in five-minute steps
        now = world.advance()
        for company in world.companies:
            jobs = world.active_jobs(company.handle, include_waiting=True)
            statuses = [job.status(now) for job in jobs]
            task_states = {task.state for status in statuses for task in status.tasks}
            assert task_states == set(TASK_STATES), (company.handle, clock.now)
            stalled = [
                task
                for status in statuses
                for task in status.tasks
                if task.state == "Processing" and now - task.last_update > STALE
            ]
            assert stalled, (company.handle, clock.now)
            assert len({status.state for status in statuses}) >= 3
            seen_jobs.update(job.handle for job in jobs)
        clock.step(minutes=5)
    last_jobs = {job.handle for job in world.active_jobs(include_waiting=True)}
    assert first_jobs - last_jobs and last_jobs - first_jobs  # jobs left and arrived
    assert len(seen_jobs) > 2 * len(first_jobs)


def test_initial_world_has_history(world: World) -> None:
    now = world.advance()
    ages = [now - job.base for job in world.active_jobs(include_waiting=True)]
    assert min(ages) < 15 * 60 and max(ages) > 2 * 3600


def test_items_move_from_pending_to_processing_to_processed(world: World, clock: Clock) -> None:
    now = world.advance()

    def waiting_items(job: Job, index: int) -> list[str]:
        """Items not started yet that take long enough to be seen working at 10 s steps."""
        task, t = job.tasks[index], job.job_time(now)
        return [
            name
            for name, start, end in zip(task.names, task.starts, task.ends, strict=True)
            if start > t and end - start > 25
        ]

    candidates = [
        (job, index)
        for job in world.active_jobs()
        for index, task in enumerate(job.tasks)
        if task.fail_at is None and job.stop_at is None and len(waiting_items(job, index)) >= 2
    ]
    assert candidates
    job, index = candidates[0]
    task = job.tasks[index]
    tracked = waiting_items(job, index)
    history: dict[str, list[str]] = {name: [] for name in task.names}
    totals = set()
    states = []
    while job.active_at(world.advance()):
        status = job.status(world.now).tasks[index]
        states.append(status.state)
        totals.add(status.processed + status.processing + status.pending)
        for name, progress, message, _ in job.item_rows(task, status):
            if not history[name] or history[name][-1] != message:
                history[name].append(message)
            assert 0.0 <= progress <= 1.0
        clock.step(seconds=10)
    assert totals == {len(task.names)}
    assert states[-1] == "Done" and "Processing" in states
    assert all(history[name] == ["Waiting", "Processing", "Done"] for name in tracked), history
    assert all(h[-1] == "Done" for h in history.values())


def test_a_stalled_task_freezes(world: World, clock: Clock) -> None:
    now = world.advance()
    stalled = [
        (job, i)
        for job in world.active_jobs()
        for i, task in enumerate(job.status(now).tasks)
        if task.state == "Processing" and now - task.last_update > STALE
    ]
    assert stalled
    job, index = stalled[0]
    first = job.status(now).tasks[index]
    rows = job.item_rows(job.tasks[index], first)
    for _ in range(6):
        clock.step(minutes=5)
        later = job.status(world.advance()).tasks[index]
        if later.state != "Processing":
            break
        assert (later.progress, later.last_update, later.processed) == (
            first.progress,
            first.last_update,
            first.processed,
        )
        assert job.item_rows(job.tasks[index], later) == rows


def test_stop_job_drives_stopping_then_the_job_leaves(responder: Responder, world: World, clock: Clock) -> None:
    world.advance()
    job = next(j for j in world.active_jobs() if j.status(world.now).state == "Running" and j.kind == "random")
    answer(responder, "stopJob", {"companyHandle": job.company.handle, "jobHandle": job.handle})
    clock.step(seconds=5)
    [stopping] = jobs_of(answer(responder, "getActiveJobs", {"jobHandle": job.handle}))
    assert text(stopping, "state") == "Stopping"
    task_states = {text(t, "taskState") for t in find_all(stopping, "taskProgressArray/items")}
    assert "Stopping" in task_states and task_states <= {"Stopping", "Done", "Failed"}
    clock.step(minutes=4)
    assert jobs_of(answer(responder, "getActiveJobs", {"jobHandle": job.handle})) == []


def test_finished_jobs_linger_as_done_then_leave(world: World, clock: Clock) -> None:
    now = world.advance()
    done = [job for job in world.active_jobs() if job.status(now).state == "Done"]
    assert done
    job = done[0]
    assert all(t.state in ("Done", "Failed") for t in job.status(now).tasks)
    for _ in range(120):
        clock.step(minutes=1)
        if not job.active_at(world.advance()):
            break
    assert job.handle not in {j.handle for j in world.active_jobs(include_waiting=True)}


def test_time_scale_makes_jobs_live_minutes(clock: Clock) -> None:
    slow = World(SimulatorConfig(seed=4, jobs=200), clock)
    fast = World(SimulatorConfig(seed=4, jobs=200, time_scale=30), clock)

    def median_life(world: World) -> float:
        return median(job.leave_at for job in world.active_jobs(include_waiting=True) if job.kind == "random")

    assert median_life(slow) > 15 * 60
    assert median_life(fast) < min(3 * 60, median_life(slow) / 20)
    # timestamps stay wall time: the fast world's answers are dated at the clock
    now = fast.advance()
    assert all(now - 6 * 3600 < job.status(now).last_update <= now for job in fast.active_jobs())


def test_same_seed_same_steps_same_bytes(clock: Clock) -> None:
    other = Clock(T0)
    a, b = Responder(World(SimulatorConfig(seed=9), clock)), Responder(World(SimulatorConfig(seed=9), other))
    for step in range(12):
        docs = [answer(r, "getActiveJobs", {"includeWaitingJobs": "true"}, version=WAITING) for r in (a, b)]
        assert docs[0] == docs[1], step
        clock.step(seconds=97)
        other.step(seconds=97)
    # the world is a function of time: one that was not watched in between says the same
    late = Responder(World(SimulatorConfig(seed=9), Clock(T0)))
    late.world.clock = lambda: clock.now
    assert answer(late, "getActiveJobs", {"includeWaitingJobs": "true"}, version=WAITING) == answer(
        a, "getActiveJobs", {"includeWaitingJobs": "true"}, version=WAITING
    )
    different = Responder(World(SimulatorConfig(seed=10), Clock(clock.now)))
    assert answer(different, "getActiveJobs") != answer(a, "getActiveJobs")


def test_config_validation_and_repr() -> None:
    assert "s3cret" not in repr(SimulatorConfig(password="s3cret"))
    bad: list[dict[str, Any]] = [{"companies": 0}, {"jobs": -1}, {"time_scale": 0}, {"items_per_task": (5, 2)}]
    for fields in bad:
        with pytest.raises(ValueError):
            SimulatorConfig(**fields)
    world = World(SimulatorConfig(companies=8, keepers=False, jobs=0), Clock(T0))
    assert len({c.handle for c in world.companies}) == 8
    assert world.active_jobs(include_waiting=True) == []


def test_ten_thousand_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock(T0)
    started = time.perf_counter()
    world = World(SimulatorConfig(seed=1, jobs=10_000, companies=5), clock)
    built = time.perf_counter() - started
    responder = Responder(world)
    request = parse_request(envelope("getActiveJobs", {"includeWaitingJobs": "true"}, version=WAITING))
    timings = []
    for _ in range(3):  # cold (trees built), then warm (trees updated), a minute apart
        wall, cpu = time.perf_counter(), time.process_time()
        result = responder.answer(request)
        timings.append(f"{time.perf_counter() - wall:.2f}s ({time.process_time() - cpu:.2f}s CPU)")
        clock.step(seconds=60)
    body = result.body()
    jobs = body.count(b"<jobHandle>")
    assert 9_000 <= jobs <= 11_000
    assert result.size > 20_000_000 and len(result.chunks) > 100
    assert body.rstrip().endswith(b"</soapenv:Envelope>")
    assert len(jobs_of(body)) == jobs  # one well-formed document
    with capsys.disabled():
        print(
            f"\n10k world built in {built:.2f}s; getActiveJobs: {jobs} jobs, {result.size / 1e6:.1f} MB, "
            f"answers in {', '.join(timings)}"
        )


# -- requests that cannot be read ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<a><b></a>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
        b"<Envelope/>",
        envelope("getActiveJobs").replace(b"getActiveJobsParam", b"renameAssetParam"),
        envelope("getActiveJobs").replace(NS_2014.encode(), b"urn:other"),
    ],
)
def test_unreadable_requests_get_ips_api_fault_30003(body: bytes) -> None:
    simulator = Simulator(SimulatorConfig(seed=1, jobs=0, keepers=False), Clock(T0))
    response = asyncio.run(simulator.handle(Request("POST", "/scene7/services/IpsApiService", {}, {}, body, None)))
    assert response.status == 500
    assert isinstance(response.body, bytes)
    assert fault_of(response.body)[:2] == ("ipsApiFault", 30003)


# -- over HTTP: authentication, encoding, routing --------------------------------------------


async def test_auth_common_versioned_and_basic_are_accepted(
    server: SimulatorServer, client: httpx.AsyncClient, schema: xmlschema.XMLSchema
) -> None:
    for auth in ("common", "versioned"):
        response = await post(client, server, envelope("getCompanyMembership", auth=auth))
        assert response.status_code == 200, response.text
        assert_valid(schema, response.content)
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    response = await post(client, server, envelope("getCompanyMembership", auth=None), authorization=f"Basic {basic}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=UTF-8"


async def test_bad_credentials_get_authentication_fault(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    wrong = await post(client, server, envelope("getActiveJobs", password="wrong"))
    assert wrong.status_code == 500
    assert fault_of(wrong.content)[:2] == ("authenticationFault", 10001)
    asked = await post(
        client, server, envelope("getActiveJobs", password="wrong", header_extra={"faultHttpStatusCode": "200"})
    )
    assert asked.status_code == 200
    assert fault_of(asked.content)[:2] == ("authenticationFault", 10001)
    none = await post(client, server, envelope("getActiveJobs", auth=None))
    assert none.status_code == 500 and fault_of(none.content)[:2] == ("authenticationFault", 10000)
    basic = base64.b64encode(f"{USER}:nope".encode()).decode()
    bad_basic = await post(client, server, envelope("getActiveJobs", auth=None), authorization=f"Basic {basic}")
    assert fault_of(bad_basic.content)[:2] == ("authenticationFault", 10001)
    soap12 = await post(client, server, envelope("getActiveJobs", password="wrong", soap12=True))
    assert soap12.headers["content-type"].startswith("application/soap+xml")
    assert fault_of(soap12.content, SOAP12_ENV)[:2] == ("authenticationFault", 10001)


async def test_gzip_small_and_streamed(clock: Clock, client: httpx.AsyncClient) -> None:
    async with SimulatorServer(SimulatorConfig(seed=3, jobs=300), clock=clock) as server:
        for operation in ("getCompanyMembership", "getActiveJobs"):
            plain = await post(client, server, envelope(operation), **{"accept-encoding": "identity"})
            zipped = await post(client, server, envelope(operation), **{"accept-encoding": "gzip"})
            assert "content-encoding" not in plain.headers
            assert zipped.headers["content-encoding"] == "gzip"
            assert zipped.content == plain.content  # httpx decoded it
            refused = await post(
                client,
                server,
                envelope(operation, header_extra={"gzipResponse": "false"}),
                **{"accept-encoding": "gzip"},
            )
            assert "content-encoding" not in refused.headers
        big = await post(client, server, envelope("getActiveJobs"), **{"accept-encoding": "identity"})
        assert int(big.headers["content-length"]) == len(big.content) > 64 * 1024
        async with client.stream(
            "POST", server.url, content=envelope("getActiveJobs"), headers={"accept-encoding": "gzip"}
        ) as raw:
            assert "content-length" not in raw.headers  # streamed, chunked
            wire = b"".join([chunk async for chunk in raw.aiter_raw()])
        assert gzip.decompress(wire) == big.content


async def test_routing(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    assert (await client.get(server.base_url + "/other")).status_code == 404
    assert (await client.get(server.url)).status_code == 405
    world = await client.get(server.base_url + "/simulator/world")
    summary = world.json()
    assert [c["handle"] for c in summary["companies"]] == ["c|110", "47", "c|2001"]
    assert all(c["task_states"]["Processing"] > 0 for c in summary["companies"])


# -- fault injection -------------------------------------------------------------------------


async def test_fault_switch_over_http(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    url = server.base_url + "/simulator/faults"
    assert (await client.get(url)).json()["plan"] is None
    set_ = await client.post(url, json={"kind": "http_status", "status": 503, "times": 2, "company": "47"})
    assert set_.status_code == 200 and set_.json()["plan"]["kind"] == "http_status"
    assert server.faults.current is not None and server.faults.remaining == 2
    other = await post(client, server, envelope("getActiveJobs", {"companyHandle": "c|110"}))
    assert other.status_code == 200  # targeted at another company
    for _ in range(2):
        hit = await post(client, server, envelope("getActiveJobs", {"companyHandle": "47"}))
        assert hit.status_code == 503 and hit.headers["content-type"].startswith("text/html")
        assert b"503" in hit.content
    recovered = await post(client, server, envelope("getActiveJobs", {"companyHandle": "47"}))
    assert recovered.status_code == 200  # times ran out: IPS recovered
    assert (await client.get(url)).json() == {"plan": None, "remaining": None, "injected": 2}
    bad = await client.post(url, json={"kind": "meteor"})
    assert bad.status_code == 400
    bad = await client.post(url, json={"kind": "latency", "latncy": 1})
    assert bad.status_code == 400
    await client.post(url, json={"kind": "api", "operation": "getCompanyMembership"})
    assert (await post(client, server, envelope("getActiveJobs"))).status_code == 200
    assert (await post(client, server, envelope("getCompanyMembership"))).status_code == 500
    assert (await client.delete(url)).json()["plan"] is None
    assert (await post(client, server, envelope("getCompanyMembership"))).status_code == 200


async def test_latency(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    server.faults.set(kind="latency", latency=0.4, times=1)
    started = time.perf_counter()
    response = await post(client, server, envelope("getCompanyMembership"))
    assert response.status_code == 200 and time.perf_counter() - started >= 0.4
    started = time.perf_counter()
    await post(client, server, envelope("getCompanyMembership"))
    assert time.perf_counter() - started < 0.4


@pytest.mark.parametrize(
    ("kind", "element", "code"),
    [
        (FaultKind.AUTHENTICATION, "authenticationFault", 10001),
        (FaultKind.AUTHORIZATION, "authorizationFault", 20003),
        (FaultKind.API, "ipsApiFault", 30000),
    ],
)
async def test_soap_faults(
    server: SimulatorServer, client: httpx.AsyncClient, kind: FaultKind, element: str, code: int
) -> None:
    server.faults.set(FaultPlan(kind=kind))
    response = await post(client, server, envelope("getActiveJobs"))
    assert response.status_code == 500
    assert fault_of(response.content)[:2] == (element, code)
    server.faults.set(FaultPlan(kind=kind, code=code + 2, reason="custom", fault_http_status=200))
    response = await post(client, server, envelope("getActiveJobs", soap12=True))
    assert response.status_code == 200
    assert fault_of(response.content, SOAP12_ENV) == (element, code + 2, "custom")


async def test_html_answers(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    for status in (500, 503):
        server.faults.set(kind="http_status", status=status)
        response = await post(client, server, envelope("getActiveJobs"))
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        title = etree.fromstring(response.content, etree.HTMLParser()).findtext(".//title")
        assert (title or "").startswith(str(status))
    server.faults.set(kind="html_200")
    response = await post(client, server, envelope("getActiveJobs"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert b"maintenance" in response.content.lower()


async def test_malformed_and_hostile_xml(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    server.faults.set(kind="malformed")
    response = await post(client, server, envelope("getActiveJobs"))
    assert response.status_code == 200
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(response.content)
    for kind, entity in (("entity_bomb", "lol9"), ("xxe", "xxe")):
        server.faults.set(kind=kind)
        response = await post(client, server, envelope("getActiveJobs"))
        assert response.status_code == 200
        with pytest.raises(ForbiddenXML):
            PrologGuard().feed(response.content)
        assert f"&{entity};".encode() in response.content
        if kind == "entity_bomb":
            assert response.content.count(b"<!ENTITY lol") == 10
            with pytest.raises(etree.XMLSyntaxError, match="amplification"):  # libxml2's own guard
                etree.fromstring(response.content)
        else:
            assert b'<!ENTITY xxe SYSTEM "file:///etc/passwd">' in response.content
            parsed = etree.fromstring(response.content, etree.XMLParser(resolve_entities=False, no_network=True))
            handle = parsed.find(f".//{{{NS_2014}}}companyHandle")
            assert handle is not None and [type(node) for node in handle] == [etree._Entity]


async def test_invalid_record(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    server.faults.set(kind="invalid_record", times=1)
    response = await post(client, server, envelope("getActiveJobs"))
    pending = [text(t, "numPending") for j in jobs_of(response.content) for t in find_all(j, "taskProgressArray/items")]
    bad = [value for value in pending if not (value or "").isdigit()]
    assert bad == ["many"] and len(pending) > 10
    again = await post(client, server, envelope("getActiveJobs"))
    pending = [text(t, "numPending") for j in jobs_of(again.content) for t in find_all(j, "taskProgressArray/items")]
    assert all((value or "").isdigit() for value in pending)


async def test_truncated_and_reset(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    server.faults.set(kind="truncated", times=1)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", server.url, content=envelope("getActiveJobs")) as stream:
            assert stream.status_code == 200
            declared = int(stream.headers["content-length"])
            async for chunk in stream.aiter_raw():
                received += chunk
    assert 0 < len(received) < declared
    assert received.startswith(b"<?xml")
    server.faults.set(kind="reset", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await post(client, server, envelope("getActiveJobs"))
    ok = await post(client, server, envelope("getActiveJobs"))
    assert ok.status_code == 200 and jobs_of(ok.content)


async def test_oversized(server: SimulatorServer, client: httpx.AsyncClient) -> None:
    server.faults.set(kind="oversized", size=300_000, times=1)
    response = await post(client, server, envelope("getActiveJobs"))
    assert len(response.content) >= 300_000 and "content-length" not in response.headers
    assert len(jobs_of(response.content)) > 50  # well-formed once the size is reached
    server.faults.set(kind="oversized")  # a gigabyte: read a few megabytes and hang up
    received = 0
    async with client.stream(
        "POST", server.url, content=envelope("getActiveJobs"), headers={"content-type": "text/xml"}
    ) as stream:
        assert stream.status_code == 200
        async for chunk in stream.aiter_raw():
            received += len(chunk)
            if received > 4_000_000:
                break
    assert received > 4_000_000


def test_faults_in_process_targeting_and_times() -> None:
    simulator = Simulator(SimulatorConfig(seed=1), Clock(T0))
    faults = simulator.faults
    faults.set(kind="api", company="c|110", operation="getActiveJobs", times=2)
    assert faults.take("getActiveJobs", "47") is None
    assert faults.take("getCompanyMembership", "c|110") is None
    assert faults.take("getActiveJobs", "c|110") is not None
    assert faults.remaining == 1
    assert faults.take("getActiveJobs", "c|110") is not None
    assert faults.current is None and faults.take("getActiveJobs", "c|110") is None
    faults.set(FaultPlan(kind=FaultKind.RESET))
    faults.clear()
    assert faults.current is None
