"""Per-step checkpoints of `pulumi up`, and the one case where they are left out: a fresh install.

The file backend re-serialises and rewrites the whole state before and after every step, so a
cold `up` costs in proportion to the square of the stack. Pulumi's `PULUMI_SKIP_CHECKPOINTS`
writes the state once, when the update ends. What that risks is the record of the objects an
update created before it was killed. A stack whose state holds no resources has no such record
to lose, and nothing a killed fresh install made is left unaccounted for: the state is still
empty, `mlplatform recover` then `up` applies every object again, and the provider applies
server-side with force (`pulumi.com/patchForce`), so each object the killed run created is
adopted, not duplicated or refused. An `up` over a state that holds resources keeps its
per-step checkpoints: there a lost record would mean orphans after a removal or a rename.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

SKIP = "PULUMI_SKIP_CHECKPOINTS"
# Resources that exist in every state once an update has run and stand for no cluster object.
_BOOKKEEPING = ("pulumi:pulumi:Stack", "pulumi:providers:")


def holds_resources(exported: Mapping) -> bool:
    """Whether a `pulumi stack export` document records anything but bookkeeping (the stack
    resource, default providers) or holds pending operations."""
    deployment = exported.get("deployment") or {}
    if deployment.get("pending_operations"):
        return True
    return any(not str(r.get("type", "")).startswith(_BOOKKEEPING) for r in deployment.get("resources") or [])


def is_fresh(stack: str, cwd: Path, env: Mapping[str, str]) -> bool:
    """Whether the stack's state holds no resources. A state that cannot be read counts as not
    fresh: the safe answer keeps the checkpoints."""
    try:
        proc = subprocess.run(
            ["pulumi", "stack", "export", "--stack", stack],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
        )
        return proc.returncode == 0 and not holds_resources(json.loads(proc.stdout))
    except (OSError, ValueError):
        return False


# Go's garbage collector at its defaults when no checkpoint is written. GOGC=400 (the engine's
# default, mlplatform.cli) pays off where the CLI re-serialises the state at every step; without
# that the CLI makes little garbage, and in a fresh install of the Kubeflow services GOGC=400
# doubled the peak memory of the CLI and the provider for no shorter `up` (docs/benchmarks.md).
WITHOUT_CHECKPOINTS_GO_RUNTIME = {"GOGC": "100", "GOMEMLIMIT": "off"}


def up_env(env: Mapping[str, str], fresh: bool, user_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `pulumi up`: checkpoints skipped for a fresh install, unless the user
    set PULUMI_SKIP_CHECKPOINTS either way; without checkpoints, Go's collector at its defaults
    unless the user (`user_env`, the process environment) set GOGC or GOMEMLIMIT."""
    user_env = os.environ if user_env is None else user_env
    result = dict(env)
    if fresh and SKIP not in result:
        result[SKIP] = "true"
    if result.get(SKIP) == "true":
        for name, value in WITHOUT_CHECKPOINTS_GO_RUNTIME.items():
            if name not in user_env:
                result[name] = value
    return result
