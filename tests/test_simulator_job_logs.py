"""The simulator's job logs: getJobLogs and getJobLogDetails against the schema version by version,
as strict as Axis2, over real HTTP; counts that agree with what the world's jobs did; short and
long jobs; a bounded history; faults for job logs alone; every outcome early in the demo."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import xmlschema
from lxml import etree
from servers import Clock, simulated
from test_simulator import envelope, fault_of, find_all, operation_element, plain_fault, text

from exporter.simulator import SimulatorConfig, SimulatorServer, World
from exporter.simulator.joblogs import JobLog, job_end
from exporter.simulator.responses import RequestError, Responder, fault_answer, parse_request
from exporter.simulator.world import Job
from exporter.soap import IPS_COMMON_NS, SOAP11_ENV, ForbiddenXML, PrologGuard, api_namespace, local_name
from exporter.versions import KNOWN_VERSIONS, UNVERSIONED, ApiVersion

pytestmark = pytest.mark.timeout(120)

XSD = Path(__file__).parent / "data" / "ips-jobs.xsd"
NS_2014 = api_namespace("2014-04-03")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
JOB_LOG_ORDER = [
    "companyHandle", "jobHandle", "jobName", "originalJobName", "submitUserEmail", "logType", "jobSubType",
    "startDate", "endDate", "description", "fileSuccessCount", "fileErrorCount", "fileWarningCount",
    "fileDuplicateCount", "fileUpdateCount", "totalFileCount", "transferSuccessCount", "transferErrorCount",
    "transferWarningCount", "fatalError", "detailTotalRows", "detailArray",
]
SINCE_4_0 = {"originalJobName", "jobSubType", "description"}
SINCE_4_4 = {"transferSuccessCount", "transferErrorCount", "transferWarningCount"}
LOG_OPERATIONS = ["getJobLogs", "getJobLogDetails"]


# -- schema, per version ---------------------------------------------------------------------


def _optional(text_: str, names: set[str]) -> str:
    for name in names:
        for kind in ("xs:string", "xs:int"):
            strict = f'<xs:element name="{name}" type="{kind}"/>'
            text_ = text_.replace(strict, strict.replace("/>", ' minOccurs="0"/>'))
    return text_


@pytest.fixture(scope="module")
def schemas() -> dict[str, xmlschema.XMLSchema]:
    """The XSD as is (4.4 and later), with the transfer counts optional (4.0 to 4.3), and with
    the 4.0 fields optional too (before 4.0); which of them are present is checked apart."""
    text_ = XSD.read_text()
    return {
        "4.4": xmlschema.XMLSchema(text_),
        "4.0": xmlschema.XMLSchema(_optional(text_, SINCE_4_4)),
        "3.x": xmlschema.XMLSchema(_optional(text_, SINCE_4_4 | SINCE_4_0)),
    }


def schema_for(schemas: dict[str, xmlschema.XMLSchema], version: str) -> xmlschema.XMLSchema:
    api = ApiVersion(version)
    return schemas["4.4" if api.job_log_transfer_counts else "4.0" if api.job_log_descriptions else "3.x"]


def to_2014(element: etree._Element) -> etree._Element:
    """A copy with every IPS namespace (the bare one of before 4.0 too) rewritten to 2014-04-03."""
    copy = etree.fromstring(etree.tostring(element))
    for el in copy.iter():
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{IPS_COMMON_NS}"):
            el.tag = f"{{{NS_2014}}}{local_name(el.tag)}"
    etree.cleanup_namespaces(copy)
    return etree.fromstring(etree.tostring(copy))


def ask(responder: Responder, operation: str, params: dict[str, str] | None = None, *,
        version: str = "2014-04-03", arrays: dict[str, list[str]] | None = None) -> bytes:
    body = envelope(operation, params, version=version)
    if arrays:
        root = etree.fromstring(body)
        namespace = api_namespace(version)
        param = root.find(f"{{{SOAP11_ENV}}}Body/{{{namespace}}}{operation}Param")
        assert param is not None
        for name, values in arrays.items():
            array = etree.Element(f"{{{namespace}}}{name}")
            for value in values:
                etree.SubElement(array, f"{{{namespace}}}items").text = value
            # StringArray elements sit after originalName in getJobLogDetailsParam
            after = [i for i, child in enumerate(param) if local_name(child.tag) in ("companyHandle", "jobHandle",
                                                                                     "originalName")]
            param.insert(max(after, default=-1) + 1, array)
        body = etree.tostring(root)
    try:
        request = parse_request(body)
    except RequestError as refused:
        return fault_answer(refused.envelope, refused.fault).body()
    return responder.answer(request).body()


def logs_of(document: bytes) -> list[etree._Element]:
    return find_all(operation_element(document), "jobLogArray/items")


def names_of(item: etree._Element) -> list[str]:
    return [local_name(child.tag) for child in item]


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def world(clock: Clock) -> World:
    return World(SimulatorConfig(seed=11), clock)


@pytest.fixture
def responder(world: World) -> Responder:
    return Responder(world)


@pytest.mark.parametrize("version", [UNVERSIONED, *KNOWN_VERSIONS])
def test_job_logs_in_the_shape_of_each_version(
    responder: Responder, world: World, clock: Clock, schemas: dict[str, xmlschema.XMLSchema], version: str
) -> None:
    clock.step(minutes=30)
    api, namespace = ApiVersion(version), ApiVersion(version).namespace
    schema = schema_for(schemas, version)
    document = ask(responder, "getJobLogs", {"companyHandle": "c|110"}, version=version)
    ret = operation_element(document)
    assert ret.tag == f"{{{namespace}}}getJobLogsReturn"
    assert {el.tag.split("}")[0][1:] for el in ret.iter()} == {namespace}
    schema.validate(to_2014(ret))
    items = logs_of(document)
    assert len(items) > 20
    for item in items:
        names = names_of(item)
        assert names == [name for name in JOB_LOG_ORDER if name in names]
        assert (set(names) >= SINCE_4_0) == api.job_log_descriptions
        assert bool(SINCE_4_0 & set(names)) == api.job_log_descriptions
        assert (set(names) >= SINCE_4_4) == api.job_log_transfer_counts
        assert bool(SINCE_4_4 & set(names)) == api.job_log_transfer_counts
        assert "detailArray" not in names and "detailTotalRows" not in names
    assert any("endDate" not in names_of(item) for item in items)  # jobs still running
    assert any("endDate" in names_of(item) for item in items)
    # details of a finished upload
    done = next(i for i in items if "endDate" in names_of(i) and text(i, "logType") == "BeginUpload")
    details = ask(responder, "getJobLogDetails", {"companyHandle": "c|110", "jobHandle": text(done, "jobHandle") or ""},
                  version=version)
    ret = operation_element(details)
    assert ret.tag == f"{{{namespace}}}getJobLogDetailsReturn"
    schema.validate(to_2014(ret))
    [log] = logs_of(details)
    assert ("detailTotalRows" in names_of(log)) == api.job_log_descriptions
    rows = find_all(log, "detailArray/items")
    assert [text(rows[0], "logMessage"), text(rows[0], "logType")] == ["Upload has begun!", "BeginUpload"]
    assert text(rows[-1], "logType") == "EndUpload"
    file_rows = [row for row in rows if text(row, "logType") not in ("BeginUpload", "EndUpload", "OriginalJobName",
                                                                      "JobClient", "FatalError")]
    counted = sum(int(text(log, name) or "") for name in ("fileSuccessCount", "fileErrorCount", "fileWarningCount",
                                                           "fileDuplicateCount", "fileUpdateCount"))
    assert len(file_rows) == counted  # a log message per file
    assert all((text(row, "assetName") is not None) == api.job_log_descriptions for row in file_rows)


def test_adobe_pre_4_0_shape_in_order(responder: Responder) -> None:
    [item] = logs_of(ask(responder, "getJobLogs", {"companyHandle": "47", "numRows": "1"}, version=UNVERSIONED))
    names = names_of(item)
    expected = ["companyHandle", "jobHandle", "jobName", "submitUserEmail", "logType", "startDate", "endDate",
                "fileSuccessCount", "fileErrorCount", "fileWarningCount", "fileDuplicateCount", "fileUpdateCount",
                "totalFileCount", "fatalError"]
    assert names == [name for name in expected if name in names] and len(names) >= len(expected) - 1


# -- strict like Axis2 ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [UNVERSIONED, "2008-01-15", "2014-04-03", "2022-11-01-beta"])
def test_each_version_refuses_what_its_schema_lacks(responder: Responder, version: str) -> None:
    namespace = ApiVersion(version).namespace
    every = {"companyHandle": "47", "userHandle": "nobody", "sortBy": "JobName", "sortDirection": "Ascending",
             "startDate": "2024-04-01T00:00:00Z", "endDate": "2024-06-01T00:00:00Z", "numRows": "5"}
    assert logs_of(ask(responder, "getJobLogs", every, version=version)) == []  # nobody submitted any
    paging = ask(responder, "getJobLogDetails", {"companyHandle": "47", "originalName": "x", "recordsPerPage": "5"},
                 version=version)
    if ApiVersion(version).job_log_descriptions:
        assert logs_of(paging) == []
    else:
        assert plain_fault(paging) == ("org.apache.axis2.databinding.ADBException: Unexpected subelement "
                                       f"{{{namespace}}}recordsPerPage")


@pytest.mark.parametrize(("operation", "params", "refused"), [
    ("getJobLogs", {"numRows": "5", "companyHandle": "47"}, "companyHandle"),  # out of order
    ("getJobLogs", {"sortDirection": "Ascending", "sortBy": "JobName"}, "sortBy"),
    ("getJobLogs", {"companyHandle": "47", "jobHandle": "x"}, "jobHandle"),  # another operation's
    ("getJobLogs", {"includeWaitingJobs": "true"}, "includeWaitingJobs"),
    ("getJobLogDetails", {"companyHandle": "47", "numRows": "5"}, "numRows"),
    ("getJobLogDetails", {"companyHandle": "47", "resultsPage": "1", "recordsPerPage": "5"}, "recordsPerPage"),
])
def test_unknown_or_misordered_children_are_refused(responder: Responder, operation: str, params: dict[str, str],
                                                    refused: str) -> None:
    assert plain_fault(ask(responder, operation, params)) == (
        f"org.apache.axis2.databinding.ADBException: Unexpected subelement {{{NS_2014}}}{refused}")


def test_a_string_array_holds_items_only(responder: Responder) -> None:
    body = envelope("getJobLogDetails", {"companyHandle": "47", "originalName": "x"})
    bad = body.replace(b"<ns1:originalName>x</ns1:originalName>",
                       b"<ns1:originalName>x</ns1:originalName><ns1:logTypeArray><ns1:item>a</ns1:item>"
                       b"</ns1:logTypeArray>")
    assert bad != body
    with pytest.raises(RequestError) as refusal:
        parse_request(bad)
    assert refusal.value.fault.reason.endswith(f"Unexpected subelement {{{NS_2014}}}item")


@pytest.mark.parametrize(("operation", "params", "fault"), [
    ("getJobLogs", {"companyHandle": "c|999"}, ("authorizationFault", 20000)),
    ("getJobLogs", {"sortBy": "Size"}, ("ipsApiFault", 30001)),
    ("getJobLogs", {"sortDirection": "Up"}, ("ipsApiFault", 30001)),
    ("getJobLogs", {"startDate": "yesterday"}, ("ipsApiFault", 30001)),
    ("getJobLogs", {"numRows": "many"}, ("ipsApiFault", 30001)),
    ("getJobLogs", {"numRows": "0"}, ("ipsApiFault", 30001)),
    ("getJobLogs", {"numRows": "99999999999"}, ("ipsApiFault", 30001)),
    ("getJobLogDetails", {}, ("ipsApiFault", 30002)),
    ("getJobLogDetails", {"companyHandle": "47"}, ("ipsApiFault", 30002)),
    ("getJobLogDetails", {"companyHandle": "47", "jobHandle": "47||nope"}, ("ipsApiFault", 30001)),
    ("getJobLogDetails", {"companyHandle": "47", "originalName": "x", "recordsPerPage": "1001"},
     ("ipsApiFault", 30001)),
    ("getJobLogDetails", {"companyHandle": "47", "originalName": "x", "recordsPerPage": "0"}, ("ipsApiFault", 30001)),
    ("getJobLogDetails", {"companyHandle": "47", "originalName": "x", "resultsPage": "0"}, ("ipsApiFault", 30001)),
    ("getJobLogDetails", {"companyHandle": "47", "originalName": "x", "sortBy": "Size"}, ("ipsApiFault", 30001)),
])
def test_bad_values_get_ips_faults(responder: Responder, operation: str, params: dict[str, str],
                                   fault: tuple[str, int]) -> None:
    assert fault_of(ask(responder, operation, params))[:2] == fault


# -- filters, sorting, numRows ---------------------------------------------------------------


def _logs(responder: Responder, **params: str) -> list[etree._Element]:
    return logs_of(ask(responder, "getJobLogs", params))


def _time(item: etree._Element, name: str) -> float:
    return datetime.fromisoformat(text(item, name) or "").timestamp()


def test_company_user_dates_sort_and_num_rows(responder: Responder, world: World, clock: Clock) -> None:
    clock.step(hours=2)
    default = _logs(responder)
    world.advance()
    assert len(default) == len(world.job_logs()) > 200  # no numRows: all of them up to 1000, newest first
    starts = [_time(item, "startDate") for item in default]
    assert starts == sorted(starts, reverse=True)
    assert starts[0] == max(log.start for log in world.job_logs())
    busy = Responder(World(SimulatorConfig(seed=11, time_scale=30), Clock(T0)))
    assert len(busy.world.job_logs()) > 4000 and len(_logs(busy)) == 1000

    only = _logs(responder, companyHandle="47", numRows="100000")
    assert only and {text(i, "companyHandle") for i in only} == {"47"}
    assert len(only) == len(world.job_logs("47"))

    user = text(only[0], "submitUserEmail") or ""
    mine = _logs(responder, companyHandle="47", userHandle=user, numRows="100000")
    assert mine and all(text(i, "submitUserEmail") == user for i in mine)
    assert len(mine) == sum(text(i, "submitUserEmail") == user for i in only)

    low, high = T0 - timedelta(hours=3), T0 + timedelta(minutes=30)
    windowed = _logs(responder, companyHandle="47", startDate=low.isoformat(), endDate=high.isoformat(),
                     numRows="100000")
    assert windowed and all(low.timestamp() <= _time(i, "startDate") <= high.timestamp() for i in windowed)
    assert len(windowed) == sum(low.timestamp() <= log.start <= high.timestamp() for log in world.job_logs("47"))
    # an offset in the request is honoured
    shifted = (low.astimezone(world.tz).isoformat(), high.astimezone(world.tz).isoformat())
    again = _logs(responder, companyHandle="47", startDate=shifted[0], endDate=shifted[1], numRows="100000")
    assert [text(i, "jobHandle") for i in again] == [text(i, "jobHandle") for i in windowed]

    capped = _logs(responder, companyHandle="47", numRows="7")
    assert [text(i, "jobHandle") for i in capped] == [text(i, "jobHandle") for i in only[:7]]

    keys = {
        "JobName": lambda i: text(i, "jobName"),
        "LogType": lambda i: text(i, "logType"),
        "StartDate": lambda i: _time(i, "startDate"),
        "CompanyName": lambda i: next(c.name for c in world.companies if c.handle == text(i, "companyHandle")),
        "UserId": lambda i: text(i, "submitUserEmail"),
        "Email": lambda i: text(i, "submitUserEmail"),
        "FileErrorCount": lambda i: int(text(i, "fileErrorCount") or ""),
        "FileWarningCount": lambda i: int(text(i, "fileWarningCount") or ""),
        "FileSuccessCount": lambda i: int(text(i, "fileSuccessCount") or ""),
    }
    for sort_by, key in keys.items():
        for direction in ("Ascending", "Descending"):
            items = _logs(responder, sortBy=sort_by, sortDirection=direction, numRows="100000")
            values = [key(item) for item in items]
            assert values == sorted(values, reverse=direction == "Descending"), sort_by  # type: ignore[type-var]
    top = _logs(responder, sortBy="FileErrorCount", sortDirection="Descending", numRows="3")
    assert int(text(top[0], "fileErrorCount") or "") == max(log.error for log in world.job_logs())


def test_the_date_filter_can_apply_to_the_end(clock: Clock) -> None:
    world = World(SimulatorConfig(seed=11, job_log_date_filter="end"), clock)
    responder = Responder(world)
    low, high = T0 - timedelta(hours=2), T0
    items = logs_of(ask(responder, "getJobLogs", {"startDate": low.isoformat(), "endDate": high.isoformat(),
                                                  "numRows": "100000"}))
    assert items and all("endDate" in names_of(i) for i in items)  # running jobs have no end
    assert all(low.timestamp() <= _time(i, "endDate") <= high.timestamp() for i in items)
    assert any(_time(i, "startDate") < low.timestamp() for i in items)  # started before the window
    with pytest.raises(ValueError):
        SimulatorConfig(job_log_date_filter="middle")


# -- details ---------------------------------------------------------------------------------


def test_details_paging_filter_and_sort(responder: Responder, world: World, clock: Clock) -> None:
    clock.step(hours=1)
    world.advance()
    log = max((log for log in world.job_logs("c|110") if log.end is not None), key=lambda log: len(log.files))
    assert len(log.files) >= 20
    query = {"companyHandle": "c|110", "jobHandle": log.handle}

    def page(**extra: str) -> tuple[int, list[tuple[str | None, str | None]]]:
        [item] = logs_of(ask(responder, "getJobLogDetails", {**query, **extra}))
        rows = find_all(item, "detailArray/items")
        return int(text(item, "detailTotalRows") or ""), [(text(r, "logMessage"), text(r, "logType")) for r in rows]

    total, everything = page()
    assert total == len(everything) == len(log.files) + 4 + log.fatal  # begin, name, client, ..., end
    pages = [page(recordsPerPage="7", resultsPage=str(n)) for n in range(1, total // 7 + 3)]
    assert all(count == total for count, _ in pages)
    assert [row for _, rows in pages for row in rows] == everything
    assert pages[-1][1] == []  # past the last page: empty
    by_type = page(sortBy="LogType", sortDirection="Descending")[1]
    assert [t for _, t in by_type] == sorted((t for _, t in everything), reverse=True)
    assert page(sortDirection="Descending")[1] == everything[::-1]
    # by the handle it had while active, too
    assert log.active_handle is not None
    [item] = logs_of(ask(responder, "getJobLogDetails", {"companyHandle": "c|110", "jobHandle": log.active_handle}))
    assert text(item, "jobHandle") == log.handle
    # a logTypeArray keeps those types only
    kinds = sorted({t for _, t in everything if t and t.startswith("Begin")})
    [item] = logs_of(ask(responder, "getJobLogDetails", query, arrays={"logTypeArray": kinds}))
    assert {text(r, "logType") for r in find_all(item, "detailArray/items")} == set(kinds)
    assert text(item, "detailTotalRows") == "1"


# -- what the logs say about the world -------------------------------------------------------


def _check_counts(log: JobLog) -> None:
    files = log.success + log.error + log.warning + log.duplicate + log.update
    assert files <= log.total and len(log.files) == files
    assert min(files, log.transfer_success, log.transfer_error, log.transfer_warning) >= 0


def test_counts_agree_with_what_the_tasks_did(clock: Clock) -> None:
    world = World(SimulatorConfig(seed=3, jobs=60), clock)
    jobs = {}
    for _ in range(6 * 12):  # six hours in five-minute steps
        world.advance()
        jobs.update({job.handle: job for job in world.active_jobs(include_waiting=True)})
        clock.step(minutes=5)
    world.advance()
    logs = [log for log in world.job_logs() if log.end is not None]
    seen = 0
    for log in logs:
        _check_counts(log)
        job = jobs.get(log.active_handle or "")
        if job is None:
            continue
        seen += 1
        t = job.job_time(log.end + 1)
        states = [job.task_status(task, t).state for task in job.tasks]
        if states and states[0] == "Failed":  # the first task failed: fatal
            assert log.fatal and log.outcome == "fatal"
        elif "Failed" in states:  # a later one: files in error
            assert not log.fatal and log.error > 0 and log.outcome == "errors"
        else:
            assert not log.fatal
        if job.stop_at is None and job.tasks and "Failed" not in states:
            assert log.success + log.error + log.warning + log.duplicate + log.update == log.total
        if job.job_type in ("UrlUpload", "UploadFromServerDirectory"):
            assert log.transfer_success == sum(1 for end in job.tasks[0].ends if end <= job.task_status(
                job.tasks[0], t).cut)
    assert seen > 50
    outcomes = Counter(log.outcome for log in logs if log.active_handle is not None)
    assert set(outcomes) == {"fatal", "errors", "warnings", "succeeded"}, outcomes
    assert outcomes["succeeded"] > sum(outcomes.values()) / 2  # most end clean
    assert any(log.duplicate for log in logs) and any(log.update for log in logs)
    # running jobs: no endDate, counts so far
    running = [log for log in world.job_logs() if log.end is None]
    assert running
    for log in running:
        _check_counts(log)
        assert not log.fatal


def test_every_job_that_left_the_active_jobs_has_a_finished_log(
    clock: Clock, schemas: dict[str, xmlschema.XMLSchema]
) -> None:
    """Whatever made a job leave (its tasks ended, a planned stop, an operator's stopJob, of a
    paused job too), its log has an endDate from then on, and counts as of its end: a stopped
    job's end is when it left, its files are those processed before the stop."""
    world = World(SimulatorConfig(seed=3, jobs=60, time_scale=10), clock)
    seen: dict[str, Job] = {}
    stopped: set[str] = set()
    paused: list[Job] = []
    for step in range(120):  # two hours, a poll a minute, at ten times the pace
        world.advance()
        active = world.active_jobs(include_waiting=True)
        seen.update({job.handle: job for job in active})
        if step % 4 == 0 and active:
            job = active[step % len(active)]
            world.stop_job(job.company.handle, job.handle)
            stopped.add(job.handle)
        elif step % 8 == 2 and active:
            paused.append(world.pause_job(active[-1].company.handle, active[-1].handle))
        elif step % 8 == 6 and paused and paused[-1] in active:
            world.stop_job(paused[-1].company.handle, paused[-1].handle)  # stopped while paused
            stopped.add(paused[-1].handle)
        clock.step(minutes=1)
    world.advance()
    listed = {job.handle for job in world.active_jobs(include_waiting=True)}
    logs = {log.active_handle: log for log in world.job_logs() if log.active_handle is not None}
    left = [job for handle, job in seen.items() if handle not in listed]
    stops = [job for job in left if job.stop_at is not None and job_end(job) == job.leave_at]
    assert len(left) > 100 and len(stops) > 20 and stopped & {job.handle for job in stops}
    assert any(job.pauses and job.stop_at is not None for job in stops)
    for job in left:
        log = logs[job.handle]
        assert log.end == job.wall(job_end(job)), job.handle
        _check_counts(log)
        if not job.tasks:
            continue
        first = job.task_status(job.tasks[0], job.leave_at)
        assert log.fatal == (first.state == "Failed")
        if first.state == "Stopping":  # stopped: what was processed before the stop, nothing in error
            assert log.success + log.error + log.warning + log.duplicate + log.update == first.processed
            assert not log.fatal
            if job.job_type in ("UrlUpload", "UploadFromServerDirectory"):
                assert (log.transfer_success, log.transfer_error) == (first.processed, 0)
    # jobs that came and went between two polls too
    assert all(log.end is not None for log in logs.values() if log.active_handle not in listed)
    # and so getJobLogs says
    finished = {logs[job.handle].handle for job in left}
    document = ask(Responder(world), "getJobLogs", {"numRows": "100000"})
    schemas["4.4"].validate(to_2014(operation_element(document)))
    items = [item for item in logs_of(document) if text(item, "jobHandle") in finished]
    assert len(items) == len(finished)
    assert all("endDate" in names_of(item) for item in items)


