"""Installing an upstream service from its overlay, in an order that needs no retry loop.

Upstream's kustomize trees are applied by a loop that repeats until the API server stops
refusing objects whose CRDs or webhooks are not ready yet. Here each object gets Pulumi
dependencies instead, and Pulumi waits on them (CRDs Established, Deployments Available):

    namespaces, CRDs  ->  everything else  ->  webhook configurations (after the Deployments
    serving them)  ->  custom resources (after their CRDs, the webhooks and anything named
    in `after_for_custom_resources`, e.g. cert-manager for Certificates)
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import pulumi

from mlplatform.modules.base import Module, ModuleContext, create_object
from mlplatform.modules.contracts import ServiceOutputs
from mlplatform.modules.crd_bundle import install_crds
from mlplatform.overlays import build_overlay
from mlplatform.tenancy import network, rbac
from mlplatform.upstream import KUBEFLOW_NAMESPACE

# API groups the cluster serves itself (or the platform does, like OpenShift's Route): objects
# of these are never custom resources of the service being installed.
BUILT_IN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "policy",
        "autoscaling",
        "coordination.k8s.io",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "route.openshift.io",
    }
)
# Upstream namespaces the platform gives a role (mlplatform.io/role), which network policies
# select them by: Kubeflow Pipelines runs its steps in `kubeflow` (beside the Katib and notebook
# controllers), KServe's controller lives in `kserve`.
NAMESPACE_ROLES = {"kubeflow": "pipelines", "kserve": "serving"}
WEBHOOK_KINDS = frozenset({"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})
_FIXED_IDS = ("runAsUser", "runAsGroup", "fsGroup")


def api_group(manifest: dict[str, Any]) -> str:
    api_version = manifest["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def is_custom_resource(manifest: dict[str, Any]) -> bool:
    return api_group(manifest) not in BUILT_IN_GROUPS


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    if manifest["kind"] not in WORKLOAD_KINDS:
        return None
    return manifest.get("spec", {}).get("template", {}).get("spec")


# Custom resources that are pod templates in all but name: their containers become pods.
RUNTIME_KINDS = frozenset({"ClusterServingRuntime", "ServingRuntime"})


def without_fixed_ids(manifest: dict[str, Any]) -> dict[str, Any]:
    """The workload or serving runtime (changed in place) with no fixed UID/GID/fsGroup:
    OpenShift's restricted-v2 SCC assigns them from the namespace's range and refuses pods
    that ask for others."""
    spec = manifest.get("spec") if manifest["kind"] in RUNTIME_KINDS else pod_spec(manifest)
    if spec is None:
        return manifest
    contexts = [spec.get("securityContext")]
    contexts += [c.get("securityContext") for c in spec.get("containers", []) + spec.get("initContainers", [])]
    for context in contexts:
        # A container that runs as root on purpose (runAsNonRoot: false, a node agent) is admitted
        # by the privileged SCC only, which takes the ids it asks for: they stay.
        if context and context.get("runAsNonRoot") is not False:
            for key in _FIXED_IDS:
                context.pop(key, None)
    return manifest


def with_restricted_defaults(manifest: dict[str, Any]) -> dict[str, Any]:
    """The workload (changed in place) with the restricted Pod Security fields it leaves unset
    filled in as OpenShift's restricted-v2 SCC fills them at admission: written into the object,
    what runs is what the object says and Pod Security admission judges the same pod. Fields
    the manifest sets stay as they are."""
    spec = pod_spec(manifest)
    if spec is None:
        return manifest
    pod_context = spec.setdefault("securityContext", {})
    pod_context.setdefault("runAsNonRoot", True)
    pod_context.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for each in spec.get("containers", []) + spec.get("initContainers", []):
        context = each.setdefault("securityContext", {})
        context.setdefault("allowPrivilegeEscalation", False)
        capabilities = context.setdefault("capabilities", {})
        capabilities.setdefault("drop", ["ALL"])
    return manifest


def container(manifest: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    spec = pod_spec(manifest)
    if spec is None:
        raise KeyError(f"{manifest['kind']} {manifest['metadata']['name']} has no pod template")
    containers = spec["containers"]
    return next(c for c in containers if name is None or c["name"] == name) if name else containers[0]


def set_env(target: dict[str, Any], values: dict[str, Any]) -> None:
    """Set env vars on a container (value strings or valueFrom mappings), replacing same names."""
    env = [e for e in target.get("env", []) if e["name"] not in values]
    for name, value in values.items():
        env.append({"name": name, "valueFrom": value} if isinstance(value, dict) else {"name": name, "value": value})
    target["env"] = env


def find(manifests: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise KeyError(f"{kind} {name} is not in the upstream build")


def secret_marker(name: str) -> str:
    """What a secret value reads as where the engine has not decrypted it (render, tests)."""
    return f"<mlplatform:secrets.{name}>"


def secret_value(ctx: ModuleContext, name: str) -> pulumi.Output[str]:
    value = ctx.resolved.secrets.get(name)
    return pulumi.Output.secret(value if value is not None else secret_marker(name))


def sha256_marker(prefix: str, name: str) -> str:
    """What a value derived as sha256(prefix + secret) reads as where the secret is not
    decrypted: the export turns it into the secret tool's template of the same derivation."""
    return f"<mlplatform:sha256({prefix}{secret_marker(name)})>"


