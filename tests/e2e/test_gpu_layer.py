"""The GPU layer on the control plane: its DaemonSets land on their pools, and workloads
land on the pool that offers the GPU resource they ask for."""

from __future__ import annotations

import json

import pytest


def _daemonset_ready(plane, namespace: str, name: str, expected: int) -> bool:
    status = plane.get("daemonset", name, "-n", namespace).get("status", {})
    return status.get("desiredNumberScheduled") == expected and status.get("numberReady") == expected


def _nodes_of(plane, namespace: str, selector: str) -> set[str]:
    pods = plane.get("pods", "-n", namespace, "-l", selector)["items"]
    return {p["spec"].get("nodeName") for p in pods}


pytestmark = pytest.mark.on_stack("lab")


@pytest.fixture
def lab_gpu(stack_planes):
    """The session's plane with the lab stack applied (deleted by test_render_apply)."""
    return stack_planes("lab").plane


def test_device_plugin_and_feature_discovery_run_once_per_node_of_their_pool(lab_gpu):
    plane = lab_gpu
    expected = {
        "nvidia-device-plugin-gpu-a100": 1,
        "nvidia-device-plugin-gpu-t4": 2,
        "gpu-feature-discovery-gpu-a100": 1,
        "gpu-feature-discovery-gpu-t4": 2,
        "dcgm-exporter": 3,
    }
    for name, count in expected.items():
        plane.wait_for(
            f"daemonset {name} ready on {count} node(s)",
            lambda n=name, c=count: _daemonset_ready(plane, "nvidia-device-plugin", n, c),
        )
    assert _nodes_of(
        plane, "nvidia-device-plugin", "mlplatform.io/gpu-config=gpu-t4,app.kubernetes.io/name=nvidia-device-plugin"
    ) == {"gpu-t4-0", "gpu-t4-1"}
    assert _nodes_of(
        plane, "nvidia-device-plugin", "mlplatform.io/gpu-config=gpu-a100,app.kubernetes.io/name=nvidia-device-plugin"
    ) == {"gpu-a100-0"}
    assert _nodes_of(plane, "nvidia-device-plugin", "app.kubernetes.io/name=dcgm-exporter") == {
        "gpu-a100-0",
        "gpu-t4-0",
        "gpu-t4-1",
    }


def _pod(name: str, resource: str, count: int = 1) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.k8s.io/pause:3.10", "resources": {"limits": {resource: str(count)}}}
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


@pytest.mark.parametrize(
    ("resource", "pool_prefix"),
    [
        ("nvidia.com/gpu.shared", "gpu-t4-"),
        ("nvidia.com/mig-3g.20gb", "gpu-a100-"),
        ("nvidia.com/mig-1g.5gb", "gpu-a100-"),
    ],
)
def test_workload_lands_on_the_pool_offering_its_resource(lab_gpu, make_namespace, resource, pool_prefix):
    plane = lab_gpu
    namespace = make_namespace()
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(_pod("work", resource)))
    plane.wait_for("pod Running", lambda: plane.get("pod", "work", "-n", namespace)["status"].get("phase") == "Running")
    assert plane.get("pod", "work", "-n", namespace)["spec"]["nodeName"].startswith(pool_prefix)


@pytest.mark.parametrize("resource", ["nvidia.com/mig-7g.40gb", "nvidia.com/gpu"])
def test_resource_no_pool_offers_stays_pending_with_the_schedulers_reason(lab_gpu, make_namespace, resource):
    # The lab shares every GPU: whole nvidia.com/gpu devices and 7g.40gb slices exist nowhere.
    plane = lab_gpu
    namespace = make_namespace()
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(_pod("nowhere", resource)))

    def reason() -> str:
        conditions = plane.get("pod", "nowhere", "-n", namespace)["status"].get("conditions", [])
        scheduled = next((c for c in conditions if c["type"] == "PodScheduled"), {})
        return scheduled.get("message", "") if scheduled.get("reason") == "Unschedulable" else ""

    plane.wait_for("Unschedulable", lambda: reason() != "")
    assert f"Insufficient {resource}" in reason()
    assert plane.get("pod", "nowhere", "-n", namespace)["status"]["phase"] == "Pending"
