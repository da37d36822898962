"""Every malformed stack in tests/fixtures/invalid is rejected, naming its file and key.

Each fixture states what must be reported in its header:
    # expect-key: <key path>
    # expect: <text the message must contain>
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.config import ConfigError
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT, STACKS

FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, str]:
    header = dict(re.findall(r"^# (expect-key|expect): (.*)$", path.read_text(), flags=re.M))
    return header["expect-key"], header["expect"]


def test_there_are_enough_malformed_fixtures():
    assert len(FIXTURES) >= 25


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_malformed_stack_is_rejected_with_file_and_key(fixture):
    key, expected = _expectation(fixture)
    with pytest.raises(ConfigError) as info:
        load_stack(str(fixture))
    lines = [str(p) for p in info.value.problems]
    prefix = f"tests/fixtures/invalid/{fixture.name}: {key}: "
    matching = [line for line in lines if line.startswith(prefix)]
    assert matching, f"no problem for {key!r} in:\n" + "\n".join(lines)
    assert any(expected in line for line in matching), f"{expected!r} not in:\n" + "\n".join(matching)


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_are_valid(stack):
    resolved = load_stack(stack)
    assert resolved.config.environment == stack
    assert resolved.profile.name == stack


def test_profiles_fill_what_stacks_leave_out():
    lab, openshift, cloud = (load_stack(s) for s in STACKS)
    assert lab.config.cluster.ingress.style == "ingress"
    assert lab.config.cluster.ingress.class_name == "nginx"
    assert openshift.config.cluster.ingress.style == "route"
    assert not openshift.profile.fixed_uids and lab.profile.fixed_uids
    assert openshift.profile.operator_install == "olm"
    assert cloud.config.cluster.storage.default_class == "gp3"  # the EKS profile's class
    assert cloud.config.cluster.ingress.class_name == "alb"
    assert cloud.config.platform.object_store.kind == "s3"
    assert cloud.config.platform.database.kind == "managed"
    assert lab.config.platform.database.kind == "in-cluster"


def test_stack_values_override_profile_defaults(tmp_path):
    stack = tmp_path / "Pulumi.mylab.yaml"
    stack.write_text(
        (REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text()
        + "  mlplatform:platform:\n    objectStore:\n      kind: s3\n      bucket: lab-artifacts\n"
    )
    resolved = load_stack(str(stack))
    assert resolved.config.platform.object_store.kind == "s3"
    assert resolved.config.platform.object_store.bucket == "lab-artifacts"
    assert resolved.config.platform.database.kind == "in-cluster"  # still the profile's


def test_all_problems_are_reported_at_once(tmp_path):
    stack = tmp_path / "Pulumi.broken.yaml"
    stack.write_text(
        "config:\n"
        "  mlplatform:environment: lab\n"
        "  mlplatform:cluster:\n"
        "    nodePools:\n"
        "      - {name: a, count: 0, cpu: '1', memory: 1Gi}\n"
        "      - {name: b, count: 1, cpu: 'x', memory: 1Gi}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_stack(str(stack))
    paths = {p.path for p in info.value.problems}
    assert paths == {"mlplatform:cluster.nodePools[0].count", "mlplatform:cluster.nodePools[1].cpu"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlplatform", *args], cwd=REPO_ROOT, capture_output=True, text=True)


def test_cli_accepts_the_shipped_stacks():
    proc = _cli("validate")
    assert proc.returncode == 0, proc.stderr
    for stack in STACKS:
        assert f"stacks/Pulumi.{stack}.yaml: valid (environment {stack}" in proc.stdout


def test_cli_rejects_a_malformed_stack_with_exit_2_and_one_line_per_problem():
    fixture = next(f for f in FIXTURES if "unknown-environment" in f.name)
    proc = _cli("validate", "lab", str(fixture.relative_to(REPO_ROOT)))
    assert proc.returncode == 2
    assert "stacks/Pulumi.lab.yaml: valid" in proc.stdout
    assert proc.stderr.splitlines() == [
        f"tests/fixtures/invalid/{fixture.name}: mlplatform:environment: "
        "'staging' is not allowed (allowed: 'lab', 'openshift', 'cloud')"
    ]


def test_cli_names_a_missing_stack():
    proc = _cli("validate", "nosuchstack")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "stacks/Pulumi.nosuchstack.yaml: <file>: no such stack file"


def test_mirror_environment_variable_overrides_the_stack(monkeypatch, tmp_path):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(tmp_path))
    assert load_stack("lab").mirror_path == tmp_path
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"mlplatform:mirror\.path: '.*absent' is not a folder"):
        load_stack("lab")
