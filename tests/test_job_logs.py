"""getJobLogs: the JobLog shape of every API version, the outcome of a finished job, bad records
skipped and counted, hostile answers refused, and the request each version is sent."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import xmlschema
from lxml import etree
from pydantic import ValidationError
from test_client import FAST_RETRY, Recorder, client_for, fault, xml_response

from exporter.client import ResponseBudget, xs_date_time
from exporter.errors import AuthorizationFault, HttpStatusError, MalformedResponse, OversizedResponse
from exporter.models import XS_INT_MAX, JobLog, JobLogSortBy, JobOutcome, SortDirection
from exporter.parse import JobLogsResult, ResponseReader, check_job_log_array, read_document
from exporter.soap import SOAP11_ENV, local_name
from exporter.versions import IPS_COMMON_NS, KNOWN_VERSIONS, UNVERSIONED, api_namespace

XSD = Path(__file__).parent / "data" / "ips-jobs.xsd"
NS_2014 = api_namespace("2014-04-03")

# Adobe's getJobLogs example, the only published answer: pre-4.0 namespace, no endDate, counts
# that do not add up (205 warnings of 0 files). Adobe shows the Return element alone; IPS sends it
# in a SOAP envelope, as here.
ADOBE_EXAMPLE = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{SOAP11_ENV}"><soapenv:Body>
<ns1:getJobLogsReturn xmlns:ns1="{IPS_COMMON_NS}">
  <ns1:jobLogArray>
    <ns1:items>
      <ns1:companyHandle>47</ns1:companyHandle>
      <ns1:jobHandle>47||Add_2007-09-14-15:04:34</ns1:jobHandle>
      <ns1:jobName>Add_2007-09-14-15:04:34</ns1:jobName>
      <ns1:submitUserEmail>user@example.com</ns1:submitUserEmail>
      <ns1:logType>BeginUpload</ns1:logType>
      <ns1:startDate>2007-09-14T22:04:58.536-07:00</ns1:startDate>
      <ns1:fileSuccessCount>2</ns1:fileSuccessCount>
      <ns1:fileErrorCount>0</ns1:fileErrorCount>
      <ns1:fileWarningCount>205</ns1:fileWarningCount>
      <ns1:fileDuplicateCount>0</ns1:fileDuplicateCount>
      <ns1:fileUpdateCount>0</ns1:fileUpdateCount>
      <ns1:totalFileCount>0</ns1:totalFileCount>
      <ns1:fatalError>false</ns1:fatalError>
    </ns1:items>
  </ns1:jobLogArray>
</ns1:getJobLogsReturn>
</soapenv:Body></soapenv:Envelope>
""".encode()

COUNTS = ("fileSuccessCount", "fileErrorCount", "fileWarningCount", "fileDuplicateCount", "fileUpdateCount",
          "totalFileCount")
TRANSFER_COUNTS = ("transferSuccessCount", "transferErrorCount", "transferWarningCount")


def job_log_xml(name: str, *, version: str = "2014-04-03", **values: str | None) -> str:
    """One JobLog `items` element in the shape of `version`, in schema order. A value of None
    leaves the element out; other elements (detailTotalRows, detailArray) are appended."""
    fields: dict[str, str | None] = {
        "companyHandle": "c|110", "jobHandle": f"j|110||{name}|5129821", "jobName": name,
        "originalJobName": name.rsplit("_", 1)[0], "submitUserEmail": "ops@example.com",
        "logType": "BeginImageServingPublish", "jobSubType": "full",
        "startDate": "2026-11-26T05:00:00.000+01:00", "endDate": "2026-11-26T05:12:30.250Z",
        "description": "nightly publish", **dict.fromkeys(COUNTS, "0"), **dict.fromkeys(TRANSFER_COUNTS, "0"),
        "fatalError": "false",
    }
    if version != UNVERSIONED and version < "2009-07-31":  # transfer counts since 4.4
        for name_ in TRANSFER_COUNTS:
            del fields[name_]
    if version == UNVERSIONED:  # before 4.0: no names, subtype or description
        for name_ in ("originalJobName", "jobSubType", "description", *TRANSFER_COUNTS):
            fields.pop(name_, None)
    fields.update(values)
    return "<items>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if v is not None) + "</items>"