# A pod-template annotation digesting the values of the Secrets a workload consumes: a changed
# credential changes the template, so `pulumi up` rolls the pods that read it.
CREDENTIALS_CHECKSUM_ANNOTATION = "mlplatform.io/credentials-checksum"
# PBKDF2 rounds: the annotation is readable by whoever reads the workload, so a guessable
# password must be slow to test against it.
_CHECKSUM_ROUNDS = 100_000
# Kinds whose pods are rolled by a template change. A Job's template is immutable and a
# finished Job holds no credential: it reads the Secret when it next runs.
_ROLLED_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})


def consumed_secrets(spec: dict[str, Any]) -> set[str]:
    """Names of the Secrets a pod spec reads: env secretKeyRef, envFrom, volumes (projected too)."""
    names: set[str] = set()
    for each in spec.get("containers", []) + spec.get("initContainers", []):
        for env in each.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref.get("name"):
                names.add(ref["name"])
        for source in each.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name"):
                names.add(source["secretRef"]["name"])
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName"):
            names.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                names.add(source["secret"]["name"])
    return names


@functools.lru_cache(maxsize=256)
def credentials_digest(salt: str, payload: str) -> str:
    """A salted, slow digest of a JSON payload of credential values."""
    return hashlib.pbkdf2_hmac("sha256", payload.encode(), salt.encode(), _CHECKSUM_ROUNDS).hex()


def with_credentials_checksum(
    manifest: dict[str, Any], filled: Mapping[tuple[str, str], Mapping[str, Any]], stack: str
) -> dict[str, Any]:
    """The workload (changed in place) with CREDENTIALS_CHECKSUM_ANNOTATION on its pod template
    when it consumes Secrets we fill (`filled`: (namespace, name) -> {key: value or Output}).
    The digest is slow and salted, so it is left readable: marked secret it would make the
    whole pod spec secret, hiding it from previews, diffs and the policy pack."""
    if manifest["kind"] not in _ROLLED_KINDS:
        return manifest
    spec = pod_spec(manifest)
    if spec is None:
        return manifest
    namespace = manifest["metadata"].get("namespace", "")
    used = sorted(name for name in consumed_secrets(spec) if (namespace, name) in filled)
    if not used:
        return manifest
    values = {f"{name}/{key}": value for name in used for key, value in filled[(namespace, name)].items()}
    salt = f"{CREDENTIALS_CHECKSUM_ANNOTATION}:{stack}:{namespace}"
    digest = pulumi.Output.all(**values).apply(
        lambda resolved: credentials_digest(salt, json.dumps(resolved, sort_keys=True))
    )
    template_metadata = manifest["spec"]["template"].setdefault("metadata", {})
    template_metadata["annotations"] = {
        **(template_metadata.get("annotations") or {}),
        CREDENTIALS_CHECKSUM_ANNOTATION: pulumi.Output.unsecret(digest),
    }
    return manifest


