"""Simulated nodes mirror the stack's node pools, GPUs and their sharing included."""

from __future__ import annotations

from mlplatform.cluster.plane import SIMULATED_LABEL, simulated_nodes
from mlplatform.config import load_stack


def _nodes(stack: str) -> dict[str, dict]:
    return {n["metadata"]["name"]: n for n in simulated_nodes(load_stack(stack))}


def test_lab_nodes_follow_the_node_pools_and_their_gpu_sharing():
    nodes = _nodes("lab")
    assert sorted(nodes) == ["cpu-0", "cpu-1", "gpu-a100-0", "gpu-t4-0", "gpu-t4-1"]
    a100 = nodes["gpu-a100-0"]
    # MIG mixed, 8 GPUs x (2x 1g.5gb + 2g.10gb + 3g.20gb): each profile is its own resource.
    allocatable = a100["status"]["allocatable"]
    assert {k: v for k, v in allocatable.items() if k.startswith("nvidia.com/")} == {
        "nvidia.com/mig-1g.5gb": "16",
        "nvidia.com/mig-2g.10gb": "8",
        "nvidia.com/mig-3g.20gb": "8",
    }
    labels = a100["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "A100-SXM4-40GB"
    assert labels["nvidia.com/device-plugin.config"] == "gpu-a100"
    assert labels["nvidia.com/mig.config"] == "mlplatform-gpu-a100"
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels[SIMULATED_LABEL] == "true"
    assert a100["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    # Time-slicing, 4 T4 x 4 replicas, renamed to .shared.
    t4 = nodes["gpu-t4-0"]
    assert {k: v for k, v in t4["status"]["allocatable"].items() if k.startswith("nvidia.com/")} == {
        "nvidia.com/gpu.shared": "16"
    }
    assert t4["metadata"]["labels"]["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert t4["metadata"]["labels"]["nvidia.com/gpu.replicas"] == "4"
    cpu = nodes["cpu-0"]
    assert not [k for k in cpu["status"]["allocatable"] if k.startswith("nvidia.com/")]
    assert "nvidia.com/gpu.present" not in cpu["metadata"]["labels"]
    assert cpu["status"]["capacity"]["cpu"] == "16"


def test_mig_single_advertises_slices_as_gpus_with_the_mig_product_label():
    h100 = _nodes("openshift")["gpu-h100-0"]
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "56"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "H100-SXM5-80GB-MIG-1g.10gb"


def test_taints_and_instance_types_are_carried_over():
    nodes = _nodes("cloud")
    h100 = nodes["gpu-h100-0"]
    assert h100["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert h100["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "p5.48xlarge"
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert nodes["gpu-a10g-0"]["status"]["allocatable"]["nvidia.com/gpu.shared"] == "8"
    assert nodes["system-0"]["spec"]["taints"] == []
