"""The Prometheus exporter-toolkit web configuration file: TLS and basic auth for /metrics.

Operators already write this file for node_exporter and friends (`--web.config.file`), so the
exporter reads the same format instead of inventing its own. Everything is checked when the file
is loaded: a mistake stops the exporter at start-up with a message naming the field, rather than
surfacing as a failed scrape later.

Differences from the Go toolkit, forced by Python's `ssl` module:
- `RequestClientCert` never asks the client for a certificate (Python cannot request one without
  verifying it). The toolkit ignores such a certificate anyway, so who gets in is unchanged.
- `RequireAnyClientCert` (require a certificate but never verify it) is refused with a pointer
  to `RequireAndVerifyClientCert`.
- Verifying client auth types need `client_ca_file` (or `client_ca`); the toolkit would fall back
  to the system roots, which is never what an exporter wants.
- `curve_preferences` is checked but OpenSSL's default group list is used; `http_server_config`
  and `rate_limit` are checked but have no effect.
- Certificates are read once at load time, not on every connection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

log = logging.getLogger("exporter.webconfig")

REALM = "scene7-exporter"

_TOP_LEVEL_KEYS = frozenset({"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"})
_TLS_KEYS = frozenset(
    {
        "cert",
        "key",
        "client_ca",
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "client_allowed_sans",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    }
)
_HTTP_KEYS = frozenset({"http2", "headers"})
_ALLOWED_HEADERS = frozenset(
    {
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "X-XSS-Protection",
        "Strict-Transport-Security",
    }
)
_RATE_LIMIT_KEYS = frozenset({"interval", "burst"})

_CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's names of the TLS <= 1.2 suites it offers, mapped to OpenSSL's names.
_GO_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
# TLS 1.3 suites are not configurable, in Go as in OpenSSL: accepted and left alone.
_TLS13_CIPHERS = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
_CURVES = frozenset({"CurveP256", "CurveP384", "CurveP521", "X25519"})
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+|0")
# bcrypt only ever looks at the first 72 bytes; the library refuses longer input.
_BCRYPT_MAX_PASSWORD = 72


class WebConfigError(ValueError):
    """The web configuration file is unusable; the message names the field and the fix."""


@dataclass(frozen=True)
class BasicAuth:
    """Users allowed in by HTTP basic auth, with bcrypt-hashed passwords."""

    users: Mapping[str, bytes]
    # Keys of (user, password, hash) triples that bcrypt already accepted: a scrape every few
    # seconds must not pay ~70 ms of bcrypt each time. Only successes are kept, so it stays tiny.
    _accepted: set[bytes] = field(default_factory=set, init=False, repr=False, compare=False)
    _dummy_hash: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("BasicAuth needs at least one user")
        # Unknown users are checked against a hash of the same cost as the costliest real one,
        # so response time does not tell which user names exist. A salt followed by an
        # all-zero digest is a well-formed hash that no password matches.
        cost = max(_bcrypt_cost(h) for h in self.users.values())
        object.__setattr__(self, "_dummy_hash", bcrypt.gensalt(rounds=cost) + b"." * 31)

    def check(self, authorization_header: str | None) -> bool:
        """True if the `Authorization` header carries a valid user and password.

        bcrypt's comparison is constant-time; a cache hit only skips bcrypt for a triple that
        already passed, so timing tells an attacker nothing they did not already send.
        """
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        stored = self.users.get(user)
        hashed = stored if stored is not None else self._dummy_hash
        key = hashlib.sha256(b"\0".join((user.encode("utf-8"), hashlib.sha256(password).digest(), hashed))).digest()
        if stored is not None and key in self._accepted:
            return True
        if len(password) > _BCRYPT_MAX_PASSWORD:
            password = password[:_BCRYPT_MAX_PASSWORD]
            # Go's bcrypt refuses such passwords; still spend the time, then refuse.
            bcrypt.checkpw(password, hashed)
            return False
        try:
            ok = bcrypt.checkpw(password, hashed)
        except ValueError:
            return False
        if ok and stored is not None:
            self._accepted.add(key)
            return True
        return False


def _bcrypt_cost(hashed: bytes) -> int:
    match = _BCRYPT_HASH.fullmatch(hashed.decode("ascii", errors="replace"))
    if match is None:
        raise ValueError("not a bcrypt hash")
    return int(match[1])


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        user_bytes, sep, password = decoded.partition(b":")
        user = user_bytes.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep:
        return None
    return user, password


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server needs from the web configuration file."""

    ssl_context: ssl.SSLContext | None
    basic_auth: BasicAuth | None


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check an exporter-toolkit web configuration file.

    Relative file names inside it are taken relative to the file's own directory.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebConfigError(
            f"web config file {path}: cannot be read ({exc.strerror or exc}); check --web.config.file"
        ) from exc
    except UnicodeDecodeError as exc:
        raise WebConfigError(f"web config file {path}: is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"web config file {path}: is not valid YAML: {exc}") from exc
    if data is None:
        return WebConfig(ssl_context=None, basic_auth=None)
    ctx = _Ctx(path)
    top = ctx.mapping(data, "", _TOP_LEVEL_KEYS)
    _check_http_server_config(ctx, top.get("http_server_config"))
    _check_rate_limit(ctx, top.get("rate_limit"))
    basic_auth = _load_users(ctx, top.get("basic_auth_users"))
    ssl_context = _load_tls(ctx, top.get("tls_server_config"))
    return WebConfig(ssl_context=ssl_context, basic_auth=basic_auth)


class _Ctx:
    """Error messages and path resolution for one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field_name: str, problem: str) -> WebConfigError:
        where = f"{field_name}: " if field_name else ""
        return WebConfigError(f"web config file {self.path}: {where}{problem}")

    def mapping(self, value: Any, name: str, allowed: frozenset[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            what = name or "the top level"
            raise self.error(name, f"{what} must be a mapping of keys to values")
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                full = f"{name}.{key}" if name else str(key)
                raise self.error(full, f"unknown field; allowed here: {', '.join(sorted(allowed))}")
        return value

    def string(self, section: Mapping[str, Any], key: str, prefix: str) -> str:
        value = section.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(f"{prefix}.{key}", "must be a string")
        return value

    def string_list(self, section: Mapping[str, Any], key: str, prefix: str) -> list[str]:
        value = section.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{prefix}.{key}", "must be a list of strings")
        return value

    def file(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.path.parent / p


def _check_http_server_config(ctx: _Ctx, value: Any) -> None:
    section = ctx.mapping(value, "http_server_config", _HTTP_KEYS)
    http2 = section.get("http2")
    if http2 is not None and not isinstance(http2, bool):
        raise ctx.error("http_server_config.http2", "must be true or false")
    headers = section.get("headers")
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise ctx.error("http_server_config.headers", "must be a mapping of header to value")
    for name, header_value in headers.items():
        if name not in _ALLOWED_HEADERS:
            raise ctx.error(
                f"http_server_config.headers.{name}",
                f"header not allowed; allowed: {', '.join(sorted(_ALLOWED_HEADERS))}",
            )
        if header_value is not None and not isinstance(header_value, str):
            raise ctx.error(f"http_server_config.headers.{name}", "must be a string")


def _check_rate_limit(ctx: _Ctx, value: Any) -> None:
    section = ctx.mapping(value, "rate_limit", _RATE_LIMIT_KEYS)
    interval = section.get("interval")
    if interval is not None and (not isinstance(interval, str) or not _DURATION.fullmatch(interval)):
        raise ctx.error("rate_limit.interval", 'must be a duration such as "1s" or "500ms"')
    burst = section.get("burst")
    if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool) or burst < 0):
        raise ctx.error("rate_limit.burst", "must be a non-negative integer")
    if section:
        log.warning("web config rate_limit is accepted but not enforced by this exporter")


def _load_users(ctx: _Ctx, value: Any) -> BasicAuth | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ctx.error("basic_auth_users", "must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        if not isinstance(user, str) or not user:
            raise ctx.error("basic_auth_users", f"user name {user!r} must be a non-empty string")
        if ":" in user:
            raise ctx.error(f"basic_auth_users.{user}", "user names cannot contain ':' in basic auth")
        # Never echo the hash itself: it is a secret in the toolkit's terms.
        match = _BCRYPT_HASH.fullmatch(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match[1]) <= 31:
            raise ctx.error(
                f"basic_auth_users.{user}",
                "is not a bcrypt hash; create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`",
            )
        users[user] = hashed.encode("ascii")
    if not users:
        return None
    return BasicAuth(users=users)


def _load_tls(ctx: _Ctx, value: Any) -> ssl.SSLContext | None:
    p = "tls_server_config"
    section = ctx.mapping(value, p, _TLS_KEYS)
    cert = ctx.string(section, "cert", p)
    key = ctx.string(section, "key", p)
    client_ca = ctx.string(section, "client_ca", p)
    cert_file = ctx.string(section, "cert_file", p)
    key_file = ctx.string(section, "key_file", p)
    client_ca_file = ctx.string(section, "client_ca_file", p)
    client_auth = ctx.string(section, "client_auth_type", p)
    if not any((cert, key, client_ca, cert_file, key_file, client_ca_file, client_auth)):
        for other in section:
            if section[other] is not None:
                raise ctx.error(f"{p}.{other}", "has no effect without cert_file and key_file; add them")
        return None

    if cert and cert_file:
        raise ctx.error(f"{p}.cert", "set only one of cert and cert_file")
    if key and key_file:
        raise ctx.error(f"{p}.key", "set only one of key and key_file")
    if client_ca and client_ca_file:
        raise ctx.error(f"{p}.client_ca", "set only one of client_ca and client_ca_file")
    if not (cert or cert_file):
        raise ctx.error(f"{p}.cert_file", "is missing; TLS needs a certificate (or cert)")
    if not (key or key_file):
        raise ctx.error(f"{p}.key_file", "is missing; TLS needs a private key (or key)")

    min_version = _tls_version(ctx, section, "min_version", "TLS12")
    max_version = _tls_version(ctx, section, "max_version", "TLS13")
    if min_version > max_version:
        raise ctx.error(f"{p}.min_version", "is higher than max_version")

    context = _san_checking_context(_allowed_sans(ctx, section, client_auth))
    context.minimum_version = min_version
    context.maximum_version = max_version
    context.set_alpn_protocols(["http/1.1"])
    _load_key_pair(ctx, context, cert, cert_file, key, key_file)
    _set_ciphers(ctx, context, section)
    _check_curves(ctx, section)
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise ctx.error(f"{p}.prefer_server_cipher_suites", "must be true or false")
    if prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _set_client_auth(ctx, context, client_auth or "NoClientCert", client_ca, client_ca_file)
    return context


def _tls_version(ctx: _Ctx, section: Mapping[str, Any], key: str, default: str) -> ssl.TLSVersion:
    name = ctx.string(section, key, "tls_server_config") or default
    try:
        return _TLS_VERSIONS[name]
    except KeyError:
        raise ctx.error(f"tls_server_config.{key}", f"unknown version {name!r}; use one of TLS12, TLS13") from None


def _load_key_pair(ctx: _Ctx, context: ssl.SSLContext, cert: str, cert_file: str, key: str, key_file: str) -> None:
    p = "tls_server_config"
    # load_cert_chain only reads files: inline PEM goes through a private temporary directory.
    with tempfile.TemporaryDirectory(prefix="scene7-webconfig-") as tmp:
        if cert:
            cert_path = Path(tmp) / "cert.pem"
            cert_path.write_text(cert, encoding="utf-8")
            cert_field = f"{p}.cert"
        else:
            cert_path = ctx.file(cert_file)
            cert_field = f"{p}.cert_file"
            _must_be_file(ctx, cert_path, cert_field)
        if key:
            key_path = Path(tmp) / "key.pem"
            key_path.touch(mode=0o600)
            key_path.write_text(key, encoding="utf-8")
            key_field = f"{p}.key"
        else:
            key_path = ctx.file(key_file)
            key_field = f"{p}.key_file"
            _must_be_file(ctx, key_path, key_field)
        try:
            # The password callback stops OpenSSL from prompting on a terminal for encrypted keys.
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise ctx.error(
                f"{cert_field}/{key_field}",
                f"cannot load the certificate and key ({_reason(exc)}); both must be PEM, "
                "the key unencrypted and belonging to the certificate",
            ) from exc


def _must_be_file(ctx: _Ctx, path: Path, field_name: str) -> None:
    if not path.is_file():
        raise ctx.error(
            field_name,
            f"file {path} does not exist (relative paths start at the web config file's directory)",
        )


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or str(exc)


def _set_ciphers(ctx: _Ctx, context: ssl.SSLContext, section: Mapping[str, Any]) -> None:
    names = ctx.string_list(section, "cipher_suites", "tls_server_config")
    openssl_names: list[str] = []
    for name in names:
        if name in _TLS13_CIPHERS:
            continue
        try:
            openssl_names.append(_GO_CIPHERS[name])
        except KeyError:
            raise ctx.error(
                "tls_server_config.cipher_suites",
                f"unknown or insecure cipher suite {name!r}; use Go names such as "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ) from None
    if openssl_names:
        try:
            context.set_ciphers(":".join(openssl_names))
        except ssl.SSLError as exc:
            raise ctx.error("tls_server_config.cipher_suites", "none of these suites is available here") from exc


def _check_curves(ctx: _Ctx, section: Mapping[str, Any]) -> None:
    for name in ctx.string_list(section, "curve_preferences", "tls_server_config"):
        if name not in _CURVES:
            raise ctx.error(
                "tls_server_config.curve_preferences",
                f"unknown curve {name!r}; use one of {', '.join(sorted(_CURVES))}",
            )


def _set_client_auth(ctx: _Ctx, context: ssl.SSLContext, client_auth: str, client_ca: str, client_ca_file: str) -> None:
    p = "tls_server_config"
    if client_auth not in _CLIENT_AUTH_TYPES:
        raise ctx.error(
            f"{p}.client_auth_type",
            f"unknown value {client_auth!r}; use one of {', '.join(_CLIENT_AUTH_TYPES)}",
        )
    has_ca = bool(client_ca or client_ca_file)
    if client_auth == "NoClientCert" and has_ca:
        raise ctx.error(
            f"{p}.client_auth_type",
            "a client CA is configured without a client auth policy; set client_auth_type: RequireAndVerifyClientCert",
        )
    if client_auth == "RequireAnyClientCert":
        raise ctx.error(
            f"{p}.client_auth_type",
            "RequireAnyClientCert (certificate required but never verified) is not supported; "
            "use RequireAndVerifyClientCert with client_ca_file",
        )
    if client_auth in ("NoClientCert", "RequestClientCert"):
        context.verify_mode = ssl.CERT_NONE
        return
    if not has_ca:
        raise ctx.error(
            f"{p}.client_ca_file",
            f"is missing; client_auth_type {client_auth} needs the CA that signs client certificates",
        )
    try:
        if client_ca:
            context.load_verify_locations(cadata=client_ca)
        else:
            ca_path = ctx.file(client_ca_file)
            _must_be_file(ctx, ca_path, f"{p}.client_ca_file")
            context.load_verify_locations(cafile=ca_path)
    except OSError as exc:
        name = "client_ca" if client_ca else "client_ca_file"
        raise ctx.error(f"{p}.{name}", f"cannot load CA certificates ({_reason(exc)})") from exc
    context.verify_mode = ssl.CERT_REQUIRED if client_auth == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL


def _allowed_sans(ctx: _Ctx, section: Mapping[str, Any], client_auth: str) -> frozenset[str]:
    sans = ctx.string_list(section, "client_allowed_sans", "tls_server_config")
    if section.get("client_allowed_sans") is not None and client_auth not in (
        "RequireAnyClientCert",
        "RequireAndVerifyClientCert",
    ):
        raise ctx.error(
            "tls_server_config.client_allowed_sans",
            "needs client_auth_type: RequireAndVerifyClientCert",
        )
    return frozenset(_normalise_san(s) for s in sans)


def _normalise_san(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def _san_checking_context(allowed: frozenset[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if allowed:
        context.sslobject_class = _san_checking_sslobject(allowed)
    return context


def _san_checking_sslobject(allowed: frozenset[str]) -> type[ssl.SSLObject]:
    """An SSLObject that ends the handshake unless the client certificate has an allowed SAN.

    asyncio drives TLS through `SSLContext.wrap_bio`, which builds this class: failing inside
    `do_handshake` makes the connection fail like any other handshake error.
    """

    class SanCheckingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            if not _has_allowed_san(self.getpeercert(), allowed):
                raise ssl.SSLCertVerificationError("client certificate has none of the client_allowed_sans")

    return SanCheckingSSLObject


def _has_allowed_san(cert: Mapping[str, Any] | None, allowed: frozenset[str]) -> bool:
    if not cert:
        return False
    entries: Any = cert.get("subjectAltName", ())
    for kind, value in entries:
        if kind == "IP Address":
            value = _normalise_san(str(value).strip())
        if value in allowed:
            return True
    return False
