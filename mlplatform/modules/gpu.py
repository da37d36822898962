"""GPU layer: the NVIDIA device plugin with per-pool sharing, the GPU operator, or the
cloud's managed GPUs; DCGM metrics; and the GPU resource names every other module uses."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pulumi
import yaml

from mlplatform.config.model import NodePool
from mlplatform.gpu.capacity import (
    mig_layout_name,
    mig_strategy,
    pool_resources,
)
from mlplatform.gpu.dcgm_metrics import DCGM_METRICS_CONFIGMAP, DCGM_METRICS_KEY, dcgm_metrics_csv
from mlplatform.gpu.plugin_config import (
    DEVICE_PLUGIN_CONFIGMAP,
    MIG_DISABLED_LAYOUT,
    MIG_PARTED_CONFIGMAP,
    device_plugin_config,
    mig_layout,
    mig_parted_config,
)
from mlplatform.gpu.pools import DEFAULT_NAMESPACES, pool_selector
from mlplatform.modules import placement
from mlplatform.modules.base import Module, ModuleContext, create_object
from mlplatform.modules.contracts import GpuOutputs, MonitoringOutputs
from mlplatform.modules.crd_bundle import install_crds
from mlplatform.upstream import kustomize_build, load_documents

DCGM_PORT = 9400
# Pod template annotation: a pool's DaemonSets roll when its config or MIG layout changes,
# since neither the device plugin nor mig-parted rereads a file it has started with.
CONFIG_HASH_ANNOTATION = "mlplatform.io/gpu-config-hash"
MIG_CONFIG_MOUNT = "/etc/nvidia/mig"
NFD_NAMESPACE = "node-feature-discovery"


def gpu_outputs(pools: list[NodePool], namespace: str, node_pool_label: str | None) -> GpuOutputs:
    per_pool = {pool.name: pool_resources(pool) for pool in pools if pool.gpu}
    names = sorted({name for resources in per_pool.values() for name in resources.per_node})
    selectors = {pool.name: pool_selector(pool, node_pool_label) for pool in pools if pool.gpu}
    return GpuOutputs(pools=per_pool, resource_names=tuple(names), node_selectors=selectors, namespace=namespace)


def config_hash(pool: NodePool) -> str:
    """Short digest of what a pool's GPU pods are started with."""
    wanted = {"devicePlugin": device_plugin_config(pool), "mig": mig_layout(pool)}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def _tolerations(pools: list[NodePool]) -> list[dict[str, Any]]:
    seen = {("nvidia.com/gpu", "NoSchedule")}
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for pool in pools:
        for taint in pool.taints:
            if (taint.key, taint.effect) not in seen:
                seen.add((taint.key, taint.effect))
                tolerations.append({"key": taint.key, "operator": "Exists", "effect": taint.effect})
    return tolerations


