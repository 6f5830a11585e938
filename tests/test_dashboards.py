"""Checks the Grafana dashboards in dashboards/ without a Grafana server.

No registry reachable here ships Grafana, so the JSON is checked statically (variables, data
source, units, ids, layout), every PromQL selector is checked against the metric contract of
`exporter.metrics`, and every query is run by promtool against synthetic series of every
exported metric, so a query that cannot return data (wrong label, broken join) fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana import REFERENCE, Selection, interpolate

from exporter.joblogs import FILE_RESULTS
from exporter.metrics import BY_NAME, ERROR_REASONS, FAMILIES, ITEM_STATES, JOB_STATES, METRIC_NAMES, TASK_STATES
from exporter.snapshot import FINAL_STATES

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
OVERVIEW = "scene7-overview.json"
DRILLDOWN = "scene7-job.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Prometheus adds job and instance to every scraped series, and multi-cluster setups a cluster
# label; `up` is its own per-target series.
TARGET_LABELS = frozenset({"job", "instance", "cluster"})
RULES = ROOT / "dashboards" / "scene7.rules.yml"
RECORDED = {
    rule["record"]: rule
    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    for rule in group["rules"]
    if "record" in rule
}
KNOWN_METRICS = METRIC_NAMES | {"up"} | set(RECORDED)
# The per-task labels the ETA recording rules keep (their `without (item_state)`).
RECORDED_LABELS = {
    "company_job_task:scene7_task_items_processed:deriv30m": BY_NAME["scene7_task_progress_ratio"].labels,
    "company_job_task:scene7_task_eta_seconds:deriv30m": BY_NAME["scene7_task_progress_ratio"].labels,
    "instance_company:scene7_task_items_pending:sum": ("company",),
}
PANEL_TYPES = {"stat", "timeseries", "bargauge", "state-timeline", "table"}
FILTER_VARIABLES = ("job", "instance", "company", "job_type", "task_type")


# --- a small PromQL tokenizer: enough to find selectors, ranges and label lists ---------------

TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]+\}|\$\w+)
    | (?P<number>(?:\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@])
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # label, op, value
    range: str | None = None


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: list[str] = field(default_factory=list)  # by/on/... label lists


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]  # a raw string: no escapes
    return token[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def parse(expr: str) -> Query:
    """Selectors (metric, matchers, range) and grouping label lists of a PromQL expression."""
    tokens = tokenize(expr)
    query = Query()
    i = 0

    def following(j: int) -> str | None:
        return tokens[j][1] if j < len(tokens) else None

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "op" and text == "{":
            raise AssertionError(f"selector without a metric name in {expr!r}")
        if kind == "op" and text == "[":
            raise AssertionError(f"subquery or range without a selector in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        if text in LABEL_LIST_KEYWORDS and following(i + 1) == "(":
            i += 2
            while tokens[i][1] != ")":
                if tokens[i][0] == "ident":
                    query.grouping_labels.append(tokens[i][1])
                i += 1
            i += 1
            continue
        if text in KEYWORDS or text in AGGREGATIONS or following(i + 1) == "(":
            i += 1  # keyword, aggregation or function call
            continue
        selector = Selector(text)
        i += 1
        if following(i) == "{":
            i += 1
            while tokens[i][1] != "}":
                if tokens[i][1] == ",":
                    i += 1
                    continue
                label, op, value = tokens[i : i + 3]
                assert label[0] == "ident" and value[0] == "string", f"bad matcher in {expr!r}"
                selector.matchers.append((label[1], op[1], unquote(value[1])))
                i += 3
            i += 1
        if following(i) == "[":
            end = next(j for j in range(i, len(tokens)) if tokens[j][1] == "]")
            selector.range = "".join(t for _, t in tokens[i + 1 : end])
            i = end + 1
        query.selectors.append(selector)
    return query


def labels_of(metric: str) -> set[str]:
    own = () if metric == "up" else RECORDED_LABELS[metric] if metric in RECORDED else BY_NAME[metric].labels
    return set(own) | TARGET_LABELS


def variables_used(value: str) -> set[str]:
    return {m.group(1) or m.group(3) for m in REFERENCE.finditer(value)}


# An IPS-made label value (a company name may hold `"`, `\\` or regex characters): the variable
# regex-escaped by Grafana (`:regex`) inside a raw string, which no value but a backtick breaks.
def ips_label_matcher(label: str) -> tuple[str, str, str]:
    return (label, "=~", f"${{{label}:regex}}")


def test_parser_finds_selectors_and_skips_functions() -> None:
    query = parse(
        'sum by (company) (rate(scene7_polls_total{job=~"$job", company="a,b"}[$__rate_interval]))'
        " / on (company) group_left () max without (x) (time() - scene7_up offset 5m) > bool 1e3"
    )
    assert [s.metric for s in query.selectors] == ["scene7_polls_total", "scene7_up"]
    assert query.selectors[0].matchers == [("job", "=~", "$job"), ("company", "=", "a,b")]
    assert query.selectors[0].range == "$__rate_interval"
    assert query.grouping_labels == ["company", "company", "x"]
    with pytest.raises(AssertionError):
        parse('{__name__="scene7_up"}')


# --- loading --------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARD_DIR / name).read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows, which only lay panels out and query nothing."""
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            yield panel, target


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$", re.DOTALL)


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert isinstance(text, str)
    return text


