"""Monitoring: a Prometheus of our own where the cluster has none (lab, cloud), the cluster's
user workload monitoring where it has one (OpenShift); the platform's alert rules and Grafana
dashboards (charts/ml-alerts); scrape monitors for the services of the enabled modules."""

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
from mlplatform.modules import base
from mlplatform.modules.base import FORCE_ANNOTATION, Module, ModuleContext, create_object, target_kube_version
from mlplatform.modules.contracts import MonitoringOutputs, ScrapeTarget
from mlplatform.paths import BIN_DIR
from mlplatform.tenancy import network
from mlplatform.upstream import load_documents

# Our Prometheus selects rules and monitors by this label, never by a chart release's labels.
MONITORING_LABEL = "mlplatform.io/monitoring"
SELECTOR_LABELS = {MONITORING_LABEL: "true"}
ALERTS_CHART = "ml-alerts"
PROMETHEUS_NAME = "mlplatform"
# The Pushgateway holding pushed model quality gauges (model_accuracy, model_drift_score).
MODEL_METRICS = "model-metrics"
MODEL_METRICS_PORT = 9091
MODEL_METRICS_SELECTOR = {"app.kubernetes.io/name": "pushgateway", "app.kubernetes.io/instance": MODEL_METRICS}
ALERTMANAGER_NAME = "mlplatform"
# The operator keeps an Endpoints object of every node's kubelet here (--kubelet-service).
KUBELET_SERVICE = ("kube-system", "kubelet")
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
        self.namespace = create_object(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self._namespace_name, "labels": namespace_labels},
            },
            ctx.child_opts(self),
        )
        crds: list[pulumi.Resource] = []
        if profile.user_workload_monitoring:
            self._enable_user_workload_monitoring()
        else:
            crds = self._crds()
            self._operator(crds)
            self._prometheus(crds)
            self._kube_state_metrics(crds)
            self._kubelet_monitor(crds)
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
        for manifest in helm_template(
            ALERTS_CHART,
            ALERTS_CHART,
            self._namespace_name,
            alert_values(resolved, self._labels),
            kube_version=target_kube_version(resolved),
        ):
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

    def _service_account(self, name: str) -> None:
        create_object({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self._meta(name)}, self._opts())

    def _cluster_rbac(self, name: str, service_account: str, rules: list[dict[str, Any]]) -> None:
        cluster_name = f"mlplatform-{name}"
        create_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": cluster_name, "labels": self._labels},
                "rules": rules,
            },
            self._ctx.child_opts(self),
        )
        create_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": cluster_name, "labels": self._labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
                "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": self._namespace_name}],
            },
            self._ctx.child_opts(self),
        )

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

    # -- lab / cloud: a Prometheus of our own ------------------------------------------------

    def _crds(self) -> list[pulumi.Resource]:
        source = self._ctx.resolved.upstream("prometheus-operator-crds")
        crds = []
        for document in load_documents(source, "crds", self._ctx.resolved.mirror_path):
            if document.get("kind") != "CustomResourceDefinition":
                continue
            metadata = document.setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **self._labels}
            crds.append(create_object(document, self._ctx.child_opts(self)))
        return crds

    def _operator(self, crds: list[pulumi.Resource]) -> None:
        source = self._ctx.resolved.upstream("prometheus-operator-crds")
        # The operator runs the version of the CRDs it serves.
        image = f"{source.get('operatorImage')}:{source.version}"
        reloader = f"{source.get('configReloaderImage')}:{source.version}"
        selector = {"app.kubernetes.io/name": "prometheus-operator"}
        self._service_account("prometheus-operator")
        self._cluster_rbac(
            "prometheus-operator",
            "prometheus-operator",
            [
                {
                    "apiGroups": ["monitoring.coreos.com"],
                    "resources": [
                        "alertmanagers",
                        "alertmanagers/finalizers",
                        "alertmanagers/status",
                        "alertmanagerconfigs",
                        "prometheuses",
                        "prometheuses/finalizers",
                        "prometheuses/status",
                        "prometheusagents",
                        "prometheusagents/finalizers",
                        "prometheusagents/status",
                        "thanosrulers",
                        "thanosrulers/finalizers",
                        "thanosrulers/status",
                        "scrapeconfigs",
                        "servicemonitors",
                        "podmonitors",
                        "probes",
                        "prometheusrules",
                    ],
                    "verbs": ["*"],
                },
                {"apiGroups": ["apps"], "resources": ["statefulsets", "daemonsets"], "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
                {
                    "apiGroups": [""],
                    "resources": ["services", "services/finalizers", "endpoints"],
                    "verbs": ["get", "create", "update", "delete"],
                },
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "create", "list", "update", "delete"],
                },
                {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get"]},
            ],
        )
        self._deployment(
            "prometheus-operator",
            selector,
            {"serviceAccountName": "prometheus-operator"},
            {
                "name": "prometheus-operator",
                "image": image,
                "args": [
                    f"--kubelet-service={'/'.join(KUBELET_SERVICE)}",
                    f"--prometheus-config-reloader={reloader}",
                ],
                "ports": [{"name": "http", "containerPort": 8080}],
                # The operator's web listener answers /healthz once it runs.
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "512Mi"},
                },
            },
            crds,
        )
        self._service_and_monitor("prometheus-operator", selector, [{"name": "http", "port": 8080}], crds)

    def _prometheus(self, crds: list[pulumi.Resource]) -> None:
        settings = self._ctx.resolved.config.modules.monitoring
        prometheus = settings.prometheus or PrometheusSettings()
        alertmanager = settings.alertmanager or AlertmanagerSettings()
        prometheus_image, prometheus_version = self._image("prometheus")
        alertmanager_image, alertmanager_version = self._image("alertmanager")
        self._service_account("prometheus")
        self._cluster_rbac(
            "prometheus",
            "prometheus",
            [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "nodes/metrics", "services", "endpoints", "pods"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
                {"nonResourceURLs": ["/metrics", "/metrics/cadvisor"], "verbs": ["get"]},
            ],
        )
        everywhere: dict[str, Any] = {}
        spec: dict[str, Any] = {
            "replicas": prometheus.replicas,
            "retention": prometheus.retention,
            "image": prometheus_image,
            "version": prometheus_version,
            "serviceAccountName": "prometheus",
            "securityContext": self._pod_security(65534),
            # Ours, in any namespace: selected by our label, not by a release name.
            "serviceMonitorSelector": {"matchLabels": dict(SELECTOR_LABELS)},
            "serviceMonitorNamespaceSelector": everywhere,
            "podMonitorSelector": {"matchLabels": dict(SELECTOR_LABELS)},
            "podMonitorNamespaceSelector": everywhere,
            "ruleSelector": {"matchLabels": dict(SELECTOR_LABELS)},
            "ruleNamespaceSelector": everywhere,
            "externalLabels": {"mlplatform_stack": self._ctx.resolved.stack},
            "alerting": {
                "alertmanagers": [
                    {
                        "namespace": self._namespace_name,
                        "name": "alertmanager-operated",
                        "port": "web",
                        "apiVersion": "v2",
                    }
                ]
            },
            "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        }
        if prometheus.storage_class is not None:
            spec["storage"] = {
                "volumeClaimTemplate": {
                    "spec": {
                        "storageClassName": prometheus.storage_class,
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": prometheus.storage_size}},
                    }
                }
            }
        create_object(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "Prometheus",
                "metadata": self._meta(PROMETHEUS_NAME),
                "spec": spec,
            },
            self._opts(crds),
        )
        create_object(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "Alertmanager",
                "metadata": self._meta(ALERTMANAGER_NAME),
                "spec": {
                    "replicas": alertmanager.replicas,
                    "image": alertmanager_image,
                    "version": alertmanager_version,
                    "securityContext": self._pod_security(65534),
                    "alertmanagerConfigSelector": {"matchLabels": dict(SELECTOR_LABELS)},
                    "alertmanagerConfigNamespaceSelector": {},
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "128Mi"},
                        "limits": {"cpu": "200m", "memory": "256Mi"},
                    },
                },
            },
            self._opts(crds),
        )

        # The operator labels the pods it makes with these (upstream prometheus-operator).
        monitoring = network.namespace_peer(self._namespace_name)
        guards = [
            # Alerts come from our Prometheus; the replicas gossip among themselves.
            (
                "mlplatform-alertmanager",
                {"app.kubernetes.io/name": "alertmanager", "alertmanager": ALERTMANAGER_NAME},
                [monitoring],
            ),
            # Queries from this namespace (e.g. Grafana) and the platform's own.
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

    def _kube_state_metrics(self, crds: list[pulumi.Resource]) -> None:
        image, _ = self._image("kube-state-metrics")
        selector = {"app.kubernetes.io/name": "kube-state-metrics"}
        self._service_account("kube-state-metrics")
        self._cluster_rbac(
            "kube-state-metrics",
            "kube-state-metrics",
            [
                {
                    "apiGroups": [""],
                    "resources": [
                        "configmaps",
                        "secrets",
                        "nodes",
                        "pods",
                        "services",
                        "serviceaccounts",
                        "resourcequotas",
                        "replicationcontrollers",
                        "limitranges",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "namespaces",
                        "endpoints",
                    ],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["apps"],
                    "resources": ["statefulsets", "daemonsets", "deployments", "replicasets"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": ["list", "watch"]},
                {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list", "watch"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": ["certificates.k8s.io"],
                    "resources": ["certificatesigningrequests"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": ["storage.k8s.io"],
                    "resources": ["storageclasses", "volumeattachments"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies", "ingressclasses", "ingresses"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterrolebindings", "clusterroles", "rolebindings", "roles"],
                    "verbs": ["list", "watch"],
                },
            ],
        )
        self._deployment(
            "kube-state-metrics",
            selector,
            {"serviceAccountName": "kube-state-metrics"},
            {
                "name": "kube-state-metrics",
                "image": image,
                "ports": [
                    {"name": "http-metrics", "containerPort": 8080},
                    {"name": "telemetry", "containerPort": 8081},
                ],
                "livenessProbe": {"httpGet": {"path": "/livez", "port": "http-metrics"}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "telemetry"}},
                "resources": {"requests": {"cpu": "100m", "memory": "190Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            },
        )
        # Its series describe other objects (namespace, pod labels): those labels win.
        self._service_and_monitor(
            "kube-state-metrics",
            selector,
            [{"name": "http-metrics", "port": 8080}, {"name": "telemetry", "port": 8081}],
            crds,
            honorLabels=True,
        )

    def _kubelet_monitor(self, crds: list[pulumi.Resource]) -> None:
        """Node and container metrics from each kubelet and its cAdvisor, through the Endpoints
        the operator keeps; no node exporter needs host access in our namespace."""
        namespace, service = KUBELET_SERVICE
        authenticated = {
            "port": "https-metrics",
            "scheme": "https",
            "interval": "30s",
            "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "tlsConfig": {"insecureSkipVerify": True},
            "honorLabels": True,
        }
        create_object(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": self._meta("kubelet", SELECTOR_LABELS),
                "spec": {
                    "jobLabel": "app.kubernetes.io/name",
                    "namespaceSelector": {"matchNames": [namespace]},
                    "selector": {"matchLabels": {"app.kubernetes.io/name": service}},
                    "endpoints": [
                        {**authenticated, "path": "/metrics"},
                        {**authenticated, "path": "/metrics/cadvisor"},
                    ],
                },
            },
            self._opts(crds),
        )
