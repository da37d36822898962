"""`pulumi up` for real against a local control plane, per stack:
up (readiness awaited) -> the labelled cluster inventory equals the state -> a second preview
shows no change -> refresh, then preview, shows no change -> a label changed and a ConfigMap
deleted out of band are planned back and repaired by up -> destroy leaves no object of ours.

Refresh and destroy run without a preview of their own (`--skip-preview`): the previews and
inventories that judge them come after. The engine writes the state once at the end of each
command (`PULUMI_SKIP_CHECKPOINTS`): this test judges the state between commands, and the
checkpoints written after every step, which make an interrupted `up` recoverable and cost most
of a cold `up`'s CPU here, are the subject of the crash benchmark (benchmarks/bench_engine.py)
and of test_file_backend.py. Each stack gets a fresh plane of its own and a scratch
copy of the project (`pulumi stack init` writes an encryption salt into the stack file, which
must not touch the repository). The stack secrets are set as a user sets them, `pulumi config set --secret --path`.
`MLPLATFORM_ENGINE_STACKS` (space-separated) narrows the stacks; all shipped ones by default.
"""

from __future__ import annotations

import os

import pytest

from mlplatform.cli import require_engine
from mlplatform.config.model import SECRET_NAMES
from mlplatform.engine import EngineStack, change_summary, changes
from tests.conftest import STACKS
from tests.e2e.conftest import start_plane
from tests.e2e.test_render_apply import labelled_inventory

ENGINE_STACKS = tuple(os.environ.get("MLPLATFORM_ENGINE_STACKS", " ".join(STACKS)).split())
# Ports of their own, apart from the e2e planes (offsets 0-600).
PORT_OFFSETS = {"lab": 700, "openshift": 800, "cloud": 900}


def stack_secrets() -> dict[str, str]:
    """A value for every secret the config accepts; oauth2-proxy's cookie secrets must be 32 bytes."""
    values = {name: f"engine-test-{name}" for name in SECRET_NAMES}
    values["mlflowOidcCookieSecret"] = "0123456789abcdef0123456789abcdef"
    values["identityCookieSecret"] = "fedcba9876543210fedcba9876543210"
    return values


@pytest.fixture(scope="module", autouse=True)
def engine_ready():
    reason = require_engine()
    if reason:
        pytest.fail(reason, pytrace=False)
    if not os.environ.get("MLPLATFORM_MIRROR"):
        pytest.fail("the stacks' upstream sources come from the mirror: set MLPLATFORM_MIRROR", pytrace=False)


@pytest.mark.parametrize("stack", ENGINE_STACKS)
def test_up_is_idempotent_and_destroy_is_clean(tmp_path, stack):
    plane = start_plane(tmp_path / "plane", PORT_OFFSETS[stack], stack)
    try:
        engine = EngineStack(
            stack, tmp_path / "engine", state_dir=tmp_path / "plane", extra_env={"PULUMI_SKIP_CHECKPOINTS": "true"}
        )
        engine.create(secrets=stack_secrets())

        up = engine.pulumi("up", "--yes", "--skip-preview").check()
        print(f"\n{stack}: up in {up.seconds:.0f}s")
        state = engine.state_inventory()
        kinds = {kind for kind, _, _ in state}
        assert len(state) > 100, f"urn count of {stack} looks wrong: {len(state)}"
        cluster = labelled_inventory(plane, kinds, stack)
        assert cluster - state == set(), f"orphans: labelled objects the state does not hold: {sorted(cluster - state)}"
        assert state - cluster == set(), f"missing: state objects not in the cluster: {sorted(state - cluster)}"

        preview = engine.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(preview)) == 0, change_summary(preview)
        engine.pulumi("refresh", "--yes", "--skip-preview").check()
        after_refresh = engine.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(after_refresh)) == 0, change_summary(after_refresh)

        # Out-of-band changes by other field managers: refresh + preview plans them back, up repairs.
        namespace = engine.pulumi("stack", "output", "platformNamespace").check().stdout.strip()
        plane.kubectl("label", "--overwrite", "namespace", namespace, "mlplatform.io/role=drifted")
        plane.kubectl("delete", "configmap", "-n", namespace, "mlplatform-info")
        engine.pulumi("refresh", "--yes", "--skip-preview").check()
        drifted = change_summary(engine.pulumi("preview", "--json").check())
        assert drifted.get("update") == 1 and drifted.get("create") == 1, drifted
        engine.pulumi("up", "--yes", "--skip-preview").check()
        assert plane.get("namespace", namespace)["metadata"]["labels"]["mlplatform.io/role"] == "system"
        assert plane.get("configmap", "-n", namespace, "mlplatform-info")["data"]["environment"]
        repaired = engine.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(repaired)) == 0, change_summary(repaired)

        engine.pulumi("destroy", "--yes", "--skip-preview").check()
        # What is left is named when the wait runs out.
        left: set = set()

        def nothing_left() -> bool:
            nonlocal left
            left = labelled_inventory(plane, kinds, stack)
            return not left

        try:
            plane.wait_for(f"no object of stack {stack} left", nothing_left, timeout=300)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; left: {sorted(left)[:40]}") from None
        assert engine.state_inventory() == set()
    finally:
        plane.down(check=False)


def test_a_malformed_stack_config_stops_before_any_resource(tmp_path):
    plane = start_plane(tmp_path / "plane", PORT_OFFSETS["lab"] + 50, "lab")
    try:
        engine = EngineStack("lab", tmp_path / "engine", state_dir=tmp_path / "plane")
        engine.create(secrets=stack_secrets())
        engine.pulumi("config", "set", "--path", "mlplatform:cluster.nodePools[0].count", "many").check()
        preview = engine.pulumi("preview")
        assert preview.returncode != 0
        output = preview.stdout + preview.stderr
        assert "stacks/Pulumi.lab.yaml" in output and "cluster.nodePools[0].count" in output, output[-2000:]
        assert engine.state_inventory() == set()
    finally:
        plane.down(check=False)
