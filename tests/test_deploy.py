"""The shipped deployment files are valid and agree with each other and with the exporter.

Why: Dockerfile, compose stack, Kubernetes manifests and systemd unit are read by tools we do
not run in unit tests (Docker, Compose, Kubernetes, systemd). Each file is checked here with a
real validator (hadolint, shellcheck, the compose-spec JSON schema, Kubernetes' JSON schemas, promtool,
amtool, systemd-analyze, the exporter's own check-config), and the facts that span files
(ports, paths, job name, image version, generated copies of dashboards/) are cross-checked.
The image itself is built and run by .ci/container-smoke.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S_DIR = ROOT / "deploy" / "kubernetes"
DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "scene7.rules.yml"
BIN = Path(sys.executable).parent
PORT = 10373
JOB = "scene7-exporter"
CONFIG_PATH = "/etc/scene7-exporter/config.yml"

_spec = importlib.util.spec_from_file_location("generate", ROOT / "deploy" / "generate.py")
assert _spec and _spec.loader
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)


def tool(name: str) -> str:
    """A tool from the venv (PyPI packages) or the machine (Debian packages)."""
    found = shutil.which(name, path=f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    assert found, f"{name} is not installed"
    return found


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def instructions(name: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == name]


def rules_job_selectors() -> set[str]:
    return set(re.findall(r'job="([^"]+)"', RULES.read_text(encoding="utf-8")))


def alert_names() -> set[str]:
    groups = load_yaml(RULES)["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def check_exporter_config(text: str, password_file: str, tmp_path: Path) -> None:
    """Runs `scene7-exporter check-config` on text, with password_file moved into tmp_path."""
    secret = tmp_path / "ips_password"
    secret.write_text("not-the-real-password", encoding="utf-8")
    assert f"password_file: {password_file}" in text
    config = tmp_path / "config.yml"
    config.write_text(text.replace(password_file, str(secret)), encoding="utf-8")
    result = run(BIN / "scene7-exporter", "check-config", "--config.file", config)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean():
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_wheels_then_installs_only_them():
    froms = instructions("FROM")
    assert froms == ["${BASE} AS build", "${BASE}"]
    assert instructions("ARG")[0] == "BASE=python:3.11-slim"
    runs = instructions("RUN")
    assert "pip wheel" in runs[0] and "--wheel-dir /wheels" in runs[0]
    assert "pip install" in runs[1] and "--no-index" in runs[1] and "--find-links=/wheels" in runs[1]


def test_dockerfile_runtime_contract():
    parser = dockerfile()
    assert instructions("USER") == ["10001:10001"]
    assert instructions("EXPOSE") == [str(PORT)]
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["scene7-exporter"]
    assert json.loads(instructions("CMD")[0]) == ["run", f"--config.file={CONFIG_PATH}"]
    labels = parser.labels
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"] == "https://github.com/scene7-exporter/scene7-exporter"
    assert labels["org.opencontainers.image.title"] == "scene7-exporter"
    assert labels["org.opencontainers.image.description"]
    # from build arguments (the smoke test passes the commit and the time, and reads them back)
    assert labels["org.opencontainers.image.revision"] == "unknown"
    assert labels["org.opencontainers.image.created"] == ""  # an RFC 3339 time when given, else empty
    assert {"REVISION=unknown", "CREATED="} <= set(instructions("ARG"))


def test_dockerignore_lets_through_exactly_what_the_build_copies():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the .dockerignore is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for value in instructions("COPY"):
        if "--from" in value:
            continue
        copied.update(source.rstrip("/") for source in value.split()[:-1])
    assert copied == allowed
    for source in copied:
        assert (ROOT / source).exists(), source


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.HTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_healthcheck_command_follows_healthz(health_server, tmp_path):
    """The image's HEALTHCHECK is `scene7-exporter healthcheck` with the configuration `run`
    reads: here pointed at a stand-in /healthz through that configuration."""
    server, handler = health_server
    value = instructions("HEALTHCHECK")[0]
    command = json.loads(value[value.index("CMD") + 3 :])
    assert command == ["scene7-exporter", "healthcheck", f"--config.file={CONFIG_PATH}"]
    assert json.loads(instructions("CMD")[0])[1] == command[2]  # the same file as the default command
    config = tmp_path / "config.yml"
    config.write_text(f"web:\n  listen_address: 127.0.0.1:{server.server_port}\n")
    check = [str(BIN / "scene7-exporter"), *command[1:2], f"--config.file={config}"]

    assert run(*check).returncode == 0
    handler.status = 503
    assert run(*check).returncode == 1
    server.shutdown()
    server.server_close()
    assert run(*check).returncode == 1


def test_compose_checks_the_exporter_as_the_image_does():
    exporter = load_yaml(COMPOSE_DIR / "compose.yaml")["services"]["exporter"]
    value = instructions("HEALTHCHECK")[0]
    assert exporter["healthcheck"]["test"] == ["CMD", *json.loads(value[value.index("CMD") + 3 :])]


def test_container_scripts_are_shellcheck_clean():
    result = run(tool("shellcheck"), "-x", ".ci/base-image", ".ci/container-smoke")
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker compose -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_DIR / "compose.yaml")


def interpolate_defaults(value: str) -> str:
    """Compose's ${VAR:-default} with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (short syntax)."""
    mounts = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


