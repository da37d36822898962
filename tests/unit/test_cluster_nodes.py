"""Simulated nodes look as their provider makes them: nothing of NVIDIA's, nothing of ours
beyond what the stack declares its pools' nodes join with."""

from __future__ import annotations

import pytest

from mlplatform.cluster.provider_nodes import HARDWARE_ANNOTATION, SIMULATED_LABEL, simulated_nodes
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT

GKE = str(REPO_ROOT / "tests" / "fixtures" / "stacks" / "Pulumi.cloud-gke.yaml")


def _nodes(stack: str) -> dict[str, dict]:
    return {n["metadata"]["name"]: n for n in simulated_nodes(load_stack(stack))}


@pytest.mark.parametrize("stack", ["lab", "openshift", "cloud", GKE])
def test_no_node_carries_gpu_capacity_or_nvidia_labels(stack):
    resolved = load_stack(stack)
    declared = {key for pool in resolved.config.cluster.node_pools for key in pool.labels}
    for name, node in _nodes(stack).items():
        assert not [k for k in node["status"]["capacity"] if k.startswith("nvidia.com/")], name
        # Only what the stack says its nodes join with (OpenShift's MIG pool names its layout).
        assert not [k for k in node["metadata"]["labels"] if k.startswith("nvidia.com/") and k not in declared], name
        assert node["metadata"]["labels"][SIMULATED_LABEL] == "true"
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"


def test_lab_nodes_carry_the_declared_pool_labels_and_their_hardware():
    nodes = _nodes("lab")
    assert sorted(nodes) == ["cpu-0", "cpu-1", "gpu-a100-0", "gpu-t4-0", "gpu-t4-1"]
    a100 = nodes["gpu-a100-0"]
    assert a100["metadata"]["labels"]["mlplatform.io/node-pool"] == "gpu-a100"
    assert a100["metadata"]["annotations"][HARDWARE_ANNOTATION] == "8 A100-SXM4-40GB"
    assert a100["status"]["capacity"]["cpu"] == "64"
    cpu = nodes["cpu-0"]
    assert "mlplatform.io/node-pool" not in cpu["metadata"]["labels"]
    assert HARDWARE_ANNOTATION not in cpu["metadata"]["annotations"]


def test_eks_nodes_carry_their_node_group_zone_and_instance_type():
    nodes = _nodes("cloud")
    labels = nodes["gpu-h100-0"]["metadata"]["labels"]
    assert labels["eks.amazonaws.com/nodegroup"] == "gpu-h100"
    assert labels["node.kubernetes.io/instance-type"] == "p5.48xlarge"
    assert labels["topology.kubernetes.io/zone"] == "eu-west-1a"
    assert nodes["gpu-h100-0"]["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert nodes["system-0"]["spec"]["taints"] == []


def test_gke_gpu_nodes_carry_what_gke_configured_on_the_pool():
    labels = _nodes(GKE)["gpu-l4-0"]["metadata"]["labels"]
    assert labels["cloud.google.com/gke-nodepool"] == "gpu-l4"
    assert labels["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert labels["cloud.google.com/gke-gpu-sharing-strategy"] == "time-sharing"
    assert labels["cloud.google.com/gke-max-shared-clients-per-gpu"] == "3"


def test_openshift_nodes_are_workers_with_the_machinesets_labels():
    labels = _nodes("openshift")["gpu-h100-1"]["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/worker"] == ""
    assert labels["mlplatform.io/node-pool"] == "gpu-h100"
