"""Kubeflow's multi-user layer: every team a Profile (the Profile controller and KFAM), the
central dashboard, the Jupyter and volumes web apps, PodDefaults, and the kubeflow-admin/edit/
view roles profile namespaces bind.

The team namespaces stay the tenancy module's: it writes them with the Profile's owner and the
labels the controller would add (tenancy/profiles.py), so the controller adopts each as it is
and adds only what is its own (default-editor/viewer accounts, the owner's RoleBinding, the
owner's Istio AuthorizationPolicy). The Profiles carry no resourceQuotaSpec: quotas are the
tenancy module's, from the GPU layer's resource names.

The UIs are reached only through the mesh's gateway, where the identity module signs users in
and sets the user header the apps read; their AuthorizationPolicies admit the ingress gateway
alone, as upstream's do, and KFAM answers only the dashboard.
"""

from __future__ import annotations

from typing import Any

import pulumi

from mlplatform.modules.base import ModuleContext, create_object
from mlplatform.modules.contracts import (
    IdentityOutputs,
    KserveOutputs,
    MeshOutputs,
    TenancyOutputs,
    WorkspacesOutputs,
)
from mlplatform.modules.services import (
    WORKLOAD_KINDS,
    ServiceInstall,
    ServiceModule,
    overlay_manifests,
    pod_spec,
    set_env,
)
from mlplatform.tenancy import network
from mlplatform.upstream import KUBEFLOW_NAMESPACE

MODULE = "workspaces"
# Upstream's apps as overlays/<app>/base builds them (profiles with the kubeflow-* roles).
PROFILES = "profiles"
DASHBOARD = "centraldashboard"
JUPYTER = "jupyter-web-app"
VOLUMES = "volumes-web-app"
PODDEFAULTS = "admission-webhook"
# Where each UI answers on the gateway (upstream's VirtualService prefixes).
UI_PATHS = {DASHBOARD: "/", JUPYTER: "/jupyter/", VOLUMES: "/volumes/"}
# The pods and ports behind each UI (upstream's Deployments), and KFAM's.
UI_PODS = {
    DASHBOARD: ({"app": "centraldashboard"}, (8082,)),
    JUPYTER: ({"app": "jupyter-web-app"}, (5000,)),
    VOLUMES: ({"app": "volumes-web-app"}, (5000,)),
}
KFAM_PODS = ({"kustomize.component": "profiles"}, (8081,))
# Upstream names the ingress gateway's identity in istio-system; ours runs where the mesh says.
_UPSTREAM_MESH_PRINCIPAL = "cluster.local/ns/istio-system/"
PROFILE_API_VERSION = "kubeflow.org/v1"


def profile(name: str, owner: str, labels: dict[str, str]) -> dict[str, Any]:
    """A team's Profile: its namespace (tenancy's) and owner. No resourceQuotaSpec, so the
    controller writes no quota of its own beside the team's."""
    return {
        "apiVersion": PROFILE_API_VERSION,
        "kind": "Profile",
        "metadata": {"name": name, "labels": labels},
        # The apiGroup as the API server defaults it on the owner's RoleBinding: the controller
        # compares that binding's subjects with this one and rewrites it wherever they differ.
        "spec": {"owner": {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner}},
    }


def ingress_principal(mesh: MeshOutputs, upstream: str) -> str:
    """Upstream's ingress gateway identity, in the mesh's namespace."""
    if upstream.startswith(_UPSTREAM_MESH_PRINCIPAL):
        return f"cluster.local/ns/{mesh.namespace}/" + upstream[len(_UPSTREAM_MESH_PRINCIPAL) :]
    return upstream


def on_mesh(manifests: list[dict[str, Any]], mesh: MeshOutputs) -> None:
    """Upstream's Istio objects (changed in place) bound to our mesh: VirtualServices on its
    gateway, AuthorizationPolicies naming its ingress gateway."""
    for manifest in manifests:
        spec = manifest.get("spec") or {}
        if manifest["kind"] == "VirtualService":
            spec["gateways"] = [mesh.gateway]
        elif manifest["kind"] == "AuthorizationPolicy":
            for rule in spec.get("rules") or []:
                for source in rule.get("from") or []:
                    principals = source.get("source", {}).get("principals")
                    if principals:
                        source["source"]["principals"] = [ingress_principal(mesh, p) for p in principals]


def with_identity(manifests: list[dict[str, Any]], identity: IdentityOutputs) -> None:
    """Every container of these workloads that reads the signed-in user's header (USERID_HEADER)
    takes it and its prefix from the identity module; upstream's parameter ConfigMaps say the same."""
    values = {"USERID_HEADER": identity.user_header, "USERID_PREFIX": identity.user_prefix}
    for manifest in manifests:
        if manifest["kind"] == "ConfigMap":
            data = manifest.get("data") or {}
            for key in list(data):
                for suffix, value in values.items():
                    if key == suffix or key.endswith(f"_{suffix}"):
                        data[key] = value
        spec = pod_spec(manifest) if manifest["kind"] in WORKLOAD_KINDS else None
        for each in (spec or {}).get("containers", []):
            reads = {e["name"] for e in each.get("env") or []} | {
                arg.strip("$()") for arg in each.get("command") or [] if arg.startswith("$(")
            }
            if "USERID_HEADER" in reads:
                # Explicit env wins over envFrom, and a changed value rolls the pods.
                set_env(each, values)


