"""What NVIDIA's software would advertise and label on each node, from what it would read.

Pure functions of the cluster's objects (nodes, running pods, ConfigMaps, ClusterPolicies);
`controller.py` feeds them and writes the answer back to the nodes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.simulated_nvidia.facts import (
    GKE_ACCELERATORS,
    GPU_PCI_CLASS,
    GPUS,
    INSTANCE_TYPES,
    NVIDIA_VENDOR,
    layout_fits,
    mig_profile_limits,
    mirror_mig_config,
)

# The simulated plane records a node's GPUs here ("<count> <model>"): its hardware.
HARDWARE_ANNOTATION = "sim.mlplatform.io/gpus"
PREFIX = "nvidia.com/"


class PluginFailed(Exception):
    """What makes the real device plugin exit (failOnInitError): nothing is advertised."""


@dataclass(frozen=True)
class Hardware:
    count: int
    model: str


@dataclass
class NodeState:
    """What NVIDIA's software makes of one node."""

    resources: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def hardware(node: dict[str, Any]) -> Hardware | None:
    labels = node["metadata"].get("labels") or {}
    instance = labels.get("node.kubernetes.io/instance-type")
    if instance in INSTANCE_TYPES:
        count, model = INSTANCE_TYPES[instance]
        return Hardware(count, model)
    accelerator = labels.get("cloud.google.com/gke-accelerator")
    declared = (node["metadata"].get("annotations") or {}).get(HARDWARE_ANNOTATION)
    if declared:
        count, model = declared.split(" ", 1)
        if accelerator and GKE_ACCELERATORS.get(accelerator) != model:
            return None
        return Hardware(int(count), model)
    return None


# -- reading a pod as the binary in it would ------------------------------------------------


def _env(container: dict[str, Any], name: str) -> str | None:
    for entry in container.get("env") or []:
        if entry.get("name") == name:
            return entry.get("value")
    return None


def _arg(container: dict[str, Any], flag: str) -> str | None:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def mounted_file(pod: dict[str, Any], container: dict[str, Any], path: str, configmaps: dict) -> str | None:
    """The content a container sees at `path`, when a ConfigMap volume provides it."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    namespace = pod["metadata"]["namespace"]
    for mount in container.get("volumeMounts") or []:
        root = mount["mountPath"].rstrip("/")
        if not path.startswith(root + "/"):
            continue
        relative = posixpath.relpath(path, root)
        source = (volumes.get(mount["name"]) or {}).get("configMap")
        if not source:
            return None
        data = (configmaps.get((namespace, source["name"])) or {}).get("data") or {}
        items = source.get("items")
        if items:
            keys = [item["key"] for item in items if item["path"] == relative]
            return data.get(keys[0]) if keys else None
        return data.get(relative)
    return None


def _image_name(container: dict[str, Any]) -> str:
    image = container.get("image") or ""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def is_device_plugin(container: dict[str, Any]) -> bool:
    words = " ".join([*(container.get("command") or []), *(container.get("args") or [])])
    return _image_name(container) == "k8s-device-plugin" and "gpu-feature-discovery" not in words


def is_feature_discovery(container: dict[str, Any]) -> bool:
    words = " ".join([*(container.get("command") or []), *(container.get("args") or [])])
    return _image_name(container) in ("k8s-device-plugin", "gpu-feature-discovery") and (
        "gpu-feature-discovery" in words or _image_name(container) == "gpu-feature-discovery"
    )


def plugin_config(pod: dict[str, Any], container: dict[str, Any], configmaps: dict) -> dict[str, Any]:
    """The device plugin's config: its --config-file / CONFIG_FILE, then MIG_STRATEGY."""
    path = _arg(container, "--config-file") or _env(container, "CONFIG_FILE")
    config: dict[str, Any] = {"version": "v1", "flags": {}}
    if path:
        text = mounted_file(pod, container, path, configmaps)
        if text is None:
            raise PluginFailed(f"config file {path} does not exist")
        config = yaml.safe_load(text) or {}
        if config.get("version") != "v1":
            raise PluginFailed(f"config file {path}: unknown version {config.get('version')!r}")
    flags = config.setdefault("flags", {}) or {}
    strategy = _arg(container, "--mig-strategy") or _env(container, "MIG_STRATEGY")
    if strategy:
        flags["migStrategy"] = strategy
    flags.setdefault("migStrategy", "none")
    if flags["migStrategy"] not in ("none", "single", "mixed"):
        raise PluginFailed(f"unknown MIG strategy {flags['migStrategy']!r}")
    config["flags"] = flags
    return config


