"""Policies on one object at a time (ResourceValidationPolicy). Each works on kinds and fields,
so objects from any module, chart or upstream manifest are judged alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from mlplatform_policies.objects import (
    EXEMPTION_SCHEMA,
    describe,
    is_extended_resource,
    is_kubernetes,
    is_secret,
    parse_image,
    pod_specs,
    quantity,
    quota_resource,
    waiving,
)

# Pod Security "restricted" lets containers add only this capability back.
RESTRICTED_ADDABLE_CAPABILITIES = {"NET_BIND_SERVICE"}
RESTRICTED_SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
HOST_NAMESPACE_FIELDS = ("hostNetwork", "hostPID", "hostIPC")


def _schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={"exemptions": EXEMPTION_SCHEMA, **properties})


def _judged(name: str, args: ResourceValidationArgs, report: ReportViolation) -> ReportViolation | None:
    """The report function for a Kubernetes object (violations of exempt objects waived), or None."""
    if not is_kubernetes(args.resource_type):
        return None
    return waiving(name, args.props, args.get_config(), report)


# -- images ------------------------------------------------------------------------------------

IMAGES_PINNED = "images-pinned"


def validate_images_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    report = _judged(IMAGES_PINNED, args, report)
    if report is None:
        return
    for pod in pod_specs(args.props):
        for _, container in pod.containers():
            image = str(container.get("image") or "")
            ref = parse_image(image)
            if not image:
                report(f"{describe(args.props)}: container {container.get('name')} names no image")
            elif ref.digest is None and ref.tag is None:
                report(f"{describe(args.props)}: container {container.get('name')} image {image} has no tag or digest")
            elif ref.digest is None and ref.tag == "latest":
                report(f"{describe(args.props)}: container {container.get('name')} image {image} uses :latest")


IMAGES_BY_DIGEST = "images-by-digest"


def validate_images_by_digest(args: ResourceValidationArgs, report: ReportViolation) -> None:
    report = _judged(IMAGES_BY_DIGEST, args, report)
    if report is None:
        return
    for pod in pod_specs(args.props):
        for _, container in pod.containers():
            image = str(container.get("image") or "")
            if image and parse_image(image).digest is None:
                report(
                    f"{describe(args.props)}: container {container.get('name')} image {image} is pinned by tag, "
                    "not by digest (@sha256:...)"
                )


# -- resources ---------------------------------------------------------------------------------

CONTAINER_RESOURCES = "container-resources"


def validate_container_resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    report = _judged(CONTAINER_RESOURCES, args, report)
    if report is None:
        return
    for pod in pod_specs(args.props):
        for _, container in pod.containers():
            resources = container.get("resources") or {}
            missing = [
                f"{section}.{name}"
                for section in ("requests", "limits")
                for name in ("cpu", "memory")
                if (resources.get(section) or {}).get(name) in (None, "")
            ]
            if missing:
                report(
                    f"{describe(args.props)}: container {container.get('name')} ({pod.where}) sets no "
                    f"{', '.join(missing)}"
                )


GPU_REQUESTS = "gpu-requests"


def validate_gpu_requests(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Extended resources only by the names the GPU layer publishes; a GPU limit equals its request."""
    report = _judged(GPU_REQUESTS, args, report)
    if report is None:
        return
    published = set(args.get_config().get("gpuResourceNames") or [])
    allowed = ", ".join(sorted(published)) or "none: the stack publishes no GPU resources"
    what = describe(args.props)
    for pod in pod_specs(args.props):
        for _, container in pod.containers():
            resources = container.get("resources") or {}
            requests = resources.get("requests") or {}
            limits = resources.get("limits") or {}
            for name in sorted({*requests, *limits}):
                if not is_extended_resource(name):
                    continue
                if name not in published:
                    report(f"{what}: container {container.get('name')} asks for {name} (allowed: {allowed})")
                    continue
                if name not in limits:
                    report(f"{what}: container {container.get('name')} requests {name} without a limit")
                elif name in requests and quantity(requests[name]) != quantity(limits[name]):
                    report(
                        f"{what}: container {container.get('name')} {name} limit {limits[name]} "
                        f"differs from its request {requests[name]}"
                    )
    if args.props.get("kind") == "ResourceQuota":
        for key in sorted((args.props.get("spec") or {}).get("hard") or {}):
            name = quota_resource(key)
            if name and is_extended_resource(name) and name not in published:
                report(f"{what}: quota {key} names {name} (allowed: {allowed})")


# -- host access and pod security --------------------------------------------------------------

HOST_ACCESS = "host-access"


