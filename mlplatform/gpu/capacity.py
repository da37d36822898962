"""What a node pool's GPUs look like to Kubernetes: the extended resources its device
plugin advertises.

One computation serves the GPU module's published outputs, the quota names teams are given
and Kueue's nominal quotas, so none of them can disagree. (What the nodes really advertise
is the device plugin's business: the e2e tests check it against a stand-in for NVIDIA's
stack that shares no code with this.)
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.config.model import GpuSpec, NodePool

# Every extended resource the GPU layer publishes starts with the vendor prefix.
GPU_VENDOR_PREFIX = "nvidia.com/"
GPU_RESOURCE = f"{GPU_VENDOR_PREFIX}gpu"
SHARED_SUFFIX = ".shared"
MIG_RESOURCE_PREFIX = f"{GPU_VENDOR_PREFIX}mig-"
# The node label the GPU operator's MIG manager reads: which layout a node's GPUs get.
MIG_CONFIG_LABEL = "nvidia.com/mig.config"


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
