"""SOAP plumbing of the IPS API: namespaces, request envelopes, the hardened XML reader.

IPS speaks document/literal SOAP. This module knows the envelope and the namespaces and nothing
of any operation: `client` builds operation bodies on top of it, the simulator answers with it.
Untrusted XML is read here only, with DTDs refused before the parser sees the document body.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from exporter.versions import IPS_COMMON_NS, api_namespace

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP_ENVELOPES = frozenset({SOAP11_ENV, SOAP12_ENV})
SOAP11_CONTENT_TYPE = "text/xml; charset=UTF-8"


def split_tag(tag: str) -> tuple[str | None, str]:
    """`{ns}local` into (ns, local); a tag without namespace gives (None, local)."""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


_LOCAL_NAMES: dict[str, str] = {}


def local_name(tag: object) -> str:
    """The local name of an element tag (comments and PIs have non-string tags: empty).

    Memoised: a 10,000-job answer has 700,000 elements but a few dozen distinct tags."""
    if not isinstance(tag, str):
        return ""
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        name = tag.rpartition("}")[2]
        if len(_LOCAL_NAMES) < 4096:  # tags come from the answer: bound what it can make us keep
            _LOCAL_NAMES[tag] = name
    return name


# For the loops over every element of an answer: `memoised_local_name(tag) or local_name(tag)`
# spares a call per element once a tag has been seen.
memoised_local_name = _LOCAL_NAMES.get


def add_text_child(parent: etree._Element, tag: str, text: str) -> etree._Element:
    """Append `<tag>text</tag>`; the XML library escapes what needs escaping."""
    child = etree.SubElement(parent, tag)
    child.text = text
    return child


@dataclass(frozen=True)
class AuthHeader:
    """The credentials IPS expects in the SOAP header of every request."""

    user: str
    password: str
    app_name: str
    app_version: str
    locale: str = "en-US"  # the language of IPS's messages

    def __repr__(self) -> str:  # never print the password, whatever prints us
        return f"AuthHeader(user={self.user!r}, password='***', app_name={self.app_name!r}, locale={self.locale!r})"


def build_envelope(
    operation: str,
    api_version: str,
    params: Mapping[str, str] | None = None,
    auth: AuthHeader | None = None,
) -> bytes:
    """A SOAP 1.1 request: `authHeader` in the common namespace, `<operation>Param` in the
    namespace of `api_version` with one text child per entry of `params` (in order)."""
    envelope = etree.Element(f"{{{SOAP11_ENV}}}Envelope", nsmap={"soapenv": SOAP11_ENV})
    if auth is not None:
        header = etree.SubElement(envelope, f"{{{SOAP11_ENV}}}Header")
        auth_el = etree.SubElement(header, f"{{{IPS_COMMON_NS}}}authHeader", nsmap={None: IPS_COMMON_NS})  # type: ignore[dict-item]
        for name, value in (
            ("user", auth.user),
            ("password", auth.password),
            ("locale", auth.locale),
            ("appName", auth.app_name),
            ("appVersion", auth.app_version),
        ):
            add_text_child(auth_el, f"{{{IPS_COMMON_NS}}}{name}", value)
    body = etree.SubElement(envelope, f"{{{SOAP11_ENV}}}Body")
    namespace = api_namespace(api_version)
    param = etree.SubElement(body, f"{{{namespace}}}{operation}Param", nsmap={None: namespace})  # type: ignore[dict-item]
    for name, value in (params or {}).items():
        add_text_child(param, f"{{{namespace}}}{name}", value)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


class ForbiddenXML(ValueError):
    """The document declares a DTD (and so could declare entities): refused unread."""


class _RootReached(Exception):
    pass


class PrologGuard:
    """Reads the prolog of a streamed document with expat and refuses any DOCTYPE.

    Entities can only be declared in a DTD, and a DTD can only come before the root element,
    so a document whose prolog holds no DOCTYPE cannot carry an entity bomb or an external
    entity. The guard stops looking once the root element starts; lxml reads the rest.
    """

    def __init__(self) -> None:
        self._parser = xml.parsers.expat.ParserCreate()
        self._parser.StartDoctypeDeclHandler = self._refuse_doctype
        self._parser.StartElementHandler = self._root_reached
        self.passed = False

    @staticmethod
    def _refuse_doctype(*_: object) -> None:
        raise ForbiddenXML("DTDs are not accepted in IPS responses")

    @staticmethod
    def _root_reached(*_: object) -> None:
        raise _RootReached

    def feed(self, data: bytes) -> None:
        """Inspect the next chunk; raises ForbiddenXML on a DTD, ValueError on broken XML."""
        if self.passed:
            return
        try:
            self._parser.Parse(data, False)
        except _RootReached:
            self.passed = True
        except ForbiddenXML:
            raise
        # LookupError: an unknown encoding; ValueError: one expat cannot read (multi-byte)
        except (xml.parsers.expat.ExpatError, LookupError, ValueError) as exc:
            raise ValueError(f"not well-formed XML: {exc}") from exc


def hardened_pull_parser(
    tag: str | Sequence[str] | None = None, events: tuple[Literal["start", "end"], ...] = ("end",)
) -> etree.XMLPullParser:
    """An incremental lxml parser that resolves no entity, loads no DTD, touches no network."""
    return etree.XMLPullParser(
        events=events,
        tag=tag,
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def iter_children(element: etree._Element, name: str) -> Iterator[etree._Element]:
    """Children of `element` with local name `name`, in any namespace."""
    for child in element:
        if local_name(child.tag) == name:
            yield child


def child_text(element: etree._Element, name: str) -> str | None:
    """Text of the first child with local name `name` (empty string for `<x/>`), or None."""
    for child in element:
        if local_name(child.tag) == name:
            return child.text or ""
    return None
