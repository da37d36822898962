"""NVIDIA's published facts about the GPUs the shipped stacks use, and the hardware of the
cloud instance types they name. MIG geometry comes from the GPU operator's
default-mig-parted-config.yaml in the upstream mirror (`mig_profile_limits`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Gpu:
    # PCI device and vendor id as mig-parted's device-filter writes it.
    pci_id: str
    # Framebuffer in MiB, as GPU feature discovery reports nvidia.com/gpu.memory.
    memory_mib: int
    # What GPU feature discovery writes in nvidia.com/gpu.product.
    product: str
    # MIG profiles the GPU offers (NVIDIA's MIG user guide), empty where it has no MIG.
    mig_profiles: tuple[str, ...] = ()


# Keyed by the model names the stacks use for a pool's hardware.
GPUS: dict[str, Gpu] = {
    "A100-SXM4-40GB": Gpu(
        "0x20B010DE", 40960, "NVIDIA-A100-SXM4-40GB", ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")
    ),
    "H100-SXM5-80GB": Gpu(
        "0x233010DE", 81559, "NVIDIA-H100-80GB-HBM3", ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
    ),
    "T4": Gpu("0x1EB810DE", 15360, "Tesla-T4"),
    "A10G": Gpu("0x223710DE", 23028, "NVIDIA-A10G"),
    "L4": Gpu("0x27B810DE", 23034, "NVIDIA-L4"),
}

# Instance types with GPUs built in: (GPUs, model).
INSTANCE_TYPES: dict[str, tuple[int, str]] = {
    "g5.12xlarge": (4, "A10G"),
    "g5.48xlarge": (8, "A10G"),
    "p4d.24xlarge": (8, "A100-SXM4-40GB"),
    "p5.48xlarge": (8, "H100-SXM5-80GB"),
    "g2-standard-24": (2, "L4"),
    "a2-highgpu-8g": (8, "A100-SXM4-40GB"),
    "a3-highgpu-8g": (8, "H100-SXM5-80GB"),
}

# GKE accelerator type -> model.
GKE_ACCELERATORS: dict[str, str] = {
    "nvidia-tesla-t4": "T4",
    "nvidia-l4": "L4",
    "nvidia-tesla-a100": "A100-SXM4-40GB",
    "nvidia-h100-80gb": "H100-SXM5-80GB",
}

NVIDIA_VENDOR = "10de"
# PCI class of data-centre GPUs (3D controller).
GPU_PCI_CLASS = "0302"


def mirror_mig_config(mirror: Path) -> dict:
    document = yaml.safe_load((mirror / "gpu-operator" / "default-mig-parted-config.yaml").read_text())
    return yaml.safe_load(document["data"]["config.yaml"])


@cache
def mig_profile_limits(mirror: Path, model: str) -> dict[str, int]:
    """Most instances of each profile one GPU of the model holds: the operator's
    `all-<profile>` layouts, the entry whose device-filter names the GPU (or has none)."""
    gpu = GPUS[model]
    layouts = mirror_mig_config(mirror)["mig-configs"]
    limits: dict[str, int] = {}
    for profile in gpu.mig_profiles:
        for entry in layouts.get(f"all-{profile}") or []:
            if "device-filter" in entry and gpu.pci_id not in entry["device-filter"]:
                continue
            count = (entry.get("mig-devices") or {}).get(profile)
            if count:
                limits[profile] = count
            break
    return limits


def slices(profile: str) -> tuple[int, int]:
    """(compute slices, memory in GB) of a profile such as 3g.20gb."""
    match = re.fullmatch(r"(\d+)g\.(\d+)gb", profile)
    if match is None:
        raise ValueError(profile)
    return int(match.group(1)), int(match.group(2))


def layout_fits(mirror: Path, model: str, devices: dict[str, int]) -> bool:
    """Whether one GPU can hold these MIG instances: each profile offered, no more of it than
    the GPU holds alone, and together no more compute slices and memory than the whole GPU
    (its largest profile)."""
    gpu = GPUS[model]
    if not gpu.mig_profiles or not devices:
        return False
    limits = mig_profile_limits(mirror, model)
    whole_compute, whole_memory = max(slices(p) for p in gpu.mig_profiles)
    if any(p not in limits or count > limits[p] or count < 1 for p, count in devices.items()):
        return False
    compute = sum(slices(p)[0] * count for p, count in devices.items())
    memory = sum(slices(p)[1] * count for p, count in devices.items())
    return compute <= whole_compute and memory <= whole_memory
