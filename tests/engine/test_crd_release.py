"""CRDs as Helm releases, for real: a stack installed with each CRD a resource of its own moves
into releases without losing a CRD or an object of its kinds (`mlplatform adopt-crds`); an
install the state did not record is recovered (`mlplatform recover`); destroy removes them.

The stack is the lab's with only the training operator (6 CRDs, its controller): small enough
for CI, and a user's PyTorchJob stands for the objects a deleted CRD would take with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mlplatform.cli import require_engine
from mlplatform.crd_adoption import without_resources
from mlplatform.engine import EngineStack, change_summary, changes
from mlplatform.modules.crd_bundle import is_bundle
from mlplatform.paths import REPO_ROOT
from tests.e2e.conftest import start_plane
from tests.e2e.test_render_apply import labelled_inventory
from tests.engine.test_pulumi_lifecycle import stack_secrets

PORT_OFFSET = 960
CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
USER_JOB = {
    "apiVersion": "kubeflow.org/v1",
    "kind": "PyTorchJob",
    "metadata": {"name": "a-users-job", "namespace": "default"},
    "spec": {
        "pytorchReplicaSpecs": {
            "Master": {
                "replicas": 1,
                "template": {"spec": {"containers": [{"name": "pytorch", "image": "pytorch/pytorch:2.5.1"}]}},
            }
        }
    },
}


@pytest.fixture(scope="module", autouse=True)
def engine_ready():
    reason = require_engine()
    if reason:
        pytest.fail(reason, pytrace=False)


def training_stack(tmp_path):
    """The lab stack with only the training module, its CRDs one resource each."""
    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    for name, module in document["config"]["mlplatform:modules"].items():
        module["enabled"] = name == "training"
    document["config"].setdefault("mlplatform:platform", {})["crdInstall"] = "objects"
    path = tmp_path / "Pulumi.lab.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def crd_uids(plane) -> dict[str, str]:
    items = json.loads(plane.kubectl("get", "crd", "-l", "mlplatform.io/stack=lab", "-o", "json").stdout)["items"]
    return {item["metadata"]["name"]: item["metadata"]["uid"] for item in items}


def exported(engine) -> dict:
    return json.loads(engine.pulumi("stack", "export", "--stack", engine.stack).check().stdout)


def mlplatform(engine, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", *args, "--stack", engine.stack, "--cwd", str(engine.project)],
        cwd=REPO_ROOT,
        env=engine.env,
        capture_output=True,
        text=True,
    )


def test_crds_move_into_releases_and_survive_a_lost_record(tmp_path):
    plane = start_plane(tmp_path / "plane", PORT_OFFSET, "lab")
    try:
        objects_file = training_stack(tmp_path)
        engine = EngineStack(
            "lab", tmp_path / "engine", state_dir=tmp_path / "plane", extra_env={"PULUMI_SKIP_CHECKPOINTS": "true"}
        )
        engine.create(stack_file=objects_file, secrets=stack_secrets())
        engine.pulumi("up", "--yes", "--skip-preview").check()
        before = crd_uids(plane)
        assert len(before) == 6, before
        held = [r for r in exported(engine)["deployment"]["resources"] if r["type"] == CRD_TYPE]
        assert len(held) == 6
        # Under the engine a ClusterIP Service is applied without the provider's await.
        service = plane.get("service", "-n", "kubeflow", "training-operator")
        assert service["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
        plane.kubectl("apply", "-f", "-", input_text=json.dumps(USER_JOB))

        # The same stack, its CRDs now as a release.
        engine.pulumi("config", "set", "--path", "mlplatform:platform.crdInstall", "release").check()
        # A plain `up` cannot move them: Helm refuses CRDs it did not create, and nothing is deleted.
        refused = engine.pulumi("up", "--yes", "--skip-preview")
        assert refused.returncode != 0
        assert "cannot be imported into the current release" in refused.stdout + refused.stderr, refused.stdout[-3000:]
        assert crd_uids(plane) == before

        adopted = mlplatform(engine, "adopt-crds")
        assert adopted.returncode == 0, adopted.stdout + adopted.stderr
        assert "marked 6 CRD(s) for Helm releases training-crds" in adopted.stdout, adopted.stdout
        engine.pulumi("up", "--yes", "--skip-preview").check()
        assert crd_uids(plane) == before, "no CRD was deleted and created again"
        assert plane.get("pytorchjob", "-n", "default", "a-users-job")["metadata"]["name"] == "a-users-job"
        resources = exported(engine)["deployment"]["resources"]
        assert not [r for r in resources if r["type"] == CRD_TYPE]
        assert [r["inputs"]["name"] for r in resources if is_bundle(r["type"], r.get("inputs"))] == ["training-crds"]
        state = engine.state_inventory()
        kinds = {kind for kind, _, _ in state}
        assert state == labelled_inventory(plane, kinds, "lab")
        preview = engine.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(preview)) == 0, change_summary(preview)
        engine.pulumi("refresh", "--yes", "--skip-preview").check()
        after_refresh = engine.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(after_refresh)) == 0, change_summary(after_refresh)

        # An install the state did not record (a fresh install killed after Helm's part): the
        # release is forgotten by the state, Helm's record of it stays.
        state_file = tmp_path / "forgotten.json"
        current = exported(engine)
        release_urns = {r["urn"] for r in current["deployment"]["resources"] if is_bundle(r["type"], r.get("inputs"))}
        state_file.write_text(json.dumps(without_resources(current, release_urns)))
        engine.pulumi("stack", "import", "--file", str(state_file)).check()
        stuck = engine.pulumi("up", "--yes", "--skip-preview")
        assert stuck.returncode != 0 and "cannot re-use a name that is still in use" in stuck.stdout + stuck.stderr
        recovered = mlplatform(engine, "recover")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert "removed Helm's records of CRD releases the state does not hold: training-crds" in recovered.stdout
        engine.pulumi("up", "--yes", "--skip-preview").check()
        assert crd_uids(plane) == before
        assert plane.get("pytorchjob", "-n", "default", "a-users-job")["metadata"]["name"] == "a-users-job"

        engine.pulumi("destroy", "--yes", "--skip-preview").check()
        plane.wait_for("the stack's CRDs gone", lambda: crd_uids(plane) == {}, timeout=120)
        assert engine.state_inventory() == set()
    finally:
        plane.down(check=False)
