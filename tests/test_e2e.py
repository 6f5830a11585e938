"""End to end, with real processes: IPS simulator -> exporter -> Prometheus -> Alertmanager.

The unit tests check each part against fakes; this module checks that the parts fit: the real
Prometheus scrapes the exporter over TLS with basic auth (and fails with a wrong password), the
dashboards' queries return data from what it scraped, and the alerting rules, loaded by the
real Prometheus, deliver Scene7TaskStuck and Scene7TaskFailed to the real Alertmanager.

One stack serves every test of the module (starting it is most of the cost). The simulator
runs its world faster (`TIME_SCALE`) so that tasks fail within seconds, and the copy of the
rules loaded here has every `for:` set to 0s; the real rules file is not touched.
Run alone with `tests/run -m e2e -s` to see the timings.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml
from grafana import Selection, interpolate
from servers import alertmanager, prometheus, simulator
from support import Process, exporter_command, free_port, http_ok, running, wait_until, write_self_signed_certificate
from test_dashboards import DRILLDOWN, LABEL_VALUES, OVERVIEW, data_panels, load, targets, variable_query, variables

from exporter.metrics import TASK_STATES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "dashboards" / "scene7.rules.yml"
SCRAPE_JOB = "scene7-exporter"  # the name the rules expect
WRONG_PASSWORD_JOB = "scene7-wrong-password"
FLAPPING_JOB = "scene7-flapping"  # a second exporter whose polls of one company mostly fail
QUOTED_COMPANY = 'Bits & "Bytes" <EU>'  # a simulator company: every selector must survive its name
SCRAPE_USER = "prometheus"
# 120 x faster: the simulator's keeper jobs then fail a task every ~15 s per company (seed 1).
TIME_SCALE = 120.0
SIM_JOBS = 30
SIM_SEED = 1
RUNBOOK = "https://github.com/scene7-exporter/scene7-exporter/blob/main/README.md#"
STALE_AGE = 45 * 60  # the simulator keeps a Processing task of every company frozen longer than this
# Grafana's values for its built-in variables: $__rate_interval is at least 4 scrape intervals
# of the data source (15s by default); $__interval is at least the panel's min interval (1m for
# the one panel using it); the dashboards' default time range is 6h.
GRAFANA_MACROS = {"__rate_interval": "1m", "__interval": "1m", "__range": "6h", "__range_s": "21600"}
# Panels that cannot return data in a run of a minute, (dashboard, panel title, refId) -> why.
# Every query listed must really return nothing, so the list cannot go stale.
EXPECTED_EMPTY: dict[tuple[str, str, str], str] = {}
# The job dashboard's panels of a finished job: empty for the active job it is opened on, and
# checked on a finished job instead.
FINISHED_JOB_PANELS = ("Finished job outcome", "Finished job ended", "Finished job duration", "Finished job files")
for _title in FINISHED_JOB_PANELS:
    EXPECTED_EMPTY[(DRILLDOWN, _title, "A")] = "the job dashboard is opened on a job still active"
# ...on a job whose task is stalled: it processed nothing in 30 minutes, so it has no ETA. The ETA
# is checked on a job that progresses instead.
EXPECTED_EMPTY[(DRILLDOWN, "ETA", "A")] = "a stalled task has no ETA"


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    exporter: str
    target: str
    flapping_port: int
    tmp: Path
    ca_file: Path
    password: str
    processes: list[Process]
    started: float
    http: httpx.Client  # one client, so hundreds of API calls reuse a connection

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f}s"


class NoData(Exception):
    """A query or variable returned nothing (yet)."""


# --- TLS and basic auth material, made fresh for each run -----------------------------------------


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def rules_with_short_for(directory: Path) -> Path:
    """A copy of the alerting rules with every `for:` at 0s, so alerts fire in this short run."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    shortened = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
                shortened.append(rule["alert"])
    assert "Scene7TaskStuck" in shortened, "the rules changed: Scene7TaskStuck has no `for:` any more"
    return write_yaml(directory / "scene7.rules.yml", rules)


def verifying_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


