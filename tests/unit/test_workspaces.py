"""Workspaces: every team a Profile on the namespace tenancy keeps, written so that upstream's
Profile controller adds nothing to it; the UIs only on the mesh's gateway, admitted only from
the ingress gateway, reading the signed-in user from the header the gateway sets.

Expected facts come from the upstream mirror (the Profile controller's default namespace labels,
the UIs' routes and policies) and from the stand-in for the controller (tests/simulated_profiles),
which holds upstream's behaviour and none of mlplatform's."""

from __future__ import annotations

import pytest
import yaml

from mlplatform.validation import load_stack
from tests.conftest import STACKS, UPSTREAM_MIRROR, render_shared
from tests.simulated_profiles.controller import (
    AUTHZ_POLICY,
    NEW_NAMESPACE_LABELS,
    OWNER_ANNOTATION,
    OWNER_BINDING,
    QUOTA,
    ROLE_BINDINGS,
    set_namespace_labels,
)

MANIFESTS = UPSTREAM_MIRROR / "kubeflow-manifests"
# Upstream's install of the controller (the lock's `profiles` entry) and its default labels.
NAMESPACE_LABELS = MANIFESTS / "applications" / "profiles" / "pss" / "namespace-labels.yaml"
# Each UI's upstream VirtualService and AuthorizationPolicy.
UI_ISTIO = {
    "centraldashboard": MANIFESTS / "applications/centraldashboard/upstream/overlays/istio",
    "jupyter-web-app": MANIFESTS / "applications/jupyter/jupyter-web-app/upstream/overlays/istio",
    "volumes-web-app": MANIFESTS / "applications/volumes-web-app/upstream/overlays/istio",
}
# The Pod Security label our team namespaces keep at the profile's level (restricted) where
# upstream's default is baseline: the controller never replaces a label whose key exists.
OUR_LEVEL = "pod-security.kubernetes.io/enforce"


