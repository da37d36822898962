"""Monitoring: kube-prometheus from the pinned upstream manifests where the cluster has no
monitoring of its own (lab, cloud), the cluster's user workload monitoring where it has one
(OpenShift); the platform's alert rules and Grafana dashboards (charts/ml-alerts); scrape
monitors for the services of the enabled modules."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pulumi
import yaml

from mlplatform.charts import helm_template
from mlplatform.config import ResolvedConfig
from mlplatform.config.model import AlertmanagerSettings, PrometheusSettings
from mlplatform.modules import base, placement
from mlplatform.modules.base import FORCE_ANNOTATION, Module, ModuleContext, create_object, target_kube_version
from mlplatform.modules.contracts import MonitoringOutputs, ScrapeTarget
from mlplatform.modules.crd_bundle import install_crds
from mlplatform.paths import BIN_DIR
from mlplatform.tenancy import network
from mlplatform.upstream import load_documents

# Our Prometheus selects rules and monitors by this label, never by a chart release's labels.
MONITORING_LABEL = "mlplatform.io/monitoring"
SELECTOR_LABELS = {MONITORING_LABEL: "true"}
ALERTS_CHART = "ml-alerts"
# The monitoring stack where the cluster has none: kube-prometheus as released (the lock's
# `kube-prometheus` source), moved into our namespace; its Prometheus and Alertmanager keep
# upstream's names.
KUBE_PROMETHEUS = "kube-prometheus"
UPSTREAM_NAMESPACE = "monitoring"
PROMETHEUS_NAME = "k8s"
ALERTMANAGER_NAME = "main"
# What is kept of it, by app.kubernetes.io/name: the operator, Prometheus, Alertmanager, the
# exporters and Grafana, their rules (kube-prometheus) and the monitors of the cluster's own
# components. Left out: the blackbox exporter (it probes endpoints nothing of ours defines) and
# prometheus-adapter (it registers the cluster's metrics.k8s.io API, which metrics-server or
# the provider already serves).
KUBE_PROMETHEUS_COMPONENTS = frozenset(
    {
        "prometheus-operator",
        "prometheus",
        "alertmanager",
        "kube-state-metrics",
        "node-exporter",
        "grafana",
        "kube-prometheus",
        "apiserver",
        "coredns",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
    }
)
# Upstream's Prometheus discovers targets in three namespaces; our monitors select theirs in
# every namespace (team namespaces, the ML services), so it reads them cluster-wide.
PROMETHEUS_DISCOVERY_RULES = [
    {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
]
# Where upstream's Grafana reads dashboard files (its file provider's path): ours are mounted there too.
GRAFANA_DASHBOARD_PATH = "/grafana-dashboard-definitions/0"
# Grafana's files hold no credential: kept as ConfigMaps, the pack's plaintext-Secret rule
# stays meaningful for the ones that do.
GRAFANA_CONFIG_FILES = ("grafana-config", "grafana-datasources")
# The kinds a selector of our Prometheus picks up, upstream's included.
MONITOR_KINDS = frozenset({"ServiceMonitor", "PodMonitor", "PrometheusRule", "Probe", "ScrapeConfig"})
# The Pushgateway holding pushed model quality gauges (model_accuracy, model_drift_score).
MODEL_METRICS = "model-metrics"
MODEL_METRICS_PORT = 9091
MODEL_METRICS_SELECTOR = {"app.kubernetes.io/name": "pushgateway", "app.kubernetes.io/instance": MODEL_METRICS}
CLUSTER_MONITORING_NAMESPACE = "openshift-monitoring"
# The cluster's monitoring config (OpenShift's cluster monitoring operator reads the YAML held
# in its one key); user workload monitoring is on with enableUserWorkload: true there.
CLUSTER_MONITORING_CONFIG = "cluster-monitoring-config"
CLUSTER_MONITORING_KEY = "config.yaml"
USER_WORKLOAD_KEY = "enableUserWorkload"
# The field manager our patch applies with: data.config.yaml (and our labels) are all it owns.
CLUSTER_MONITORING_FIELD_MANAGER = "mlplatform-monitoring"
PATCH_FIELD_MANAGER_ANNOTATION = "pulumi.com/patchFieldManager"

_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def monitor_manifests(
    targets: list[ScrapeTarget], namespace: str, labels: dict[str, str], beside_targets: bool
) -> list[dict[str, Any]]:
    """Where monitors must sit beside their targets (OpenShift's user workload monitoring
    ignores namespace selectors) one per target namespace; elsewhere one in our namespace
    that selects across namespaces."""
    manifests = []
    for target in targets:
        endpoints_key = "podMetricsEndpoints" if target.kind == "PodMonitor" else "endpoints"
        placements = [(ns, None) for ns in target.namespaces] if beside_targets else [(namespace, {"any": True})]
        for monitor_namespace, namespace_selector in placements:
            spec: dict[str, Any] = {
                "selector": copy.deepcopy(target.selector),
                endpoints_key: [copy.deepcopy(target.endpoint)],
            }
            if namespace_selector is not None:
                spec["namespaceSelector"] = namespace_selector
            manifests.append(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": target.kind,
                    "metadata": {
                        "name": target.name,
                        "namespace": monitor_namespace,
                        "labels": {**labels, **SELECTOR_LABELS, "mlplatform.io/scrapes": target.module},
                    },
                    "spec": spec,
                }
            )
    return manifests


def alert_values(resolved: ResolvedConfig, labels: dict[str, str]) -> dict[str, Any]:
    """Values of charts/ml-alerts for this stack: thresholds from config, groups by module."""
    modules = resolved.config.modules
    alerts = modules.monitoring.alerts
    gpu = modules.gpu
    # GPU rules need the DCGM exporter: ours or the GPU operator's (the managed path has none).
    dcgm = gpu.enabled and gpu.install != "managed" and gpu.dcgm_exporter.enabled
    return {
        "commonLabels": labels,
        "ruleLabels": dict(SELECTOR_LABELS),
        "runbookBaseUrl": alerts.runbook_base_url,
        "gpu": {
            "enabled": dcgm,
            "temperature": {
                "warningCelsius": alerts.gpu_temperature_warning_celsius,
                "criticalCelsius": alerts.gpu_temperature_critical_celsius,
            },
            "memoryPressure": {"usedRatio": alerts.gpu_memory_used_ratio},
            "idle": {"utilisationPercent": alerts.gpu_idle_utilisation_percent, "for": alerts.gpu_idle_for},
        },
        "capacity": {
            "enabled": gpu.enabled or modules.tenancy.enabled,
            "quotaSaturation": {"ratio": alerts.quota_saturation_ratio},
            "pendingGpuPods": {"for": alerts.pending_gpu_pods_for},
        },
        "serving": {
            "enabled": modules.kserve.enabled,
            "latency": {"p95Seconds": alerts.serving_p95_latency_seconds},
            # Only Knative's queue-proxy counts responses by code: RawDeployment predictors
            # publish latency histograms only, so no error ratio can be computed there.
            "errors": {"enabled": modules.kserve.deployment_mode == "Serverless", "ratio": alerts.serving_error_ratio},
        },
        "models": {
            "enabled": True,
            "accuracy": {"min": alerts.model_accuracy_min},
            "drift": {"max": alerts.model_drift_max},
        },
        "dashboards": {"enabled": modules.monitoring.dashboards},
    }


def with_user_workload_enabled(config_yaml: str | None) -> str:
    """The cluster's config.yaml with enableUserWorkload: true and everything else as it was.

    The text is edited, not re-dumped, so the cluster's other keys, comments and layout stay;
    text already enabling it comes back unchanged. Layouts a line edit cannot handle (flow
    style, a quoted key) are rewritten from the parsed mapping: every key kept, comments lost."""
    text = config_yaml or ""
    try:
        current = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{CLUSTER_MONITORING_KEY} of {CLUSTER_MONITORING_CONFIG} is not YAML: {exc}") from None
    current = {} if current is None else current
    if not isinstance(current, dict):
        raise ValueError(f"{CLUSTER_MONITORING_KEY} of {CLUSTER_MONITORING_CONFIG} is not a mapping")
    if current.get(USER_WORKLOAD_KEY) is True:
        return text
    wanted = {**current, USER_WORKLOAD_KEY: True}
    key_line = re.compile(rf"^{USER_WORKLOAD_KEY}[ \t]*:.*$", re.MULTILINE)
    if USER_WORKLOAD_KEY in current:
        edited = key_line.sub(f"{USER_WORKLOAD_KEY}: true", text, count=1)
    else:
        separator = "" if not text or text.endswith("\n") else "\n"
        edited = f"{text}{separator}{USER_WORKLOAD_KEY}: true\n"
    try:
        if yaml.safe_load(edited) == wanted:
            return edited
    except yaml.YAMLError:
        pass
    return yaml.safe_dump(wanted, sort_keys=False)


def cluster_monitoring_patch_annotations(live: str | None, text: str) -> dict[str, str]:
    """What the provider applies our config.yaml with: our field manager, and force only where
    we add the key to the text just read. Without force, a config.yaml another manager wrote
    refuses any change; text left as it was is shared with its writer and needs none, and so
    does a ConfigMap we create (one made in between fails the apply rather than being lost)."""
    annotations = {PATCH_FIELD_MANAGER_ANNOTATION: CLUSTER_MONITORING_FIELD_MANAGER}
    if live is not None and text != live:
        annotations[FORCE_ANNOTATION] = "true"
    return annotations


def _kubeconfig_file(kubeconfig: str | None, folder: str) -> str | None:
    """A path kubectl can read: the kubeconfig itself, or its content written to `folder`."""
    if not kubeconfig:
        return None
    try:
        if Path(kubeconfig).expanduser().is_file():
            return str(Path(kubeconfig).expanduser())
    except OSError:  # content too long to be a path
        pass
    path = Path(folder) / "kubeconfig"
    path.write_text(kubeconfig)
    path.chmod(0o600)
    return str(path)


def read_cluster_monitoring_config(resolved: ResolvedConfig) -> str | None:
    """The config.yaml the cluster's monitoring runs with now: None where there is no ConfigMap
    (a fresh cluster has none), "" where it holds no config.yaml. Read with kubectl, the stack's
    kubeconfig and context, as the program starts: Pulumi's ConfigMap.get fails on a missing
    object. Renders and tests (mock monitor) read nothing. Any failure stops the run: writing
    config.yaml without knowing what the cluster has would drop its other settings."""
    if base.under_mocks():
        return None
    name = f"{CLUSTER_MONITORING_NAMESPACE}/{CLUSTER_MONITORING_CONFIG}"
    pinned = BIN_DIR / "kubectl"
    kubectl = str(pinned) if pinned.exists() else shutil.which("kubectl") or shutil.which("oc")
    if kubectl is None:
        raise pulumi.RunError(f"monitoring: kubectl (or oc) is needed to read {name} before adding {USER_WORKLOAD_KEY}")
    context = resolved.config.cluster.context or resolved.provider_settings.get("context")
    with tempfile.TemporaryDirectory() as folder:
        command = [kubectl, "get", "configmap", CLUSTER_MONITORING_CONFIG, "--namespace", CLUSTER_MONITORING_NAMESPACE]
        command += ["--ignore-not-found", "--output=json", "--request-timeout=30s"]
        kubeconfig = _kubeconfig_file(base.target_kubeconfig(resolved), folder)
        if kubeconfig:
            command.append(f"--kubeconfig={kubeconfig}")
        if context:
            command.append(f"--context={context}")
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise pulumi.RunError(
            f"monitoring: cannot read {name}, whose other settings must be kept: {proc.stderr.strip()}"
        )
    if not proc.stdout.strip():
        return None
    return (json.loads(proc.stdout).get("data") or {}).get(CLUSTER_MONITORING_KEY, "")


def _walk_namespaces(value: Any, namespace: str) -> None:
    """Every `namespace: monitoring` (metadata, RBAC subjects, Alertmanager references) and
    every `matchNames` entry naming it, set to `namespace`, in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "namespace" and item == UPSTREAM_NAMESPACE:
                value[key] = namespace
            elif key == "matchNames" and isinstance(item, list):
                value[key] = [namespace if name == UPSTREAM_NAMESPACE else name for name in item]
            else:
                _walk_namespaces(item, namespace)
    elif isinstance(value, list):
        for item in value:
            _walk_namespaces(item, namespace)