@pytest.fixture(params=[OVERVIEW, DRILLDOWN])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


# --- structure --------------------------------------------------------------------------------


def test_dashboard_files_are_exactly_the_two_expected() -> None:
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted([OVERVIEW, DRILLDOWN])


def test_classic_dashboard_fields(dashboard: dict[str, Any]) -> None:
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert dashboard["id"] is None
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("Scene7 / ")
    assert dashboard["description"]
    assert "scene7" in dashboard["tags"]


def test_uids_and_titles_are_distinct() -> None:
    overview, drilldown = load(OVERVIEW), load(DRILLDOWN)
    assert overview["uid"] == "scene7-overview" and drilldown["uid"] == "scene7-job"
    assert overview["title"] != drilldown["title"]


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in all_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_has_title_description_unit_and_known_type(
    dashboard: dict[str, Any],
) -> None:
    for panel in all_panels(dashboard):
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel.get("description"), panel["title"]
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert isinstance(unit, str) and unit, panel["title"]
        assert panel["targets"], panel["title"]


def test_overview_has_the_required_visualisations() -> None:
    kinds = {p["type"] for p in data_panels(load(OVERVIEW))}
    assert kinds == PANEL_TYPES


def test_ratio_panels_use_percentunit_and_timestamp_ages_use_seconds(
    dashboard: dict[str, Any],
) -> None:
    for panel, target in targets(dashboard):
        expr = target["expr"]
        unit = panel["fieldConfig"]["defaults"]["unit"]
        if panel["type"] == "table":
            continue  # per-column units, checked below
        if "scene7_task_progress_ratio" in expr and "count" not in expr:
            assert unit == "percentunit", panel["title"]
        shown = expr.split(BOUNDED_BY_JOB_AGE)[0]  # a bound by job age is not what is shown
        if "_timestamp_seconds" in shown and not expr.startswith("count("):
            assert "time() -" in expr and unit == "s", panel["title"]


BOUNDED_BY_JOB_AGE = "\nand on (company, job_name)\n"  # then topk or bottomk of the jobs' ages


def test_running_jobs_table_columns_have_units() -> None:
    table = next(p for p in data_panels(load(OVERVIEW)) if p["title"].startswith("Running jobs"))
    units = {}
    for override in table["fieldConfig"]["overrides"]:
        props = {p["id"]: p["value"] for p in override["properties"]}
        units[props["displayName"]] = props.get("unit")
    assert units["Progress"] == "percentunit"
    assert units["Job age"] == "s"
    assert units["Since last progress"] == "s"
    refs = {t["refId"] for t in table["targets"]}
    assert {f"Value #{r}" for r in refs} <= {o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]}


# --- data source and variables ------------------------------------------------------------------