def _without(manifests: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    kept = [m for m in manifests if not (m["kind"] == kind and m["metadata"]["name"] == name)]
    if len(kept) == len(manifests):
        raise KeyError(f"{kind} {name} is not in the upstream build")
    return kept


class Workspaces(ServiceModule):
    """Profiles + KFAM, the central dashboard, the Jupyter and volumes web apps, PodDefaults."""

    provides = WorkspacesOutputs
    needs = (TenancyOutputs, MeshOutputs, IdentityOutputs)
    # The PodDefaults webhook's certificate comes from cert-manager, which KServe installs.
    uses = (KserveOutputs,)

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:workspaces:Workspaces", name, None, opts)
        tenancy = ctx.require(TenancyOutputs)
        mesh = ctx.require(MeshOutputs)
        identity = ctx.require(IdentityOutputs)
        kserve = ctx.input(KserveOutputs)
        if KUBEFLOW_NAMESPACE not in ctx.namespaces:
            ctx.shared_namespace(KUBEFLOW_NAMESPACE, {})
        # Pods with sidecars come after istiod injects them; Istio objects after their CRDs.
        mesh_ready = list(mesh.ready)

        manifests = overlay_manifests(ctx, PROFILES)
        # KFAM is the dashboard's back end: no route of its own on the gateway (upstream's
        # AuthorizationPolicy admits only the dashboard there anyway).
        manifests = _without(manifests, "VirtualService", "profiles-kfam")
        for manifest in manifests:
            data = manifest.get("data") or {}
            if manifest["kind"] == "ConfigMap" and "ISTIO_INGRESS_GATEWAY_PRINCIPAL" in data:
                # The controller writes it into each owner's ns-owner-access-istio policy.
                data["ISTIO_INGRESS_GATEWAY_PRINCIPAL"] = ingress_principal(
                    mesh, data["ISTIO_INGRESS_GATEWAY_PRINCIPAL"]
                )
        with_identity(manifests, identity)
        on_mesh(manifests, mesh)
        profiles = ServiceInstall(
            self,
            ctx,
            manifests,
            module_label=MODULE,
            after=mesh_ready,
            after_for_custom_resources=mesh_ready,
        )

        ui_ready: list[pulumi.Resource] = []
        for app in (DASHBOARD, JUPYTER, VOLUMES):
            manifests = overlay_manifests(ctx, app)
            with_identity(manifests, identity)
            on_mesh(manifests, mesh)
            install = ServiceInstall(
                self,
                ctx,
                manifests,
                module_label=MODULE,
                after=mesh_ready,
                after_for_custom_resources=mesh_ready,
                crd_release=f"{MODULE}-{app}",
            )
            ui_ready += install.ready

        poddefaults = self._poddefaults(ctx, kserve)

        namespace = [ctx.namespaces[KUBEFLOW_NAMESPACE]]
        gateway = network.namespace_peer(mesh.namespace, mesh.ingress_selector)
        for app, (pods, ports) in UI_PODS.items():
            self._guard(ctx, MODULE, f"mlplatform-{app}", pods, [gateway], ports, namespace)
        dashboard = network.namespace_peer(KUBEFLOW_NAMESPACE, UI_PODS[DASHBOARD][0])
        self._guard(ctx, MODULE, "mlplatform-kfam", KFAM_PODS[0], [dashboard], KFAM_PODS[1], namespace)

        # People write PodDefaults in their namespace; the webhook applies them to their pods.
        self._team_rights(ctx, MODULE, {"kubeflow.org": ["poddefaults"]})

        labels = {**ctx.labels, "mlplatform.io/module": MODULE}
        profile_objects = []
        for team in ctx.resolved.config.modules.tenancy.teams:
            namespace_name = tenancy.namespaces[team.name]
            assert team.owner, "validation requires an owner for every team where workspaces is on"
            profile_objects.append(
                create_object(
                    profile(namespace_name, team.owner, {**labels, "mlplatform.io/team": team.name}),
                    # The namespace first, with its owner annotation: the controller adopts it
                    # rather than refusing a namespace it does not own.
                    ctx.child_opts(self, depends_on=[*profiles.ready, tenancy.namespace_resources[team.name]]),
                )
            )

        self._finish(
            (KUBEFLOW_NAMESPACE,),
            {app: path for app, path in UI_PATHS.items()},
            [*profiles.ready, *ui_ready, *poddefaults, *profile_objects],
        )

    def _poddefaults(self, ctx: ModuleContext, kserve: KserveOutputs | None) -> list[pulumi.Resource]:
        """The PodDefault CRD and webhook: its certificate first (the Deployment mounts the
        Secret cert-manager writes), then the Deployment, then the webhook configuration."""
        manifests = overlay_manifests(ctx, PODDEFAULTS)
        for manifest in manifests:
            if manifest["kind"] == "MutatingWebhookConfiguration":
                for webhook in manifest.get("webhooks") or []:
                    # cert-manager's CA injector fills caBundle (inject-ca-from): an empty one
                    # of ours would take the field back on every apply.
                    webhook.get("clientConfig", {}).pop("caBundle", None)
        certificates = [m for m in manifests if m["apiVersion"].startswith("cert-manager.io/")]
        rest = [m for m in manifests if not m["apiVersion"].startswith("cert-manager.io/")]
        issued = ServiceInstall(
            self,
            ctx,
            certificates,
            module_label=MODULE,
            after_for_custom_resources=list(kserve.ready) if kserve is not None else [],
            crd_release=f"{MODULE}-certificates",
        )
        webhook = ServiceInstall(
            self, ctx, rest, module_label=MODULE, after=issued.custom_resources, crd_release=f"{MODULE}-poddefaults"
        )
        # PodDefaults apply to pods only once the webhook configuration is registered.
        return [*webhook.ready, *webhook.webhooks]
