"""The exporter's settings: a YAML file, `SCENE7_EXPORTER_*` environment variables, CLI flags.

Precedence, highest first: flags, environment, file, defaults. Every value is validated up
front; `describe_errors` turns a validation failure into lines that name the field and the fix.
Passwords come from a file or the environment, never from a flag, and never leave this module
in a printable form.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from exporter import DEFAULT_PORT
from exporter.versions import DEFAULT_API_VERSION

ENV_PREFIX = "SCENE7_EXPORTER_"
PASSWORD_ENV = ENV_PREFIX + "PASSWORD"
DEFAULT_ENDPOINT = "https://s7sps1apissl.scene7.com/scene7/services/IpsApiService"

# The most read of a file named in the configuration: a file the exporter reads whole must not
# take its memory when it is the wrong file (a disk image, /dev/zero).
CONFIG_FILE_LIMIT = 1024 * 1024  # --config.file and --web.config.file
PASSWORD_FILE_LIMIT = 4 * 1024

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a Prometheus-style duration (`90s`, `1m30s`, `500ms`) or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration: use e.g. 30s, 5m, 1h30m")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("a duration must be a string such as 30s or a number of seconds")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountConfig(Section):
    """One IPS account (user) and the companies to poll with it."""

    name: str = "default"
    endpoint: str = DEFAULT_ENDPOINT
    user: str
    password: SecretStr | None = None
    password_file: Path | None = None
    api_version: str = DEFAULT_API_VERSION
    companies: list[str] = Field(default_factory=list)
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    max_response_size: ByteSize = ByteSize(64 * 1024 * 1024)
    locale: str = Field(default="en-US", pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    proxy_url: SecretStr | None = None
    proxy_from_environment: bool = False

    @field_validator("proxy_url")
    @classmethod
    def _proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^(https?|socks5)://[^/\s]+", value.get_secret_value()):
            raise ValueError("proxy_url must be an http(s) or socks5 URL, e.g. http://proxy.example.com:3128")
        return value

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("endpoint must be an http(s) URL, e.g. " + DEFAULT_ENDPOINT)
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-[A-Za-z0-9]+)?", value):
            raise ValueError('api_version looks like "2014-04-03"')
        return value

    def proxy(self) -> str | None:
        """The proxy for `endpoint`: `proxy_url`, else with `proxy_from_environment` the one
        HTTPS_PROXY / HTTP_PROXY names unless NO_PROXY exempts the host; None: direct."""
        if self.proxy_url is not None:
            return self.proxy_url.get_secret_value()
        if not self.proxy_from_environment:
            return None
        url = urllib.parse.urlsplit(self.endpoint)
        if urllib.request.proxy_bypass(url.hostname or ""):
            return None
        return urllib.request.getproxies_environment().get(url.scheme)

    def resolve_password(self, single_account: bool) -> str:
        """The password from `password_file`, `password`, or SCENE7_EXPORTER_PASSWORD."""
        if self.password_file is not None:
            where = f"accounts[{self.name}].password_file: "
            try:
                content = read_limited(self.password_file, PASSWORD_FILE_LIMIT)
            except OSError as exc:
                raise ConfigError(
                    [f"{where}cannot read {self.password_file}: {exc.strerror}; "
                     "fix the path or the file's permissions"]
                ) from None
            if content is None:
                raise ConfigError([f"{where}{self.password_file} is larger than {size_text(PASSWORD_FILE_LIMIT)}; "
                                   "it should hold only the password"])
            try:
                return content.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ConfigError([f"{where}{self.password_file} is not UTF-8 text"]) from None
        if self.password is not None:
            return self.password.get_secret_value()
        env = os.environ.get(PASSWORD_ENV)
        if env is not None and single_account:
            return env
        raise ConfigError(
            [f"accounts[{self.name}]: no password; set password_file (Docker or Kubernetes "
             f"secret) or the environment variable {PASSWORD_ENV}"]
        )


class PollConfig(Section):
    interval: Duration = 60.0
    timeout: Duration = 20.0
    max_age: Duration | None = None
    max_series: int = Field(default=1_000_000, ge=0)
    discovery_interval: Duration = 900.0
    auth_backoff_max: Duration = 1800.0
    max_total_response_size: ByteSize = ByteSize(128 * 1024 * 1024)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> PollConfig:
        if self.timeout >= self.interval:
            raise ValueError(
                f"poll.timeout ({self.timeout:g}s) must be below poll.interval "
                f"({self.interval:g}s) so polls never stack"
            )
        return self

    @property
    def effective_max_age(self) -> float:
        """Snapshots older than this stop exporting per-job series (default 3 intervals)."""
        return self.max_age if self.max_age is not None else 3 * self.interval


class JobLogsConfig(Section):
    """The job logs of finished jobs (getJobLogs): polled per company on their own schedule."""

    interval: Duration = 300.0
    enabled: bool = True
    recent_window: Duration = 86400.0
    recent_max: int = Field(default=200, ge=0)


class WebSection(Section):
    # One address, or several (a repeated --web.listen-address), served alike.
    listen_address: str | list[str] = f":{DEFAULT_PORT}"
    config_file: Path | None = None
    probes_without_auth: bool = True
    # Every route under this path, as Prometheus' --web.route-prefix: behind a reverse proxy that
    # passes /scene7/... on as it is, "/scene7". Kept without its trailing slash ("/": none).
    route_prefix: str = "/"
    # Where the metrics are served (under route_prefix), as the Go exporters' --web.telemetry-path.
    telemetry_path: str = "/metrics"

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str | list[str]) -> str | list[str]:
        addresses = [value] if isinstance(value, str) else value
        if not addresses:
            raise ValueError(f"no address to listen on; e.g. :{DEFAULT_PORT}")
        for address in addresses:
            split_listen_address(address)
        if len(set(addresses)) != len(addresses):
            raise ValueError("an address is listed twice")
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    @property
    def listen_addresses(self) -> list[str]:
        return [self.listen_address] if isinstance(self.listen_address, str) else list(self.listen_address)

    @field_validator("route_prefix")
    @classmethod
    def _path(cls, value: str) -> str:
        return _plain_path(value, "/scene7")

    @field_validator("telemetry_path")
    @classmethod
    def _telemetry(cls, value: str) -> str:
        path = _plain_path(value, "/metrics")
        if path in ("/", "/healthz", "/readyz") or path.startswith(("/api/", "/static/")):
            raise ValueError(f"{path} is taken by the jobs page, its API or the probes: choose another path")
        return path

    @property
    def prefix(self) -> str:
        """What every route starts with: "" for none, else the prefix without a trailing slash."""
        return "" if self.route_prefix == "/" else self.route_prefix


def _plain_path(value: str, example: str) -> str:
    """A URL path a user may set: starting with /, no query, fragment, escapes, quotes, spaces or
    control characters, no empty, . or .. segment. Kept without its trailing slash ("/": none)."""
    segments = value.strip("/").split("/")
    if (not value.startswith("/") or "//" in value or any(s in (".", "..") for s in segments)
            or any(ord(c) <= 0x20 or ord(c) == 0x7F or c in "?#%\\\"<>" for c in value)):
        raise ValueError(f"a path starting with /, such as {example}: no ?, #, %, quotes, spaces, "
                         "empty, . or .. segments")
    return value.rstrip("/") or "/"


class LogSection(Section):
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"  # warning: an alias of warn
    format: Literal["logfmt", "json", "text"] = "logfmt"  # text: an alias of logfmt


class Settings(BaseSettings):
    """Everything the exporter is told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    accounts: list[AccountConfig] = Field(default_factory=list)
    poll: PollConfig = PollConfig()
    job_logs: JobLogsConfig = JobLogsConfig()
    web: WebSection = WebSection()
    log: LogSection = LogSection()
    shard: str | None = None

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is not None:
            parse_shard(value)
        return value

    @field_validator("accounts")
    @classmethod
    def _unique_account_names(cls, accounts: list[AccountConfig]) -> list[AccountConfig]:
        names = [account.name for account in accounts]
        if len(names) != len(set(names)):
            raise ValueError("every account needs its own name")
        return accounts


