"""grafana/dashboard-linter's rules, and the conventions of the monitoring mixins, as tests.

dashboard-linter is a Go program and no Go toolchain is reachable here, so its rules that apply
to these dashboards are written again below, one test per rule under the rule's own name, with
the conditions of its source (lint/rule_*.go): what it accepts passes here, what it flags fails.
The last tests hold conventions the linter has no rule for: provisioned dashboards not editable,
UTC, a hidden cluster variable, alert annotations, and per-job panels bounded with topk.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_dashboards import (
    DRILLDOWN,
    OVERVIEW,
    all_panels,
    counted_since,
    data_panels,
    load,
    parse,
    targets,
    variable_query,
    variables,
)

# panel-units-rule's list, for the units these dashboards use (the linter accepts many more)
VALID_UNITS = {"none", "short", "s", "percentunit", "dateTimeAsIso", "dateTimeFromNow", "bytes", "ops", "cpm", "opm"}
# rule_panel_*.go: the panel types each panel rule looks at; others (row, bargauge, ...) pass
TITLE_DESCRIPTION_UNITS_TARGETS_TYPES = {"stat", "singlestat", "graph", "table", "timeseries", "gauge"}
DATASOURCE_RULE_TYPES = {"singlestat", "graph", "table", "timeseries"}
PROMQL_PANEL_TYPES = {"singlestat", "gauge", "table", "stat", "state-timeline", "timeseries"}
LABEL_PROMQL = re.compile(r"([a-z_]+)\((.+)\)", re.DOTALL)


@pytest.fixture(params=[OVERVIEW, DRILLDOWN])
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


# --- dashboard rules ---------------------------------------------------------------------------


def test_template_datasource_rule(board: dict[str, Any]) -> None:
    sources = [v for v in board["templating"]["list"] if v["type"].lower() == "datasource"]
    assert len(sources) == 1
    (source,) = sources
    assert source["name"] == "datasource" and source["label"] == "Data source"
    assert source["query"] == "prometheus"


@pytest.mark.parametrize(("name", "label"), [("job", "Job"), ("instance", "Instance")])
def test_template_job_rule_and_template_instance_rule(board: dict[str, Any], name: str, label: str) -> None:
    variable = variables(board)[name]
    assert variable["datasource"]["uid"] in ("$datasource", "${datasource}")
    assert variable["type"] == "query"
    assert variable["label"] == label
    assert variable["multi"] is True
    assert variable["allValue"] == ".+"


def test_template_label_promql_rule(board: dict[str, Any]) -> None:
    for variable in variables(board).values():
        if variable["type"] != "query":
            continue
        match = LABEL_PROMQL.fullmatch(variable_query(variable))
        assert match, variable["name"]
        assert match[1] in ("label_names", "label_values", "metrics", "query_result"), variable["name"]


def test_template_on_time_change_reload_rule(board: dict[str, Any]) -> None:
    for variable in variables(board).values():
        if variable["type"] == "query":
            assert variable["refresh"] == 2, variable["name"]


def test_uneditable_dashboard_rule(board: dict[str, Any]) -> None:
    assert board["editable"] is False  # provisioned: a change in the UI would be lost


# --- panel rules -------------------------------------------------------------------------------


def test_panel_datasource_rule(board: dict[str, Any]) -> None:
    for panel in all_panels(board):
        if panel["type"] in DATASOURCE_RULE_TYPES:
            assert panel["datasource"]["uid"] in ("$datasource", "${datasource}"), panel["title"]


def test_panel_title_description_rule(board: dict[str, Any]) -> None:
    for panel in all_panels(board):
        if panel["type"] in TITLE_DESCRIPTION_UNITS_TARGETS_TYPES:
            assert panel["title"] and panel["description"], panel.get("title")


def test_panel_units_rule(board: dict[str, Any]) -> None:
    for panel in all_panels(board):
        if panel["type"] not in TITLE_DESCRIPTION_UNITS_TARGETS_TYPES:
            continue
        if panel["type"] == "stat" and panel["options"]["reduceOptions"].get("fields", "") != "":
            continue
        defaults, overrides = panel["fieldConfig"]["defaults"], panel["fieldConfig"]["overrides"]
        properties = [p for o in overrides for p in o["properties"]]
        if defaults.get("mappings") or any(p["id"] == "mappings" for p in properties):
            continue  # the linter skips panels with value mappings
        units = [p["value"] for p in properties if p["id"] == "unit"]
        unit = units[-1] if units else defaults.get("unit", "")
        assert unit in VALID_UNITS, (panel["title"], unit)


def test_panel_no_targets_rule(board: dict[str, Any]) -> None:
    for panel in all_panels(board):
        if panel["type"] in TITLE_DESCRIPTION_UNITS_TARGETS_TYPES:
            assert panel.get("targets"), panel["title"]


# --- target rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["job", "instance"])
def test_target_job_rule_and_target_instance_rule(board: dict[str, Any], label: str) -> None:
    """Every selector of every query has exactly `label=~"$label"`: not `=`, not `${label}`."""
    for panel, target in targets(board):
        for selector in parse(target["expr"]).selectors:
            assert (label, "=~", f"${label}") in selector.matchers, (panel["title"], selector.metric)


def test_target_promql_rule(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        if panel["type"] in PROMQL_PANEL_TYPES:
            assert target["expr"].strip(), panel["title"]
            parse(target["expr"])  # every selector and matcher well formed (promtool parses them too)


def test_target_rate_interval_rule(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        for function, window in re.findall(r"\b(i?rate)\s*\([^\[]*\[([^\]]+)\]", target["expr"]):
            assert window == "$__rate_interval", (panel["title"], function, window)


def test_target_counter_agg_rule(board: dict[str, Any]) -> None:
    """A counter only inside rate, irate or increase; the linter lets the exact difference of a
    counter and its offset pass (its selector, with matchers, does not end in _total), as here."""
    for panel, target in targets(board):
        exact = counted_since(panel, target)
        for selector in parse(target["expr"]).selectors:
            if selector.metric.endswith("_total") and selector.metric not in exact:
                assert selector.range is not None, (panel["title"], selector.metric)
        for counter in re.findall(r"(\w+_total)\{[^}]*\}\[", target["expr"]):
            call = target["expr"][: target["expr"].index(counter)]
            assert re.search(r"\b(rate|irate|increase)\(\s*$", call), (panel["title"], counter)


# --- conventions the linter has no rule for ----------------------------------------------------


def test_time_in_utc_and_refreshed(board: dict[str, Any]) -> None:
    assert board["timezone"] == "utc"
    assert board["refresh"] == "1m"


def test_a_hidden_cluster_variable_filters_every_query(board: dict[str, Any]) -> None:
    order = [v["name"] for v in board["templating"]["list"]]
    cluster = variables(board)["cluster"]
    assert order[:3] == ["datasource", "cluster", "job"]
    assert cluster["hide"] == 2 and cluster["includeAll"] and cluster["allValue"] == ".*"  # matches no label too
    assert variable_query(cluster) == "label_values(scene7_up, cluster)"
    for panel, target in targets(board):
        for selector in parse(target["expr"]).selectors:
            assert ("cluster", "=~", "$cluster") in selector.matchers, (panel["title"], selector.metric)


def test_alerts_are_annotations_on_the_graphs(board: dict[str, Any]) -> None:
    (alerts,) = [a for a in board["annotations"]["list"] if not a.get("builtIn")]
    assert alerts["enable"] is True and alerts["datasource"]["uid"] == "${datasource}"
    (selector,) = parse(alerts["target"]["expr"]).selectors
    assert selector.metric == "ALERTS"
    assert ("alertname", "=~", "Scene7.*") in selector.matchers and ("alertstate", "=", "firing") in selector.matchers
    assert ("job", "=~", "$job") in selector.matchers
    # alerts without a company (the exporter down) show on every company's graphs
    assert ("company", "=~", "|${company:regex}") in selector.matchers
    assert alerts["titleFormat"] == "{{alertname}}"


def test_per_job_panels_are_bounded(board: dict[str, Any]) -> None:
    """A query that returns a series per job or task is cut with topk or bottomk, so that
    10,000 active jobs draw at most a few dozen rows, bars or lanes."""
    for panel in data_panels(board):
        for target in panel["targets"]:
            grouped = re.findall(r"\bby \(([^)]*)\)", target["expr"])
            per_job = any("job_name" in labels.split(", ") for labels in grouped)
            one_number = re.match(r"(count|sum|max|min)\(", target["expr"]) is not None
            if board["uid"] == "scene7-job" or not per_job or one_number:
                continue  # the Job dashboard shows one job; a count of jobs is one number
            bounds = [int(n) for n in re.findall(r"\b(?:topk|bottomk)\((\d+),", target["expr"])]
            assert bounds and max(bounds) <= 50, (panel["title"], target["refId"])
