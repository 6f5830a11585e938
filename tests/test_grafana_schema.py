"""Type-checks each dashboard against Grafana's own dashboard types, with `tsc`.

No Grafana server runs here, but Grafana's schema does: `@grafana/schema` ships the TypeScript
types Grafana itself is built with. Each dashboard becomes an object literal of its `Dashboard`
type, so an unknown field, a misspelt enum value or a missing required field fails. Two
liberties, both spelled out below: string enums are compared by value (`"absolute"` for
`ThresholdsMode.Absolute`: JSON has no enums), and the annotation list takes the Prometheus
data source's annotation fields, which Grafana reads but keeps out of the shared schema.
`tests/run` installs the pinned packages (tests/grafana-schema/package-lock.json) when missing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_dashboards import DASHBOARD_DIR, DRILLDOWN, OVERVIEW, load

PACKAGE = Path(__file__).resolve().parent / "grafana-schema"
TSC = PACKAGE / "node_modules" / ".bin" / "tsc"

PRELUDE = """\
import type { AnnotationQuery, DataQuery, Dashboard } from '@grafana/schema';

// String enums by value: a JSON dashboard holds "absolute", not ThresholdsMode.Absolute.
type ByValue<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? ByValue<U>[]
    : T extends object
      ? { [K in keyof T]: ByValue<T[K]> }
      : T;

// The Prometheus query (grafana-prometheus' PromQuery, the fields the dashboards use), and the
// annotation fields its annotation support reads beside the query.
interface PrometheusQuery extends DataQuery {
  expr: string;
  interval?: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  editorMode?: 'code' | 'builder';
}
interface PrometheusAnnotationFields {
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
}

type CheckedDashboard = Omit<ByValue<Dashboard>, 'annotations'> & {
  annotations?: { list?: Array<ByValue<AnnotationQuery<PrometheusQuery>> & PrometheusAnnotationFields> };
};

"""
TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "module": "nodenext",
        "moduleResolution": "nodenext",
        "target": "es2022",
        "skipLibCheck": True,
    },
    "include": ["*.ts"],
}


def installed() -> Path:
    if not TSC.exists():
        pytest.fail(f"tsc is not installed: run tests/run, or `npm ci --prefix {PACKAGE}`")
    return TSC


def typescript_of(dashboard: object, name: str) -> str:
    return PRELUDE + f"export const {name}: CheckedDashboard = {json.dumps(dashboard, indent=2)};\n"


def tsc(sources: dict[str, str], directory: Path) -> subprocess.CompletedProcess[str]:
    """Type-check `sources` (file name -> TypeScript) together, in `directory`, where a link to
    the installed packages lets `@grafana/schema` resolve."""
    (directory / "node_modules").symlink_to(PACKAGE / "node_modules", target_is_directory=True)
    (directory / "tsconfig.json").write_text(json.dumps(TSCONFIG), encoding="utf-8")
    for file_name, source in sources.items():
        (directory / file_name).write_text(source, encoding="utf-8")
    return subprocess.run(
        [str(installed()), "-p", str(directory), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def schema_version() -> Iterator[str]:
    installed()
    manifest = json.loads((PACKAGE / "node_modules" / "@grafana" / "schema" / "package.json").read_text("utf-8"))
    yield manifest["version"]


def test_both_dashboards_are_grafana_dashboards_by_its_own_types(schema_version: str, tmp_path: Path) -> None:
    result = tsc(
        {"overview.ts": typescript_of(load(OVERVIEW), "overview"), "job.ts": typescript_of(load(DRILLDOWN), "job")},
        tmp_path,
    )
    assert result.returncode == 0, f"@grafana/schema {schema_version}:\n{result.stdout}{result.stderr}"
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted([OVERVIEW, DRILLDOWN])


def test_the_check_fails_on_what_grafana_would_not_read(schema_version: str, tmp_path: Path) -> None:
    """The check is not vacuous: a wrong enum value, an unknown field, a wrong type, a variable
    whose `current` lacks its value, each fail with the field named."""
    broken = load(OVERVIEW)
    broken["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    broken["templating"]["list"][1]["definition"] = "label_values(scene7_up, cluster)"
    broken["refresh"] = 60
    broken["templating"]["list"][2]["current"] = {}
    broken["annotations"]["list"][1]["expr"] = "ALERTS"
    result = tsc({"broken.ts": typescript_of(broken, "broken")}, tmp_path)
    assert result.returncode != 0
    errors = result.stdout
    assert '"absolut"' in errors, errors
    assert "'\"definition\"' does not exist" in errors, errors
    assert "Type 'number' is not assignable to type 'string" in errors, errors
    assert "missing the following properties" in errors and "text, value" in errors, errors
    assert "'\"expr\"' does not exist" in errors, errors
