"""The `mlplatform` command line: how stacks are named, what `up` runs for each target, --version.
No Pulumi CLI runs here: tools, the local plane, the stack's secrets and the engine are fakes."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlplatform import cli
from mlplatform.config.model import ModulesSettings
from mlplatform.lock import load_lock
from mlplatform.paths import REPO_ROOT
from mlplatform.toolchain.build import GROUPS, Installed, ToolResult

# Subcommands that act on one stack; `promote FROM TO` names two and `tools`, `mirror check`,
# `cluster down/status` none.
STACK_COMMANDS = (
    ("validate",),
    ("render",),
    ("doctor",),
    ("policy", "check"),
    ("record",),
    ("up",),
    ("secrets", "list"),
    ("secrets", "generate"),
    ("secrets", "rotate"),
    ("recover",),
    ("cluster", "up"),
)


def _subparser(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", STACK_COMMANDS, ids=" ".join)
def test_every_stack_command_takes_the_stack_option(path):
    parser = _subparser(cli.build_parser(), path)
    assert any("--stack" in action.option_strings for action in parser._actions), " ".join(path)


def test_up_names_its_stack_with_the_option_and_hides_the_positional_form():
    parser = cli.build_parser()
    assert parser.parse_args(["up", "--stack", "cloud"]).stack == "cloud"
    old = parser.parse_args(["up", "cloud"])
    assert old.stack_positional == "cloud"
    help_text = _subparser(parser, ("up",)).format_help()
    assert "--stack" in help_text and "STACK]" not in help_text.replace("--stack STACK]", "")


def test_the_positional_stack_still_works_with_a_notice(capsys):
    args = argparse.Namespace(stack=None, stack_positional="cloud")
    assert cli.stack_argument(args, "up") == "cloud"
    assert "use --stack cloud" in capsys.readouterr().err
    assert cli.stack_argument(argparse.Namespace(stack=None, stack_positional=None), "up") == "lab"
    assert cli.stack_argument(argparse.Namespace(stack="lab", stack_positional="cloud"), "up") is None


class Engine:
    """Every command `up` would run, answering with the given exit status per verb."""

    def __init__(self, status: dict[str, int] | None = None) -> None:
        self.commands: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.status = status or {}

    def __call__(self, cmd, **kwargs):
        self.commands.append(list(cmd))
        self.envs.append(dict(kwargs.get("env") or {}))
        return subprocess.CompletedProcess(cmd, self.status.get(cmd[1], 0))


class FakeSecrets:
    def __init__(self, stack, resolved, env) -> None:
        self.env = env

    def ensure_stack(self) -> None:
        pass

    def generate(self):
        return [], []

    def config_args(self) -> list[str]:
        return ["--config-file", "stack.yaml"]

    def config_file(self):
        return REPO_ROOT / "stack.yaml"


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def up(monkeypatch, tmp_path):
    """Runs `mlplatform up ARGS` for a stack targeting `kubeconfig` (None: the local plane)."""
    from mlplatform import checkpoints, crd_adoption, stack_secrets
    from mlplatform.cluster import plane
    from mlplatform.toolchain import build

    def run(
        argv, kubeconfig=None, tty=False, answer="y", status=None, fresh=False, modules=None, crd_install="release"
    ):
        calls = SimpleNamespace(tools=[], plane=0, engine=Engine(status), prompts=[], adopted=[])
        ingress = SimpleNamespace(domain="mlplatform.localhost")
        config = SimpleNamespace(
            cluster=SimpleNamespace(kubeconfig=kubeconfig, context=None, ingress=ingress),
            modules=modules or ModulesSettings(),
            platform=SimpleNamespace(crd_install=crd_install),
        )
        monkeypatch.setattr(
            cli, "load_or_report", lambda stack: SimpleNamespace(stack=stack, is_team_stack=False, config=config)
        )

        def ensure(tool, rebuild=False, link=True):
            calls.tools.append(tool.name)
            if tool.name == "helm":
                found = Installed("helm", Path("/opt/helm/bin/helm"), "3.23.0", True)
                return ToolResult(tool.name, "3.23.0", "path", 0.0, found={"helm": found})
            return ToolResult(tool.name, tool.version, "cache", 0.0, "built in 12s")

        def bring_up(resolved):
            calls.plane += 1
            return 3, None

        def ask(prompt):
            calls.prompts.append(prompt)
            return answer

        monkeypatch.setattr(build, "ensure_tool", ensure)
        monkeypatch.setattr(plane, "bring_up", bring_up)
        monkeypatch.setattr(plane, "kubeconfig_path", lambda: tmp_path / "kubeconfig")
        monkeypatch.setattr(cli, "require_engine", lambda: None)
        monkeypatch.setattr(cli, "engine_env", lambda stack: {"PULUMI_BACKEND_URL": f"file://{tmp_path}/state"})
        monkeypatch.setattr(stack_secrets, "StackSecrets", FakeSecrets)
        monkeypatch.setattr(checkpoints, "is_fresh", lambda stack, cwd, env: fresh)
        monkeypatch.setattr(cli.subprocess, "run", calls.engine)

        def adopt(stack, cwd, env, raw_config, cluster):
            # When it runs, against the engine's commands so far.
            calls.adopted.append((stack, len(calls.engine.commands)))
            return ["marked 6 CRD(s) for Helm releases training-crds and removed them from the state"]

        monkeypatch.setattr(crd_adoption, "adopt", adopt)
        monkeypatch.setattr(cli, "stack_cluster", lambda path: "cluster")
        monkeypatch.setattr(sys, "stdin", Terminal(tty))
        monkeypatch.setattr("builtins.input", ask)
        calls.rc = cli.main(["up", *argv])
        return calls

    return run


def _tools(*groups: str) -> list[str]:
    return [name for group in groups for name in GROUPS[group]]


def test_the_local_plane_is_applied_without_preview_and_gets_every_tool(up):
    calls = up(["--stack", "lab"])
    assert calls.rc == 0
    assert calls.plane == 1
    assert sorted(calls.tools) == sorted(load_lock().tools)
    assert calls.engine.commands == [
        ["pulumi", "up", "--stack", "lab", "--yes", "--skip-preview", "--config-file", "stack.yaml"]
    ]
    assert calls.prompts == []


def test_a_fresh_install_skips_per_step_checkpoints(up, capsys):
    calls = up(["--stack", "lab"], fresh=True)
    assert calls.rc == 0
    assert calls.engine.commands[-1][:2] == ["pulumi", "up"]
    assert calls.engine.envs[-1]["PULUMI_SKIP_CHECKPOINTS"] == "true"
    assert "mlplatform recover --stack lab" in capsys.readouterr().out


def test_an_up_over_a_state_with_resources_keeps_its_checkpoints(up, capsys):
    calls = up(["--stack", "lab"], fresh=False)
    assert calls.rc == 0
    assert "PULUMI_SKIP_CHECKPOINTS" not in calls.engine.envs[-1]
    assert "fresh install" not in capsys.readouterr().out


def test_an_up_over_a_state_with_resources_first_moves_its_crds_into_releases(up, capsys):
    calls = up(["--stack", "cloud"], kubeconfig="~/.kube/config", tty=True, answer="y", fresh=False)
    assert calls.rc == 0
    # Before the preview the user confirms: it shows the releases, not CRDs to delete.
    assert calls.adopted == [("cloud", 0)]
    assert calls.engine.commands[0][:2] == ["pulumi", "preview"]
    assert "marked 6 CRD(s) for Helm releases training-crds" in capsys.readouterr().out


def test_no_crds_move_on_a_fresh_install_or_where_each_crd_stays_a_resource(up):
    assert up(["--stack", "lab"], fresh=True).adopted == []
    assert up(["--stack", "lab"], fresh=False, crd_install="objects").adopted == []


def test_up_says_for_each_tool_which_copy_it_uses(up, capsys):
    assert up(["--stack", "lab"]).rc == 0
    out = capsys.readouterr().out
    assert "tool helm: helm found on PATH at 3.23.0 (/opt/helm/bin/helm)\n" in out
    pulumi = load_lock().tools["pulumi"].version
    assert f"tool pulumi: built from source at {pulumi} (cached, built in 12s)\n" in out


def test_an_own_cluster_without_a_terminal_needs_yes(up, capsys):
    calls = up(["--stack", "cloud"], kubeconfig="~/.kube/config")
    assert calls.rc == cli.EXIT_INVALID
    assert "--yes" in capsys.readouterr().err
    # Refused before anything is built or run.
    assert calls.tools == [] and calls.engine.commands == [] and calls.plane == 0


def test_an_own_cluster_is_previewed_and_confirmed_on_a_terminal(up):
    calls = up(["--stack", "cloud"], kubeconfig="~/.kube/config", tty=True, answer="y")
    assert calls.rc == 0
    assert [c[:2] for c in calls.engine.commands] == [["pulumi", "preview"], ["pulumi", "up"]]
    assert "--skip-preview" in calls.engine.commands[1]
    assert len(calls.prompts) == 1 and "~/.kube/config" in calls.prompts[0]
    # No local plane, and none of its tools.
    assert calls.plane == 0
    assert sorted(calls.tools) == sorted(_tools("engine", "render"))
    assert not set(calls.tools) & set(GROUPS["cluster"])


def test_an_own_cluster_is_left_alone_when_the_answer_is_no(up, capsys):
    calls = up(["--stack", "cloud"], kubeconfig="~/.kube/config", tty=True, answer="n")
    assert calls.rc == 1
    assert [c[:2] for c in calls.engine.commands] == [["pulumi", "preview"]]
    assert "not applied" in capsys.readouterr().err


def test_a_failed_preview_applies_nothing(up):
    calls = up(["--stack", "cloud"], kubeconfig="~/.kube/config", tty=True, status={"preview": 255})
    assert calls.rc == 255
    assert [c[:2] for c in calls.engine.commands] == [["pulumi", "preview"]]
    assert calls.prompts == []


def test_yes_applies_an_own_cluster_unattended_with_the_engine_s_own_plan(up):
    calls = up(["--stack", "cloud", "--yes"], kubeconfig="~/.kube/config")
    assert calls.rc == 0
    assert calls.engine.commands == [["pulumi", "up", "--stack", "cloud", "--yes", "--config-file", "stack.yaml"]]
    assert calls.prompts == [] and calls.plane == 0
    assert not set(calls.tools) & set(GROUPS["cluster"])


def test_the_positional_stack_reaches_up(up, capsys):
    calls = up(["lab"])
    assert calls.rc == 0
    assert calls.engine.commands[0][:4] == ["pulumi", "up", "--stack", "lab"]
    assert "deprecated" in capsys.readouterr().err


def test_version_prints_the_package_and_the_pinned_pulumi(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    lock = load_lock()
    assert out.startswith(f"mlplatform {version('mlplatform')} ")
    assert lock.tools["pulumi"].version in out and lock.python["pulumi"] in out


def test_make_up_passes_the_stack_as_an_option():
    makefile = (REPO_ROOT / "Makefile").read_text()
    (line,) = re.findall(r"^up:.*\n\t(.+)$", makefile, re.MULTILINE)
    words = line.replace("$(STACK)", "lab").split()
    assert words[:2] == ["$(MLP)", "up"]
    args = cli.build_parser().parse_args(words[1:])
    assert (args.stack, args.stack_positional) == ("lab", None)


def _signed_in_modules(**identity) -> ModulesSettings:
    return ModulesSettings.model_validate(
        {
            "tenancy": {"enabled": True},
            "mesh": {"enabled": True},
            "identity": {"enabled": True, **identity},
            "workspaces": {"enabled": True},
            "pipelines": {"enabled": True, "multiUser": True},
        }
    )


def test_up_on_the_lab_prints_how_to_sign_in(up, capsys):
    calls = up(["--stack", "lab"], modules=_signed_in_modules())
    assert calls.rc == 0
    out = capsys.readouterr().out
    assert "sign in at https://kubeflow.mlplatform.localhost/\n" in out
    assert "user: user@example.com" in out
    password = next(line for line in out.splitlines() if "password:" in line)
    assert "pulumi config get --path mlplatform:secrets.identityTestUserPassword --stack lab" in password
    assert "--config-file stack.yaml" in password
    assert "pipelines (KFP UI): https://kubeflow.mlplatform.localhost/pipeline/" in out
    assert "notebooks (Jupyter web app): https://kubeflow.mlplatform.localhost/jupyter/" in out


def test_up_names_the_issuer_where_users_come_from_a_directory(up, capsys):
    oidc = {"issuerUrl": "https://login.example.com", "clientId": "kubeflow"}
    calls = up(["--stack", "lab"], modules=_signed_in_modules(provider="oidc", oidc=oidc, host="ml.example.com"))
    assert calls.rc == 0
    out = capsys.readouterr().out
    assert "sign in at https://ml.example.com/" in out
    assert "https://login.example.com" in out and "password" not in out


def test_up_prints_no_sign_in_when_sign_in_is_off_or_up_failed(up, capsys):
    assert up(["--stack", "lab"]).rc == 0
    assert "sign in" not in capsys.readouterr().out
    calls = up(["--stack", "lab"], modules=_signed_in_modules(), status={"up": 1})
    assert calls.rc == 1
    assert "sign in" not in capsys.readouterr().out
