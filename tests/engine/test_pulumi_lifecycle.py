"""`pulumi up` for real against the local control plane, per stack:
up -> preview shows no change -> refresh + preview shows no change -> destroy leaves nothing.

The project is copied into a scratch folder so that `pulumi stack init` (which writes an
encryption salt into the stack file) never touches the repository's stacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlplatform.cli import engine_env, require_engine
from tests.conftest import REPO_ROOT, STACKS
from tests.e2e.conftest import start_plane


@pytest.fixture(scope="module")
def engine_plane(tmp_path_factory):
    reason = require_engine()
    if reason:
        pytest.fail(reason, pytrace=False)
    if not os.environ.get("MLPLATFORM_MIRROR"):
        pytest.fail("the openshift stack's APIs come from the upstream mirror: set MLPLATFORM_MIRROR", pytrace=False)
    plane = start_plane(tmp_path_factory.mktemp("engine-plane"), 200)
    yield plane
    plane.mlplatform("cluster", "down", "--purge")


def _project_copy(tmp: Path) -> Path:
    project = tmp / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "__main__.py", project)
    shutil.copytree(REPO_ROOT / "stacks", project / "stacks")
    definition = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    definition["runtime"]["options"]["virtualenv"] = str(REPO_ROOT / ".venv")
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(definition))
    return project


def _pulumi(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"pulumi {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("stack", STACKS)
def test_up_is_idempotent_and_destroy_is_clean(engine_plane, tmp_path, stack):
    if engine_plane.env.get("MLPLATFORM_MIRROR") and stack == "openshift":
        engine_plane.mlplatform("cluster", "up", "--stack", "openshift", "--simulated")
    project = _project_copy(tmp_path)
    env = engine_env(stack)
    env.update(
        PULUMI_BACKEND_URL=f"file://{tmp_path / 'state'}",
        PULUMI_CONFIG_PASSPHRASE="engine-test",
        MLPLATFORM_STATE_DIR=engine_plane.env["MLPLATFORM_STATE_DIR"],
        PYTHONPATH=str(REPO_ROOT),
    )
    (tmp_path / "state").mkdir()
    _pulumi(project, env, "stack", "init", stack)
    _pulumi(project, env, "up", "--yes", "--skip-preview", "--stack", stack)
    labelled = engine_plane.kubectl(
        "get", "namespaces,configmaps", "-A", "-l", f"mlplatform.io/stack={stack}", "-o", "name"
    )
    assert sorted(labelled.stdout.split()) == ["configmap/mlplatform-info", "namespace/mlplatform-system"]
    _pulumi(project, env, "preview", "--expect-no-changes", "--stack", stack)
    _pulumi(project, env, "refresh", "--yes", "--stack", stack)
    _pulumi(project, env, "preview", "--expect-no-changes", "--stack", stack)
    _pulumi(project, env, "destroy", "--yes", "--stack", stack)
    engine_plane.wait_for(
        f"no object of stack {stack} left",
        lambda: (
            engine_plane.kubectl(
                "get", "namespaces,configmaps", "-A", "-l", f"mlplatform.io/stack={stack}", "-o", "name"
            ).stdout.strip()
            == ""
        ),
    )