def _without_fixed_ids(context: dict[str, Any] | None) -> None:
    for field in ("runAsUser", "runAsGroup", "fsGroup"):
        (context or {}).pop(field, None)


def _pod_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    if manifest["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
        return manifest["spec"]["template"]["spec"]
    return None


def kube_prometheus_manifests(
    documents: list[dict[str, Any]],
    *,
    namespace: str,
    labels: dict[str, str],
    prometheus: PrometheusSettings,
    alertmanager: AlertmanagerSettings,
    stack: str,
    fixed_uids: bool,
    operator_version: str,
    operator_images: tuple[str, str],
    dashboards: list[str],
) -> list[dict[str, Any]]:
    """kube-prometheus' objects as this stack runs them: the components we keep, in our
    namespace, with our labels, the config's Prometheus and Alertmanager settings, selectors on
    our label, the operator at the version of the CRDs we serve and Grafana showing our
    dashboards (ConfigMaps named in `dashboards`) beside upstream's."""
    objects = []
    for document in documents:
        # Upstream ships some objects as lists (the dashboards, per-namespace RBAC).
        items = (document.get("items") or []) if document["kind"].endswith("List") else [document]
        for item in items:
            component = (item["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
            if component in KUBE_PROMETHEUS_COMPONENTS:
                objects.append(item)
    replicas = {"prometheus": prometheus.replicas, "alertmanager": alertmanager.replicas}
    manifests = []
    for manifest in objects:
        kind, metadata = manifest["kind"], manifest["metadata"]
        component = metadata["labels"]["app.kubernetes.io/name"]
        # The operator makes Alertmanager's config itself where no Secret holds one: receivers
        # carry credentials, so the config is not a plaintext object of the stack.
        if kind == "Secret" and component == "alertmanager":
            continue
        # Upstream grants discovery per namespace (default, kube-system, its own); ours is
        # cluster-wide (PROMETHEUS_DISCOVERY_RULES), so those Roles would only repeat it.
        if kind in ("Role", "RoleBinding") and metadata["name"] == "prometheus-k8s":
            continue
        # A budget of one available pod over one replica would block every node drain.
        if kind == "PodDisruptionBudget" and replicas.get(component, 2) < 2:
            continue
        _walk_namespaces(manifest, namespace)
        for key in ("data", "stringData"):
            for file, text in (manifest.get(key) or {}).items():
                # Grafana's datasource names our Prometheus by its in-cluster address.
                manifest[key][file] = text.replace(f".{UPSTREAM_NAMESPACE}.svc", f".{namespace}.svc")
        # Upstream's labels win where both name one (`app.kubernetes.io/part-of`): its selectors,
        # Services, monitors and NetworkPolicies select by them. Ours add the inventory labels.
        metadata["labels"] = {**labels, **metadata["labels"]}
        if kind in MONITOR_KINDS:
            metadata["labels"].update(SELECTOR_LABELS)
        if kind == "Secret" and metadata["name"] in GRAFANA_CONFIG_FILES:
            manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": manifest["stringData"]}
        pod = _pod_spec(manifest)
        if kind == "Prometheus":
            _prometheus_spec(manifest["spec"], prometheus, stack)
        elif kind == "Alertmanager":
            manifest["spec"]["replicas"] = alertmanager.replicas
            manifest["spec"]["alertmanagerConfigSelector"] = {"matchLabels": dict(SELECTOR_LABELS)}
            manifest["spec"]["alertmanagerConfigNamespaceSelector"] = {}
        elif kind == "ClusterRole" and component == "prometheus":
            manifest["rules"] = [*manifest["rules"], *copy.deepcopy(PROMETHEUS_DISCOVERY_RULES)]
        elif kind == "Deployment" and component == "prometheus-operator":
            _operator_version(manifest, operator_version, operator_images)
        elif kind == "Deployment" and component == "grafana" and pod is not None:
            _grafana_files(pod, dashboards)
        if pod is not None:
            pod_labels = manifest["spec"]["template"]["metadata"]
            pod_labels["labels"] = {**labels, **pod_labels.get("labels", {})}
        if not fixed_uids:
            # The platform's SCC assigns each pod a UID and fsGroup from the namespace's range.
            if kind in ("Prometheus", "Alertmanager"):
                _without_fixed_ids(manifest["spec"].get("securityContext"))
            if pod is not None:
                _without_fixed_ids(pod.get("securityContext"))
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    _without_fixed_ids(container.get("securityContext"))
        manifests.append(manifest)
    return manifests


def _prometheus_spec(spec: dict[str, Any], settings: PrometheusSettings, stack: str) -> None:
    spec["replicas"] = settings.replicas
    spec["retention"] = settings.retention
    spec["externalLabels"] = {**(spec.get("externalLabels") or {}), "mlplatform_stack": stack}
    # Upstream's selectors take everything; ours take what carries our label, in any namespace
    # (upstream's kept monitors and rules carry it too).
    for kind in ("serviceMonitor", "podMonitor", "rule", "probe", "scrapeConfig"):
        spec[f"{kind}Selector"] = {"matchLabels": dict(SELECTOR_LABELS)}
        spec[f"{kind}NamespaceSelector"] = {}
    if settings.storage_class is not None:
        spec["storage"] = {
            "volumeClaimTemplate": {
                "spec": {
                    "storageClassName": settings.storage_class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": settings.storage_size}},
                }
            }
        }


def _operator_version(deployment: dict[str, Any], version: str, images: tuple[str, str]) -> None:
    """The operator and the config reloader it injects at the version of the CRDs we serve."""
    operator_image, reloader_image = images
    for meta in (deployment["metadata"], deployment["spec"]["template"]["metadata"]):
        meta["labels"]["app.kubernetes.io/version"] = version.removeprefix("v")
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if container["name"] != "prometheus-operator":
            continue
        container["image"] = f"{operator_image}:{version}"
        container["args"] = [
            f"--prometheus-config-reloader={reloader_image}:{version}"
            if arg.startswith("--prometheus-config-reloader=")
            else arg
            for arg in container["args"]
        ]


def _grafana_files(pod: dict[str, Any], dashboards: list[str]) -> None:
    """Grafana's config files from ConfigMaps, and our dashboards where its file provider reads."""
    for volume in pod["volumes"]:
        if volume.get("secret", {}).get("secretName") in GRAFANA_CONFIG_FILES:
            volume["configMap"] = {"name": volume.pop("secret")["secretName"]}
    (container,) = [c for c in pod["containers"] if c["name"] == "grafana"]
    for name in dashboards:
        pod["volumes"].append({"name": name, "configMap": {"name": name}})
        container["volumeMounts"].append(
            {"name": name, "mountPath": f"{GRAFANA_DASHBOARD_PATH}/{name}", "readOnly": True}
        )


def _is_dashboard(manifest: dict[str, Any]) -> bool:
    return any(name.endswith(".json") for name in manifest.get("data") or {})


class Monitoring(Module):
    outputs: MonitoringOutputs
    provides = MonitoringOutputs

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplatform:monitoring:Monitoring", name, None, opts)
        self._ctx = ctx
        resolved = ctx.resolved
        profile = resolved.profile
        settings = resolved.config.modules.monitoring
        self._labels = {**ctx.labels, "mlplatform.io/module": "monitoring"}
        self._namespace_name = settings.namespace
        self._fixed_uids = profile.fixed_uids

        namespace_labels = {**self._labels, **profile.namespace_labels, "mlplatform.io/role": "monitoring"}
        if profile.user_workload_monitoring:
            namespace_labels["openshift.io/user-monitoring"] = "true"
        else:
            # node-exporter reads the host (host network, PID namespace and root filesystem):
            # Pod Security would refuse its pods at the profile's level. Admission lets them in;
            # audit and warnings stay at the profile's level, and the policy pack admits host
            # access here for node-exporter alone.
            namespace_labels["pod-security.kubernetes.io/enforce"] = "privileged"
        self.namespace = create_object(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self._namespace_name, "labels": namespace_labels},
            },
            ctx.child_opts(self),
        )
        alerts = helm_template(
            ALERTS_CHART,
            ALERTS_CHART,
            self._namespace_name,
            alert_values(resolved, self._labels),
            kube_version=target_kube_version(resolved),
        )
        crds: list[pulumi.Resource] = []
        if profile.user_workload_monitoring:
            self._enable_user_workload_monitoring()
        else:
            crds = self._crds()
            dashboards = [m["metadata"]["name"] for m in alerts if m["kind"] == "ConfigMap" and _is_dashboard(m)]
            self._kube_prometheus(crds, dashboards)
        self._model_metrics_gateway(crds)
        self.outputs = MonitoringOutputs(
            namespace=self._namespace_name,
            monitor_labels=dict(SELECTOR_LABELS),
            crds=tuple(crds),
            own_prometheus=not profile.user_workload_monitoring,
            model_metrics_pod_labels=dict(MODEL_METRICS_SELECTOR),
            model_metrics_port=MODEL_METRICS_PORT,
        )
        for manifest in monitor_manifests(
            list(ctx.scrape_targets),
            self._namespace_name,
            self._labels,
            beside_targets=profile.user_workload_monitoring,
        ):
            create_object(manifest, self._opts(crds))
        for manifest in alerts:
            create_object(manifest, self._opts(crds))
        self.register_outputs({"namespace": self._namespace_name, "ownPrometheus": self.outputs.own_prometheus})

    # -- helpers ---------------------------------------------------------------------------

    def _opts(self, crds: list[pulumi.Resource] | None = None, **kwargs: Any) -> pulumi.ResourceOptions:
        depends = [self.namespace, *(crds or []), *kwargs.pop("depends_on", [])]
        return self._ctx.child_opts(self, depends_on=depends, **kwargs)

    def _meta(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {"name": name, "namespace": self._namespace_name, "labels": {**self._labels, **(labels or {})}}

    def _pod_security(self, uid: int) -> dict[str, Any]:
        context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        if self._fixed_uids:
            context.update(runAsUser=uid, runAsGroup=uid, fsGroup=uid)
        return context

    def _image(self, source_name: str) -> tuple[str, str]:
        source = self._ctx.resolved.upstream(source_name)
        return f"{source.get('image')}:{source.version}", source.version

    def _deployment(
        self,
        name: str,
        selector: dict[str, str],
        pod: dict[str, Any],
        container: dict[str, Any],
        crds: list[pulumi.Resource] | None = None,
    ) -> None:
        """One replica of one restricted container, running as nobody where UIDs may be fixed."""
        create_object(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": self._meta(name, selector),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": {**self._labels, **selector}},
                        "spec": {
                            **pod,
                            "securityContext": self._pod_security(65534),
                            "containers": [{**container, "securityContext": _RESTRICTED_CONTAINER}],
                        },
                    },
                },
            },
            self._opts(crds),
        )

    def _service_and_monitor(
        self, name: str, selector: dict[str, str], ports: list[dict[str, Any]], crds, **endpoint: Any
    ) -> None:
        create_object(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": self._meta(name, selector),
                "spec": {"selector": selector, "ports": ports},
            },
            self._opts(),
        )
        create_object(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": self._meta(name, {**selector, **SELECTOR_LABELS}),
                "spec": {
                    "selector": {"matchLabels": selector},
                    "endpoints": [{"port": ports[0]["name"], "interval": "30s", **endpoint}],
                },
            },
            self._opts(crds),
        )

    # -- OpenShift: the cluster's monitoring -----------------------------------------------

    def _enable_user_workload_monitoring(self) -> None:
        """The cluster's Prometheus runs platform monitoring; enableUserWorkload adds the second
        stack that loads rules and monitors from user namespaces (ours included).

        The ConfigMap is the cluster's, and config.yaml is one string: a server-side apply patch
        writes the text the cluster has with our key added (created where there is none), owns
        that one field, and is left in place on destroy, user workload monitoring still on,
        since other tenants may rely on it."""
        import pulumi_kubernetes as k8s

        if not placement.holds_platform():
            return
        live = read_cluster_monitoring_config(self._ctx.resolved)
        try:
            text = with_user_workload_enabled(live)
        except ValueError as exc:
            raise pulumi.RunError(f"monitoring: {exc}") from None
        metadata: dict[str, Any] = {"name": CLUSTER_MONITORING_CONFIG, "namespace": CLUSTER_MONITORING_NAMESPACE}
        if base.under_mocks():
            # A render's export is applied and pruned as one set (GitOps): there the object is
            # one of the stack's, labelled so. The engine labels nothing of the cluster's object.
            metadata["labels"] = self._labels
        else:
            metadata["annotations"] = cluster_monitoring_patch_annotations(live, text)
        k8s.core.v1.ConfigMapPatch(
            f"{CLUSTER_MONITORING_NAMESPACE}/{CLUSTER_MONITORING_CONFIG}",
            metadata=metadata,
            data={CLUSTER_MONITORING_KEY: text},
            opts=self._ctx.child_opts(
                self,
                retain_on_delete=True,
                # Stacks written before this held the object as a ConfigMap of ours: the same
                # object, taken over in place (a new resource would delete the old one's object).
                aliases=[pulumi.Alias(type_="kubernetes:core/v1:ConfigMap")],
            ),
        )

    # -- lab / cloud: kube-prometheus, moved into our namespace ------------------------------

    def _crds(self) -> list[pulumi.Resource]:
        source = self._ctx.resolved.upstream("prometheus-operator-crds")
        crds = []
        for document in load_documents(source, "crds", self._ctx.resolved.mirror_path):
            if document.get("kind") != "CustomResourceDefinition":
                continue
            metadata = document.setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **self._labels}
            crds.append(document)
        return install_crds(self, self._ctx, "monitoring", crds)

    def _kube_prometheus(self, crds: list[pulumi.Resource], dashboards: list[str]) -> None:
        resolved = self._ctx.resolved
        operator = resolved.upstream("prometheus-operator-crds")
        settings = resolved.config.modules.monitoring
        documents = load_documents(resolved.upstream(KUBE_PROMETHEUS), "manifests", resolved.mirror_path)
        for manifest in kube_prometheus_manifests(
            documents,
            namespace=self._namespace_name,
            labels=self._labels,
            prometheus=settings.prometheus or PrometheusSettings(),
            alertmanager=settings.alertmanager or AlertmanagerSettings(),
            stack=resolved.stack,
            fixed_uids=self._fixed_uids,
            operator_version=operator.version,
            operator_images=(operator.get("operatorImage"), operator.get("configReloaderImage")),
            dashboards=dashboards,
        ):
            create_object(manifest, self._opts(crds))

        # Beside upstream's policies (which admit Grafana and Prometheus itself): queries from
        # this namespace and the platform's own, alerts from anywhere in this namespace. The
        # operator labels the pods it makes with the kind and the object's name.
        monitoring = network.namespace_peer(self._namespace_name)
        guards = [
            (
                "mlplatform-alertmanager",
                {"app.kubernetes.io/name": "alertmanager", "alertmanager": ALERTMANAGER_NAME},
                [monitoring],
            ),
            (
                "mlplatform-prometheus",
                {"app.kubernetes.io/name": "prometheus", "prometheus": PROMETHEUS_NAME},
                [monitoring, network.role_peer(("system",))],
            ),
        ]
        for name, pod_labels, peers in guards:
            create_object(network.guard(name, self._namespace_name, self._labels, pod_labels, peers), self._opts())

    def _model_metrics_gateway(self, crds: list[pulumi.Resource]) -> None:
        """A Prometheus Pushgateway for the model quality gauges the model alerts read: an
        evaluation or drift job is gone before any scrape, so it pushes its result here, under
        a grouping key of its model and namespace, and the gauge stays until the next push."""
        image, _ = self._image("pushgateway")
        selector = dict(MODEL_METRICS_SELECTOR)
        self._deployment(
            MODEL_METRICS,
            selector,
            {"automountServiceAccountToken": False},
            {
                "name": "pushgateway",
                "image": image,
                "ports": [{"name": "http", "containerPort": MODEL_METRICS_PORT}],
                "livenessProbe": {"httpGet": {"path": "/-/healthy", "port": "http"}},
                "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "http"}},
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "200m", "memory": "256Mi"},
                },
            },
        )
        # The pushed series carry the job's own labels (model, namespace): those win.
        self._service_and_monitor(
            MODEL_METRICS, selector, [{"name": "http", "port": MODEL_METRICS_PORT}], crds, honorLabels=True
        )
        # Pushes from team namespaces and pipeline steps; scrapes from this namespace and the
        # environment's monitoring namespaces.
        scrapers = dict.fromkeys([self._namespace_name, *self._ctx.resolved.profile.monitoring_namespaces])
        peers = [network.role_peer((network.TEAM_ROLE, "pipelines")), *map(network.namespace_peer, scrapers)]
        create_object(
            network.guard(
                "mlplatform-model-metrics", self._namespace_name, self._labels, selector, peers, (MODEL_METRICS_PORT,)
            ),
            self._opts(),
        )
