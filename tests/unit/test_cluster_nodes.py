"""Simulated nodes mirror the stack's node pools, GPUs included."""

from __future__ import annotations

from mlplatform.cluster.plane import SIMULATED_LABEL, simulated_nodes
from mlplatform.config import load_stack


def test_lab_nodes_follow_the_node_pools():
    nodes = {n["metadata"]["name"]: n for n in simulated_nodes(load_stack("lab"))}
    assert sorted(nodes) == ["cpu-0", "cpu-1", "gpu-a100-0", "gpu-t4-0", "gpu-t4-1"]
    a100 = nodes["gpu-a100-0"]
    assert a100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert a100["metadata"]["labels"]["nvidia.com/gpu.product"] == "A100-SXM4-40GB"
    assert a100["metadata"]["labels"][SIMULATED_LABEL] == "true"
    assert a100["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    cpu = nodes["cpu-0"]
    assert "nvidia.com/gpu" not in cpu["status"]["allocatable"]
    assert "nvidia.com/gpu.present" not in cpu["metadata"]["labels"]
    assert cpu["status"]["capacity"]["cpu"] == "16"


def test_taints_and_instance_types_are_carried_over():
    nodes = {n["metadata"]["name"]: n for n in simulated_nodes(load_stack("cloud"))}
    h100 = nodes["gpu-h100-0"]
    assert h100["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert h100["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "p5.48xlarge"
    assert nodes["system-0"]["spec"]["taints"] == []
