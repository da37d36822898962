"""OpenShift's GPU path on the control plane: the OLM subscription and the ClusterPolicy."""

from __future__ import annotations

from tests.e2e.test_render_apply import apply_stack, delete_stack


def test_openshift_gpu_operator_subscription_and_cluster_policy_are_accepted(plane, tmp_path):
    apply_stack(plane, "openshift", tmp_path)
    policy = plane.get("clusterpolicy", "gpu-cluster-policy")
    assert policy["spec"]["mig"]["strategy"] == "single"
    assert policy["spec"]["devicePlugin"]["config"]["name"] == "nvidia-device-plugin-configs"
    subscription = plane.get("subscription", "gpu-operator-certified", "-n", "nvidia-gpu-operator")
    assert subscription["spec"]["startingCSV"] == "gpu-operator-certified.v26.7.0"
    delete_stack(plane, tmp_path)
    plane.mlplatform("cluster", "up", "--stack", "lab", "--simulated")
