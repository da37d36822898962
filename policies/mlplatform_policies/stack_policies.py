"""Policies over the whole stack (StackValidationPolicy): what one object cannot show alone."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from mlplatform_policies.objects import (
    CRD_KIND,
    EXEMPTION_SCHEMA,
    bundled_crds,
    describe,
    exempted,
    is_extended_resource,
    is_kubernetes,
    labels,
    metadata,
    parse_image,
    pod_specs,
    quantity,
    quota_resource,
)

# The folder holding the pack; the repository (and its lock file) is the one above it.
PACK_DIR = Path(__file__).resolve().parent.parent
TEAM_ROLE = {"mlplatform.io/role": "team"}
GPU_NAMESPACE_LABEL = {"mlplatform.io/gpu": "true"}
# API groups every Kubernetes API server serves without a CRD.
BUILT_IN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)


def _schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={"exemptions": EXEMPTION_SCHEMA, **properties})


def _objects(args: StackValidationArgs) -> list[PolicyResource]:
    return [r for r in args.resources if is_kubernetes(r.resource_type) and r.props.get("kind")]


def _api_group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


# -- team namespaces ---------------------------------------------------------------------------

TEAM_GUARDRAILS = "team-namespace-guardrails"


def _default_deny(policy: Mapping[str, Any], direction: str) -> bool:
    """Selects every pod of its namespace and allows nothing in this direction."""
    spec = policy.get("spec") or {}
    selects_all = not (spec.get("podSelector") or {}).get("matchLabels") and not (spec.get("podSelector") or {}).get(
        "matchExpressions"
    )
    return selects_all and direction in (spec.get("policyTypes") or []) and not spec.get(direction.lower())


def validate_team_guardrails(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every team namespace has a ResourceQuota, a LimitRange and NetworkPolicies that deny
    ingress and egress by default."""
    config = args.get_config()
    selector = config.get("teamNamespaceLabels") or TEAM_ROLE
    in_namespace: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    namespaces = []
    for resource in _objects(args):
        props = resource.props
        if props["kind"] == "Namespace":
            if all(labels(props).get(k) == v for k, v in selector.items()):
                namespaces.append(resource)
        elif metadata(props).get("namespace"):
            in_namespace[metadata(props)["namespace"]].append(props)
    for namespace in namespaces:
        name = metadata(namespace.props).get("name")
        objects = in_namespace[name]
        kinds = {o["kind"] for o in objects}
        missing = [kind for kind in ("ResourceQuota", "LimitRange") if kind not in kinds]
        for direction in ("Ingress", "Egress"):
            if not any(o["kind"] == "NetworkPolicy" and _default_deny(o, direction) for o in objects):
                missing.append(f"default-deny {direction.lower()} NetworkPolicy")
        if missing and not exempted(TEAM_GUARDRAILS, namespace.props, config):
            report(f"team namespace {name} has no {', '.join(missing)}", namespace.urn)


# -- GPUs --------------------------------------------------------------------------------------

GPU_NAMESPACES = "gpu-workload-namespaces"


def _gpu_names(config: Mapping[str, Any]) -> set[str]:
    return set(config.get("gpuResourceNames") or [])


def _asks_for_gpus(props: Mapping[str, Any], gpu_names: set[str]) -> list[str]:
    asked = []
    for pod in pod_specs(props):
        for _, container in pod.containers():
            resources = container.get("resources") or {}
            for section in ("requests", "limits"):
                for name, value in (resources.get(section) or {}).items():
                    if (name in gpu_names or is_extended_resource(name)) and (quantity(value) or 0) > 0:
                        asked.append(name)
    return sorted(set(asked))


def validate_gpu_namespaces(args: StackValidationArgs, report: ReportViolation) -> None:
    """GPUs are asked for (pods, quotas) only in namespaces labelled for GPUs."""
    config = args.get_config()
    marker = config.get("gpuNamespaceLabels") or GPU_NAMESPACE_LABEL
    gpu_names = _gpu_names(config)
    marked = {
        metadata(r.props).get("name")
        for r in _objects(args)
        if r.props["kind"] == "Namespace" and all(labels(r.props).get(k) == v for k, v in marker.items())
    }
    wanted = ", ".join(f"{k}={v}" for k, v in marker.items())
    for resource in _objects(args):
        props = resource.props
        namespace = metadata(props).get("namespace")
        if props["kind"] == "ResourceQuota":
            hard = (props.get("spec") or {}).get("hard") or {}
            asked = sorted(
                key
                for key, value in hard.items()
                if (name := quota_resource(key)) and (name in gpu_names or is_extended_resource(name))
                if (quantity(value) or 0) > 0
            )
        else:
            asked = _asks_for_gpus(props, gpu_names)
        if not asked or namespace in marked or exempted(GPU_NAMESPACES, props, config):
            continue
        report(
            f"{describe(props)} asks for {', '.join(asked)} in namespace {namespace or '(none)'}, "
            f"which is not labelled {wanted}",
            resource.urn,
        )


