"""Which nodes belong to a node pool, as the cluster sees them.

The GPU layer runs one device plugin (and feature discovery, MIG manager) per GPU pool, each
with that pool's config, and Kueue's flavors pin admitted workloads to a pool: both select
the pool's nodes by labels the nodes carry from the moment they join. Those are the labels
the provider puts on every node of a pool (`eks.amazonaws.com/nodegroup=<pool>` and the
like) or, where the provider sets none, the labels the stack declares for the pool. Nothing
has to label a node after it joins, so a pool that scales up gets GPU-ready nodes by itself.
"""

from __future__ import annotations

from mlplatform.config.model import NodePool

# The GPU layer's namespace per install path, where modules.gpu.namespace does not name one.
DEFAULT_NAMESPACES = {
    "device-plugin": "nvidia-device-plugin",
    "operator": "nvidia-gpu-operator",
    "managed": "gpu-system",
}


def pool_selector(pool: NodePool, node_pool_label: str | None) -> dict[str, str]:
    """The labels that select exactly the pool's nodes (empty: nothing identifies them)."""
    if node_pool_label:
        return {node_pool_label: pool.name}
    return dict(pool.labels)


def known_labels(pool: NodePool, node_pool_label: str | None) -> dict[str, str]:
    """Every label the stack knows the pool's nodes carry."""
    return {**({node_pool_label: pool.name} if node_pool_label else {}), **pool.labels}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())
