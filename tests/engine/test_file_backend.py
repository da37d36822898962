"""The local state backend against the real CLI: a checkpoint sidecar emptied by a killed write
breaks every command on the stack; our backend URL writes none, and `mlplatform recover` mends
a backend written without it."""

from __future__ import annotations

import pytest

from mlplatform.cli import require_engine
from mlplatform.engine import EngineStack


@pytest.fixture(autouse=True)
def engine_ready():
    reason = require_engine()
    if reason:
        pytest.fail(reason, pytrace=False)


def test_our_backend_url_writes_no_sidecar(tmp_path):
    engine = EngineStack("lab", tmp_path / "engine", state_dir=tmp_path)
    engine.create()
    engine.pulumi("stack", "export").check()
    assert list(engine.backend.rglob("*.json")), "the stack has a checkpoint"
    assert list(engine.backend.rglob("*.attrs")) == []


def test_recover_mends_a_sidecar_emptied_by_a_killed_write(tmp_path):
    backend = tmp_path / "engine" / "state"
    engine = EngineStack(
        "lab", tmp_path / "engine", state_dir=tmp_path, extra_env={"PULUMI_BACKEND_URL": f"file://{backend}"}
    )
    engine.create()
    (sidecar,) = backend.glob(".pulumi/stacks/*/lab.json.attrs")
    sidecar.write_text("")  # what a kill -9 between its truncation and its write leaves

    broken = engine.pulumi("stack", "export")
    assert broken.returncode != 0 and "failed to load checkpoint: EOF" in broken.stderr, broken.stderr

    recovered = engine.recover()
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "lab.json.attrs" in recovered.stdout
    # No cluster here: the state is mended all the same, and the one step that needs the cluster says so.
    assert "warning: Helm's records of CRD releases not checked" in recovered.stdout, recovered.stdout
    engine.pulumi("stack", "export").check()