GPU_CAPACITY = "gpu-quota-capacity"


def validate_gpu_capacity(args: StackValidationArgs, report: ReportViolation) -> None:
    """Quota totals per GPU resource stay within pool capacity x the environment's oversubscription."""
    config = args.get_config()
    capacity: Mapping[str, int] = config.get("gpuCapacity") or {}
    bound = Decimal(str(config.get("gpuOversubscription", 1.0)))
    gpu_names = _gpu_names(config) | set(capacity)
    totals: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for resource in _objects(args):
        props = resource.props
        if props["kind"] != "ResourceQuota":
            continue
        where = f"{metadata(props).get('namespace')}/{metadata(props).get('name')}"
        asked = {
            name: quantity(value) or Decimal(0)
            for key, value in ((props.get("spec") or {}).get("hard") or {}).items()
            if (name := quota_resource(key))
            and (name in gpu_names or is_extended_resource(name))
            and not key.startswith("limits.")
        }
        # An exempt quota (counted elsewhere, e.g. a shared pool) stays out of the totals.
        if any(asked.values()) and exempted(GPU_CAPACITY, props, config):
            continue
        for name, count in asked.items():
            totals[name][where] = count
    for name, per_quota in sorted(totals.items()):
        total = sum(per_quota.values(), Decimal(0))
        offered = Decimal(capacity.get(name, 0))
        limit = int(offered * bound)
        if total > limit:
            parts = ", ".join(f"{where} {count}" for where, count in sorted(per_quota.items()) if count)
            report(
                f"{name}: quotas total {total} ({parts}) but the pools offer {offered} x oversubscription "
                f"{bound} = {limit} (allowed: at most {limit})"
            )


# -- custom resources --------------------------------------------------------------------------

CRDS_FIRST = "crds-before-custom-resources"


def _waits_for(resource: PolicyResource, children: Mapping[str, list[PolicyResource]]) -> set[str]:
    """URNs registered before `resource`: its dependencies and its ancestors' dependencies,
    transitively; waiting on a component waits on everything under it."""
    seen: set[str] = set()
    pending: list[PolicyResource] = [resource]
    while pending:
        current = pending.pop()
        holders = [current]
        parent = current.parent
        while parent is not None:
            holders.append(parent)
            parent = parent.parent
        for holder in holders:
            for dependency in holder.dependencies:
                stack = [dependency]
                while stack:
                    node = stack.pop()
                    if node.urn in seen:
                        continue
                    seen.add(node.urn)
                    pending.append(node)
                    stack.extend(children.get(node.urn, []))
    return seen


