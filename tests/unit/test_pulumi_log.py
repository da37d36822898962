"""Pulumi's automatic debug log: off in the project's own Pulumi home, on when asked, and a
Pulumi home the user chose left alone."""

from __future__ import annotations

import pytest

from mlplatform import pulumi_log
from mlplatform.cli import engine_env
from mlplatform.paths import PULUMI_HOME, STATE_ROOT


def test_off_by_default_the_logs_folder_is_a_file_that_says_why(tmp_path):
    pulumi_log.apply({"PULUMI_HOME": str(tmp_path)}, tmp_path)
    logs = tmp_path / "logs"
    assert logs.is_file()
    assert "MLPLATFORM_PULUMI_DEBUG_LOG=on" in logs.read_text()


def test_logs_of_earlier_commands_are_kept_beside(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "pulumi-20261207T120000-1-up.log").write_text("earlier")
    pulumi_log.apply({"PULUMI_HOME": str(tmp_path)}, tmp_path)
    assert (tmp_path / "logs").is_file()
    assert (tmp_path / "logs.before-off" / "pulumi-20261207T120000-1-up.log").read_text() == "earlier"


def test_on_removes_the_file_so_the_cli_can_log_again(tmp_path):
    pulumi_log.apply({"PULUMI_HOME": str(tmp_path)}, tmp_path)
    pulumi_log.apply({"PULUMI_HOME": str(tmp_path), pulumi_log.SETTING: "on"}, tmp_path)
    assert not (tmp_path / "logs").exists()


def test_a_pulumi_home_the_user_chose_is_left_alone(tmp_path):
    theirs = tmp_path / "theirs"
    (theirs / "logs").mkdir(parents=True)
    pulumi_log.apply({"PULUMI_HOME": str(theirs)}, tmp_path / "ours")
    assert (theirs / "logs").is_dir()
    assert not (tmp_path / "ours").exists()


def test_an_unknown_setting_is_refused_with_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match="MLPLATFORM_PULUMI_DEBUG_LOG='yes': allowed are 'on' and 'off'"):
        pulumi_log.apply({"PULUMI_HOME": str(tmp_path), pulumi_log.SETTING: "yes"}, tmp_path)
    assert not (tmp_path / "logs").exists()


def test_engine_env_applies_it_to_the_projects_home(monkeypatch):
    monkeypatch.delenv("PULUMI_HOME", raising=False)
    monkeypatch.delenv(pulumi_log.SETTING, raising=False)
    env = engine_env("lab")
    assert env["PULUMI_HOME"] == str(STATE_ROOT / "pulumi-home")
    assert (PULUMI_HOME / "logs").is_file()


def test_the_cli_refuses_an_unknown_setting_before_any_command_runs(monkeypatch, capsys):
    from mlplatform import cli
    from mlplatform.validation import EXIT_INVALID

    ran = []
    monkeypatch.setenv(pulumi_log.SETTING, "yes")
    monkeypatch.setattr(cli, "cmd_validate", lambda args: ran.append(args) or 0)
    assert cli.main(["validate", "lab"]) == EXIT_INVALID
    assert "MLPLATFORM_PULUMI_DEBUG_LOG='yes': allowed are 'on' and 'off'" in capsys.readouterr().err
    assert ran == []
    monkeypatch.setenv(pulumi_log.SETTING, "on")
    assert cli.main(["validate", "lab"]) == 0 and len(ran) == 1  # the same call runs with a good value
