"""OpenShift's GPU path on the control plane: the OLM subscription and the ClusterPolicy."""

from __future__ import annotations

import pytest


@pytest.mark.on_stack("openshift")
def test_openshift_gpu_operator_subscription_and_cluster_policy_are_accepted(stack_planes):
    plane = stack_planes("openshift").plane
    policy = plane.get("clusterpolicy", "gpu-cluster-policy")
    assert policy["spec"]["mig"]["strategy"] == "single"
    assert policy["spec"]["devicePlugin"]["config"]["name"] == "nvidia-device-plugin-configs"
    subscription = plane.get("subscription", "gpu-operator-certified", "-n", "nvidia-gpu-operator")
    assert subscription["spec"]["startingCSV"] == "gpu-operator-certified.v26.7.0"