def validate_crds_first(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every custom resource depends on the CRD that defines it (or its API comes with the environment)."""
    config = args.get_config()
    external = {entry["group"] for entry in config.get("externalApiGroups") or []}
    # (group, kind) -> the resource that installs its CRD (the CRD, or the release holding it), its name.
    crds: dict[tuple[str, str], tuple[PolicyResource, str]] = {}
    children: dict[str, list[PolicyResource]] = defaultdict(list)
    for resource in args.resources:
        if resource.parent is not None:
            children[resource.parent.urn].append(resource)
    objects = _objects(args)
    for resource in objects:
        if resource.props["kind"] == CRD_KIND:
            spec = resource.props.get("spec") or {}
            crds[(spec.get("group", ""), (spec.get("names") or {}).get("kind", ""))] = (
                resource,
                str(metadata(resource.props).get("name")),
            )
    # A CRD in a module's CRD release: a custom resource waits on the release.
    for resource in args.resources:
        for entry in bundled_crds(resource.resource_type, resource.props):
            crds[(str(entry.get("group", "")), str(entry.get("kind", "")))] = (
                resource,
                f"{entry.get('name')} (in Helm release {resource.props.get('name')})",
            )
    for resource in objects:
        props = resource.props
        group = _api_group(str(props.get("apiVersion", "")))
        if group in BUILT_IN_GROUPS:
            continue
        found = crds.get((group, props["kind"]))
        if found is None:
            if group not in external and not exempted(CRDS_FIRST, props, config):
                report(
                    f"{describe(props)}: no CRD for {props['kind']}.{group} in the stack and {group} is not "
                    "an API the environment serves (externalApiGroups)",
                    resource.urn,
                )
        elif found[0].urn not in _waits_for(resource, children) and not exempted(CRDS_FIRST, props, config):
            report(
                f"{describe(props)} does not depend on CRD {found[1]}: it may be registered before its API exists",
                resource.urn,
            )


# -- upstream versions -------------------------------------------------------------------------

UPSTREAM_VERSIONS = "upstream-versions-locked"


def locked_versions(config: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(source -> version, image repository -> source, OLM package -> source) from the lock file,
    the config's image map and its pins."""
    lock_file = PACK_DIR.parent / config.get("lockFile", "versions.lock.yaml")
    upstream: Mapping[str, Any] = (yaml.safe_load(lock_file.read_text()) or {}).get("upstream") or {}
    versions = {name: str(entry.get("version", "")) for name, entry in upstream.items()}
    versions.update(config.get("pins") or {})
    images: dict[str, str] = {}
    packages: dict[str, str] = {}
    for name, entry in upstream.items():
        if entry.get("image"):
            images[entry["image"]] = name
        for replacement in (entry.get("images") or {}).values():
            images[parse_image(replacement).repository] = name
        if entry.get("package"):
            packages[entry["package"]] = name
    images.update(config.get("componentImages") or {})
    return versions, images, packages


def _version_mismatches(
    props: Mapping[str, Any], versions: Mapping[str, str], images: Mapping[str, str], packages: Mapping[str, str]
) -> Iterable[str]:
    for pod in pod_specs(props):
        for _, container in pod.containers():
            ref = parse_image(str(container.get("image") or ""))
            source = images.get(ref.repository)
            if source and ref.tag != versions.get(source):
                yield f"image {ref.repository}:{ref.tag} but {source} is locked at {versions.get(source)}"
    if props.get("kind") == "Subscription":
        spec = props.get("spec") or {}
        source = packages.get(spec.get("name", ""))
        if source:
            expected = f"{spec['name']}.{versions.get(source)}"
            if spec.get("startingCSV") != expected:
                yield f"startingCSV {spec.get('startingCSV')} but {source} is locked at {expected}"


def validate_upstream_versions(args: StackValidationArgs, report: ReportViolation) -> None:
    """Upstream components run the versions of versions.lock.yaml (upstream:, or a stack pin)."""
    config = args.get_config()
    versions, images, packages = locked_versions(config)
    for source in sorted(set(images.values()) - set(versions)):
        report(f"componentImages names {source}, which versions.lock.yaml does not pin")
    for resource in _objects(args):
        problems = list(_version_mismatches(resource.props, versions, images, packages))
        if problems and not exempted(UPSTREAM_VERSIONS, resource.props, config):
            for problem in problems:
                report(f"{describe(resource.props)}: {problem}", resource.urn)


STACK_POLICIES: list[StackValidationPolicy] = [
    StackValidationPolicy(
        name=TEAM_GUARDRAILS,
        description=(
            "Every team namespace has a ResourceQuota, a LimitRange and default-deny ingress and egress NetworkPolicies."
        ),
        validate=validate_team_guardrails,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(teamNamespaceLabels={"type": "object", "additionalProperties": {"type": "string"}}),
    ),
    StackValidationPolicy(
        name=GPU_NAMESPACES,
        description="GPU resources are requested only in namespaces labelled for GPUs.",
        validate=validate_gpu_namespaces,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(
            gpuResourceNames={"type": "array", "items": {"type": "string"}},
            gpuNamespaceLabels={"type": "object", "additionalProperties": {"type": "string"}},
        ),
    ),
    StackValidationPolicy(
        name=GPU_CAPACITY,
        description="GPU quota totals stay within pool capacity x the environment's oversubscription bound.",
        validate=validate_gpu_capacity,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(
            gpuResourceNames={"type": "array", "items": {"type": "string"}},
            gpuCapacity={"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            gpuOversubscription={"type": "number", "minimum": 1, "default": 1},
        ),
    ),
    StackValidationPolicy(
        name=CRDS_FIRST,
        description="Every custom resource depends on its CRD (or its API is served by the environment).",
        validate=validate_crds_first,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(
            externalApiGroups={
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"group": {"type": "string"}, "reason": {"type": "string", "minLength": 10}},
                    "required": ["group", "reason"],
                    "additionalProperties": False,
                },
            }
        ),
    ),
    StackValidationPolicy(
        name=UPSTREAM_VERSIONS,
        description="Upstream components run the versions pinned in versions.lock.yaml.",
        validate=validate_upstream_versions,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(
            lockFile={"type": "string", "default": "versions.lock.yaml"},
            pins={"type": "object", "additionalProperties": {"type": "string"}},
            componentImages={"type": "object", "additionalProperties": {"type": "string"}},
        ),
    ),
]