def answer(*items: str, version: str = "2014-04-03") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP11_ENV}"><s:Body>'
        f'<getJobLogsReturn xmlns="{api_namespace(version)}"><jobLogArray>{"".join(items)}</jobLogArray>'
        "</getJobLogsReturn></s:Body></s:Envelope>"
    ).encode()


def read_logs(data: bytes, chunk: int = 0) -> JobLogsResult:
    reader = ResponseReader("getJobLogs")
    step = chunk or len(data)
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
    check_job_log_array(reader.close())
    return reader.job_logs()


# -- the schema --------------------------------------------------------------------------------


def _optional(text: str, *names: str) -> str:
    for name in names:
        strict = f'<xs:element name="{name}" type="xs:'
        assert text.count(strict) >= 1, name
        start = text.index(strict, text.index('<xs:complexType name="JobLog">'))
        end = text.index("/>", start)
        text = text[:end] + ' minOccurs="0"' + text[end:]
    return text


@pytest.fixture(scope="module")
def schemas() -> dict[str, xmlschema.XMLSchema]:
    """ips-jobs.xsd (2014-04-03), and the same with the JobLog elements a version lacks made
    optional: the schema of 4.0 to 4.3 and of the releases before 4.0."""
    text = XSD.read_text()
    return {
        "2014-04-03": xmlschema.XMLSchema(text),
        "2008-09-10": xmlschema.XMLSchema(_optional(text, *TRANSFER_COUNTS)),
        UNVERSIONED: xmlschema.XMLSchema(
            _optional(text, "originalJobName", "jobSubType", "description", *TRANSFER_COUNTS)),
    }


def as_2014(element: etree._Element) -> etree._Element:
    """A copy of `element` with every IPS namespace, the common one and every versioned one,
    rewritten to 2014-04-03: the schema's."""
    copy = etree.fromstring(etree.tostring(element))
    for el in copy.iter():
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{IPS_COMMON_NS}"):  # a prefix of both
            el.tag = f"{{{NS_2014}}}{local_name(el.tag)}"
    etree.cleanup_namespaces(copy)
    return etree.fromstring(etree.tostring(copy))


def body_element(document: bytes) -> etree._Element:
    return etree.fromstring(document).find(f"{{{SOAP11_ENV}}}Body")[0]


# -- every version's shape -----------------------------------------------------------------------


def test_adobe_example_of_the_releases_before_4_0(schemas):
    element = as_2014(body_element(ADOBE_EXAMPLE))
    schemas[UNVERSIONED].validate(element)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schemas["2014-04-03"].validate(element)  # what 4.0 added is missing
    result = read_logs(ADOBE_EXAMPLE)
    assert (result.invalid_records, result.first_invalid) == (0, "")
    (log,) = result.logs
    assert (log.company_handle, log.job_handle, log.job_name) == ("47", "47||Add_2007-09-14-15:04:34",
                                                                  "Add_2007-09-14-15:04:34")
    assert (log.log_type, log.submit_user_email) == ("BeginUpload", "user@example.com")
    assert log.start_date == datetime(2007, 9, 14, 22, 4, 58, 536000, tzinfo=timezone(timedelta(hours=-7)))
    assert log.end_date is None
    assert (log.file_success_count, log.file_error_count, log.file_warning_count, log.file_duplicate_count,
            log.file_update_count, log.total_file_count) == (2, 0, 205, 0, 0, 0)  # need not add up
    assert (log.original_job_name, log.job_sub_type, log.description) == (None, None, None)
    assert (log.transfer_success_count, log.transfer_error_count, log.transfer_warning_count) == (None, None, None)
    assert log.fatal_error is False
    assert log.outcome == "warnings"


@pytest.mark.parametrize("version", ["2008-01-15", "2008-09-10"])
def test_shape_of_4_0_to_4_3_without_transfer_counts(schemas, version):
    document = answer(job_log_xml("Publish_1", version=version, fileErrorCount="3"), version=version)
    element = as_2014(body_element(document))
    schemas["2008-09-10"].validate(element)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schemas["2014-04-03"].validate(element)
    (log,) = read_logs(document).logs
    assert (log.original_job_name, log.job_sub_type, log.description) == ("Publish", "full", "nightly publish")
    assert (log.transfer_success_count, log.transfer_error_count, log.transfer_warning_count) == (None, None, None)
    assert log.file_error_count == 3
    assert log.outcome == "errors"


