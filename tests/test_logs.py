"""Log lines as promslog writes them: logfmt by default, or JSON, with what a line is about as
fields of their own (company, account, reason, duration), and the Go exporters' level names."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest
from support import exporter_command

from exporter.cli import _overrides, parse_args
from exporter.config import load_settings
from exporter.logs import JsonFormatter, LogfmtFormatter, setup_logging

LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def record(msg: str, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    made = logging.getLogger("exporter.poller").makeRecord(
        "exporter.poller", level, "/src/exporter/poller.py", 373, msg, (), None, extra=extra)
    made.created = 1796169600.123  # 2026-12-02T00:00:00.123Z
    return made


def parse_logfmt(line: str) -> dict[str, str]:
    pairs = LOGFMT.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line  # nothing but pairs
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def test_a_logfmt_line_has_time_level_source_msg_then_the_fields():
    line = LogfmtFormatter().format(record("poll failed", company='Bits & "Bytes" <EU>', account="main",
                                           reason="authentication", error="bad\ncredentials", duration=0.25))
    assert line.startswith('time=2026-12-02T00:00:00.123Z level=warn source=poller.py:373 msg="poll failed" ')
    assert parse_logfmt(line) == {
        "time": "2026-12-02T00:00:00.123Z", "level": "warn", "source": "poller.py:373", "msg": "poll failed",
        "company": 'Bits & "Bytes" <EU>', "account": "main", "reason": "authentication",
        "error": "bad\ncredentials", "duration": "0.25"}
    assert "\n" not in line  # one line, whatever a field holds


def test_a_json_line_has_the_same_keys_and_typed_values():
    entry = json.loads(JsonFormatter().format(record("poll recovered", level=logging.INFO, company="Acme",
                                                     account="main", duration=1.5)))
    assert entry == {"time": "2026-12-02T00:00:00.123Z", "level": "info", "source": "poller.py:373",
                     "msg": "poll recovered", "company": "Acme", "account": "main", "duration": 1.5}


def test_a_traceback_is_one_field():
    try:
        raise ZeroDivisionError("a bug")
    except ZeroDivisionError:
        made = logging.getLogger("x").makeRecord("x", logging.ERROR, "/a.py", 1, "unexpected error", (),
                                                 __import__("sys").exc_info(), extra={"company": "Acme"})
    fields = parse_logfmt(LogfmtFormatter().format(made))
    assert fields["level"] == "error" and fields["company"] == "Acme"
    assert fields["exc"].startswith("Traceback") and fields["exc"].endswith("ZeroDivisionError: a bug")


@pytest.mark.parametrize(("given", "shown"), [("debug", logging.DEBUG), ("info", logging.INFO),
                                              ("warn", logging.WARNING), ("warning", logging.WARNING),
                                              ("error", logging.ERROR)])
def test_levels_as_the_go_exporters_name_them_and_warning_as_an_alias(given, shown):
    setup_logging(given, "logfmt")
    try:
        assert logging.getLogger().level == shown
        settings = load_settings(None, **_overrides(parse_args(["demo", f"--log.level={given}"])))
        assert settings.log.level == given
    finally:
        setup_logging("info", "logfmt")


@pytest.mark.parametrize(("given", "formatter"), [("logfmt", LogfmtFormatter), ("text", LogfmtFormatter),
                                                  ("json", JsonFormatter)])
def test_logfmt_is_the_default_and_text_its_alias(given, formatter):
    setup_logging("info", given)
    try:
        assert isinstance(logging.getLogger().handlers[0].formatter, formatter)
    finally:
        setup_logging("info", "logfmt")
    assert load_settings(None).log.format == "logfmt"


def test_the_exporter_logs_logfmt_lines_with_fields(tmp_path):
    """The real command: a poll that fails (nothing listens at the endpoint) is one logfmt line
    with the company, the account and the reason as fields."""
    config = tmp_path / "config.yml"
    config.write_text("accounts:\n  - {name: main, endpoint: 'http://127.0.0.1:9/ips', user: u, password: p}\n"
                      "poll: {interval: 1s, timeout: 0.5s}\nweb: {listen_address: '127.0.0.1:0'}\n")
    proc = subprocess.Popen(exporter_command("run", f"--config.file={config}", "--log.level=warn"),
                            stderr=subprocess.PIPE, text=True)
    try:
        line = next(line for line in proc.stderr if "poll failed" in line)  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(10)
    fields = parse_logfmt(line.rstrip("\n"))
    assert (fields["level"], fields["msg"], fields["company"], fields["account"], fields["reason"]) == (
        "warn", "poll failed", "main", "main", "connection")
    assert re.fullmatch(r"poller\.py:\d+", fields["source"]) and float(fields["duration"]) >= 0


def test_numbers_keep_their_digits_and_json_stays_json():
    line = LogfmtFormatter().format(record("poll done", duration=1234.5678, pause=1e7))
    assert "duration=1234.5678" in line and "pause=10000000.0" in line
    entry = json.loads(JsonFormatter().format(record("odd", value=float("nan"))))
    assert entry["value"] == "nan"
