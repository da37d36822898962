"""GPU node preflight against recorded nvidia-smi outputs (tests/fixtures/nvidia-smi)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mlplatform.gpu.doctor import QUERY, run_checks
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT

RECORDED = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str = ""


@dataclass
class FakeFile:
    text: str | None

    @property
    def exists(self) -> bool:
        return self.text is not None

    def contains(self, pattern: str) -> bool:
        return self.text is not None and pattern in self.text


@dataclass
class RecordedHost:
    """A GPU host as testinfra sees it, answering from recorded outputs."""

    recording: str | None
    binaries: set[str] = field(default_factory=lambda: {"nvidia-smi", "nvidia-ctk", "nvidia-container-runtime"})
    files: dict[str, str] = field(
        default_factory=lambda: {
            "/etc/containerd/config.toml": '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
        }
    )
    commands: list[str] = field(default_factory=list)

    def run(self, command: str, *args):
        self.commands.append(command)
        if command == QUERY:
            return Result(0, (RECORDED / f"{self.recording}.query.csv").read_text())
        if command == "nvidia-smi -L":
            return Result(0, (RECORDED / f"{self.recording}.list.txt").read_text())
        if command == "command -v nvidia-smi":
            return Result(0, "/usr/bin/nvidia-smi\n")
        raise AssertionError(f"unexpected command {command!r}")

    def exists(self, command: str) -> bool:
        return command in self.binaries

    def file(self, path: str) -> FakeFile:
        return FakeFile(self.files.get(path))


def _results(checks):
    return {c.name: c.ok for c in checks}


def _pools(stack):
    resolved = load_stack(stack)
    return list(resolved.config.cluster.node_pools), resolved.config.modules.gpu.min_driver_version


def test_h100_host_passes_for_the_openshift_pool_only_when_mig_is_set_up():
    pools, min_driver = _pools("openshift")
    host = RecordedHost("h100-8x")
    pool, checks = run_checks(host, None, pools, min_driver)
    assert pool.name == "gpu-h100"  # found by model
    results = _results(checks)
    assert results["driver >= 550.54.15"] and results["GPU model is H100-SXM5-80GB"] and results["GPU count is 8"]
    # The pool plans 7x 1g.10gb per GPU; this host has MIG off: the preflight says so.
    assert results["MIG mode enabled (pool plans MIG)"] is False
    detail = next(c.detail for c in checks if c.name == "MIG devices match the layout")
    assert detail == "have none, layout needs {'1g.10gb': 56}"
    assert results["container toolkit runtime configured"]


def test_h100_host_without_mig_plan_passes_every_check():
    pools, min_driver = _pools("cloud")
    pool = next(p for p in pools if p.name == "gpu-h100")
    _, checks = run_checks(RecordedHost("h100-8x"), pool, pools, min_driver)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert [c.name for c in checks] == [
        "nvidia-smi present",
        "driver >= 550.54.15",
        "GPU model is H100-SXM5-80GB",
        "GPU count is 8",
        "MIG mode off (pool plans no MIG)",
        "container toolkit runtime configured",
    ]


def test_a100_with_the_labs_mig_layout_passes():
    pools, min_driver = _pools("lab")
    pool, checks = run_checks(RecordedHost("a100-40gb-8x-mig"), None, pools, min_driver)
    assert pool.name == "gpu-a100"
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_old_driver_and_missing_toolkit_fail_with_details():
    pools, min_driver = _pools("lab")
    host = RecordedHost("t4-4x-old-driver", binaries={"nvidia-smi"}, files={})
    pool, checks = run_checks(host, None, pools, min_driver)
    assert pool.name == "gpu-t4"
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert failed == {
        "driver >= 550.54.15": "driver 535.183.01",
        "container toolkit runtime configured": "toolkit: missing; runtime config: none; CDI spec: none",
    }


def test_host_whose_gpus_match_no_pool_is_named():
    pools, min_driver = _pools("lab")
    pool, checks = run_checks(RecordedHost("h100-8x"), None, pools, min_driver)
    assert pool is None
    assert checks[-1].name == "GPU model matches a pool"
    assert "host has NVIDIA H100 80GB HBM3; GPU pools: gpu-a100 (A100-SXM4-40GB), gpu-t4 (T4)" in checks[-1].detail


def test_host_without_driver_stops_at_the_first_check():
    pools, min_driver = _pools("lab")
    host = RecordedHost(None, binaries=set())
    _, checks = run_checks(host, None, pools, min_driver)
    assert [(c.name, c.ok) for c in checks] == [("nvidia-smi present", False)]
    assert host.commands == []


@pytest.mark.parametrize("recording", ["h100-8x", "a100-40gb-8x-mig", "t4-4x-old-driver"])
def test_preflight_only_queries(recording):
    host = RecordedHost(recording)
    pools, min_driver = _pools("lab")
    run_checks(host, None, pools, min_driver)
    for command in host.commands:
        assert command.startswith(("nvidia-smi --query-gpu", "nvidia-smi -L", "command -v")), command


def test_cli_preflight_of_this_machine_through_testinfra():
    """The real testinfra local backend: this machine has no NVIDIA driver, and says so."""
    import shutil
    import subprocess
    import sys

    if shutil.which("nvidia-smi"):
        pytest.fail("this test expects a host without nvidia-smi", pytrace=False)
    proc = subprocess.run(
        [sys.executable, "-m", "mlplatform", "doctor", "--gpu", "--stack", "lab"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "FAIL  nvidia-smi present" in proc.stdout
    assert proc.stdout.strip().endswith("0 passed, 1 failed")