# --- the stack ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("e2e")
    cert_file, key_file = write_self_signed_certificate(tmp, "scene7-exporter e2e test")
    password = secrets.token_urlsafe(18)
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    web_config = write_yaml(
        tmp / "web.yml",
        {
            "tls_server_config": {"cert_file": str(cert_file), "key_file": str(key_file)},
            "basic_auth_users": {SCRAPE_USER: password_hash},
        },
    )
    exporter_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
    flapping_port = free_port()
    target = f"127.0.0.1:{exporter_port}"
    ca = verifying_context(cert_file)

    with contextlib.ExitStack() as servers:
        sim, endpoint = servers.enter_context(simulator(
            # at this speed a day of job logs is thousands of log-only jobs: an hour is plenty
            tmp, jobs=SIM_JOBS, seed=SIM_SEED, time_scale=TIME_SCALE, extra=["--job-log-backfill-hours=1"],
        ))
        exporter_config = write_yaml(
            tmp / "exporter.yml",
            {
                "accounts": [{"name": "e2e", "endpoint": endpoint, "user": "demo@example.com"}],
                "poll": {"interval": "1s", "timeout": "0.8s"},
                "job_logs": {"interval": "2s"},
                "web": {"listen_address": target, "config_file": str(web_config)},
                "log": {"level": "info"},
            },
        )
        exporter = servers.enter_context(
            running(
                "exporter",
                exporter_command("run", f"--config.file={exporter_config}"),
                tmp,
                lambda: http_ok(f"https://{target}/readyz", verify=ca),
                env={"SCENE7_EXPORTER_PASSWORD": "demo"},
            )
        )
        am_config = write_yaml(
            tmp / "alertmanager.yml",
            {
                "route": {"receiver": "nowhere", "group_by": ["alertname"], "group_wait": "0s"},
                "receivers": [{"name": "nowhere"}],
            },
        )
        am = servers.enter_context(alertmanager(tmp, am_config, alertmanager_port))
        password_file = tmp / "scrape-password"
        password_file.write_text(password, encoding="utf-8")
        tls = {"ca_file": str(cert_file)}
        prometheus_config = write_yaml(
            tmp / "prometheus.yml",
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_with_short_for(tmp))],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
                "scrape_configs": [
                    {
                        "job_name": SCRAPE_JOB,
                        "scheme": "https",
                        "tls_config": tls,
                        "basic_auth": {"username": SCRAPE_USER, "password_file": str(password_file)},
                        "static_configs": [{"targets": [target]}],
                    },
                    {
                        # started by test_polls_that_flap_fire_scene7_pollsfailing; down until then
                        "job_name": FLAPPING_JOB,
                        "static_configs": [{"targets": [f"127.0.0.1:{flapping_port}"]}],
                    },
                    {
                        "job_name": WRONG_PASSWORD_JOB,
                        "scrape_interval": "2s",  # every failed check costs a bcrypt round
                        "scrape_timeout": "2s",
                        "scheme": "https",
                        "tls_config": tls,
                        "basic_auth": {"username": SCRAPE_USER, "password": password + "-wrong"},
                        "static_configs": [{"targets": [target]}],
                    },
                ],
            },
        )
        prom = servers.enter_context(prometheus(tmp, prometheus_config, prometheus_port))
        print(f"\ne2e: simulator, exporter, Alertmanager and Prometheus started in {time.monotonic() - started:.1f}s")
        yield Stack(
            prometheus=f"http://127.0.0.1:{prometheus_port}",
            alertmanager=f"http://127.0.0.1:{alertmanager_port}",
            exporter=f"https://{target}",
            target=target,
            flapping_port=flapping_port,
            tmp=tmp,
            ca_file=cert_file,
            password=password,
            processes=[sim, exporter, am, prom],
            started=started,
            http=servers.enter_context(httpx.Client(timeout=5)),
        )
    print(f"e2e: stack stopped, {time.monotonic() - started:.1f}s in all")


@contextlib.contextmanager
def timed(stack: Stack, what: str) -> Iterator[None]:
    """Print how long a check took; on failure, print the tail of every server's log."""
    start = time.monotonic()
    try:
        yield
    except BaseException:
        for process in stack.processes:
            if process.proc.poll() is not None:
                print(f"--- {process.name} EXITED with {process.proc.returncode}")
            print(f"--- {process.name} log (tail) ---\n{process.log()[-2500:]}")
        raise
    print(f"e2e: {what}: {time.monotonic() - start:.1f}s (at {stack.elapsed()} since start)")


# --- Prometheus and Alertmanager HTTP APIs -------------------------------------------------------


