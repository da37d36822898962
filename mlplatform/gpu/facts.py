"""Hardware facts of the GPU products a node pool may declare.

MIG profiles per product, with the compute and memory slices each instance takes and the
most instances of it one GPU can hold; the numbers follow NVIDIA's MIG user guide and the
GPU operator's default MIG layouts (tests cross-check them against the upstream mirror).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MigProfile:
    compute_slices: int
    memory_slices: int
    max_instances: int


@dataclass(frozen=True)
class MigGeometry:
    compute_slices: int
    memory_slices: int
    profiles: dict[str, MigProfile]


def _seven_slice(suffixes: tuple[str, str, str, str, str]) -> dict[str, MigProfile]:
    """The profile set of 7-compute/8-memory-slice GPUs, named by their memory sizes:
    (1g, 1g double memory, 2g, 3g/4g, 7g)."""
    one, one_double, two, three_four, seven = suffixes
    return {
        f"1g.{one}": MigProfile(1, 1, 7),
        f"1g.{one}+me": MigProfile(1, 1, 1),
        f"1g.{one_double}": MigProfile(1, 2, 4),
        f"2g.{two}": MigProfile(2, 2, 3),
        f"3g.{three_four}": MigProfile(3, 4, 2),
        f"4g.{three_four}": MigProfile(4, 4, 1),
        f"7g.{seven}": MigProfile(7, 8, 1),
    }


_A100_40 = MigGeometry(7, 8, _seven_slice(("5gb", "10gb", "10gb", "20gb", "40gb")))
_80GB = MigGeometry(7, 8, _seven_slice(("10gb", "20gb", "20gb", "40gb", "80gb")))
_H100_NVL = MigGeometry(7, 8, _seven_slice(("12gb", "24gb", "24gb", "47gb", "94gb")))
_H200 = MigGeometry(7, 8, _seven_slice(("18gb", "35gb", "35gb", "71gb", "141gb")))
_A30 = MigGeometry(
    4,
    4,
    {
        "1g.6gb": MigProfile(1, 1, 4),
        "1g.6gb+me": MigProfile(1, 1, 1),
        "2g.12gb": MigProfile(2, 2, 2),
        "2g.12gb+me": MigProfile(2, 2, 1),
        "4g.24gb": MigProfile(4, 4, 1),
    },
)

MIG_GEOMETRY: dict[str, MigGeometry] = {
    "A100-SXM4-40GB": _A100_40,
    "A100-PCIE-40GB": _A100_40,
    "A100-SXM4-80GB": _80GB,
    "A100-PCIE-80GB": _80GB,
    "H100-SXM5-80GB": _80GB,
    "H100-PCIE-80GB": _80GB,
    "H100-NVL": _H100_NVL,
    "H200-SXM5-141GB": _H200,
    "A30": _A30,
}

# PCI device IDs as mig-parted's device-filter writes them (device << 16 | NVIDIA's vendor id).
PCI_DEVICE_IDS: dict[str, str] = {
    "A100-SXM4-40GB": "0x20B010DE",
    "A100-PCIE-40GB": "0x20F110DE",
    "A100-SXM4-80GB": "0x20B210DE",
    "A100-PCIE-80GB": "0x20B510DE",
    "H100-SXM5-80GB": "0x233010DE",
    "H100-PCIE-80GB": "0x233110DE",
    "H100-NVL": "0x232110DE",
    "H200-SXM5-141GB": "0x233510DE",
    "A30": "0x20B710DE",
}

# Names as `nvidia-smi --query-gpu=name` prints them, for the node preflight.
SMI_NAMES: dict[str, tuple[str, ...]] = {
    "A100-SXM4-40GB": ("NVIDIA A100-SXM4-40GB",),
    "A100-SXM4-80GB": ("NVIDIA A100-SXM4-80GB",),
    "A100-PCIE-40GB": ("NVIDIA A100-PCIE-40GB",),
    "A100-PCIE-80GB": ("NVIDIA A100 80GB PCIe",),
    "A30": ("NVIDIA A30",),
    "H100-SXM5-80GB": ("NVIDIA H100 80GB HBM3",),
    "H100-PCIE-80GB": ("NVIDIA H100 PCIe",),
    "H100-NVL": ("NVIDIA H100 NVL",),
    "H200-SXM5-141GB": ("NVIDIA H200",),
    "L4": ("NVIDIA L4",),
    "L40S": ("NVIDIA L40S",),
    "A10G": ("NVIDIA A10G",),
    "T4": ("Tesla T4",),
    "V100-SXM2-16GB": ("Tesla V100-SXM2-16GB",),
}


def mig_capable(model: str) -> bool:
    return model in MIG_GEOMETRY


def mig_problems(model: str, devices: dict[str, int]) -> list[tuple[tuple[str, ...], str]]:
    """What keeps a per-GPU MIG layout off this product: (sub-key, message) pairs."""
    geometry = MIG_GEOMETRY[model]
    problems: list[tuple[tuple[str, ...], str]] = []
    compute = memory = 0
    for profile, count in devices.items():
        facts = geometry.profiles.get(profile)
        if facts is None:
            allowed = ", ".join(geometry.profiles)
            problems.append(((profile,), f"{profile!r} is not a MIG profile of {model} (allowed: {allowed})"))
            continue
        if count < 1 or count > facts.max_instances:
            problems.append(
                (
                    (profile,),
                    f"{count} instance(s) of {profile} do not fit a {model} (allowed: 1 to {facts.max_instances})",
                )
            )
        compute += facts.compute_slices * count
        memory += facts.memory_slices * count
    if not problems and (compute > geometry.compute_slices or memory > geometry.memory_slices):
        problems.append(
            (
                (),
                f"the layout needs {compute} compute and {memory} memory slices; a {model} has "
                f"{geometry.compute_slices} and {geometry.memory_slices} "
                "(allowed: a layout whose slices add up to at most that)",
            )
        )
    return problems
