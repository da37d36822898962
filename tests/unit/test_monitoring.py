"""The monitoring module per environment, under Pulumi mocks: kube-prometheus at the locked tag
on lab and cloud, OpenShift's user workload monitoring there; custom resources valid against the
upstream CRD schemas; thresholds per environment; monitors only for enabled modules."""

from __future__ import annotations

import json
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from mlplatform.config.model import AlertmanagerSettings, PrometheusSettings
from mlplatform.modules.base import FORCE_ANNOTATION
from mlplatform.modules.monitoring import (
    CLUSTER_MONITORING_FIELD_MANAGER,
    PATCH_FIELD_MANAGER_ANNOTATION,
    PROMETHEUS_NAME,
    SELECTOR_LABELS,
    UPSTREAM_NAMESPACE,
    cluster_monitoring_patch_annotations,
    kube_prometheus_manifests,
    monitor_manifests,
    with_user_workload_enabled,
)
from mlplatform.modules.registry import composition_order, scrape_targets
from mlplatform.upstream import load_documents, upstream_sources
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


def kube_prometheus_file(mirror, name: str) -> list[dict]:
    """One file of kube-prometheus' manifests at the locked tag, read straight from the mirror."""
    source = upstream_sources()["kube-prometheus"]
    path = mirror / source.raw["mirror"] / source.files["manifests"] / name
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def images(workload: dict) -> list[str]:
    return [c["image"] for c in workload["spec"]["template"]["spec"]["containers"]]


# Workloads kept from kube-prometheus as released (file, kind, name).
UPSTREAM_WORKLOADS = [
    ("kubeStateMetrics-deployment.yaml", "Deployment", "kube-state-metrics"),
    ("nodeExporter-daemonset.yaml", "DaemonSet", "node-exporter"),
    ("grafana-deployment.yaml", "Deployment", "grafana"),
]


@pytest.mark.parametrize("stack", ["lab", "cloud"])
def test_lab_and_cloud_run_kube_prometheus_at_the_locked_tag(rendered, mirror, stack):
    objects = module_objects(rendered(stack))
    sources = upstream_sources()
    crds_version = sources["prometheus-operator-crds"].version
    crds = by_kind(objects, "CustomResourceDefinition")
    assert {name for _, name in crds} >= {
        f"{plural}.monitoring.coreos.com"
        for plural in ("prometheuses", "alertmanagers", "prometheusrules", "servicemonitors", "podmonitors")
    }
    for file, kind, name in UPSTREAM_WORKLOADS:
        (upstream,) = kube_prometheus_file(mirror, file)
        ours = by_kind(objects, kind)[("monitoring", name)]
        assert images(ours) == images(upstream), name
        assert ours["spec"]["selector"] == upstream["spec"]["selector"], name

    # The operator runs the version of the CRDs it serves, reloader included; the rest of its
    # Deployment is upstream's (kube-rbac-proxy in front of its metrics).
    (upstream_operator,) = kube_prometheus_file(mirror, "prometheusOperator-deployment.yaml")
    operator = by_kind(objects, "Deployment")[("monitoring", "prometheus-operator")]["spec"]["template"]["spec"]
    container, proxy = operator["containers"]
    assert container["image"] == f"quay.io/prometheus-operator/prometheus-operator:{crds_version}"
    assert (
        f"--prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:{crds_version}"
        in container["args"]
    )
    assert proxy == upstream_operator["spec"]["template"]["spec"]["containers"][1]
    assert operator["serviceAccountName"] == "prometheus-operator"
    assert ("", "prometheus-operator") in by_kind(objects, "ClusterRoleBinding")

    (upstream_prometheus,) = kube_prometheus_file(mirror, "prometheus-prometheus.yaml")
    prometheus = by_kind(objects, "Prometheus")[("monitoring", upstream_prometheus["metadata"]["name"])]["spec"]
    for selector in ("ruleSelector", "serviceMonitorSelector", "podMonitorSelector", "probeSelector"):
        assert prometheus[selector] == {"matchLabels": SELECTOR_LABELS}, selector
    assert prometheus["image"] == upstream_prometheus["spec"]["image"]
    assert prometheus["replicas"] == 1 and prometheus["externalLabels"] == {"mlplatform_stack": stack}
    assert prometheus["alerting"]["alertmanagers"][0]["namespace"] == "monitoring"
    (upstream_alertmanager,) = kube_prometheus_file(mirror, "alertmanager-alertmanager.yaml")
    alertmanager = by_kind(objects, "Alertmanager")[("monitoring", upstream_alertmanager["metadata"]["name"])]
    assert alertmanager["spec"]["image"] == upstream_alertmanager["spec"]["image"]
    assert alertmanager["spec"]["replicas"] == 1
    # One replica each: upstream's budgets of one available pod would block node drains.
    assert not by_kind(objects, "PodDisruptionBudget")
    # Left out: the blackbox exporter and prometheus-adapter (no metrics.k8s.io APIService).
    names = {m["metadata"]["name"] for m in objects}
    assert not {"blackbox-exporter", "prometheus-adapter"} & names
    assert not [m for m in rendered(stack) if m["kind"] == "APIService" and "metrics.k8s.io" in m["metadata"]["name"]]
    assert "cluster-monitoring-config" not in names


