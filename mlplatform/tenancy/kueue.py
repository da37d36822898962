"""Kueue objects for the teams: one ResourceFlavor per GPU pool (plus `default` for CPU and
memory), one ClusterQueue per team holding its quota as nominal quota, one LocalQueue in each
team namespace. Pure functions of the config and the GPU layer's published capacity."""

from __future__ import annotations

from typing import Any

from mlplatform.config.model import NodePool, Team
from mlplatform.gpu.capacity import PoolGpuResources

API = "kueue.x-k8s.io/v1beta2"
DEFAULT_FLAVOR = "default"
LOCAL_QUEUE = "default"


def gpu_groups(pools: list[NodePool], capacity: dict[str, PoolGpuResources]) -> list[tuple[list[str], list[str]]]:
    """Kueue lets a resource and a flavor belong to one resource group only: pools that offer a
    common GPU resource share a group. Returns (covered resources, flavors) per group."""
    gpu_pools = [p.name for p in pools if p.name in capacity and capacity[p.name].per_node]
    parent = {p: p for p in gpu_pools}

    def find(p: str) -> str:
        while parent[p] != p:
            p = parent[p]
        return p

    owner: dict[str, str] = {}
    for pool in gpu_pools:
        for resource in capacity[pool].per_node:
            if resource in owner:
                parent[find(pool)] = find(owner[resource])
            else:
                owner[resource] = pool
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for pool in gpu_pools:
        resources, flavors = groups.setdefault(find(pool), ([], []))
        flavors.append(pool)
        for resource in capacity[pool].per_node:
            if resource not in resources:
                resources.append(resource)
    return list(groups.values())


def resource_flavors(
    pools: list[NodePool],
    capacity: dict[str, PoolGpuResources],
    node_selectors: dict[str, dict[str, str]],
    labels: dict[str, str],
) -> list[dict[str, Any]]:
    """`node_selectors`: the labels that select each GPU pool's nodes (the GPU layer's)."""
    flavors = [
        {
            "apiVersion": API,
            "kind": "ResourceFlavor",
            "metadata": {"name": DEFAULT_FLAVOR, "labels": labels},
            "spec": {},
        }
    ]
    for pool in pools:
        if pool.name not in capacity or not capacity[pool.name].per_node:
            continue
        spec: dict[str, Any] = {"nodeLabels": dict(node_selectors[pool.name])}
        if pool.taints:
            # Admitted workloads get the tolerations that let them onto the pool's nodes.
            spec["tolerations"] = [
                {
                    k: v
                    for k, v in (("key", t.key), ("operator", "Equal"), ("value", t.value), ("effect", t.effect))
                    if v is not None
                }
                if t.value is not None
                else {"key": t.key, "operator": "Exists", "effect": t.effect}
                for t in pool.taints
            ]
        flavors.append(
            {
                "apiVersion": API,
                "kind": "ResourceFlavor",
                "metadata": {"name": pool.name, "labels": labels},
                "spec": spec,
            }
        )
    return flavors


def cluster_queue(
    team: Team,
    namespace: str,
    groups: list[tuple[list[str], list[str]]],
    capacity: dict[str, PoolGpuResources],
    cohort: str | None,
    labels: dict[str, str],
) -> dict[str, Any]:
    resource_groups: list[dict[str, Any]] = [
        {
            "coveredResources": ["cpu", "memory"],
            "flavors": [
                {
                    "name": DEFAULT_FLAVOR,
                    "resources": [
                        {"name": "cpu", "nominalQuota": str(team.quota.cpu)},
                        {"name": "memory", "nominalQuota": str(team.quota.memory)},
                    ],
                }
            ],
        }
    ]
    for resources, flavors in groups:
        # The team's share of each resource fills the pools offering it in config order.
        remaining = {r: team.quota.gpus.get(r, 0) for r in resources}
        flavor_specs = []
        for flavor in flavors:
            offered = capacity[flavor].total
            entries = []
            for resource in resources:
                share = min(remaining[resource], offered.get(resource, 0))
                remaining[resource] -= share
                entries.append({"name": resource, "nominalQuota": share})
            flavor_specs.append({"name": flavor, "resources": entries})
        resource_groups.append({"coveredResources": resources, "flavors": flavor_specs})
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": resource_groups,
    }
    if cohort:
        spec["cohortName"] = cohort
        spec["preemption"] = {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"}
    return {
        "apiVersion": API,
        "kind": "ClusterQueue",
        "metadata": {"name": f"team-{team.name}", "labels": labels},
        "spec": spec,
    }


def local_queue(team: Team, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE, "namespace": namespace, "labels": labels},
        "spec": {"clusterQueue": f"team-{team.name}"},
    }
