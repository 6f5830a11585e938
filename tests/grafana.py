"""Grafana's interpolation of dashboard variables into Prometheus queries, for the tests.

No Grafana server runs here, so the tests that run the dashboards' queries interpolate them as
Grafana 11-13 does (packages/grafana-prometheus/src/escaping.ts for `$var`, the `regex` format of
the scenes format registry for `${var:regex}`, template_srv for a custom "All" value), in its
classic mode (without the `prometheusSpecialCharsInLabelValues` feature toggle): a `$var` of a
single-value variable is inserted with only backslashes and single quotes escaped, so a `"` in a
value breaks a double-quoted matcher, which is why IPS-made labels use `${var:regex}` inside a
raw string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

REFERENCE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")  # escapeRegex in @grafana/data
_PROMETHEUS_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]+?.()|]")  # prometheusSpecialRegexEscape


def escape_regex(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(), value)


def prometheus_regular_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def prometheus_special_regex_escape(value: str) -> str:
    value = value.replace("\\", "\\\\\\\\")
    return _PROMETHEUS_REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(), value)


@dataclass(frozen=True)
class Selection:
    """What a variable holds: the values picked (every value for "All"), how it was declared."""

    values: tuple[str, ...]
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None  # the variable's custom allValue
    all_selected: bool = False

    @classmethod
    def of(cls, variable: Mapping[str, object], values: list[str], *, all_selected: bool = False) -> Selection:
        all_value = variable.get("allValue")
        return cls(
            tuple(values),
            multi=bool(variable.get("multi")),
            include_all=bool(variable.get("includeAll")),
            all_value=all_value if isinstance(all_value, str) and all_value else None,
            all_selected=all_selected,
        )


def _formatted(selection: Selection, fmt: str | None) -> str:
    if selection.all_selected and selection.all_value is not None:
        return selection.all_value  # a custom all value is inserted as it is, whatever the format
    values = list(selection.values)
    if fmt == "regex":
        escaped = [escape_regex(v) for v in values]
    elif fmt is None:
        if not selection.multi and not selection.include_all:
            (value,) = values
            return prometheus_regular_escape(value)
        escaped = [prometheus_special_regex_escape(v) for v in values]
    else:
        raise ValueError(f"format {fmt} is not used by the dashboards")
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(expr: str, selections: Mapping[str, Selection], macros: Mapping[str, str]) -> str:
    """`expr` with every `$var`, `${var}` and `${var:format}` replaced as Grafana replaces them."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name in macros:
            return macros[name]
        if name not in selections:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return _formatted(selections[name], match.group(2))

    return REFERENCE.sub(replace, expr)