@pytest.mark.parametrize("version", ["2009-07-31", "2014-04-03", "2016-01-14-beta", "2022-11-01-beta"])
def test_shape_with_every_field(schemas, version):
    document = answer(
        job_log_xml("Upload_2026-11-26-05:00:00", version=version, logType="BeginUpload", jobSubType="",
                    fileSuccessCount="297", fileErrorCount="0", fileWarningCount="1", fileDuplicateCount="2",
                    fileUpdateCount="4", totalFileCount="300", transferSuccessCount="299",
                    transferErrorCount="0", transferWarningCount="1", detailTotalRows="0"),
        version=version)
    schemas["2014-04-03"].validate(as_2014(body_element(document)))
    (log,) = read_logs(document).logs
    assert log == JobLog(
        company_handle="c|110", job_handle="j|110||Upload_2026-11-26-05:00:00|5129821",
        job_name="Upload_2026-11-26-05:00:00", original_job_name="Upload", submit_user_email="ops@example.com",
        log_type="BeginUpload", job_sub_type="", start_date=datetime(2026, 11, 26, 4, 0, tzinfo=UTC),
        end_date=datetime(2026, 11, 26, 5, 12, 30, 250000, tzinfo=UTC), description="nightly publish",
        file_success_count=297, file_error_count=0, file_warning_count=1, file_duplicate_count=2,
        file_update_count=4, total_file_count=300, transfer_success_count=299, transfer_error_count=0,
        transfer_warning_count=1, fatal_error=False,
    )
    assert log.start_date.utcoffset() == timedelta(hours=1)  # the offset as sent
    assert log.outcome == "warnings"


def test_personal_and_free_text_fields_are_kept_out_of_the_repr():
    (log,) = read_logs(answer(job_log_xml("j", submitUserEmail="ann@example.com", description="secret plan"))).logs
    assert (log.submit_user_email, log.description) == ("ann@example.com", "secret plan")
    assert "ann@example.com" not in repr(log) and "secret plan" not in repr(log)


def test_log_messages_of_a_detail_array_are_skipped_not_kept(schemas):
    detail = ("<items><logMessage>Upload has begun!</logMessage><logType>BeginUpload</logType>"
              "<dateCreated>2026-11-26T05:00:00.000Z</dateCreated><auxArray><items><logMessage>x</logMessage>"
              "<logType>y</logType></items></auxArray></items>")
    document = answer(job_log_xml("a", detailTotalRows="1", detailArray=detail * 3), job_log_xml("b"))
    schemas["2014-04-03"].validate(as_2014(body_element(document)))  # getJobLogDetails' shape
    result = read_logs(document)
    assert [log.job_name for log in result.logs] == ["a", "b"]
    assert result.invalid_records == 0
    assert "Upload has begun" not in repr(result.logs[0].model_dump())


def test_the_messages_of_a_long_detail_array_are_freed_as_they_stream():
    detail = ("<items><logMessage>Upload has begun!</logMessage><logType>BeginUpload</logType>"
              "<dateCreated>2026-11-26T05:00:00.000Z</dateCreated></items>")
    document = answer(job_log_xml("a", detailTotalRows="5000", detailArray=detail * 5000), job_log_xml("b"))
    reader = ResponseReader("getJobLogs")
    held = []
    for start in range(0, len(document), 4096):
        reader.feed(document[start : start + 4096])
        held.append(sum(len(entries) for entries in reader._lists))
    reader.close()
    assert [log.job_name for log in reader.job_logs().logs] == ["a", "b"]
    assert max(held) == 1  # the message still arriving, never the thousands before it


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_streaming_in_any_chunks_gives_the_same_logs(chunk):
    logs = [job_log_xml(f"j{i}", fileErrorCount=str(i)) for i in range(5)]
    document = answer(*logs, job_log_xml("bad", fatalError="?"))
    assert read_logs(document, chunk) == read_logs(document)
    assert read_logs(ADOBE_EXAMPLE, chunk) == read_logs(ADOBE_EXAMPLE)


@pytest.mark.parametrize("empty", ["<jobLogArray/>", "<jobLogArray></jobLogArray>", "<jobLogArray>\n </jobLogArray>"])
def test_empty_job_log_array(empty):
    document = answer().replace(b"<jobLogArray></jobLogArray>", empty.encode())
    assert read_logs(document) == JobLogsResult(())


