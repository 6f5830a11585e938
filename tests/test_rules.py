"""Checks dashboards/scene7.rules.yml with promtool and against the project's conventions.

promtool validates the rules and runs their unit tests (dashboards/scene7.rules.test.yml); the
Python checks hold what promtool does not: naming, labels, annotations, runbook anchors that
exist in the documentation, metric names the exporter exports, and a firing and a quiet unit
test for every alert.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_dashboards import KNOWN_METRICS, parse

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "dashboards" / "scene7.rules.yml"
RULE_TESTS = ROOT / "dashboards" / "scene7.rules.test.yml"
RUNBOOK_BASE = "https://github.com/scene7-exporter/scene7-exporter/blob/main/README.md#"
REQUIRED_ALERTS = {
    "Scene7ExporterDown",
    "Scene7PollsFailing",
    "Scene7AuthenticationFailing",
    "Scene7TaskStuck",
    "Scene7TaskFailed",
    "Scene7JobRunningTooLong",
    "Scene7PendingBacklogGrowing",
    "Scene7TaskFailureRateHigh",
    "Scene7JobFatalError",
    "Scene7JobFinishedWithErrors",
    "Scene7JobLogsFailing",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (it provides promtool)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RULES.parent,
    )


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alerts()]


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_load_the_rules_file() -> None:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert data["rule_files"] == [RULES.name]


def test_required_alerts_exist_once() -> None:
    names = alert_names()
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS


@pytest.mark.parametrize("name", alert_names())
def test_alert_conventions(name: str) -> None:
    rule = next(r for r in alerts() if r["alert"] == name)
    assert re.fullmatch(r"Scene7[A-Z][A-Za-z0-9]+", name)
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()


@pytest.mark.parametrize("name", alert_names())
def test_alert_annotations_name_the_labels_they_are_about(name: str) -> None:
    rule = next(r for r in alerts() if r["alert"] == name)
    text = rule["annotations"]["summary"] + rule["annotations"]["description"]
    metrics = {s.metric for s in parse(rule["expr"]).selectors}
    if metrics & {"scene7_up", "scene7_tasks_finished_total", "instance_company:scene7_task_items_pending:sum"}:
        assert "$labels.company" in text
    if metrics & {"scene7_task_state", "scene7_job_start_timestamp_seconds"}:
        assert "$labels.company" in text and "$labels.job_name" in text
    if "scene7_task_state" in metrics or "scene7_tasks_finished_total" in metrics:
        assert "$labels.task_type" in text


def test_summaries_read_the_same_for_every_alert_of_a_name() -> None:
    """Alertmanager groups alerts by name: a summary naming a company or job would differ from
    one alert of the group to the next (monitoring-mixins style guide); details go in the
    description."""
    for rule in alerts():
        summary = rule["annotations"]["summary"]
        assert "{{" not in summary and "$" not in summary, (rule["alert"], summary)
        assert summary.endswith(".") and (summary[0].isupper() or summary.startswith("scene7-exporter")), summary
        assert "{{" in rule["annotations"]["description"], rule["alert"]


DASHBOARD_URL = re.compile(r"http://localhost:3000/d/(?P<uid>[a-z0-9-]+)\?(?P<query>.+)")
URL_VARIABLE = re.compile(r"var-(\w+)=(?:\{\{ \$labels\.(\w+) \| urlquery \}\}|\{\{ \. \| urlquery \}\})")


@pytest.mark.parametrize("name", alert_names())
def test_every_alert_links_its_dashboard_with_the_variables_of_its_labels(name: str) -> None:
    from test_dashboards import DRILLDOWN, OVERVIEW, load, variables

    rule = next(r for r in alerts() if r["alert"] == name)
    match = DASHBOARD_URL.fullmatch(rule["annotations"]["dashboard_url"])
    assert match, rule["annotations"]["dashboard_url"]
    boards = {load(board)["uid"]: load(board) for board in (OVERVIEW, DRILLDOWN)}
    assert match["uid"] in boards
    filled = URL_VARIABLE.findall(match["query"])
    assert filled and len(filled) == match["query"].count("var-")
    names = [variable for variable, _ in filled]
    assert names[:1] == ["job"] and "instance" in names, names
    assert set(names) <= set(variables(boards[match["uid"]])), names
    for variable, label in filled:
        assert label in ("", variable), (variable, label)  # var-x takes the label x
    if "$labels.job_name" in rule["annotations"]["description"] and name != "Scene7JobFinishedWithErrors":
        assert match["uid"] == "scene7-job" and "job_name" in names, name


def test_every_aggregation_and_match_keeps_the_cluster_label() -> None:
    """`by` and `on` list `cluster` first, so one set of rules serves several clusters (the
    mixin's `_config.clusterLabel` renames it)."""
    clauses = 0
    for rule in load_rules():
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            clauses += 1
            assert clause.startswith("cluster, job, instance"), (rule.get("alert") or rule["record"], clause)
    assert clauses >= 15


def test_recording_rules_are_named_level_metric_operations() -> None:
    recorded = [rule["record"] for rule in load_rules() if "record" in rule]
    assert "company_job_task:scene7_task_eta_seconds:deriv30m" in recorded
    for name in recorded:
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level) and re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", operations)
        assert metric.startswith("scene7_"), name
    tested = {
        case["expr"]
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert {
        "company_job_task:scene7_task_items_processed:deriv30m",
        "company_job_task:scene7_task_eta_seconds:deriv30m",
    } <= tested


def test_a_target_down_is_a_warning_and_credentials_rejected_are_critical() -> None:
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    assert severity["Scene7ExporterDown"] == "warning"  # as kube-prometheus' TargetDown
    assert severity["Scene7AuthenticationFailing"] == "critical"  # each retry risks a lockout
    assert [name for name, level in severity.items() if level == "critical"] == ["Scene7AuthenticationFailing"]


def test_rules_use_only_exported_or_recorded_metrics() -> None:
    recorded = {rule["record"] for rule in load_rules() if "record" in rule}
    for rule in load_rules():
        for selector in parse(rule["expr"]).selectors:
            assert selector.metric in KNOWN_METRICS | recorded, (rule, selector.metric)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in data["tests"]:
        for case in test.get("alert_rule_test", []):
            expected = case.get("exp_alerts") or []
            (firing if expected else quiet).add(case["alertname"])
            for alert in expected:
                # rendered annotations are compared, so the templates are tested too
                assert set(alert["exp_annotations"]) >= {"summary", "description", "runbook_url"}
    assert firing == set(alert_names())
    assert quiet == set(alert_names())


def test_unit_tests_cover_no_active_jobs_and_exporter_restarts() -> None:
    names = [t["name"] for t in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]]
    assert any("no active jobs" in n for n in names)
    assert sum("exporter restart" in n for n in names) >= 4


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_document() -> Path:
    """README.md once its Runbook section exists, else dashboards/RUNBOOK.md (its draft)."""
    readme = ROOT / "README.md"
    if readme.exists() and re.search(r"^## Runbook\s*$", readme.read_text("utf-8"), re.M):
        return readme
    return ROOT / "dashboards" / "RUNBOOK.md"


def test_github_anchor() -> None:
    assert github_anchor("Scene7ExporterDown") == "scene7exporterdown"
    assert github_anchor("Poll errors: by reason") == "poll-errors-by-reason"


def test_every_runbook_anchor_is_a_heading() -> None:
    document = runbook_document()
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", document.read_text("utf-8"), re.M)
    anchors = {github_anchor(h) for h in headings}
    for rule in alerts():
        anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE)
        assert anchor in anchors, f"{document.name} has no heading for #{anchor}"


def test_runbook_documents_the_default_thresholds() -> None:
    text = runbook_document().read_text("utf-8")
    for threshold in ("30 minutes", "6 hours", "1000", "10%", "10 tasks"):
        assert threshold in text, threshold