def split_listen_address(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) into its parts; `:port` gives the host "", every
    interface of IPv4 and IPv6, as Go exporters read it."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port, e.g. :{DEFAULT_PORT} or 127.0.0.1:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


def parse_shard(value: str) -> tuple[int, int]:
    """`i/n` (1-based) into (index, total)."""
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"shard {value!r} must be INDEX/TOTAL with 1 <= INDEX <= TOTAL, e.g. 2/3")
    return int(match[1]), int(match[2])


class ConfigError(Exception):
    """A configuration that cannot run, as lines naming each field and its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def read_limited(path: Path, limit: int) -> bytes | None:
    """The content of `path`, or None if it holds more than `limit` bytes. One read of at most
    `limit` + 1 bytes, never the size `stat` reports: that is 0 for /dev/zero or a FIFO."""
    with path.open("rb") as file:
        content = file.read(limit + 1)
    return None if len(content) > limit else content


def size_text(limit: int) -> str:
    """4096 as "4 KiB", 1048576 as "1 MiB"."""
    return f"{limit // 1024 // 1024} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the file (if any), the environment and `overrides` (from flags)."""
    file_data = None if config_file is None else read_config_file(config_file)

    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if file_data is not None:
                sources.append(InitSettingsSource(settings_cls, init_kwargs=file_data))
            return tuple(sources)

    try:
        return FileSettings(**_nest(overrides))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
    except SettingsError as exc:  # an environment variable that is not JSON where JSON is needed
        raise ConfigError([str(exc)]) from None


