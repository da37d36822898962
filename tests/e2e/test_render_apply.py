"""What each stack renders is accepted by the real apiserver, runs where it should, and
removes cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, STACKS

GKE_FIXTURE = "tests/fixtures/stacks/Pulumi.cloud-gke.yaml"


def render(stack: str, out: Path) -> list[dict]:
    subprocess.run(
        [sys.executable, "-m", "mlplatform", "render", "--stack", stack, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [yaml.safe_load(p.read_text()) for p in sorted(out.glob("0*.yaml"))]


def identities(manifests: list[dict]) -> set[tuple[str, str, str]]:
    return {(m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]) for m in manifests}


def labelled_inventory(plane, kinds: set[str], stack: str) -> set[tuple[str, str, str]]:
    listed = plane.get(",".join(sorted(k.lower() for k in kinds)), "-A", "-l", f"mlplatform.io/stack={stack}")
    return identities(listed["items"])


def apply_stack(plane, stack: str, out: Path) -> list[dict]:
    plane.mlplatform("cluster", "up", "--stack", stack, "--simulated")
    manifests = render(stack, out)
    plane.kubectl("apply", "--server-side", "--field-manager=mlplatform", "-k", str(out))
    return manifests


@pytest.mark.parametrize("stack", [*STACKS, GKE_FIXTURE])
def test_rendered_stack_applies_server_side_and_deletes_without_leftovers(plane, tmp_path, stack):
    manifests = apply_stack(plane, stack, tmp_path)
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

    plane.kubectl("delete", "-k", str(tmp_path), "--wait=true", "--timeout=120s")
    plane.wait_for(f"no object of stack {name} left", lambda: labelled_inventory(plane, kinds, name) == set())


def test_render_is_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    render("cloud", first)
    render("cloud", second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