def test_an_answer_without_job_log_array_is_malformed_not_empty():
    document = answer().replace(b"<jobLogArray></jobLogArray>", b"")
    with pytest.raises(MalformedResponse) as caught:
        read_logs(document)
    assert str(caught.value) == "getJobLogsReturn without jobLogArray"


def test_only_items_of_the_job_log_array_are_job_logs():
    document = answer(job_log_xml("a")).replace(b"</jobLogArray>", b"</jobLogArray><jobArray>"
                                                + job_log_xml("not-a-log").encode() + b"</jobArray>")
    result = read_logs(document)
    assert [log.job_name for log in result.logs] == ["a"]
    assert result.invalid_records == 0
    # ... and a getActiveJobs reader reads no job log as a job.
    reader = ResponseReader("getActiveJobs")
    reader.feed(answer(job_log_xml("a")).replace(b"getJobLogsReturn", b"getActiveJobsReturn"))
    reader.close()
    assert (reader.result().jobs, reader.result().invalid_records) == ((), 0)


# -- outcome -------------------------------------------------------------------------------------


def log_with(fatal: bool, file_errors: int, transfer_errors: int | None, file_warnings: int,
             transfer_warnings: int | None) -> JobLog:
    return JobLog(company_handle="c", job_handle="h", job_name="j", log_type="BeginUpload",
                  file_success_count=1, file_error_count=file_errors, file_warning_count=file_warnings,
                  file_duplicate_count=0, file_update_count=0, total_file_count=1,
                  transfer_error_count=transfer_errors, transfer_warning_count=transfer_warnings,
                  fatal_error=fatal)


@pytest.mark.parametrize(("counts", "outcome"), [
    ((False, 0, None, 0, None), "succeeded"),
    ((False, 0, 0, 0, 0), "succeeded"),
    ((False, 0, None, 1, None), "warnings"),
    ((False, 0, 0, 0, 7), "warnings"),
    ((False, 2, None, 0, None), "errors"),
    ((False, 0, 1, 0, 0), "errors"),
    ((False, 300, 0, 5, 5), "errors"),
    ((True, 0, None, 0, None), "fatal"),
    ((True, 3, 3, 3, 3), "fatal"),
])
def test_outcome(counts, outcome):
    assert log_with(*counts).outcome == outcome


@pytest.mark.parametrize("counts", list(itertools.product([False, True], [0, 1], [None, 0, 1], [0, 1], [None, 0, 1])))
def test_outcome_of_every_combination_is_the_worst_that_happened(counts):
    fatal, file_errors, transfer_errors, file_warnings, transfer_warnings = counts
    happened = {"fatal": fatal, "errors": bool(file_errors or transfer_errors),
                "warnings": bool(file_warnings or transfer_warnings), "succeeded": True}
    worst = next(outcome for outcome in ("fatal", "errors", "warnings", "succeeded") if happened[outcome])
    outcome = log_with(*counts).outcome
    assert outcome == worst and isinstance(outcome, JobOutcome)
    assert {str(o) for o in JobOutcome} == {"fatal", "errors", "warnings", "succeeded"}


# -- invalid records -----------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "bad"), [
    ({"fileErrorCount": "-1"}, "fileErrorCount"),
    ({"transferWarningCount": "-5"}, "transferWarningCount"),
    ({"fileWarningCount": "1.5"}, "fileWarningCount"),
    ({"fileWarningCount": "1.0"}, "fileWarningCount"),  # not xs:int, although Python would read it
    ({"fileSuccessCount": "1_000"}, "fileSuccessCount"),
    ({"fileSuccessCount": "1e3"}, "fileSuccessCount"),
    ({"fileSuccessCount": "٣"}, "fileSuccessCount"),  # not ASCII digits
    ({"totalFileCount": ""}, "totalFileCount"),
    ({"totalFileCount": "many"}, "totalFileCount"),
    ({"fileErrorCount": str(XS_INT_MAX + 1)}, "fileErrorCount"),  # past Java's int: only a hostile IPS
    ({"fileErrorCount": str(2**63)}, "fileErrorCount"),
    ({"fileErrorCount": "9" * 5000}, "fileErrorCount"),  # no 5000-digit int is even made
    ({"fileDuplicateCount": None}, "fileDuplicateCount"),
    ({"jobName": None}, "jobName"),
    ({"logType": None}, "logType"),
    ({"fatalError": "yes"}, "fatalError"),
    ({"fatalError": ""}, "fatalError"),
    ({"fatalError": None}, "fatalError"),
    ({"fileErrorCount": "\u00a04"}, "fileErrorCount"),  # a no-break space is no XML whitespace
    ({"fatalError": "\u2003true"}, "fatalError"),
    ({"startDate": "yesterday"}, "startDate"),
    ({"endDate": "2026-11-26T05:12:30"}, "endDate"),  # no offset: not a point in time
])
def test_an_invalid_record_is_skipped_and_counted_and_the_rest_returned(values, bad, caplog):
    document = answer(job_log_xml("good1"), job_log_xml("bad", **values), job_log_xml("good2"))
    with caplog.at_level(logging.DEBUG):
        result = read_logs(document)
    assert [log.job_name for log in result.logs] == ["good1", "good2"]
    assert result.invalid_records == 1
    name = "None" if values.get("jobName", "") is None else "'bad'"
    assert result.first_invalid == f"job log {name}: bad {bad}"
    assert caplog.records == []  # the poller tells it, once per poll


