"""When `up` skips its per-step checkpoints: only over a state that holds no resources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mlplatform import checkpoints

STACK = {"urn": "urn:pulumi:lab::mlplatform::pulumi:pulumi:Stack::mlplatform-lab", "type": "pulumi:pulumi:Stack"}
PROVIDER = {
    "urn": "urn:pulumi:lab::mlplatform::pulumi:providers:kubernetes::k8s",
    "type": "pulumi:providers:kubernetes",
}
NAMESPACE = {
    "urn": "urn:pulumi:lab::mlplatform::kubernetes:core/v1:Namespace::ml",
    "type": "kubernetes:core/v1:Namespace",
}


def exported(resources=None, pending=None) -> dict:
    deployment = {"manifest": {"time": "2026-12-07T00:00:00Z", "version": "v3.259.0"}}
    if resources is not None:
        deployment["resources"] = resources
    if pending is not None:
        deployment["pending_operations"] = pending
    return {"version": 3, "deployment": deployment}


def test_a_new_stack_or_one_with_only_bookkeeping_holds_no_resources():
    assert not checkpoints.holds_resources(exported())
    assert not checkpoints.holds_resources(exported([]))
    assert not checkpoints.holds_resources(exported([STACK, PROVIDER]))
    assert not checkpoints.holds_resources({})


def test_one_cluster_object_or_a_pending_operation_makes_it_not_fresh():
    assert checkpoints.holds_resources(exported([STACK, PROVIDER, NAMESPACE]))
    assert checkpoints.holds_resources(exported([STACK], pending=[{"resource": NAMESPACE, "type": "creating"}]))


def test_fresh_skips_checkpoints_unless_the_user_chose(monkeypatch):
    user = {"GOGC": "400", "GOMEMLIMIT": "2GiB"}  # as if set by the user: left alone here
    assert checkpoints.up_env({"A": "1"}, fresh=True, user_env=user) == {"A": "1", "PULUMI_SKIP_CHECKPOINTS": "true"}
    assert checkpoints.up_env({"A": "1"}, fresh=False, user_env=user) == {"A": "1"}
    assert checkpoints.up_env({"PULUMI_SKIP_CHECKPOINTS": "false"}, fresh=True, user_env=user) == {
        "PULUMI_SKIP_CHECKPOINTS": "false"
    }


def test_without_checkpoints_go_collects_at_its_defaults_unless_the_user_set_it():
    engine = {"GOGC": "400", "GOMEMLIMIT": "2GiB"}  # the engine's defaults (mlplatform.cli)
    fresh = checkpoints.up_env(engine, fresh=True, user_env={})
    assert (fresh["GOGC"], fresh["GOMEMLIMIT"]) == ("100", "off")
    # Checkpoints kept: the engine's defaults stay, they pay off there.
    assert checkpoints.up_env(engine, fresh=False, user_env={}) == engine
    assert checkpoints.up_env({**engine, "PULUMI_SKIP_CHECKPOINTS": "false"}, fresh=True, user_env={})["GOGC"] == "400"
    # The user's own setting wins.
    mine = checkpoints.up_env({"GOGC": "50", "GOMEMLIMIT": "2GiB"}, fresh=True, user_env={"GOGC": "50"})
    assert (mine["GOGC"], mine["GOMEMLIMIT"]) == ("50", "off")


def _export_answers(monkeypatch, returncode: int, stdout: str) -> list:
    seen = []

    def run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, stdout, "")

    monkeypatch.setattr(checkpoints.subprocess, "run", run)
    return seen


def test_is_fresh_reads_the_stack_export(monkeypatch):
    seen = _export_answers(monkeypatch, 0, json.dumps(exported([STACK])))
    assert checkpoints.is_fresh("lab", Path("."), {})
    assert seen == [["pulumi", "stack", "export", "--stack", "lab"]]
    _export_answers(monkeypatch, 0, json.dumps(exported([STACK, NAMESPACE])))
    assert not checkpoints.is_fresh("lab", Path("."), {})


def test_an_unreadable_state_keeps_the_checkpoints(monkeypatch):
    _export_answers(monkeypatch, 255, "")
    assert not checkpoints.is_fresh("lab", Path("."), {})
    _export_answers(monkeypatch, 0, "not json")
    assert not checkpoints.is_fresh("lab", Path("."), {})

    def missing(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(checkpoints.subprocess, "run", missing)
    assert not checkpoints.is_fresh("lab", Path("."), {})
