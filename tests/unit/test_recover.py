"""`mlplatform recover`: which stack locks it may release."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from mlplatform import file_backend
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


def test_the_backend_url_skips_sidecars_and_its_folder_reads_back(tmp_path):
    url = file_backend.local_url(tmp_path / "state")
    assert url.endswith("?metadata=skip")
    assert file_backend.root(url) == tmp_path / "state"
    assert file_backend.root(f"file://{tmp_path}") == tmp_path
    assert file_backend.root("s3://bucket/state") is None


def test_repair_removes_what_a_killed_write_left_and_nothing_else(tmp_path):
    stacks = tmp_path / ".pulumi" / "stacks" / "mlplatform"
    stacks.mkdir(parents=True)
    (stacks / "lab.json").write_text('{"version": 3}')
    (stacks / "lab.json.attrs").write_text("")  # truncated by the kill
    (stacks / "lab.json.bak").write_text('{"version": 3}')
    (stacks / "lab.json.bak.attrs").write_text('{"user.content_type": "application/json"}')
    (stacks / "lab.json.18f2a3c4d5e6.tmp").write_text('{"vers')
    (stacks / "cloud.json.attrs").write_text("")  # another stack's: not ours to touch
    history = tmp_path / ".pulumi" / "history" / "mlplatform" / "lab"
    history.mkdir(parents=True)
    (history / "lab-1.history.json.attrs").write_text('{"user.co')

    done = file_backend.repair(tmp_path, "mlplatform", "lab")

    assert len(done) == 3, done
    assert sorted(path.name for path in stacks.iterdir()) == [
        "cloud.json.attrs",
        "lab.json",
        "lab.json.bak",
        "lab.json.bak.attrs",
    ]
    assert list(history.iterdir()) == []
    assert file_backend.repair(tmp_path, "mlplatform", "lab") == []
