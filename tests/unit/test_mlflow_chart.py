"""Our MLflow chart through the pinned Helm tools: lint, template of every ci case, the
helm-unittest suites, and values that the schema or the chart's validation must refuse."""

from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import pytest
import yaml

from mlplatform.charts import ChartError, helm_template
from mlplatform.lock import load_lock
from mlplatform.paths import BIN_DIR
from tests.conftest import REPO_ROOT

CHART = REPO_ROOT / "charts" / "mlflow"
CI_CASES = sorted((CHART / "ci").glob("*-values.yaml"))
# The version the pinned cluster tools run, as the modules render charts for.
KUBE_VERSION = load_lock().tools["kubernetes"].version


def _tool(name: str) -> str:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{name} is needed: run `mlplatform tools --only render` (make unit does)", pytrace=False)
    return str(path)


def _helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("helm"), *args], capture_output=True, text=True, cwd=CHART)


def _ci_values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())


def _with(values: dict, path: str, value) -> dict:
    values = json.loads(json.dumps(values))
    *parents, leaf = path.split(".")
    node = values
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return values


def test_there_are_lab_openshift_and_cloud_ci_cases():
    assert {p.name for p in CI_CASES} >= {"lab-values.yaml", "openshift-values.yaml", "cloud-values.yaml"}


@pytest.mark.parametrize("case", CI_CASES, ids=lambda p: p.stem)
def test_lint_strict_passes(case):
    proc = _helm("lint", "--strict", "--kube-version", KUBE_VERSION, ".", "--values", str(case))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("case", CI_CASES, ids=lambda p: p.stem)
def test_template_renders_the_server_and_its_migration(case):
    proc = _helm("template", "mlflow", ".", "--namespace", "mlflow", "--kube-version", KUBE_VERSION, "-f", str(case))
    assert proc.returncode == 0, proc.stderr
    objects = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in objects}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("NetworkPolicy", "mlflow")} <= kinds
    assert any(kind == "Job" and name.startswith("mlflow-db-upgrade") for kind, name in kinds)
    values = yaml.safe_load(case.read_text())
    in_cluster_db = values.get("database", {}).get("mode", "in-cluster") == "in-cluster"
    assert (("StatefulSet", "mlflow-postgres") in kinds) == in_cluster_db
    assert (("Route", "mlflow") in kinds) == bool(values.get("route", {}).get("enabled"))
    assert (("Ingress", "mlflow") in kinds) == bool(values.get("ingress", {}).get("enabled"))
    openshift = values.get("global", {}).get("openshift", False)
    for workload in (d for d in objects if d["kind"] in ("Deployment", "StatefulSet", "Job")):
        context = workload["spec"]["template"]["spec"]["securityContext"]
        assert ("runAsUser" in context) is not openshift, workload["metadata"]["name"]
        assert ("fsGroup" in context) is not openshift, workload["metadata"]["name"]