# -- MIG -----------------------------------------------------------------------------------


def mig_devices(
    mirror: Path, hw: Hardware, config_text: str | None, selected: str | None
) -> list[dict[str, int]] | None:
    """The MIG instances on each GPU once mig-parted applied `selected` from the file, or
    None when MIG stays off (nothing selected, an unknown or impossible layout)."""
    if not selected or config_text is None:
        return None
    layouts = (yaml.safe_load(config_text) or {}).get("mig-configs") or {}
    entries = layouts.get(selected)
    if not entries:
        return None
    gpu = GPUS[hw.model]
    per_gpu: list[dict[str, int] | None] = [None] * hw.count
    for entry in entries:
        if "device-filter" in entry and gpu.pci_id not in entry["device-filter"]:
            continue
        devices = entry.get("devices", "all")
        indices = range(hw.count) if devices == "all" else [int(i) for i in devices]
        for index in indices:
            if index >= hw.count:
                return None
            if entry.get("mig-enabled"):
                wanted = dict(entry.get("mig-devices") or {})
                if not layout_fits(mirror, hw.model, wanted):
                    return None
                per_gpu[index] = wanted
    if all(gpu_devices is None for gpu_devices in per_gpu):
        return None
    return [gpu_devices or {} for gpu_devices in per_gpu]


def advertised(hw: Hardware, migs: list[dict[str, int]] | None, config: dict[str, Any]) -> dict[str, int]:
    """The extended resources the device plugin registers with the kubelet."""
    strategy = config["flags"]["migStrategy"]
    whole = hw.count if migs is None else sum(1 for gpu in migs if not gpu)
    resources: dict[str, int] = {}
    if migs is None or strategy == "none":
        if whole:
            resources["nvidia.com/gpu"] = whole
    elif strategy == "single":
        profiles = {profile for gpu in migs for profile in gpu}
        if len(profiles) > 1 or whole:
            raise PluginFailed("migStrategy single needs every GPU partitioned into one MIG profile")
        resources["nvidia.com/gpu"] = sum(count for gpu in migs for count in gpu.values())
    else:
        if whole:
            resources["nvidia.com/gpu"] = whole
        for gpu in migs:
            for profile, count in gpu.items():
                name = f"nvidia.com/mig-{profile}"
                resources[name] = resources.get(name, 0) + count
    sharing = config.get("sharing") or {}
    for mode in ("timeSlicing", "mps"):
        spec = sharing.get(mode)
        if not spec:
            continue
        shared: dict[str, int] = {}
        for entry in spec.get("resources") or []:
            name, replicas = entry["name"], int(entry["replicas"])
            if replicas < 1:
                raise PluginFailed(f"{mode}: replicas {replicas} for {name}")
            if name not in resources:
                continue
            new_name = entry.get("rename") or (name + ".shared" if spec.get("renameByDefault") else name)
            shared[new_name] = resources.pop(name) * replicas
        resources.update(shared)
    return resources


def feature_labels(hw: Hardware, migs: list[dict[str, int]] | None, config: dict[str, Any]) -> dict[str, str]:
    """The labels GPU feature discovery writes for the node."""
    gpu = GPUS[hw.model]
    strategy = config["flags"]["migStrategy"]
    sharing = config.get("sharing") or {}
    mode = next((m for m in ("timeSlicing", "mps") if sharing.get(m)), None)
    replicas = 1
    if mode:
        replicas = max((int(r["replicas"]) for r in sharing[mode].get("resources") or []), default=1)
    labels = {
        "nvidia.com/gpu.count": str(hw.count),
        "nvidia.com/gpu.product": gpu.product,
        "nvidia.com/gpu.memory": str(gpu.memory_mib),
        "nvidia.com/gpu.replicas": str(replicas),
        "nvidia.com/gpu.sharing-strategy": {"timeSlicing": "time-slicing", "mps": "mps", None: "none"}[mode],
        "nvidia.com/mig.capable": str(bool(gpu.mig_profiles)).lower(),
        "nvidia.com/mig.strategy": strategy,
    }
    if migs is not None and strategy == "single":
        (profile,) = {p for g in migs for p in g}
        labels["nvidia.com/gpu.product"] = f"{gpu.product}-MIG-{profile}"
        labels["nvidia.com/gpu.count"] = str(sum(c for g in migs for c in g.values()))
    if migs is not None and strategy == "mixed":
        for gpu_devices in migs:
            for profile, count in gpu_devices.items():
                key = f"nvidia.com/mig-{profile}.count"
                labels[key] = str(int(labels.get(key, "0")) + count)
    return labels