def test_short_jobs_finish_between_polls_and_long_ones_run_for_hours(clock: Clock) -> None:
    world = World(SimulatorConfig(seed=5), clock)
    listed: set[str] = set()
    for _ in range(4 * 60):  # four hours, a poll a minute
        world.advance()
        listed.update(job.name for job in world.active_jobs(include_waiting=True))
        clock.step(minutes=1)
    world.advance()
    logs = [log for log in world.job_logs() if log.end is not None and log.end > world.started]
    short = [log for log in logs if log.end is not None and log.end - log.start < 10]
    assert len(short) >= 20 and not {log.name for log in short} & listed
    assert {log.outcome for log in short} == {"fatal", "errors", "warnings", "succeeded"}
    assert any(log.end is not None and log.end - log.start > 3600 for log in logs)
    # and a past from before the start, short and long
    past = [log for log in world.job_logs() if log.end is not None and log.end <= world.started]
    assert len(past) >= 100 and any(log.end is not None and log.end - log.start > 3600 for log in past)


def test_history_is_bounded(clock: Clock) -> None:
    world = World(SimulatorConfig(seed=2, jobs=40, time_scale=30, job_log_max=300, job_log_days=0.25), clock)
    sizes = []
    for _ in range(48):  # a day in half-hour steps: thousands of jobs end at this scale
        world.advance()
        sizes.append(world.history_size())
        clock.step(minutes=30)
    now = world.advance()
    assert max(sizes) <= 300 and sizes[-1] == 300
    kept = [log for log in world.job_logs() if log.active_handle is None or log.end is not None]
    assert all(log.end is None or log.end >= now - 0.25 * 86400 - 1 for log in kept)
    few = World(SimulatorConfig(seed=2, job_log_days=1 / 24, job_log_backfill_hours=24), Clock(T0))
    assert all((log.end or 0) >= few.now - 3600 for log in few.job_logs() if log.active_handle is None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_demo_shows_every_outcome_within_two_minutes(seed: int) -> None:
    clock = Clock(T0)
    world = World(SimulatorConfig(seed=seed, jobs=24, time_scale=30.0), clock)  # as `demo` runs it
    for _ in range(24):
        clock.step(seconds=5)
        world.advance()
    ended = [log for log in world.job_logs() if log.end is not None and world.started < log.end <= world.now]
    assert {log.outcome for log in ended} == {"fatal", "errors", "warnings", "succeeded"}


def test_job_logs_change_nothing_of_the_active_jobs() -> None:
    a, b = Clock(T0), Clock(T0)
    with_logs = Responder(World(SimulatorConfig(seed=9), a))
    without = Responder(World(SimulatorConfig(seed=9, short_job_period=0, job_log_backfill_hours=0), b))
    for _ in range(6):
        docs = [ask(r, "getActiveJobs") for r in (with_logs, without)]
        assert docs[0] == docs[1]
        ask(with_logs, "getJobLogs")
        a.step(minutes=13)
        b.step(minutes=13)
    assert without.world.job_logs() and all(log.active_handle for log in without.world.job_logs())


# -- over HTTP, with faults for job logs alone -----------------------------------------------


@pytest.fixture
async def server(clock: Clock) -> AsyncIterator[SimulatorServer]:
    async with simulated(clock) as srv:
        yield srv


async def post(client: httpx.AsyncClient, server: SimulatorServer, body: bytes) -> httpx.Response:
    return await client.post(server.url, content=body, headers={"content-type": "text/xml; charset=UTF-8"})


async def test_job_log_faults_leave_active_jobs_unharmed(server: SimulatorServer,
                                                         schemas: dict[str, xmlschema.XMLSchema]) -> None:
    faults = server.base_url + "/simulator/faults"
    active, logs = envelope("getActiveJobs"), envelope("getJobLogs", {"numRows": "50"})
    async with httpx.AsyncClient(timeout=30) as client:
        healthy = await post(client, server, logs)
        assert healthy.status_code == 200
        schemas["4.4"].validate(to_2014(operation_element(healthy.content)))
        switched = await client.post(faults, json={"kind": "api", "operations": LOG_OPERATIONS})
        assert switched.status_code == 200 and switched.json()["plan"]["operations"] == LOG_OPERATIONS
        for _ in range(3):
            hit = await post(client, server, logs)
            assert hit.status_code == 500 and fault_of(hit.content)[:2] == ("ipsApiFault", 30000)
            details = await post(client, server, envelope("getJobLogDetails", {"companyHandle": "47",
                                                                               "originalName": "x"}))
            assert fault_of(details.content)[:2] == ("ipsApiFault", 30000)
            ok = await post(client, server, active)
            assert ok.status_code == 200 and find_all(operation_element(ok.content), "jobArray/items")

        # hostile answers in the shape of a job-log answer
        await client.post(faults, json={"kind": "entity_bomb", "operations": LOG_OPERATIONS})
        bomb = await post(client, server, logs)
        with pytest.raises(ForbiddenXML):
            PrologGuard().feed(bomb.content)
        assert b"<jobLogArray>" in bomb.content and b"&lol9;" in bomb.content
        assert (await post(client, server, active)).status_code == 200

        await client.post(faults, json={"kind": "malformed", "operations": LOG_OPERATIONS})
        broken = await post(client, server, logs)
        assert b"getJobLogsReturn" in broken.content
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(broken.content)

        for value in (None, "99999999999", "many"):
            plan = {"kind": "invalid_record", "operations": ["getJobLogs"], "times": 1}
            if value is not None:
                plan["value"] = value
            await client.post(faults, json=plan)
            corrupt = logs_of((await post(client, server, logs)).content)
            assert text(corrupt[0], "fileErrorCount") == (value or "-3")
            assert all((text(i, "fileErrorCount") or "").isdigit() for i in corrupt[1:])
        assert all((text(i, "fileErrorCount") or "").isdigit()
                   for i in logs_of((await post(client, server, logs)).content))

        await client.post(faults, json={"kind": "oversized", "size": 300_000, "operations": LOG_OPERATIONS,
                                        "times": 1})
        huge = await post(client, server, logs)
        assert len(huge.content) >= 300_000 and len(logs_of(huge.content)) > 100
        assert (await client.delete(faults)).json()["plan"] is None
        assert (await post(client, server, logs)).status_code == 200
