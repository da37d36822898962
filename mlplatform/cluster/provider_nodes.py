"""Simulated nodes as their provider makes them.

A node of the local plane carries what a node of the stack's environment carries when it
joins: the kubelet's own labels, the instance type and zone, the provider's node-pool label
(EKS managed node group, GKE node pool, AKS agent pool), the labels the stack declares for
its pool (set where the nodes are made), and its CPU and memory. Nothing NVIDIA's software
would add (no `nvidia.com/*` label, no GPU capacity): whatever stands in for that software
has to find these nodes and publish it, as on a real cluster.

The GPUs in the box are recorded in one annotation, the simulation's hardware: GKE also
labels a GPU pool with its accelerator and GPU sharing, which it configures on the pool.
"""

from __future__ import annotations

from typing import Any

from mlplatform.config import ResolvedConfig
from mlplatform.config.model import NodePool

SIMULATED_LABEL = "mlplatform.io/simulated-node"
# "<count> <model>": the GPUs physically in a simulated node (no label: only hardware knows).
HARDWARE_ANNOTATION = "sim.mlplatform.io/gpus"

# GKE's accelerator type names, by GPU model: what `--accelerator type=` takes.
_GKE_ACCELERATORS = {
    "T4": "nvidia-tesla-t4",
    "L4": "nvidia-l4",
    "V100-SXM2-16GB": "nvidia-tesla-v100",
    "A100-SXM4-40GB": "nvidia-tesla-a100",
    "A100-SXM4-80GB": "nvidia-a100-80gb",
    "H100-SXM5-80GB": "nvidia-h100-80gb",
    "H200-SXM5-141GB": "nvidia-h200-141gb",
}


def _provider_labels(resolved: ResolvedConfig, pool: NodePool, name: str) -> dict[str, str]:
    config = resolved.config
    labels: dict[str, str] = {}
    if config.environment == "openshift":
        labels.update({"node-role.kubernetes.io/worker": "", "node.openshift.io/os_id": "rhcos"})
    if config.cloud is None:
        return labels
    provider, region = config.cloud.provider, config.cloud.region or "region-1"
    zone = f"{region}-a" if provider == "gke" else f"{region}a"
    labels.update({"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone})
    if provider == "eks":
        labels.update({"eks.amazonaws.com/nodegroup": pool.name, "eks.amazonaws.com/capacityType": "ON_DEMAND"})
    elif provider == "gke":
        labels["cloud.google.com/gke-nodepool"] = pool.name
        gpu = pool.gpu
        if gpu is not None:
            # GKE configures a GPU pool's accelerator and its sharing on the pool itself and
            # says so in the node's labels; its own device plugin reads them.
            labels["cloud.google.com/gke-accelerator"] = _GKE_ACCELERATORS.get(gpu.model, gpu.model.lower())
            if gpu.sharing.time_slicing:
                labels["cloud.google.com/gke-gpu-sharing-strategy"] = "time-sharing"
                labels["cloud.google.com/gke-max-shared-clients-per-gpu"] = str(gpu.sharing.time_slicing.replicas)
            if gpu.sharing.mig and len(gpu.sharing.mig.devices) == 1:
                # GKE partitions a pool's GPUs into one profile (validation holds managed
                # pools to that; another install path configures MIG itself).
                (profile,) = gpu.sharing.mig.devices
                labels["cloud.google.com/gke-gpu-partition-size"] = profile
    elif provider == "aks":
        labels.update({"kubernetes.azure.com/agentpool": pool.name, "kubernetes.azure.com/mode": "user"})
    return labels


def provider_node(resolved: ResolvedConfig, pool: NodePool, index: int) -> dict[str, Any]:
    """The Node object of the pool's index-th node, as its provider registers it."""
    name = f"{pool.name}-{index}"
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        SIMULATED_LABEL: "true",
        **({"node.kubernetes.io/instance-type": pool.instance_type} if pool.instance_type else {}),
        **_provider_labels(resolved, pool, name),
        **pool.labels,
    }
    annotations = {"kwok.x-k8s.io/node": "fake"}
    if pool.gpu is not None:
        annotations[HARDWARE_ANNOTATION] = f"{pool.gpu.count} {pool.gpu.model}"
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", "ephemeral-storage": "200Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "taints": [
                {k: v for k, v in (("key", t.key), ("value", t.value), ("effect", t.effect)) if v is not None}
                for t in pool.taints
            ]
        },
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "kwok",
                "containerRuntimeVersion": "kwok",
            },
        },
    }


def simulated_nodes(resolved: ResolvedConfig) -> list[dict[str, Any]]:
    """Every node of every pool of the stack."""
    return [
        provider_node(resolved, pool, index)
        for pool in resolved.config.cluster.node_pools
        for index in range(pool.count)
    ]
