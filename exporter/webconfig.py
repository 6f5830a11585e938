"""The Prometheus exporter-toolkit web configuration file: TLS and basic auth for /metrics.

Operators already write this file for node_exporter and friends (`--web.config.file`), so the
exporter reads the same format instead of inventing its own. It is checked completely at start-up,
certificates included, and every mistake is a `ConfigError` line like the main configuration's,
rather than a failed scrape later. Password hashes and private keys are never echoed.

Differences from the Go toolkit, forced by Python's `ssl` module:
- `RequestClientCert` never asks the client for a certificate (Python cannot request one without
  verifying it). The toolkit ignores such a certificate anyway, so who gets in is unchanged.
- `RequireAnyClientCert` (require a certificate but never verify it) is refused with a pointer
  to `RequireAndVerifyClientCert`.
- Verifying client auth types need `client_ca_file` (or `client_ca`); the toolkit would fall back
  to the system roots, which is never what an exporter wants.
- `curve_preferences` is checked but OpenSSL's default group list is used; `http_server_config.http2`
  and `rate_limit` are checked but have no effect. `http_server_config.headers` (the five headers the
  toolkit allows) go on every response that does not set the header itself, as in the toolkit.
- Certificate, key and client CA files are read again when they change (cert-manager renews them
  in place), for the connections that start from then on; see `_RotatedFiles`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import bcrypt
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.config import CONFIG_FILE_LIMIT, ConfigError, describe_errors, read_limited, size_text, yaml_position

log = logging.getLogger("exporter.webconfig")

REALM = "scene7-exporter"

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
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+|0")
# bcrypt only ever looks at the first 72 bytes; the library refuses longer input.
_BCRYPT_MAX_PASSWORD = 72
# Error lines under these paths never show the value: hashes and private keys are secrets.
_SECRET_FIELDS = ("basic_auth_users", "tls_server_config.key")


def _existing_file(name: str, info: ValidationInfo) -> str:
    path = Path(info.context["directory"] if info.context else ".") / name  # an absolute name wins
    if not os.path.isfile(path):
        raise ValueError(f"file {path} does not exist (relative paths start at the web config file's directory)")
    return str(path)


def _cipher_suite(name: str) -> str:
    if name not in _GO_CIPHERS and name not in _TLS13_CIPHERS:
        raise ValueError("unknown or insecure cipher suite; use Go names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
    return name


def _client_auth_type(value: str) -> str:
    if value == "RequireAnyClientCert":
        raise ValueError(
            "RequireAnyClientCert (certificate required but never verified) is not supported; "
            "use RequireAndVerifyClientCert with client_ca_file"
        )
    return value


def _user_name(name: str) -> str:
    if not name or ":" in name:
        raise ValueError("a user name must be non-empty and cannot contain ':' in basic auth")
    return name


def _bcrypt_hash(value: str) -> str:
    match = _BCRYPT_HASH.fullmatch(value)
    if match is None or not 4 <= int(match[1]) <= 31:
        raise ValueError("not a bcrypt hash; create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
    return value


def _duration(value: str) -> str:
    if not _DURATION.fullmatch(value):
        raise ValueError('not a duration such as "1s" or "500ms"')
    return value


ExistingFile = Annotated[str, AfterValidator(_existing_file)]
UserName = Annotated[str, AfterValidator(_user_name)]
BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]
CipherSuite = Annotated[str, AfterValidator(_cipher_suite)]
ClientAuthType = Annotated[
    Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ],
    AfterValidator(_client_auth_type),
]
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
Curve = Literal["CurveP256", "CurveP384", "CurveP521", "X25519"]
Header = Literal[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _unset_empty(cls, data: Any) -> Any:
        """A null or empty value leaves the field unset, as an absent one would."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None and v != ""}
        return data


