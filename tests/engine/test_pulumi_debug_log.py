"""Against the real CLI: with `logs` a file it writes no automatic debug log and still works;
with the switch on it logs again (so the first assertion can fail)."""

from __future__ import annotations

import subprocess

import pytest

from mlplatform import pulumi_log
from mlplatform.cli import engine_env, require_engine


@pytest.fixture(autouse=True)
def engine_ready():
    reason = require_engine()
    if reason:
        pytest.fail(reason, pytrace=False)


def _stack_ls(home, setting: str) -> subprocess.CompletedProcess:
    env = engine_env("lab")
    env.update(PULUMI_HOME=str(home), PULUMI_BACKEND_URL=f"file://{home.parent / 'state'}")
    env[pulumi_log.SETTING] = setting
    pulumi_log.apply(env, home)
    (home.parent / "state").mkdir(exist_ok=True)
    return subprocess.run(
        ["pulumi", "stack", "ls", "--non-interactive"], cwd=home.parent, env=env, capture_output=True, text=True
    )


def test_the_cli_writes_no_debug_log_while_it_is_off_and_one_when_on(tmp_path):
    home = tmp_path / "pulumi-home"
    (tmp_path / "Pulumi.yaml").write_text("name: logcheck\nruntime: python\n")
    off = _stack_ls(home, "off")
    assert off.returncode == 0, off.stderr
    assert (home / "logs").is_file()
    assert not list(home.rglob("*.log"))

    on = _stack_ls(home, "on")
    assert on.returncode == 0, on.stderr
    assert [p.name for p in (home / "logs").iterdir() if p.name.endswith(".log")], "the CLI logs again"
