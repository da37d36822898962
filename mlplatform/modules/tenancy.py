"""Team tenancy: one namespace per team with a ResourceQuota (GPU resources by the names
the GPU layer publishes), LimitRange defaults, RBAC for the team's groups, NetworkPolicies
that deny ingress and egress but what the platform allows (tenancy/network.py), and the
platform's PriorityClasses. Where workspaces is on, each team namespace is also written as
Kubeflow's Profile controller would leave it (tenancy/profiles.py), so that it adopts it as is."""

from __future__ import annotations

from typing import Any

import pulumi

from mlplatform.config.model import Team
from mlplatform.modules.base import Module, ModuleContext, create_object
from mlplatform.modules.contracts import GpuOutputs, MonitoringOutputs, TenancyOutputs
from mlplatform.modules.crd_bundle import install_crds
from mlplatform.modules.placement import TEAM_LABEL
from mlplatform.tenancy import kueue, network, profiles, rbac
from mlplatform.upstream import kustomize_build

# Interactive work (notebooks) preempts batch; serving preempts both.
PRIORITY_CLASSES = {
    "mlplatform-serving": (100000, "Model servers: evicted last."),
    "mlplatform-interactive": (50000, "Notebooks and other interactive sessions."),
    "mlplatform-batch": (10000, "Training, tuning and pipeline steps: preemptible."),
}
# Platform namespaces (by our role label) whose pods may reach team workloads.
PLATFORM_ROLES = ("system", "gpu-system", "monitoring", "pipelines", "serving")


def quota_hard(team: Team, gpu_names: tuple[str, ...]) -> dict[str, str]:
    quota = team.quota
    hard = {
        "requests.cpu": str(quota.cpu),
        "requests.memory": str(quota.memory),
        # Memory cannot be throttled, so its limit is capped too.
        "limits.memory": str(quota.memory),
        "pods": str(quota.pods),
        "persistentvolumeclaims": str(quota.persistent_volume_claims),
    }
    for storage_class, amount in quota.storage.items():
        hard[f"{storage_class}.storageclass.storage.k8s.io/requests.storage"] = str(amount)
    unknown = set(quota.gpus) - set(gpu_names)
    if unknown:
        raise ValueError(f"team {team.name}: {', '.join(sorted(unknown))} not published by the GPU layer")
    # Every GPU resource the cluster offers is listed, at 0 where the team has no share: a
    # quota constrains only what it names. Extended resources are quota'd on requests.
    for resource in gpu_names:
        hard[f"requests.{resource}"] = str(quota.gpus.get(resource, 0))
    return hard


