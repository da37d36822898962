"""Team namespaces under Kubeflow's Profile controller: the lab stack applied, the stand-in for
upstream's controller (tests/simulated_profiles) reconciles every Profile, and neither side then
changes what the other holds: the controller adopts each team namespace without touching its
labels or annotations, adds only its own objects, and a second server-side apply of the same
render, like a GitOps tool's next sync, changes nothing the controller wrote, nor the controller
anything on its next round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlplatform.paths import BIN_DIR
from tests.e2e.test_render_apply import _api_group, _apply_files, _without_webhook_servers
from tests.simulated_profiles.controller import (
    AUTHZ_POLICY,
    OWNER_ANNOTATION,
    OWNER_BINDING,
    QUOTA,
    ROLE_BINDINGS,
    ProfileController,
)

pytestmark = pytest.mark.on_stack("lab")


_PLURAL = {
    "RoleBinding": "rolebindings",
    "ResourceQuota": "resourcequotas",
    "ServiceAccount": "serviceaccounts",
    "AuthorizationPolicy": "authorizationpolicies.security.istio.io",
}


def _state(plane, namespaces: list[str]) -> dict:
    """What either side could change: each team namespace's labels, annotations and version,
    its RoleBindings, ResourceQuotas, ServiceAccounts and Istio policies, and the Profiles."""
    state: dict = {}
    for namespace in namespaces:
        found = plane.get("namespace", namespace)["metadata"]
        state[("Namespace", namespace)] = (
            found.get("labels"),
            found.get("annotations"),
            found["resourceVersion"],
        )
        for kind in ("rolebindings", "resourcequotas", "serviceaccounts", "authorizationpolicies.security.istio.io"):
            proc = plane.kubectl("get", kind, "-n", namespace, "-o", "json", check=False)
            if proc.returncode != 0:
                continue
            for item in json.loads(proc.stdout)["items"]:
                metadata = item["metadata"]
                body = {k: item.get(k) for k in ("roleRef", "subjects", "spec")}
                state[(kind, namespace, metadata["name"])] = (
                    body,
                    metadata.get("annotations"),
                    metadata["resourceVersion"],
                )
    for item in plane.get("profiles.kubeflow.org")["items"]:
        state[("Profile", item["metadata"]["name"])] = (item["spec"], item["metadata"]["resourceVersion"])
    return state


def _reapply(plane, manifests: list[dict], folder: Path) -> None:
    """The render applied again as apply_stack applied it: two phases, the same field manager."""
    folder.mkdir()
    brought = {m["spec"]["group"] for m in manifests if m["kind"] == "CustomResourceDefinition"}
    first = [m for m in manifests if _api_group(m) not in brought]
    second = [m for m in manifests if _api_group(m) in brought]
    _apply_files(plane, first, folder / "phase1")
    # The webhook configurations are applied as rendered (Fail): no server runs on this plane.
    _without_webhook_servers(plane, first)
    if second:
        _apply_files(plane, second, folder / "phase2")


def test_profile_controller_adopts_team_namespaces_and_neither_side_changes_the_other(stack_planes, tmp_path):
    deployed = stack_planes("lab")
    plane, manifests = deployed.plane, deployed.manifests
    profiles = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Profile"}
    namespaces = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Namespace"}
    assert profiles, "the lab stack renders a Profile per team"
    assert set(profiles) <= set(namespaces), "each Profile's namespace is one the render creates"
    for name, profile in profiles.items():
        assert namespaces[name]["metadata"]["annotations"][OWNER_ANNOTATION] == profile["spec"]["owner"]["name"]
        assert "resourceQuotaSpec" not in profile["spec"]

    controller = ProfileController(str(BIN_DIR / "kubectl"), str(plane.kubeconfig))
    try:
        applied = _state(plane, sorted(profiles))
        changes = controller.reconcile_all()
        assert not [line for line in changes if "refused" in line], changes
        # It adopted each namespace as it was: no label added or removed, no annotation changed.
        assert not [line for line in changes if line.startswith("namespace ")], changes
        reconciled = _state(plane, sorted(profiles))
        for name in profiles:
            assert reconciled[("Namespace", name)] == applied[("Namespace", name)], name

        # The controller's objects: those in the team namespaces the render does not hold (another
        # test may have run the stand-in before on this plane, so "new since the snapshot" would miss them).
        rendered = {
            (_PLURAL[m["kind"]], m["metadata"].get("namespace"), m["metadata"]["name"])
            for m in manifests
            if m["kind"] in _PLURAL
        }
        for name, profile in profiles.items():
            owner = profile["spec"]["owner"]["name"]
            # Only its own objects were added, beside ours and under other names.
            theirs = {key for key in reconciled if len(key) == 3 and key[1] == name and key not in rendered}
            assert ("rolebindings", name, OWNER_BINDING[0]) in theirs
            assert {("serviceaccounts", name, a) for a in ROLE_BINDINGS} <= theirs
            assert {("rolebindings", name, a) for a in ROLE_BINDINGS} <= theirs
            assert ("resourcequotas", name, QUOTA) not in reconciled, "no quota of the controller's own"
            binding = plane.get("rolebinding", OWNER_BINDING[0], "-n", name)
            assert [s["name"] for s in binding["subjects"]] == [owner]
            if ("authorizationpolicies.security.istio.io", name, AUTHZ_POLICY) in reconciled:
                assert ("authorizationpolicies.security.istio.io", name, AUTHZ_POLICY) in theirs
            # What tenancy gives the namespace is still all there.
            assert {key for key in applied if len(key) == 3 and key[1] == name} <= set(reconciled)

        # The next sync applies the same render: nothing the controller or we hold moves.
        _reapply(plane, manifests, tmp_path / "again")
        assert _state(plane, sorted(profiles)) == reconciled
        # And the controller's next round finds nothing to do.
        assert controller.reconcile_all() == []
        assert _state(plane, sorted(profiles)) == reconciled

        # Team namespaces stay restricted and injected.
        for name in profiles:
            labels = plane.get("namespace", name)["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
            assert labels["istio-injection"] == "enabled"
    finally:
        # No stand-in runs after the test: the stack's Profiles stay deletable.
        controller.stop()