class GpuLayer(Module):
    outputs: GpuOutputs
    provides = GpuOutputs
    uses = (MonitoringOutputs,)

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplatform:gpu:GpuLayer", name, None, opts)
        config = ctx.resolved.config
        settings = config.modules.gpu
        self._ctx = ctx
        self._labels = {**ctx.labels, "mlplatform.io/module": "gpu"}
        # With the monitoring module, the exporter's ServiceMonitor carries the label its
        # Prometheus selects by and waits for the CRDs it installs.
        self._monitoring = ctx.input(MonitoringOutputs)
        self._service_monitor = settings.dcgm_exporter.service_monitor or self._monitoring is not None
        self._pools = [p for p in config.cluster.node_pools if p.gpu]
        self._tolerations = _tolerations(self._pools)
        namespace = settings.namespace or DEFAULT_NAMESPACES[settings.install]
        self._namespace_name = namespace
        self.outputs = gpu_outputs(config.cluster.node_pools, namespace, ctx.resolved.profile.node_pool_label)
        self._sources = {
            name: ctx.resolved.upstream(name)
            for name in (
                "nvidia-device-plugin",
                "dcgm-exporter",
                "gpu-operator",
                "mig-manager",
                "node-feature-discovery",
            )
        }
        # Everything namespaced waits for the namespace; the managed path creates none.
        self.namespace: pulumi.CustomResource | None = None

        if settings.install != "managed":
            self.namespace = self._create(self._namespace_manifest(namespace))
            self._create(
                self._configmap(
                    DEVICE_PLUGIN_CONFIGMAP,
                    {pool.name: yaml.safe_dump(device_plugin_config(pool), sort_keys=False) for pool in self._pools},
                )
            )
            mig = mig_parted_config(self._pools)
            if mig:
                self._create(
                    self._configmap(MIG_PARTED_CONFIGMAP, {"config.yaml": yaml.safe_dump(mig, sort_keys=False)})
                )
            if settings.dcgm_exporter.enabled:
                # What the exporter collects (ours, or the operator's through its ClusterPolicy).
                profiling = settings.dcgm_exporter.profiling_metrics
                self._create(self._configmap(DCGM_METRICS_CONFIGMAP, {DCGM_METRICS_KEY: dcgm_metrics_csv(profiling)}))
        if settings.install == "device-plugin":
            if settings.feature_discovery:
                self._node_feature_discovery()
            self._mig_managers()
            self._device_plugin()
            if settings.dcgm_exporter.enabled:
                self._dcgm_exporter()
        elif settings.install == "operator":
            if ctx.resolved.profile.operator_install == "olm":
                self._operator_olm()
            else:
                self._operator_helm()
        self.register_outputs({"namespace": namespace, "resourceNames": list(self.outputs.resource_names)})

    # -- helpers ---------------------------------------------------------------------------

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        depends = [self.namespace] if self.namespace is not None else []
        return self._ctx.child_opts(self, depends_on=depends + kwargs.pop("depends_on", []), **kwargs)

    def _create(self, manifest: dict[str, Any], **kwargs: Any) -> pulumi.CustomResource:
        is_namespace = manifest["kind"] == "Namespace"
        opts = self._ctx.child_opts(self, **kwargs) if is_namespace else self._opts(**kwargs)
        return create_object(manifest, opts)

    def _meta(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {"name": name, "namespace": self._namespace_name, "labels": {**self._labels, **(labels or {})}}

    def _namespace_manifest(self, name: str) -> dict[str, Any]:
        # GPU system components need host paths and privileges: the one namespace of ours
        # that Pod Security lets run privileged pods, holding nothing but those components.
        labels = {
            **self._labels,
            **self._ctx.resolved.profile.namespace_labels,
            **{f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")},
            "mlplatform.io/role": "gpu-system",
        }
        if self._ctx.resolved.profile.operator_install == "olm":
            labels["openshift.io/cluster-monitoring"] = "true"
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}

    def _configmap(self, name: str, data: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._meta(name), "data": data}

    def _mirror(self):
        return self._ctx.resolved.mirror_path

    # -- device plugin path -----------------------------------------------------------------

    def _per_pool_daemonset(self, base: dict[str, Any], component: str, pool: NodePool) -> dict[str, Any]:
        """The upstream DaemonSet, made one per pool: selected by the pool's config label,
        reading that pool's config from our ConfigMap."""
        assert pool.gpu is not None
        manifest = copy.deepcopy(base)
        name = f"{component}-{pool.name}"
        selector = {"app.kubernetes.io/name": component, "mlplatform.io/gpu-config": pool.name}
        manifest["metadata"] = self._meta(name, selector)
        spec = manifest["spec"]
        spec["selector"] = {"matchLabels": selector}
        template = spec["template"]
        template["metadata"] = {
            "labels": {**selector, **self._labels},
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash(pool)},
        }
        pod = template["spec"]
        # The pool's own nodes, by the labels they join with: a node added later gets its
        # plugin at once, with nothing to label it first.
        pod["nodeSelector"] = dict(self.outputs.node_selectors[pool.name])
        pod.pop("affinity", None)
        pod["tolerations"] = self._tolerations
        pod.setdefault("volumes", []).append(
            {
                "name": "gpu-config",
                "configMap": {"name": DEVICE_PLUGIN_CONFIGMAP, "items": [{"key": pool.name, "path": "config.yaml"}]},
            }
        )
        for container in pod["containers"]:
            env = [e for e in container.get("env") or [] if e["name"] not in ("CONFIG_FILE", "MIG_STRATEGY")]
            env += [
                {"name": "CONFIG_FILE", "value": "/etc/nvidia/gpu-config/config.yaml"},
                {"name": "MIG_STRATEGY", "value": mig_strategy(pool.gpu)},
            ]
            container["env"] = env
            container.setdefault("volumeMounts", []).append(
                {"name": "gpu-config", "mountPath": "/etc/nvidia/gpu-config", "readOnly": True}
            )
            container["resources"] = {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "200m", "memory": "256Mi"},
            }
        if mig_layout(pool) is not None and component == "nvidia-device-plugin":
            # A plugin started before the layout is in place would advertise whole GPUs:
            # it waits until mig-parted asserts the pool's layout on every GPU.
            pod["initContainers"] = [self._mig_parted_container(pool, "mig-layout-applied", "assert")]
            pod["volumes"].append(self._mig_config_volume())
        return manifest

    # -- MIG off the operator path ------------------------------------------------------------

    def _mig_config_volume(self) -> dict[str, Any]:
        return {"name": "mig-config", "configMap": {"name": MIG_PARTED_CONFIGMAP}}

    def _mig_parted_container(self, pool: NodePool, name: str, command: str) -> dict[str, Any]:
        """mig-parted from the MIG manager image, set to the pool's layout through its
        documented environment (MIG_PARTED_CONFIG_FILE, MIG_PARTED_SELECTED_CONFIG)."""
        source = self._sources["mig-manager"]
        run = f"nvidia-mig-parted {command}"
        if command == "apply":
            # Applied once per start, then held: the pod stays Ready while the layout stands.
            run = f"{run} && exec sleep infinity"
        return {
            "name": name,
            "image": f"{source.get('image')}:{source.version}",
            "command": ["sh", "-c", run],
            "env": [
                {"name": "MIG_PARTED_CONFIG_FILE", "value": f"{MIG_CONFIG_MOUNT}/config.yaml"},
                {"name": "MIG_PARTED_SELECTED_CONFIG", "value": mig_layout_name(pool)},
                # What the NVIDIA container runtime needs to let a container change MIG modes.
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                {"name": "NVIDIA_MIG_CONFIG_DEVICES", "value": "all"},
            ],
            "securityContext": {"privileged": True},
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
            "volumeMounts": [{"name": "mig-config", "mountPath": MIG_CONFIG_MOUNT, "readOnly": True}],
        }

    def _mig_managers(self) -> None:
        """One MIG manager per MIG pool: applies the pool's layout when it starts on a node,
        again whenever the layout changes (the pod rolls with the config hash)."""
        for pool in self._pools:
            if mig_layout(pool) is None:
                continue
            selector = {"app.kubernetes.io/name": "nvidia-mig-manager", "mlplatform.io/gpu-config": pool.name}
            self._create(
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "metadata": self._meta(f"nvidia-mig-manager-{pool.name}", selector),
                    "spec": {
                        "selector": {"matchLabels": selector},
                        "template": {
                            "metadata": {
                                "labels": {**selector, **self._labels},
                                "annotations": {CONFIG_HASH_ANNOTATION: config_hash(pool)},
                            },
                            "spec": {
                                "nodeSelector": dict(self.outputs.node_selectors[pool.name]),
                                "tolerations": self._tolerations,
                                "priorityClassName": "system-node-critical",
                                "automountServiceAccountToken": False,
                                "containers": [self._mig_parted_container(pool, "mig-manager", "apply")],
                                "volumes": [self._mig_config_volume()],
                            },
                        },
                    },
                }
            )

    # -- Node Feature Discovery ---------------------------------------------------------------

    def _node_feature_discovery(self) -> None:
        """NFD from its pinned upstream overlay, in the GPU namespace (the one that may run
        host-reading pods). Its master publishes the nvidia.com labels GPU feature discovery
        writes as feature files; its workers run on tainted GPU nodes too."""
        source = self._sources["node-feature-discovery"]
        crds = []
        for document in kustomize_build(source, "default", self._mirror()):
            if document["kind"] == "Namespace":
                continue
            metadata = document.setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **self._labels}
            if metadata.get("namespace") == NFD_NAMESPACE:
                metadata["namespace"] = self._namespace_name
            for subject in document.get("subjects") or []:
                if subject.get("namespace") == NFD_NAMESPACE:
                    subject["namespace"] = self._namespace_name
            if document["kind"] == "ConfigMap" and "nfd-master.conf" in document.get("data", {}):
                # NFD publishes only its own label namespaces unless told otherwise.
                document["data"]["nfd-master.conf"] = yaml.safe_dump({"extraLabelNs": ["nvidia.com"]})
            if document["kind"] == "ConfigMap" and "nfd-worker.conf" in document.get("data", {}):
                # Display and 3D controllers, labelled by vendor (pci-10de.present for NVIDIA).
                document["data"]["nfd-worker.conf"] = yaml.safe_dump(
                    {"sources": {"pci": {"deviceClassWhitelist": ["02", "03"], "deviceLabelFields": ["vendor"]}}}
                )
            if document["kind"] in ("Deployment", "DaemonSet"):
                pod = document["spec"]["template"]["spec"]
                # Upstream's pods run as non-root with no privileges; the pack also wants the
                # runtime's seccomp profile and a CPU ceiling on every container.
                pod.setdefault("securityContext", {})["seccompProfile"] = {"type": "RuntimeDefault"}
                for container in pod["containers"]:
                    limits = container.setdefault("resources", {}).setdefault("limits", {})
                    limits.setdefault("cpu", "1" if document["kind"] == "Deployment" else "500m")
            if document["kind"] == "DaemonSet":
                document["spec"]["template"]["spec"]["tolerations"] = self._tolerations
            if document["kind"] == "CustomResourceDefinition":
                crds.append(document)
                continue
            self._create(document)
        install_crds(self, self._ctx, "node-feature-discovery", crds)

    def _device_plugin(self) -> None:
        source = self._sources["nvidia-device-plugin"]
        (plugin,) = [d for d in load_documents(source, "device-plugin", self._mirror()) if d["kind"] == "DaemonSet"]
        components = [("nvidia-device-plugin", plugin)]
        if self._ctx.resolved.config.modules.gpu.feature_discovery:
            (gfd,) = [
                d for d in load_documents(source, "feature-discovery", self._mirror()) if d["kind"] == "DaemonSet"
            ]
            components.append(("gpu-feature-discovery", gfd))
        for pool in self._pools:
            for component, base in components:
                self._create(self._per_pool_daemonset(base, component, pool))

    def _dcgm_exporter(self) -> None:
        source = self._sources["dcgm-exporter"]
        labels = {"app.kubernetes.io/name": "dcgm-exporter"}
        metrics_dir = "/etc/dcgm-exporter/mlplatform"
        profiling = self._ctx.resolved.config.modules.gpu.dcgm_exporter.profiling_metrics
        # The exporter reads its metric list once, at start: it rolls when the list changes.
        metrics_hash = hashlib.sha256(dcgm_metrics_csv(profiling).encode()).hexdigest()[:16]
        security: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        if profiling:
            # DCGM reads profiling (DCGM_FI_PROF_*) fields only with SYS_ADMIN, which the API
            # server refuses beside allowPrivilegeEscalation: false.
            security = {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
        self._create(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": self._meta("dcgm-exporter", labels),
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {
                            "labels": {**labels, **self._labels},
                            "annotations": {CONFIG_HASH_ANNOTATION: metrics_hash},
                        },
                        "spec": {
                            # Every GPU pool's nodes, by the labels they join with.
                            "affinity": {
                                "nodeAffinity": {
                                    "requiredDuringSchedulingIgnoredDuringExecution": {
                                        "nodeSelectorTerms": [
                                            {
                                                "matchExpressions": [
                                                    {"key": key, "operator": "In", "values": [value]}
                                                    for key, value in selector.items()
                                                ]
                                            }
                                            for selector in self.outputs.node_selectors.values()
                                        ]
                                    }
                                }
                            },
                            "tolerations": self._tolerations,
                            "priorityClassName": "system-node-critical",
                            "containers": [
                                {
                                    "name": "dcgm-exporter",
                                    "image": f"{source.get('image')}:{source.version}",
                                    "ports": [{"name": "metrics", "containerPort": DCGM_PORT}],
                                    "securityContext": security,
                                    "env": [
                                        {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                                        # Our metric list, not the image's built-in one.
                                        {
                                            "name": "DCGM_EXPORTER_COLLECTORS",
                                            "value": f"{metrics_dir}/{DCGM_METRICS_KEY}",
                                        },
                                    ],
                                    "resources": {
                                        "requests": {"cpu": "100m", "memory": "128Mi"},
                                        "limits": {"cpu": "500m", "memory": "512Mi"},
                                    },
                                    "volumeMounts": [
                                        {
                                            "name": "pod-resources",
                                            "mountPath": "/var/lib/kubelet/pod-resources",
                                            "readOnly": True,
                                        },
                                        {"name": "metrics", "mountPath": metrics_dir, "readOnly": True},
                                    ],
                                }
                            ],
                            "volumes": [
                                # Maps GPUs to the pods that hold them (per-pod/per-team metrics).
                                {"name": "pod-resources", "hostPath": {"path": "/var/lib/kubelet/pod-resources"}},
                                {"name": "metrics", "configMap": {"name": DCGM_METRICS_CONFIGMAP}},
                            ],
                        },
                    },
                },
            }
        )
        self._create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": self._meta("dcgm-exporter", labels),
                "spec": {
                    "selector": labels,
                    "ports": [{"name": "metrics", "port": DCGM_PORT, "targetPort": DCGM_PORT}],
                },
            }
        )
        if self._service_monitor:
            monitor_labels = self._monitoring.monitor_labels if self._monitoring else {}
            self._create(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "ServiceMonitor",
                    "metadata": self._meta("dcgm-exporter", {**labels, **monitor_labels}),
                    "spec": {
                        "selector": {"matchLabels": labels},
                        # The exporter's pod/namespace labels name the pod holding each GPU.
                        "endpoints": [{"port": "metrics", "interval": "15s", "honorLabels": True}],
                    },
                },
                depends_on=list(self._monitoring.crds) if self._monitoring else [],
            )

    # -- GPU operator path ------------------------------------------------------------------

    def _cluster_mig_strategy(self) -> str:
        strategies = {mig_strategy(p.gpu) for p in self._pools if p.gpu and p.gpu.sharing.mig}
        return strategies.pop() if strategies else "single"

    def _operator_values(self) -> dict[str, Any]:
        """Settings shared by the ClusterPolicy (OLM) and the chart values (Helm)."""
        # The operator gives a node the config and layout its labels name, else these
        # defaults. Validation holds every GPU pool to one device plugin config, the default
        # here; a MIG pool's nodes join with the label naming their layout (the operator's
        # only MIG default is all-disabled).
        first = self._pools[0]
        migmanager: dict[str, Any] = {"enabled": True}
        if mig_parted_config(self._pools) is not None:
            migmanager["config"] = {"name": MIG_PARTED_CONFIGMAP, "default": MIG_DISABLED_LAYOUT}
        return {
            "devicePlugin": {"enabled": True, "config": {"name": DEVICE_PLUGIN_CONFIGMAP, "default": first.name}},
            "gfd": {"enabled": self._ctx.resolved.config.modules.gpu.feature_discovery},
            "dcgmExporter": {
                "enabled": self._ctx.resolved.config.modules.gpu.dcgm_exporter.enabled,
                # Our metric list (no profiling fields unless profilingMetrics is on).
                "config": {"name": DCGM_METRICS_CONFIGMAP},
                "serviceMonitor": {
                    "enabled": self._service_monitor,
                    "honorLabels": True,
                    "additionalLabels": self._monitoring.monitor_labels if self._monitoring else {},
                },
            },
            "mig": {"strategy": self._cluster_mig_strategy()},
            "migManager": migmanager,
        }

    def _operator_olm(self) -> None:
        source = self._sources["gpu-operator"]
        operator = self._ctx.resolved.config.modules.gpu.operator
        package = source.get("package")
        group = self._create(
            {
                "apiVersion": "operators.coreos.com/v1",
                "kind": "OperatorGroup",
                "metadata": self._meta("nvidia-gpu-operator-group"),
                "spec": {"targetNamespaces": [self._namespace_name]},
            }
        )
        subscription = self._create(
            {
                "apiVersion": "operators.coreos.com/v1alpha1",
                "kind": "Subscription",
                "metadata": self._meta(package),
                "spec": {
                    "name": package,
                    "channel": operator.channel,
                    "source": operator.source,
                    "sourceNamespace": operator.source_namespace,
                    # The CSV of the pinned version: what `promote` moves between environments.
                    "startingCSV": f"{package}.{source.version}",
                    "installPlanApproval": "Automatic",
                },
            },
            depends_on=[group],
        )
        values = self._operator_values()
        spec = {
            "operator": {"defaultRuntime": "crio"},
            "daemonsets": {"tolerations": self._tolerations, "priorityClassName": "system-node-critical"},
            "driver": {"enabled": True},
            "toolkit": {"enabled": True},
            "dcgm": {"enabled": True},
            "nodeStatusExporter": {"enabled": True},
            **values,
        }
        spec["dcgmExporter"].pop("serviceMonitor")
        if self._service_monitor:
            spec["dcgmExporter"]["serviceMonitor"] = {"enabled": True, "honorLabels": True}
        # OLM installs the ClusterPolicy CRD once the subscription's CSV succeeds.
        self._create(
            {
                "apiVersion": "nvidia.com/v1",
                "kind": "ClusterPolicy",
                "metadata": {"name": "gpu-cluster-policy", "labels": self._labels},
                "spec": spec,
            },
            depends_on=[subscription],
            custom_timeouts=pulumi.CustomTimeouts(create="15m"),
        )

    def _operator_helm(self) -> None:
        import pulumi_kubernetes as k8s

        if not placement.holds_platform():
            return
        source = self._sources["gpu-operator"]
        k8s.helm.v3.Release(
            "gpu-operator",
            chart=source.get("chart"),
            version=source.version,
            namespace=self._namespace_name,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=source.get("chartRepository")),
            values=self._operator_values(),
            opts=self._opts(),
        )