@pytest.mark.parametrize(("values", "expected"), [
    ({"fileErrorCount": str(XS_INT_MAX)}, {"file_error_count": XS_INT_MAX}),
    ({"fileErrorCount": "+4"}, {"file_error_count": 4}),
    ({"fileErrorCount": " 4\n"}, {"file_error_count": 4}),  # xs:int collapses whitespace
    ({"fileErrorCount": "-0"}, {"file_error_count": 0}),
    ({"fileErrorCount": "007"}, {"file_error_count": 7}),
    ({"fatalError": "1"}, {"fatal_error": True}),
    ({"fatalError": "true"}, {"fatal_error": True}),
    ({"fatalError": "0"}, {"fatal_error": False}),
    ({"fatalError": " false "}, {"fatal_error": False}),
    ({"startDate": None, "endDate": None}, {"start_date": None, "end_date": None}),
    ({"companyHandle": "", "jobSubType": ""}, {"company_handle": "", "job_sub_type": ""}),
])
def test_what_the_schema_allows_is_read(values, expected):
    (log,) = read_logs(answer(job_log_xml("j", **values))).logs
    assert {field: getattr(log, field) for field in expected} == expected


@pytest.mark.parametrize(("field", "value", "message"), [
    ("fileErrorCount", "1.5", "not an xs:int"),
    ("fatalError", "yes", "not an xs:boolean"),
])
def test_what_is_wrong_with_a_value_is_said(field, value, message):
    record = {"companyHandle": "c", "jobHandle": "h", "jobName": "j", "logType": "BeginUpload",
              **dict.fromkeys(COUNTS, "0"), "fatalError": "false", field: value}
    with pytest.raises(ValidationError) as caught:
        JobLog.model_validate(record)
    (error,) = caught.value.errors()
    assert (error["loc"], error["msg"]) == ((field,), f"Value error, {message}")


def test_many_bad_records_are_counted_and_only_the_first_told():
    bad = [job_log_xml(f"bad{i}", fileErrorCount="-1", startDate="never") for i in range(1000)]
    result = read_logs(answer(job_log_xml("good"), *bad))
    assert [log.job_name for log in result.logs] == ["good"]
    assert result.invalid_records == 1000
    assert result.first_invalid == "job log 'bad0': bad startDate, fileErrorCount"


def test_untrusted_text_comes_through_as_text():
    name = 'a <&"> b ' + "x" * 10_000
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    (log,) = read_logs(answer(job_log_xml(escaped, description="<![CDATA[<b>]]>"))).logs
    assert log.job_name == name
    assert log.description == "<b>"


# -- hostile and broken answers ------------------------------------------------------------------