def uncomment_switch(text: str) -> str:
    """The compose file with the commented `command:` line in place of the active one."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if re.match(r"\s*# command: ", line))
    assert lines[index - 1].lstrip().startswith("command: "), "the switch sits under the active command"
    lines[index - 1] = re.sub(r"^(\s*)", r"\1# ", lines[index - 1])
    lines[index] = lines[index].replace("# command: ", "command: ", 1)
    return "\n".join(lines) + "\n"


def test_compose_matches_the_compose_specification(tmp_path):
    switched = tmp_path / "compose.yaml"
    switched.write_text(uncomment_switch((COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8")))
    for path in (COMPOSE_DIR / "compose.yaml", switched):
        result = run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_catches_mistakes(tmp_path):
    broken = compose()
    broken["services"]["exporter"]["comand"] = broken["services"]["exporter"].pop("command")
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode == 1


def test_compose_exporter_demo_by_default_and_run_when_switched():
    exporter = compose()["services"]["exporter"]
    assert exporter["command"][0] == "demo"
    assert exporter["build"]["context"] == "../.."
    switched = yaml.safe_load(uncomment_switch((COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8")))
    assert switched["services"]["exporter"]["command"] == json.loads(instructions("CMD")[0])
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]


def test_compose_mounts_and_secrets_exist():
    spec = compose()
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).is_file() or (COMPOSE_DIR / source).is_dir(), f"{name}: {source}"
            else:
                assert source in spec["volumes"], f"{name}: undeclared volume {source}"
    for name, secret in spec["secrets"].items():
        assert (COMPOSE_DIR / interpolate_defaults(secret["file"])).is_file(), name
    # Published ports stay on loopback: the demo stack is not for the network.
    for service in spec["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_compose_mounts_the_shared_dashboards_and_rules_not_copies():
    assert bind_mounts("prometheus")["/etc/prometheus/rules/scene7.rules.yml"] == RULES
    grafana = bind_mounts("grafana")
    provider = load_yaml(COMPOSE_DIR / "grafana/provisioning/dashboards/scene7.yml")["providers"][0]
    folder = provider["options"]["path"]
    mounted = {Path(target).name: source for target, source in grafana.items() if target.startswith(folder + "/")}
    assert mounted == {path.name: path for path in DASHBOARDS.glob("*.json")}
    home = compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in grafana
    for directory in ("datasources", "dashboards"):
        assert grafana[f"/etc/grafana/provisioning/{directory}"].is_dir()
    assert not list(COMPOSE_DIR.rglob("*.json")), "dashboards are mounted from dashboards/, never copied"


def test_grafana_datasource_is_the_prometheus_service():
    datasource = load_yaml(COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    host_port = datasource["url"].removeprefix("http://")
    host, port = host_port.split(":")
    assert host in compose()["services"]
    assert any(p.endswith(f":{port}") for p in compose()["services"][host]["ports"])
    for path in DASHBOARDS.glob("*.json"):
        variables = json.loads(path.read_text(encoding="utf-8"))["templating"]["list"]
        assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= next(
            v for v in variables if v["type"] == "datasource"
        ).items(), path.name


def test_prometheus_config_passes_promtool_with_the_mounted_rules(tmp_path):
    mounts = bind_mounts("prometheus")
    assert mounts["/etc/prometheus/prometheus.yml"] == COMPOSE_DIR / "prometheus.yml"
    config = load_yaml(COMPOSE_DIR / "prometheus.yml")
    # promtool resolves rule_files on this machine: point them at what compose mounts there.
    config["rule_files"] = [str(mounts[path]) for path in config["rule_files"]]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = run(tool("promtool"), "check", "config", local)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout), result.stdout


def test_prometheus_scrapes_the_exporter_under_the_job_the_rules_expect():
    config = load_yaml(COMPOSE_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert rules_job_selectors() == {JOB}
    targets = jobs[JOB]["static_configs"][0]["targets"]
    exporter = compose()["services"]["exporter"]
    listen = next(a for a in exporter["command"] if a.startswith("--web.listen-address="))
    assert targets == [f"exporter:{listen.rsplit(':', 1)[1]}"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]


def uncomment_examples(text: str) -> str:
    out, inside = [], False
    for line in text.splitlines():
        if "# BEGIN example" in line:
            inside = True
        elif "# END example" in line:
            inside = False
        elif inside:
            line = re.sub(r"^(\s*)# ", r"\1", line)
        out.append(line)
    return "\n".join(out) + "\n"


def amtool_route(config: Path, *labels: str) -> str:
    result = run(tool("amtool"), "config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_alertmanager_config_and_its_commented_example_pass_amtool(tmp_path):
    shipped = COMPOSE_DIR / "alertmanager.yml"
    example = tmp_path / "alertmanager.yml"
    example.write_text(uncomment_examples(shipped.read_text(encoding="utf-8")))
    for path in (shipped, example):
        result = run(tool("amtool"), "check-config", path)
        assert result.returncode == 0, result.stdout + result.stderr
    assert amtool_route(shipped, "severity=critical", "alertname=Scene7ExporterDown") == "null"
    assert amtool_route(example, "severity=critical", "alertname=Scene7ExporterDown") == "oncall-webhook"
    assert amtool_route(example, "severity=warning", "alertname=Scene7TaskFailed") == "null"


def test_alertmanager_inhibition_names_real_alerts():
    config = load_yaml(COMPOSE_DIR / "alertmanager.yml")
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            name = re.fullmatch(r'alertname = "(\w+)"', matcher)
            assert name and name.group(1) in alert_names(), matcher


def test_compose_exporter_config_is_valid_for_the_exporter(tmp_path):
    secret = compose()["services"]["exporter"]["secrets"][0]["target"]
    check_exporter_config(
        (COMPOSE_DIR / "exporter.yml").read_text(encoding="utf-8"), f"/run/secrets/{secret}", tmp_path
    )
    assert bind_mounts("exporter")[CONFIG_PATH] == COMPOSE_DIR / "exporter.yml"


# --- Kubernetes ---------------------------------------------------------------------------

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "labels": STRING_MAP}}

# The parts of the Prometheus Operator's CRD schemas (monitoring.coreos.com/v1) that these
# manifests use; no package on PyPI ships them. Unknown fields are rejected, as the API server does.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": STRING_MAP},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": DURATION},
                                        "labels": STRING_MAP,
                                        "annotations": STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}
VARIANTS = ["", "sharded"]


@functools.cache
def kustomize_output(variant: str) -> str:
    result = run(tool("kubectl"), "kustomize", K8S_DIR / variant)
    assert result.returncode == 0, result.stderr
    return result.stdout


def kustomize(variant: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for a variant (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(kustomize_output(variant)) if doc]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    return kinds


def workload(variant: str) -> dict[str, Any]:
    kinds = by_kind(kustomize(variant))
    (obj,) = [*kinds.get("Deployment", {}).values(), *kinds.get("StatefulSet", {}).values()]
    return obj


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomize_output_is_valid_kubernetes(variant):
    objects = kustomize(variant)
    kinds = sorted(obj["kind"] for obj in objects)
    workload_kind = "StatefulSet" if variant else "Deployment"
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "Secret", "Service", "ServiceMonitor", "PrometheusRule", workload_kind]
    )
    versions = kubernetes_validate.utils.all_versions()
    for obj in objects:
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
            continue
        for version in (versions[0], versions[-1]):
            kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_validation_catches_mistakes():
    deployment = workload("")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    rule = by_kind(kustomize(""))["PrometheusRule"][JOB]
    rule["spec"]["groups"][0]["rules"][0]["labels"]["priority"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)


def test_every_manifest_is_listed_in_its_kustomization():
    for directory in (K8S_DIR, K8S_DIR / "base", K8S_DIR / "sharded"):
        listed = load_yaml(directory / "kustomization.yaml")["resources"]
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        dirs = {entry for entry in listed if (directory / entry).is_dir()}
        assert set(listed) - dirs == files, directory
        for entry in dirs:
            assert (directory / entry / "kustomization.yaml").is_file()


@pytest.mark.parametrize("variant", VARIANTS)
def test_workload_is_locked_down_and_probed(variant):
    obj = workload(variant)
    pod = obj["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    port = container["ports"][0]
    assert port["containerPort"] == PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["image"] == f"scene7-exporter:{project_version()}"
    if obj["kind"] == "Deployment":
        assert obj["spec"]["replicas"] == 1, "a second replica would poll IPS twice"
        # a rolling update would run two pollers at once: every series and alert twice
        assert obj["spec"]["strategy"] == {"type": "Recreate"}
    else:
        assert "updateStrategy" not in obj["spec"]  # RollingUpdate: a shard's pod stops before its next starts
    for labels in (obj["metadata"]["labels"], obj["spec"]["template"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/version"] == project_version()
        assert labels["app.kubernetes.io/component"] == "exporter"
    # the selector stays what it was: a selector cannot change on an existing workload
    assert obj["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "scene7-exporter"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_and_password_reach_the_exporter(variant, tmp_path):
    objects = by_kind(kustomize(variant))
    pod = workload(variant)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    config_map = objects["ConfigMap"][volumes["config"]["configMap"]["name"]]
    assert mounts["config"]["mountPath"] == str(Path(CONFIG_PATH).parent)
    assert Path(CONFIG_PATH).name in config_map["data"]
    assert f"--config.file={CONFIG_PATH}" in " ".join(container.get("command", []) + container["args"])

    secret = objects["Secret"][volumes["credentials"]["secret"]["secretName"]]
    assert volumes["credentials"]["secret"]["defaultMode"] == 0o440
    config = yaml.safe_load(config_map["data"][Path(CONFIG_PATH).name])
    password_file = Path(config["accounts"][0]["password_file"])
    assert password_file.parent == Path(mounts["credentials"]["mountPath"])
    assert password_file.name in secret["stringData"]
    check_exporter_config(config_map["data"][Path(CONFIG_PATH).name], str(password_file), tmp_path)


def test_service_and_servicemonitor_give_the_job_the_rules_expect():
    objects = by_kind(kustomize(""))
    (service,) = objects["Service"].values()
    (monitor,) = objects["ServiceMonitor"].values()
    # The Prometheus Operator names the job after the Service unless jobLabel is set.
    assert "jobLabel" not in monitor["spec"]
    assert rules_job_selectors() == {service["metadata"]["name"]}
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    pod_labels = workload("")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        service["spec"]["ports"][0]["targetPort"]
        == workload("")["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    )


def test_sharded_statefulset_gives_each_pod_its_own_shard(tmp_path):
    statefulset = workload("sharded")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    replicas = statefulset["spec"]["replicas"]
    assert int(env["SHARDS"]) == replicas > 1
    assert statefulset["spec"]["serviceName"] == JOB
    assert container["command"] == ["/bin/sh", "-c"]
    # Kubernetes turns "$$" into "$" and leaves "${...}" alone; no $(VAR) reference is used.
    script = container["args"][0].replace("$$", "$")
    fake = tmp_path / "scene7-exporter"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    seen = []
    for ordinal in range(replicas):
        result = subprocess.run(
            ["/bin/sh", "-c", script],
            env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOSTNAME": f"{JOB}-{ordinal}", **env},
            capture_output=True,
            text=True,
            check=True,
        )
        args = result.stdout.splitlines()
        assert args[:2] == ["run", f"--config.file={CONFIG_PATH}"]
        seen.append(args[args.index("--shard") + 1])
    assert seen == [f"{i}/{replicas}" for i in range(1, replicas + 1)]
    help_text = run(BIN / "scene7-exporter", "run", "--help").stdout
    assert "--shard" in help_text


def test_prometheus_rule_passes_promtool_and_equals_the_rules_file(tmp_path):
    rule = by_kind(kustomize(""))["PrometheusRule"][JOB]
    assert rule["spec"] == load_yaml(RULES)
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    result = run(tool("promtool"), "check", "rules", extracted)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_configmap_carries_every_dashboard_for_the_sidecar():
    config_map = by_kind(kustomize(""))["ConfigMap"][f"{JOB}-dashboards"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    expected = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert config_map["data"] == expected
    # kubectl's client-side apply stores the object in a 256 KiB annotation.
    assert len(json.dumps(config_map)) < 256 * 1024


def test_generated_manifests_are_up_to_date():
    assert generate.stale_files() == [], "run: python deploy/generate.py"


def test_generator_notices_a_changed_rules_file(tmp_path):
    shutil.copytree(DASHBOARDS, tmp_path / "dashboards")
    shutil.copytree(K8S_DIR, tmp_path / "deploy" / "kubernetes")
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
    rules = tmp_path / RULES.relative_to(ROOT)
    rules.write_text(rules.read_text(encoding="utf-8").replace("for: 10m", "for: 11m", 1), encoding="utf-8")
    assert generate.stale_files(tmp_path) == [generate.PROMETHEUS_RULE]
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.stale_files(tmp_path) == []
    assert "for: 11m" in (tmp_path / generate.PROMETHEUS_RULE).read_text(encoding="utf-8")


def test_image_tag_follows_the_project_version():
    for directory in (K8S_DIR, K8S_DIR / "sharded"):
        (image,) = load_yaml(directory / "kustomization.yaml")["images"]
        assert image == {"name": "scene7-exporter", "newTag": project_version()}


# --- systemd ------------------------------------------------------------------------------

UNIT = ROOT / "deploy" / "systemd" / "scene7-exporter.service"


def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's console script, as pip installs it."""
    text = UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/opt/scene7-exporter/bin/scene7-exporter " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/scene7-exporter/bin/scene7-exporter", str(BIN / "scene7-exporter")))
    return unit


def test_systemd_unit_verifies_cleanly(tmp_path):
    result = run(tool("systemd-analyze"), "verify", local_unit(tmp_path), cwd=tmp_path)
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stdout + result.stderr


def test_systemd_unit_is_hardened(tmp_path):
    # Exposure is scored 0 (locked down) to 10; threshold 20 means fail above 2.0.
    result = run(tool("systemd-analyze"), "security", "--offline=true", "--threshold=20", local_unit(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:]


def test_systemd_unit_runs_the_documented_command_with_a_credential():
    text = UNIT.read_text(encoding="utf-8")
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE)
    assert exec_start and exec_start.group(1).split()[1:] == json.loads(instructions("CMD")[0])
    credential = re.search(r"^LoadCredential=(\w+):(\S+)$", text, re.MULTILINE)
    assert credential
    assert f"/run/credentials/{UNIT.name}/{credential.group(1)}" in text
    assert re.search(r"^DynamicUser=yes$", text, re.MULTILINE)
