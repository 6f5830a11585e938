"""The response reader on real captures, on every shape IPS may use, and on hostile XML."""

from __future__ import annotations

import gc
import logging
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree
from pydantic import ValidationError

from exporter import models, parse, soap
from exporter.errors import ApiFault, AuthenticationFault, AuthorizationFault, MalformedResponse
from exporter.models import ActiveJob, Company, CompanyMembership, JobState, TaskProgress, TaskState
from exporter.parse import ResponseReader, check_job_array, companies_from_membership, read_document

UPLOAD = "com.scene7.upload.UploadAsyncTaskMonitor"
AUTOSET = "com.scene7.autoset.AutoSetAsyncTaskMonitor"


def read_jobs(
    data: bytes, chunk: int = 0, keep_items: bool = True, known: dict[bytes, ActiveJob] | None = None
) -> ResponseReader:
    reader = ResponseReader("getActiveJobs", keep_items=keep_items, known=known)
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
    reader.close()
    return reader


def test_capture_two_jobs(capture):
    result = read_jobs(capture("get_active_jobs-one_publish_job.xml")).result()
    assert (result.invalid_records, result.first_invalid) == (0, "")
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


def job_xml(
    name: str, *, pending: str = "3", task_state: str = "Processing", items: int = 2, message: str = "x"
) -> str:
    item = ("<items><itemName>a.jpg</itemName><progress>0.5</progress><progressMessage/>"
            "<lastProgressUpdate>2026-11-26T06:00:00.000Z</lastProgressUpdate></items>")
    return (
        f"<items><companyHandle>c|1</companyHandle><jobHandle>j|{name}</jobHandle><name>{name}</name>"
        f"<originalName>{name}</originalName><type>UrlUpload</type><state>Running</state>"
        "<submitUserEmail>u@example.com</submitUserEmail><serverName>s1</serverName>"
        "<startDate>2026-11-26T05:00:00.000+01:00</startDate><triggerTime>2026-11-26T05:00:00.000Z</triggerTime>"
        f"<totalSize>0</totalSize><progress>0</progress><progressMessage>{message}</progressMessage>"
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
    twice_bad = job_xml("bad1", pending="many").replace("2026-11-26T05:00:00.000+01:00", "yesterday")
    body = ("<jobArray>" + job_xml("good1") + twice_bad + job_xml("good2") + job_xml("bad2", pending="")
            + job_xml("worse", pending="1.5") * 3 + "</jobArray>")
    with caplog.at_level(logging.DEBUG):
        result = read_jobs(ENVELOPE.format(body).encode()).result()
    assert [job.name for job in result.jobs] == ["good1", "good2"]
    assert result.invalid_records == 5
    assert result.first_invalid == "job 'bad1': bad startDate, taskProgressArray.0.numPending"
    assert caplog.records == []  # the poller tells it, once per poll


def test_empty_leaves_are_empty_strings():
    body = "<jobArray>" + job_xml("j", message="") + "</jobArray>"
    (job,) = read_jobs(ENVELOPE.format(body).encode()).result().jobs
    assert job.progress_message == ""
    (task,) = job.task_progress_array
    assert task.progress_message == ""
    assert [item.progress_message for item in task.task_item_progress_array] == ["", ""]


def test_only_items_of_the_job_array_are_jobs():
    body = "<jobArray>" + job_xml("j") + "<totalCount>1</totalCount></jobArray>"
    result = read_jobs(ENVELOPE.format(body).encode()).result()
    assert [job.name for job in result.jobs] == ["j"]
    assert result.invalid_records == 0


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


def test_items_are_kept_unless_asked_not_to():
    reader = ResponseReader("getActiveJobs")
    reader.feed(ENVELOPE.format("<jobArray>" + job_xml("j", items=3) + "</jobArray>").encode())
    reader.close()
    (task,) = reader.result().jobs[0].task_progress_array
    assert [item.item_name for item in task.task_item_progress_array] == ["a.jpg"] * 3


def test_many_jobs_memory_is_freed_as_read():
    body = "<jobArray>" + "\n".join(job_xml(f"job{i}") for i in range(2000)) + "</jobArray>"
    data = ENVELOPE.format(body).encode()
    reader = ResponseReader("getActiveJobs", keep_items=False)
    held = []
    for start in range(0, len(data), 65536):
        reader.feed(data[start : start + 65536])
        held.append(sum(len(array) for array in reader._arrays))
    root = reader.close()
    assert [job.name for job in reader.result().jobs] == [f"job{i}" for i in range(2000)]
    # Each job is freed once read: between chunks only the one still arriving is in the tree.
    assert max(held) == 1
    (job_array,) = root
    assert len(job_array) == 0


JOB_FIELDS_GIVEN = {
    "company_handle", "job_handle", "name", "original_name", "job_type", "state", "submit_user_email",
    "server_name", "start_date", "trigger_time", "total_size", "progress", "progress_message",
    "last_progress_update", "task_progress_array",
}


def test_jobs_share_each_repeating_value_and_the_set_of_their_given_fields_and_read_the_same(monkeypatch):
    monkeypatch.setattr(parse, "_shared_texts", {})
    monkeypatch.setattr(models, "_shared_field_sets", {})
    body = "<jobArray>" + "".join(job_xml(f"job{i}", message="Uploading") for i in range(3)) + "</jobArray>"
    first, second, third = read_jobs(ENVELOPE.format(body).encode(), chunk=97).result().jobs
    assert set(parse._shared_texts) == {"c|1", "UrlUpload", "u@example.com", "s1", "Uploading", UPLOAD, ""}
    for name in ("company_handle", "job_type", "submit_user_email", "server_name", "progress_message"):
        assert getattr(first, name) is getattr(second, name) is getattr(third, name)
    tasks = [job.task_progress_array[0] for job in (first, second, third)]
    assert tasks[0].task_type is tasks[1].task_type is tasks[2].task_type == UPLOAD
    assert [job.name for job in (first, second, third)] == ["job0", "job1", "job2"]
    assert first.model_fields_set is second.model_fields_set == JOB_FIELDS_GIVEN
    assert tasks[0].model_fields_set is tasks[2].model_fields_set
    assert set(first.model_dump(exclude_unset=True)) == JOB_FIELDS_GIVEN
    # A copy with a field updated has a set of its own; the jobs it was shared with keep theirs.
    copied = first.model_copy(update={"description": "d"})
    assert copied.model_fields_set == JOB_FIELDS_GIVEN | {"description"}
    assert first.model_fields_set == second.model_fields_set == JOB_FIELDS_GIVEN


def test_what_jobs_share_is_bounded(monkeypatch):
    def messages(*texts: str) -> list[ActiveJob]:
        body = "<jobArray>" + "".join(job_xml(f"job{i}", message=text) for i, text in enumerate(texts))
        return list(read_jobs(ENVELOPE.format(body + "</jobArray>").encode()).result().jobs)

    monkeypatch.setattr(parse, "_shared_texts", {})
    longest, long = "m" * 256, "m" * 257
    jobs = messages(longest, longest, long, long)
    assert jobs[0].progress_message is jobs[1].progress_message == longest
    assert jobs[2].progress_message == jobs[3].progress_message == long
    assert jobs[2].progress_message is not jobs[3].progress_message
    assert long not in parse._shared_texts

    monkeypatch.setattr(parse, "_shared_texts", {})
    monkeypatch.setattr(parse, "_MAX_SHARED_TEXTS", 3)
    monkeypatch.setattr(models, "_shared_field_sets", {})
    monkeypatch.setattr(models, "_MAX_SHARED_FIELD_SETS", 0)
    jobs = messages("sending", "sending")
    assert len(parse._shared_texts) == 3 and "sending" not in parse._shared_texts
    assert jobs[0].progress_message == jobs[1].progress_message == "sending"
    assert jobs[0].progress_message is not jobs[1].progress_message
    assert jobs[0].model_fields_set == jobs[1].model_fields_set == JOB_FIELDS_GIVEN
    assert jobs[0].model_fields_set is not jobs[1].model_fields_set
    assert models._shared_field_sets == {}


def read_knowing(data: bytes, known: dict[bytes, ActiveJob] | None, chunk: int = 4096) -> ResponseReader:
    return read_jobs(data, chunk, keep_items=False, known=known)


def test_a_job_whose_xml_did_not_change_is_the_same_model_and_a_changed_one_is_read_again():
    def answer(pending_of_b: str, items_of_c: int) -> bytes:
        jobs = [job_xml("a"), job_xml("b", pending=pending_of_b), job_xml("c", items=items_of_c)]
        return ENVELOPE.format("<jobArray>" + "".join(jobs) + "</jobArray>").encode()

    first = read_knowing(answer("3", 40), {}).result()
    assert [job.name for job in first.jobs] == ["a", "b", "c"] and len(first.fingerprints) == 3
    same = read_knowing(answer("3", 40), dict(first.fingerprints)).result()
    assert all(now is before for now, before in zip(same.jobs, first.jobs, strict=True))
    # b's pending count changed; c's item list grew, though what is left of it in the tree
    # (its last entry, the rest freed while streaming) reads the same.
    changed = read_knowing(answer("4", 45), dict(first.fingerprints)).result()
    assert changed.jobs[0] is first.jobs[0]
    assert changed.jobs[1] is not first.jobs[1] and changed.jobs[1].task_progress_array[0].num_pending == 4
    assert changed.jobs[2] is not first.jobs[2] and changed.jobs[2].task_progress_array[0].item_count == 45
    assert changed.jobs[2] == read_jobs(answer("4", 45), keep_items=False).result().jobs[2]
    assert set(changed.fingerprints.values()) == set(changed.jobs)


def test_a_known_job_is_known_whatever_whitespace_follows_it_and_leaves_no_freed_count_behind():
    spaced = ENVELOPE.format("<jobArray>" + job_xml("a", items=40) + "\n  " + job_xml("b") + "</jobArray>").encode()
    packed = ENVELOPE.format("<jobArray>" + job_xml("a", items=40) + job_xml("b") + "</jobArray>").encode()
    first = read_knowing(spaced, {}).result()
    reader = read_knowing(packed, dict(first.fingerprints))
    assert all(now is before for now, before in zip(reader.result().jobs, first.jobs, strict=True))
    # The counts of item entries freed from a known job's lists are dropped as it is taken.
    assert reader._cut == {}


def test_without_fingerprints_of_an_earlier_answer_nothing_is_fingerprinted():
    data = ENVELOPE.format("<jobArray>" + job_xml("a") + "</jobArray>").encode()
    assert read_knowing(data, None).result().fingerprints == {}


def test_an_invalid_record_is_never_remembered_and_is_counted_at_every_answer():
    data = ENVELOPE.format("<jobArray>" + job_xml("a", pending="many") + job_xml("b") + "</jobArray>").encode()
    first = read_knowing(data, {}).result()
    again = read_knowing(data, dict(first.fingerprints)).result()
    assert (first.invalid_records, again.invalid_records) == (1, 1)
    assert [job.name for job in again.jobs] == ["b"] and again.jobs[0] is first.jobs[0]


def test_no_cyclic_garbage_collection_runs_while_a_chunk_is_parsed():
    """A chunk's records and models are many objects and no cycle: collections during it would
    only rescan the growing result. The collector is back on after the chunk, and catches up
    once: one collection per chunk at most, where 2,000 jobs in one chunk would trigger dozens."""
    body = "<jobArray>" + "\n".join(job_xml(f"job{i}") for i in range(2000)) + "</jobArray>"
    data = ENVELOPE.format(body).encode()
    reader = ResponseReader("getActiveJobs", keep_items=False)
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(seen)
    try:
        reader.feed(data)
        enabled_after_the_chunk = gc.isenabled()
        reader.close()
    finally:
        gc.callbacks.remove(seen)
    assert len(reader.result().jobs) == 2000
    assert len(collections) <= 2, collections  # the catch-ups after feed() and close()
    assert enabled_after_the_chunk and gc.isenabled()


def test_a_chunk_that_fails_to_parse_leaves_the_collector_on():
    reader = ResponseReader("getActiveJobs")
    with pytest.raises(MalformedResponse):
        reader.feed(b"<?xml version='1.0'?><a><b></a>")
    assert gc.isenabled()


@pytest.mark.parametrize("keep_items", [False, True])
def test_a_long_item_list_is_cut_back_as_it_streams_and_still_counted(keep_items):
    data = ENVELOPE.format("<jobArray>" + job_xml("big", items=5000) + job_xml("small", items=3)
                           + "</jobArray>").encode()
    reader = ResponseReader("getActiveJobs", keep_items=keep_items)
    held = []
    for start in range(0, len(data), 4096):
        reader.feed(data[start : start + 4096])
        held.append(sum(len(entries) for entries in reader._lists))
    reader.close()
    big, small = (job.task_progress_array[0] for job in reader.result().jobs)
    assert (big.item_count, small.item_count) == (5000, 3)
    if keep_items:
        assert len(big.task_item_progress_array) == 5000 and max(held) == 0  # nothing cut: all kept
    else:
        assert big.task_item_progress_array == () and max(held) == 1


def test_a_job_read_while_the_next_one_s_item_list_is_cut_back_counts_only_its_own_items():
    whole = ENVELOPE.format("<jobArray>" + job_xml("small", items=1) + job_xml("big", items=50)
                            + "</jobArray>").encode()
    # The first piece ends within the big job's item list: in one drain that list is cut back,
    # then the small job, complete and with one item (nothing to cut), is read.
    middle = whole.index(b"<items><itemName>", whole.index(b"<name>big</name>")) + 20 * 150
    reader = ResponseReader("getActiveJobs", keep_items=False)
    reader.feed(whole[:middle])
    assert reader._cut and [job.name for job in reader._read] == ["small"]
    reader.feed(whole[middle:])
    reader.close()
    small, big = (job.task_progress_array[0] for job in reader.result().jobs)
    assert (small.item_count, big.item_count) == (1, 50)


def test_tags_never_seen_before_are_read_by_their_local_names():
    soap._LOCAL_NAMES.clear()  # a memo: as in a process that has read nothing yet
    (job,) = read_jobs(ENVELOPE.format("<jobArray>" + job_xml("j") + "</jobArray>").encode()).result().jobs
    assert (job.job_handle, job.task_progress_array[0].num_pending) == ("j|j", 3)


def test_a_record_read_on_its_own_counts_its_items():
    record = parse.job_record(etree.fromstring(job_xml("j", items=4)), keep_items=False)
    assert record["taskProgressArray"][0]["itemCount"] == 4


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


SOAP11 = '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">{}</s:Envelope>'
IPS = "http://www.scene7.com/IpsApi/xsd/2014-04-03"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"", r"incomplete or broken XML: "),
        (b"<html><body>502 Bad Gateway</body></html>", r"expected a SOAP Envelope, got <html>$"),
        (b"not xml at all", r"^not well-formed XML: syntax error: line 1, column 0$"),
        (SOAP11.format("<s:Body><x></s:Body>").encode(), r"not well-formed XML: Opening and ending tag mismatch: x "),
        (ENVELOPE.format("<jobArray>" + job_xml("a")).encode()[:-40], r"incomplete or broken XML: "),
        (SOAP11.format("<s:Body/>").encode(), r"empty SOAP Body$"),
        (SOAP11.format("<s:Body><!-- nothing --></s:Body>").encode(), r"empty SOAP Body$"),
        (SOAP11.format("<s:Header/>").encode(), r"SOAP Envelope without exactly one Body$"),
        (SOAP11.format("<s:Body/><s:Body/>").encode(), r"SOAP Envelope without exactly one Body$"),
        (
            SOAP11.format(f'<s:Body><getCompanyInfoReturn xmlns="{IPS}"/></s:Body>').encode(),
            r"expected <getActiveJobsReturn>, got <getCompanyInfoReturn>$",
        ),
        (
            SOAP11.format('<s:Body><getActiveJobsReturn xmlns="http://example.com/ips"/></s:Body>').encode(),
            r"expected <getActiveJobsReturn>, got <getActiveJobsReturn>$",
        ),
        (
            b'<s:Envelope xmlns:s="http://example.com/not-soap"><s:Body/></s:Envelope>',
            r"expected a SOAP Envelope, got <Envelope>$",
        ),
    ],
    ids=[
        "empty", "html", "text", "mismatched-tag", "truncated", "empty-body", "comment-body",
        "no-body", "two-bodies", "wrong-operation", "not-ips-namespace", "not-soap",
    ],
)
def test_malformed_documents(document, message):
    with pytest.raises(MalformedResponse, match=f"^{message}"):
        read_jobs(document)


