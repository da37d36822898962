"""What each stack renders is accepted by the real apiserver, runs where it should, and
removes cleanly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlplatform.render import SECRET_REFERENCES, _apply_order
from tests.conftest import REPO_ROOT, STACKS
from tests.e2e.secret_references import secrets_from_references

GKE_FIXTURE = "tests/fixtures/stacks/Pulumi.cloud-gke.yaml"


# libyaml's parser: a stack's export is 300-450 files.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# The first render of each stack in this session: a later one is a copy of its files.
_RENDERED: dict[str, Path] = {}


def render(stack: str, out: Path) -> list[dict]:
    """`mlplatform render` of the stack into `out`, as a user runs it; the objects it wrote."""
    subprocess.run(
        [sys.executable, "-m", "mlplatform", "render", "--stack", stack, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    _RENDERED.setdefault(stack, out)
    return read_export(out)


def read_export(out: Path) -> list[dict]:
    return [
        yaml.load(p.read_text(), Loader=_Loader) for p in sorted(out.glob("*.yaml")) if p.name != "kustomization.yaml"
    ]


def render_once(stack: str, out: Path) -> list[dict]:
    """The stack's export in `out`: rendered by the first call of the session, copied after
    (every render of a stack gives the same bytes: test_render_is_deterministic)."""
    first = _RENDERED.get(stack)
    if first is None or not first.is_dir():
        return render(stack, out)
    out.mkdir(parents=True, exist_ok=True)
    for path in first.glob("*.yaml"):
        shutil.copyfile(path, out / path.name)
    if (first / SECRET_REFERENCES).is_dir():
        shutil.copytree(first / SECRET_REFERENCES, out / SECRET_REFERENCES, dirs_exist_ok=True)
    return read_export(out)


def identities(manifests: list[dict]) -> set[tuple[str, str, str]]:
    return {(m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]) for m in manifests}


def _resource_names(plane) -> dict[str, str]:
    """Kind -> the resource name the API serves it under: a CRD may name its singular otherwise
    than its kind in lower case (Multus' network-attachment-definition), which kubectl then
    does not resolve."""
    proc = plane.kubectl("api-resources", "--no-headers", "-o", "wide", check=False)
    names: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        scope = next((i for i, w in enumerate(words) if w in ("true", "false")), None)
        if scope is not None and scope + 1 < len(words):
            group = words[scope - 1].rpartition("/")[0]
            names.setdefault(words[scope + 1], f"{words[0]}.{group}" if group else words[0])
    return names


def labelled_inventory(plane, kinds: set[str], stack: str) -> set[tuple[str, str, str]]:
    """Objects of these kinds that carry the stack's label; kinds whose CRD is gone have none."""
    found: set[tuple[str, str, str]] = set()
    resources: dict[str, str] | None = None
    for kind in sorted(kinds):
        selector = ("-A", "-l", f"mlplatform.io/stack={stack}", "-o", "json")
        proc = plane.kubectl("get", kind.lower(), *selector, check=False)
        if proc.returncode != 0 and "doesn't have a resource type" in proc.stderr:
            resources = _resource_names(plane) if resources is None else resources
            if kind in resources:
                proc = plane.kubectl("get", resources[kind], *selector, check=False)
        if proc.returncode != 0:
            assert (
                "could not find the requested resource" in proc.stderr or "doesn't have a resource type" in proc.stderr
            ), proc.stderr
            continue
        found |= identities(json.loads(proc.stdout)["items"])
    return found


def _api_group(manifest: dict) -> str:
    api_version = manifest["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def _apply_files(plane, manifests: list[dict], folder: Path) -> None:
    folder.mkdir()
    for index, manifest in enumerate(manifests):
        (folder / f"{index:04d}.yaml").write_text(yaml.safe_dump(manifest))
    # With force, as Argo CD and Flux apply server-side: the declared state wins over a field
    # another manager holds, e.g. CRDs the cluster already serves from its own install.
    plane.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=mlplatform", "-f", str(folder))


def _without_webhook_servers(plane, manifests: list[dict]) -> None:
    """Simulated plane only: no webhook server ever runs here. Admission webhooks must not fail
    requests they cannot reach, and CRDs cannot convert between versions through a webhook
    (the apiserver's cleanup of a deleted CRD would wait on it). On a real cluster the
    server's Deployment becomes ready and serves both."""
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            current = plane.get(kind.lower(), name)
            for webhook in current["webhooks"]:
                webhook["failurePolicy"] = "Ignore"
            plane.kubectl("replace", "-f", "-", input_text=json.dumps(current))
        elif kind == "CustomResourceDefinition" and manifest["spec"].get("conversion", {}).get("strategy") == "Webhook":
            patch = {"spec": {"conversion": {"strategy": "None", "webhook": None}}}
            plane.kubectl("patch", "crd", name, "--type=merge", "-p", json.dumps(patch))


def apply_stack(plane, stack: str, out: Path) -> list[dict]:
    """Render the stack and apply it the way a GitOps tool would, in two ordered phases:
    everything but the custom resources of CRDs the stack itself brings, then those.

    Simulated-plane realities, applied here and nowhere else: aggregated APIServices are left
    out (their servers never run, and an unavailable APIService stalls namespace deletion),
    webhooks are set to failurePolicy Ignore and CRD conversion webhooks to no conversion, and
    the Secrets the export references (OUT/secrets) are made here with test values, as a
    secret tool would make them. Returns the manifests applied."""
    plane.mlplatform("cluster", "up", "--stack", stack, "--simulated")
    manifests = [m for m in render_once(stack, out) if m["kind"] != "APIService"]
    # In apply order (the export's own): each Secret after its namespace, before its readers.
    manifests = sorted(manifests + secrets_from_references(out), key=_apply_order)
    brought = {m["spec"]["group"] for m in manifests if m["kind"] == "CustomResourceDefinition"}
    first = [m for m in manifests if _api_group(m) not in brought]
    second = [m for m in manifests if _api_group(m) in brought]
    _apply_files(plane, first, out / "phase1")
    if second:
        _without_webhook_servers(plane, first)
        plane.kubectl(
            "wait",
            "--for=condition=Established",
            "crd",
            *sorted(m["metadata"]["name"] for m in first if m["kind"] == "CustomResourceDefinition"),
            "--timeout=60s",
        )
        _apply_files(plane, second, out / "phase2")
    return manifests


def delete_stack(plane, out: Path) -> None:
    """Delete in reverse order of the apply: the custom resources, then every other object
    (namespaces included, with what runs in them), then the CRDs. A CRD deleted while
    namespaces still terminate waits on the apiserver's cleanup of instances and on the
    namespace controller's rediscovery of every API; last, it has nothing left to clean."""
    if (out / "phase2").is_dir():
        plane.kubectl("delete", "-f", str(out / "phase2"), "--ignore-not-found", "--wait=true", "--timeout=180s")
    files = sorted(p for p in out.glob("*.yaml") if p.name != "kustomization.yaml")
    crds = [p for p in files if "_customresourcedefinition_" in p.name]
    others = [p for p in files if p not in crds]
    for group in (others, crds):
        if group:
            arguments = [f"--filename={p}" for p in group]
            plane.kubectl("delete", *arguments, "--ignore-not-found", "--wait=true", "--timeout=240s")


@pytest.mark.deletes_stack
@pytest.mark.parametrize("stack", [*STACKS, GKE_FIXTURE])
def test_rendered_stack_applies_server_side_and_deletes_without_leftovers(request, tmp_path, stack):
    if stack in STACKS:
        # The shipped stacks are applied once per session on planes of their own.
        stack_planes = request.getfixturevalue("stack_planes")
        deployed = stack_planes(stack)
        plane, manifests = deployed.plane, deployed.manifests

        def remove() -> None:
            stack_planes.delete(stack)
    else:
        plane = request.getfixturevalue("plane")
        manifests = apply_stack(plane, stack, tmp_path)

        def remove() -> None:
            delete_stack(plane, tmp_path)

    name = Path(stack).stem.removeprefix("Pulumi.")
    kinds = {m["kind"] for m in manifests}
    assert labelled_inventory(plane, kinds, name) == identities(manifests)
    namespace = plane.get("namespace", "mlplatform-system")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    # The real PodSecurity admission guards the platform namespace.
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape", "namespace": "mlplatform-system"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]},
    }
    proc = plane.kubectl("apply", "-f", "-", input_text=json.dumps(privileged), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr

    remove()
    plane.wait_for(f"no object of stack {name} left", lambda: labelled_inventory(plane, kinds, name) == set())
    if stack in STACKS:
        stack_planes.release(stack)


def test_render_is_deterministic(tmp_path):
    """Two processes render the cloud stack byte for byte alike (the session's other renders
    are copies of the first, which this makes safe)."""
    first, second = tmp_path / "a", tmp_path / "b"
    render_once("cloud", first)
    render("cloud", second)
    names = sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(second)) for p in second.rglob("*") if p.is_file())
    assert any(name.startswith(f"{SECRET_REFERENCES}/") for name in names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
