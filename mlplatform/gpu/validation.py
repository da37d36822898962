"""GPU rules a config must satisfy: what the hardware and the install path can honour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplatform.config.model import PlatformConfig
from mlplatform.gpu.facts import MIG_GEOMETRY, mig_capable, mig_problems

AddProblem = Callable[[tuple[Any, ...], str], None]


def gpu_problems(config: PlatformConfig, cloud_provider: str | None, add: AddProblem) -> None:
    gpu_pools = [(i, p) for i, p in enumerate(config.cluster.node_pools) if p.gpu is not None]
    for index, pool in gpu_pools:
        assert pool.gpu is not None
        base = ("cluster", "nodePools", index, "gpu", "sharing")
        sharing = pool.gpu.sharing
        model = pool.gpu.model
        if sharing.time_slicing and sharing.mps:
            add(base, "timeSlicing and mps both set (allowed: one way of sharing a GPU per pool)")
        if sharing.mig is not None:
            mig = sharing.mig
            if not mig_capable(model):
                capable = ", ".join(MIG_GEOMETRY)
                add((*base, "mig"), f"{model} has no MIG support (allowed: MIG on {capable})")
            else:
                for sub, message in mig_problems(model, mig.devices):
                    add((*base, "mig", "devices", *sub), message)
            if mig.strategy == "single" and len(mig.devices) > 1:
                add(
                    (*base, "mig", "strategy"),
                    f"'single' advertises one kind of MIG device per node, this layout has {len(mig.devices)} "
                    f"({', '.join(mig.devices)}) (allowed: mixed, or one profile)",
                )
            if sharing.time_slicing and mig.strategy != "mixed":
                add(
                    (*base, "timeSlicing"),
                    "time-slicing of MIG devices needs mig.strategy 'mixed' (allowed: mig.strategy mixed, or no timeSlicing)",
                )
            if sharing.mps:
                add(
                    (*base, "mps"),
                    "the device plugin does not share MIG devices through MPS (allowed: timeSlicing with mig.strategy mixed)",
                )

    settings = config.modules.gpu
    if not settings.enabled:
        return
    where = ("modules", "gpu")
    if not gpu_pools:
        add(
            (*where, "enabled"),
            "no node pool declares GPUs (allowed: add gpu to a node pool, or disable the gpu module)",
        )
    if settings.install == "managed" and cloud_provider != "gke":
        add(
            (*where, "install"),
            "'managed' leaves the device plugin to the cloud provider, which only GKE installs (allowed: device-plugin, operator)",
        )
    if settings.install == "operator":
        strategies = {
            pool.name: (pool.gpu.sharing.mig.strategy if pool.gpu and pool.gpu.sharing.mig else "none")
            for _, pool in gpu_pools
        }
        partitioned = {s for s in strategies.values() if s != "none"}
        if len(partitioned) > 1:
            listed = ", ".join(f"{k}={v}" for k, v in strategies.items())
            add(
                (*where, "install"),
                f"the GPU operator applies one MIG strategy to the whole cluster, the pools ask for several ({listed}) "
                "(allowed: the same mig.strategy on every MIG pool, or install: device-plugin)",
            )
    if settings.install == "managed":
        # GKE shares GPUs itself: time-shared GPUs and MIG partitions keep the name nvidia.com/gpu.
        for index, pool in gpu_pools:
            assert pool.gpu is not None
            base = ("cluster", "nodePools", index, "gpu", "sharing")
            sharing = pool.gpu.sharing
            if sharing.time_slicing and sharing.time_slicing.rename_by_default:
                add(
                    (*base, "timeSlicing", "renameByDefault"),
                    "GKE advertises time-shared GPUs as nvidia.com/gpu (allowed: false with install: managed)",
                )
            if sharing.mig and sharing.mig.strategy != "single":
                add(
                    (*base, "mig", "strategy"),
                    "GKE partitions a node pool's GPUs into one MIG profile (allowed: single with install: managed)",
                )
            if sharing.mps:
                add(
                    (*base, "mps"),
                    "GKE configures MPS on the node pool itself (allowed: timeSlicing or mig with install: managed)",
                )
