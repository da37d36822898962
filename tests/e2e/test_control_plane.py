"""The local control plane is a real Kubernetes API: real scheduling, real admission."""

from __future__ import annotations

import json
import os

import pytest

from mlplatform.cluster.plane import process_alive
from mlplatform.lock import load_lock
from tests.e2e.conftest import start_plane


def _pod(name: str, resources: dict | None = None, node_selector: dict | None = None, restricted: bool = False) -> dict:
    container: dict = {"name": "main", "image": "registry.k8s.io/pause:3.10"}
    if resources is not None:
        container["resources"] = resources
    if restricted:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    spec: dict = {
        "containers": [container],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _apply(plane, namespace: str, doc: dict, check: bool = True):
    return plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(doc), check=check)


def test_apiserver_reports_the_pinned_version(plane):
    version = json.loads(plane.kubectl("version", "-o", "json").stdout)
    pinned = load_lock().tools["kubernetes"].version
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_node_pools_become_ready_nodes_that_carry_only_what_their_provider_gives(plane):
    nodes = {n["metadata"]["name"]: n for n in plane.get("nodes")["items"]}
    assert sorted(nodes) == ["cpu-0", "cpu-1", "gpu-a100-0", "gpu-t4-0", "gpu-t4-1"]
    for name, node in nodes.items():
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", name
        # Before anything is installed, no node shows a GPU: that is NVIDIA's software's job.
        assert not [k for k in node["status"]["allocatable"] if k.startswith("nvidia.com/")], name
        assert not [k for k in node["metadata"]["labels"] if k.startswith("nvidia.com/")], name
    # What the lab stack declares its GPU pools' nodes join with, and their CPUs.
    assert nodes["gpu-a100-0"]["metadata"]["labels"]["mlplatform.io/node-pool"] == "gpu-a100"
    assert "mlplatform.io/node-pool" not in nodes["cpu-0"]["metadata"]["labels"]
    assert nodes["cpu-0"]["status"]["capacity"]["cpu"] == "16"


def test_pod_security_admission_enforces_restricted(plane, make_namespace):
    namespace = make_namespace({"pod-security.kubernetes.io/enforce": "restricted"})
    bad = _pod("root-pod")
    bad["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    proc = _apply(plane, namespace, bad, check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    _apply(plane, namespace, _pod("good-pod", restricted=True))


def test_resource_quota_admission_rejects_gpus_beyond_the_quota(plane, make_namespace):
    namespace = make_namespace()
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpus"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "1"}},
    }
    _apply(plane, namespace, quota)
    plane.wait_for(
        "quota status", lambda: "hard" in plane.get("resourcequota", "gpus", "-n", namespace).get("status", {})
    )
    proc = _apply(plane, namespace, _pod("greedy", resources={"limits": {"nvidia.com/gpu": "2"}}), check=False)
    assert proc.returncode != 0
    assert "exceeded quota: gpus" in proc.stderr
    assert "requested: requests.nvidia.com/gpu=2" in proc.stderr


def test_limit_range_defaults_apply_to_pods_without_requests(plane, make_namespace):
    namespace = make_namespace()
    limits = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "defaults"},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "500m", "memory": "512Mi"},
                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                }
            ]
        },
    }
    _apply(plane, namespace, limits)
    _apply(plane, namespace, _pod("plain"))
    resources = plane.get("pod", "plain", "-n", namespace)["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}


def test_deployments_become_available_through_the_controller_manager(plane, make_namespace):
    namespace = make_namespace()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": _pod("x")["spec"]},
        },
    }
    _apply(plane, namespace, deployment)
    plane.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    assert plane.get("deployment", "web", "-n", namespace)["status"]["availableReplicas"] == 2


def test_claims_are_bound_to_simulated_volumes_that_go_with_them(plane, make_namespace):
    namespace = make_namespace()
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}}},
    }
    _apply(plane, namespace, claim)
    plane.wait_for(
        "claim bound", lambda: plane.get("pvc", "data", "-n", namespace).get("status", {}).get("phase") == "Bound"
    )
    volume_name = plane.get("pvc", "data", "-n", namespace)["spec"]["volumeName"]
    volume = plane.get("pv", volume_name)
    assert volume["spec"]["capacity"]["storage"] == "3Gi"
    assert volume["spec"]["claimRef"]["name"] == "data"
    plane.kubectl("delete", "pvc", "data", "-n", namespace, "--wait=true")
    plane.wait_for("volume deleted", lambda: plane.kubectl("get", "pv", volume_name, check=False).returncode != 0)


def test_openshift_stack_brings_its_apis_and_node_pools(plane, make_namespace):
    mirror = os.environ.get("MLPLATFORM_MIRROR")
    if not mirror:
        pytest.fail("the OpenShift APIs come from the upstream mirror: set MLPLATFORM_MIRROR", pytrace=False)
    proc = plane.mlplatform("cluster", "up", "--stack", "openshift", "--simulated")
    installed = next(line for line in proc.stdout.splitlines() if line.startswith("environment APIs installed: "))
    assert installed.startswith("environment APIs installed: openshift/crds, olm/crds, gpu-operator/crds")
    assert installed.endswith(", network-attachment-definitions.k8s.cni.cncf.io")
    assert plane.kubectl("get", "crd", "network-attachment-definitions.k8s.cni.cncf.io", check=False).returncode == 0
    names = sorted(n["metadata"]["name"] for n in plane.get("nodes")["items"])
    assert names == ["gpu-h100-0", "gpu-h100-1", "worker-0", "worker-1", "worker-2"]
    namespace = make_namespace()
    route = {
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": {"name": "ui"},
        "spec": {"host": "ui.apps.ocp.example.com", "to": {"kind": "Service", "name": "ui"}},
    }
    _apply(plane, namespace, route)
    assert plane.get("route", "ui", "-n", namespace)["spec"]["host"] == "ui.apps.ocp.example.com"
    subscription = plane.get("crd", "subscriptions.operators.coreos.com")
    assert any(c["type"] == "Established" and c["status"] == "True" for c in subscription["status"]["conditions"])
    # Back to the lab's pools for the tests that follow.
    plane.mlplatform("cluster", "up", "--stack", "lab", "--simulated")


def test_cluster_down_leaves_nothing_running(tmp_path):
    # A plane of its own: the session's plane stays up for the other tests.
    plane = start_plane(tmp_path, 100)
    # The stand-in for NVIDIA's software is the test's, not the plane's: stopped by the test.
    plane.stop_nvidia()
    status = plane.mlplatform("cluster", "status", check=False)
    assert status.returncode == 0, status.stdout
    pids = [int(line.split("pid ")[1].rstrip(")")) for line in status.stdout.splitlines() if "running" in line]
    assert len(pids) == 6
    plane.mlplatform("cluster", "down")
    for pid in pids:
        assert not process_alive(pid), pid
    after = plane.mlplatform("cluster", "status", check=False)
    assert after.returncode == 1 and "running" not in after.stdout
