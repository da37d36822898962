"""What every module receives: the validated config, its profile, the provider, and
the typed outputs of the modules it depends on."""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pulumi
import pulumi_kubernetes as k8s

from mlplatform.config import ResolvedConfig
from mlplatform.modules import placement
from mlplatform.paths import STATE_ROOT
from mlplatform.plain_data import plain_copy

MANAGED_BY = "mlplatform"
T = TypeVar("T")
# Component types that created shared namespaces before they had an owner of their own (the
# first service module that installed into one): aliases keep a stack's existing namespace.
_FORMER_NAMESPACE_OWNERS = (
    "mlplatform:notebooks:Notebooks",
    "mlplatform:pipelines:Pipelines",
    "mlplatform:katib:Katib",
    "mlplatform:kserve:Kserve",
    "mlplatform:training:Training",
)


def _former_namespace_urns(name: str) -> list[str]:
    stack, project = pulumi.get_stack(), pulumi.get_project()
    return [
        f"urn:pulumi:{stack}::{project}::{owner}$kubernetes:core/v1:Namespace::{name}"
        for owner in _FORMER_NAMESPACE_OWNERS
    ]


# The provider applies server-side; without force, a field another manager changed out of band
# (`kubectl label`, `kubectl scale`) stops `preview` and `up` with a field conflict instead of
# being planned back. On objects of ours the declared state wins.
FORCE_ANNOTATION = "pulumi.com/patchForce"


def _annotated(metadata: Any, key: str, value: str) -> Any:
    """`metadata` (a dict, an ObjectMetaArgs or an Output of one) with one annotation more."""

    def annotations_with(annotations: Any) -> Any:
        if isinstance(annotations, pulumi.Output):
            return annotations.apply(annotations_with)
        return {**(annotations or {}), key: value}

    if isinstance(metadata, pulumi.Output):
        return metadata.apply(lambda resolved: _annotated(resolved, key, value))
    if isinstance(metadata, dict):
        return {**metadata, "annotations": annotations_with(metadata.get("annotations"))}
    changed = copy.copy(metadata)  # an ObjectMetaArgs
    changed.annotations = annotations_with(metadata.annotations)
    return changed


def _forced_metadata(metadata: Any) -> Any:
    return _annotated(metadata, FORCE_ANNOTATION, "true")


# The provider's await of a Service waits for its endpoints, then 10 s more. A ClusterIP
# Service's endpoints are the pods of a workload whose own readiness the engine awaits, so the
# 10 s are all it adds (29 Services, 290 s of steps, in a fresh install of the Kubeflow
# services). Services of other types keep their await: a LoadBalancer's address is an output.
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"
_SERVICE_TYPE = "kubernetes:core/v1:Service"


