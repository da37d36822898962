"""Driving the Pulumi CLI on a stack for tests and benchmarks: a scratch copy of the project,
its own file backend, stack secrets set as a user sets them, and the state and cluster
inventories compared object by object."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlplatform import file_backend, pulumi_log
from mlplatform.cli import engine_env
from mlplatform.paths import PULUMI_HOME, REPO_ROOT

PROJECT_FILES = ("__main__.py", "Pulumi.yaml")


class EngineError(RuntimeError):
    pass


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> Run:
        if self.returncode != 0:
            tail = "\n".join((self.stdout + "\n" + self.stderr).strip().splitlines()[-40:])
            raise EngineError(
                f"pulumi {' '.join(self.args)} failed ({self.returncode}) after {self.seconds:.0f}s:\n{tail}"
            )
        return self


def change_summary(run: Run) -> dict[str, int]:
    """Operation counts of a `--json` preview or up: {"same": N, "create": M, ...}."""
    document = json.loads(run.stdout)
    return {op: int(count) for op, count in (document.get("changeSummary") or {}).items()}


def up_summary(stream: str) -> dict[str, int]:
    """Operation counts of an `up --json` event stream (its summary event)."""
    for line in reversed(stream.splitlines()):
        if '"summaryEvent"' in line:
            return {op: int(count) for op, count in json.loads(line)["summaryEvent"]["resourceChanges"].items()}
    raise EngineError("pulumi up --json printed no summary event")


def changes(summary: dict[str, int]) -> int:
    return sum(count for op, count in summary.items() if op != "same")


@dataclass
class EngineStack:
    """One stack of a scratch copy of the project, with state in `folder/state`."""

    stack: str
    folder: Path
    state_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.project = self.folder / "project"
        self.backend = self.folder / "state"

    @property
    def env(self) -> dict[str, str]:
        env = engine_env(self.stack)
        env.update(
            PULUMI_BACKEND_URL=file_backend.local_url(self.backend),
            PULUMI_CONFIG_PASSPHRASE="mlplatform-engine",
            MLPLATFORM_STATE_DIR=str(self.state_dir),
            PYTHONPATH=str(REPO_ROOT),
        )
        env.update(self.extra_env)
        if pulumi_log.SETTING in self.extra_env:
            # A benchmark set the debug log's switch for this stack alone (engine_env applied the
            # process's own).
            pulumi_log.apply(env, PULUMI_HOME)
        return env

    def create(self, stack_file: Path | None = None, secrets: dict[str, str] | None = None) -> None:
        """Copy the project (so `stack init` writes its salt into the copy), init the stack and
        set its secrets encrypted, as `pulumi config set --secret --path` does."""
        self.project.mkdir(parents=True)
        self.backend.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "__main__.py", self.project)
        shutil.copytree(REPO_ROOT / "stacks", self.project / "stacks")
        if stack_file is not None:
            shutil.copy(stack_file, self.project / "stacks" / f"Pulumi.{self.stack}.yaml")
        definition = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
        definition["runtime"]["options"]["virtualenv"] = str(REPO_ROOT / ".venv")
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(definition))
        self.pulumi("stack", "init", self.stack).check()
        for name, value in sorted((secrets or {}).items()):
            self.pulumi("config", "set", "--secret", "--path", f"mlplatform:secrets.{name}", value).check()

    def beside(self, stack: str, stack_file: Path) -> EngineStack:
        """Another stack of the same project copy and backend (a team stack), initialised."""
        other = EngineStack(stack, self.folder, self.state_dir, dict(self.extra_env))
        shutil.copy(stack_file, self.project / "stacks" / f"Pulumi.{stack}.yaml")
        other.pulumi("stack", "init", stack).check()
        return other

    def pulumi(self, *args: str, timeout: float = 3600) -> Run:
        full = [*args, "--non-interactive"] if args[0] not in ("stack", "config") else list(args)
        if args[0] not in ("stack",):
            full += ["--stack", self.stack]
        started = time.monotonic()
        proc = subprocess.run(
            ["pulumi", *full], cwd=self.project, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return Run(full, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    def popen(self, *args: str, capture: bool = False) -> subprocess.Popen:
        """A pulumi command in a process group of its own (its plugins start their own groups)."""
        output = subprocess.PIPE if capture else subprocess.DEVNULL
        return subprocess.Popen(
            ["pulumi", *args, "--non-interactive", "--stack", self.stack],
            cwd=self.project,
            env=self.env,
            stdout=output,
            stderr=output,
            text=True,
            start_new_session=True,
        )

    def recover(self) -> Run:
        """`mlplatform recover`, the one documented command after an interrupted `up`."""
        started = time.monotonic()
        args = [sys.executable, "-m", "mlplatform", "recover", "--stack", self.stack, "--cwd", str(self.project)]
        proc = subprocess.run(args, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True)
        return Run(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    def state_inventory(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of every Kubernetes object the state holds, a module's CRD
        release counting as the CRDs it installed."""
        from mlplatform.modules.crd_bundle import is_bundle, release_objects

        exported = json.loads(self.pulumi("stack", "export", "--stack", self.stack).check().stdout)
        found = set()
        for resource in exported.get("deployment", {}).get("resources") or []:
            if not resource["type"].startswith("kubernetes:") or resource["type"].startswith("pulumi:providers:"):
                continue
            # A patch changes an object the stack does not hold (the cluster's, left on destroy).
            if resource["type"].endswith("Patch"):
                continue
            outputs = resource.get("outputs") or {}
            if is_bundle(resource["type"], resource.get("inputs")):
                found |= release_objects(outputs)
                continue
            metadata = outputs.get("metadata") or {}
            if "kind" in outputs and "name" in metadata:
                found.add((outputs["kind"], metadata.get("namespace", ""), metadata["name"]))
        return found

    def pending_operations(self) -> int:
        exported = json.loads(self.pulumi("stack", "export", "--stack", self.stack).check().stdout)
        return len(exported.get("deployment", {}).get("pending_operations") or [])
