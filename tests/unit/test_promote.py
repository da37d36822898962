"""Promotion moves version pins between stacks and nothing else, and writes nothing unless
the target still validates and passes its gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlplatform.cli import main
from mlplatform.config import ConfigError, load_stack
from mlplatform.promote import plan_promotion, versions_block, with_versions
from tests.conftest import REPO_ROOT

NEXT_KSERVE = "v0.17.0"
NEXT_KUEUE = "v0.20.0"


@pytest.fixture(autouse=True)
def _offline(mirror, monkeypatch):
    """The promotion gate runs the target's program: upstream sources come from the mirror."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))


@pytest.fixture
def stacks(tmp_path: Path) -> dict[str, Path]:
    """Copies of the shipped stacks on a lock that also lists a newer KServe release, with
    lab pinned to it (a version bump made in the lab)."""
    lock = yaml.safe_load((REPO_ROOT / "versions.lock.yaml").read_text())
    lock["upstream"]["kserve"]["releases"] = {NEXT_KSERVE: {"source": "https://example.invalid/kserve"}}
    # A Kueue release the mirror does not hold: the program cannot build it offline.
    lock["upstream"]["kueue"]["releases"] = {NEXT_KUEUE: {"ref": NEXT_KUEUE, "mirror": "kueue-next"}}
    lock_path = tmp_path / "versions.lock.yaml"
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))
    copies = {}
    for stack in ("lab", "openshift", "cloud"):
        text = (REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text()
        pins = {"pins": {"kserve": NEXT_KSERVE}} if stack == "lab" else {}
        copy = tmp_path / f"Pulumi.{stack}.yaml"
        copy.write_text(with_versions(text, {"lock": str(lock_path), **pins}))
        copies[stack] = copy
    return copies


def outside_versions(text: str) -> str:
    start, end = versions_block(text)
    lines = text.splitlines(keepends=True)
    return "".join(lines[:start] + lines[end:])


@pytest.mark.slow
def test_pins_move_and_environment_settings_stay(stacks):
    before = stacks["openshift"].read_text()
    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert plan.problems == []
    assert [(c.component, c.old, c.new) for c in plan.changes] == [("kserve", "v0.16.0", NEXT_KSERVE)]

    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 0
    after = stacks["openshift"].read_text()
    # Node pools, storage, ingress, teams, comments: byte for byte.
    assert outside_versions(after) == outside_versions(before)
    promoted = load_stack(str(stacks["openshift"]))
    assert promoted.upstream("kserve").version == NEXT_KSERVE
    assert promoted.upstream_versions() == load_stack(str(stacks["lab"])).upstream_versions()
    assert promoted.config.cluster == load_stack(str(stacks["openshift"])).config.cluster
    assert promoted.config.environment == "openshift"


@pytest.mark.slow
def test_promoting_twice_changes_nothing_more(stacks):
    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 0
    once = stacks["openshift"].read_bytes()
    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert plan.changes == []
    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 0
    assert stacks["openshift"].read_bytes() == once


@pytest.mark.slow
def test_dry_run_writes_nothing(stacks, capsys):
    before = stacks["cloud"].read_bytes()
    assert main(["promote", str(stacks["lab"]), str(stacks["cloud"]), "--dry-run"]) == 0
    assert stacks["cloud"].read_bytes() == before
    out = capsys.readouterr().out
    assert f"kserve     v0.16.0  {NEXT_KSERVE}" in out
    assert "dry run: nothing written" in out


def test_failing_gate_leaves_the_target_untouched(stacks, monkeypatch, capsys):
    import mlplatform.promote

    before = stacks["openshift"].read_bytes()
    monkeypatch.setattr(mlplatform.promote, "render_gate", lambda stack, raw: ["policy X: violated"])
    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 1
    assert stacks["openshift"].read_bytes() == before
    assert "policy X: violated" in capsys.readouterr().err


def test_render_gate_blocks_a_version_the_program_cannot_install(stacks, monkeypatch, capsys):
    """The cloud stack runs Kueue; a Kueue release missing from the mirror cannot be built, so
    the cloud program fails with it and the cloud stack file stays as it is."""
    text = stacks["lab"].read_text()
    versions = yaml.safe_load(text)["config"]["mlplatform:versions"]
    stacks["lab"].write_text(with_versions(text, {**versions, "pins": {"kserve": NEXT_KSERVE, "kueue": NEXT_KUEUE}}))
    before = stacks["cloud"].read_bytes()
    assert main(["promote", str(stacks["lab"]), str(stacks["cloud"])]) == 1
    assert stacks["cloud"].read_bytes() == before
    err = capsys.readouterr().err
    assert f"kueue {NEXT_KUEUE}: config/default is not in the mirror" in err, err


def test_invalid_target_after_promotion_is_refused(stacks):
    """A pin the target's lock does not know makes the target invalid: nothing is written."""
    lock = yaml.safe_load((REPO_ROOT / "versions.lock.yaml").read_text())
    plain_lock = stacks["cloud"].parent / "plain.lock.yaml"
    plain_lock.write_text(yaml.safe_dump(lock))
    text = stacks["cloud"].read_text()
    stacks["cloud"].write_text(with_versions(text, {"lock": str(plain_lock)}))
    before = stacks["cloud"].read_bytes()
    plan = plan_promotion(str(stacks["lab"]), str(stacks["cloud"]))
    assert any("mlplatform:versions.pins.kserve" in p and NEXT_KSERVE in p for p in plan.problems), plan.problems
    assert main(["promote", str(stacks["lab"]), str(stacks["cloud"])]) == 1
    assert stacks["cloud"].read_bytes() == before


@pytest.mark.slow
def test_backwards_needs_force(stacks):
    plan = plan_promotion(str(stacks["cloud"]), str(stacks["lab"]))
    assert any("promoting backwards needs --force" in p for p in plan.problems)
    before = stacks["lab"].read_bytes()
    assert main(["promote", str(stacks["cloud"]), str(stacks["lab"])]) == 1
    assert stacks["lab"].read_bytes() == before
    assert main(["promote", str(stacks["cloud"]), str(stacks["lab"]), "--force"]) == 0
    assert load_stack(str(stacks["lab"])).upstream("kserve").version == "v0.16.0"


def test_a_failing_or_stale_record_blocks_promotion(stacks, tmp_path):
    record = tmp_path / "lab-record.json"
    lab_text = stacks["lab"].read_text()
    lab_versions = yaml.safe_load(lab_text)["config"]["mlplatform:versions"]
    stacks["lab"].write_text(with_versions(lab_text, {**lab_versions, "record": str(record)}))

    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert any("'missing'" in p for p in plan.problems), plan.problems

    assert main(["record", str(stacks["lab"]), "--result", "failed"]) == 0
    assert json.loads(record.read_text())["result"] == "failed"
    assert any("is 'failed'" in p for p in plan_promotion(str(stacks["lab"]), str(stacks["openshift"])).problems)

    assert main(["record", str(stacks["lab"]), "--result", "passed"]) == 0
    assert plan_promotion(str(stacks["lab"]), str(stacks["openshift"])).problems == []

    # The lab moves on after its run was recorded: the record no longer speaks for it.
    data = json.loads(record.read_text())
    data["versions"]["kserve"] = "v0.16.0"
    record.write_text(json.dumps(data))
    problems = plan_promotion(str(stacks["lab"]), str(stacks["openshift"])).problems
    assert any("ran other versions than its current pins" in p for p in problems)


def test_unknown_pins_are_config_errors(stacks):
    text = stacks["openshift"].read_text()
    versions = yaml.safe_load(text)["config"]["mlplatform:versions"]
    stacks["openshift"].write_text(
        with_versions(text, {**versions, "pins": {"kserve": "v9.9.9", "not-a-component": "1.0"}})
    )
    with pytest.raises(ConfigError) as caught:
        load_stack(str(stacks["openshift"]))
    messages = [str(p) for p in caught.value.problems]
    assert any(
        "mlplatform:versions.pins.kserve: 'v9.9.9' is not a version of kserve in the lock (allowed: v0.16.0, v0.17.0)"
        in m
        for m in messages
    ), messages
    assert any(
        "mlplatform:versions.pins.not-a-component: 'not-a-component' is not an upstream component" in m
        for m in messages
    )


def test_versions_block_is_added_where_none_is(tmp_path):
    text = "# comment\nconfig:\n  mlplatform:environment: lab\n  # trailing comment\n"
    added = with_versions(text, {"pins": {"kueue": "v0.19.2"}})
    assert added.startswith("# comment\nconfig:\n  mlplatform:environment: lab\n")
    assert yaml.safe_load(added)["config"]["mlplatform:versions"] == {"pins": {"kueue": "v0.19.2"}}
    assert with_versions(added, {"pins": {"kueue": "v0.19.2"}}) == added