def fault(inner: str) -> bytes:
    return SOAP11.format(f"<s:Body><s:Fault><faultcode>s:Server</faultcode>{inner}</s:Fault></s:Body>").encode()


def soap12_fault(inner: str) -> bytes:
    return (
        '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault>'
        f"<e:Code><e:Value>e:Receiver</e:Value></e:Code>{inner}</e:Fault></e:Body></e:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (fault("<faultstring>\n  java.lang.NullPointerException\n</faultstring>"), "java.lang.NullPointerException"),
        (soap12_fault('<e:Reason><e:Text xml:lang="en"> Server busy </e:Text></e:Reason>'), "Server busy"),
        (fault(""), "SOAP fault without detail"),
        (soap12_fault(""), "SOAP fault without detail"),
        (
            fault(
                "<faultstring>denied</faultstring><detail>"
                '<authenticationFault xmlns="http://example.com/not-ips"><code>10001</code></authenticationFault>'
                "</detail>"
            ),
            "denied",
        ),
    ],
    ids=["soap11-faultstring", "soap12-reason", "soap11-bare", "soap12-bare", "detail-not-ips"],
)
def test_fault_without_ips_detail_is_an_api_fault_with_the_soap_reason(document, reason):
    with pytest.raises(ApiFault) as caught:
        read_document(document, "getActiveJobs")
    assert (caught.value.code, caught.value.fault_reason) == (None, reason)


