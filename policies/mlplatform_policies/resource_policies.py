"""Policies on one object at a time (ResourceValidationPolicy). Each works on kinds and fields,
so objects from any module, chart or upstream manifest are judged alike."""

from __future__ import annotations

import base64
import re
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

# Credentials upstream manifests ship as defaults: whoever read those manifests knows them, so an
# object still carrying one runs with a public password. Value -> where upstream sets it.
UPSTREAM_DEFAULT_CREDENTIALS: dict[str, str] = {
    # Kubeflow Pipelines' object store (mlpipeline-minio-artifact; SeaweedFS's admin identity).
    "minio": "Kubeflow Pipelines' default object store access key",
    "minio123": "Kubeflow Pipelines' default object store secret key",
    # MinIO's own root user and password when none is given.
    "minioadmin": "MinIO's default root credential",
    # Katib's MySQL root password (katib-mysql-secrets).
    "test": "Katib's default MySQL root password",
}
# Env vars that start a database with no password at all (the MySQL and MariaDB images; upstream
# KFP and Katib set the first), or that let every client in without one (the Postgres image).
EMPTY_PASSWORD_SWITCHES: dict[str, str] = {
    "MYSQL_ALLOW_EMPTY_PASSWORD": "MySQL's root account without a password",
    "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD": "MariaDB's root account without a password",
    "POSTGRES_HOST_AUTH_METHOD": "Postgres logins without a password",
}
# Names of values that are credentials; a name ending in one of the suffixes names where a
# credential is (a Secret's name, a file), not the credential.
_CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_?KEY|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)
_REFERENCE_SUFFIXES = ("_NAME", "_FILE", "_PATH", "_DIR", "_URL", "_URI", "_ENDPOINT", "_NAMESPACE", "_REF")
# `$(VAR)`: Kubernetes expands another env var of the container, itself judged on its own.
_ENV_REFERENCE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")
_ALLOWED = "allowed: a value from the stack's secrets, `mlplatform:secrets` (`mlplatform secrets generate`)"


def _unwrapped(value: Any) -> Any:
    while is_secret(value):
        value = value.value
    return value


def is_credential_name(name: str) -> bool:
    upper = name.upper()
    return (
        bool(_CREDENTIAL_NAME.search(name))
        and not upper.endswith(_REFERENCE_SUFFIXES)
        and upper not in EMPTY_PASSWORD_SWITCHES
    )


def _switch_on(name: str, value: Any) -> bool:
    text = str(value if value is not None else "")
    if name == "POSTGRES_HOST_AUTH_METHOD":
        return text.strip().lower() == "trust"
    return text.strip() != ""  # the images read any non-empty value as yes


def default_credential_problems(props: Mapping[str, Any]) -> list[str]:
    """Upstream default credentials and password-less switches in a Secret's values or in the
    containers' env, and literal values of env vars named as credentials. Secret values are
    judged through their secret mark: a default stays a default when it arrives encrypted."""
    what = describe(props)
    problems = []
    if props.get("kind") == "Secret":
        for field in ("stringData", "data"):
            values = _unwrapped(props.get(field))
            if not isinstance(values, Mapping):
                continue
            for key in sorted(values):
                value = _unwrapped(values[key])
                if field == "data" and isinstance(value, str):
                    try:
                        value = base64.b64decode(value, validate=True).decode()
                    except (ValueError, UnicodeDecodeError):
                        continue
                if value in UPSTREAM_DEFAULT_CREDENTIALS:
                    problems.append(
                        f"{what}: {field} key {key} holds {UPSTREAM_DEFAULT_CREDENTIALS[value]} "
                        f"(an upstream default credential; {_ALLOWED})"
                    )
                elif value == "" and is_credential_name(key):
                    problems.append(f"{what}: {field} key {key} is an empty credential ({_ALLOWED})")
    for pod in pod_specs(props):
        for _, container in pod.containers():
            for env in _unwrapped(container.get("env")) or []:
                env = _unwrapped(env)
                if not isinstance(env, Mapping) or "value" not in env:
                    continue
                name, value = str(env.get("name", "")), _unwrapped(env.get("value"))
                where = f"{what}: container {container.get('name')} env {name}"
                if name.upper() in EMPTY_PASSWORD_SWITCHES:
                    if _switch_on(name.upper(), value):
                        problems.append(f"{where}={value}: {EMPTY_PASSWORD_SWITCHES[name.upper()]} ({_ALLOWED})")
                elif value in UPSTREAM_DEFAULT_CREDENTIALS:
                    problems.append(
                        f"{where} holds {UPSTREAM_DEFAULT_CREDENTIALS[value]} (an upstream default credential; {_ALLOWED})"
                    )
                elif is_credential_name(name) and not _ENV_REFERENCE.fullmatch(str(value)):
                    problems.append(
                        f"{where} is a literal value in the stack (allowed: valueFrom.secretKeyRef to a Secret)"
                    )
    return problems


def validate_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Secret values come from secret config. The typed Secret resource marks `data` secret itself;
    `stringData` (and `data` of untyped objects) must arrive as secret values. Whatever their
    mark, no Secret or container env carries an upstream default credential, and credentials
    in env come from Secrets."""
    report = _judged(SECRETS, args, report)
    if report is None:
        return
    for problem in default_credential_problems(args.props):
        report(problem)
    if args.props.get("kind") != "Secret":
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
        description="Secrets carry no plaintext values from config; no Secret or container env carries an "
        "upstream default credential or a literal credential.",
        validate=validate_secrets,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=_schema(),
    ),
]
