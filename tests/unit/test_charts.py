"""Every chart of ours: usable as a subchart (a parent's `global` values), documented by a
README whose values table matches values.yaml, and versioned whenever what it deploys changes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlplatform.lock import load_lock
from mlplatform.paths import BIN_DIR
from tests import chart_digest
from tests.conftest import REPO_ROOT

CHARTS = chart_digest.charts()
# The version the pinned cluster tools run, as the modules render charts for.
KUBE_VERSION = load_lock().tools["kubernetes"].version


def test_the_charts_are_found():
    assert {c.name for c in CHARTS} >= {"mlflow", "ml-alerts"}
    assert chart_digest.CHARTS_DIR == REPO_ROOT / "charts"


def _ci_case(chart: Path) -> Path:
    """A values file the chart renders with (mlflow needs its Secrets named)."""
    cases = sorted((chart / "ci").glob("*-values.yaml"))
    return next((c for c in cases if c.name == "lab-values.yaml"), cases[0])


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_global_values_of_a_parent_chart_are_accepted(chart):
    helm = BIN_DIR / "helm"
    if not helm.exists():
        pytest.fail("helm is needed: run `mlplatform tools --only render` (make unit does)", pytrace=False)
    command = [
        str(helm),
        "template",
        chart.name,
        str(chart),
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(_ci_case(chart)),
    ]
    proc = subprocess.run([*command, "--set", "global.foo=bar"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["properties"]["global"]["type"] == "object"
    # Only `global` is open: a misspelt top-level key is still refused.
    proc = subprocess.run([*command, "--set", "globl.foo=bar"], capture_output=True, text=True)
    assert proc.returncode != 0 and "globl" in proc.stderr


def _value_rows(values, schema: dict, path: str = ""):
    """(key, default) per row of the README's values table: objects the schema describes key by
    key are descended into; maps, lists and scalars are one row each."""
    if isinstance(values, dict) and "properties" in schema:
        for key, value in values.items():
            yield from _value_rows(value, schema["properties"].get(key, {}), f"{path}.{key}" if path else key)
    else:
        yield path, values


def _readme_rows(chart: Path) -> dict[str, str]:
    text = (chart / "README.md").read_text()
    section = text.split("\n## Values\n", 1)
    assert len(section) == 2, f"charts/{chart.name}/README.md has no '## Values' section"
    rows = {}
    for line in section[1].splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0] not in ("Key", "") and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_readme_values_table_matches_values_yaml(chart):
    values = yaml.safe_load((chart / "values.yaml").read_text())
    schema = json.loads((chart / "values.schema.json").read_text())
    expected = dict(_value_rows(values, schema))
    rows = _readme_rows(chart)
    readme = f"charts/{chart.name}/README.md"
    assert not set(expected) - set(rows), f"{readme} lacks rows for {sorted(set(expected) - set(rows))}"
    assert not set(rows) - set(expected), (
        f"{readme} has rows for keys values.yaml lacks: {sorted(set(rows) - set(expected))}"
    )
    for key, default in expected.items():
        _, kind, shown, description = rows[key]
        assert shown == f"`{json.dumps(default)}`", f"{readme}: default of {key} is {json.dumps(default)}"
        assert kind and description, f"{readme}: {key} needs a type and a description"


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_readme_states_version_and_prerequisites(chart):
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    text = (chart / "README.md").read_text()
    assert text.startswith(f"# {meta['name']}\n")
    assert f"Version: {meta['version']} " in text
    assert "## Prerequisites" in text and f"Kubernetes `{meta['kubeVersion']}`" in text
    assert "## Install" in text and f"helm install {meta['name']} charts/{meta['name']}" in text


def test_a_values_key_missing_from_the_readme_is_caught():
    schema = {"properties": {"a": {"properties": {"b": {}}}, "c": {}}}
    assert dict(_value_rows({"a": {"b": 1}, "c": {"x": "y"}}, schema)) == {"a.b": 1, "c": {"x": "y"}}


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_chart_version_is_bumped_when_what_it_deploys_changes(chart):
    assert (problem := chart_digest.problem(chart)) is None, problem


def test_the_digest_sees_template_changes_but_not_the_version_or_docs(tmp_path):
    chart = shutil.copytree(REPO_ROOT / "charts" / "ml-alerts", tmp_path / "ml-alerts")
    before = chart_digest.content_digest(chart)
    (chart / "README.md").write_text("other")
    (chart / "tests" / "extra_test.yaml").write_text("suite: x")
    chart_yaml = chart / "Chart.yaml"
    chart_yaml.write_text(re.sub(r"^version: .*$", "version: 9.9.9", chart_yaml.read_text(), flags=re.M))
    assert chart_digest.content_digest(chart) == before
    assert "not recorded" in chart_digest.problem(chart)
    chart_yaml.write_text(
        re.sub(
            r"^version: .*$", f"version: {chart_digest.recorded(chart)['version']}", chart_yaml.read_text(), flags=re.M
        )
    )
    template = chart / "templates" / "NOTES.txt"
    template.write_text(template.read_text() + "\n")
    assert chart_digest.content_digest(chart) != before
    assert "bump charts/ml-alerts/Chart.yaml version" in chart_digest.problem(chart)
    with pytest.raises(SystemExit, match="bump"):
        chart_digest.update(chart)
