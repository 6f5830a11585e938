"""Settings: file, environment and flags; and errors that name the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import memory_capped

from exporter.config import (
    AccountConfig,
    ConfigError,
    load_settings,
    parse_duration,
    parse_shard,
    split_listen_address,
)

PASSWORD = "pa55-word-never-shown"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_full_file(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    path = write(tmp_path, f"""
accounts:
  - name: main
    endpoint: https://s7sps3apissl.scene7.com/scene7/services/IpsApiService
    user: ops@example.com
    password_file: {secret}
    api_version: "2013-02-15"
    companies: ["c|110", Example.com]
poll:
  interval: 2m
  timeout: 30s
  max_age: 10m
web:
  listen_address: "127.0.0.1:9999"
log:
  level: debug
  format: json
""")
    settings = load_settings(path)
    (account,) = settings.accounts
    assert account.companies == ["c|110", "Example.com"]
    assert account.resolve_password(single_account=True) == PASSWORD
    assert (settings.poll.interval, settings.poll.timeout, settings.poll.effective_max_age) == (120, 30, 600)
    assert settings.log.format == "json"


def test_defaults_and_max_age_of_three_intervals(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENE7_EXPORTER_PASSWORD", PASSWORD)
    settings = load_settings(write(tmp_path, "accounts: [{user: a@example.com}]\n"))
    assert settings.poll.interval == 60 and settings.poll.effective_max_age == 180
    assert settings.web.listen_address == ":10373"
    assert settings.accounts[0].api_version == "2014-04-03"
    assert settings.accounts[0].resolve_password(single_account=True) == PASSWORD


def test_environment_overrides_file_and_flags_override_environment(tmp_path, monkeypatch):
    path = write(tmp_path, "accounts: [{user: a@example.com, password: x}]\npoll: {interval: 60s}\n")
    monkeypatch.setenv("SCENE7_EXPORTER_POLL__INTERVAL", "90s")
    monkeypatch.setenv("SCENE7_EXPORTER_WEB__LISTEN_ADDRESS", "127.0.0.1:1")
    settings = load_settings(path, **{"web.listen_address": "127.0.0.1:2"})
    assert settings.poll.interval == 90
    assert settings.web.listen_address == "127.0.0.1:2"


URL_HINT = "endpoint must be an http(s) URL, e.g. https://s7sps1apissl.scene7.com/scene7/services/IpsApiService"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("accounts: [{name: a}]\n", "accounts.0.user: Field required (add it to the config file)"),
        ("accounts: [{user: u, pasword: x}]\n", "accounts.0.pasword: Extra inputs are not permitted "
         "(remove it or fix its spelling; see the configuration reference in README.md)"),
        ("poll: {interval: soon}\n", "poll.interval: 'soon' is not a duration: use e.g. 30s, 5m, 1h30m (got 'soon')"),
        ("poll: {interval: 1m30}\n", "poll.interval: '1m30' is not a duration: use e.g. 30s, 5m, 1h30m (got '1m30')"),
        ("poll: {interval: ''}\n", "poll.interval: '' is not a duration: use e.g. 30s, 5m, 1h30m (got '')"),
        ("poll: {interval: 0s}\n", "poll.interval: a duration must be positive (got '0s')"),
        ("poll: {interval: true}\n",
         "poll.interval: a duration must be a string such as 30s or a number of seconds (got True)"),
        ("poll: {interval: 10s, timeout: 20s}\n",
         "poll: poll.timeout (20s) must be below poll.interval (10s) so polls never stack (check the value)"),
        ("web: {listen_address: nowhere}\n",
         "web.listen_address: 'nowhere' is not host:port, e.g. :10373 or 127.0.0.1:10373 (got 'nowhere')"),
        ("accounts: [{user: u, endpoint: ftp://x}]\n", f"accounts.0.endpoint: {URL_HINT} (got 'ftp://x')"),
        ("accounts: [{user: u, api_version: '2014'}]\n",
         "accounts.0.api_version: api_version looks like \"2014-04-03\" (got '2014')"),
        ("log: {level: loud}\n",
         "log.level: Input should be 'debug', 'info', 'warn', 'warning' or 'error' (got 'loud')"),
        ("shard: 4/3\n", "shard: shard '4/3' must be INDEX/TOTAL with 1 <= INDEX <= TOTAL, e.g. 2/3 (got '4/3')"),
        ("accounts: [{user: u}, {user: v}]\n", "accounts: every account needs its own name (check the value)"),
    ],
)
def test_errors_name_the_field_and_the_fix(tmp_path, text, line):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.problems == [line]


def test_every_problem_gets_its_own_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "poll: {interval: 1h, timeout: 0}\nlog: {level: loud}\n"))
    assert str(caught.value) == (
        "poll.timeout: a duration must be positive (got 0); "
        "log.level: Input should be 'debug', 'info', 'warn', 'warning' or 'error' (got 'loud')"
    )


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        (PASSWORD, "accounts.0.api_version: api_version looks like \"2014-04-03\" (got 'bad')"),
        ("987654321", "accounts.0.password: Input should be a valid string (check the value)"),
        ("9876.54321", "accounts.0.password: Input should be a valid string (check the value)"),
        ("[987654321]", "accounts.0.password: Input should be a valid string (check the value)"),
    ],
)
def test_password_is_never_echoed(tmp_path, password, problem):
    path = write(tmp_path, f"accounts: [{{user: u, password: {password}, api_version: bad}}]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert problem in caught.value.problems
    assert password.strip("[]") not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("accounts: [{user: u, password: x}\n",
         "not valid YAML (expected ',' or ']', but got '<stream end>', line 2, column 1)"),
        ("987654321\n", "not a mapping of settings; see the configuration reference in README.md"),
        ("hunter2\n", "not a mapping of settings; see the configuration reference in README.md"),
        ("- 987654321\n", "not a mapping of settings; see the configuration reference in README.md"),
        ("1: x\n", "not a mapping of settings; see the configuration reference in README.md"),
        ("{log: {level: info}, 2: y}\n", "not a mapping of settings; see the configuration reference in README.md"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_one_line_without_its_content(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [f"{path}: {problem}"]


@pytest.mark.parametrize("name", ["nope.yml", "."])
def test_config_file_must_be_a_file(tmp_path, name):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / name)
    assert caught.value.problems == [f"--config.file: {tmp_path / name} does not exist or is not a file"]


def test_unreadable_config_file(tmp_path, monkeypatch):
    path = write(tmp_path, "log: {level: info}\n")
    real_open = Path.open

    def refuse(self, *args, **kwargs):  # as for a file of another user (chmod is no help when tests run as root)
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [f"{path}: cannot read it (Permission denied)"]


def test_environment_variable_that_is_not_json(monkeypatch):
    monkeypatch.setenv("SCENE7_EXPORTER_ACCOUNTS", '[{"user": "u", "password": ')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == ['error parsing value for field "accounts" from source "EnvSettingsSource"']


def test_unset_flags_leave_the_file_alone(tmp_path):
    # The CLI passes every flag, None when not given: those must not stop the ones given.
    path = write(tmp_path, "log: {level: debug}\n")
    settings = load_settings(path, **{"log.level": None, "web.listen_address": "127.0.0.1:2", "shard": "1/2"})
    assert (settings.log.level, settings.web.listen_address, settings.shard) == ("debug", "127.0.0.1:2", "1/2")


def test_unreadable_password_file_names_the_fix(tmp_path):
    path = write(tmp_path, f"accounts: [{{name: main, user: u, password_file: {tmp_path}/missing}}]\n")
    settings = load_settings(path)
    with pytest.raises(ConfigError) as caught:
        settings.accounts[0].resolve_password(single_account=True)
    assert caught.value.problems == [
        f"accounts[main].password_file: cannot read {tmp_path}/missing: No such file or directory; "
        "fix the path or the file's permissions"
    ]


@pytest.mark.parametrize(
    ("content", "password"),
    [
        (f"{PASSWORD}\n", PASSWORD),
        (f"{PASSWORD}\r\n", PASSWORD),
        (PASSWORD, PASSWORD),
        ("ends in a space \n", "ends in a space "),  # only line breaks are stripped
        ("Passw0rdX\n", "Passw0rdX"),
        ("pässwörd\n", "pässwörd"),
    ],
)
def test_password_file_loses_only_its_line_break(tmp_path, content, password):
    secret = tmp_path / "pw"
    secret.write_bytes(content.encode("utf-8"))
    account = AccountConfig(user="u", password_file=secret)
    assert account.resolve_password(single_account=False) == password


@pytest.mark.parametrize(("size", "accepted"), [(4095, True), (4096, True), (4097, False)])
def test_a_password_file_holds_at_most_4_kib(tmp_path, size, accepted):
    secret = tmp_path / "pw"
    secret.write_bytes(b"p" * size)
    account = AccountConfig(name="main", user="u", password_file=secret)
    if accepted:
        assert account.resolve_password(single_account=False) == "p" * size
        return
    with pytest.raises(ConfigError) as caught:
        account.resolve_password(single_account=False)
    assert caught.value.problems == [
        f"accounts[main].password_file: {secret} is larger than 4 KiB; it should hold only the password"
    ]


def test_an_endless_password_file_is_refused_after_4_kib():
    # /dev/zero, like a FIFO, reports a size of 0: only a bounded read tells.
    account = AccountConfig(name="main", user="u", password_file=Path("/dev/zero"))
    with memory_capped(), pytest.raises(ConfigError) as caught:
        account.resolve_password(single_account=False)
    assert caught.value.problems == [
        "accounts[main].password_file: /dev/zero is larger than 4 KiB; it should hold only the password"
    ]


def test_a_password_file_that_is_not_utf8(tmp_path):
    secret = tmp_path / "pw"
    secret.write_bytes(b"p\xe4ssw\xf6rd\n")
    with pytest.raises(ConfigError) as caught:
        AccountConfig(name="main", user="u", password_file=secret).resolve_password(single_account=False)
    assert caught.value.problems == [f"accounts[main].password_file: {secret} is not UTF-8 text"]


@pytest.mark.parametrize(("extra", "accepted"), [(-1, True), (0, True), (1, False)])
def test_a_config_file_holds_at_most_1_mib(tmp_path, extra, accepted):
    head = "log: {level: debug}\n#"
    path = write(tmp_path, head + "x" * (1024 * 1024 - len(head) - 1 + extra) + "\n")
    assert path.stat().st_size == 1024 * 1024 + extra
    if accepted:
        assert load_settings(path).log.level == "debug"
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [f"{path}: larger than 1 MiB, far more than any configuration; check --config.file"]


def test_a_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.yml"
    path.write_bytes(b"log: {level: d\xe9bug}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [f"{path}: not UTF-8 text"]


NO_PASSWORD = ("accounts[default]: no password; set password_file (Docker or Kubernetes secret) "
               "or the environment variable SCENE7_EXPORTER_PASSWORD")


@pytest.mark.parametrize(("env", "single_account"), [(None, True), (PASSWORD, False)])
def test_no_password(monkeypatch, env, single_account):
    # The environment variable is the password of a single account only.
    if env is None:
        monkeypatch.delenv("SCENE7_EXPORTER_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("SCENE7_EXPORTER_PASSWORD", env)
    with pytest.raises(ConfigError) as caught:
        AccountConfig(user="u").resolve_password(single_account=single_account)
    assert caught.value.problems == [NO_PASSWORD]


@pytest.mark.parametrize(("value", "parts"), [("1/1", (1, 1)), ("1/3", (1, 3)), ("2/3", (2, 3)), (" 3/3 ", (3, 3))])
def test_shard(value, parts):
    assert parse_shard(value) == parts


@pytest.mark.parametrize("value", ["0/3", "4/3", "3", "a/b", "1/3/4"])
def test_bad_shard(value):
    with pytest.raises(ValueError, match=rf"^shard '{value}' must be INDEX/TOTAL with 1 <= INDEX <= TOTAL, e.g. 2/3$"):
        parse_shard(value)


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        (":9090", ("", 9090)),  # every interface of both families
        ("[::1]:0", ("::1", 0)),
        ("XBOX:65535", ("XBOX", 65535)),
    ],
)
def test_listen_address(value, parts):
    assert split_listen_address(value) == parts


@pytest.mark.parametrize("value", ["9090", "host:http", "host:65536", "host:-1", "host:"])
def test_bad_listen_address(value):
    with pytest.raises(ValueError, match=rf"^'{value}' is not host:port, e.g. :10373 or 127.0.0.1:10373$"):
        split_listen_address(value)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), (15, 15)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_check_config_masks_the_password(tmp_path):
    path = write(tmp_path, f"accounts: [{{user: u, password: {PASSWORD}}}]\n")
    result = run_cli("check-config", "--config.file", str(path))
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert '"password": "**********"' in result.stdout


def test_bad_config_exits_non_zero_with_the_field(tmp_path):
    result = run_cli("--config.file", str(write(tmp_path, "poll: {interval: soon}\n")))
    assert result.returncode == 2
    assert "poll.interval" in result.stderr and "invalid configuration" in result.stderr


def test_no_account_points_to_the_demo(tmp_path):
    result = run_cli("run", "--config.file", str(write(tmp_path, "log: {level: info}\n")))
    assert result.returncode == 2 and "scene7-exporter demo" in result.stderr


def test_missing_config_file(tmp_path):
    result = run_cli("--config.file", str(tmp_path / "nope.yml"))
    assert result.returncode == 2 and "nope.yml" in result.stderr
