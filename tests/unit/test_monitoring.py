"""The monitoring module per environment, under Pulumi mocks: our own Prometheus on lab and
cloud, OpenShift's user workload monitoring there; custom resources valid against the
upstream CRD schemas; thresholds per environment; monitors only for enabled modules."""

from __future__ import annotations

import json
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from mlplatform.config import resolve
from mlplatform.modules.monitoring import SELECTOR_LABELS, monitor_manifests, scrape_targets
from mlplatform.modules.registry import composition_order
from mlplatform.upstream import upstream_sources
from tests.conftest import REPO_ROOT, STACKS, render_shared

MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Prometheus", "Alertmanager"}


def stack_raw(stack: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


@pytest.fixture
def rendered(mirror, monkeypatch):
    """Every object of a stack, rendered once per test session under mocks."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))

    def of(stack: str) -> list[dict]:
        return render_shared(stack)

    return of


def module_objects(manifests: list[dict]) -> list[dict]:
    return [m for m in manifests if m["metadata"].get("labels", {}).get("mlplatform.io/module") == "monitoring"]


def by_kind(manifests: list[dict], kind: str) -> dict[tuple[str, str], dict]:
    return {(m["metadata"].get("namespace", ""), m["metadata"]["name"]): m for m in manifests if m["kind"] == kind}


def test_monitoring_is_composed_before_the_modules_whose_monitors_need_its_crds():
    order = composition_order(["kserve", "gpu", "mlflow", "pipelines", "tenancy", "monitoring"])
    assert order[0] == "monitoring"


@pytest.mark.parametrize("stack", ["lab", "cloud"])
def test_lab_and_cloud_run_a_prometheus_of_their_own(rendered, stack):
    objects = module_objects(rendered(stack))
    sources = upstream_sources()
    crds_version = sources["prometheus-operator-crds"].version
    crds = by_kind(objects, "CustomResourceDefinition")
    assert {name for _, name in crds} >= {
        f"{plural}.monitoring.coreos.com"
        for plural in ("prometheuses", "alertmanagers", "prometheusrules", "servicemonitors", "podmonitors")
    }

    deployments = by_kind(objects, "Deployment")
    operator = deployments[("monitoring", "prometheus-operator")]["spec"]["template"]["spec"]
    (container,) = operator["containers"]
    # The operator runs the version of the CRDs it serves, reloader included.
    assert container["image"] == f"quay.io/prometheus-operator/prometheus-operator:{crds_version}"
    assert (
        f"--prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:{crds_version}"
        in (container["args"])
    )
    assert operator["serviceAccountName"] == "prometheus-operator"
    assert ("", "mlplatform-prometheus-operator") in by_kind(objects, "ClusterRoleBinding")
    ksm = deployments[("monitoring", "kube-state-metrics")]["spec"]["template"]["spec"]["containers"][0]
    assert (
        ksm["image"] == f"registry.k8s.io/kube-state-metrics/kube-state-metrics:{sources['kube-state-metrics'].version}"
    )

    prometheus = by_kind(objects, "Prometheus")[("monitoring", "mlplatform")]["spec"]
    for selector in ("ruleSelector", "serviceMonitorSelector", "podMonitorSelector"):
        assert prometheus[selector] == {"matchLabels": SELECTOR_LABELS}, selector
    assert prometheus["image"] == f"quay.io/prometheus/prometheus:{sources['prometheus'].version}"
    assert prometheus["alerting"]["alertmanagers"][0]["namespace"] == "monitoring"
    assert ("monitoring", "mlplatform") in by_kind(objects, "Alertmanager")
    assert "cluster-monitoring-config" not in {m["metadata"]["name"] for m in objects}


def test_cloud_prometheus_keeps_its_data_on_the_stack_storage_class(rendered):
    prometheus = by_kind(rendered("cloud"), "Prometheus")[("monitoring", "mlplatform")]["spec"]
    claim = prometheus["storage"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3"
    assert claim["resources"]["requests"]["storage"] == "200Gi"
    assert prometheus["retention"] == "30d"
    assert "storage" not in by_kind(rendered("lab"), "Prometheus")[("monitoring", "mlplatform")]["spec"]


def test_openshift_uses_user_workload_monitoring_and_runs_no_prometheus(rendered):
    manifests = rendered("openshift")
    objects = module_objects(manifests)
    assert not by_kind(manifests, "CustomResourceDefinition").keys() & {
        ("", "prometheuses.monitoring.coreos.com"),
        ("", "prometheusrules.monitoring.coreos.com"),
    }
    assert not by_kind(manifests, "Prometheus") and not by_kind(manifests, "Alertmanager")
    # Only the model metrics gateway: the cluster runs Prometheus and its operator.
    assert set(by_kind(objects, "Deployment")) == {("monitoring", "model-metrics")}
    config = by_kind(objects, "ConfigMap")[("openshift-monitoring", "cluster-monitoring-config")]
    assert yaml.safe_load(config["data"]["config.yaml"]) == {"enableUserWorkload": True}
    namespace = by_kind(objects, "Namespace")[("", "monitoring")]
    assert namespace["metadata"]["labels"]["openshift.io/user-monitoring"] == "true"
    rules = by_kind(objects, "PrometheusRule")
    assert {ns for ns, _ in rules} == {"monitoring"} and len(rules) >= 3
    # User workload monitoring ignores namespace selectors: monitors sit beside their targets.
    for monitor in [*by_kind(objects, "ServiceMonitor").values(), *by_kind(objects, "PodMonitor").values()]:
        assert "namespaceSelector" not in monitor["spec"], monitor["metadata"]


@pytest.mark.parametrize("stack", STACKS)
def test_monitoring_resources_validate_against_the_upstream_crd_schemas(rendered, mirror, stack):
    custom = [m for m in rendered(stack) if m["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {m["kind"] for m in custom} >= {"PrometheusRule", "PodMonitor"}
    for manifest in custom:
        version = manifest["apiVersion"].split("/")[1]
        schema = json.loads(
            (
                mirror / "crd-schemas" / "monitoring.coreos.com" / f"{manifest['kind'].lower()}_{version}.json"
            ).read_text()
        )
        # The schemas hold Go regexes ((?i) mid-pattern) that Python's `re` refuses to compile
        # up front; patterns of fields we set are still checked.
        jsonschema.validators.validator_for(schema)(schema).validate(manifest)
    # The check can fail: a key the CRD does not know is refused.
    broken = {**custom[0], "spec": {**custom[0]["spec"], "scrapeEverything": True}}
    schema = json.loads(
        (mirror / "crd-schemas" / "monitoring.coreos.com" / f"{broken['kind'].lower()}_v1.json").read_text()
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


@pytest.mark.parametrize("stack", ["lab", "cloud"])
def test_every_monitor_and_rule_carries_the_label_our_prometheus_selects(rendered, stack):
    monitored = [m for m in rendered(stack) if m["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}]
    names = {(m["kind"], m["metadata"]["name"]) for m in monitored}
    assert {("ServiceMonitor", "dcgm-exporter"), ("ServiceMonitor", "kube-state-metrics")} <= names
    for manifest in monitored:
        assert SELECTOR_LABELS.items() <= manifest["metadata"]["labels"].items(), manifest["metadata"]


def test_the_gpu_module_scrapes_the_dcgm_exporter_with_its_pod_labels(rendered):
    monitor = by_kind(rendered("lab"), "ServiceMonitor")[("nvidia-device-plugin", "dcgm-exporter")]
    assert monitor["metadata"]["labels"]["mlplatform.io/module"] == "gpu"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


def test_without_the_monitoring_module_the_gpu_module_adds_no_service_monitor(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    raw = stack_raw("lab")
    raw["mlplatform:modules"]["monitoring"] = {"enabled": False}
    assert not [m for m in render_shared("lab", raw) if m["apiVersion"].startswith("monitoring.coreos.com/")]


def _rules(manifests: list[dict]) -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for m in manifests
        if m["kind"] == "PrometheusRule"
        for group in m["spec"]["groups"]
        for rule in group["rules"]
    }


def test_thresholds_are_set_per_environment(rendered):
    lab, cloud = _rules(rendered("lab")), _rules(rendered("cloud"))
    assert lab["GPUAllocatedButIdle"]["for"] == "4h"
    assert cloud["GPUAllocatedButIdle"]["for"] == "30m"
    assert lab["InferenceLatencyHigh"]["expr"].rstrip().endswith("> 2")
    assert cloud["InferenceLatencyHigh"]["expr"].rstrip().endswith("> 0.5")
    assert lab["ModelDriftHigh"]["labels"]["action"] == "retrain"


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_renders_rules_promtool_accepts(rendered, stack, tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed: run `make promtool`", pytrace=False)
    groups = [g for m in rendered(stack) if m["kind"] == "PrometheusRule" for g in m["spec"]["groups"]]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _resolved(stack: str, **modules: bool):
    raw = stack_raw(stack)
    for name, enabled in modules.items():
        raw["mlplatform:modules"].setdefault(name, {})["enabled"] = enabled
    return resolve(raw, source=f"stacks/Pulumi.{stack}.yaml", stack=stack)


def test_monitors_exist_only_for_enabled_modules(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    everything = {t.module for t in scrape_targets(_resolved("lab", kserve=True, mlflow=True, pipelines=True))}
    assert everything == {"kserve", "mlflow", "pipelines"}
    only_mlflow = _resolved("lab", kserve=False, pipelines=False, notebooks=False, katib=False, mlflow=True)
    assert [t.module for t in scrape_targets(only_mlflow)] == ["mlflow"]


def test_monitors_select_across_namespaces_or_sit_beside_their_targets(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    targets = scrape_targets(_resolved("openshift", kserve=True))
    kserve = [t for t in targets if t.module == "kserve"]
    assert kserve[0].namespaces == ("team-fraud", "team-network-failures")

    across = monitor_manifests(kserve, "monitoring", {}, beside_targets=False)
    assert [(m["metadata"]["namespace"], m["spec"]["namespaceSelector"]) for m in across] == [
        ("monitoring", {"any": True})
    ]
    beside = monitor_manifests(kserve, "monitoring", {}, beside_targets=True)
    assert [m["metadata"]["namespace"] for m in beside] == ["team-fraud", "team-network-failures"]
    for manifest in across + beside:
        assert manifest["kind"] == "PodMonitor"
        assert manifest["metadata"]["labels"]["mlplatform.io/monitoring"] == "true"
        assert manifest["spec"]["selector"] == {
            "matchExpressions": [{"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}]
        }


@pytest.mark.parametrize("stack", STACKS)
def test_model_quality_gauges_have_a_gateway_scraped_with_the_pushers_labels(rendered, stack):
    manifests = rendered(stack)
    objects = module_objects(manifests)
    gateway = by_kind(objects, "Deployment")[("monitoring", "model-metrics")]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("quay.io/prometheus/pushgateway:")
    assert container["ports"] == [{"name": "http", "containerPort": 9091}]
    monitor = by_kind(objects, "ServiceMonitor")[("monitoring", "model-metrics")]
    # The pushed `model` and `namespace` labels are what the model alerts report.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    guard = by_kind(objects, "NetworkPolicy")[("monitoring", "mlplatform-model-metrics")]["spec"]
    assert guard["podSelector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    assert guard["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team", "pipelines"]
    # Each team namespace has its way out to it.
    egress = [m for m in manifests if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == "allow-model-metrics"]
    assert egress and all(
        p["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"] == guard["podSelector"]["matchLabels"]
        for p in egress
    )