# -- the whole picture ---------------------------------------------------------------------


@dataclass
class Cluster:
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    configmaps: dict[tuple[str, str], dict[str, Any]]
    cluster_policies: list[dict[str, Any]]
    mirror: Path
    # What outlives one look at the cluster, kept by the controller between rounds: the
    # config each plugin container read when it started (the plugin does not reread it), and
    # the MIG layout each node's GPUs hold, by node uid (it stays until mig-parted changes it).
    started: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    mig_applied: dict[str, tuple[str, list[dict[str, int]] | None]] = field(default_factory=dict)

    def running_on(self, node: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.pods
            if p["spec"].get("nodeName") == node
            and p.get("status", {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        ]

    def configmap_named(self, name: str) -> dict[str, Any] | None:
        found = [cm for (namespace, cm_name), cm in self.configmaps.items() if cm_name == name]
        return found[0] if len(found) == 1 else None


def _nfd_publishes_nvidia_labels(cluster: Cluster, node: str, output_dir: str | None) -> bool:
    """NFD turns GFD's feature files into labels when a worker on the node reads the folder
    GFD writes to and a running master allows the nvidia.com label namespace."""
    worker_reads = False
    for pod in cluster.running_on(node):
        for container in pod["spec"]["containers"]:
            if "nfd-worker" in (container.get("command") or []):
                volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
                for mount in container.get("volumeMounts") or []:
                    host = (volumes.get(mount["name"]) or {}).get("hostPath", {}).get("path", "")
                    if mount["mountPath"].rstrip("/").endswith("features.d") and host.rstrip("/") == (
                        output_dir or ""
                    ).rstrip("/"):
                        worker_reads = True
    if not worker_reads:
        return False
    for pod in cluster.pods:
        if pod.get("status", {}).get("phase") != "Running":
            continue
        for container in pod["spec"]["containers"]:
            if "nfd-master" not in (container.get("command") or []):
                continue
            text = mounted_file(
                pod, container, "/etc/kubernetes/node-feature-discovery/nfd-master.conf", cluster.configmaps
            )
            config = yaml.safe_load(text or "") or {}
            if "nvidia.com" in (config.get("extraLabelNs") or []):
                return True
    return False


def _nfd_pci_labels(cluster: Cluster, node: str) -> dict[str, str]:
    for pod in cluster.running_on(node):
        for container in pod["spec"]["containers"]:
            if "nfd-worker" not in (container.get("command") or []):
                continue
            text = mounted_file(
                pod, container, "/etc/kubernetes/node-feature-discovery/nfd-worker.conf", cluster.configmaps
            )
            pci = ((yaml.safe_load(text or "") or {}).get("sources") or {}).get("pci") or {}
            fields = pci.get("deviceLabelFields") or ["class", "vendor"]
            values = {"class": GPU_PCI_CLASS, "vendor": NVIDIA_VENDOR}
            name = "_".join(values[f] for f in fields if f in values)
            return {f"feature.node.kubernetes.io/pci-{name}.present": "true"}
    return {}


def _device_plugin_path(cluster: Cluster, node: dict[str, Any], hw: Hardware) -> NodeState:
    state = NodeState()
    name, node_uid = node["metadata"]["name"], node["metadata"]["uid"]
    pods = cluster.running_on(name)
    for pod in pods:
        for container in pod["spec"]["containers"]:
            if _image_name(container) != "k8s-mig-manager":
                continue
            uid = pod["metadata"]["uid"]
            if cluster.mig_applied.get(node_uid, ("", None))[0] == uid:
                continue
            # A MIG manager that started on the node: mig-parted applies the selected layout.
            path = _env(container, "MIG_PARTED_CONFIG_FILE") or _env(container, "CONFIG_FILE")
            selected = _env(container, "MIG_PARTED_SELECTED_CONFIG") or (node["metadata"].get("labels") or {}).get(
                "nvidia.com/mig.config"
            )
            text = mounted_file(pod, container, path, cluster.configmaps) if path else None
            cluster.mig_applied[node_uid] = (uid, mig_devices(cluster.mirror, hw, text, selected))
    migs = cluster.mig_applied.get(node_uid, ("", None))[1]
    state.notes.append(f"MIG {'on' if migs else 'off'}")

    def started_config(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
        key = (pod["metadata"]["uid"], container["name"])
        if key not in cluster.started:
            cluster.started[key] = plugin_config(pod, container, cluster.configmaps)
        return cluster.started[key]

    for pod in pods:
        for container in pod["spec"]["containers"]:
            if is_device_plugin(container):
                try:
                    config = started_config(pod, container)
                    state.resources.update(advertised(hw, migs, config))
                except PluginFailed as failure:
                    state.notes.append(f"device plugin failed: {failure}")
            elif is_feature_discovery(container):
                try:
                    config = started_config(pod, container)
                except PluginFailed as failure:
                    state.notes.append(f"feature discovery failed: {failure}")
                    continue
                volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
                output = next(
                    (
                        (volumes.get(m["name"]) or {}).get("hostPath", {}).get("path")
                        for m in container.get("volumeMounts") or []
                        if m["mountPath"].rstrip("/").endswith("features.d")
                    ),
                    None,
                )
                if _nfd_publishes_nvidia_labels(cluster, name, output):
                    state.labels.update(feature_labels(hw, migs, config))
                else:
                    state.notes.append("feature discovery: no NFD to publish its labels")
    state.labels.update(_nfd_pci_labels(cluster, name))
    return state


def _operator_path(cluster: Cluster, policy: dict[str, Any], node: dict[str, Any], hw: Hardware) -> NodeState:
    """The GPU operator: its operands on every GPU node, configured by the node's labels or
    the ClusterPolicy's defaults."""
    state = NodeState()
    spec = policy.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    state.labels["nvidia.com/gpu.present"] = "true"
    strategy = (spec.get("mig") or {}).get("strategy", "single")
    migs = None
    manager = spec.get("migManager") or {}
    if manager.get("enabled", True) and GPUS[hw.model].mig_profiles:
        config = manager.get("config") or {}
        selected = labels.get("nvidia.com/mig.config") or config.get("default") or "all-disabled"
        if config.get("name"):
            configmap = cluster.configmap_named(config["name"])
            text = ((configmap or {}).get("data") or {}).get("config.yaml")
        else:
            text = yaml.safe_dump(mirror_mig_config(cluster.mirror))
        migs = mig_devices(cluster.mirror, hw, text, selected)
    plugin = spec.get("devicePlugin") or {}
    config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": strategy}}
    plugin_config_ref = plugin.get("config") or {}
    if plugin_config_ref.get("name"):
        chosen = labels.get("nvidia.com/device-plugin.config") or plugin_config_ref.get("default")
        configmap = cluster.configmap_named(plugin_config_ref["name"])
        text = ((configmap or {}).get("data") or {}).get(chosen or "")
        if text is None:
            state.notes.append(f"device plugin config {chosen!r} not found")
            return state
        config = yaml.safe_load(text)
        config.setdefault("flags", {})["migStrategy"] = strategy
    if plugin.get("enabled", True):
        try:
            state.resources.update(advertised(hw, migs, config))
        except PluginFailed as failure:
            state.notes.append(f"device plugin failed: {failure}")
    if (spec.get("gfd") or {}).get("enabled", True):
        state.labels.update(feature_labels(hw, migs, config))
    return state


def _gke_path(cluster: Cluster, node: dict[str, Any], hw: Hardware) -> NodeState:
    """GKE's own device plugin: sharing and partitions as configured on the node pool."""
    labels = node["metadata"].get("labels") or {}
    state = NodeState()
    partition = labels.get("cloud.google.com/gke-gpu-partition-size")
    count = hw.count
    if partition:
        limit = mig_profile_limits(cluster.mirror, hw.model).get(partition)
        if not limit:
            state.notes.append(f"partition {partition} not offered by {hw.model}")
            return state
        count = hw.count * limit
    if labels.get("cloud.google.com/gke-gpu-sharing-strategy") == "time-sharing":
        count *= int(labels.get("cloud.google.com/gke-max-shared-clients-per-gpu", "1"))
    state.resources["nvidia.com/gpu"] = count
    return state


def node_state(cluster: Cluster, node: dict[str, Any]) -> NodeState:
    hw = hardware(node)
    if hw is None or hw.model not in GPUS:
        return NodeState()
    labels = node["metadata"].get("labels") or {}
    if "cloud.google.com/gke-accelerator" in labels:
        return _gke_path(cluster, node, hw)
    if cluster.cluster_policies:
        return _operator_path(cluster, cluster.cluster_policies[0], node, hw)
    return _device_plugin_path(cluster, node, hw)
