"""The SOAP plumbing: the request bytes IPS receives, and the two guards of the XML reader."""

from __future__ import annotations

import pytest
from lxml import etree

from exporter import soap
from exporter.soap import (
    AuthHeader,
    ForbiddenXML,
    PrologGuard,
    build_envelope,
    child_text,
    hardened_pull_parser,
    local_name,
)

AUTH = AuthHeader("ops@example.com", "pw", "scene7-exporter", "1.2.3")
DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"
ENVELOPE_OPEN = b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
ENVELOPE_CLOSE = b"</soapenv:Envelope>"


@pytest.mark.parametrize(
    ("operation", "params", "auth", "inner"),
    [
        (
            "getActiveJobs", {"companyHandle": "c|110", "originalName": "Café <&>"}, AUTH,
            b'<soapenv:Header><authHeader xmlns="http://www.scene7.com/IpsApi/xsd"><user>ops@example.com</user>'
            b"<password>pw</password><locale>en-US</locale><appName>scene7-exporter</appName>"
            b"<appVersion>1.2.3</appVersion></authHeader>"
            b'</soapenv:Header><soapenv:Body><getActiveJobsParam xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03">'
            b"<companyHandle>c|110</companyHandle><originalName>Caf\xc3\xa9 &lt;&amp;&gt;</originalName>"
            b"</getActiveJobsParam></soapenv:Body>",
        ),
        (
            "getCompanyMembership", None, None,
            b'<soapenv:Body><getCompanyMembershipParam xmlns="http://www.scene7.com/IpsApi/xsd/2014-04-03"/>'
            b"</soapenv:Body>",
        ),
    ],
)
def test_request_envelope_byte_for_byte(operation, params, auth, inner):
    # UTF-8 with its declaration, the envelope prefixed soapenv, IPS elements in default namespaces.
    assert build_envelope(operation, "2014-04-03", params, auth) == DECLARATION + ENVELOPE_OPEN + inner + ENVELOPE_CLOSE


PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- IPS -->\n'


@pytest.mark.parametrize(
    "doctype",
    [
        b'<!DOCTYPE s:Envelope [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>',
        b'<!DOCTYPE s:Envelope SYSTEM "http://127.0.0.1:9/ips.dtd">',
        b"<!DOCTYPE s:Envelope>",
    ],
)
def test_prolog_guard_refuses_any_doctype_even_fed_byte_by_byte(doctype):
    guard = PrologGuard()
    document = PROLOG + doctype + b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>'
    with pytest.raises(ForbiddenXML, match=r"^DTDs are not accepted in IPS responses$"):
        for i in range(len(document)):
            guard.feed(document[i : i + 1])


def test_prolog_guard_passes_once_the_root_starts_and_reads_no_further():
    guard = PrologGuard()
    guard.feed(PROLOG + b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org')
    assert not guard.passed
    guard.feed(b'/soap/envelope/"><s:Body>')
    assert guard.passed
    # What follows the root's start is lxml's to judge: not even broken XML is looked at.
    guard.feed(b"<!DOCTYPE late><<")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<<", "not well-formed XML: not well-formed (invalid token): line 1, column 1"),
        (b'<?xml version="1.0" encoding="x-unknown"?><a/>', "not well-formed XML: unknown encoding: x-unknown"),
    ],
)
def test_prolog_guard_reports_broken_xml_as_value_error(data, message):
    with pytest.raises(ValueError) as caught:
        PrologGuard().feed(data)
    assert str(caught.value) == message and not isinstance(caught.value, ForbiddenXML)


def parse(data: bytes, tag: str | None = None) -> tuple[list[str], etree._Element]:
    parser = hardened_pull_parser(tag)
    parser.feed(data)
    root = parser.close()
    return [local_name(element.tag) for _, element in parser.read_events()], root


def test_hardened_parser_expands_no_entity_and_drops_comments_and_pis():
    # The prolog guard refuses DTDs first; the parser holds on its own as well.
    _, root = parse(b'<!DOCTYPE r [<!ENTITY e "expanded">]><r><!-- c --><?pi x?><a>&e;</a></r>')
    assert etree.tostring(root) == b"<r><a>&e;</a></r>"
    assert root[0].text is None


def test_hardened_parser_loads_no_external_dtd(tmp_path):
    dtd = tmp_path / "ips.dtd"
    dtd.write_text('<!ENTITY e "from the file">\n<!ELEMENT broken')  # an error if it were read
    _, root = parse(f'<!DOCTYPE r SYSTEM "{dtd.as_uri()}"><r>&e;</r>'.encode())
    assert etree.tostring(root) == b"<r>&e;</r>"
    assert root.getroottree().docinfo.externalDTD is None


def test_hardened_parser_refuses_a_huge_tree():
    _, root = parse(b"<a>" * 256 + b"</a>" * 256)
    assert root.tag == "a"
    with pytest.raises(etree.XMLSyntaxError, match="Excessive depth"):
        parse(b"<a>" * 257 + b"</a>" * 257)


def test_hardened_parser_reports_the_end_of_the_tags_asked_for():
    document = b"<r xmlns='urn:ips'><jobArray><items><name>a</name></items><items/></jobArray></r>"
    assert parse(document, "{*}items")[0] == ["items", "items"]
    assert parse(document)[0] == ["name", "items", "items", "jobArray", "r"]


@pytest.fixture
def empty_memo(monkeypatch):
    """local_name with nothing memoised yet (the memo is per process, shared by every test)."""
    memo: dict[str, str] = {}
    monkeypatch.setattr(soap, "_LOCAL_NAMES", memo)
    return memo


@pytest.mark.usefixtures("empty_memo")
@pytest.mark.parametrize(
    ("tag", "name"),
    [
        ("{http://www.scene7.com/IpsApi/xsd/2014-04-03}jobArray", "jobArray"),
        ("items", "items"),
        (etree.Comment("c").tag, ""),
        (etree.ProcessingInstruction("pi").tag, ""),
    ],
)
def test_local_name_first_and_memoised(tag, name):
    assert local_name(tag) == name
    assert local_name(tag) == name


def test_local_name_memo_is_bounded(empty_memo):
    tags = [f"{{urn:hostile}}t{i}" for i in range(5000)]
    assert [local_name(tag) for tag in tags] == [f"t{i}" for i in range(5000)]
    assert len(empty_memo) == 4096


def test_child_text_of_empty_missing_and_namespaced_children():
    element = etree.fromstring(b"<job xmlns='urn:ips'><name/><state>Running</state><!-- x --></job>")
    assert child_text(element, "name") == ""
    assert child_text(element, "state") == "Running"
    assert child_text(element, "progress") is None