class TlsServerConfig(_Section):
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    cert_file: ExistingFile | None = None
    key_file: ExistingFile | None = None
    client_ca_file: ExistingFile | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    client_allowed_sans: list[str] | None = None
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: list[CipherSuite] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[Curve] = []

    _context: ssl.SSLContext | None = PrivateAttr(default=None)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """None when the section sets no certificate: plain HTTP."""
        return self._context

    @model_validator(mode="after")
    def _check_and_load(self) -> TlsServerConfig:
        tls_fields = {"cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file", "client_auth_type"}
        if not self.model_fields_set & tls_fields:
            if self.model_fields_set:
                names = ", ".join(sorted(self.model_fields_set))
                raise ValueError(f"{names} set without cert_file and key_file, so without effect; add them")
            return self
        verifying = self.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
        has_ca = bool(self.client_ca or self.client_ca_file)
        problems = [f"set only one of {name} and {name}_file" for name in ("cert", "key", "client_ca")
                    if getattr(self, name) and getattr(self, f"{name}_file")]
        if not (self.cert or self.cert_file):
            problems.append("cert_file is missing; TLS needs a certificate (or cert)")
        if not (self.key or self.key_file):
            problems.append("key_file is missing; TLS needs a private key (or key)")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            problems.append("min_version is higher than max_version")
        if has_ca and self.client_auth_type == "NoClientCert":
            problems.append("a client CA is configured without a client auth policy; "
                            "set client_auth_type: RequireAndVerifyClientCert")
        if verifying and not has_ca:
            problems.append(f"client_ca_file is missing; client_auth_type {self.client_auth_type} "
                            "needs the CA that signs client certificates")
        if self.client_allowed_sans is not None and self.client_auth_type != "RequireAndVerifyClientCert":
            problems.append("client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert")
        if problems:
            raise ValueError("; ".join(problems))
        rotation = _RotatedFiles(self, verifying) if self.cert_file or self.key_file or self.client_ca_file else None
        self._context = self._load(verifying)  # after the files' stamps: a change in between is seen
        if rotation is not None:
            rotation.watch(self._context)
        return self

    def _load(self, verifying: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.client_allowed_sans:
            allowed = frozenset(_normalise_san(s) for s in self.client_allowed_sans)
            context.sslobject_class = _san_checking_sslobject(allowed)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.maximum_version = _TLS_VERSIONS[self.max_version]
        context.set_alpn_protocols(["http/1.1"])
        # load_cert_chain only reads files: inline PEM goes through a private temporary directory,
        # made only then (a read-only root filesystem has none to give).
        try:
            with contextlib.ExitStack() as stack:
                cert, key = self.cert_file, self.key_file
                if self.cert or self.key:
                    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scene7-webconfig-")))
                    cert = cert or _private_file(tmp / "cert.pem", self.cert)
                    key = key or _private_file(tmp / "key.pem", self.key)
                assert cert is not None  # the section's check asks for cert or cert_file
                # The password callback stops OpenSSL from prompting on a terminal for encrypted keys.
                context.load_cert_chain(cert, key, password=lambda: b"")
        except OSError as exc:  # ssl.SSLError is an OSError too; so is no usable temporary directory
            names = f"{'cert' if self.cert else 'cert_file'} and {'key' if self.key else 'key_file'}"
            raise ValueError(f"cannot load {names} ({_reason(exc)}); both must be PEM, "
                             "the key unencrypted and belonging to the certificate") from None
        suites = [_GO_CIPHERS[name] for name in self.cipher_suites if name in _GO_CIPHERS]
        try:
            if suites:
                context.set_ciphers(":".join(suites))
        except ssl.SSLError:
            raise ValueError("none of the cipher_suites is available here") from None
        if self.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        context.verify_mode = ssl.CERT_NONE
        if verifying:
            try:
                context.load_verify_locations(cafile=self.client_ca_file, cadata=self.client_ca)
            except OSError as exc:
                name = "client_ca" if self.client_ca else "client_ca_file"
                raise ValueError(f"cannot load CA certificates from {name} ({_reason(exc)})") from None
            required = self.client_auth_type == "RequireAndVerifyClientCert"
            context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
        return context


FileStamp = tuple[int, int, int] | None  # inode, size, mtime in ns; None: cannot be read


class _RotatedFiles:
    """Serves renewed certificates without a restart, as exporter-toolkit does by reading them
    for each handshake. OpenSSL asks the listening context's `sni_callback` at every handshake
    (with or without SNI); it looks at the files (three stats, nothing next to the handshake's
    cost) and, once they changed, gives the connection a context loaded from the new files.
    Connections in flight keep theirs. A change that does not load (a certificate renewed
    before its key) keeps the last good context and is logged once; the next change is tried."""

    def __init__(self, config: TlsServerConfig, verifying: bool) -> None:
        self._config = config
        self._verifying = verifying
        self._paths = tuple(p for p in (config.cert_file, config.key_file, config.client_ca_file) if p)
        self._loaded = self._stamps()
        self._refused: tuple[FileStamp, ...] | None = None
        self._current: ssl.SSLContext | None = None  # None: the listening context is current

    def watch(self, context: ssl.SSLContext) -> None:
        context.sni_callback = self._on_client_hello

    def _stamps(self) -> tuple[FileStamp, ...]:
        stamps: list[FileStamp] = []
        for path in self._paths:
            try:
                status = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_ino, status.st_size, status.st_mtime_ns))
        return tuple(stamps)

    def _on_client_hello(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                         listening: ssl.SSLContext) -> None:
        stamps = self._stamps()
        try:
            if stamps not in (self._loaded, self._refused):
                self._reload(stamps)
            if self._current is not None:
                connection.context = self._current
        except Exception:  # an exception here would fail the handshake with no word
            self._refused = stamps  # once per change of the files, not at every handshake
            log.exception("TLS certificate reload failed; serving the certificate loaded before")

    def _reload(self, stamps: tuple[FileStamp, ...]) -> None:
        try:
            fresh = self._config._load(self._verifying)
        except ValueError as exc:
            self._refused = stamps
            log.warning("TLS files changed but cannot be used (%s); serving the certificate loaded before "
                        "until they change again", exc)
            return
        self._current, self._loaded, self._refused = fresh, stamps, None
        log.info("TLS files changed: new connections get the certificate read from %s",
                 ", ".join(str(p) for p in self._paths))


