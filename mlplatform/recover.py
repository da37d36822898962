"""`mlplatform recover --stack X`: the one command after an interrupted `pulumi up`.

A `pulumi up` killed mid-flight (a CI runner timing out, a laptop closing) leaves two things
behind on a file backend: the stack's lock, and operations the state records as pending
(objects whose create was sent but never confirmed). Recovery:

1. release the lock, but only locks whose holder is gone: a lock taken on this host by a
   process that no longer runs. A live holder, or one on another host, stops recovery. Then
   mend what a killed checkpoint write can leave on a file backend (`file_backend.repair`);
2. `pulumi refresh --clear-pending-creates`: the state is read back from the cluster and the
   unconfirmed creates are dropped from it. An object that was in fact created is adopted by
   the next `up`, which applies it server-side (an upsert), so nothing is left orphaned.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlplatform import file_backend


class RecoverError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackLock:
    path: Path
    pid: int
    hostname: str

    @property
    def holder_gone(self) -> bool:
        if self.hostname != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def stack_locks(backend_url: str, project: str, stack: str) -> list[StackLock]:
    """Lock files of a stack on a file:// backend (other backends hold their own locks)."""
    backend_root = file_backend.root(backend_url)
    if backend_root is None:
        return []
    root = backend_root / ".pulumi" / "locks"
    locks = []
    for path in sorted(root.glob(f"*/{project}/{stack}/*.json")) + sorted(root.glob(f"{stack}/*.json")):
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RecoverError(f"{path}: unreadable lock file: {exc}") from exc
        locks.append(StackLock(path=path, pid=int(content.get("pid", 0)), hostname=str(content.get("hostname", ""))))
    return locks


def recover(stack: str, project: str, cwd: Path, env: dict[str, str], config_args: Sequence[str] = ()) -> list[str]:
    """Release dead locks, then refresh dropping pending creates. Returns what was done.
    `config_args`: `--config-file` of a stack whose config is kept per checkout."""
    done = []
    locks = stack_locks(env.get("PULUMI_BACKEND_URL", ""), project, stack)
    live = [lock for lock in locks if not lock.holder_gone]
    if live:
        holders = ", ".join(f"pid {lock.pid} on {lock.hostname}" for lock in live)
        raise RecoverError(f"stack {stack} is locked by a running or foreign update ({holders}); wait for it to end")
    backend_root = file_backend.root(env.get("PULUMI_BACKEND_URL", ""))
    if backend_root is not None:
        done += file_backend.repair(backend_root, project, stack)
    if locks:
        _pulumi(["cancel", "--yes", "--stack", stack], cwd, env)
        done.append(f"released {len(locks)} lock(s) left by a process that no longer runs")
    _pulumi(
        ["refresh", "--yes", "--clear-pending-creates", "--stack", stack, "--non-interactive", *config_args], cwd, env
    )
    done.append("refreshed the state from the cluster, pending creates dropped")
    return done


def _pulumi(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(["pulumi", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n  ".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise RecoverError(f"pulumi {' '.join(args)} failed:\n  {tail}")