@pytest.mark.security
def test_helm_unittest_suites_pass():
    proc = subprocess.run([_tool("helm-unittest"), "--color=false", str(CHART)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Test Suites:" in proc.stdout and "failed" not in proc.stdout.split("Test Suites:")[1].splitlines()[0]


def test_values_file_points_at_its_schema_and_validates_against_it():
    text = (CHART / "values.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load(text)
    jsonschema.validate(defaults, schema)
    for case in CI_CASES:
        jsonschema.validate(_merged(defaults, yaml.safe_load(case.read_text())), schema)


def _merged(base: dict, override: dict) -> dict:
    """Values as Helm coalesces a values file over the chart's defaults."""
    result = dict(base)
    for key, value in override.items():
        result[key] = (
            _merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
        )
    return result


def _objects_with_properties(schema: dict, path: str = "$"):
    if isinstance(schema, dict):
        if "properties" in schema:
            yield path, schema
        for key, value in schema.items():
            yield from _objects_with_properties(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _objects_with_properties(value, f"{path}[{index}]")


def test_schema_refuses_unknown_keys_at_every_level():
    schema = json.loads((CHART / "values.schema.json").read_text())
    levels = list(_objects_with_properties(schema))
    assert len(levels) > 20
    for path, level in levels:
        # A parent chart shares `global` with all its subcharts: keys of theirs must pass.
        assert level.get("additionalProperties") is (path == "$.properties.global"), path


def test_chart_pins_kubernetes_and_the_server_image():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"].startswith(">=")
    assert chart["appVersion"].startswith("v3.")
    manifests = helm_template("mlflow", "mlflow", "mlflow", _ci_values("lab"), kube_version=KUBE_VERSION)
    server = next(m for m in manifests if m["kind"] == "Deployment")
    assert (
        server["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/mlflow/mlflow:{chart['appVersion']}"
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("serverr", {}, "additional properties 'serverr' not allowed"),
        ("server.imagee", "x", "additional properties 'imagee' not allowed"),
        ("database.external.hostname", "db", "additional properties 'hostname' not allowed"),
        ("database.mode", "sqlite", "database/mode"),
        ("auth.mode", "ldap", "auth/mode"),
        ("artifacts.bucket", "Not_A_Bucket", "artifacts/bucket"),
        ("server.replicas", "2", "server/replicas"),
        ("ingress.clusterIssuer", "Not An Issuer", "ingress/clusterIssuer"),
    ],
)
def test_schema_rejects_bad_values(path, value, message):
    with pytest.raises(ChartError) as refused:
        helm_template("mlflow", "mlflow", "mlflow", _with(_ci_values("lab"), path, value), kube_version=KUBE_VERSION)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("case", "changes", "message"),
    [
        ("lab", {"database.existingSecret": ""}, "database.existingSecret is required"),
        ("lab", {"database.mode": "external"}, "database.mode external needs database.external.host"),
        ("lab", {"artifacts.s3.endpoint": "https://s3.example.com"}, "in-cluster runs its own S3 gateway"),
        ("lab", {"artifacts.existingSecret": ""}, "artifacts.mode in-cluster needs artifacts.existingSecret"),
        ("openshift", {"ingress.enabled": True, "ingress.host": "m.example.com"}, "route.enabled and ingress.enabled"),
        ("lab", {"ingress.enabled": False, "route.enabled": True}, "route.enabled needs global.openshift"),
        ("lab", {"ingress.tlsSecret": ""}, "ingress.enabled needs ingress.tlsSecret"),
        ("lab", {"auth.basic.adminSecret": ""}, "auth.mode basic needs auth.basic.adminSecret"),
        ("lab", {"auth.mode": "oidc"}, "auth.mode oidc needs auth.oidc.issuerUrl"),
        ("cloud", {"migration.enabled": False}, "server.replicas > 1 needs migration.enabled"),
    ],
)
def test_impossible_combinations_fail_with_our_message(case, changes, message):
    values = _ci_values(case)
    for path, value in changes.items():
        values = _with(values, path, value)
    with pytest.raises(ChartError) as refused:
        helm_template("mlflow", "mlflow", "mlflow", values, kube_version=KUBE_VERSION)
    assert message in str(refused.value)


# Keys that name a Secret (or a key in one), never hold what is in it.
SECRET_REFERENCES = {"existingSecret", "adminSecret", "tlsSecret", "passwordKey", "imagePullSecrets"}


def _credential_keys(values, path=""):
    if isinstance(values, dict):
        for key, value in values.items():
            here = f"{path}.{key}" if path else key
            if key not in SECRET_REFERENCES and re.search(r"password|secret|token|accesskey", key, re.I):
                yield here
            yield from _credential_keys(value, here)
    elif isinstance(values, list):
        for index, value in enumerate(values):
            yield from _credential_keys(value, f"{path}[{index}]")


def test_values_and_ci_cases_only_name_secrets():
    for path in [CHART / "values.yaml", *CI_CASES]:
        assert list(_credential_keys(yaml.safe_load(path.read_text()))) == [], path.name
    assert list(_credential_keys({"auth": {"oidc": {"clientSecret": "x"}}})) == ["auth.oidc.clientSecret"]
