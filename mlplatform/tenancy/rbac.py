"""What a team's groups may do in the team's namespace, and nothing outside it.

Three ClusterRoles, `mlplatform-team-view|edit|admin`, each bound in a team namespace only
(RoleBindings, never ClusterRoleBindings), are aggregated from smaller ClusterRoles that carry
the label `mlplatform.io/aggregate-to-team-<level>`: the core rights below, written by the
tenancy module, and each ML module's rights on its own resources, written by that module (a
module that is off adds nothing). Unlike Kubernetes' `edit`/`admin`, none of them may change
the team's ResourceQuotas, LimitRanges or NetworkPolicies; and a quota keeps the priority
classes reserved for the cluster's own components out of team namespaces.
"""

from __future__ import annotations

from typing import Any

LEVELS = ("view", "edit", "admin")
# A role that aggregates into one level aggregates into every level above it.
_INCLUDED_IN = {"view": LEVELS, "edit": ("edit", "admin"), "admin": ("admin",)}

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]
# Kubernetes' critical classes: only its own components may preempt everything else.
RESERVED_PRIORITY_CLASSES = ("system-node-critical", "system-cluster-critical")


def team_role_name(level: str) -> str:
    return f"mlplatform-team-{level}"


def aggregate_label(level: str) -> str:
    return f"mlplatform.io/aggregate-to-team-{level}"


def rights_role(name: str, level: str, rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    """A ClusterRole of rights that the team roles of `level` and above aggregate."""
    aggregates = {aggregate_label(above): "true" for above in _INCLUDED_IN[level]}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**labels, **aggregates}},
        "rules": rules,
    }


def module_rights(
    module: str,
    writable: dict[str, list[str]],
    labels: dict[str, str],
    read_only: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """A module's rights on its own namespaced resources (API group -> resources): viewers
    read them all, editors and admins also write the `writable` ones (what a person makes;
    what the controller makes from it stays read-only)."""
    readable: dict[str, list[str]] = {group: list(names) for group, names in writable.items()}
    for group, names in (read_only or {}).items():
        readable.setdefault(group, []).extend(names)
    rules = [{"apiGroups": [group], "resources": names, "verbs": READ} for group, names in readable.items()]
    write = [{"apiGroups": [group], "resources": names, "verbs": WRITE} for group, names in writable.items()]
    return [
        rights_role(f"mlplatform-team-{module}-view", "view", rules, labels),
        rights_role(f"mlplatform-team-{module}-edit", "edit", write, labels),
    ]


def core_rights(labels: dict[str, str]) -> list[dict[str, Any]]:
    view = [
        {
            "apiGroups": [""],
            "resources": [
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "events",
                "serviceaccounts",
                # The team's limits, to read only.
                "resourcequotas",
                "limitranges",
            ],
            "verbs": READ,
        },
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "replicasets"], "verbs": READ},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": READ},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": READ},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies", "ingresses"], "verbs": READ},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": READ},
        # Kueue's queue the team submits to, and its admitted workloads.
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues", "workloads"], "verbs": READ},
    ]
    edit = [
        {
            "apiGroups": [""],
            "resources": ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims"],
            "verbs": WRITE,
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
        {"apiGroups": [""], "resources": ["pods/exec", "pods/portforward", "pods/attach"], "verbs": ["create", "get"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": WRITE},
        {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["update", "patch"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": WRITE},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": WRITE},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": WRITE},
    ]
    # Admins also share the namespace: RBAC lets them grant only rights they hold.
    admin = [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": READ + WRITE}
    ]
    return [
        rights_role("mlplatform-team-core-view", "view", view, labels),
        rights_role("mlplatform-team-core-edit", "edit", edit, labels),
        rights_role("mlplatform-team-core-admin", "admin", admin, labels),
    ]


def team_roles(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The three roles teams are bound to. Their rules are the controller manager's to fill in
    from every ClusterRole that aggregates into them: we write none, so no apply of ours
    fights it over the field."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": team_role_name(level), "labels": labels},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {aggregate_label(level): "true"}}]},
        }
        for level in LEVELS
    ]


def reserved_priority_quota(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """No pod of the team may take a priority class reserved for the cluster's components."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "team-reserved-priorities", "namespace": namespace, "labels": labels},
        "spec": {
            "hard": {"pods": "0"},
            "scopeSelector": {
                "matchExpressions": [
                    {"scopeName": "PriorityClass", "operator": "In", "values": list(RESERVED_PRIORITY_CLASSES)}
                ]
            },
        },
    }
