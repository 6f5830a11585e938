"""The exporter-toolkit web config: loading, refusing bad files, and TLS/mTLS/basic auth end to end.

Certificates are made here with `cryptography` (a throwaway CA, a server certificate for
127.0.0.1, client certificates from that CA and from a stranger CA).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import memory_capped

from exporter.config import ConfigError
from exporter.httpserver import HttpServer, Request, Response
from exporter.webconfig import (
    BasicAuth,
    TlsServerConfig,
    WebConfig,
    _has_allowed_san,
    _normalise_san,
    load_web_config,
)

pytestmark = pytest.mark.timeout(30)

# -- a small PKI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(ca: Issued, common_name: str, sans: list[x509.GeneralName], *, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # from the CA, SAN DNS:scraper.example
    client_key: Path
    other_client_cert: Path  # from the CA, SAN DNS:intruder.example
    other_client_key: Path
    stranger_cert: Path  # from another CA
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("test CA")
    stranger_ca = make_ca("stranger CA")
    (d / "ca.crt").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    server = issue(
        ca,
        "exporter",
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        server=True,
    )
    client = issue(ca, "scraper", [x509.DNSName("scraper.example")], server=False)
    other = issue(ca, "intruder", [x509.DNSName("intruder.example")], server=False)
    stranger = issue(stranger_ca, "scraper", [x509.DNSName("scraper.example")], server=False)
    return Pki(
        d,
        d / "ca.crt",
        *server.write(d, "server"),
        *client.write(d, "client"),
        *other.write(d, "other"),
        *stranger.write(d, "stranger"),
    )


def write_config(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def tls_config(pki: Pki, extra: str = "") -> str:
    # Relative names: they must be read relative to the config file, not the working directory.
    return f"tls_server_config:\n  cert_file: {pki.server_cert.name}\n  key_file: {pki.server_key.name}\n" + extra


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


async def ok_handler(request: Request) -> Response:
    return Response(200, f"hello {request.path}\n".encode())


@pytest.fixture
async def serve() -> AsyncIterator[list[HttpServer]]:
    servers: list[HttpServer] = []
    yield servers
    for server in servers:
        await server.close()


async def start(servers: list[HttpServer], config: WebConfig) -> str:
    server = HttpServer(
        ok_handler,
        "127.0.0.1",
        0,
        ssl_context=config.ssl_context,
        basic_auth=config.basic_auth,
        auth_exempt_paths=frozenset({"/healthz"}),
    )
    await server.start()
    servers.append(server)
    return f"https://127.0.0.1:{server.port}"


async def fetch(url: str, ctx: ssl.SSLContext, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(verify=ctx, timeout=5) as client:
        return await client.get(url, **kwargs)  # type: ignore[arg-type]


def hashed(password: str, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=prefix)).decode()


# -- loading valid files -----------------------------------------------------------------


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, "# nothing\n"))
    assert config == WebConfig(ssl_context=None, basic_auth=None)


def test_http_server_config_is_accepted(tmp_path: Path) -> None:
    config = load_web_config(
        write_config(
            tmp_path,
            "http_server_config:\n  http2: false\n  headers:\n"
            "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        )
    )
    assert config.ssl_context is None
    assert config.basic_auth is None
    assert config.headers == (("X-Frame-Options", "deny"), ("Strict-Transport-Security", "max-age=31536000"))


def test_users_only(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  alice: '{hashed('pw')}'\n"))
    assert config.ssl_context is None
    assert config.basic_auth is not None
    assert set(config.basic_auth.users) == {"alice"}


async def test_https_with_basic_auth(pki: Pki, serve: list[HttpServer]) -> None:
    users = f"basic_auth_users:\n  alice: '{hashed('wonderland')}'\n  bob: '{hashed('b', b'2a')}'\n"
    config = load_web_config(write_config(pki.directory, tls_config(pki) + users, "auth.yml"))
    assert config.ssl_context is not None
    url = await start(serve, config)
    ctx = client_context(pki)

    right = await fetch(url + "/metrics", ctx, auth=("alice", "wonderland"))
    wrong = await fetch(url + "/metrics", ctx, auth=("alice", "looking-glass"))
    missing = await fetch(url + "/metrics", ctx)
    exempt = await fetch(url + "/healthz", ctx)
    bob = await fetch(url + "/", ctx, auth=("bob", "b"))

    assert right.status_code == 200
    assert right.text == "hello /metrics\n"
    assert wrong.status_code == 401
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Basic realm="scene7-exporter"'
    assert exempt.status_code == 200
    assert bob.status_code == 200
    assert right.http_version == "HTTP/1.1"


async def test_inline_cert_and_key(pki: Pki, serve: list[HttpServer], tmp_path: Path) -> None:
    def indent(path: Path) -> str:
        return "".join(f"    {line}\n" for line in path.read_text().splitlines())

    text = "tls_server_config:\n  cert: |\n" + indent(pki.server_cert) + "  key: |\n" + indent(pki.server_key)
    url = await start(serve, load_web_config(write_config(tmp_path, text)))
    assert (await fetch(url + "/", client_context(pki))).status_code == 200


async def test_plain_http_client_on_tls_port_is_logged_at_debug(
    pki: Pki, serve: list[HttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.httpserver")
    config = load_web_config(write_config(pki.directory, tls_config(pki), "plain.yml"))
    url = await start(serve, config)
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient(timeout=5) as client:
            await client.get(url.replace("https", "http") + "/")
    assert any(r.levelno == logging.DEBUG and "TLS handshake" in r.getMessage() for r in caplog.records)
    # and the server is fine afterwards
    assert (await fetch(url + "/", client_context(pki))).status_code == 200


async def test_min_version_tls13_refuses_tls12_client(pki: Pki, serve: list[HttpServer]) -> None:
    config = load_web_config(write_config(pki.directory, tls_config(pki, "  min_version: TLS13\n"), "v13.yml"))
    url = await start(serve, config)
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.TransportError):
        await fetch(url + "/", old)
    assert (await fetch(url + "/", client_context(pki))).status_code == 200


async def test_cipher_suites_in_go_names(pki: Pki, serve: list[HttpServer]) -> None:
    config = load_web_config(
        write_config(
            pki.directory,
            tls_config(
                pki,
                "  max_version: TLS12\n  cipher_suites:\n"
                "    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n"
                "    - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305\n"
                "  curve_preferences: [X25519, CurveP256]\n"
                "  prefer_server_cipher_suites: true\n",
            ),
            "ciphers.yml",
        )
    )
    url = await start(serve, config)
    async with httpx.AsyncClient(verify=client_context(pki), timeout=5) as client:
        response = await client.get(url + "/")
        stream = response.extensions["network_stream"]
        ssl_object = stream.get_extra_info("ssl_object")
    assert response.status_code == 200
    assert ssl_object.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert ssl_object.selected_alpn_protocol() == "http/1.1"


# -- mutual TLS --------------------------------------------------------------------------


def mtls_config(pki: Pki, auth_type: str, extra: str = "") -> str:
    return tls_config(pki, f"  client_auth_type: {auth_type}\n  client_ca_file: {pki.ca.name}\n" + extra)


async def test_require_and_verify_client_cert(pki: Pki, serve: list[HttpServer]) -> None:
    config = load_web_config(write_config(pki.directory, mtls_config(pki, "RequireAndVerifyClientCert"), "mtls.yml"))
    url = await start(serve, config)
    with pytest.raises(httpx.TransportError):
        await fetch(url + "/", client_context(pki))
    with pytest.raises(httpx.TransportError):
        await fetch(url + "/", client_context(pki, pki.stranger_cert, pki.stranger_key))
    accepted = await fetch(url + "/", client_context(pki, pki.client_cert, pki.client_key))
    assert accepted.status_code == 200


async def test_verify_client_cert_if_given(pki: Pki, serve: list[HttpServer]) -> None:
    config = load_web_config(write_config(pki.directory, mtls_config(pki, "VerifyClientCertIfGiven"), "optional.yml"))
    url = await start(serve, config)
    assert (await fetch(url + "/", client_context(pki))).status_code == 200
    good = client_context(pki, pki.client_cert, pki.client_key)
    assert (await fetch(url + "/", good)).status_code == 200
    with pytest.raises(httpx.TransportError):
        await fetch(url + "/", client_context(pki, pki.stranger_cert, pki.stranger_key))


async def test_client_allowed_sans(pki: Pki, serve: list[HttpServer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.httpserver")
    text = mtls_config(pki, "RequireAndVerifyClientCert", "  client_allowed_sans: [scraper.example, 10.0.0.1]\n")
    url = await start(serve, load_web_config(write_config(pki.directory, text, "sans.yml")))
    good = client_context(pki, pki.client_cert, pki.client_key)
    assert (await fetch(url + "/", good)).status_code == 200
    with pytest.raises(httpx.TransportError):
        await fetch(url + "/", client_context(pki, pki.other_client_cert, pki.other_client_key))
    assert any(r.getMessage().endswith(" failed: client certificate has none of the client_allowed_sans")
               for r in caplog.records), caplog.text
    # The server keeps serving after refusing a certificate.
    assert (await fetch(url + "/", good)).status_code == 200


def test_request_client_cert_does_not_ask_for_one(pki: Pki) -> None:
    config = load_web_config(write_config(pki.directory, tls_config(pki, "  client_auth_type: RequestClientCert\n")))
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_NONE


# -- bad files ---------------------------------------------------------------------------

TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n"
CA_PEM = "-----BEGIN CERTIFICATE-----\n    bm90IGEgY2VydGlmaWNhdGU=\n    -----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        # the shape of the file: unknown keys, wrong types
        ("tls_config: {}\n", "tls_config", "fix its spelling"),
        ("- a\n- b\n", "config", "valid dictionary"),
        ("tls_server_config:\n  certfile: x\n", "tls_server_config.certfile", "fix its spelling"),
        ("tls_server_config:\n  cert_file: [a]\n", "tls_server_config.cert_file", "valid string"),
        ("tls_server_config: [a]\n", "tls_server_config", "valid dictionary"),
        ("basic_auth_users: [alice]\n", "basic_auth_users", "valid dictionary"),
        # files that must exist, and certificates that must load
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
         "tls_server_config.cert_file", "does not exist"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: /nonexistent/server.key\n",
         "tls_server_config.key_file", "file /nonexistent/server.key does not exist"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
         "tls_server_config", "cannot load cert_file and key_file (KEY_VALUES_MISMATCH)"),
        ("tls_server_config:\n  cert: not a certificate\n  key_file: server.key\n",
         "tls_server_config", "cannot load cert and key_file"),
        (MTLS + "  client_ca_file: server.key\n",
         "tls_server_config", "cannot load CA certificates from client_ca_file"),
        (MTLS + "  client_ca: |\n    " + CA_PEM, "tls_server_config", "cannot load CA certificates from client_ca"),
        (MTLS + "  client_ca_file: nope.crt\n", "tls_server_config.client_ca_file", "does not exist"),
        # cert/key pairs
        ("tls_server_config:\n  key_file: server.key\n", "tls_server_config", "cert_file is missing"),
        ("tls_server_config:\n  cert_file: server.crt\n", "tls_server_config", "key_file is missing"),
        (TLS + "  cert: x\n", "tls_server_config", "set only one of cert and cert_file"),
        (TLS + "  key: x\n", "tls_server_config", "set only one of key and key_file"),
        (MTLS + "  client_ca_file: ca.crt\n  client_ca: x\n", "tls_server_config",
         "set only one of client_ca and client_ca_file"),
        ("tls_server_config:\n  min_version: TLS13\n  max_version: TLS13\n",
         "tls_server_config", "max_version, min_version set without cert_file and key_file"),
        # client authentication
        (TLS + "  client_auth_type: RequireClientCertPlease\n",
         "tls_server_config.client_auth_type", "'RequireAndVerifyClientCert'"),
        (TLS + "  client_auth_type: RequireAnyClientCert\n",
         "tls_server_config.client_auth_type", "not supported; use RequireAndVerifyClientCert"),
        (TLS + "  client_ca_file: ca.crt\n", "tls_server_config", "set client_auth_type: RequireAndVerifyClientCert"),
        (MTLS, "tls_server_config", "client_ca_file is missing; client_auth_type RequireAndVerifyClientCert needs"),
        (TLS + "  client_allowed_sans: [a.example]\n",
         "tls_server_config", "client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert"),
        (TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: []\n",
         "tls_server_config", "client_allowed_sans needs"),
        # versions, ciphers, curves
        (TLS + "  min_version: TLS1.2\n", "tls_server_config.min_version", "'TLS12'"),
        (TLS + "  min_version: TLS13\n  max_version: TLS12\n",
         "tls_server_config", "min_version is higher than max_version"),
        (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256, RC4-MD5]\n", "tls_server_config.cipher_suites.1", "Go names"),
        (TLS + "  curve_preferences: [P-256]\n", "tls_server_config.curve_preferences.0", "'CurveP256'"),
        (TLS + "  prefer_server_cipher_suites: yes please\n", "tls_server_config.prefer_server_cipher_suites",
         "valid boolean"),
        # users
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice", "htpasswd"),
        ("basic_auth_users:\n  alice: '$2b$03$" + "a" * 53 + "'\n", "basic_auth_users.alice", "not a bcrypt hash"),
        ("basic_auth_users:\n  'a:b': x\n", "basic_auth_users.a:b", "':'"),
        ("basic_auth_users:\n  '': x\n", "basic_auth_users..[key]", "non-empty"),
        # the sections without effect are checked too
        ("http_server_config:\n  http2: maybe\n", "http_server_config.http2", "valid boolean"),
        ("http_server_config:\n  headers:\n    X-Powered-By: me\n",
         "http_server_config.headers.X-Powered-By", "'X-Frame-Options'"),
        ("rate_limit:\n  interval: soon\n", "rate_limit.interval", "not a duration"),
        ("rate_limit:\n  burst: -1\n", "rate_limit.burst", "greater than or equal to 0"),
        # not YAML at all
        ("tls_server_config: [\n", "not valid YAML", "line 2, column 1"),
    ],
)
def test_bad_files_name_the_field(pki: Pki, text: str, field: str, hint: str) -> None:
    path = write_config(pki.directory, text, "bad.yml")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    lines = caught.value.problems
    assert any(line.startswith(f"web config file {path}: {field}") and hint in line for line in lines), lines


def test_every_problem_gets_its_own_line(pki: Pki) -> None:
    text = TLS + "  min_version: TLS1.2\n  curve_preferences: [P-256]\nbogus: 1\n"
    path = write_config(pki.directory, text, "bad.yml")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    fields = sorted(line.removeprefix(f"web config file {path}: ").split(":")[0] for line in caught.value.problems)
    assert fields == ["bogus", "tls_server_config.curve_preferences.0", "tls_server_config.min_version"]


def test_no_cipher_suite_available(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ssl.SSLContext, ciphers: str) -> None:
        raise ssl.SSLError("No cipher can be selected.")

    monkeypatch.setattr(ssl.SSLContext, "set_ciphers", refuse)
    path = write_config(pki.directory, TLS + "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n", "bad.yml")
    with pytest.raises(ConfigError, match="tls_server_config: none of the cipher_suites is available here"):
        load_web_config(path)


BCRYPT_HINT = "not a bcrypt hash; create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("basic_auth_users:\n  alice: hunter2\n", f"basic_auth_users.alice: {BCRYPT_HINT} (check the value)"),
        ("basic_auth_users:\n  alice: '$2b$32$" + "a" * 53 + "'\n",
         f"basic_auth_users.alice: {BCRYPT_HINT} (check the value)"),
        ("basic_auth_users:\n  '': '$2b$04$" + "a" * 53 + "'\n", "basic_auth_users..[key]: "
         "a user name must be non-empty and cannot contain ':' in basic auth (check the value)"),
        (TLS + "  cipher_suites: [RC4-MD5]\n", "tls_server_config.cipher_suites.0: unknown or insecure cipher suite; "
         "use Go names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (got 'RC4-MD5')"),
        (TLS + "  client_auth_type: RequireAnyClientCert\n",
         "tls_server_config.client_auth_type: RequireAnyClientCert (certificate required but never verified) is not "
         "supported; use RequireAndVerifyClientCert with client_ca_file (got 'RequireAnyClientCert')"),
        ("rate_limit:\n  interval: soon\n",
         "rate_limit.interval: not a duration such as \"1s\" or \"500ms\" (got 'soon')"),
        ("a: \x07\n", "not valid YAML"),  # a control character: PyYAML's reader refuses it, at no position
    ],
)
def test_error_lines_in_full(pki: Pki, text: str, line: str) -> None:
    path = write_config(pki.directory, text, "bad.yml")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.problems == [f"web config file {path}: {line}"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("tls_server_config:\n  cert_file: server.crt\n  key: not a key\n", "cannot load cert_file and key"),
        ("tls_server_config:\n  cert: not a cert\n  key_file: server.key\n", "cannot load cert and key_file"),
    ],
)
def test_inline_pem_that_does_not_load(pki: Pki, text: str, line: str) -> None:
    path = write_config(pki.directory, text, "bad.yml")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    (problem,) = caught.value.problems
    assert re.fullmatch(
        rf"web config file {re.escape(str(path))}: tls_server_config: {line} \(.+\); both must be PEM, "
        r"the key unencrypted and belonging to the certificate \(check the value\)",
        problem,
    ), problem


def test_inline_client_ca_that_does_not_load(pki: Pki) -> None:
    path = write_config(pki.directory, MTLS + "  client_ca: |\n    " + CA_PEM, "bad.yml")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    (problem,) = caught.value.problems
    assert re.fullmatch(rf"web config file {re.escape(str(path))}: tls_server_config: "
                        r"cannot load CA certificates from client_ca \(.+\) \(check the value\)", problem), problem


def test_encrypted_key_is_refused_without_a_prompt(pki: Pki, capfd: pytest.CaptureFixture[str]) -> None:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pass phrase"))
    (pki.directory / "encrypted.key").write_bytes(encrypted)
    path = write_config(pki.directory, f"tls_server_config:\n  cert_file: {pki.server_cert.name}\n"
                        "  key_file: encrypted.key\n", "encrypted.yml")
    with pytest.raises(ConfigError, match=r"tls_server_config: cannot load cert_file and key_file \(.+\); both must "
                                          "be PEM, the key unencrypted"):
        load_web_config(path)
    assert "pass phrase" not in capfd.readouterr().err  # OpenSSL did not ask on the terminal


def test_unreadable_key_names_the_reason(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. a key file readable by root only, and the exporter running as its own user
    def refuse(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", refuse)
    with pytest.raises(ConfigError) as caught:
        load_web_config(write_config(pki.directory, TLS, "unreadable.yml"))
    assert caught.value.problems[0].endswith(
        ": tls_server_config: cannot load cert_file and key_file (Permission denied); both must be PEM, "
        "the key unencrypted and belonging to the certificate (check the value)"
    )


@pytest.mark.parametrize(("prefer", "server_preference"), [("true", True), ("false", False)])
def test_tls_context_keeps_the_default_options(pki: Pki, prefer: str, server_preference: bool) -> None:
    text = tls_config(pki, f"  prefer_server_cipher_suites: {prefer}\n")
    context = load_web_config(write_config(pki.directory, text, "prefer.yml")).ssl_context
    assert context is not None
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER
    defaults = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).options & ~ssl.OP_CIPHER_SERVER_PREFERENCE
    expected = defaults | ssl.OP_CIPHER_SERVER_PREFERENCE if server_preference else defaults
    assert context.options == expected


@pytest.mark.parametrize(("cost", "accepted"), [("03", False), ("04", True), ("31", True), ("32", False)])
def test_bcrypt_cost_from_4_to_31(tmp_path: Path, cost: str, accepted: bool) -> None:
    path = write_config(tmp_path, f"basic_auth_users:\n  alice: '$2b${cost}$" + "." * 53 + "'\n")
    if accepted:
        assert load_web_config(path).basic_auth is not None
    else:
        with pytest.raises(ConfigError, match=r"basic_auth_users\.alice: not a bcrypt hash"):
            load_web_config(path)


def test_tls_section_built_in_code_reads_relative_names_from_the_working_directory(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pki.directory)
    config = TlsServerConfig(cert_file=pki.server_cert.name, key_file=pki.server_key.name)
    assert config.ssl_context is not None

@pytest.mark.parametrize(
    "text",
    [
        "basic_auth_users:\n  alice: s3cr3t-not-hash\n",
        "basic_auth_users:\n  alice: [s3cr3t]\n",
        "basic_auth_users: s3cr3t\n",
        "tls_server_config:\n  cert_file: server.crt\n  key: s3cr3t\n",
        "tls_server_config:\n  cert_file: server.crt\n  key: 53732\n",
        "basic_auth_users:\n  alice: 's3cr3t\n",  # YAML that does not parse must not be quoted either
    ],
)
def test_secrets_are_not_echoed(pki: Pki, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_web_config(write_config(pki.directory, text, "secret.yml"))
    assert caught.value.problems
    assert "s3cr3t" not in str(caught.value)
    assert "53732" not in str(caught.value)


@pytest.mark.parametrize("content", ["53732\n", "s3cr3t\n", "alice:$2y$10$s3cr3t\n"])
def test_a_file_that_is_not_a_mapping_is_not_echoed(tmp_path: Path, content: str) -> None:
    # e.g. the password file or an htpasswd file given as --web.config.file by mistake
    path = write_config(tmp_path, content, "ips_password")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.problems == [
        f"web config file {path}: config: Input should be a valid dictionary or instance of WebConfigFile "
        "(check the value)"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--web\.config\.file: cannot read .*absent\.yml"):
        load_web_config(tmp_path / "absent.yml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"basic_auth_users:\n  j\xf6rg: x\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_web_config(path)


@pytest.mark.parametrize(("extra", "accepted"), [(-1, True), (0, True), (1, False)])
def test_a_web_config_file_holds_at_most_1_mib(tmp_path: Path, extra: int, accepted: bool) -> None:
    head = "rate_limit: {burst: 5}\n#"
    path = write_config(tmp_path, head + "x" * (1024 * 1024 - len(head) - 1 + extra) + "\n")
    assert path.stat().st_size == 1024 * 1024 + extra
    if accepted:
        assert load_web_config(path) == WebConfig(ssl_context=None, basic_auth=None)
        return
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.problems == [
        f"web config file {path}: larger than 1 MiB, far more than any web configuration; check --web.config.file"
    ]


def test_an_endless_web_config_file_is_refused_after_1_mib() -> None:
    with memory_capped(), pytest.raises(ConfigError) as caught:
        load_web_config("/dev/zero")
    assert caught.value.problems == [
        "web config file /dev/zero: larger than 1 MiB, far more than any web configuration; check --web.config.file"
    ]


def test_null_and_empty_values_leave_fields_unset(pki: Pki) -> None:
    unset = "  min_version:\n  client_auth_type: ''\n  client_ca_file: ''\nbasic_auth_users:\nrate_limit:\n"
    text = tls_config(pki, unset)
    config = load_web_config(write_config(pki.directory, text, "empty.yml"))
    assert config.ssl_context is not None
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.ssl_context.verify_mode == ssl.CERT_NONE
    assert config.basic_auth is None


def test_rate_limit_is_accepted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_web_config(write_config(tmp_path, "rate_limit:\n  interval: 1m30s\n  burst: 5\n"))
    assert config == WebConfig(ssl_context=None, basic_auth=None)
    assert "rate_limit is accepted but not enforced" in caplog.text


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_cli_exits_2_naming_the_field(tmp_path: Path, command: str) -> None:
    settings = tmp_path / "config.yml"
    settings.write_text("accounts: [{user: u@example.com, password: x, endpoint: 'http://127.0.0.1:1/ips'}]\n")
    web = write_config(tmp_path, "tls_server_config:\n  certfile: server.crt\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", command, "--config.file", str(settings), "--web.config.file", str(web)],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"scene7-exporter: invalid configuration: web config file {web}: tls_server_config.certfile: "
        "Extra inputs are not permitted (remove it or fix its spelling; see the configuration reference in README.md)"
    ]


# -- BasicAuth itself ----------------------------------------------------------------------


def header(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


def test_check_caches_success_only(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth({"alice": hashed("pw").encode()})
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    assert auth.check(header("alice", b"pw"))
    assert auth.check(header("alice", b"pw"))
    assert len(calls) == 1
    assert not auth.check(header("alice", b"nope"))
    assert not auth.check(header("alice", b"nope"))
    assert len(calls) == 3


def test_a_changed_hash_forgets_the_remembered_password() -> None:
    users = {"alice": hashed("old").encode()}
    auth = BasicAuth(users)
    assert auth.check(header("alice", b"old"))
    users["alice"] = hashed("new").encode()
    assert not auth.remembered(("alice", b"old"))
    assert not auth.check(header("alice", b"old"))
    assert auth.check(header("alice", b"new"))


def test_remembered_credentials_are_not_another_split_of_the_same_bytes() -> None:
    # With the hash alike, user "a\0b" + password "c" and user "a" + password "b\0c" would give
    # the same key if user, password and hash were only joined with NULs.
    same = hashed("c").encode()
    auth = BasicAuth({"a\0b": same, "a": same, "a\0b\0c": same})
    assert auth.check(header("a\0b", b"c"))
    assert not auth.remembered(("a", b"b\0c"))
    assert not auth.check(header("a", b"b\0c"))
    assert not auth.remembered(("a\0b\0c", b""))


def test_unknown_user_pays_bcrypt_of_the_same_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4))
    dearer = bcrypt.hashpw(b"y", bcrypt.gensalt(rounds=5))
    auth = BasicAuth({"cheap": cheap, "dear": dearer})
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    assert not auth.check(header("mallory", b"x"))
    assert len(calls) == 1
    assert calls[0].startswith(b"$2b$05$")
    assert len(calls[0]) == 60  # well-formed, so every bcrypt implementation spends the time
    assert calls[0] not in (cheap, dearer)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic",
        "Basic !!!",
        "Basic YWxp*Y2U6cHc=",  # alice:pw, with a character that is not base64
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(),  # user not UTF-8
        "Digest " + base64.b64encode(b"alice:pw").decode(),
    ],
)
def test_malformed_headers_are_refused(value: str | None) -> None:
    auth = BasicAuth({"alice": hashed("pw").encode()})
    assert not auth.check(value)


def test_scheme_is_case_insensitive_and_password_may_hold_colons() -> None:
    auth = BasicAuth({"alice": hashed("a:b").encode()})
    assert auth.check("basic " + base64.b64encode(b"alice:a:b").decode())


def test_passwords_over_72_bytes_are_refused() -> None:
    # bcrypt would only compare the first 72 bytes; Go's toolkit refuses such passwords.
    password = b"p" * 72
    auth = BasicAuth({"alice": bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))})
    assert auth.check(header("alice", password))
    assert not auth.check(header("alice", password + b"extra"))


def test_htpasswd_2y_hashes_work() -> None:
    auth = BasicAuth({"alice": hashed("pw", b"2b").replace("$2b$", "$2y$").encode()})
    assert auth.check(header("alice", b"pw"))


def test_missing_file_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_web_config(tmp_path / "absent.yml")
    assert caught.value.problems == [f"--web.config.file: cannot read {tmp_path / 'absent.yml'} "
                                     "(No such file or directory)"]


def test_basic_auth_needs_a_user_and_bcrypt_hashes() -> None:
    with pytest.raises(ValueError, match=r"^BasicAuth needs at least one user$"):
        BasicAuth({})
    with pytest.raises(ValueError, match=r"^not a bcrypt hash$"):
        BasicAuth({"alice": "$2b$04$ä".encode() + b"." * 51})


def test_a_hash_bcrypt_cannot_use_lets_nobody_in(tmp_path: Path) -> None:
    # The form is right, but the salt's last character has bits bcrypt refuses ("Invalid salt").
    config = load_web_config(write_config(tmp_path, "basic_auth_users:\n  alice: '$2b$04$" + "a" * 53 + "'\n"))
    assert config.basic_auth is not None
    assert not config.basic_auth.check(header("alice", b"pw"))


def test_several_spaces_after_the_scheme_and_empty_passwords() -> None:
    auth = BasicAuth({"alice": hashed("").encode()})
    assert auth.check("Basic   " + base64.b64encode(b"alice:").decode())
    assert not auth.check("Basic " + base64.b64encode(b"alice").decode())  # no colon: no password at all


@pytest.mark.parametrize(
    ("cert", "allowed"),
    [
        ({"subjectAltName": (("DNS", "scraper.example"),)}, True),
        ({"subjectAltName": (("IP Address", "2001:DB8:0:0:0:0:0:1\n"),)}, True),  # as older OpenSSL prints it
        ({"subjectAltName": (("IP Address", "10.0.0.1"),)}, True),
        ({"subjectAltName": (("DNS", "intruder.example"), ("IP Address", "10.0.0.2"))}, False),
        ({"subject": ((("commonName", "scraper.example"),),)}, False),  # no SAN at all
        ({}, False),
        (None, False),
    ],
)
def test_allowed_sans_compare_ip_addresses_as_addresses(cert: dict[str, object] | None, allowed: bool) -> None:
    sans = frozenset(_normalise_san(s) for s in ("scraper.example", "2001:db8::1", "10.0.0.1"))
    assert _has_allowed_san(cert, sans) is allowed

async def test_ips_certificates_are_verified_unless_told_otherwise(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """Outbound: a self-signed IPS is refused by default, accepted with its CA as `ca_file`,
    and with `insecure_skip_verify` only with a warning."""
    import logging

    from exporter.app import make_client
    from exporter.client import IpsClient
    from exporter.config import AccountConfig, PollConfig, Settings
    from exporter.errors import IpsConnectionError
    from exporter.simulator import Simulator, SimulatorConfig

    simulator = Simulator(SimulatorConfig(jobs=3, companies=1))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(pki.server_cert, pki.server_key)
    server = HttpServer(simulator.handle, "127.0.0.1", 0, ssl_context=server_context,
                        methods=frozenset({"POST"}), max_body_bytes=1 << 20)
    await server.start()
    endpoint = f"https://127.0.0.1:{server.port}/scene7/services/IpsApiService"

    def client(**tls: object) -> IpsClient:
        account = AccountConfig(endpoint=endpoint, user="demo@example.com", password="demo", **tls)  # type: ignore[arg-type]
        return make_client(account, Settings(accounts=[account], poll=PollConfig(interval=5, timeout=2)))

    try:
        caplog.set_level(logging.WARNING)
        async with client() as default:
            with pytest.raises(IpsConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await default.get_company_memberships()
        async with client(ca_file=pki.ca) as trusting:
            assert await trusting.get_company_memberships()
        assert "NOT verified" not in caplog.text
        async with client(insecure_skip_verify=True) as insecure:
            assert await insecure.get_company_memberships()
        assert "NOT verified" in caplog.text
    finally:
        await server.close()


# -- renewed certificates ------------------------------------------------------------------


async def new_connection(port: int, ctx: ssl.SSLContext) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """A new TLS connection, by IP address (no SNI, as Prometheus scraping 127.0.0.1): the
    certificate the server showed (DER), and the open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    return writer.get_extra_info("ssl_object").getpeercert(binary_form=True), reader, writer


