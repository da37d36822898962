"""Config files of the GPU stack, generated from the node pools.

- device plugin / GPU feature discovery: one named config per GPU pool (`version: v1`),
  mounted into that pool's own DaemonSets (the GPU operator takes the pools' one config as
  its default);
- MIG: a mig-parted file (`version: v1`, `mig-configs`) with one layout per MIG pool, applied
  by the pool's MIG manager (on the operator path, named by the nodes' nvidia.com/mig.config).
"""

from __future__ import annotations

from typing import Any

from mlplatform.config.model import NodePool
from mlplatform.gpu.capacity import GPU_RESOURCE, MIG_RESOURCE_PREFIX, mig_layout_name, mig_strategy

DEVICE_PLUGIN_CONFIGMAP = "nvidia-device-plugin-configs"
MIG_PARTED_CONFIGMAP = "mlplatform-mig-parted-config"
MIG_DISABLED_LAYOUT = "all-disabled"


def _shareable_resources(pool: NodePool) -> list[str]:
    """The resource names sharing replicates: whole GPUs, or each MIG profile under mixed."""
    assert pool.gpu is not None
    mig = pool.gpu.sharing.mig
    if mig is None or mig.strategy == "single":
        return [GPU_RESOURCE]
    return [f"{MIG_RESOURCE_PREFIX}{profile}" for profile in mig.devices]


def device_plugin_config(pool: NodePool) -> dict[str, Any]:
    assert pool.gpu is not None
    sharing = pool.gpu.sharing
    config: dict[str, Any] = {
        "version": "v1",
        "flags": {"migStrategy": mig_strategy(pool.gpu), "failOnInitError": True},
    }
    if sharing.time_slicing:
        ts = sharing.time_slicing
        config["sharing"] = {
            "timeSlicing": {
                "renameByDefault": ts.rename_by_default,
                "failRequestsGreaterThanOne": ts.fail_requests_greater_than_one,
                "resources": [{"name": name, "replicas": ts.replicas} for name in _shareable_resources(pool)],
            }
        }
    elif sharing.mps:
        config["sharing"] = {
            "mps": {
                "renameByDefault": sharing.mps.rename_by_default,
                "resources": [{"name": name, "replicas": sharing.mps.replicas} for name in _shareable_resources(pool)],
            }
        }
    return config


def mig_layout(pool: NodePool) -> list[dict[str, Any]] | None:
    """The pool's mig-parted layout: every GPU of a node partitioned alike, or None."""
    if not (pool.gpu and pool.gpu.sharing.mig):
        return None
    return [{"devices": "all", "mig-enabled": True, "mig-devices": dict(pool.gpu.sharing.mig.devices)}]


def mig_parted_config(pools: list[NodePool]) -> dict[str, Any] | None:
    layouts: dict[str, Any] = {}
    for pool in pools:
        layout = mig_layout(pool)
        if layout is not None:
            layouts[mig_layout_name(pool)] = layout
    if not layouts:
        return None
    # The MIG manager falls back to this layout on nodes without a nvidia.com/mig.config label.
    return {
        "version": "v1",
        "mig-configs": {MIG_DISABLED_LAYOUT: [{"devices": "all", "mig-enabled": False}], **layouts},
    }
