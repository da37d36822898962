"""Team quotas enforced by the real apiserver: GPU shares, zero for what a team was not
granted, LimitRange defaults for pods that ask for nothing."""

from __future__ import annotations

import json

import pytest

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# The Kueue test below reads the cloud stack instead (its own marker is the closer one).
pytestmark = pytest.mark.on_stack("lab")


@pytest.fixture
def lab_teams(stack_planes):
    """The session's plane with the lab stack applied (deleted by test_render_apply)."""
    plane = stack_planes("lab").plane
    # The quota controller fills in status before admission counts against it.
    plane.wait_for(
        "team quota status",
        lambda: "hard" in plane.get("resourcequota", "team-quota", "-n", "team-vision").get("status", {}),
    )
    return plane


def _pod(name: str, limits: dict[str, str] | None = None) -> dict:
    container = {"name": "main", "image": "registry.k8s.io/pause:3.10", "securityContext": RESTRICTED}
    if limits:
        container["resources"] = {"limits": limits}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [container],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def _apply(plane, namespace: str, pod: dict, check: bool = True):
    return plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(pod), check=check)


def test_pod_within_the_teams_gpu_share_runs_on_a_gpu_node(lab_teams):
    plane = lab_teams
    _apply(plane, "team-vision", _pod("notebook", {"nvidia.com/gpu.shared": "1", "cpu": "1", "memory": "2Gi"}))
    plane.wait_for(
        "notebook Running",
        lambda: plane.get("pod", "notebook", "-n", "team-vision")["status"].get("phase") == "Running",
    )
    assert plane.get("pod", "notebook", "-n", "team-vision")["spec"]["nodeName"].startswith("gpu-t4-")
    plane.wait_for(
        "quota usage recorded",
        lambda: (
            plane.get("resourcequota", "team-quota", "-n", "team-vision")["status"]
            .get("used", {})
            .get("requests.nvidia.com/gpu.shared")
            == "1"
        ),
    )
    plane.kubectl("delete", "pod", "notebook", "-n", "team-vision", "--wait=true")


def test_pod_beyond_the_teams_gpu_quota_is_rejected_with_the_quota_message(lab_teams):
    proc = _apply(lab_teams, "team-vision", _pod("big-train", {"nvidia.com/mig-3g.20gb": "5"}), check=False)
    assert proc.returncode != 0
    assert "exceeded quota: team-quota" in proc.stderr
    assert "requested: requests.nvidia.com/mig-3g.20gb=5" in proc.stderr
    assert "limited: requests.nvidia.com/mig-3g.20gb=4" in proc.stderr


def test_gpu_resource_not_granted_to_the_team_is_zero(lab_teams):
    proc = _apply(lab_teams, "team-analytics", _pod("sneaky", {"nvidia.com/gpu.shared": "1"}), check=False)
    assert proc.returncode != 0
    assert "limited: requests.nvidia.com/gpu.shared=0" in proc.stderr


def test_pod_without_requests_gets_the_limit_range_defaults(lab_teams):
    plane = lab_teams
    _apply(plane, "team-nlp", _pod("plain"))
    resources = plane.get("pod", "plain", "-n", "team-nlp")["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}
    plane.kubectl("delete", "pod", "plain", "-n", "team-nlp", "--wait=true")


def test_team_namespaces_enforce_restricted_pod_security(lab_teams):
    pod = _pod("root")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    proc = _apply(lab_teams, "team-nlp", pod, check=False)
    assert proc.returncode != 0 and 'violates PodSecurity "restricted:latest"' in proc.stderr


@pytest.mark.on_stack("cloud")
def test_kueue_controller_and_team_queues_apply(stack_planes):
    """The cloud stack queues through Kueue: its controller from the pinned upstream base,
    a ClusterQueue per team in one cohort, a LocalQueue in each team namespace."""
    plane = stack_planes("cloud").plane
    plane.kubectl("rollout", "status", "deployment/kueue-controller-manager", "-n", "kueue-system", "--timeout=120s")
    for crd in ("clusterqueues.kueue.x-k8s.io", "localqueues.kueue.x-k8s.io", "resourceflavors.kueue.x-k8s.io"):
        conditions = plane.get("crd", crd)["status"]["conditions"]
        assert any(c["type"] == "Established" and c["status"] == "True" for c in conditions), crd
    queue = plane.get("clusterqueue", "team-recsys")
    assert queue["spec"]["cohortName"] == "ml"
    gpu_groups = {tuple(g["coveredResources"]): g["flavors"] for g in queue["spec"]["resourceGroups"]}
    assert gpu_groups[("nvidia.com/gpu",)] == [
        {"name": "gpu-h100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}
    ]
    local = plane.get("localqueue", "default", "-n", "team-search")
    assert local["spec"]["clusterQueue"] == "team-search"
    # EKS names a managed node group's nodes by this label; the flavor must select the
    # pool's nodes as EKS made them, and those nodes must exist on the plane.
    flavor = plane.get("resourceflavor", "gpu-h100")
    assert flavor["spec"]["nodeLabels"] == {"eks.amazonaws.com/nodegroup": "gpu-h100"}
    pool_nodes = plane.get("nodes", "-l", "eks.amazonaws.com/nodegroup=gpu-h100")["items"]
    assert [n["metadata"]["name"] for n in pool_nodes], "no node of the gpu-h100 node group"