@pytest.fixture(autouse=True)
def _from_the_mirror(monkeypatch):
    """The renders build the upstream overlays offline, from the mirror."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(UPSTREAM_MIRROR))


def _upstream_defaults() -> dict[str, str]:
    parsed = yaml.safe_load(NAMESPACE_LABELS.read_text())
    return {str(k): "" if v is None else str(v) for k, v in parsed.items()}


def _of_module(manifests: list[dict], module: str) -> list[dict]:
    return [m for m in manifests if (m["metadata"].get("labels") or {}).get("mlplatform.io/module") == module]


def _teams(stack: str):
    resolved = load_stack(stack)
    tenancy = resolved.config.modules.tenancy
    return resolved, [(team, tenancy.team_namespace(team.name)) for team in tenancy.teams]


def _upstream_documents(folder) -> list[dict]:
    documents = []
    for path in sorted(folder.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d]
    return documents


@pytest.mark.parametrize("stack", STACKS)
def test_every_environment_installs_the_workspaces(stack):
    resolved, _ = _teams(stack)
    assert resolved.config.modules.workspaces.enabled
    deployments = {
        m["metadata"]["name"] for m in _of_module(render_shared(stack), "workspaces") if m["kind"] == "Deployment"
    }
    # The controller with KFAM, the dashboard, both web apps and the PodDefaults webhook.
    assert len(deployments) == 5, deployments
    crds = {m["metadata"]["name"] for m in render_shared(stack) if m["kind"] == "CustomResourceDefinition"}
    assert {"profiles.kubeflow.org", "poddefaults.kubeflow.org"} <= crds


@pytest.mark.parametrize("stack", STACKS)
def test_each_team_is_a_profile_of_its_owner_without_a_quota_of_its_own(stack):
    _, teams = _teams(stack)
    profiles = {m["metadata"]["name"]: m for m in render_shared(stack) if m["kind"] == "Profile"}
    assert set(profiles) == {namespace for _, namespace in teams}
    for team, namespace in teams:
        spec = profiles[namespace]["spec"]
        assert spec["owner"]["kind"] == "User" and spec["owner"]["name"] == team.owner
        # The team's quota is tenancy's (GPU names from the GPU layer): the controller writes none.
        assert "resourceQuotaSpec" not in spec


@pytest.mark.parametrize("stack", STACKS)
def test_the_controller_would_add_nothing_to_a_team_namespace(stack):
    _, teams = _teams(stack)
    defaults = _upstream_defaults()
    assert defaults, NAMESPACE_LABELS
    namespaces = {m["metadata"]["name"]: m for m in render_shared(stack) if m["kind"] == "Namespace"}
    for team, namespace in teams:
        metadata = namespaces[namespace]["metadata"]
        labels = metadata["labels"]
        # Adopted only under the Profile's owner.
        assert metadata["annotations"][OWNER_ANNOTATION] == team.owner
        # Every upstream default is there, so the controller adds none and removes none.
        assert set_namespace_labels(labels, defaults) == labels
        for key, value in defaults.items():
            if value and key != OUR_LEVEL:
                assert labels[key] == value, (namespace, key)
        # Restricted stays: the controller's baseline default never replaces it.
        assert labels[OUR_LEVEL] == "restricted"
        assert defaults[OUR_LEVEL] != "restricted"
        # Injected as a namespace the controller made would be.
        assert NEW_NAMESPACE_LABELS.items() <= labels.items()


@pytest.mark.parametrize("stack", STACKS)
def test_no_team_namespace_object_takes_a_name_the_controller_writes(stack):
    _, teams = _teams(stack)
    controller = (
        {("ServiceAccount", name) for name in ROLE_BINDINGS}
        | {("RoleBinding", name) for name in [*ROLE_BINDINGS, OWNER_BINDING[0]]}
        | {
            ("ResourceQuota", QUOTA),
            ("AuthorizationPolicy", AUTHZ_POLICY),
        }
    )
    manifests = render_shared(stack)
    for _, namespace in teams:
        ours = {(m["kind"], m["metadata"]["name"]) for m in manifests if m["metadata"].get("namespace") == namespace}
        assert ours, namespace
        assert not ours & controller, (namespace, ours & controller)


def _ingress_gateway_principal(manifests: list[dict], gateway: dict) -> str:
    """The identity of the pods the mesh's Gateway runs on (its selector), as Istio names it."""
    selector = gateway["spec"]["selector"]
    pods = [
        m
        for m in manifests
        if m["kind"] == "Deployment" and selector.items() <= m["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    account = pods[0]["spec"]["template"]["spec"]["serviceAccountName"]
    return f"cluster.local/ns/{pods[0]['metadata']['namespace']}/sa/{account}"


@pytest.mark.parametrize("stack", STACKS)
def test_uis_are_routed_only_through_the_mesh_gateway_and_admit_only_it(stack):
    manifests = render_shared(stack)
    ours = _of_module(manifests, "workspaces")
    services = [m for m in ours if m["kind"] == "VirtualService"]
    policies = {m["spec"]["selector"]["matchLabels"].get("app"): m for m in ours if m["kind"] == "AuthorizationPolicy"}
    gateways = {f"{m['metadata']['namespace']}/{m['metadata']['name']}": m for m in manifests if m["kind"] == "Gateway"}
    routed = set()
    for app, folder in UI_ISTIO.items():
        upstream = _upstream_documents(folder)
        upstream_route = next(d for d in upstream if d["kind"] == "VirtualService")
        prefix = upstream_route["spec"]["http"][0]["match"][0]["uri"]["prefix"]
        route = next(s for s in services if s["spec"]["http"][0]["match"][0]["uri"]["prefix"] == prefix)
        assert len(route["spec"]["gateways"]) == 1
        gateway = gateways[route["spec"]["gateways"][0]]
        routed.add(prefix)
        # Only the pods behind the gateway, and only they, reach the UI.
        upstream_policy = next(d for d in upstream if d["kind"] == "AuthorizationPolicy")
        policy = policies[upstream_policy["spec"]["selector"]["matchLabels"]["app"]]
        assert policy["spec"]["action"] == "ALLOW"
        sources = [s["source"] for rule in policy["spec"]["rules"] for s in rule["from"]]
        assert sources == [{"principals": [_ingress_gateway_principal(manifests, gateway)]}], app
    # No other route: KFAM is reached by the dashboard only.
    assert len(services) == len(routed) == len(UI_ISTIO)
    kfam = next(m for m in ours if m["kind"] == "AuthorizationPolicy" and m["metadata"]["name"] == "profiles-kfam")
    dashboard = next(m for m in ours if m["kind"] == "Deployment" and m["metadata"]["name"] == "centraldashboard")
    account = dashboard["spec"]["template"]["spec"]["serviceAccountName"]
    namespace = dashboard["metadata"]["namespace"]
    assert kfam["spec"]["rules"] == [
        {"from": [{"source": {"principals": [f"cluster.local/ns/{namespace}/sa/{account}"]}}]}
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_web_apps_read_the_user_from_the_header_the_gateway_sets(stack):
    manifests = render_shared(stack)
    # The header the gateway writes from a signed-in user's token: the email claim as is, so
    # no prefix before it.
    headers = {
        each["header"]
        for m in manifests
        if m["kind"] == "RequestAuthentication"
        for rule in m["spec"].get("jwtRules") or []
        for each in rule.get("outputClaimToHeaders") or []
        if each["claim"] == "email"
    }
    assert len(headers) == 1, headers
    readers = 0
    for manifest in _of_module(manifests, "workspaces"):
        if manifest["kind"] != "Deployment":
            continue
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            if "USERID_HEADER" in env:
                readers += 1
                assert env["USERID_HEADER"] in headers, (manifest["metadata"]["name"], container["name"])
                assert env["USERID_PREFIX"] == ""
    # The dashboard, both web apps, KFAM and the controller.
    assert readers == 5


def test_team_roles_write_poddefaults_in_their_namespace():
    manifests = render_shared("lab")
    roles = {m["metadata"]["name"]: m for m in _of_module(manifests, "workspaces") if m["kind"] == "ClusterRole"}
    edit = roles["mlplatform-team-workspaces-edit"]
    assert edit["metadata"]["labels"]["mlplatform.io/aggregate-to-team-edit"] == "true"
    assert edit["rules"][0]["apiGroups"] == ["kubeflow.org"] and edit["rules"][0]["resources"] == ["poddefaults"]
    assert "create" in edit["rules"][0]["verbs"]


def test_tenancy_keeps_the_namespace_without_reading_workspaces():
    """One source of truth: tenancy writes the team namespace from config and upstream's labels,
    never from the workspaces module (which comes after it)."""
    import ast

    from tests.conftest import REPO_ROOT

    for path in [REPO_ROOT / "mlplatform/modules/tenancy.py", *(REPO_ROOT / "mlplatform/tenancy").glob("*.py")]:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        assert "mlplatform.modules.workspaces" not in imported, path
