"""`mlplatform recover --stack X`: the one command after an interrupted `pulumi up`.

A `pulumi up` killed mid-flight (a CI runner timing out, a laptop closing) leaves two things
behind on a file backend: the stack's lock, and operations the state records as pending
(objects whose create was sent but never confirmed). Recovery:

1. release the lock, but only locks whose holder is gone: a lock taken on this host by a
   process that no longer runs. A live holder, or one on another host, stops recovery. Then
   mend what a killed checkpoint write can leave on a file backend (`file_backend.repair`);
2. `pulumi refresh --clear-pending-creates`: the state is read back from the cluster and the
   unconfirmed creates are dropped from it. An object that was in fact created is adopted by
   the next `up`, which applies it server-side (an upsert), so nothing is left orphaned;
3. Helm's records of the stack's CRD releases (`<name>-crds` in the platform namespace,
   mlplatform.modules.crd_bundle) that the state does not hold are removed: an install killed
   before the state recorded it would otherwise stop the next `up` ("cannot re-use a name that
   is still in use"). The CRDs stay; the next install takes them over, as Helm marked them its
   release's when it created them.
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


def recover(
    stack: str,
    project: str,
    cwd: Path,
    env: dict[str, str],
    config_args: Sequence[str] = (),
    cluster: Cluster | None = None,
) -> list[str]:
    """Release dead locks, refresh dropping pending creates, forget CRD releases the state does
    not hold (on `cluster`). Returns what was done. `config_args`: `--config-file` of a stack
    whose config is kept per checkout."""
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
    if cluster is not None:
        held = held_crd_releases(_export(stack, cwd, env))
        try:
            forgotten = forget_crd_releases(cluster, held)
        except RecoverError as exc:
            # The state is mended; only an install the state never recorded needs the cluster.
            done.append(
                f"warning: Helm's records of CRD releases not checked ({exc}); if the next `up` says "
                '"cannot re-use a name that is still in use", run recover again once the cluster answers'
            )
        else:
            if forgotten:
                done.append(f"removed Helm's records of CRD releases the state does not hold: {', '.join(forgotten)}")
    return done


@dataclass(frozen=True)
class Cluster:
    """How to reach the stack's cluster with kubectl, and where Helm keeps its records."""

    kubectl: Sequence[str]
    namespace: str


def held_crd_releases(exported: dict) -> set[str]:
    from mlplatform.modules.crd_bundle import is_bundle

    return {
        str((resource.get("outputs") or {}).get("name") or (resource.get("inputs") or {}).get("name"))
        for resource in (exported.get("deployment") or {}).get("resources") or []
        if is_bundle(resource.get("type", ""), resource.get("inputs"))
    }


def forget_crd_releases(cluster: Cluster, held: set[str]) -> list[str]:
    """Deletes Helm's records (Secrets owner=helm) of `*-crds` releases not in `held`."""
    listed = subprocess.run(
        [*cluster.kubectl, "get", "secrets", "-n", cluster.namespace, "-l", "owner=helm", "-o", "json"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        raise RecoverError(f"listing Helm's records in {cluster.namespace} failed: {listed.stderr.strip()}")
    orphans: dict[str, list[str]] = {}
    for item in json.loads(listed.stdout).get("items") or []:
        release = (item["metadata"].get("labels") or {}).get("name", "")
        if release.endswith("-crds") and release not in held:
            orphans.setdefault(release, []).append(item["metadata"]["name"])
    for release, secrets in sorted(orphans.items()):
        proc = subprocess.run(
            [*cluster.kubectl, "delete", "secret", "-n", cluster.namespace, "--ignore-not-found", *secrets],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RecoverError(f"removing Helm's record of {release} failed: {proc.stderr.strip()}")
    return sorted(orphans)


def _export(stack: str, cwd: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        ["pulumi", "stack", "export", "--stack", stack], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RecoverError(f"pulumi stack export failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def _pulumi(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(["pulumi", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n  ".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise RecoverError(f"pulumi {' '.join(args)} failed:\n  {tail}")
