"""`mlplatform recover`: which stack locks it may release."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from mlplatform.recover import RecoverError, recover, stack_locks


def _lock(backend, stack: str, pid: int, hostname: str) -> None:
    folder = backend / ".pulumi" / "locks" / "organization" / "mlplatform" / stack
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{pid}.json").write_text(json.dumps({"pid": pid, "hostname": hostname, "username": "ci"}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_of_a_process_gone_from_this_host_may_be_released(tmp_path):
    _lock(tmp_path, "lab", _dead_pid(), socket.gethostname())
    (lock,) = stack_locks(f"file://{tmp_path}", "mlplatform", "lab")
    assert lock.holder_gone
    assert stack_locks(f"file://{tmp_path}", "mlplatform", "cloud") == []


@pytest.mark.parametrize("foreign", [False, True])
def test_a_live_or_foreign_holder_stops_recovery_before_any_pulumi_command(tmp_path, foreign):
    hostname = "build-agent-7" if foreign else socket.gethostname()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid = _dead_pid() if foreign else holder.pid
    _lock(tmp_path, "lab", pid, hostname)
    env = {"PULUMI_BACKEND_URL": f"file://{tmp_path}", "PATH": ""}  # no pulumi reachable: nothing may run
    try:
        with pytest.raises(RecoverError, match=f"pid {pid} on {hostname}"):
            recover("lab", "mlplatform", tmp_path, env)
    finally:
        holder.kill()
        holder.wait()