# exporter-toolkit's allowed values (None: any); a value is one line (a YAML block's final line
# break is dropped), as no HTTP header value may hold a line break.
_HEADER_VALUES: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}


class HttpServerConfig(_Section):
    http2: bool = True
    headers: dict[Header, str | None] = {}

    @field_validator("headers")
    @classmethod
    def _values(cls, headers: dict[str, str | None]) -> dict[str, str | None]:
        checked: dict[str, str | None] = {}
        for name, value in headers.items():
            text = (value or "").strip()
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
                raise ValueError(f"{name}: a header value is one line, without control characters")
            allowed = _HEADER_VALUES[name]
            if text and allowed is not None and text not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {text!r}")
            checked[name] = text or None
        return checked


class RateLimit(_Section):
    interval: Annotated[str, AfterValidator(_duration)] | None = None
    burst: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _warn(self) -> RateLimit:
        if self.model_fields_set:
            log.warning("web config rate_limit is accepted but not enforced by this exporter")
        return self


class WebConfigFile(_Section):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig | None = None
    basic_auth_users: dict[UserName, BcryptHash] = {}
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server needs from the web configuration file."""

    ssl_context: ssl.SSLContext | None
    basic_auth: BasicAuth | None
    # http_server_config.headers: on every response that does not set the header itself
    headers: tuple[tuple[str, str], ...] = ()
    tls: TlsServerConfig | None = None

    def served_certificate(self) -> str | None:
        """The served certificate's PEM blocks as configured now, for `healthcheck` to trust
        exactly that one (text around them, like openssl's "Bag Attributes", left out)."""
        if self.tls is None or self.tls.ssl_context is None:
            return None
        try:
            text = self.tls.cert or Path(str(self.tls.cert_file)).read_bytes().decode("ascii", errors="ignore")
        except OSError:
            return None
        blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.DOTALL)
        return "\n".join(blocks) or None


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check an exporter-toolkit web configuration file; raise `ConfigError` if unusable.

    Relative file names inside it are taken relative to the file's own directory.
    """
    path = Path(path)
    where = f"web config file {path}: "
    try:
        content = read_limited(path, CONFIG_FILE_LIMIT)
    except OSError as exc:
        raise ConfigError([f"--web.config.file: cannot read {path} ({exc.strerror or exc})"]) from None
    if content is None:
        raise ConfigError([f"{where}larger than {size_text(CONFIG_FILE_LIMIT)}, far more than any web "
                           "configuration; check --web.config.file"])
    try:
        data = yaml.safe_load(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{where}not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{where}not valid YAML{yaml_position(exc)}"]) from None
    try:
        file = WebConfigFile.model_validate({} if data is None else data, context={"directory": path.parent})
    except ValidationError as exc:
        raise ConfigError([where + line for line in describe_errors(exc, secret_fields=_SECRET_FIELDS)]) from None
    users = {user: hashed.encode("ascii") for user, hashed in file.basic_auth_users.items()}
    return WebConfig(
        ssl_context=file.tls_server_config.ssl_context if file.tls_server_config else None,
        basic_auth=BasicAuth(users) if users else None,
        tls=file.tls_server_config,
        headers=tuple(
            (name, value)
            for name, value in (file.http_server_config.headers if file.http_server_config else {}).items()
            if value
        ),
    )


def _private_file(path: Path, text: str | None) -> str:
    path.touch(mode=0o600)
    path.write_text(text or "", encoding="utf-8")
    return str(path)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or str(exc)


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
        """True if the `Authorization` header carries a valid user and password."""
        credentials = self.credentials(authorization_header)
        return credentials is not None and (self.remembered(credentials) or self.verify(credentials))

    @staticmethod
    def credentials(authorization_header: str | None) -> tuple[str, bytes] | None:
        """User and password of a `Basic` header; None if there are none to check."""
        return _parse_basic(authorization_header)

    def remembered(self, credentials: tuple[str, bytes]) -> bool:
        """Whether bcrypt accepted these credentials before: cheap, on any thread.

        A hit only skips bcrypt for a triple that already passed, so timing tells an attacker
        nothing they did not already send.
        """
        stored = self.users.get(credentials[0])
        return stored is not None and self._key(credentials, stored) in self._accepted

    def verify(self, credentials: tuple[str, bytes]) -> bool:
        """bcrypt's verdict (constant-time, ~0.25 s at cost 12: run it off the event loop).
        Unknown users cost the same as known ones."""
        user, password = credentials
        stored = self.users.get(user)
        hashed = stored if stored is not None else self._dummy_hash
        if len(password) > _BCRYPT_MAX_PASSWORD:
            # Go's bcrypt refuses such passwords; still spend the time, then refuse.
            bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
            return False
        try:
            ok = bcrypt.checkpw(password, hashed)
        except ValueError:
            return False
        if ok and stored is not None:
            self._accepted.add(self._key(credentials, stored))
            return True
        return False

    @staticmethod
    def _key(credentials: tuple[str, bytes], hashed: bytes) -> bytes:
        """What is remembered of credentials bcrypt accepted against `hashed`: a digest of all
        three, so a changed hash forgets them. After the user name come a 32-byte digest and a
        60-byte hash, so no other split of the same bytes into user and password gets the key."""
        user, password = credentials
        return hashlib.sha256(b"\0".join((user.encode("utf-8"), hashlib.sha256(password).digest(), hashed))).digest()


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
        user_bytes, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        user = user_bytes.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _normalise_san(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def _san_checking_sslobject(allowed: frozenset[str]) -> type[ssl.SSLObject]:
    """An SSLObject that ends the handshake unless the client certificate has an allowed SAN.

    asyncio drives TLS through `SSLContext.wrap_bio`, which builds this class: failing inside
    `do_handshake` makes the connection fail like any other handshake error.
    """

    class SanCheckingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            if not _has_allowed_san(self.getpeercert(), allowed):
                # With an error number, as OpenSSL's own errors: str() is then the message, not a tuple.
                raise ssl.SSLCertVerificationError(
                    ssl.SSL_ERROR_SSL, "client certificate has none of the client_allowed_sans"
                )

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
