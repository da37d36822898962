"""GPU node preflight: read-only checks of a GPU host against the node pool it will join.

Runs through testinfra, so the same checks work on this machine (`local://`) or over SSH
(`ssh://user@host`). Nothing here changes GPU settings: every command only queries.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from mlplatform.config.model import NodePool
from mlplatform.gpu.facts import SMI_NAMES

QUERY = "nvidia-smi --query-gpu=name,driver_version,mig.mode.current --format=csv,noheader"
# Where the NVIDIA container toolkit registers its runtime (containerd, CRI-O, Docker) or its
# CDI spec: one of them must name it for pods to get GPUs.
RUNTIME_CONFIGS = (
    "/etc/containerd/config.toml",
    "/etc/containerd/conf.d/99-nvidia.toml",
    "/etc/crio/crio.conf.d/99-nvidia.conf",
    "/etc/docker/daemon.json",
)
CDI_SPECS = ("/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml")


class Host(Protocol):
    """The part of testinfra's Host the checks use."""

    def run(self, command: str, *args: Any) -> Any: ...
    def exists(self, command: str) -> bool: ...
    def file(self, path: str) -> Any: ...


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class GpuInfo:
    name: str
    driver: str
    mig_mode: str


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def query_gpus(host: Host) -> list[GpuInfo]:
    result = host.run(QUERY)
    if result.rc != 0:
        raise RuntimeError(f"`{QUERY}` failed: {(result.stderr or result.stdout).strip()}")
    gpus = []
    for line in result.stdout.strip().splitlines():
        name, driver, mig = (field.strip() for field in line.split(","))
        gpus.append(GpuInfo(name=name, driver=driver, mig_mode=mig))
    return gpus


def mig_devices(host: Host) -> Counter[str]:
    """MIG devices by profile, from `nvidia-smi -L` (lines like `  MIG 3g.40gb Device 0: ...`)."""
    listing = host.run("nvidia-smi -L").stdout
    return Counter(re.findall(r"^\s+MIG\s+(\S+)\s+Device\s+\d+:", listing, flags=re.M))


def pool_for(gpus: list[GpuInfo], pools: list[NodePool]) -> NodePool | None:
    """The single GPU pool whose model this host's GPUs are, if exactly one matches."""
    names = {g.name for g in gpus}
    matching = [p for p in pools if p.gpu and names <= set(SMI_NAMES.get(p.gpu.model, ()))]
    return matching[0] if len(matching) == 1 else None


def run_checks(
    host: Host, pool: NodePool | None, pools: list[NodePool], min_driver: str
) -> tuple[NodePool | None, list[Check]]:
    checks: list[Check] = []
    if not host.exists("nvidia-smi"):
        return pool, [Check("nvidia-smi present", False, "nvidia-smi is not on PATH: is the NVIDIA driver installed?")]
    checks.append(Check("nvidia-smi present", True, host.run("command -v nvidia-smi").stdout.strip()))
    try:
        gpus = query_gpus(host)
    except RuntimeError as exc:
        return pool, [*checks, Check("GPUs answer", False, str(exc))]
    if not gpus:
        return pool, [*checks, Check("GPUs answer", False, "nvidia-smi lists no GPU")]

    drivers = sorted({g.driver for g in gpus})
    oldest = min(drivers, key=_version_tuple)
    checks.append(
        Check(
            f"driver >= {min_driver}",
            _version_tuple(oldest) >= _version_tuple(min_driver),
            f"driver {', '.join(drivers)}",
        )
    )

    pool = pool or pool_for(gpus, pools)
    if pool is None or pool.gpu is None:
        found = ", ".join(sorted({g.name for g in gpus}))
        declared = ", ".join(f"{p.name} ({p.gpu.model})" for p in pools if p.gpu)
        checks.append(
            Check("GPU model matches a pool", False, f"host has {found}; GPU pools: {declared} (pass --pool)")
        )
        return None, checks
    expected_names = SMI_NAMES[pool.gpu.model]
    wrong = sorted({g.name for g in gpus if g.name not in expected_names})
    checks.append(
        Check(
            f"GPU model is {pool.gpu.model}",
            not wrong,
            f"{len(gpus)} x {gpus[0].name}"
            if not wrong
            else f"found {', '.join(wrong)}; pool {pool.name} declares {pool.gpu.model}",
        )
    )
    checks.append(
        Check(f"GPU count is {pool.gpu.count}", len(gpus) == pool.gpu.count, f"{len(gpus)} GPU(s) on this host")
    )

    planned = pool.gpu.sharing.mig
    modes = Counter(g.mig_mode for g in gpus)
    if planned:
        checks.append(
            Check(
                "MIG mode enabled (pool plans MIG)",
                set(modes) == {"Enabled"},
                ", ".join(f"{m}: {n}" for m, n in modes.items()),
            )
        )
        have = mig_devices(host)
        want = Counter({profile: count * len(gpus) for profile, count in planned.devices.items()})
        checks.append(
            Check(
                "MIG devices match the layout",
                have == want,
                f"have {dict(have) or 'none'}, layout needs {dict(want)}",
            )
        )
    else:
        checks.append(
            Check(
                "MIG mode off (pool plans no MIG)",
                "Enabled" not in modes,
                ", ".join(f"{m}: {n}" for m, n in modes.items()),
            )
        )

    toolkit = [b for b in ("nvidia-container-runtime", "nvidia-ctk") if host.exists(b)]
    configured = [p for p in RUNTIME_CONFIGS if host.file(p).exists and host.file(p).contains("nvidia")]
    cdi = [p for p in CDI_SPECS if host.file(p).exists]
    checks.append(
        Check(
            "container toolkit runtime configured",
            bool(toolkit) and bool(configured or cdi),
            f"toolkit: {', '.join(toolkit) or 'missing'}; runtime config: {', '.join(configured) or 'none'}; "
            f"CDI spec: {', '.join(cdi) or 'none'}",
        )
    )
    return pool, checks


def connect(target: str) -> Host:
    import testinfra

    return testinfra.get_host(target)