@pytest.mark.parametrize("stack", ["lab", "cloud"])
def test_upstream_monitors_and_rules_are_kept_and_selected_by_our_label(rendered, mirror, stack):
    objects = module_objects(rendered(stack))
    upstream_rules = {d["metadata"]["name"] for d in kube_prometheus_file(mirror, "nodeExporter-prometheusRule.yaml")}
    upstream_rules |= {
        d["metadata"]["name"] for d in kube_prometheus_file(mirror, "kubePrometheus-prometheusRule.yaml")
    }
    rules = {name for _, name in by_kind(objects, "PrometheusRule")}
    assert upstream_rules <= rules
    monitors = by_kind(objects, "ServiceMonitor")
    for name in ("kubelet", "node-exporter", "kube-state-metrics", "grafana", "prometheus-operator"):
        assert SELECTOR_LABELS.items() <= monitors[("monitoring", name)]["metadata"]["labels"].items(), name
    # Our monitors select across namespaces: Prometheus discovers targets cluster-wide.
    role = by_kind(objects, "ClusterRole")[("", "prometheus-k8s")]
    assert {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]} in (
        role["rules"]
    )


def test_grafana_shows_upstream_and_our_dashboards_from_our_prometheus(rendered, mirror):
    objects = module_objects(rendered("lab"))
    config_maps = by_kind(objects, "ConfigMap")
    (definitions,) = kube_prometheus_file(mirror, "grafana-dashboardDefinitions.yaml")
    upstream = {item["metadata"]["name"] for item in definitions["items"]}
    ours = {name for (_, name), m in config_maps.items() if any(k.endswith(".json") for k in m.get("data", {}))}
    ours -= upstream
    assert ours == {"ml-alerts-dashboard-gpu", "ml-alerts-dashboard-quotas", "ml-alerts-dashboard-serving"}
    assert {("monitoring", name) for name in upstream} <= config_maps.keys()

    grafana = by_kind(objects, "Deployment")[("monitoring", "grafana")]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in grafana["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in grafana["volumes"]}
    for name in upstream | ours:
        assert mounts[name].startswith("/grafana-dashboard-definitions/0/"), name
        assert volumes[name]["configMap"]["name"] == name
    for name in ours:
        assert mounts[name] == f"/grafana-dashboard-definitions/0/{name}"
    # The datasource names the Prometheus Service in our namespace; no credential, so a ConfigMap.
    datasources = json.loads(config_maps[("monitoring", "grafana-datasources")]["data"]["datasources.yaml"])
    assert [d["url"] for d in datasources["datasources"]] == ["http://prometheus-k8s.monitoring.svc:9090"]
    assert volumes["grafana-datasources"] == {
        "name": "grafana-datasources",
        "configMap": {"name": "grafana-datasources"},
    }
    assert ("monitoring", "prometheus-k8s") in by_kind(objects, "Service")
    assert not by_kind(objects, "Secret")


def _kube_prometheus(mirror, namespace: str = "observability", fixed_uids: bool = True, **settings):
    source = upstream_sources()["kube-prometheus"]
    operator = upstream_sources()["prometheus-operator-crds"]
    return kube_prometheus_manifests(
        load_documents(source, "manifests", mirror),
        namespace=namespace,
        labels={"mlplatform.io/stack": "lab"},
        prometheus=PrometheusSettings(**settings),
        alertmanager=AlertmanagerSettings(),
        stack="lab",
        fixed_uids=fixed_uids,
        operator_version=operator.version,
        operator_images=(operator.get("operatorImage"), operator.get("configReloaderImage")),
        dashboards=["ml-alerts-dashboard-gpu"],
    )


def test_nothing_is_left_in_upstreams_namespace(mirror):
    manifests = _kube_prometheus(mirror, "observability")
    assert UPSTREAM_NAMESPACE != "observability"
    text = json.dumps(manifests)
    assert f'"{UPSTREAM_NAMESPACE}"' not in text and f".{UPSTREAM_NAMESPACE}.svc" not in text
    namespaced = {m["metadata"].get("namespace") for m in manifests} - {None}
    # Upstream's discovery Roles in default and kube-system are replaced by the ClusterRole.
    assert namespaced == {"observability"}
    subjects = [s for m in manifests for s in m.get("subjects", [])]
    assert subjects and {s["namespace"] for s in subjects} == {"observability"}
    (prometheus,) = [m for m in manifests if m["kind"] == "Prometheus"]
    assert {a["namespace"] for a in prometheus["spec"]["alerting"]["alertmanagers"]} == {"observability"}


def test_the_prometheus_settings_of_the_config_are_applied(mirror):
    (prometheus,) = [
        m
        for m in _kube_prometheus(mirror, replicas=2, retention="7d", storageClass="fast", storageSize="10Gi")
        if m["kind"] == "Prometheus"
    ]
    spec = prometheus["spec"]
    assert (spec["replicas"], spec["retention"]) == (2, "7d")
    claim = spec["storage"]["volumeClaimTemplate"]["spec"]
    assert (claim["storageClassName"], claim["resources"]["requests"]["storage"]) == ("fast", "10Gi")
    budgets = [
        m["metadata"]["name"] for m in _kube_prometheus(mirror, replicas=2) if m["kind"] == "PodDisruptionBudget"
    ]
    assert budgets == ["prometheus-k8s"]


@pytest.mark.parametrize("fixed_uids", [True, False])
def test_fixed_ids_follow_the_profile(mirror, fixed_uids):
    found = set()
    for manifest in _kube_prometheus(mirror, fixed_uids=fixed_uids):
        contexts = []
        if manifest["kind"] in ("Prometheus", "Alertmanager"):
            contexts.append(manifest["spec"].get("securityContext") or {})
        if manifest["kind"] in ("Deployment", "DaemonSet"):
            pod = manifest["spec"]["template"]["spec"]
            contexts += [pod.get("securityContext") or {}, *(c.get("securityContext") or {} for c in pod["containers"])]
        found |= {field for context in contexts for field in ("runAsUser", "runAsGroup", "fsGroup") if field in context}
    assert found == ({"runAsUser", "runAsGroup", "fsGroup"} if fixed_uids else set())


def test_cloud_prometheus_keeps_its_data_on_the_stack_storage_class(rendered):
    prometheus = by_kind(rendered("cloud"), "Prometheus")[("monitoring", PROMETHEUS_NAME)]["spec"]
    claim = prometheus["storage"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3"
    assert claim["resources"]["requests"]["storage"] == "200Gi"
    assert prometheus["retention"] == "30d"
    assert "storage" not in by_kind(rendered("lab"), "Prometheus")[("monitoring", PROMETHEUS_NAME)]["spec"]


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
        if "alert" in rule
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
    only_mlflow = _resolved(
        "lab", kserve=False, pipelines=False, notebooks=False, katib=False, workspaces=False, mlflow=True
    )
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


@pytest.mark.parametrize("stack", STACKS)
def test_node_exporter_is_admitted_where_it_runs_and_nowhere_else(mirror, monkeypatch, stack):
    """Pod Security refuses host namespaces below `privileged`: the monitoring namespace
    enforces it only where the stack runs node-exporter, and audits and warns at the
    profile's level; every other namespace of the render keeps its level."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared(stack)
    namespaces = {m["metadata"]["name"]: m["metadata"]["labels"] for m in manifests if m["kind"] == "Namespace"}
    exporter = [m for m in manifests if m["kind"] == "DaemonSet" and m["metadata"]["name"] == "node-exporter"]
    monitoring = namespaces["monitoring"]
    if exporter:
        (daemonset,) = exporter
        assert daemonset["metadata"]["namespace"] == "monitoring"
        assert daemonset["spec"]["template"]["spec"]["hostPID"] is True
        assert monitoring["pod-security.kubernetes.io/enforce"] == "privileged"
        assert monitoring["pod-security.kubernetes.io/audit"] == "restricted"
    else:
        assert stack == "openshift"
        assert monitoring["pod-security.kubernetes.io/enforce"] == "restricted"
    privileged = {
        n for n, labels in namespaces.items() if labels.get("pod-security.kubernetes.io/enforce") == "privileged"
    }
    assert privileged - {"monitoring"} <= {"nvidia-device-plugin", "nvidia-gpu-operator", "node-feature-discovery"}