class ServiceInstall:
    """Registers one overlay's objects as children of `owner`, in dependency order."""

    def __init__(
        self,
        owner: pulumi.ComponentResource,
        ctx: ModuleContext,
        manifests: Sequence[dict[str, Any]],
        *,
        module_label: str,
        after: Sequence[pulumi.Resource] = (),
        after_for_custom_resources: Sequence[pulumi.Resource] = (),
        credentials: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        crd_release: str | None = None,
    ) -> None:
        """`credentials`: the Secrets of these manifests whose values we fill, (namespace, name)
        -> their values; the workloads reading them roll when they change. `crd_release`: the
        name of the release of their CRDs (crd_bundle), `module_label` unless given; it must
        never change once installed (another name is another release: Helm would remove the
        CRDs of the old one, and with them every object of their kinds)."""
        labels = {**ctx.labels, "mlplatform.io/module": module_label}
        self.namespaces: dict[str, pulumi.Resource] = {}
        self.crds: list[pulumi.Resource] = []
        self.workloads: list[pulumi.Resource] = []
        self.webhooks: list[pulumi.Resource] = []
        self.custom_resources: list[pulumi.Resource] = []
        prepared = [self._prepare(m, ctx, labels, credentials or {}) for m in manifests]

        for manifest in prepared:
            if manifest["kind"] == "Namespace":
                name = manifest["metadata"]["name"]
                namespace_labels = dict(manifest["metadata"].get("labels") or {})
                if name in NAMESPACE_ROLES:
                    namespace_labels["mlplatform.io/role"] = NAMESPACE_ROLES[name]
                self.namespaces[name] = ctx.shared_namespace(name, namespace_labels)
        # Namespaces other modules own (e.g. one this overlay only adds objects to).
        for manifest in prepared:
            namespace = manifest["metadata"].get("namespace")
            if namespace and namespace not in self.namespaces and namespace in ctx.namespaces:
                self.namespaces[namespace] = ctx.namespaces[namespace]

        # CRDs wait on nothing: `after` (a mesh's injector, an identity provider) concerns the
        # pods and the objects that use the APIs, and the CRDs are what those wait on.
        self.crds = install_crds(
            owner,
            ctx,
            crd_release or module_label,
            [m for m in prepared if m["kind"] == "CustomResourceDefinition"],
        )

        base_deps = [*after, *self.namespaces.values(), *self.crds]
        deferred = []
        for manifest in prepared:
            kind = manifest["kind"]
            if kind in ("Namespace", "CustomResourceDefinition"):
                continue
            if kind in WEBHOOK_KINDS or is_custom_resource(manifest):
                deferred.append(manifest)
                continue
            resource = create_object(manifest, ctx.child_opts(owner, depends_on=base_deps))
            if kind in WORKLOAD_KINDS and kind != "Job":
                self.workloads.append(resource)

        # A webhook registered before its server is Available would refuse every write it covers.
        webhook_deps = [*base_deps, *self.workloads]
        for manifest in deferred:
            if manifest["kind"] in WEBHOOK_KINDS:
                self.webhooks.append(create_object(manifest, ctx.child_opts(owner, depends_on=webhook_deps)))
        custom_deps = [*webhook_deps, *after_for_custom_resources]
        for manifest in deferred:
            if manifest["kind"] not in WEBHOOK_KINDS:
                self.custom_resources.append(create_object(manifest, ctx.child_opts(owner, depends_on=custom_deps)))

    @staticmethod
    def _prepare(
        manifest: dict[str, Any],
        ctx: ModuleContext,
        labels: dict[str, str],
        credentials: Mapping[tuple[str, str], Mapping[str, Any]],
    ) -> dict[str, Any]:
        # Manifests come fresh from the overlay build and may hold Outputs (secrets): changed in place.
        # Some upstream files carry a status stanza; the API server owns it.
        manifest.pop("status", None)
        metadata = manifest.setdefault("metadata", {})
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
        if not ctx.resolved.profile.fixed_uids:
            manifest = without_fixed_ids(manifest)
        if ctx.resolved.profile.admission_sets_restricted_context:
            manifest = with_restricted_defaults(manifest)
        # An aggregated ClusterRole's rules belong to the aggregation controller, which fills
        # them from the selected roles: applying upstream's (empty) list would fight it forever.
        if manifest["kind"] == "ClusterRole" and manifest.get("aggregationRule"):
            manifest.pop("rules", None)
        # An empty rule list is stored as no list at all: kept, every preview would plan to add it.
        if manifest["kind"] in ("ClusterRole", "Role") and manifest.get("rules") == []:
            manifest.pop("rules")
        return with_credentials_checksum(manifest, credentials, ctx.resolved.stack)

    @property
    def ready(self) -> list[pulumi.Resource]:
        """What a dependent waits on: the service's workloads Available and CRDs Established."""
        return [*self.crds, *self.workloads]


def overlay_manifests(ctx: ModuleContext, component: str) -> list[dict[str, Any]]:
    """The objects of overlays/<component>/<environment> (else its base) over this stack's pinned sources."""
    from mlplatform.upstream import upstream_sources

    sources = upstream_sources(ctx.resolved.lock_path, ctx.resolved.config.versions.pins)
    return build_overlay(component, ctx.resolved.config.environment, sources, ctx.resolved.mirror_path)


class ServiceModule(Module):
    """A module that installs an upstream service: its team rights, its guards in `kubeflow`, its
    typed outputs."""

    outputs: ServiceOutputs
    provides: ClassVar[type[ServiceOutputs]]

    def _team_rights(
        self,
        ctx: ModuleContext,
        module: str,
        writable: dict[str, list[str]],
        read_only: dict[str, list[str]] | None = None,
    ) -> None:
        """What team members may do with this module's resources in their namespace: aggregated
        into the team roles the tenancy module binds."""
        labels = {**ctx.labels, "mlplatform.io/module": module}
        for role in rbac.module_rights(module, writable, labels, read_only):
            create_object(role, ctx.child_opts(self))

    def _guard(
        self,
        ctx: ModuleContext,
        module: str,
        name: str,
        pod_labels: dict[str, str],
        peers: list[dict[str, Any]],
        ports: tuple[int, ...],
        after: list[pulumi.Resource],
    ) -> None:
        """Only these peers reach the pods with these labels in `kubeflow`, on these ports."""
        labels = {**ctx.labels, "mlplatform.io/module": module}
        create_object(
            network.guard(name, KUBEFLOW_NAMESPACE, labels, pod_labels, peers, ports),
            ctx.child_opts(self, depends_on=after),
        )

    def _finish(self, namespaces: tuple[str, ...], endpoints: dict[str, str], ready: list[pulumi.Resource]) -> None:
        self.outputs = self.provides(namespaces=namespaces, endpoints=endpoints, ready=tuple(ready))
        self.register_outputs({"namespaces": list(namespaces), "endpoints": endpoints})