@pytest.mark.parametrize(
    ("fields", "code", "reason"),
    [
        ("<code> 10002 </code><reason> bad password </reason>", 10002, "bad password"),
        ("<code>123456789</code><reason>r</reason>", 123456789, "r"),
        ("<code>1234567890</code><reason>r</reason>", None, "r"),
        ("<code>ten</code><reason>r</reason>", None, "r"),
        ("<code>\u0661\u0660</code><reason>r</reason>", None, "r"),
        ("<code/><reason>r</reason>", None, "r"),
        ("<code>10001</code>", 10001, ""),
        ("", None, ""),
    ],
    ids=["padded", "nine-digits", "ten-digits", "word", "non-ascii-digits", "empty-code", "no-reason", "no-fields"],
)
def test_fault_code_and_reason(fields, code, reason):
    document = fault(
        "<faultstring>x</faultstring><detail><!-- Axis -->"
        f'<authenticationFault xmlns="http://www.scene7.com/IpsApi/xsd">{fields}</authenticationFault></detail>'
    )
    with pytest.raises(AuthenticationFault) as caught:
        read_document(document, "getActiveJobs")
    assert (caught.value.code, caught.value.fault_reason) == (code, reason)


def membership_document(*items: str) -> bytes:
    body = "".join(f"<items>{item}</items>" for item in items)
    return SOAP11.format(
        f'<s:Body><getCompanyMembershipReturn xmlns="{IPS}"><membershipArray>{body}</membershipArray>'
        "</getCompanyMembershipReturn></s:Body>"
    ).encode()