def test_soap_fault_is_typed():
    with pytest.raises(AuthorizationFault) as caught:
        read_document(fault("authorizationFault", 20003), "getJobLogs")
    assert (caught.value.code, caught.value.fault_reason) == (20003, "reason 20003")


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<getJobLogsReturn xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03"><jobLogArray><items>
<jobName>&lol3;</jobName></items></jobLogArray></getJobLogsReturn></s:Body></s:Envelope>"""
XXE = BOMB.replace(b'<!ENTITY lol "lol">', b'<!ENTITY lol SYSTEM "file:///etc/passwd">')


@pytest.mark.parametrize("document", [BOMB, XXE], ids=["billion-laughs", "xxe"])
@pytest.mark.parametrize("chunk", [1, 0])
def test_dtds_are_refused_unread(document, chunk):
    with pytest.raises(MalformedResponse, match="DTDs are not accepted"):
        read_logs(document, chunk)


def test_a_truncated_answer_is_malformed():
    document = answer(job_log_xml("a"), job_log_xml("b"))
    with pytest.raises(MalformedResponse, match="incomplete or broken XML"):
        read_logs(document[: len(document) // 2])


def test_the_answer_of_another_operation_is_malformed():
    with pytest.raises(MalformedResponse, match="expected <getJobLogsReturn>, got <getActiveJobsReturn>"):
        read_logs(answer().replace(b"getJobLogsReturn", b"getActiveJobsReturn"))


# -- the client ----------------------------------------------------------------------------------


def xsd_param_sequence() -> list[str]:
    """The children of getJobLogsParam in ips-jobs.xsd, in order."""
    xs = "{http://www.w3.org/2001/XMLSchema}"
    root = etree.parse(str(XSD)).getroot()
    (param,) = [el for el in root.iter(f"{xs}element") if el.get("name") == "getJobLogsParam"]
    return [el.get("name") for el in param.iter(f"{xs}element") if el is not param]


def sent_param(request: httpx.Request, version: str) -> etree._Element:
    body = etree.fromstring(request.content).find(f"{{{SOAP11_ENV}}}Body")
    (param,) = list(body)
    assert param.tag == f"{{{api_namespace(version)}}}getJobLogsParam"
    assert all(etree.QName(child).namespace == api_namespace(version) for child in param)
    return param


@pytest.mark.parametrize("version", [UNVERSIONED, *KNOWN_VERSIONS])
async def test_every_parameter_is_sent_in_the_schema_order_to_every_version(schemas, version):
    assert xsd_param_sequence() == ["companyHandle", "userHandle", "sortBy", "sortDirection", "startDate",
                                    "endDate", "numRows"]
    recorder = Recorder(xml_response(ADOBE_EXAMPLE if version == UNVERSIONED else answer(version=version)))
    async with client_for(recorder, api_version=version) as client:
        await client.get_job_logs(
            "c|110", start_date=datetime(2026, 11, 26, 5, 0, tzinfo=timezone(timedelta(hours=1))),
            end_date=datetime(2026, 11, 27, tzinfo=UTC), num_rows=1000, sort_by=JobLogSortBy.START_DATE,
            sort_direction=SortDirection.DESCENDING)
    (request,) = recorder.requests
    assert request.headers["SOAPAction"] == "getJobLogs"
    param = sent_param(request, version)
    assert [(etree.QName(c).localname, c.text) for c in param] == [
        ("companyHandle", "c|110"), ("sortBy", "StartDate"), ("sortDirection", "Descending"),
        ("startDate", "2026-11-26T04:00:00.000Z"), ("endDate", "2026-11-27T00:00:00.000Z"), ("numRows", "1000"),
    ]
    assert [etree.QName(c).localname for c in param] == [n for n in xsd_param_sequence() if n != "userHandle"]
    schemas["2014-04-03"].validate(as_2014(param))


@pytest.mark.parametrize(("kwargs", "sent"), [
    ({}, []),
    ({"company_handle": "47"}, [("companyHandle", "47")]),
    ({"num_rows": 1}, [("numRows", "1")]),
    ({"num_rows": XS_INT_MAX}, [("numRows", "2147483647")]),
    ({"end_date": datetime(2026, 1, 1, 0, 0, 0, 999, tzinfo=UTC), "company_handle": "c|1"},
     [("companyHandle", "c|1"), ("endDate", "2026-01-01T00:00:00.000Z")]),
    ({"sort_direction": SortDirection.ASCENDING,
      "start_date": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))},
     [("sortDirection", "Ascending"), ("startDate", "2026-01-01T05:00:00.000Z")]),
])
async def test_only_the_parameters_given_are_sent_and_never_a_user_handle(schemas, kwargs, sent):
    recorder = Recorder(xml_response(answer()))
    async with client_for(recorder) as client:
        assert await client.get_job_logs(**kwargs) == JobLogsResult(())
    param = sent_param(recorder.requests[0], "2014-04-03")
    assert [(etree.QName(c).localname, c.text) for c in param] == sent
    schemas["2014-04-03"].validate(param)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start_date": datetime(2026, 1, 1)}, "a naive datetime has no place in time: 2026-01-01T00:00:00"),
    ({"end_date": datetime(2026, 1, 1)}, "a naive datetime"),
    ({"num_rows": 0}, "num_rows must be an int from 1 to 2147483647, not 0"),
    ({"num_rows": -1}, "not -1"),
    ({"num_rows": XS_INT_MAX + 1}, "not 2147483648"),
    ({"num_rows": True}, "not True"),
])
async def test_parameters_ips_could_not_read_are_refused_before_asking(kwargs, message):
    recorder = Recorder(xml_response(answer()))
    async with client_for(recorder) as client:
        with pytest.raises(ValueError, match=message):
            await client.get_job_logs("c|1", **kwargs)
    assert recorder.requests == []


@pytest.fixture
def tokyo(monkeypatch):
    """The process's local time zone is Tokyo's for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_xs_date_time(tokyo):
    assert xs_date_time(datetime(2026, 11, 26, 5, 0, 0, 123456, tzinfo=UTC)) == "2026-11-26T05:00:00.123Z"
    assert xs_date_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert xs_date_time(datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=2, minutes=30)))) == \
        "2026-03-29T00:00:00.000Z"