def cluster_services_not_awaited(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Stack transformation for the engine: ClusterIP Services applied without the provider's
    await. Renders leave it out (the annotation only means something to the provider)."""
    if args.type_ != _SERVICE_TYPE or args.props.get("metadata") is None:
        return None
    spec = args.props.get("spec")
    if not isinstance(spec, dict) or spec.get("type", "ClusterIP") != "ClusterIP":
        return None
    props = {**args.props, "metadata": _annotated(args.props["metadata"], SKIP_AWAIT_ANNOTATION, "true")}
    return pulumi.ResourceTransformationResult(props, args.opts)


def declared_state_wins(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Stack transformation for the engine: every Kubernetes object is applied with force.

    Renders leave it out: the annotation only means something to the Pulumi provider. Patches
    (`...Patch` types) change objects that are not ours: each decides for itself."""
    if not args.type_.startswith("kubernetes:") or args.props.get("metadata") is None:
        return None
    if args.type_.endswith("Patch"):
        return None
    props = {**args.props, "metadata": _forced_metadata(args.props["metadata"])}
    return pulumi.ResourceTransformationResult(props, args.opts)


class UndeclaredInput(RuntimeError):
    """A module read outputs its registry entry does not declare: the composition order
    would not know to build their module first."""


@dataclass(frozen=True)
class ModuleContext:
    resolved: ResolvedConfig
    provider: k8s.Provider
    # Typed outputs of the modules already built, by their type (contracts.py).
    outputs: dict[type, Any] = field(default_factory=dict)
    # The owner of namespaces several modules install into (Kubeflow's `kubeflow`): one
    # component of the program, so that which modules are on never moves their URNs.
    shared_owner: pulumi.Resource | None = None
    namespaces: dict[str, Any] = field(default_factory=dict)
    # Monitors the enabled modules declare, for the monitoring module to create.
    scrape_targets: tuple[Any, ...] = ()
    # The module being built and the output types it declared; None for the program itself.
    module: str | None = None
    declared: frozenset[type] | None = None
    # The stack transformations every CRD gets, for CRDs installed as a release's values
    # (crd_bundle), which are not registered as resources.
    crd_transformations: tuple[Any, ...] = ()
    # The CRD releases registered so far, by name: two in one stack would be one Helm release.
    crd_releases: dict[str, Any] = field(default_factory=dict)

    def for_module(self, module: str, declared: frozenset[type]) -> ModuleContext:
        """The context one module is built with: the same shared state, its declared inputs."""
        return dataclasses.replace(self, module=module, declared=declared)

    def input(self, contract: type[T]) -> T | None:
        """The outputs of type `contract`, None when the module providing them is off."""
        if self.declared is not None and contract not in self.declared:
            raise UndeclaredInput(
                f"module {self.module!r} reads {contract.__name__} without declaring it (registry needs/uses)"
            )
        return self.outputs.get(contract)

    def require(self, contract: type[T]) -> T:
        found = self.input(contract)
        if found is None:
            raise UndeclaredInput(f"module {self.module!r} needs {contract.__name__}, whose module is off")
        return found

    def shared_namespace(self, name: str, upstream_labels: dict[str, str]) -> Any:
        if name not in self.namespaces:
            if not placement.holds_platform():
                self.namespaces[name] = placement.held_elsewhere()
                return self.namespaces[name]
            if self.shared_owner is None:
                raise RuntimeError("the program sets ModuleContext.shared_owner before building modules")
            labels = {**upstream_labels, **self.resolved.profile.namespace_labels, **self.labels}
            self.namespaces[name] = k8s.core.v1.Namespace(
                name,
                metadata={"name": name, "labels": labels},
                opts=self.child_opts(self.shared_owner, aliases=_former_namespace_urns(name)),
            )
        return self.namespaces[name]

    @property
    def labels(self) -> dict[str, str]:
        """Labels on every object we create: they make the cluster inventory of a stack queryable."""
        return {
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/part-of": "mlplatform",
            "mlplatform.io/stack": self.resolved.stack,
            **self.resolved.config.platform.labels,
        }

    def child_opts(self, parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, **kwargs)


class Module(pulumi.ComponentResource):
    """One capability. Its class declares the contract (contracts.py) the registry orders by:
    the outputs type it provides, those it cannot be built without (`needs`: config must
    enable their module too) and those it adapts to where their module is on (`uses`)."""

    provides: ClassVar[type]
    needs: ClassVar[tuple[type, ...]] = ()
    uses: ClassVar[tuple[type, ...]] = ()
    outputs: Any

    @staticmethod
    def scrape_targets(resolved: ResolvedConfig) -> list[Any]:
        """The monitors (contracts.ScrapeTarget) for this module's services."""
        return []

    @staticmethod
    def required_secrets(resolved: ResolvedConfig) -> list[tuple[str, str]]:
        """(stack secret, what needs it) for the values this module's services are given."""
        return []


CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def crds_without_descriptions(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Stack transformation for platform.crdDescriptions=drop: every CRD, whichever module
    installs it, without the field descriptions of its schemas. Names, versions, validation and
    printer columns stay as upstream writes them."""
    spec = args.props.get("spec")
    if args.type_ != CRD_TYPE or not isinstance(spec, dict):
        return None
    spec = plain_copy(spec)
    for version in spec.get("versions") or []:
        _drop_descriptions((version.get("schema") or {}).get("openAPIV3Schema"))
    return pulumi.ResourceTransformationResult({**args.props, "spec": spec}, args.opts)


# Keys of a JSON schema whose values are schemas (one, a list, or a map of them). Only these are
# walked: `properties` maps field names, and a field may be called "description"; `default` and
# `example` hold data, which may too.
# One schema, or a list of them:
_SUBSCHEMA = ("items", "additionalProperties", "additionalItems", "not", "allOf", "anyOf", "oneOf")
# A map of names to schemas:
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")


def _drop_descriptions(schema: Any) -> None:
    if isinstance(schema, list):  # `items` or a `dependencies` entry may be a list
        for each in schema:
            _drop_descriptions(each)
        return
    if not isinstance(schema, dict):  # `additionalProperties: false`
        return
    if isinstance(schema.get("description"), str):
        del schema["description"]
    for key in _SUBSCHEMA:
        if key in schema:
            _drop_descriptions(schema[key])
    for key in _SUBSCHEMA_MAPS:
        for each in (schema.get(key) or {}).values():
            _drop_descriptions(each)


# Typed resource classes for the kinds our modules create from manifests; anything else is
# a custom resource.
_KINDS: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("apps/v1", "DaemonSet"): k8s.apps.v1.DaemonSet,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "LimitRange"): k8s.core.v1.LimitRange,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("scheduling.k8s.io/v1", "PriorityClass"): k8s.scheduling.v1.PriorityClass,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): k8s.apiextensions.v1.CustomResourceDefinition,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("v1", "Secret"): k8s.core.v1.Secret,
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ): k8s.admissionregistration.v1.MutatingWebhookConfiguration,
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ): k8s.admissionregistration.v1.ValidatingWebhookConfiguration,
    ("apiregistration.k8s.io/v1", "APIService"): k8s.apiregistration.v1.APIService,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("batch/v1", "CronJob"): k8s.batch.v1.CronJob,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("storage.k8s.io/v1", "StorageClass"): k8s.storage.v1.StorageClass,
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
    ): k8s.admissionregistration.v1.ValidatingAdmissionPolicy,
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
    ): k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding,
}


# Fields the apiserver refuses to change in place and the provider does not know to replace on.
# A change to one, ours or an object recreated out of band with another value, is applied by
# deleting the object and creating it again (the name is fixed, so the delete comes first).
_REPLACED_ON_CHANGE: dict[tuple[str, str], list[str]] = {
    ("scheduling.k8s.io/v1", "PriorityClass"): ["value", "preemptionPolicy"],
}


def create_object(manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """A Pulumi resource for one manifest (camelCase keys, as upstream YAML writes them); where
    another stack of the platform holds the object (placement.py), the stand-in for it."""
    if not placement.holds(manifest):
        return placement.held_elsewhere()
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    if kind in ("Secret", "ConfigMap"):
        # An empty data map (kustomize's secretGenerator writes `data: {}`) is stored as no map
        # at all; declaring it would show as a change on every preview.
        body = {k: v for k, v in body.items() if not (k in ("data", "stringData", "binaryData") and v == {})}
    metadata = manifest["metadata"]
    # Unique within the stack: namespaced objects of the same name live in many namespaces.
    name = f"{metadata['namespace']}/{metadata['name']}" if metadata.get("namespace") else metadata["name"]
    replaced_on = _REPLACED_ON_CHANGE.get((api_version, kind))
    if replaced_on:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(replace_on_changes=replaced_on, delete_before_replace=True)
        )
    resource_class = _KINDS.get((api_version, kind))
    if resource_class is None:
        return k8s.apiextensions.CustomResource(name, api_version=api_version, kind=kind, opts=opts, **body)
    # Typed classes take their top-level fields as Python arguments (roleRef -> role_ref);
    # nested mappings keep the manifest's camelCase.
    arguments = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in body.items()}
    return resource_class(name, opts=opts, **arguments)


def add_team_egress(
    owner: pulumi.Resource, ctx: ModuleContext, labels: dict[str, str], name: str, rules: list[Any]
) -> None:
    """The policy `name` in every team namespace, opening the way out to a module's service
    (`rules`: (peers, ports) pairs); nothing where tenancy is off. Created after the namespace
    it lives in."""
    from mlplatform.modules.contracts import TenancyOutputs
    from mlplatform.tenancy import network

    tenancy = ctx.input(TenancyOutputs)
    if tenancy is None:
        return
    for team, namespace in tenancy.namespaces.items():
        create_object(
            network.allow_egress_to(name, namespace, labels, rules),
            ctx.child_opts(owner, depends_on=[tenancy.namespace_resources[team]]),
        )


def gateway_host(resolved: ResolvedConfig) -> str:
    """Where users reach Kubeflow's UIs (the mesh's gateway, behind sign-in): modules.identity.host,
    else kubeflow.<cluster.ingress.domain>."""
    return resolved.config.modules.identity.host or f"kubeflow.{resolved.config.cluster.ingress.domain}"


def under_mocks() -> bool:
    """Running under the mock monitor (render, policy check, tests), not the engine."""
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    return isinstance(get_monitor(), MockMonitor)


def target_kube_version(resolved: ResolvedConfig) -> str:
    """The Kubernetes version charts render for: the one the pinned cluster tools run (helm
    would otherwise assume its own old default and refuse a chart's kubeVersion)."""
    from mlplatform.lock import load_lock

    return load_lock(resolved.lock_path).tools["kubernetes"].version


def default_kubeconfig() -> Path:
    return STATE_ROOT / "cluster" / "kubeconfig"


def target_kubeconfig(resolved: ResolvedConfig) -> str | None:
    """The stack's kubeconfig, else the local plane's where one is up."""
    cluster = resolved.config.cluster
    kubeconfig = cluster.kubeconfig or resolved.provider_settings.get("kubeconfig")
    if kubeconfig is None and default_kubeconfig().exists():
        kubeconfig = str(default_kubeconfig())
    return kubeconfig