def test_company_memberships():
    element = read_document(
        membership_document(
            "<company><companyHandle>c|1</companyHandle><name>Example</name><rootPath>Example/</rootPath>"
            "<expires>2100-12-31T23:00:00.000-06:00</expires></company><role>Admin</role><isActive>true</isActive>",
            "<company><companyHandle>c|2</companyHandle><name>Other</name></company><isActive>false</isActive>",
        ),
        "getCompanyMembership",
    )
    expires = datetime(2100, 12, 31, 23, tzinfo=timezone(timedelta(hours=-6)))
    assert companies_from_membership(element) == [
        CompanyMembership(
            company=Company(company_handle="c|1", name="Example", root_path="Example/", expires=expires),
            role="Admin",
        ),
        CompanyMembership(company=Company(company_handle="c|2", name="Other"), is_active=False),
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("<role>Admin</role>", "CompanyMembership without company"),
        ("<company><name>Example</name></company><isActive>maybe</isActive>", "invalid CompanyMembership: 2 errors"),
    ],
    ids=["no-company", "invalid"],
)
def test_broken_company_membership(item, message):
    element = read_document(membership_document(item), "getCompanyMembership")
    with pytest.raises(MalformedResponse, match=f"^{re.escape(message)}$"):
        companies_from_membership(element)