def read_config_file(config_file: Path) -> dict[str, Any]:
    """The settings in the YAML file, read once and at most `CONFIG_FILE_LIMIT` bytes of it."""
    if not config_file.is_file():
        raise ConfigError([f"--config.file: {config_file} does not exist or is not a file"])
    try:
        content = read_limited(config_file, CONFIG_FILE_LIMIT)
    except OSError as exc:
        raise ConfigError([f"{config_file}: cannot read it ({exc.strerror or exc})"]) from None
    if content is None:
        raise ConfigError([f"{config_file}: larger than {size_text(CONFIG_FILE_LIMIT)}, far more than "
                           "any configuration; check --config.file"])
    try:
        data = yaml.safe_load(content.decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError([f"{config_file}: not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{config_file}: not valid YAML{yaml_position(exc)}"]) from None
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):  # a scalar, a list, `1: x`
        raise ConfigError([f"{config_file}: not a mapping of settings; see the configuration reference in README.md"])
    return data


def yaml_position(exc: yaml.YAMLError) -> str:
    """Where a YAML error is, without PyYAML's message, which may quote a line holding a secret."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f" ({exc.problem}, line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})"
    return ""


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"web.listen_address": x} into {"web": {"listen_address": x}}; None values dropped."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


_SECRET_FIELDS = ("password", "proxy_url")


def describe_errors(exc: ValidationError, secret_fields: tuple[str, ...] = _SECRET_FIELDS) -> list[str]:
    """One line per problem: the field's path, what is wrong, and what to do.

    Values at paths containing one of `secret_fields` are never shown, nor sections or a whole
    file (which may be a secret file given by mistake).
    """
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "config"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":  # only accounts[].user is required: no environment variable sets it
            fix = "add it to the config file"
        elif error["type"] == "extra_forbidden":
            fix = "remove it or fix its spelling; see the configuration reference in README.md"
        elif not error["loc"] or any(secret in path for secret in secret_fields) or isinstance(
            error.get("input"), dict | list
        ):
            fix = "check the value"  # never echo a secret, a section that may hold one, or a whole file
        else:
            fix = f"got {error.get('input')!r}"
        lines.append(f"{path}: {message} ({fix})")
    return lines