def prometheus_api(stack: Stack, path: str, **params: str) -> Any:
    response = stack.http.get(f"{stack.prometheus}/api/v1/{path}", params=params)
    body = response.json()
    if body.get("status") != "success":
        # a PromQL error is not "no data yet": fail at once, naming the query
        raise AssertionError(f"Prometheus refused {path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def query(stack: Stack, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    result: list[dict[str, Any]] = prometheus_api(stack, "query", **params)["result"]
    return result


def scrape_target(stack: Stack, job: str) -> dict[str, Any]:
    active: list[dict[str, Any]] = prometheus_api(stack, "targets", state="active")["activeTargets"]
    found = [t for t in active if t["labels"]["job"] == job]
    assert len(found) == 1, f"expected one target of job {job}, got {found}"
    return found[0]


def alerts(stack: Stack) -> list[dict[str, Any]]:
    response = stack.http.get(f"{stack.alertmanager}/api/v2/alerts", params={"active": "true"})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


# --- tests ---------------------------------------------------------------------------------------


def test_prometheus_scrapes_the_exporter_over_tls_with_basic_auth(stack: Stack) -> None:
    with timed(stack, "target up over HTTPS with basic auth"):
        ca = verifying_context(stack.ca_file)
        # the exporter itself: TLS verified against the test CA, credentials required
        assert httpx.get(f"{stack.exporter}/metrics", verify=ca, timeout=5).status_code == 401
        wrong = httpx.get(f"{stack.exporter}/metrics", verify=ca, auth=(SCRAPE_USER, "nope"), timeout=5)
        assert wrong.status_code == 401
        ok = httpx.get(f"{stack.exporter}/metrics", verify=ca, auth=(SCRAPE_USER, stack.password), timeout=5)
        assert ok.status_code == 200 and "scene7_up{" in ok.text

        def healthy() -> dict[str, Any] | None:
            target = scrape_target(stack, SCRAPE_JOB)
            return target if target["health"] == "up" else None

        target = wait_until(healthy, 30, f"Prometheus target {SCRAPE_JOB} to be up")
        assert target["scrapeUrl"] == f"https://{stack.target}/metrics"
        assert target["labels"]["instance"] == stack.target
        assert target["lastError"] == ""
        # what the rules and dashboards rely on: samples under the job name the rules expect
        wait_until(
            lambda: query(stack, f'scene7_up{{job="{SCRAPE_JOB}", instance="{stack.target}"}} == 1'),
            20,
            "scene7_up 1 to be queryable",
        )


def test_a_wrong_scrape_password_leaves_the_target_down_with_401(stack: Stack) -> None:
    with timed(stack, "wrong password target down with 401"):

        def down() -> dict[str, Any] | None:
            target = scrape_target(stack, WRONG_PASSWORD_JOB)
            return target if target["health"] == "down" else None

        target = wait_until(down, 30, f"Prometheus target {WRONG_PASSWORD_JOB} to be down")
        assert "401" in target["lastError"], target["lastError"]
        assert target["scrapeUrl"].startswith("https://")
        assert query(stack, f'up{{job="{WRONG_PASSWORD_JOB}"}} == 0')
        assert not query(stack, f'scene7_up{{job="{WRONG_PASSWORD_JOB}"}}'), "scraped despite the wrong password"


def test_every_task_state_is_current_for_some_task(stack: Stack) -> None:
    with timed(stack, "all six task states with value 1"):

        def states() -> set[str] | None:
            result = query(stack, f'count by (state) (scene7_task_state{{job="{SCRAPE_JOB}"}} == 1)')
            found = {series["metric"]["state"] for series in result}
            return found if found == set(TASK_STATES) else None

        try:
            wait_until(states, 30, "scene7_task_state == 1 for each of the six states")
        except AssertionError:
            last = query(stack, f'count by (state) (scene7_task_state{{job="{SCRAPE_JOB}"}} == 1)')
            raise AssertionError(f"states seen: {sorted(s['metric']['state'] for s in last)}") from None


# --- dashboards ------------------------------------------------------------------------------------

Chooser = Callable[[str, list[str], dict[str, Selection]], str]


def promql_string(value: str) -> str:
    """The inside of a double-quoted PromQL string holding `value` (for this test's own queries)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def resolve_variables(
    stack: Stack, board: dict[str, Any], choose: Chooser, *, every_value: bool = False
) -> dict[str, Selection]:
    """Run every variable's query in order, as Grafana does, and pick values: for multi-value
    variables "All" (their allValue), or with `every_value` each value found, picked one by one
    (so that Grafana regex-escapes and joins them); `choose` for the single-value ones. The hidden
    cluster variable finds nothing here (no cluster label) and stays at "All"."""
    selections: dict[str, Selection] = {}
    for name, var in variables(board).items():
        if var["type"] == "datasource":
            continue  # Grafana-side only: no query
        assert var["type"] == "query", f"variable {name}: this test handles query variables only"
        match = LABEL_VALUES.match(variable_query(var))
        assert match is not None, f"variable {name}: this test handles label_values(selector, label) only"
        selector = interpolate(match["selector"], selections, GRAFANA_MACROS)
        found = sorted({s["metric"][match["label"]] for s in query(stack, selector) if match["label"] in s["metric"]})
        if name == "cluster":
            assert not found and var["hide"] == 2, found
            selections[name] = Selection.of(var, [], all_selected=True)
        elif not found:
            raise NoData(f"variable {name}: {selector}")
        elif var.get("multi") or var.get("includeAll"):
            selections[name] = Selection.of(var, found, all_selected=not every_value)
        else:
            selections[name] = Selection.of(var, [choose(name, found, selections)])
    return selections


def stalled_job(stack: Stack, company: str) -> str:
    """A job of `company` with a long-stalled Processing task: it stays active for the whole run."""
    result = query(
        stack,
        f'scene7_task_state{{job="{SCRAPE_JOB}", company="{promql_string(company)}", state="Processing"}} == 1'
        " and on (job, instance, company, job_name, job_type, task_type)"
        f" (time() - scene7_task_last_progress_update_timestamp_seconds > {STALE_AGE})",
    )
    if not result:
        raise NoData(f"no stalled Processing task for company {company!r}")
    return str(sorted(s["metric"]["job_name"] for s in result)[0])


def picking(company: str, job_name: str) -> Chooser:
    """Picks this company and job in the Job dashboard's variables, once Grafana lists them."""

    def choose(name: str, found: list[str], _: dict[str, Selection]) -> str:
        wanted = {"company": company, "job_name": job_name}[name]
        if wanted not in found:
            raise NoData(f"variable {name}: {wanted!r} not among {found}")
        return wanted

    return choose


def overview_cases(stack: Stack, *, every_value: bool) -> list[tuple[tuple[str, str, str], str]]:
    overview = load(OVERVIEW)
    selections = resolve_variables(stack, overview, lambda name, found, _: found[0], every_value=every_value)
    if every_value:
        assert QUOTED_COMPANY in selections["company"].values, selections["company"]
    how = "each value" if every_value else "All"
    return [
        ((OVERVIEW, f"{panel['title']} [{how}]", target["refId"]),
         interpolate(target["expr"], selections, GRAFANA_MACROS))
        for panel, target in targets(overview)
    ]


def dashboard_cases(stack: Stack) -> list[tuple[tuple[str, str, str], str]]:
    """(dashboard, panel, refId) and the query Grafana would send, for the overview with "All"
    selected and with every value picked, and for the job dashboard once per company (the quoted
    one among them), on a job with a stalled task."""
    cases = overview_cases(stack, every_value=False) + overview_cases(stack, every_value=True)
    drilldown = load(DRILLDOWN)
    companies = sorted(s["metric"]["company"] for s in query(stack, f'scene7_up{{job="{SCRAPE_JOB}"}}'))
    assert QUOTED_COMPANY in companies, companies
    for company in companies:
        selections = resolve_variables(stack, drilldown, picking(company, stalled_job(stack, company)))
        for panel, target in targets(drilldown):
            key = (DRILLDOWN, f"{panel['title']} [company {company}]", target["refId"])
            cases.append((key, interpolate(target["expr"], selections, GRAFANA_MACROS)))

    # the ETA on a job that progresses
    company, progressing = progressing_job(stack)
    selections = resolve_variables(stack, drilldown, picking(company, progressing))
    for panel, target in targets(drilldown):
        if panel["title"] not in FINISHED_JOB_PANELS:
            key = (DRILLDOWN, f"{panel['title']} [progressing job of company {company}]", target["refId"])
            cases.append((key, interpolate(target["expr"], selections, GRAFANA_MACROS)))

    # the same dashboard on a job that has ended: Grafana lists it while it was active within
    # the time range; the simulator's log-only short jobs end every few seconds
    company, finished = finished_job(stack)
    selections = {
        **selections,
        "company": Selection.of(variables(drilldown)["company"], [company]),
        "job_name": Selection.of(variables(drilldown)["job_name"], [finished]),
    }
    for panel, target in targets(drilldown):
        if panel["title"] in FINISHED_JOB_PANELS:
            key = (DRILLDOWN, f"{panel['title']} [finished job of company {company}]", target["refId"])
            cases.append((key, interpolate(target["expr"], selections, GRAFANA_MACROS)))
    return cases


def progressing_job(stack: Stack) -> tuple[str, str]:
    """(company, job name) of a job with an ETA, the quoted company's if it has one."""
    result = query(stack, f'company_job_task:scene7_task_eta_seconds:deriv30m{{job="{SCRAPE_JOB}"}} > 0')
    if not result:
        raise NoData("no task with an ETA")
    best = sorted(result, key=lambda s: (s["metric"]["company"] != QUOTED_COMPANY, s["metric"]["job_name"]))[0]
    return best["metric"]["company"], best["metric"]["job_name"]


def finished_job(stack: Stack) -> tuple[str, str]:
    """(company, job name) of the job that ended last, by its job log."""
    result = query(stack, f'topk(1, scene7_recent_job_end_timestamp_seconds{{job="{SCRAPE_JOB}"}})')
    if not result:
        raise NoData("no recently finished job")
    return result[0]["metric"]["company"], result[0]["metric"]["job_name"]


def expected_empty(key: tuple[str, str, str]) -> str | None:
    board, title, ref = key
    return EXPECTED_EMPTY.get((board, title.split(" [company ")[0], ref))


def test_every_dashboard_query_and_variable_returns_data(stack: Stack) -> None:
    with timed(stack, "dashboard queries"):
        # "Failed tasks over time" counts a step from the exporter's scrape a step (1m) before:
        # nothing until Prometheus has scraped it for a minute
        deadline = time.monotonic() + 120
        empty: list[str] = []
        rounds = 0
        while True:
            rounds += 1
            try:
                cases = dashboard_cases(stack)
                results = {key: query(stack, expr) for key, expr in cases}
                empty = [f"{key}: {expr}" for key, expr in cases if not results[key] and not expected_empty(key)]
            except NoData as exc:
                empty = [str(exc)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(1)
        if empty:
            pytest.fail("queries without data:\n" + "\n".join(empty), pytrace=False)
        assert len(cases) > 60
        for key, expr in cases:
            if expected_empty(key):
                assert not query(stack, expr), f"{key} returns data: remove it from EXPECTED_EMPTY"
        quoted = [key for key, _ in cases if f"[company {QUOTED_COMPANY}]" in key[1]]
        assert len(quoted) == len(list(targets(load(DRILLDOWN)))), quoted
        counts = "\n".join(f"  {board} | {title} | {ref}: {len(results[(board, title, ref)])} series"
                            for board, title, ref in results)
        print(f"e2e: {len(cases)} dashboard queries returned data, in round {rounds}\n{counts}")


# --- the attention table and the ETA ----------------------------------------------------------------


def mapped(value: float, mappings: list[dict[str, Any]]) -> str:
    """The text a range value mapping gives `value`, as Grafana shows it."""
    for mapping in mappings:
        options = mapping["options"]
        if mapping["type"] == "range" and options["from"] <= value <= options["to"]:
            return str(options["result"]["text"])
    raise AssertionError(f"no mapping for {value}")


def attention_rows(stack: Stack, at: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The "Tasks that need attention" table as Grafana draws it at time `at`: each instant
    query (all at the same time, as Grafana sends a panel's queries), merged on the task's
    labels, sorted by the panel's sortBy column."""
    overview = load(OVERVIEW)
    panel = next(p for p in data_panels(overview) if p["title"] == "Tasks that need attention")
    selections = resolve_variables(stack, overview, lambda name, found, _: found[0])
    columns = {
        override["matcher"]["options"]: {prop["id"]: prop["value"] for prop in override["properties"]}
        for override in panel["fieldConfig"]["overrides"]
    }
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for target in panel["targets"]:
        name = columns[f"Value #{target['refId']}"]["displayName"]
        for series in query(stack, interpolate(target["expr"], selections, GRAFANA_MACROS), at):
            labels = series["metric"]
            key = (labels["company"], labels["job_name"], labels["job_type"], labels["task_type"])
            rows.setdefault(key, {"key": key})[name] = float(series["value"][1])
    (sort,) = panel["options"]["sortBy"]
    ordered = sorted(rows.values(), key=lambda row: row.get(sort["displayName"], float("-inf")), reverse=sort["desc"])
    return ordered, columns


def test_the_attention_table_lists_the_stalled_task_first(stack: Stack) -> None:
    with timed(stack, "attention table"):
        columns = attention_rows(stack, time.time() - 1)[1].values()
        status_mappings = next(c["mappings"] for c in columns if c.get("displayName") == "Status")
        on_task = " and on (job, instance, company, job_name, job_type, task_type)"
        longest_stalled = (
            f'topk(1, time() - scene7_task_last_progress_update_timestamp_seconds{{job="{SCRAPE_JOB}"}} > {STALE_AGE}'
            f'{on_task} scene7_task_state{{job="{SCRAPE_JOB}", state="Processing"}} == 1)'
        )
        stuck = (
            f'time() - scene7_task_last_progress_update_timestamp_seconds{{job="{SCRAPE_JOB}"}} > 1800'
            f' and scene7_task_last_progress_update_timestamp_seconds{{job="{SCRAPE_JOB}"}} > 0'
            f'{on_task} scene7_task_state{{job="{SCRAPE_JOB}", state="Processing"}} == 1'
        )
        failed = f'scene7_task_state{{job="{SCRAPE_JOB}", state="Failed"}} == 1'

        def keys(result: list[dict[str, Any]]) -> set[tuple[str, ...]]:
            return {tuple(s["metric"][k] for k in ("company", "job_name", "job_type", "task_type")) for s in result}

        def table() -> tuple[list[dict[str, Any]], float] | None:
            at = time.time() - 1  # scraped by then
            rows, _ = attention_rows(stack, at)
            expected = keys(query(stack, longest_stalled, at))
            return (rows, at) if rows and rows[0]["key"] in expected else None

        rows, at = wait_until(table, 40, "the longest-stalled task first in the attention table")
        statuses = [mapped(row["Status"], status_mappings) for row in rows]
        assert statuses[0] == "Stuck" and rows[0]["Since last progress"] > STALE_AGE, rows[0]
        order = {"Stuck": 0, "Failed": 1, "Processing": 2}
        assert statuses == sorted(statuses, key=order.__getitem__), statuses
        since = [row["Since last progress"] for row, status in zip(rows, statuses, strict=True) if status == "Stuck"]
        assert since == sorted(since, reverse=True)
        # the rows are the tasks stuck and failed at that time, as the exporter has them
        by_status = {name: {row["key"] for row, s in zip(rows, statuses, strict=True) if s == name} for name in order}
        stuck_then, failed_then = keys(query(stack, stuck, at)), keys(query(stack, failed, at))
        assert len(rows) <= 25
        if len(stuck_then) + len(failed_then) <= 25:  # else the table shows the first 25 of them
            assert by_status["Stuck"] == stuck_then
            assert by_status["Failed"] == failed_then, (by_status["Failed"], failed_then)
        assert all("ETA" not in row for row, status in zip(rows, statuses, strict=True) if status != "Processing")
        print(f"e2e: attention table: {len(rows)} rows, {statuses.count('Stuck')} stuck, "
              f"{statuses.count('Failed')} failed, first {rows[0]['key']}")


ETA = f'company_job_task:scene7_task_eta_seconds:deriv30m{{job="{SCRAPE_JOB}"}}'
RATE = f'company_job_task:scene7_task_items_processed:deriv30m{{job="{SCRAPE_JOB}"}}'


def test_eta_series_exist_and_are_positive(stack: Stack) -> None:
    with timed(stack, "ETA recording rules"):
        etas = wait_until(lambda: query(stack, f"{ETA} > 0"), 40, "a positive ETA")
        every = query(stack, ETA)
        values = [float(s["value"][1]) for s in every]
        assert all(0 <= v < float("inf") for v in values), values
        # only where the task processed items (rate > 0) and is Processing
        assert not query(stack, f"{ETA} unless on (job, instance, company, job_name, job_type, task_type) ({RATE} > 0)")
        assert not query(  # Processing when the rule ran (a second or two before this query)
            stack,
            f"{ETA} unless on (job, instance, company, job_name, job_type, task_type)"
            f' max_over_time(scene7_task_state{{job="{SCRAPE_JOB}", state="Processing"}}[10s]) == 1',
        )
        # stalled tasks have a rate of 0 and no ETA
        assert query(stack, f"{RATE} == 0")
        assert not query(
            stack,
            f"{ETA} and on (job, instance, company, job_name, job_type, task_type)"
            f" (time() - scene7_task_last_progress_update_timestamp_seconds > {STALE_AGE})",
        )
        print(f"e2e: {len(etas)} positive ETAs of {len(every)}, e.g. {etas[0]['metric']['job_name']}: "
              f"{float(etas[0]['value'][1]):.0f}s")


# --- alerts ----------------------------------------------------------------------------------------


FAILED_BY_COMPANY = 'sum by (company) (scene7_tasks_finished_total{final_state="Failed"})'


def test_stuck_and_failed_task_alerts_reach_alertmanager(stack: Stack) -> None:
    with timed(stack, "Scene7TaskStuck and Scene7TaskFailed in Alertmanager"):
        companies = {s["metric"]["company"] for s in query(stack, f'scene7_up{{job="{SCRAPE_JOB}"}}')}

        def delivered() -> list[dict[str, Any]] | None:
            found = alerts(stack)
            names = {alert["labels"]["alertname"] for alert in found}
            return found if {"Scene7TaskStuck", "Scene7TaskFailed"} <= names else None

        try:
            received = wait_until(delivered, 90, "Scene7TaskStuck and Scene7TaskFailed in Alertmanager", interval=0.5)
        except AssertionError:
            firing = query(stack, 'ALERTS{alertstate="firing"}')
            raise AssertionError(
                f"alerts in Alertmanager: {sorted({a['labels']['alertname'] for a in alerts(stack)})}; "
                f"firing in Prometheus: {sorted({s['metric']['alertname'] for s in firing})}; failures counted: "
                f"{query(stack, FAILED_BY_COMPANY)}"
            ) from None
        by_name: dict[str, list[dict[str, str]]] = {}
        for alert in received:
            name = alert["labels"]["alertname"]
            assert alert["status"]["state"] == "active", alert
            assert alert["annotations"]["runbook_url"] == RUNBOOK + name.lower(), alert
            by_name.setdefault(name, []).append(alert["labels"])
        for labels in by_name["Scene7TaskStuck"]:
            assert labels["job"] == SCRAPE_JOB and labels["instance"] == stack.target, labels
            assert labels["company"] in companies, labels
            assert labels["job_name"] and labels["task_type"] and labels["job_type"], labels
            assert labels["severity"] == "warning", labels
        # the simulator keeps a long-stalled task in every company
        assert {labels["company"] for labels in by_name["Scene7TaskStuck"]} == companies
        for labels in by_name["Scene7TaskFailed"]:
            assert labels["job"] == SCRAPE_JOB and labels["company"] in companies, labels
            assert labels["task_type"], labels
            assert "job_name" not in labels, labels  # the counter has no per-job label
        print(f"e2e: alerts: { {name: len(found) for name, found in sorted(by_name.items())} }")


FINISHED_JOB_ALERTS = {"Scene7JobFatalError", "Scene7JobFinishedWithErrors"}
MOST_FILES_IN_ERROR = 'topk(3, scene7_recent_job_files{result="error"})'


def test_jobs_that_end_in_error_reach_alertmanager(stack: Stack) -> None:
    with timed(stack, "Scene7JobFatalError and Scene7JobFinishedWithErrors in Alertmanager"):
        companies = {s["metric"]["company"] for s in query(stack, f'scene7_up{{job="{SCRAPE_JOB}"}}')}

        def ended_during_the_run(labels: dict[str, str]) -> bool:
            """The alerted job ended after the exporter started, not before (the recent-job
            series show the last day's jobs at once)."""
            end = query(stack, f'scene7_recent_job_end_timestamp_seconds{{job="{SCRAPE_JOB}", '
                               f'company="{promql_string(labels["company"])}", '
                               f'job_name="{promql_string(labels["job_name"])}"}}')
            return bool(end) and float(end[0]["value"][1]) >= started_wall

        started_wall = time.time() - (time.monotonic() - stack.started)

        def delivered() -> list[dict[str, Any]] | None:
            found = [alert for alert in alerts(stack) if alert["labels"]["alertname"] in FINISHED_JOB_ALERTS]
            if {alert["labels"]["alertname"] for alert in found} != FINISHED_JOB_ALERTS:
                return None
            with_errors = [a["labels"] for a in found if a["labels"]["alertname"] == "Scene7JobFinishedWithErrors"]
            return found if any(ended_during_the_run(labels) for labels in with_errors) else None

        try:
            received = wait_until(delivered, 90, "finished-job alerts in Alertmanager", interval=0.5)
        except AssertionError:
            raise AssertionError(
                f"alerts in Alertmanager: {sorted({a['labels']['alertname'] for a in alerts(stack)})}; "
                "finished jobs counted: "
                f"{query(stack, 'sum by (company, outcome) (scene7_jobs_finished_total)')}; most files in error: "
                f"{query(stack, MOST_FILES_IN_ERROR)}"
            ) from None
        for alert in received:
            labels, name = alert["labels"], alert["labels"]["alertname"]
            assert alert["status"]["state"] == "active", alert
            assert alert["annotations"]["runbook_url"] == RUNBOOK + name.lower(), alert
            assert labels["job"] == SCRAPE_JOB and labels["instance"] == stack.target, labels
            assert labels["company"] in companies and labels["log_type"], labels
            company = promql_string(labels["company"])
            if name == "Scene7JobFatalError":
                assert labels["outcome"] == "fatal" and "job_name" not in labels, labels
                # the description names fatal jobs the exporter shows as recent
                latest = alert["annotations"]["description"].split(" Latest: ", 1)[1].rstrip(".").split(", ")
                fatal = {s["metric"]["job_name"] for s in query(
                    stack, f'scene7_recent_job_info{{job="{SCRAPE_JOB}", company="{company}", outcome="fatal"}}')}
                assert latest and set(latest) <= fatal, (latest, fatal)
            else:
                errors = query(stack, f'scene7_recent_job_files{{job="{SCRAPE_JOB}", company="{company}", '
                                      f'job_name="{promql_string(labels["job_name"])}", result="error"}}')
                assert errors and float(errors[0]["value"][1]) >= 10, (labels, errors)
        assert not query(stack, 'ALERTS{alertname="Scene7JobLogsFailing"}'), "job-log polls work in this stack"
        fired = sorted((alert["labels"]["alertname"], alert["labels"]["company"]) for alert in received)
        print(f"e2e: finished-job alerts: {fired}")


def test_every_rule_evaluates_without_error_on_real_data(stack: Stack) -> None:
    with timed(stack, "rule health"):
        groups = prometheus_api(stack, "rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        expected = [
            rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]
        ]
        assert len(rules) == len(expected), "Prometheus did not load every rule of the copy"
        for rule in rules:
            assert rule["health"] == "ok" and not rule.get("lastError"), rule
            assert rule["lastEvaluation"] != "0001-01-01T00:00:00Z", f"{rule['name']} was never evaluated"


# --- flapping polls --------------------------------------------------------------------------------

FLAPPING_COMPANY = ("c|110", "Acme Retail")  # handle and name in the simulator
FAILED_IN_A_ROW = 9  # failed polls (one a second), then polls succeed for SUCCEEDING_FOR seconds
SUCCEEDING_FOR = 5.0


def test_polls_that_flap_fire_scene7_pollsfailing(stack: Stack) -> None:
    """A second exporter, against its own simulator, whose polls of one company fail 9 s out of
    every 14: Scene7PollsFailing fires, and is firing after 3 s without a failed poll (the rules
    and the scrapes run every second), which only the flapping branch
    (`avg_over_time(scene7_up[30m]) < 0.5`) explains; the all-failing branch needs the last
    poll failed."""
    with timed(stack, "Scene7PollsFailing on flapping polls"), contextlib.ExitStack() as servers:
        directory = stack.tmp / "flapping"
        directory.mkdir()
        _, endpoint = servers.enter_context(simulator(directory, jobs=4, seed=3))
        faults = endpoint.split("/scene7/")[0] + "/simulator/faults"
        plan = {"kind": "api", "operation": "getActiveJobs", "company": FLAPPING_COMPANY[0], "times": FAILED_IN_A_ROW}
        stack.http.post(faults, json=plan).raise_for_status()  # from the first poll on
        config = write_yaml(
            directory / "exporter.yml",
            {
                "accounts": [{"name": "flapping", "endpoint": endpoint, "user": "demo@example.com"}],
                "poll": {"interval": "1s", "timeout": "0.8s"},
                "job_logs": {"enabled": False},
                "web": {"listen_address": f"127.0.0.1:{stack.flapping_port}"},
            },
        )
        servers.enter_context(running(
            "flapping-exporter",
            exporter_command("run", f"--config.file={config}"),
            directory,
            lambda: http_ok(f"http://127.0.0.1:{stack.flapping_port}/readyz"),
            env={"SCENE7_EXPORTER_PASSWORD": "demo"},
        ))
        company = promql_string(FLAPPING_COMPANY[1])
        up = f'scene7_up{{job="{FLAPPING_JOB}", company="{company}"}}'
        firing_after_good_polls = (
            f'ALERTS{{alertname="Scene7PollsFailing", alertstate="firing", job="{FLAPPING_JOB}", company="{company}"}}'
            f" and on (job, instance, company) min_over_time({up}[3s]) == 1"
        )
        cleared_at: list[float] = []

        def flapping_and_firing() -> list[dict[str, Any]] | None:
            if stack.http.get(faults).json()["plan"] is None:  # the failures are used up
                if not cleared_at or cleared_at[-1] < 0:
                    cleared_at.append(time.monotonic())
                elif time.monotonic() - cleared_at[-1] > SUCCEEDING_FOR:
                    stack.http.post(faults, json=plan).raise_for_status()
                    cleared_at.append(-1.0)
            return query(stack, firing_after_good_polls) or None

        wait_until(flapping_and_firing, 90, "Scene7PollsFailing firing after 3 s of good polls", interval=0.3)
        share = query(stack, f"avg_over_time({up}[30m])")
        assert share and 0 < float(share[0]["value"][1]) < 0.5, share
        others = query(stack, f'ALERTS{{alertname="Scene7PollsFailing", job="{FLAPPING_JOB}", company!="{company}"}}')
        assert not others, others  # the other companies of that exporter poll fine
        rounds = sum(1 for t in cleared_at if t >= 0)
        print(f"e2e: flapping: fired in good-poll spell {rounds}, "
              f"{float(share[0]['value'][1]):.0%} of polls succeeded when it fired")