async def get_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """The status line of a GET sent on an open connection (its body read and dropped)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: exporter\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    await asyncio.wait_for(reader.readexactly(length), 5)
    return lines[0]


def renew(ca: Issued, directory: Path, stem: str, *, key_too: bool = True) -> bytes:
    """A certificate of `ca` moved over the served files, as cert-manager renews one; its DER."""
    fresh = issue(ca, stem, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], server=True)
    cert, key = fresh.write(directory, f"{stem}-new")
    if key_too:
        os.replace(key, directory / "served.key")
    os.replace(cert, directory / "served.crt")
    return fresh.cert.public_bytes(serialization.Encoding.DER)


async def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, serve: list[HttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca("rotation CA")
    ctx = ssl.create_default_context(cadata=ca.cert.public_bytes(serialization.Encoding.PEM).decode())
    first = renew(ca, tmp_path, "first")
    tls = "tls_server_config:\n  cert_file: served.crt\n  key_file: served.key\n"
    url = await start(serve, load_web_config(write_config(tmp_path, tls)))
    port = int(url.rsplit(":", 1)[1])

    shown, old_reader, old_writer = await new_connection(port, ctx)
    assert shown == first
    assert await get_on(old_reader, old_writer, "/metrics") == b"HTTP/1.1 200 "

    second = renew(ca, tmp_path, "second")
    shown, _, writer = await new_connection(port, ctx)
    assert shown == second, "a new connection still gets the old certificate"
    writer.close()
    # the connection opened before keeps working, on the certificate it began with
    assert await get_on(old_reader, old_writer, "/metrics") == b"HTTP/1.1 200 "
    assert old_writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == first
    assert (await fetch(url + "/metrics", ctx)).status_code == 200

    # renewed halfway (the certificate before its key): the last good one stays, said once
    caplog.set_level(logging.WARNING, logger="exporter")
    renew(ca, tmp_path, "half", key_too=False)
    for _ in range(3):
        shown, _, writer = await new_connection(port, ctx)
        assert shown == second
        writer.close()
    refused = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(refused) == 1 and "cert_file and key_file" in refused[0], refused
    third = renew(ca, tmp_path, "third")
    shown, _, writer = await new_connection(port, ctx)
    assert shown == third
    writer.close()
    old_writer.close()


def test_header_values_are_checked_as_exporter_toolkit_checks_them(tmp_path: Path) -> None:
    folded = load_web_config(write_config(tmp_path, (
        "http_server_config:\n  headers:\n    Content-Security-Policy: >\n      default-src 'self';\n"
        "      img-src 'self'\n    X-Frame-Options: sameorigin\n")))
    # a YAML block's final line break is not part of the value (h11 would refuse every response)
    assert folded.headers == (("Content-Security-Policy", "default-src 'self'; img-src 'self'"),
                              ("X-Frame-Options", "sameorigin"))
    for text, problem in [
        ("    X-Frame-Options: bogus\n", "X-Frame-Options: expected one of deny, sameorigin, got 'bogus'"),
        ("    X-Content-Type-Options: sniff\n", "X-Content-Type-Options: expected one of nosniff, got 'sniff'"),
        ("    Content-Security-Policy: |\n      default-src 'self'\n      img-src 'self'\n",
         "Content-Security-Policy: a header value is one line"),
    ]:
        with pytest.raises(ConfigError) as refused:
            load_web_config(write_config(tmp_path, "http_server_config:\n  headers:\n" + text, "bad.yml"))
        assert problem in refused.value.problems[0], refused.value.problems


def test_tls_files_load_without_a_temporary_directory(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only root filesystem has no temporary directory: certificate files need none."""
    import tempfile

    def none(*args: object, **kwargs: object) -> object:
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", none)
    assert load_web_config(write_config(pki.directory, tls_config(pki), "ro.yml")).ssl_context is not None
