"""Renders the jsonnet mixin (dashboards/mixin/mixin.libsonnet) as its users would, with gojsonnet.

The mixin reads the dashboards and the rules file and applies `_config` to them, so there is
one source: rendered with its defaults it must equal the files exactly; rendered with another
config, every selector, label, link and threshold it names must change, and nothing else break
(promtool checks the rules, the dashboards still pass their own tests' structure).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import _gojsonnet
import yaml
from test_dashboards import DASHBOARD_DIR, DRILLDOWN, OVERVIEW, RULES, load, parse, targets
from test_rules import promtool

MIXIN = DASHBOARD_DIR / "mixin" / "mixin.libsonnet"
RENDER = """
local mixin = (import '{path}') + {{ _config+:: {config} }};
{{ alerts: mixin.prometheusAlerts, rules: mixin.prometheusRules, dashboards: mixin.grafanaDashboards }}
"""
CUSTOM = {
    "selector": 'job="s7-exporter"',
    "clusterLabel": "k8s_cluster",
    "grafanaUrl": "https://grafana.example.net",
    "runbookUrl": "https://wiki.example.net/scene7#",
    "stuckTaskMinutes": 45,
    "jobRunningTooLongHours": 12,
    "pendingBacklogItems": 5000,
    "filesInErrorPerJob": 3,
}


def render(config: dict[str, Any] | None = None) -> dict[str, Any]:
    snippet = RENDER.format(path=MIXIN, config=json.dumps(config or {}))
    result: dict[str, Any] = json.loads(_gojsonnet.evaluate_snippet("render.jsonnet", snippet))
    return result


def rules_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return data


def rules_by_name(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule.get("alert") or rule["record"]: rule for group in groups for rule in group["rules"]}


def test_rendered_with_its_defaults_it_is_the_files() -> None:
    rendered = render()
    assert rendered["dashboards"] == {OVERVIEW: load(OVERVIEW), DRILLDOWN: load(DRILLDOWN)}
    groups = rules_file()["groups"]
    alerts = [{"name": g["name"], "rules": [r for r in g["rules"] if "alert" in r]} for g in groups]
    records = [{"name": g["name"] + ".rules", "rules": [r for r in g["rules"] if "record" in r]} for g in groups]
    assert rendered["alerts"]["groups"] == [g for g in alerts if g["rules"]]
    assert rendered["rules"]["groups"] == [g for g in records if g["rules"]]
    # every rule of the file, once
    assert rules_by_name(rendered["alerts"]["groups"] + rendered["rules"]["groups"]) == rules_by_name(groups)


def test_another_config_changes_what_it_names_and_promtool_accepts_it(tmp_path: Path) -> None:
    rendered = render(CUSTOM)
    groups = rendered["rules"]["groups"] + rendered["alerts"]["groups"]
    text = "\n".join(
        str(value)
        for rule in rules_by_name(groups).values()
        for value in (rule["expr"], *rule.get("annotations", {}).values())
    )
    assert "(cluster, " not in text and "(k8s_cluster, job, instance" in text
    assert "$labels.cluster" not in text and "var-cluster={{ . | urlquery }}" in text
    assert "{{ with $labels.k8s_cluster }}" in text and "{k8s_cluster=%q, job=%q" in text
    assert 'job="scene7-exporter"' not in text and 'up{job="s7-exporter"}' in text
    rules = rules_by_name(groups)
    for name, rule in rules.items():
        if "alert" in rule:
            assert rule["annotations"]["runbook_url"] == CUSTOM["runbookUrl"] + name.lower()
            assert rule["annotations"]["dashboard_url"].startswith(CUSTOM["grafanaUrl"] + "/d/scene7-")
    assert "_timestamp_seconds > 2700" in rules["Scene7TaskStuck"]["expr"]
    assert "(threshold 45m)" in rules["Scene7TaskStuck"]["annotations"]["description"]
    assert "> 12 * 3600" in rules["Scene7JobRunningTooLong"]["expr"]
    assert "(threshold 12h)" in rules["Scene7JobRunningTooLong"]["annotations"]["description"]
    assert ":sum > 5000" in rules["Scene7PendingBacklogGrowing"]["expr"]
    assert '{result="error"}) >= 3)' in rules["Scene7JobFinishedWithErrors"]["expr"]
    path = tmp_path / "mixin.rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # the files' own thresholds are the defaults of the config
    default = rules_by_name(render()["alerts"]["groups"])
    assert "_timestamp_seconds > 1800" in default["Scene7TaskStuck"]["expr"]


def test_another_config_reaches_every_dashboard_query() -> None:
    for name, board in render(CUSTOM)["dashboards"].items():
        cluster = next(v for v in board["templating"]["list"] if v["name"] == "cluster")
        assert cluster["query"] == "label_values(scene7_up, k8s_cluster)"
        for panel, target in targets(board):
            for selector in parse(target["expr"]).selectors:
                assert ("k8s_cluster", "=~", "$cluster") in selector.matchers, (name, panel["title"])
            assert "> 1800" not in target["expr"], (name, panel["title"])
        text = json.dumps(board)
        assert '"value": 1800' not in text and "for 30 minutes" not in text
        assert '"value": 21600' not in text and "after 6 hours" not in text
    overview = render(CUSTOM)["dashboards"][OVERVIEW]
    stuck = next(p for p in overview["panels"] if p["title"] == "Stuck tasks")
    assert "> 2700" in stuck["targets"][0]["expr"] and "for 45 minutes" in stuck["description"]
    longest = next(p for p in overview["panels"] if p["title"] == "Longest-running job")
    assert "after 12 hours" in longest["description"]
    assert longest["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 12 * 3600
