"""charts/ml-alerts: the rules parse and behave as their promtool unit tests say, every alert
has a runbook, the dashboards' queries parse, and impossible values are refused."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlplatform.charts import ChartError, chart_path, helm_template
from mlplatform.lock import load_lock
from tests.conftest import REPO_ROOT

CHART = "ml-alerts"
PROMTOOL_TESTS = REPO_ROOT / "charts" / CHART / "tests" / "promtool"
DASHBOARDS = REPO_ROOT / "charts" / CHART / "dashboards"
SEVERITIES = {"info", "warning", "critical"}


def kube_version() -> str:
    return load_lock().tools["kubernetes"].version


def render(values: dict | None = None) -> list[dict]:
    return helm_template(CHART, CHART, "monitoring", values or {}, kube_version=kube_version())


def rule_groups(manifests: list[dict]) -> list[dict]:
    return [group for m in manifests if m["kind"] == "PrometheusRule" for group in m["spec"]["groups"]]


def alerts_of(manifests: list[dict]) -> list[dict]:
    return [rule for group in rule_groups(manifests) for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def promtool() -> str:
    # Installed by `make promtool` (part of `make unit`): missing is a failure, never a skip.
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is not installed: run `make promtool` (Debian package prometheus)", pytrace=False)
    return found


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True)


def test_promtool_is_the_version_the_lock_records(promtool):
    expected = str(load_lock().raw["packages"]["promtool"]["version"])
    output = subprocess.run([promtool, "--version"], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"version {re.escape(expected)}\b", output), output


@pytest.fixture(scope="module")
def rules_workdir(tmp_path_factory) -> Path:
    """The rules `helm template` renders with the chart's defaults, as a plain rules file beside
    copies of the promtool test files (promtool resolves rule_files relative to a test file)."""
    work = tmp_path_factory.mktemp("ml-alerts-rules")
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(render())}, sort_keys=False))
    for test_file in PROMTOOL_TESTS.glob("*.yaml"):
        shutil.copy(test_file, work / test_file.name)
    return work


def test_rendered_rules_pass_promtool_check(promtool, rules_workdir):
    proc = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=rules_workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts_of(render()))} rules found" in proc.stdout


def test_promtool_unit_tests_pass(promtool, rules_workdir):
    test_files = sorted(p.name for p in PROMTOOL_TESTS.glob("*.yaml"))
    assert test_files
    proc = run_promtool(promtool, "test", "rules", *test_files, cwd=rules_workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_wrong_expectation_fails_the_promtool_tests(promtool, rules_workdir):
    """The harness can fail: a case expecting the wrong severity is reported."""
    case = yaml.safe_load((PROMTOOL_TESTS / "models.yaml").read_text())
    case["tests"][1]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["severity"] = "critical"
    (rules_workdir / "broken-case.yaml").write_text(yaml.safe_dump(case))
    proc = run_promtool(promtool, "test", "rules", "broken-case.yaml", cwd=rules_workdir)
    assert proc.returncode != 0
    assert "ModelDriftHigh" in proc.stdout + proc.stderr


def _cases() -> dict[str, dict[str, int]]:
    """alert name -> how many test cases expect it to fire / to stay silent."""
    counts: dict[str, dict[str, int]] = {}
    for test_file in PROMTOOL_TESTS.glob("*.yaml"):
        for test in yaml.safe_load(test_file.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                outcome = "fires" if case.get("exp_alerts") else "silent"
                counts.setdefault(case["alertname"], {"fires": 0, "silent": 0})[outcome] += 1
    return counts


def test_every_alert_has_a_firing_and_a_silent_case():
    names = {rule["alert"] for rule in alerts_of(render())}
    cases = _cases()
    assert set(cases) == names, f"cases for unknown alerts: {set(cases) - names}"
    for name in sorted(names):
        assert cases[name]["fires"] >= 1, f"{name}: no case where it fires"
        assert cases[name]["silent"] >= 1, f"{name}: no case where it stays silent"


# The document runbookBaseUrl serves: one section per alert.
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"


def _runbook_anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), flags=re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_severity_summary_description_and_a_runbook_section():
    anchors = _runbook_anchors()
    base_url = yaml.safe_load((chart_path(CHART) / "values.yaml").read_text())["runbookBaseUrl"]
    assert re.fullmatch(r"https://[^/#]+/\S*", base_url), base_url
    for rule in alerts_of(render()):
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == base_url and anchor == name.lower(), rule["annotations"]["runbook_url"]
        assert anchor in anchors, f"{RUNBOOKS.name} has no section {name} for the runbook of {name}"


@pytest.mark.parametrize(
    "base",
    ["README.md", "/docs/runbooks.md", "docs.example.com/runbooks.md", "https://docs.example.com/r.md#top", ""],
)
def test_a_runbook_base_that_is_not_an_absolute_url_is_refused(base):
    with pytest.raises(ChartError, match="runbookBaseUrl"):
        render({"runbookBaseUrl": base})


def test_the_chart_refuses_a_relative_runbook_base_even_without_its_schema():
    from mlplatform.paths import BIN_DIR

    command = [str(BIN_DIR / "helm"), "template", CHART, str(chart_path(CHART)), "--skip-schema-validation"]
    proc = subprocess.run(
        [*command, "--kube-version", kube_version(), "--set", "runbookBaseUrl=README.md"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert 'runbookBaseUrl "README.md" must be an absolute http(s) URL' in proc.stderr


def test_the_monitoring_config_defaults_to_the_charts_runbook_base():
    from mlplatform.config.model import AlertThresholds

    chart_default = yaml.safe_load((chart_path(CHART) / "values.yaml").read_text())["runbookBaseUrl"]
    assert AlertThresholds().runbook_base_url == chart_default
    with pytest.raises(ValueError, match="absolute https URL"):
        AlertThresholds(runbookBaseUrl="README.md")


def test_model_alerts_carry_the_retraining_labels():
    rules = {rule["alert"]: rule for rule in alerts_of(render({"models": {"retrainLabels": {"action": "retrain"}}}))}
    assert rules["ModelAccuracyLow"]["labels"]["action"] == "retrain"
    assert rules["ModelDriftHigh"]["labels"]["action"] == "retrain"
    assert "action" not in rules["GPUXidErrors"]["labels"]


def test_thresholds_come_from_values():
    rules = {
        rule["alert"]: rule
        for rule in alerts_of(
            render(
                {
                    "gpu": {"temperature": {"warningCelsius": 70, "criticalCelsius": 80}, "idle": {"for": "4h"}},
                    "serving": {"latency": {"p95Seconds": 0.25}},
                    "models": {"drift": {"max": 0.12}},
                }
            )
        )
    }
    assert rules["GPUTemperatureHigh"]["expr"].endswith(">= 70")
    assert rules["GPUTemperatureCritical"]["expr"].endswith(">= 80")
    assert rules["GPUAllocatedButIdle"]["for"] == "4h"
    assert rules["InferenceLatencyHigh"]["expr"].rstrip().endswith("> 0.25")
    assert rules["ModelDriftHigh"]["expr"] == "model_drift_score > 0.12"


def test_rules_carry_the_label_prometheus_selects_and_groups_can_be_turned_off():
    manifests = render({"gpu": {"enabled": False}, "serving": {"enabled": False}})
    rules = [m for m in manifests if m["kind"] == "PrometheusRule"]
    assert {m["metadata"]["name"] for m in rules} == {"ml-alerts-capacity", "ml-alerts-models"}
    for manifest in rules:
        assert manifest["metadata"]["labels"]["mlplatform.io/monitoring"] == "true"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gpu": {"temperature": {"warningCelsius": 90, "criticalCelsius": 85}}},
            "gpu.temperature.warningCelsius (90) must be below gpu.temperature.criticalCelsius (85)",
        ),
        (
            {k: {"enabled": False} for k in ("gpu", "capacity", "serving", "models", "dashboards")},
            "the release would be empty",
        ),
        # null removes a default key (helm merges maps).
        ({"models": {"retrainLabels": {"action": None}}}, "models.retrainLabels is empty"),
        (
            {"models": {"drift": {"metric": "model_accuracy"}}},
            'models.accuracy.metric and models.drift.metric are both "model_accuracy"',
        ),
        ({"ruleLabels": {"mlplatform.io/monitoring": None}}, "ruleLabels is empty"),
    ],
)
def test_impossible_combinations_are_refused(values, message):
    with pytest.raises(ChartError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"gpu": {"temperatur": {"warningCelsius": 80}}},
        {"capacity": {"quotaSaturation": {"ratio": 1.5}}},
        {"gpu": {"idle": {"for": "an hour"}}},
        {"serving": {"errors": {"requestsMetric": "not a metric"}}},
    ],
)
def test_the_schema_refuses_unknown_keys_and_bad_values(values):
    with pytest.raises(ChartError, match="values don't meet the specifications of the schema"):
        render(values)


@pytest.mark.parametrize("values_file", sorted((chart_path(CHART) / "ci").glob("*-values.yaml")), ids=lambda p: p.stem)
def test_ci_value_sets_render_rules_promtool_accepts(values_file, promtool, tmp_path):
    manifests = render(yaml.safe_load(values_file.read_text()) or {})
    assert manifests
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(manifests)}))
    proc = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dashboard_files() -> list[Path]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "no dashboards"
    return files


def test_dashboards_ship_as_sidecar_configmaps_holding_valid_json():
    maps = {m["metadata"]["name"]: m for m in render() if m["kind"] == "ConfigMap"}
    assert set(maps) == {f"ml-alerts-dashboard-{p.stem}" for p in _dashboard_files()}
    for path in _dashboard_files():
        config_map = maps[f"ml-alerts-dashboard-{path.stem}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        dashboard = json.loads(config_map["data"][path.name])
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]


def test_every_dashboard_query_parses(promtool, tmp_path):
    """promtool parses each panel's PromQL as the expression of a throwaway recording rule."""
    rules = []
    for path in _dashboard_files():
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                rules.append(
                    {"record": f"dashboard:{path.stem}:{panel['id']}{target['refId']}", "expr": target["expr"]}
                )
    (tmp_path / "dashboard-queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    proc = run_promtool(promtool, "check", "rules", "dashboard-queries.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_a_broken_dashboard_query_is_caught(promtool, tmp_path):
    rules = [{"record": "dashboard:broken", "expr": "sum by (namespace (DCGM_FI_DEV_GPU_UTIL)"}]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    assert run_promtool(promtool, "check", "rules", "broken.yaml", cwd=tmp_path).returncode != 0


def test_helm_unittest_suites_pass():
    from mlplatform.paths import BIN_DIR

    tool = BIN_DIR / "helm-unittest"
    if not tool.exists():
        pytest.fail("helm-unittest is not built: run `make tools-test`", pytrace=False)
    proc = subprocess.run([str(tool), "--color=false", str(chart_path(CHART))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Test Suites:\s+\d+ passed, \d+ total", proc.stdout), proc.stdout


def test_values_file_points_at_its_schema_and_passes_it():
    import jsonschema

    text = (chart_path(CHART) / "values.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"
    schema = json.loads((chart_path(CHART) / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    jsonschema.validate(yaml.safe_load(text), schema)


# Who publishes each metric the rules read, from the publishers' own sources: a rule that
# names a metric none of them publishes can never fire.
PUBLISHED_UPSTREAM: dict[str, set[str]] = {
    # dcgm-exporter's default counters (etc/default-counters.csv), which our exporter runs with.
    "dcgm-exporter": {
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
    },
    # kube-state-metrics (docs/metrics: workload/deployment, workload/pod, policy/resourcequota).
    "kube-state-metrics": {
        "kube_deployment_spec_replicas",
        "kube_deployment_status_replicas_available",
        "kube_pod_container_resource_requests",
        "kube_pod_status_phase",
        "kube_resourcequota",
    },
    # Prometheus's own series per scrape target.
    "prometheus": {"up"},
    # KServe's model server (python/kserve/kserve/metrics.py): one histogram per step.
    "kserve-model-server": {
        "request_preprocess_seconds",
        "request_predict_seconds",
        "request_postprocess_seconds",
        "request_explain_seconds",
    },
}
EXAMPLE_PIPELINE = REPO_ROOT / "examples" / "stock-prediction" / "pipeline.py"
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def gauges_the_example_pushes() -> set[str]:
    """The metric names the example's publishing step creates (prometheus_client Gauges)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(EXAMPLE_PIPELINE.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Gauge" and node.args:
            names.add(node.args[0].value)
    return names


def metrics_read_by(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in matchers and grouping clauses) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in re.finditer(r"(?<![0-9A-Za-z_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        word = match.group(0)
        if following.startswith("(") or word in _PROMQL_WORDS or word in ("inf", "nan", "Inf", "NaN"):
            continue
        names.add(word)
    return names


# Published as histograms: their series are <name>_bucket, _count and _sum.
HISTOGRAMS = PUBLISHED_UPSTREAM["kserve-model-server"]


def published_metrics() -> dict[str, str]:
    published = {name: source for source, names in PUBLISHED_UPSTREAM.items() for name in names}
    for histogram in HISTOGRAMS:
        published.update(dict.fromkeys((f"{histogram}_{s}" for s in ("bucket", "count", "sum")), published[histogram]))
    published.update(dict.fromkeys(gauges_the_example_pushes(), "examples/stock-prediction publish_quality"))
    return published


def test_the_example_publishes_the_gauges_the_model_alerts_read():
    assert gauges_the_example_pushes() == {"model_accuracy", "model_drift_score"}


def test_a_metric_extractor_that_misses_names_fails():
    assert metrics_read_by('sum by (le, namespace) (rate(foo_bucket{a="b"}[5m])) > bar offset 5m') == {
        "foo_bucket",
        "bar",
    }


@pytest.mark.parametrize("stack", ["lab", "openshift", "cloud"])
def test_every_metric_a_shipped_rule_reads_has_a_publisher(stack):
    """The rules as each shipped stack deploys them (the monitoring module's values)."""
    from mlplatform.modules.monitoring import alert_values
    from mlplatform.validation import load_stack

    manifests = render(alert_values(load_stack(stack), {}))
    published = published_metrics()
    unpublished = {
        (rule.get("alert") or rule.get("record"), name)
        for group in rule_groups(manifests)
        for rule in group["rules"]
        for name in metrics_read_by(str(rule["expr"]))
        if name not in published
    }
    assert not unpublished, f"{stack}: rules read metrics nothing publishes: {sorted(unpublished)}"


def test_promtool_cases_feed_only_published_metrics():
    """The promtool tests exercise the rules with the series the publishers really emit."""
    published = published_metrics()
    fed = set()
    for path in PROMTOOL_TESTS.glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for series in case.get("input_series", []):
                fed.add(series["series"].split("{", 1)[0].strip())
    # The error-ratio case feeds Knative's queue-proxy counter: that rule runs in Serverless only.
    assert fed - set(published) == {"revision_request_count"}
