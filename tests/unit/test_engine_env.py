"""The environment the Pulumi CLI runs in: Go runtime settings for the CLI and its provider."""

from __future__ import annotations

import subprocess

from mlplatform.cli import GO_RUNTIME_DEFAULTS, engine_env
from mlplatform.overlays import kustomize_binary


def test_the_cli_and_its_plugins_collect_garbage_less_often(monkeypatch):
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    env = engine_env("lab")
    assert env["GOGC"] == "400"
    assert env["GOMEMLIMIT"] == "2GiB"


def test_settings_of_the_user_win(monkeypatch):
    monkeypatch.setenv("GOGC", "100")
    monkeypatch.setenv("GOMEMLIMIT", "off")
    env = engine_env("lab")
    assert (env["GOGC"], env["GOMEMLIMIT"]) == ("100", "off")


def test_the_engine_runs_more_steps_at_once_unless_the_user_says(monkeypatch):
    monkeypatch.delenv("PULUMI_PARALLEL", raising=False)
    assert engine_env("lab")["PULUMI_PARALLEL"] == "64"
    monkeypatch.setenv("PULUMI_PARALLEL", "4")
    assert engine_env("lab")["PULUMI_PARALLEL"] == "4"


def test_a_go_program_accepts_the_settings():
    """A Go binary refuses to start on a GOMEMLIMIT or GOGC it cannot parse; kustomize is one."""
    proc = subprocess.run(
        [kustomize_binary(), "version"], env={**GO_RUNTIME_DEFAULTS, "PATH": "/usr/bin:/bin"}, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    broken = subprocess.run(
        [kustomize_binary(), "version"],
        env={"GOMEMLIMIT": "two gigabytes", "PATH": "/usr/bin:/bin"},
        capture_output=True,
    )
    assert broken.returncode != 0  # so the check above can fail
