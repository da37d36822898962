"""Tenancy rules: teams are unique, quotas name real storage classes and GPU resources,
and the teams' GPU quotas do not promise more than the pools offer (times the bound)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic.alias_generators import to_camel

from mlplatform.config.model import PlatformConfig
from mlplatform.gpu.capacity import pool_resources
from mlplatform.tenancy.network import metadata_overlap

AddProblem = Callable[[tuple[Any, ...], str], None]


def offered_gpu_resources(config: PlatformConfig) -> dict[str, int]:
    """Every GPU resource the node pools advertise, with the cluster-wide total."""
    totals: dict[str, int] = {}
    for pool in config.cluster.node_pools:
        for name, count in pool_resources(pool).total.items():
            totals[name] = totals.get(name, 0) + count
    return totals


def tenancy_problems(config: PlatformConfig, add: AddProblem) -> None:
    tenancy = config.modules.tenancy
    if not tenancy.enabled:
        return
    for field in ("kube_api_cidrs", "allowed_cidrs"):
        for index, cidr in enumerate(getattr(tenancy.egress, field)):
            metadata = metadata_overlap(cidr)
            if metadata:
                add(
                    ("modules", "tenancy", "egress", to_camel(field), index),
                    f"{cidr!r} lies inside the cloud metadata address {metadata}, which team pods never reach "
                    "(allowed: ranges that are not metadata addresses; those inside larger ranges are cut out)",
                )
    base = ("modules", "tenancy", "teams")
    offered = offered_gpu_resources(config)
    seen: dict[str, int] = {}
    asked: dict[str, dict[str, int]] = {}
    for index, team in enumerate(tenancy.teams):
        if team.name in seen:
            add(
                (*base, index, "name"),
                f"duplicate team {team.name!r} (also at teams[{seen[team.name]}]; allowed: unique names)",
            )
        seen.setdefault(team.name, index)
        namespace = tenancy.team_namespace(team.name)
        if len(namespace) > 63:
            add(
                (*base, index, "name"),
                f"namespace {namespace!r} would exceed 63 characters (allowed: a shorter name or prefix)",
            )
        for storage_class in team.quota.storage:
            if storage_class not in config.cluster.storage.classes:
                add(
                    (*base, index, "quota", "storage", storage_class),
                    f"{storage_class!r} is not a storage class of the cluster (allowed: {', '.join(config.cluster.storage.classes)})",
                )
        for resource, count in team.quota.gpus.items():
            where = (*base, index, "quota", "gpus", resource)
            if resource not in offered:
                allowed = ", ".join(sorted(offered)) or "none: no node pool has GPUs"
                add(where, f"{resource!r} is not a GPU resource any node pool offers (allowed: {allowed})")
                continue
            asked.setdefault(resource, {})[team.name] = count
    if asked and not config.modules.gpu.enabled:
        add(
            ("modules", "gpu", "enabled"),
            "team quotas name GPU resources, which the gpu module publishes (allowed: true)",
        )
    bound = Decimal(str(tenancy.gpu_oversubscription))
    for resource, per_team in sorted(asked.items()):
        total = sum(per_team.values())
        limit = int(offered[resource] * bound)
        if total > limit:
            teams = ", ".join(f"{team} {count}" for team, count in per_team.items())
            add(
                base,
                f"{resource}: teams ask for {total} ({teams}) but the pools offer {offered[resource]} "
                f"x oversubscription {tenancy.gpu_oversubscription} = {limit} (allowed: at most {limit} in total)",
            )
