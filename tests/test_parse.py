"""The response reader on real captures, on every shape IPS may use, and on hostile XML."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from exporter.errors import ApiFault, AuthenticationFault, AuthorizationFault, MalformedResponse
from exporter.models import JobState, TaskState
from exporter.parse import ResponseReader, read_document

UPLOAD = "com.scene7.upload.UploadAsyncTaskMonitor"
AUTOSET = "com.scene7.autoset.AutoSetAsyncTaskMonitor"


def read_jobs(data: bytes, chunk: int = 0, keep_items: bool = True) -> ResponseReader:
    reader = ResponseReader("getActiveJobs", keep_items=keep_items)
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
    reader.close()
    return reader


def test_capture_two_jobs(capture):
    result = read_jobs(capture("get_active_jobs-one_publish_job.xml")).result()
    assert result.invalid_records == 0
    upload, publish = result.jobs
    assert (upload.job_type, publish.job_type) == ("UrlUpload", "ImageServingPublish")
    assert upload.company_handle == "111"
    assert upload.job_handle == "j|110||3e41464dce942449a9e5b_2011-03-30-14:32:08.834|5129821"
    assert upload.state is JobState.RUNNING
    assert upload.start_date == datetime(2011, 3, 30, 14, 32, 8, 858000, tzinfo=timezone(timedelta(hours=-5)))
    assert upload.trigger_time is None
    tasks = upload.task_progress_array
    assert [t.task_type for t in tasks] == [UPLOAD, AUTOSET]
    assert tasks[0].num_processed == 1 and tasks[0].progress == 1.0
    assert tasks[1].num_processed == 0 and tasks[1].progress == 0.0
    assert all(t.task_state is None and t.known_state is TaskState.UNKNOWN for t in tasks)
    assert tasks[0].progress_message == ""
    assert tasks[0].last_progress_update.tzinfo is not None
    assert publish.task_progress_array == ()
    assert publish.progress_message == "Starting to generate manifest files."


def test_capture_handle_with_pipe(capture):
    (job,) = read_jobs(capture("get_active_jobs-no_publish_job.xml")).result().jobs
    assert job.company_handle == "c|110"


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_streaming_in_any_chunks_gives_the_same_jobs(capture, chunk):
    data = capture("get_active_jobs-one_publish_job.xml")
    assert read_jobs(data, chunk).result() == read_jobs(data).result()


def test_capture_fault(capture):
    with pytest.raises(ApiFault) as caught:
        read_document(capture("rename_asset-failure.xml"), "renameAsset")
    assert caught.value.code == 30000
    assert caught.value.fault_reason == "Asset ID 'katlynf' is already in use."
    assert caught.value.reason == "api_fault"


def test_capture_stop_job(capture):
    element = read_document(capture("stop_job-response.xml"), "stopJob")
    assert len(element) == 0


def _prefixed(capture) -> bytes:
    """The capture rewritten with an `ns1:` prefix and a SOAP 1.2 envelope."""
    text = capture("get_active_jobs-no_publish_job.xml").decode()
    text = text.replace("http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope")
    text = text.replace('<getActiveJobsReturn xmlns="http://www.scene7.com/IpsApi/xsd/2010-01-31">',
                        '<ns1:getActiveJobsReturn xmlns:ns1="http://www.scene7.com/IpsApi/xsd/2013-02-15">')
    text = text.replace("</getActiveJobsReturn>", "</ns1:getActiveJobsReturn>")
    import re

    return re.sub(r"<(/?)(?!soapenv|ns1)(\w+)", r"<\1ns1:\2", text).encode()


def test_any_prefix_any_version_soap12(capture):
    (job,) = read_jobs(_prefixed(capture)).result().jobs
    assert job.company_handle == "c|110"
    assert [t.num_processed for t in job.task_progress_array] == [1, 0]


ENVELOPE = (
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
    '<getActiveJobsReturn xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03">{}</getActiveJobsReturn>'
    "</s:Body></s:Envelope>"
)


def job_xml(name: str, *, pending: str = "3", task_state: str = "Processing", items: int = 2) -> str:
    item = ("<items><itemName>a.jpg</itemName><progress>0.5</progress><progressMessage/>"
            "<lastProgressUpdate>2026-11-26T06:00:00.000Z</lastProgressUpdate></items>")
    return (
        f"<items><companyHandle>c|1</companyHandle><jobHandle>j|{name}</jobHandle><name>{name}</name>"
        f"<originalName>{name}</originalName><type>UrlUpload</type><state>Running</state>"
        "<submitUserEmail>u@example.com</submitUserEmail><serverName>s1</serverName>"
        "<startDate>2026-11-26T05:00:00.000+01:00</startDate><triggerTime>2026-11-26T05:00:00.000Z</triggerTime>"
        "<totalSize>0</totalSize><progress>0</progress><progressMessage>x</progressMessage>"
        "<lastProgressUpdate>2026-11-26T06:00:00.000Z</lastProgressUpdate><taskProgressArray><items>"
        f"<taskType>{UPLOAD}</taskType><taskState>{task_state}</taskState><numProcessed>1</numProcessed>"
        f"<numProcessing>1</numProcessing><numPending>{pending}</numPending><progress>0.2</progress>"
        "<progressMessage/><lastProgressUpdate>2026-11-26T06:00:00.000Z</lastProgressUpdate>"
        f"<taskItemProgressArray>{item * items}</taskItemProgressArray></items></taskProgressArray>"
        "<uploadUrlsJob><urlArray/></uploadUrlsJob></items>"
    )


@pytest.mark.parametrize("empty", ["<jobArray/>", "<jobArray></jobArray>", "<jobArray>\n  </jobArray>"])
def test_empty_job_array(empty):
    assert read_jobs(ENVELOPE.format(empty).encode()).result().jobs == ()


def test_bad_records_are_skipped_counted_and_the_first_one_told_without_a_log_line_each(caplog):
    body = ("<jobArray>" + job_xml("good1") + job_xml("bad", pending="many") + job_xml("good2")
            + job_xml("worse", pending="1.5") * 3 + "</jobArray>")
    result = read_jobs(ENVELOPE.format(body).encode()).result()
    assert [job.name for job in result.jobs] == ["good1", "good2"]
    assert result.invalid_records == 4
    assert result.first_invalid == "job 'bad': bad taskProgressArray.0.numPending"
    assert caplog.records == []  # the poller says it once per poll


def test_unknown_state_is_kept_raw_and_exported_as_unknown():
    body = "<jobArray>" + job_xml("j", task_state="Paused") + "</jobArray>"
    result = read_jobs(ENVELOPE.format(body).encode()).result()
    (task,) = result.jobs[0].task_progress_array
    assert task.task_state == "Paused" and task.known_state is TaskState.UNKNOWN


def test_items_counted_not_kept_when_asked():
    body = "<jobArray>" + job_xml("j", items=5) + "</jobArray>"
    (kept,) = read_jobs(ENVELOPE.format(body).encode()).result().jobs[0].task_progress_array
    (counted,) = read_jobs(ENVELOPE.format(body).encode(), keep_items=False).result().jobs[0].task_progress_array
    assert len(kept.task_item_progress_array) == 5 and kept.item_count == 5
    assert kept.task_item_progress_array[0].item_name == "a.jpg"
    assert counted.task_item_progress_array == () and counted.item_count == 5


def test_many_jobs_memory_is_freed_as_read():
    body = "<jobArray>" + "".join(job_xml(f"job{i}") for i in range(2000)) + "</jobArray>"
    data = ENVELOPE.format(body).encode()
    reader = ResponseReader("getActiveJobs", keep_items=False)
    for start in range(0, len(data), 65536):
        reader.feed(data[start : start + 65536])
    root = reader.close()
    assert len(reader.result().jobs) == 2000
    # Job elements are freed as they are read: at most the last one stays in the tree.
    assert len(root[0]) <= 1


@pytest.mark.parametrize(
    ("detail", "error", "code"),
    [
        ("authenticationFault", AuthenticationFault, 10001),
        ("authorizationFault", AuthorizationFault, 20003),
        ("ipsApiFault", ApiFault, 30003),
    ],
)
def test_soap11_and_12_faults(detail, error, code):
    soap11 = (
        '<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><e:Fault>'
        f"<faultcode>e:Server</faultcode><faultstring>{detail}</faultstring><detail>"
        f'<x:{detail} xmlns:x="http://www.scene7.com/IpsApi/xsd"><x:code>{code}</x:code>'
        f"<x:reason>why</x:reason></x:{detail}></detail></e:Fault></e:Body></e:Envelope>"
    )
    soap12 = (
        '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault>'
        "<e:Code><e:Value>e:Receiver</e:Value></e:Code><e:Reason><e:Text>x</e:Text></e:Reason><e:Detail>"
        f'<{detail} xmlns="http://www.scene7.com/IpsApi/xsd"><code>{code}</code><reason>why</reason></{detail}>'
        "</e:Detail></e:Fault></e:Body></e:Envelope>"
    )
    for document in (soap11, soap12):
        with pytest.raises(error) as caught:
            read_document(document.encode(), "getActiveJobs")
        assert caught.value.code == code and caught.value.fault_reason == "why"


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" a="&lol9;"><s:Body>&lol9;</s:Body></s:Envelope>"""

XXE = b"""<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&x;</s:Body></s:Envelope>"""


@pytest.mark.parametrize("document", [BOMB, XXE], ids=["billion-laughs", "xxe"])
def test_dtds_are_refused_without_expanding(document):
    started = time.perf_counter()
    with pytest.raises(MalformedResponse, match="DTD"):
        read_jobs(document)
    assert time.perf_counter() - started < 0.5


def test_external_entity_in_one_byte_chunks_is_refused_before_the_root():
    with pytest.raises(MalformedResponse, match="DTD"):
        read_jobs(XXE, chunk=1)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"not xml at all",
        ENVELOPE.format("<jobArray>" + job_xml("a")).encode()[:-40],
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>',
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<getCompanyInfoReturn xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03"/></s:Body></s:Envelope>',
        b'<s:Envelope xmlns:s="http://example.com/not-soap"><s:Body/></s:Envelope>',
    ],
    ids=["empty", "html", "text", "truncated", "empty-body", "wrong-operation", "not-soap"],
)
def test_malformed_documents(document):
    with pytest.raises(MalformedResponse):
        read_jobs(document)
