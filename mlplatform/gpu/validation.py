"""GPU rules a config must satisfy: what the hardware and the install path can honour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplatform.config.model import PlatformConfig
from mlplatform.gpu.capacity import MIG_CONFIG_LABEL, mig_layout_name
from mlplatform.gpu.facts import MIG_GEOMETRY, mig_capable, mig_problems
from mlplatform.gpu.plugin_config import device_plugin_config
from mlplatform.gpu.pools import known_labels, pool_selector, selects

AddProblem = Callable[[tuple[Any, ...], str], None]


def gpu_problems(
    config: PlatformConfig, cloud_provider: str | None, node_pool_label: str | None, add: AddProblem
) -> None:
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
    _pool_selection_problems(config, node_pool_label, gpu_pools, add)
    if settings.install == "operator":
        _one_operator_config_problems(gpu_pools, add)
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


def _pool_selection_problems(
    config: PlatformConfig, node_pool_label: str | None, gpu_pools: list[tuple[int, Any]], add: AddProblem
) -> None:
    """Each GPU pool's DaemonSets find its nodes by labels they carry when they join: there
    must be such labels, and they must not also select another pool's nodes."""
    pools = config.cluster.node_pools
    for index, pool in gpu_pools:
        selector = pool_selector(pool, node_pool_label)
        if not selector:
            add(
                ("cluster", "nodePools", index, "labels"),
                f"GPU pool {pool.name!r} declares no label its nodes carry, and this environment's nodes have no "
                "node-pool label the GPU layer could find them by (allowed: labels set where the nodes are made, "
                f"e.g. {{mlplatform.io/node-pool: {pool.name}}} through the kubelet's --node-labels or the "
                "MachineSet's spec.template.spec.metadata.labels)",
            )
            continue
        for other_index, other in enumerate(pools):
            if other_index != index and selects(selector, known_labels(other, node_pool_label)):
                listed = ", ".join(f"{k}={v}" for k, v in selector.items())
                add(
                    ("cluster", "nodePools", index, "labels"),
                    f"GPU pool {pool.name!r} is found by {listed}, which pool {other.name!r} carries too "
                    "(allowed: labels that only this pool's nodes carry)",
                )


def _one_operator_config_problems(gpu_pools: list[tuple[int, Any]], add: AddProblem) -> None:
    """The GPU operator gives a node the device plugin config and MIG layout its labels name,
    or the ClusterPolicy's defaults. The platform sets the device plugin default (so every
    GPU pool must want the same config); the MIG default can only be `all-disabled`, so a MIG
    pool's nodes must join with the label naming their layout."""
    for index, pool in gpu_pools:
        if pool.gpu.sharing.mig is None:
            continue
        layout = mig_layout_name(pool)
        if pool.labels.get(MIG_CONFIG_LABEL) != layout:
            add(
                ("cluster", "nodePools", index, "labels"),
                f"the GPU operator's MIG manager partitions a node as its label {MIG_CONFIG_LABEL} says, and "
                f"pool {pool.name!r} does not declare it (allowed: {{{MIG_CONFIG_LABEL}: {layout}}} among the labels "
                "its nodes join with, e.g. the MachineSet's spec.template.spec.metadata.labels)",
            )
    if len(gpu_pools) < 2:
        return
    wanted = {pool.name: device_plugin_config(pool) for _, pool in gpu_pools}
    first_name, first = next(iter(wanted.items()))
    differing = [name for name, config in wanted.items() if config != first]
    if differing:
        add(
            ("modules", "gpu", "install"),
            f"the GPU operator gives every GPU node one device plugin config, and pools "
            f"{', '.join(differing)} share their GPUs unlike {first_name} (allowed: the same gpu.sharing on every "
            "GPU pool, or install: device-plugin, which runs one device plugin per pool)",
        )
