"""What each stack renders is accepted by the real apiserver, and removes cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, STACKS


def _render(stack: str, out) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", "render", "--stack", stack, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )


def _ours(plane, stack: str) -> list[str]:
    selector = f"mlplatform.io/stack={stack}"
    found = plane.kubectl("get", "namespaces,configmaps", "-A", "-l", selector, "-o", "name").stdout.split()
    return sorted(found)


@pytest.mark.parametrize("stack", STACKS)
def test_rendered_stack_applies_server_side_and_deletes_without_leftovers(plane, tmp_path, stack):
    _render(stack, tmp_path)
    plane.kubectl("apply", "--server-side", "--field-manager=mlplatform", "-k", str(tmp_path))
    assert _ours(plane, stack) == ["configmap/mlplatform-info", "namespace/mlplatform-system"]
    namespace = plane.get("namespace", "mlplatform-system")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    info = plane.get("configmap", "mlplatform-info", "-n", "mlplatform-system")
    assert info["data"]["environment"] == stack

    # The real PodSecurity admission guards the platform namespace.
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape", "namespace": "mlplatform-system"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]},
    }
    proc = plane.kubectl("apply", "-f", "-", input_text=json.dumps(privileged), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr

    plane.kubectl("delete", "-k", str(tmp_path), "--wait=true", "--timeout=60s")
    plane.wait_for(f"no object of stack {stack} left", lambda: _ours(plane, stack) == [])


def test_render_is_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    _render("cloud", first)
    _render("cloud", second)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