def validate_host_access(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No privileged containers, hostPath volumes or host namespaces: only the GPU system
    components (exemptions) need them."""
    report = _judged(HOST_ACCESS, args, report)
    if report is None:
        return
    what = describe(args.props)
    for pod in pod_specs(args.props):
        for field in HOST_NAMESPACE_FIELDS:
            if pod.spec.get(field):
                report(f"{what}: {pod.where}.{field} is true")
        for volume in pod.spec.get("volumes") or []:
            if isinstance(volume, Mapping) and "hostPath" in volume:
                report(f"{what}: volume {volume.get('name')} mounts hostPath {volume['hostPath'].get('path')}")
        for _, container in pod.containers():
            if (container.get("securityContext") or {}).get("privileged"):
                report(f"{what}: container {container.get('name')} is privileged")


POD_SECURITY = "pod-security-restricted"


def validate_pod_security(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """The Pod Security `restricted` fields, set explicitly so workloads run under that level."""
    report = _judged(POD_SECURITY, args, report)
    if report is None:
        return
    what = describe(args.props)
    for pod in pod_specs(args.props):
        pod_context = pod.spec.get("securityContext") or {}
        pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
        for _, container in pod.containers():
            name = container.get("name")
            context = container.get("securityContext") or {}
            non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            if non_root is not True:
                report(f"{what}: container {name} does not set runAsNonRoot: true")
            seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
            if seccomp not in RESTRICTED_SECCOMP_TYPES:
                report(f"{what}: container {name} has no seccompProfile RuntimeDefault (got {seccomp})")
            if context.get("allowPrivilegeEscalation") is not False:
                report(f"{what}: container {name} does not set allowPrivilegeEscalation: false")
            capabilities = context.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []):
                report(f"{what}: container {name} does not drop ALL capabilities")
            added = set(capabilities.get("add") or []) - RESTRICTED_ADDABLE_CAPABILITIES
            if added:
                report(f"{what}: container {name} adds capabilities {', '.join(sorted(added))}")


NO_FIXED_IDS = "no-fixed-ids"


def validate_no_fixed_ids(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """OpenShift assigns UIDs and fsGroups per namespace (restricted-v2 SCC): fixed ones are refused."""
    report = _judged(NO_FIXED_IDS, args, report)
    if report is None:
        return
    what = describe(args.props)
    for pod in pod_specs(args.props):
        pod_context = pod.spec.get("securityContext") or {}
        for field in ("runAsUser", "runAsGroup", "fsGroup"):
            if pod_context.get(field) is not None:
                report(f"{what}: {pod.where}.securityContext.{field} is fixed to {pod_context[field]}")
        for _, container in pod.containers():
            for field in ("runAsUser", "runAsGroup"):
                value = (container.get("securityContext") or {}).get(field)
                if value is not None:
                    report(f"{what}: container {container.get('name')} fixes {field} to {value}")


# -- services and secrets ----------------------------------------------------------------------

LOAD_BALANCERS = "load-balancer-services"


def validate_load_balancers(args: ResourceValidationArgs, report: ReportViolation) -> None:
    report = _judged(LOAD_BALANCERS, args, report)
    if report is None or args.props.get("kind") != "Service":
        return
    if (args.props.get("spec") or {}).get("type") == "LoadBalancer" and not args.get_config().get(
        "allowLoadBalancer", False
    ):
        report(
            f"{describe(args.props)}: type LoadBalancer, which this environment does not allow "
            "(allowed: ClusterIP behind the ingress/route)"
        )


SECRETS = "secrets-not-plaintext"


def validate_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Secret values come from secret config. The typed Secret resource marks `data` secret itself;
    `stringData` (and `data` of untyped objects) must arrive as secret values."""
    report = _judged(SECRETS, args, report)
    if report is None or args.props.get("kind") != "Secret":
        return
    typed_secret = args.resource_type == "kubernetes:core/v1:Secret"
    for field in ("stringData", "data"):
        values = args.props.get(field)
        if is_secret(values) or not values or (field == "data" and typed_secret):
            continue
        plain = sorted(k for k, v in values.items() if not is_secret(v))
        if plain:
            report(
                f"{describe(args.props)}: {field} key(s) {', '.join(plain)} are plaintext in the stack "
                "(allowed: values from secret config, e.g. `pulumi config set --secret`)"
            )


RESOURCE_POLICIES: list[ResourceValidationPolicy] = [
    ResourceValidationPolicy(
        name=IMAGES_PINNED,
        description="Container images name a version: no :latest, no untagged images.",
        validate=validate_images_pinned,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
    ResourceValidationPolicy(
        name=IMAGES_BY_DIGEST,
        description="Container images are pinned by digest.",
        validate=validate_images_by_digest,
        enforcement_level=EnforcementLevel.ADVISORY,
        config_schema=_schema(),
    ),
    ResourceValidationPolicy(
        name=CONTAINER_RESOURCES,
        description="Every container sets CPU and memory requests and limits.",
        validate=validate_container_resources,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
    ResourceValidationPolicy(
        name=GPU_REQUESTS,
        description="Extended resources only by the GPU layer's published names; GPU limit equals request.",
        validate=validate_gpu_requests,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(gpuResourceNames={"type": "array", "items": {"type": "string"}}),
    ),
    ResourceValidationPolicy(
        name=HOST_ACCESS,
        description="No privileged containers, hostPath volumes or host namespaces outside the GPU system components.",
        validate=validate_host_access,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
    ResourceValidationPolicy(
        name=POD_SECURITY,
        description="Pods set the Pod Security restricted fields: runAsNonRoot, drop ALL, seccomp RuntimeDefault, "
        "allowPrivilegeEscalation false.",
        validate=validate_pod_security,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
    ResourceValidationPolicy(
        name=NO_FIXED_IDS,
        description="No fixed runAsUser/runAsGroup/fsGroup (OpenShift assigns them per namespace).",
        validate=validate_no_fixed_ids,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
    ResourceValidationPolicy(
        name=LOAD_BALANCERS,
        description="Services of type LoadBalancer only where the environment allows them.",
        validate=validate_load_balancers,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(allowLoadBalancer={"type": "boolean", "default": False}),
    ),
    ResourceValidationPolicy(
        name=SECRETS,
        description="Secrets carry no plaintext values from config.",
        validate=validate_secrets,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
]