async def test_client_returns_the_valid_logs_and_counts_the_invalid():
    recorder = Recorder(xml_response(answer(job_log_xml("a", fatalError="true"), job_log_xml("b", fileErrorCount="-3"),
                                            job_log_xml("c"))))
    async with client_for(recorder) as client:
        result = await client.get_job_logs("c|110")
    assert [(log.job_name, log.outcome) for log in result.logs] == [("a", "fatal"), ("c", "succeeded")]
    assert (result.invalid_records, result.first_invalid) == (1, "job log 'b': bad fileErrorCount")


async def test_client_fault_is_typed_and_not_retried():
    recorder = Recorder(xml_response(fault("authorizationFault", 20000), status=500))
    async with client_for(recorder) as client:
        with pytest.raises(AuthorizationFault):
            await client.get_job_logs("c|110")
    assert len(recorder.requests) == 1


async def test_client_retries_a_5xx_like_every_call():
    recorder = Recorder(httpx.Response(503, text="busy", headers={"Content-Type": "text/html"}),
                        xml_response(ADOBE_EXAMPLE))
    async with client_for(recorder, api_version=UNVERSIONED) as client:
        result = await client.get_job_logs("47")
    assert [log.job_name for log in result.logs] == ["Add_2007-09-14-15:04:34"]
    assert len(recorder.requests) == 2


async def test_client_refuses_a_dtd():
    async with client_for(Recorder(xml_response(BOMB))) as client:
        with pytest.raises(MalformedResponse, match="DTDs are not accepted"):
            await client.get_job_logs("c|110")


async def test_an_endless_answer_is_cut_off_at_the_cap_while_streaming():
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        head = answer(job_log_xml("a"))
        yield head[: head.index(b"</jobLogArray>")] + b"<items><description>"
        while True:
            sent += 65536
            yield b"a" * 65536

    recorder = Recorder(lambda request: httpx.Response(200, content=endless(), headers={"Content-Type": "text/xml"}))
    async with client_for(recorder, max_response_bytes=1_000_000) as client:
        with pytest.raises(OversizedResponse, match="getJobLogs: answer larger than 1000000 bytes"):
            await client.get_job_logs("c|110")
    assert sent < 1_000_000 + 2 * 65536  # stopped at the cap, not buffered whole
    assert len(recorder.requests) == 1  # an oversized answer is not asked for again


async def test_the_shared_budget_bounds_job_logs_too():
    document = answer(*(job_log_xml(f"j{i}") for i in range(20)))
    budget = ResponseBudget(len(document) - 1)
    async with client_for(Recorder(xml_response(document)), budget=budget) as client:
        with pytest.raises(OversizedResponse, match=r"poll\.max_total_response_size"):
            await client.get_job_logs("c|110")
    assert budget.reading == 0  # given back


async def test_an_html_error_page_is_an_http_error():
    recorder = Recorder(httpx.Response(404, text="<html>no</html>", headers={"Content-Type": "text/html"}))
    async with client_for(recorder, retry=FAST_RETRY) as client:
        with pytest.raises(HttpStatusError, match="HTTP 404"):
            await client.get_job_logs("c|110")