def test_active_jobs_answer_needs_a_job_array():
    check_job_array(read_document(ENVELOPE.format("<jobArray/>").encode(), "getActiveJobs"))
    with pytest.raises(MalformedResponse, match=r"^getActiveJobsReturn without jobArray$"):
        check_job_array(read_document(ENVELOPE.format("").encode(), "getActiveJobs"))


@pytest.mark.parametrize(("model", "field", "documented", "member"), [
    (TaskProgress, "task_state", "Done", TaskState.DONE),
    (ActiveJob, "state", "Running", JobState.RUNNING),
])
def test_a_state_is_its_member_when_documented_else_the_string_as_it_came_and_never_another_type(
    model, field, documented, member
):
    task = {"taskType": "t", "numProcessed": "1", "numProcessing": "0", "numPending": "0", "progress": "0.5",
            "lastProgressUpdate": "2026-11-26T06:00:00.000Z"}
    job = {"companyHandle": "c|1", "jobHandle": "j|1", "name": "n", "originalName": "n", "type": "UrlUpload",
           "startDate": "2026-11-26T05:00:00.000Z", "lastProgressUpdate": "2026-11-26T06:00:00.000Z"}
    base = task if model is TaskProgress else job
    wire = "taskState" if model is TaskProgress else "state"
    assert getattr(model.model_validate({**base, wire: documented}), field) is member
    new = getattr(model.model_validate({**base, wire: "Paused"}), field)
    assert new == "Paused" and type(new) is str
    with pytest.raises(ValidationError):
        model.model_validate({**base, wire: 5})
