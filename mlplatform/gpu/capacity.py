"""What a node pool's GPUs look like to Kubernetes: extended resources and node labels.

One computation serves the GPU module's published outputs, the quota names teams are
given and the capacity of simulated nodes, so none of them can disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.config.model import GpuSpec, NodePool

# Every extended resource the GPU layer publishes starts with the vendor prefix.
GPU_VENDOR_PREFIX = "nvidia.com/"
GPU_RESOURCE = f"{GPU_VENDOR_PREFIX}gpu"
SHARED_SUFFIX = ".shared"
MIG_RESOURCE_PREFIX = f"{GPU_VENDOR_PREFIX}mig-"
# Node labels the GPU stack reads: which device plugin config and which MIG layout a node gets.
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"

# Framebuffer per GPU product in MiB, as GPU feature discovery reports `nvidia.com/gpu.memory`.
GPU_MEMORY_MIB: dict[str, int] = {
    "A100-SXM4-40GB": 40960,
    "A100-SXM4-80GB": 81920,
    "A100-PCIE-40GB": 40960,
    "A100-PCIE-80GB": 81920,
    "A30": 24576,
    "H100-SXM5-80GB": 81559,
    "H100-PCIE-80GB": 81559,
    "H100-NVL": 95830,
    "H200-SXM5-141GB": 143771,
    "L4": 23034,
    "L40S": 46068,
    "A10G": 23028,
    "T4": 15360,
    "V100-SXM2-16GB": 16384,
}


@dataclass(frozen=True)
class PoolGpuResources:
    """Extended resources of one pool: per node, and for the whole pool."""

    pool: str
    nodes: int
    per_node: dict[str, int]

    @property
    def total(self) -> dict[str, int]:
        return {name: count * self.nodes for name, count in self.per_node.items()}


def sharing_strategy(gpu: GpuSpec) -> str:
    sharing = gpu.sharing
    if sharing.time_slicing:
        return "time-slicing"
    if sharing.mps:
        return "mps"
    return "none"


def mig_strategy(gpu: GpuSpec) -> str:
    return gpu.sharing.mig.strategy if gpu.sharing.mig else "none"


def _shared(name: str, rename: bool) -> str:
    return name + SHARED_SUFFIX if rename else name


def extended_resources(pool: NodePool) -> dict[str, int]:
    """Allocatable GPU resources of one node of the pool, as the device plugin advertises them."""
    gpu = pool.gpu
    if gpu is None:
        return {}
    sharing = gpu.sharing
    # Whole devices first: GPUs, or MIG devices when the GPUs are partitioned.
    if sharing.mig is None:
        devices = {GPU_RESOURCE: gpu.count}
    elif sharing.mig.strategy == "single":
        devices = {GPU_RESOURCE: gpu.count * sum(sharing.mig.devices.values())}
    else:
        devices = {
            f"{MIG_RESOURCE_PREFIX}{profile}": gpu.count * count for profile, count in sharing.mig.devices.items()
        }
    # Then sharing multiplies each device by its replicas, under the `.shared` name by default.
    replicated = sharing.time_slicing or sharing.mps
    if replicated is None:
        return devices
    return {_shared(name, replicated.rename_by_default): count * replicated.replicas for name, count in devices.items()}


def pool_resources(pool: NodePool) -> PoolGpuResources:
    return PoolGpuResources(pool=pool.name, nodes=pool.count, per_node=extended_resources(pool))


def mig_layout_name(pool: NodePool) -> str:
    return f"mlplatform-{pool.name}"


def gpu_node_labels(pool: NodePool) -> dict[str, str]:
    """Labels a node of this pool carries: the selectors our GPU stack uses, and what GPU
    feature discovery reports about it."""
    gpu = pool.gpu
    if gpu is None:
        return {}
    labels = {
        DEVICE_PLUGIN_CONFIG_LABEL: pool.name,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu.model,
        "nvidia.com/gpu.count": str(gpu.count),
        "nvidia.com/gpu.memory": str(GPU_MEMORY_MIB[gpu.model]),
        "nvidia.com/mig.strategy": mig_strategy(gpu),
        "nvidia.com/gpu.sharing-strategy": sharing_strategy(gpu),
    }
    replicated = gpu.sharing.time_slicing or gpu.sharing.mps
    labels["nvidia.com/gpu.replicas"] = str(replicated.replicas if replicated else 1)
    if gpu.sharing.mig:
        labels[MIG_CONFIG_LABEL] = mig_layout_name(pool)
        if gpu.sharing.mig.strategy == "single":
            (profile,) = gpu.sharing.mig.devices
            labels["nvidia.com/gpu.product"] = f"{gpu.model}-MIG-{profile}"
    return labels
