"""Settings: file, environment and flags; and errors that name the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_settings, parse_duration

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


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        ("accounts: [{name: a}]\n", "accounts.0.user", "add it"),
        ("accounts: [{user: u, pasword: x}]\n", "accounts.0.pasword", "spelling"),
        ("poll: {interval: soon}\n", "poll.interval", "e.g. 30s"),
        ("poll: {interval: 10s, timeout: 20s}\n", "poll", "must be below poll.interval"),
        ("web: {listen_address: nowhere}\n", "web.listen_address", "host:port"),
        ("accounts: [{user: u, endpoint: ftp://x}]\n", "accounts.0.endpoint", "http(s) URL"),
        ("log: {level: loud}\n", "log.level", "debug"),
        ("shard: 4/3\n", "shard", "INDEX/TOTAL"),
        ("accounts: [{user: u}, {user: v}]\n", "accounts", "own name"),
    ],
)
def test_errors_name_the_field_and_the_fix(tmp_path, text, field, fix):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert any(line.startswith(field) and fix in line for line in caught.value.problems), caught.value.problems


def test_password_is_never_echoed(tmp_path):
    path = write(tmp_path, f"accounts: [{{user: u, password: {PASSWORD}, api_version: bad}}]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert PASSWORD not in str(caught.value)


def test_unreadable_password_file_names_the_fix(tmp_path):
    settings = load_settings(write(tmp_path, f"accounts: [{{user: u, password_file: {tmp_path}/missing}}]\n"))
    with pytest.raises(ConfigError, match="password_file"):
        settings.accounts[0].resolve_password(single_account=True)


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
