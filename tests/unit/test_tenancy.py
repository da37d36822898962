"""Tenancy objects per environment, and GPU quota names that only the GPU layer writes."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from mlplatform.modules.tenancy import PRIORITY_CLASSES
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT, render_shared, validate_against


def _objects(mocks, typ):
    return {r.name: r.inputs for r in mocks.resources if r.typ == typ}


def test_quotas_list_every_gpu_resource_the_gpu_layer_publishes(run_stack):
    mocks, components = run_stack("lab")
    published = components["gpu"].outputs.resource_names
    quotas = {
        name: quota
        for name, quota in _objects(mocks, "kubernetes:core/v1:ResourceQuota").items()
        if name.endswith("/team-quota")
    }
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
    annotations = dict(namespace["annotations"])
    # The Profile's owner (workspaces is on), as the stack names the team's.
    owner = next(t.owner for t in load_stack("openshift").config.modules.tenancy.teams if t.name == "fraud")
    assert annotations.pop("owner") == owner
    assert annotations == {
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


def test_team_namespaces_are_isolated_both_ways_with_named_ways_out(run_stack):
    mocks, _ = run_stack("cloud")
    policies = _objects(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")
    team = {name.split("/", 1)[1]: p["spec"] for name, p in policies.items() if name.startswith("team-recsys/")}
    assert team["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # EKS's ALB reaches pods from outside the cluster: only platform namespaces are listed.
    peers = team["allow-from-platform"]["ingress"][0]["from"]
    assert peers[1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]
    # DNS as EKS runs it (CoreDNS in kube-system), both protocols.
    (dns,) = team["allow-dns"]["egress"]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    # The stack's API server range, on the API ports only.
    (api,) = team["allow-kube-api"]["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.0/20"}}]
    assert [p["port"] for p in api["ports"]] == [443, 6443]
    # Public HTTPS leaves every private range and the metadata services out.
    (public,) = team["allow-public-https"]["egress"]
    excepted = public["to"][0]["ipBlock"]["except"]
    assert (
        "169.254.0.0/16" in excepted
        and "10.0.0.0/8" in excepted
        and public["ports"] == [{"port": 443, "protocol": "TCP"}]
    )
    # Each ML module opens the way to what it offers teams, and no more.
    assert sorted(team) == [
        "allow-dns",
        "allow-from-platform",
        # Ingress: the mesh's gateway to the team's notebook servers, nothing else from outside.
        "allow-gateway-to-notebooks",
        "allow-istiod",
        "allow-katib-db-manager",
        "allow-kube-api",
        "allow-mlflow",
        "allow-model-metrics",
        "allow-pipelines-api",
        "allow-public-https",
        "allow-same-namespace",
        "default-deny",
    ]


def test_openshift_teams_resolve_names_through_the_dns_operator(run_stack):
    mocks, _ = run_stack("openshift")
    policy = _objects(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")["team-fraud/allow-dns"]
    (rule,) = policy["spec"]["egress"]
    assert rule["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "openshift-dns"}
    assert {p["port"] for p in rule["ports"]} == {5353}


def test_metadata_addresses_are_cut_out_of_every_team_range():
    from mlplatform.tenancy.network import ip_block, metadata_overlap

    assert ip_block("169.254.0.0/16") == {"ipBlock": {"cidr": "169.254.0.0/16", "except": ["169.254.169.254/32"]}}
    assert ip_block("0.0.0.0/0")["ipBlock"]["except"] == ["169.254.169.254/32", "100.100.100.200/32"]
    assert ip_block("fd00:ec2::/64")["ipBlock"]["except"] == ["fd00:ec2::254/128"]
    assert ip_block("10.0.0.0/8") == {"ipBlock": {"cidr": "10.0.0.0/8"}}
    # A range that is the metadata address cannot have it cut out: validation refuses it.
    assert metadata_overlap("169.254.169.254/32") == "169.254.169.254/32"
    assert metadata_overlap("169.254.0.0/16") is None


@pytest.mark.parametrize(
    ("ranges", "reason"),
    [
        ('["169.254.169.254/32"]', "lies inside the cloud metadata address 169.254.169.254/32"),
        ('["10.0.0.300/8"]', "'10.0.0.300/8' is not a CIDR"),
        ('["10.0.0.1/8"]', "host bits must be zero"),
    ],
)
def test_a_team_range_that_is_no_cidr_or_a_metadata_address_is_refused(tmp_path, ranges, reason):
    repo = REPO_ROOT
    stack = (repo / "stacks" / "Pulumi.lab.yaml").read_text()
    path = tmp_path / "Pulumi.lab.yaml"
    path.write_text(stack.replace('allowedCidrs: ["192.168.20.15/32"]', f"allowedCidrs: {ranges}"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlplatform", "validate", str(path)], capture_output=True, text=True, cwd=repo
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "modules.tenancy.egress.allowedCidrs" in output and reason in output, output


def test_rbac_binds_the_teams_groups_to_the_team_roles(run_stack):
    mocks, _ = run_stack("lab")
    # The ML services bring RoleBindings of their own in their namespaces.
    bindings = {
        name: binding
        for name, binding in _objects(mocks, "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding").items()
        if name.startswith("team-")
    }
    assert sorted(bindings) == [
        "team-analytics/team-edit",
        "team-nlp/team-admin",
        "team-nlp/team-edit",
        "team-vision/team-admin",
        "team-vision/team-edit",
        "team-vision/team-view",
    ]
    view = bindings["team-vision/team-view"]
    assert view["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "mlplatform-team-view",
    }
    assert view["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "analysts"}]
    # Never a ClusterRoleBinding for a team's groups: their rights end at their namespace.
    groups = {"vision-leads", "vision", "analysts", "nlp-leads", "nlp"}
    for binding in _objects(mocks, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding").values():
        assert not {s["name"] for s in binding.get("subjects") or []} & groups


# Resources a team role must never write in its own namespace, and cluster-scoped ones it
# must not touch at all (a RoleBinding cannot grant those, but a rule naming them is a bug).
GUARDED = {("", "resourcequotas"), ("", "limitranges"), ("networking.k8s.io", "networkpolicies")}
CLUSTER_SCOPED = {
    ("", "nodes"),
    ("", "namespaces"),
    ("", "persistentvolumes"),
    ("rbac.authorization.k8s.io", "clusterroles"),
}


def _team_rights(mocks) -> dict[str, list[dict]]:
    roles = _objects(mocks, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    return {
        name: role.get("rules") or []
        for name, role in roles.items()
        if any(k.startswith("mlplatform.io/aggregate-to-team-") for k in role["metadata"]["labels"])
    }


@pytest.mark.parametrize("stack", ["lab", "cloud"])
def test_team_roles_aggregate_every_enabled_modules_rights_and_no_guarded_write(run_stack, stack):
    mocks, _ = run_stack(stack)
    rights = _team_rights(mocks)
    writes = {
        (group, resource)
        for rules in rights.values()
        for rule in rules
        if set(rule["verbs"]) & {"create", "update", "patch", "delete"}
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert not writes & GUARDED
    named = {
        (g, r) for rules in rights.values() for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert not named & CLUSTER_SCOPED
    # Each enabled ML module adds its own rights.
    assert {
        ("kubeflow.org", "notebooks"),
        ("kubeflow.org", "experiments"),
        ("serving.kserve.io", "inferenceservices"),
    } <= writes
    training = ("kubeflow.org", "pytorchjobs") if stack == "lab" else ("trainer.kubeflow.org", "trainjobs")
    assert training in writes
    team_roles = _objects(mocks, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    edit = team_roles["mlplatform-team-edit"]
    assert edit["aggregationRule"]["clusterRoleSelectors"] == [
        {"matchLabels": {"mlplatform.io/aggregate-to-team-edit": "true"}}
    ]
    assert "rules" not in edit


def test_a_module_that_is_off_adds_no_rights(run_stack):
    from tests.unit.test_program import gpu_and_tenancy_only

    mocks, _ = run_stack("lab", gpu_and_tenancy_only("lab"))
    assert sorted(_team_rights(mocks)) == [
        "mlplatform-team-core-admin",
        "mlplatform-team-core-edit",
        "mlplatform-team-core-view",
    ]


def test_reserved_priority_classes_get_a_zero_quota_in_each_team_namespace(run_stack):
    mocks, _ = run_stack("lab")
    quotas = _objects(mocks, "kubernetes:core/v1:ResourceQuota")
    reserved = quotas["team-vision/team-reserved-priorities"]["spec"]
    assert reserved["hard"] == {"pods": "0"}
    assert reserved["scopeSelector"]["matchExpressions"][0]["values"] == [
        "system-node-critical",
        "system-cluster-critical",
    ]


def test_priority_classes_rank_serving_over_interactive_over_batch(run_stack):
    mocks, _ = run_stack("lab")
    classes = _objects(mocks, "kubernetes:scheduling.k8s.io/v1:PriorityClass")
    # Upstream services may bring their own (Argo's workflow controller does); ours are prefixed.
    values = {name: spec["value"] for name, spec in classes.items() if name.startswith("mlplatform-")}
    assert values["mlplatform-serving"] > values["mlplatform-interactive"] > values["mlplatform-batch"]
    assert set(values) == set(PRIORITY_CLASSES)
    assert not any(spec.get("globalDefault") for spec in classes.values())


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


def test_kueue_groups_pools_that_share_a_resource():
    from mlplatform.gpu.capacity import pool_resources
    from mlplatform.tenancy.kueue import gpu_groups
    from mlplatform.validation import load_stack

    pools = list(load_stack("lab").config.cluster.node_pools)
    extra = pools[2].model_copy(update={"name": "gpu-t4b"})  # a second pool offering gpu.shared
    pools.append(extra)
    capacity = {p.name: pool_resources(p) for p in pools if p.gpu}
    assert gpu_groups(pools, capacity) == [
        (["nvidia.com/mig-1g.5gb", "nvidia.com/mig-2g.10gb", "nvidia.com/mig-3g.20gb"], ["gpu-a100"]),
        (["nvidia.com/gpu.shared"], ["gpu-t4", "gpu-t4b"]),
    ]


def test_team_share_fills_the_pools_offering_it_in_order():
    from mlplatform.gpu.capacity import pool_resources
    from mlplatform.tenancy.kueue import cluster_queue, gpu_groups
    from mlplatform.validation import load_stack

    config = load_stack("lab").config
    pools = list(config.cluster.node_pools)
    pools.append(pools[2].model_copy(update={"name": "gpu-t4b", "count": 1}))
    capacity = {p.name: pool_resources(p) for p in pools if p.gpu}
    team = config.modules.tenancy.teams[0].model_copy(
        update={
            "quota": config.modules.tenancy.teams[0].quota.model_copy(
                update={"gpus": {"nvidia.com/gpu.shared": 40, "nvidia.com/mig-3g.20gb": 4}}
            )
        }
    )
    queue = cluster_queue(team, "team-vision", gpu_groups(pools, capacity), capacity, None, {})
    shared = next(g for g in queue["spec"]["resourceGroups"] if g["coveredResources"] == ["nvidia.com/gpu.shared"])
    # gpu-t4 offers 2 nodes x 16 = 32, gpu-t4b 16: the 40 are 32 + 8.
    assert [f["resources"][0]["nominalQuota"] for f in shared["flavors"]] == [32, 8]
    assert "cohortName" not in queue["spec"]
    # Every flavor lists every covered resource (Kueue's rule), at 0 where the team has no share.
    mig = next(g for g in queue["spec"]["resourceGroups"] if "nvidia.com/mig-3g.20gb" in g["coveredResources"])
    assert [(r["name"], r["nominalQuota"]) for r in mig["flavors"][0]["resources"]] == [
        ("nvidia.com/mig-1g.5gb", 0),
        ("nvidia.com/mig-2g.10gb", 0),
        ("nvidia.com/mig-3g.20gb", 4),
    ]


def test_kueue_objects_validate_against_the_upstream_schemas(mirror, monkeypatch):
    import json

    import yaml

    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared("cloud")
    queues = [m for m in manifests if m["apiVersion"].startswith("kueue.x-k8s.io/")]
    assert sorted((m["kind"], m["metadata"]["name"]) for m in queues) == [
        ("ClusterQueue", "team-recsys"),
        ("ClusterQueue", "team-search"),
        ("LocalQueue", "default"),
        ("LocalQueue", "default"),
        ("ResourceFlavor", "default"),
        ("ResourceFlavor", "gpu-a10g"),
        ("ResourceFlavor", "gpu-h100"),
    ]
    for manifest in queues:
        version = manifest["apiVersion"].split("/")[1]
        schema = json.loads(
            (mirror / "crd-schemas" / "kueue.x-k8s.io" / f"{manifest['kind'].lower()}_{version}.json").read_text()
        )
        validate_against(manifest, schema)
    # The controller comes from the pinned upstream base, with the release image of the pin.
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["namespace"] == "kueue-system"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/kueue/kueue:v0.19.2"
    lock = yaml.safe_load((REPO_ROOT / "versions.lock.yaml").read_text())
    assert lock["upstream"]["kueue"]["version"] == "v0.19.2"