class Tenancy(Module):
    outputs: TenancyOutputs
    provides = TenancyOutputs
    uses = (GpuOutputs, MonitoringOutputs)

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplatform:tenancy:Tenancy", name, None, opts)
        self._ctx = ctx
        settings = ctx.resolved.config.modules.tenancy
        gpu = ctx.input(GpuOutputs)
        gpu_names = gpu.resource_names if gpu is not None else ()
        self._labels = {**ctx.labels, "mlplatform.io/module": "tenancy"}
        # The labels the Profile controller would add to a team namespace (workspaces on).
        self._profile_labels = (
            profiles.controller_labels(ctx.resolved) if ctx.resolved.config.modules.workspaces.enabled else None
        )

        for class_name, (value, description) in PRIORITY_CLASSES.items():
            create_object(
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": class_name, "labels": self._labels},
                    "value": value,
                    "globalDefault": False,
                    "preemptionPolicy": "PreemptLowerPriority",
                    "description": description,
                },
                ctx.child_opts(self),
            )
        # The roles teams are bound to, and the core rights they aggregate (ML modules add theirs).
        for role in [*rbac.team_roles(self._labels), *rbac.core_rights(self._labels)]:
            create_object(role, ctx.child_opts(self))
        namespaces = {}
        self._team_namespaces: dict[str, pulumi.Resource] = {}
        for team in settings.teams:
            namespaces[team.name] = self._team(team, settings.team_namespace(team.name), gpu_names)
        if settings.queueing.backend == "kueue":
            self._kueue(settings, gpu)
        self.outputs = TenancyOutputs(
            namespaces=namespaces,
            priority_classes=tuple(PRIORITY_CLASSES),
            namespace_resources=dict(self._team_namespaces),
        )
        self.register_outputs({"namespaces": namespaces})

    def _team(self, team: Team, namespace: str, gpu_names: tuple[str, ...]) -> str:
        ctx = self._ctx
        profile = ctx.resolved.profile
        labels = {**self._labels, TEAM_LABEL: team.name}
        ns_labels = {
            **labels,
            **profile.namespace_labels,
            "mlplatform.io/role": "team",
            # Policies let GPU requests only into namespaces marked for them.
            "mlplatform.io/gpu": "true" if team.quota.gpus else "false",
            # Katib's webhook adds its metrics collector to trials only in namespaces so marked.
            "katib.kubeflow.org/metrics-collector-injection": "enabled",
        }
        annotations: dict[str, str] = {}
        if profile.route_api:
            # OpenShift shows namespaces as projects; user workload monitoring scrapes them.
            ns_labels["openshift.io/user-monitoring"] = "true"
            annotations["openshift.io/display-name"] = team.name
            if team.description:
                annotations["openshift.io/description"] = team.description
        if self._profile_labels is not None:
            # The team's Profile adopts this namespace only under its owner; our Pod Security
            # level stays (upstream's default is baseline), the rest is as upstream labels it.
            ns_labels = profiles.with_controller_labels(ns_labels, self._profile_labels, profile.namespace_labels)
            if team.owner:
                annotations[profiles.OWNER_ANNOTATION] = team.owner
        ns = create_object(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": ns_labels,
                    **({"annotations": annotations} if annotations else {}),
                },
            },
            ctx.child_opts(self),
        )
        self._team_namespaces[team.name] = ns
        opts = ctx.child_opts(self, depends_on=[ns])

        def meta(name: str) -> dict[str, Any]:
            return {"name": name, "namespace": namespace, "labels": labels}

        create_object(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": meta("team-quota"),
                "spec": {"hard": quota_hard(team, gpu_names)},
            },
            opts,
        )
        defaults = ctx.resolved.config.modules.tenancy.container_defaults
        create_object(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": meta("team-defaults"),
                "spec": {
                    "limits": [
                        {
                            "type": "Container",
                            "defaultRequest": {
                                "cpu": str(defaults.default_request_cpu),
                                "memory": str(defaults.default_request_memory),
                            },
                            "default": {
                                "cpu": str(defaults.default_limit_cpu),
                                "memory": str(defaults.default_limit_memory),
                            },
                        }
                    ]
                },
            },
            opts,
        )
        for role in ("admin", "edit", "view"):
            groups = getattr(team.groups, role)
            if not groups:
                continue
            create_object(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": meta(f"team-{role}"),
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": rbac.team_role_name(role),
                    },
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups],
                },
                opts,
            )
        create_object(rbac.reserved_priority_quota(namespace, labels), opts)
        for manifest in self._network_policies(namespace, labels):
            create_object(manifest, opts)
        return namespace

    def _kueue(self, settings, gpu) -> None:
        """Kueue from its pinned upstream base, then the teams' flavors and queues. The queues
        wait for the controller (its CRDs and the Deployment serving its webhooks)."""
        ctx = self._ctx
        source = ctx.resolved.upstream("kueue")
        manifests = kueue_controller_manifests(
            kustomize_build(source, "default", ctx.resolved.mirror_path), self._labels
        )
        crds = [m for m in manifests if m["kind"] == "CustomResourceDefinition"]
        controller = [
            *install_crds(self, ctx, "kueue", crds),
            *(create_object(m, ctx.child_opts(self)) for m in manifests if m["kind"] != "CustomResourceDefinition"),
        ]
        pools = list(ctx.resolved.config.cluster.node_pools)
        capacity = gpu.pools if gpu is not None else {}
        selectors = gpu.node_selectors if gpu is not None else {}
        after_controller = ctx.child_opts(self, depends_on=controller)
        for flavor in kueue.resource_flavors(pools, capacity, selectors, self._labels):
            create_object(flavor, after_controller)
        groups = kueue.gpu_groups(pools, capacity)
        for team in settings.teams:
            namespace = settings.team_namespace(team.name)
            # Cluster-scoped but the team's: the label says whose (and which stack holds it).
            team_labels = {**self._labels, TEAM_LABEL: team.name}
            create_object(
                kueue.cluster_queue(team, namespace, groups, capacity, settings.queueing.cohort, team_labels),
                after_controller,
            )
            create_object(
                kueue.local_queue(team, namespace, self._labels),
                ctx.child_opts(self, depends_on=[*controller, self._team_namespaces[team.name]]),
            )

    def _network_policies(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        profile = self._ctx.resolved.profile
        policies = network.team_policies(
            namespace,
            labels,
            platform_roles=PLATFORM_ROLES,
            outside_namespaces=[*profile.ingress_namespaces, *profile.monitoring_namespaces],
            dns=profile.dns,
            egress=self._ctx.resolved.config.modules.tenancy.egress,
        )
        monitoring = self._ctx.input(MonitoringOutputs)
        if monitoring is not None:
            # Evaluation and drift jobs push their model's quality gauges.
            peer = network.namespace_peer(monitoring.namespace, monitoring.model_metrics_pod_labels)
            rules = [([peer], (monitoring.model_metrics_port,))]
            policies.append(network.allow_egress_to("allow-model-metrics", namespace, labels, rules))
        return policies


def kueue_controller_manifests(documents: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Upstream's objects, with our inventory labels added (nothing else changed)."""
    manifests = []
    for document in documents:
        metadata = document.setdefault("metadata", {})
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
        manifests.append(document)
    return manifests