def test_datasource_variable(dashboard: dict[str, Any]) -> None:
    ds = variables(dashboard)["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    assert dashboard["templating"]["list"][0] is ds  # others depend on it


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in data_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_filter_variables_are_label_values_queries(dashboard: dict[str, Any]) -> None:
    found = variables(dashboard)
    for name in FILTER_VARIABLES:
        var = found[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        match = LABEL_VALUES.match(variable_query(var))
        assert match is not None, name
        assert match["label"] == name
        assert var["refresh"] in (1, 2)


def test_variables_are_chained_and_use_known_labels(dashboard: dict[str, Any]) -> None:
    order = list(variables(dashboard))
    for name, var in variables(dashboard).items():
        if var["type"] != "query":
            continue
        assert "definition" not in var, name  # Grafana writes it itself
        match = LABEL_VALUES.match(variable_query(var))
        assert match is not None, name
        (selector,) = parse(match["selector"]).selectors
        assert selector.metric in KNOWN_METRICS, name
        assert match["label"] in labels_of(selector.metric), name
        used = set().union(*(variables_used(value) for _, _, value in selector.matchers))
        for label, _, _ in selector.matchers:
            assert label in labels_of(selector.metric), (name, label)
        assert all(order.index(u) < order.index(name) for u in used), name
        if name != "cluster":
            assert ("cluster", "=~", "$cluster") in selector.matchers, name
        if name not in ("cluster", "job"):
            assert ("job", "=~", "$job") in selector.matchers, name
        if name not in ("cluster", "job", "instance"):
            assert ("instance", "=~", "$instance") in selector.matchers, name
        for label in ("company", "job_type", "task_type", "job_name"):
            if label in used:
                assert ips_label_matcher(label) in selector.matchers, (name, label)


def test_overview_filters_are_multi_value() -> None:
    found = variables(load(OVERVIEW))
    for name in FILTER_VARIABLES:
        assert found[name]["multi"] and found[name]["includeAll"], name


def test_drilldown_picks_one_company_and_one_job() -> None:
    found = variables(load(DRILLDOWN))
    for name in ("company", "job_name"):
        assert not found[name]["multi"] and not found[name]["includeAll"], name
    match = LABEL_VALUES.match(variable_query(found["job_name"]))
    assert match is not None
    assert parse(match["selector"]).selectors[0].metric == "scene7_job_info"
    for _, target in targets(load(DRILLDOWN)):
        for selector in parse(target["expr"]).selectors:
            if "job_name" in labels_of(selector.metric):
                assert ips_label_matcher("job_name") in selector.matchers, target["expr"]
            assert ips_label_matcher("company") in selector.matchers, target["expr"]


def test_overview_links_jobs_to_the_drilldown() -> None:
    for table in data_panels(load(OVERVIEW)):
        if table["title"].startswith(("Running jobs", "Tasks that need attention")):
            check_drilldown_link(table)


def check_drilldown_link(table: dict[str, Any]) -> None:
    urls = [
        link["url"]
        for override in table["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert len(urls) == 1
    assert urls[0].startswith(f"/d/{load(DRILLDOWN)['uid']}/")
    # values from the data are percent-encoded: a company name may hold `&` or `#`
    assert "var-company=${__data.fields.company:percentencode}" in urls[0]
    assert "var-job_name=${__value.raw:percentencode}" in urls[0]
    drill_vars = variables(load(DRILLDOWN))
    for var in re.findall(r"var-(\w+)=", urls[0]):
        assert var in drill_vars


# --- queries --------------------------------------------------------------------------------------


def test_every_query_uses_exported_metrics_and_filters_job_and_instance(
    dashboard: dict[str, Any],
) -> None:
    for panel, target in targets(dashboard):
        query = parse(target["expr"])
        assert query.selectors, panel["title"]
        for selector in query.selectors:
            where = f"{panel['title']}: {selector.metric}"
            assert selector.metric in KNOWN_METRICS, where
            assert ("cluster", "=~", "$cluster") in selector.matchers, where
            assert ("job", "=~", "$job") in selector.matchers, where
            assert ("instance", "=~", "$instance") in selector.matchers, where
            for label, _, value in selector.matchers:
                assert label in labels_of(selector.metric), f"{where}: {label}"
                if variables_used(value) & {"company", "job_type", "task_type", "job_name"}:
                    assert (label, "=~", value) == ips_label_matcher(label), f"{where}: {label} {value}"
            if selector.range is not None:
                assert selector.range in ranges_allowed(target, panel), where
        known = set().union(*(labels_of(m) for m in KNOWN_METRICS))
        assert set(query.grouping_labels) <= known, panel["title"]


def ranges_allowed(target: dict[str, Any], panel: dict[str, Any] | None = None) -> set[str]:
    """Graphs read counters over $__rate_interval; an instant query may total the dashboard's range."""
    return {"$__rate_interval", "$__range"} if target.get("instant") else {"$__rate_interval"}


# An exact count over a window (the step of bars, or the time range of a stat): the counter now
# minus the counter then, from 0 for a series new in the window if the exporter was scraped then.
COUNTED_SINCE = re.compile(
    r"clamp_min\(\s*(?P<counter>(?P<metric>\w+_total)\{[^\n]*\})\s*-\s*\(\s*"
    r"(?P=counter) offset (?P<window>\$__interval|\$__range)\s*or\s*(?P=counter) \* 0\s*"
    r"and on \(cluster, job, instance, company\) scene7_up\{[^\n]*\} offset (?P=window)\s*\),\s*0\s*\)"
)


def counted_since(panel: dict[str, Any], target: dict[str, Any]) -> set[str]:
    """The counters `target` reads as exact counts: per step only in bars with a min interval,
    over the range only in an instant query."""
    found = set()
    for match in COUNTED_SINCE.finditer(target["expr"]):
        if match["window"] == "$__range":
            assert target.get("instant"), panel["title"]
        else:
            assert panel["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars", panel["title"]
            assert re.fullmatch(r"\d+m", panel["interval"]), panel["title"]  # 4 scrapes of 15 s at least
        found.add(match["metric"])
    return found


def test_rate_and_increase_use_rate_interval(dashboard: dict[str, Any]) -> None:
    for panel, target in targets(dashboard):
        expr = target["expr"]
        calls = re.findall(r"\b(?:rate|increase|irate|delta|deriv|\w+_over_time)\s*\(", expr)
        ranges = re.findall(r"\[([^\]]*)\]", expr)
        assert len(ranges) == len(calls), panel["title"]
        assert all(r in ranges_allowed(target, panel) for r in ranges), panel["title"]
        assert "irate(" not in expr, panel["title"]


def test_up_is_read_only_for_scene7_exporters() -> None:
    """With the job variable's "All" (.+), `up` alone would list every target of Prometheus."""
    ups = [(p, t) for p, t in targets(load(OVERVIEW)) if any(s.metric == "up" for s in parse(t["expr"]).selectors)]
    assert ups
    for panel, target in ups:
        assert "and on (cluster, job, instance)" in target["expr"], panel["title"]
        assert "scene7_exporter_build_info" in target["expr"], panel["title"]


def test_counters_are_only_read_through_rate_or_increase(dashboard: dict[str, Any]) -> None:
    for panel, target in targets(dashboard):
        exact = counted_since(panel, target)
        for selector in parse(target["expr"]).selectors:
            if selector.metric.endswith("_total") and selector.metric not in exact:
                assert selector.range is not None, f"{panel['title']}: {selector.metric}"


def test_failures_are_counted_exactly_per_step_and_over_the_range() -> None:
    board = load(OVERVIEW)
    read = {panel["title"]: counted_since(panel, target) for panel, target in targets(board)}
    assert read["Failed tasks over time"] == read["Failed tasks"] == {"scene7_tasks_finished_total"}
    assert read["Jobs finished with errors"] == {"scene7_jobs_finished_total"}


# --- every query returns data from promtool, on synthetic series of every metric -----------

VALUES = {
    "job": "scene7-exporter",
    "instance": "exporter:10373",
    "company": "acme",
    "job_name": "upload-1",
    "job_type": "UploadFromServerDirectory",
    "task_type": "com.scene7.upload.UploadAsyncTaskMonitor",
    "original_name": "upload",
    "server_name": "ips-1",
    "version": "0.1.0",
    "python_version": "3.11.2",
    "log_type": "BeginUpload",
    "outcome": "errors",  # one per job, as the exporter has it: the finished-jobs table joins on it
}
# Two jobs of one type, so a join on too few labels matches many-to-many and fails.
ENUMS: dict[str, tuple[str, ...]] = {
    "job_name": (VALUES["job_name"], "upload-2"),
    "item_state": ITEM_STATES,
    "final_state": FINAL_STATES,
    "reason": ERROR_REASONS,
    "result": FILE_RESULTS,
}
# one-hot state gauges: which state is current
CURRENT = {"scene7_task_state": "Processing", "scene7_job_state": "Running"}


def synthetic_series() -> list[dict[str, str]]:
    series = [{"series": f'up{{job="{VALUES["job"]}", instance="{VALUES["instance"]}"}}', "values": "1x30"}]
    for spec in FAMILIES:
        metric, kind, labels = spec.name, spec.kind, spec.labels
        enums = dict(ENUMS)
        enums["state"] = JOB_STATES if metric == "scene7_job_state" else TASK_STATES
        combos: list[dict[str, str]] = [{}]
        for label in labels:
            options = enums.get(label, (VALUES.get(label, ""),))
            combos = [{**c, label: o} for c in combos for o in options]
        for combo in combos:
            text = ", ".join(
                f'{k}="{v}"' for k, v in {"job": VALUES["job"], "instance": VALUES["instance"], **combo}.items()
            )
            if kind == "counter":
                values = "0+1x30"
            elif metric in CURRENT:
                values = "1x30" if combo["state"] == CURRENT[metric] else "0x30"
            elif metric.endswith("_timestamp_seconds"):
                values = "60x30"
            elif metric == "scene7_task_items" and combo["item_state"] == "processed":
                values = "0+1x30"  # progress, for the ETA recording rules
            elif metric == "scene7_task_progress_ratio":
                values = "0.5x30"
            else:
                values = "1x30"
            series.append({"series": f"{metric}{{{text}}}", "values": values})
    return series


MACROS = {"__rate_interval": "5m", "__range": "30m", "__interval": "5m"}


def substitute(expr: str, board: dict[str, Any]) -> str:
    """As Grafana would send it: one value picked for each variable ("All" for the hidden
    cluster variable, as there is no cluster label here)."""
    selections = {
        name: Selection.of(var, [], all_selected=True) if name == "cluster" else Selection.of(var, [VALUES[name]])
        for name, var in variables(board).items()
        if var["type"] == "query"
    }
    return interpolate(expr, selections, MACROS)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (it provides promtool)")
    return path


def test_every_query_and_variable_returns_data(tmp_path: Path) -> None:
    cases: list[tuple[str, str]] = []
    for name in (OVERVIEW, DRILLDOWN):
        board = load(name)
        for panel, target in targets(board):
            cases.append((f"{name}: {panel['title']} {target['refId']}", substitute(target["expr"], board)))
        for var in variables(board).values():
            if var["type"] == "query" and var["name"] != "cluster":  # no cluster label here
                match = LABEL_VALUES.match(variable_query(var))
                assert match is not None
                cases.append((f"{name}: variable {var['name']}", substitute(match["selector"], board)))
    test_file = {
        "rule_files": [str(RULES)],  # the ETA series come from its recording rules
        "tests": [
            {
                "interval": "1m",
                "input_series": synthetic_series(),
                "promql_expr_test": [
                    {
                        "expr": f"count({expr}) > bool 0",
                        "eval_time": "30m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for _, expr in cases
                ],
            }
        ],
    }
    path = tmp_path / "queries.test.yml"
    path.write_text(yaml.safe_dump(test_file, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, "\n".join([result.stdout, result.stderr, "queries:", *(f"  {c}" for c, _ in cases)])
    assert len(cases) > 30


# --- provisioning -----------------------------------------------------------------------------


def test_provisioning_files() -> None:
    provisioning = DASHBOARD_DIR / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources.yaml").read_text(encoding="utf-8"))
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((provisioning / "dashboards.yaml").read_text(encoding="utf-8"))
    assert boards["apiVersion"] == 1
    (provider,) = boards["providers"]
    assert provider["type"] == "file" and provider["folder"]
    assert provider["options"]["path"].startswith("/")


def test_failures_per_step_add_up_to_the_failures_of_the_range(tmp_path: Path) -> None:
    """The bars of "Failed tasks over time" and the "Failed tasks" stat, run by promtool on a
    counter created at its first failure (2m) that counts three failures by 7m: one bar per
    failure, none lost between steps, the stat 3; and nothing counted from before the exporter
    was first scraped (a fresh Prometheus must not count a counter's whole past)."""
    board = load(OVERVIEW)
    exprs = {panel["title"]: target["expr"] for panel, target in targets(board)}
    labels = 'job="scene7-exporter", instance="exporter:10373", company="acme"'
    counter = f'scene7_tasks_finished_total{{{labels}, task_type="upload", final_state="Failed"}}'

    def run(expr: str, window: str) -> str:
        macros = {"__interval": window, "__range": window, "__rate_interval": window}
        selections = {
            name: Selection.of(var, [], all_selected=True)
            for name, var in variables(board).items()
            if var["type"] == "query"
        }
        return interpolate(expr, selections, macros)

    bars = run(exprs["Failed tasks over time"], "2m")
    total = run(exprs["Failed tasks"], "8m")
    before_any_scrape = run(exprs["Failed tasks"], "9m")  # the range starts before the first scrape
    test_file = {
        "rule_files": [],
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"scene7_up{{{labels}}}", "values": "_ 1x9"},
                    {"series": counter, "values": "_ _ 1 1 1 2 2 3 3 3"},
                ],
                "promql_expr_test": [
                    *(
                        {"expr": f"sum({bars})", "eval_time": f"{t}m",
                         "exp_samples": [{"labels": "{}", "value": value}] if value is not None else []}
                        for t, value in ((2, None), (4, 0), (6, 1), (8, 1))
                    ),
                    {"expr": f"sum({bars})", "eval_time": "3m", "exp_samples": [{"labels": "{}", "value": 1}]},
                    {"expr": total, "eval_time": "9m", "exp_samples": [{"labels": "{}", "value": 3}]},
                    {"expr": before_any_scrape, "eval_time": "9m", "exp_samples": [{"labels": "{}", "value": 0}]},
                ],
            }
        ],
    }
    path = tmp_path / "failures.test.yml"
    path.write_text(yaml.safe_dump(test_file, sort_keys=False), encoding="utf-8")
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
