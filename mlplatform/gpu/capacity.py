"""What a node pool's GPUs look like to Kubernetes: extended resources and node labels.

One computation serves the scheduler-facing capacity of simulated nodes and, later, the
quota names teams are given, so the two can never disagree.
"""

from __future__ import annotations

from mlplatform.config.model import NodePool

GPU_RESOURCE = "nvidia.com/gpu"

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


def extended_resources(pool: NodePool) -> dict[str, int]:
    """Allocatable GPU resources of one node of the pool (whole GPUs, no sharing)."""
    if pool.gpu is None:
        return {}
    return {GPU_RESOURCE: pool.gpu.count}


def gpu_node_labels(pool: NodePool) -> dict[str, str]:
    """Labels GPU feature discovery puts on a node of this pool."""
    if pool.gpu is None:
        return {}
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": pool.gpu.model,
        "nvidia.com/gpu.count": str(pool.gpu.count),
        "nvidia.com/gpu.memory": str(GPU_MEMORY_MIB[pool.gpu.model]),
    }
