"""GPU nodes of OpenShift, EKS and GKE shaped clusters: after the stack is applied, each GPU
pool publishes what its sharing promises. Expected figures are worked out by hand from the
pool's hardware and sharing; the nodes start with none of it (tests/simulated_nvidia)."""

from __future__ import annotations

import pytest

from tests.e2e.test_gpu_layer import wait_for_resources
from tests.e2e.test_render_apply import GKE_FIXTURE, apply_stack


@pytest.mark.on_stack("openshift")
def test_openshift_gpu_operator_subscription_and_cluster_policy_are_accepted(stack_planes):
    plane = stack_planes("openshift").plane
    policy = plane.get("clusterpolicy", "gpu-cluster-policy")
    assert policy["spec"]["mig"]["strategy"] == "single"
    assert policy["spec"]["devicePlugin"]["config"]["name"] == "nvidia-device-plugin-configs"
    subscription = plane.get("subscription", "gpu-operator-certified", "-n", "nvidia-gpu-operator")
    assert subscription["spec"]["startingCSV"] == "gpu-operator-certified.v26.7.0"


@pytest.mark.on_stack("openshift")
def test_openshift_mig_pool_publishes_its_slices_through_the_operator(stack_planes):
    plane = stack_planes("openshift").plane
    # 8 H100-80GB per node, MIG single 7x 1g.10gb each: 56 slices as nvidia.com/gpu.
    h100 = {"nvidia.com/gpu": "56"}
    wait_for_resources(plane, {"gpu-h100-0": h100, "gpu-h100-1": h100, "worker-0": {}, "worker-1": {}, "worker-2": {}})
    labels = plane.get("node", "gpu-h100-0")["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"


@pytest.mark.on_stack("cloud")
def test_eks_node_groups_publish_their_shares_and_whole_gpus(stack_planes):
    plane = stack_planes("cloud").plane
    # g5.12xlarge: 4 A10G time-sliced 2 ways, renamed -> 8 shared; p5.48xlarge: 8 whole H100s.
    a10g = {"nvidia.com/gpu.shared": "8"}
    wait_for_resources(
        plane,
        {
            "gpu-a10g-0": a10g,
            "gpu-a10g-1": a10g,
            "gpu-h100-0": {"nvidia.com/gpu": "8"},
            "system-0": {},
            "system-1": {},
        },
    )


@pytest.mark.on_stack(GKE_FIXTURE)
def test_gke_pools_publish_what_gke_shares_and_the_quotas_name(request, tmp_path):
    # GKE's own device plugin: 2 L4 per g2-standard-24, 3 clients each, under nvidia.com/gpu
    # (the name the platform's quotas use for this stack).
    plane = request.getfixturevalue("plane")
    apply_stack(plane, GKE_FIXTURE, tmp_path)
    l4 = {"nvidia.com/gpu": "6"}
    wait_for_resources(plane, {"gpu-l4-0": l4, "gpu-l4-1": l4, "system-0": {}, "system-1": {}})
