"""Reading Kubernetes objects as the policies see them: pod specs wherever a kind keeps one,
containers, resource quantities, image references and exemptions."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pulumi_policy import Secret

# Label keys an upstream component is known by; an exemption's `component` matches any of them.
COMPONENT_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app")
# Resource names Kubernetes itself defines; any other name with a domain is an extended resource.
NATIVE_RESOURCE_DOMAINS = ("kubernetes.io", "k8s.io")
CRD_KIND = "CustomResourceDefinition"


def is_kubernetes(resource_type: str) -> bool:
    return resource_type.startswith("kubernetes:") and not resource_type.startswith("kubernetes:helm.sh/")


# The platform installs a module's CRDs as one Helm release of a copy of its chart
# charts/crd-bundle under this folder, the release's values listing each CRD's name, group and
# kind (mlplatform.modules.crd_bundle).
CRD_BUNDLE_DIR = ".mlplatform/crd-releases/"
CRD_BUNDLE_VALUES_KEY = "customResourceDefinitions"


def bundled_crds(resource_type: str, props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """(name, group, kind) entries of the CRDs a CRD release installs; none for any other resource."""
    chart = props.get("chart")
    if resource_type != "kubernetes:helm.sh/v3:Release" or not str(chart or "").startswith(CRD_BUNDLE_DIR):
        return []
    values = props.get("values") or {}
    found = values.get(CRD_BUNDLE_VALUES_KEY) or []
    return [entry for entry in found if isinstance(entry, Mapping)] if is_list(found) else []


def metadata(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return props.get("metadata") or {}


def labels(props: Mapping[str, Any]) -> Mapping[str, str]:
    return metadata(props).get("labels") or {}


def describe(props: Mapping[str, Any]) -> str:
    """`Kind namespace/name` (or `Kind name` for cluster-scoped objects)."""
    meta = metadata(props)
    namespace = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{props.get('kind', '?')} {namespace}/{name}" if namespace else f"{props.get('kind', '?')} {name}"


@dataclass(frozen=True)
class PodSpec:
    """A pod spec inside an object: `where` is its path (e.g. spec.template.spec)."""

    where: str
    spec: Mapping[str, Any]

    def containers(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for field in ("initContainers", "containers"):
            for container in self.spec.get(field) or []:
                if isinstance(container, Mapping):
                    yield field, container


def is_list(value: Any) -> bool:
    """Lists as plain values and as the engine's unknown-checking proxies."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _is_pod_spec(value: Mapping[str, Any]) -> bool:
    containers = value.get("containers")
    return is_list(containers) and bool(containers) and all(isinstance(c, Mapping) for c in containers)


def pod_specs(props: Mapping[str, Any]) -> list[PodSpec]:
    """Every pod spec the object carries, whatever its kind: Pods, workload templates and custom
    resources that embed pod templates (notebooks, training jobs, serving runtimes)."""
    if props.get("kind") == CRD_KIND:
        return []
    found: list[PodSpec] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            if _is_pod_spec(value):
                found.append(PodSpec(path or ".", value))
            for key, child in value.items():
                if key != "metadata":
                    walk(child, f"{path}.{key}" if path else key)
        elif is_list(value):
            for index, child in enumerate(value):
                walk(child, f"{path}[{index}]")

    walk({k: v for k, v in props.items() if k not in ("apiVersion", "kind", "metadata")}, "")
    return found


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number (binary and decimal suffixes); None if unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "n": Decimal("1e-9"),
        "u": Decimal("1e-6"),
        "m": Decimal("1e-3"),
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "P": 10**15,
        "E": 10**18,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * Decimal(suffixes[suffix])
            except InvalidOperation:
                return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def is_extended_resource(name: str) -> bool:
    """Extended resources carry a domain outside Kubernetes' own (nvidia.com/gpu, example.com/x)."""
    if "/" not in name:
        return False
    domain = name.split("/", 1)[0]
    return not any(domain == d or domain.endswith("." + d) for d in NATIVE_RESOURCE_DOMAINS)


def quota_resource(key: str) -> str | None:
    """The resource a ResourceQuota `hard` key constrains (requests.nvidia.com/gpu -> nvidia.com/gpu);
    None for object counts and storage-class keys."""
    if key.startswith("count/") or ".storageclass.storage.k8s.io/" in key:
        return None
    for prefix in ("requests.", "limits."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None


def parse_image(image: str) -> ImageRef:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
    else:
        repository, tag = name, None
    return ImageRef(repository=repository, tag=tag, digest=digest or None)


def is_secret(value: Any) -> bool:
    return isinstance(value, Secret)


# -- exemptions -----------------------------------------------------------------------------

EXEMPTION_SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "Objects this policy does not apply to, each with the reason (upstream components).",
    "items": {
        "type": "object",
        "properties": {
            "namespace": {"type": "string"},
            "component": {"type": "string"},
            "kind": {"type": "string"},
            "name": {"type": "string"},
            "reason": {"type": "string", "minLength": 10},
        },
        "required": ["reason"],
        "additionalProperties": False,
    },
}


@dataclass(frozen=True)
class Exemption:
    """One documented exception: every field given must match (shell patterns); reason is required."""

    reason: str
    namespace: str | None = None
    component: str | None = None
    kind: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> Exemption:
        if not entry.get("reason"):
            raise ValueError(f"exemption {dict(entry)} has no reason")
        if not any(entry.get(k) for k in ("namespace", "component", "kind", "name")):
            raise ValueError(f"exemption {dict(entry)} names no namespace, component, kind or name")
        return cls(**{k: entry.get(k) for k in ("reason", "namespace", "component", "kind", "name")})

    def matches(self, props: Mapping[str, Any]) -> bool:
        meta = metadata(props)
        checks = [
            (self.namespace, [meta.get("namespace") or ""]),
            (self.kind, [props.get("kind") or ""]),
            (self.name, [meta.get("name") or ""]),
            (self.component, [labels(props).get(k) or "" for k in COMPONENT_LABELS]),
        ]
        return all(
            pattern is None or any(fnmatch.fnmatchcase(value, pattern) for value in values if value)
            for pattern, values in checks
        )

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in vars(self).items() if k != "reason" and v]
        return ", ".join(parts)


@dataclass(frozen=True)
class ExemptionUse:
    policy: str
    target: str
    exemption: Exemption


# Every exemption that waived a violation, in order: the offline runner prints them, so none is silent.
APPLIED: list[ExemptionUse] = []


def exempted(policy: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """True (and recorded) when a documented exemption of `policy` covers this object. Called
    only for objects in violation, so the record counts what the exemptions actually waive."""
    for entry in config.get("exemptions") or []:
        exemption = Exemption.parse(entry)
        if exemption.matches(props):
            APPLIED.append(ExemptionUse(policy, describe(props), exemption))
            return True
    return False


def waiving(policy: str, props: Mapping[str, Any], config: Mapping[str, Any], report: Any) -> Any:
    """`report`, unless an exemption covers the object: then its violations are waived (recorded once)."""
    decided: list[bool] = []

    def report_unless_exempt(message: str, urn: str | None = None) -> None:
        if not decided:
            decided.append(exempted(policy, props, config))
        if not decided[0]:
            report(message) if urn is None else report(message, urn)

    return report_unless_exempt
