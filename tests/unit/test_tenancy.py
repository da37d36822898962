"""Tenancy objects per environment, and GPU quota names that only the GPU layer writes."""

from __future__ import annotations

import ast

import pytest

from mlplatform.modules.tenancy import PRIORITY_CLASSES
from tests.conftest import REPO_ROOT


def _objects(mocks, typ):
    return {r.name: r.inputs for r in mocks.resources if r.typ == typ}


def test_quotas_list_every_gpu_resource_the_gpu_layer_publishes(run_stack):
    mocks, components = run_stack("lab")
    published = components["gpu"].outputs.resource_names
    quotas = _objects(mocks, "kubernetes:core/v1:ResourceQuota")
    assert set(quotas) == {"team-vision/team-quota", "team-nlp/team-quota", "team-analytics/team-quota"}
    for name, quota in quotas.items():
        gpu_keys = {k.removeprefix("requests.") for k in quota["spec"]["hard"] if k.startswith("requests.nvidia.com/")}
        assert gpu_keys == set(published), name
    vision = quotas["team-vision/team-quota"]["spec"]["hard"]
    assert vision["requests.nvidia.com/gpu.shared"] == "16"
    assert vision["requests.nvidia.com/mig-3g.20gb"] == "4"
    # Not granted means zero, not unlimited.
    assert vision["requests.nvidia.com/mig-1g.5gb"] == "0"
    assert vision["standard.storageclass.storage.k8s.io/requests.storage"] == "1Ti"
    assert vision["requests.cpu"] == "32" and vision["limits.memory"] == "128Gi"


def test_team_namespaces_are_restricted_and_labelled_for_gpus(run_stack):
    mocks, _ = run_stack("lab")
    namespaces = _objects(mocks, "kubernetes:core/v1:Namespace")
    vision = namespaces["team-vision"]["metadata"]["labels"]
    assert vision["pod-security.kubernetes.io/enforce"] == "restricted"
    assert vision["mlplatform.io/team"] == "vision" and vision["mlplatform.io/role"] == "team"
    assert vision["mlplatform.io/gpu"] == "true"
    assert namespaces["team-analytics"]["metadata"]["labels"]["mlplatform.io/gpu"] == "false"
    assert "openshift.io/user-monitoring" not in vision


def test_openshift_teams_are_projects_in_user_workload_monitoring(run_stack):
    mocks, _ = run_stack("openshift")
    namespace = _objects(mocks, "kubernetes:core/v1:Namespace")["team-fraud"]["metadata"]
    assert namespace["labels"]["openshift.io/user-monitoring"] == "true"
    assert namespace["annotations"] == {
        "openshift.io/display-name": "fraud",
        "openshift.io/description": "Fraud detection",
    }
    policy = _objects(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")["team-fraud/allow-from-platform"]
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[1]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "openshift-ingress",
        "openshift-monitoring",
        "openshift-user-workload-monitoring",
    ]


def test_network_policies_deny_ingress_by_default(run_stack):
    mocks, _ = run_stack("cloud")
    policies = _objects(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")
    deny = policies["team-recsys/default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # EKS's ALB reaches pods from outside the cluster: only platform namespaces are listed.
    peers = policies["team-recsys/allow-from-platform"]["spec"]["ingress"][0]["from"]
    assert peers[1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]


def test_rbac_binds_the_teams_groups_to_the_builtin_roles(run_stack):
    mocks, _ = run_stack("lab")
    bindings = _objects(mocks, "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert sorted(bindings) == [
        "team-analytics/team-edit",
        "team-nlp/team-admin",
        "team-nlp/team-edit",
        "team-vision/team-admin",
        "team-vision/team-edit",
        "team-vision/team-view",
    ]
    view = bindings["team-vision/team-view"]
    assert view["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    assert view["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "analysts"}]


def test_priority_classes_rank_serving_over_interactive_over_batch(run_stack):
    mocks, _ = run_stack("lab")
    classes = _objects(mocks, "kubernetes:scheduling.k8s.io/v1:PriorityClass")
    values = {name: spec["value"] for name, spec in classes.items()}
    assert values["mlplatform-serving"] > values["mlplatform-interactive"] > values["mlplatform-batch"]
    assert set(values) == set(PRIORITY_CLASSES)
    assert not any(spec["globalDefault"] for spec in classes.values())


def _string_literals(path):
    """String constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in (REPO_ROOT / "mlplatform").rglob("*.py")
        if "gpu" not in p.relative_to(REPO_ROOT / "mlplatform").parts and p.name != "gpu.py"
    ),
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_no_gpu_resource_name_is_written_outside_the_gpu_layer(path):
    assert not [s for s in _string_literals(path) if "nvidia.com/" in s]
