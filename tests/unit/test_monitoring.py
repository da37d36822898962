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

from mlplatform.modules.base import FORCE_ANNOTATION
from mlplatform.modules.monitoring import (
    CLUSTER_MONITORING_FIELD_MANAGER,
    PATCH_FIELD_MANAGER_ANNOTATION,
    SELECTOR_LABELS,
    cluster_monitoring_patch_annotations,
    monitor_manifests,
    with_user_workload_enabled,
)
from mlplatform.modules.registry import composition_order, scrape_targets
from mlplatform.upstream import upstream_sources
from mlplatform.validation import resolve
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


# What an OpenShift cluster's config.yaml may already hold (its admins' settings).
CLUSTER_CONFIG = """\
# Platform monitoring, as the cluster's admins set it.
prometheusK8s:
  retention: 24h
  volumeClaimTemplate:
    spec:
      storageClassName: gp3-csi
alertmanagerMain:
  enableUserAlertmanagerConfig: true
"""


@pytest.mark.security
@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, {"enableUserWorkload": True}),
        ("", {"enableUserWorkload": True}),
        (CLUSTER_CONFIG, {**yaml.safe_load(CLUSTER_CONFIG), "enableUserWorkload": True}),
        (
            "enableUserWorkload: false  # off for now\nprometheusK8s: {retention: 24h}",
            {"enableUserWorkload": True, "prometheusK8s": {"retention": "24h"}},
        ),
        ("{prometheusK8s: {retention: 24h}}", {"enableUserWorkload": True, "prometheusK8s": {"retention": "24h"}}),
        ('"enableUserWorkload": false\n', {"enableUserWorkload": True}),
    ],
)
def test_user_workload_monitoring_is_added_to_the_clusters_config(current, expected):
    merged = with_user_workload_enabled(current)
    assert yaml.safe_load(merged) == expected


@pytest.mark.security
def test_the_clusters_config_text_is_kept_as_written():
    merged = with_user_workload_enabled(CLUSTER_CONFIG)
    # Comments and layout stay: the key is added, nothing rewritten.
    assert merged == CLUSTER_CONFIG + "enableUserWorkload: true\n"
    # Already on: the very same text, so nothing changes on the cluster.
    assert with_user_workload_enabled(merged) == merged


@pytest.mark.security
@pytest.mark.parametrize("broken", ["prometheusK8s: [unclosed", "- a list\n- of things\n"])
def test_a_config_that_is_not_a_yaml_mapping_is_not_overwritten(broken):
    with pytest.raises(ValueError, match=r"config\.yaml of cluster-monitoring-config"):
        with_user_workload_enabled(broken)


def test_only_a_change_to_text_another_manager_wrote_is_forced():
    manager = {PATCH_FIELD_MANAGER_ANNOTATION: CLUSTER_MONITORING_FIELD_MANAGER}
    merged = with_user_workload_enabled(CLUSTER_CONFIG)
    assert cluster_monitoring_patch_annotations(CLUSTER_CONFIG, merged) == {**manager, FORCE_ANNOTATION: "true"}
    assert cluster_monitoring_patch_annotations(merged, merged) == manager
    # A ConfigMap we create is not forced: one made meanwhile fails the apply, not lost.
    assert cluster_monitoring_patch_annotations(None, with_user_workload_enabled(None)) == manager


@pytest.mark.security
def test_openshift_patches_the_clusters_monitoring_config_and_leaves_it_on_destroy(run_stack, monkeypatch):
    import pulumi_kubernetes as k8s

    from mlplatform.modules import monitoring

    options = {}

    class Spy(k8s.core.v1.ConfigMapPatch):
        def __init__(self, name, *args, opts=None, **kwargs):
            options[name] = opts
            super().__init__(name, *args, opts=opts, **kwargs)

    monkeypatch.setattr(k8s.core.v1, "ConfigMapPatch", Spy)
    monkeypatch.setattr(monitoring, "read_cluster_monitoring_config", lambda resolved: CLUSTER_CONFIG)
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in stack_raw("openshift").items()}
    config["mlplatform:modules"] = json.dumps({"monitoring": {"enabled": True}})
    mocks, _ = run_stack("openshift", config, fresh=True)

    name = "openshift-monitoring/cluster-monitoring-config"
    (patch,) = [r for r in mocks.resources if r.name == name]
    assert patch.typ == "kubernetes:core/v1:ConfigMapPatch"
    # Only our key is added; every setting the cluster had stays.
    config_yaml = patch.inputs["data"]["config.yaml"]
    assert yaml.safe_load(config_yaml) == {**yaml.safe_load(CLUSTER_CONFIG), "enableUserWorkload": True}
    assert config_yaml.startswith(CLUSTER_CONFIG)
    # Destroy leaves the cluster's object where it is; state holding it as a ConfigMap is taken over.
    assert options[name].retain_on_delete is True
    assert [alias.type_ for alias in options[name].aliases] == ["kubernetes:core/v1:ConfigMap"]
    # Renders carry no provider annotation (force, field manager).
    assert not patch.inputs["metadata"].get("annotations")


def test_the_live_config_is_read_with_the_stacks_kubeconfig(mirror, monkeypatch, tmp_path):
    import pulumi

    from mlplatform.modules import base, monitoring

    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    resolved = _resolved("openshift")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setattr(base, "under_mocks", lambda: False)
    monkeypatch.setattr(base, "target_kubeconfig", lambda resolved: str(kubeconfig))
    monkeypatch.setattr(monitoring, "BIN_DIR", tmp_path)
    calls = tmp_path / "calls"

    def fake_kubectl(script: str) -> None:
        path = tmp_path / "kubectl"
        path.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{script}\n')
        path.chmod(0o755)

    fake_kubectl("exit 0")  # --ignore-not-found prints nothing for a missing ConfigMap
    assert monitoring.read_cluster_monitoring_config(resolved) is None
    assert f"--kubeconfig={kubeconfig}" in calls.read_text()
    assert "get configmap cluster-monitoring-config --namespace openshift-monitoring" in calls.read_text()

    found = {"data": {"config.yaml": CLUSTER_CONFIG}}
    fake_kubectl(f"cat <<'EOF'\n{json.dumps(found)}\nEOF")
    assert monitoring.read_cluster_monitoring_config(resolved) == CLUSTER_CONFIG
    fake_kubectl("echo '{\"data\": {}}'")
    assert monitoring.read_cluster_monitoring_config(resolved) == ""

    # What the cluster holds cannot be read: stop, rather than write over it.
    fake_kubectl("echo 'Forbidden' >&2; exit 1")
    with pytest.raises(pulumi.RunError, match="cannot read openshift-monitoring/cluster-monitoring-config"):
        monitoring.read_cluster_monitoring_config(resolved)
