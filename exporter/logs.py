"""Log set-up as the Go exporters' promslog writes it: logfmt lines (the default) or JSON lines.

    time=2026-12-01T10:00:00.123Z level=warn source=poller.py:368 msg="poll failed" company=Acme reason=authentication

Every module logs through the standard `logging` tree under `exporter`; this only decides how
lines look. What a line is about (company, account, reason, duration...) is passed as `extra`
fields and written as fields of their own, not words of the message, so Loki and Elasticsearch
users can filter on them. No line carries a credential: the code never formats one into a message.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import Any

# --log.level and --log.format values; the second of each pair is kept as an alias.
LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "warning": "warn", "error": "error"}
FORMATS = {"logfmt": "logfmt", "json": "json", "text": "logfmt"}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
                logging.CRITICAL: "error"}
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call gave in `extra`: what the line is about."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The time, level, source and message of `record`, then its `extra` fields, then `exc`."""
    entry: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
        "source": f"{record.filename}:{record.lineno}",
        "msg": record.getMessage(),
    }
    entry.update(extra_fields(record))
    if record.exc_info:
        entry["exc"] = logging.Formatter().formatException(record.exc_info)
    return entry


class LogfmtFormatter(logging.Formatter):
    """key=value pairs, a value quoted when it holds a space, `=`, `"` or a control character."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt(value)}" for key, value in fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as the logfmt line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {k: v if not isinstance(v, float) or math.isfinite(v) else repr(v) for k, v in fields(record).items()}
        return json.dumps(entry, ensure_ascii=False, default=str, allow_nan=False)


def _logfmt(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if FORMATS[fmt] == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = LEVELS[level]
    root.setLevel({"warn": "WARNING"}.get(name, name.upper()))
    # Libraries log each request at INFO/DEBUG; keep them quiet unless debugging.
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING if name != "debug" else logging.INFO)
