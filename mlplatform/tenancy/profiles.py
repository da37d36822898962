"""What Kubeflow's Profile controller expects of a namespace it takes over, for the tenancy
module to write when workspaces is on: team namespaces stay tenancy's (one source of truth),
and the controller, finding them already as it would leave them, changes nothing.

Facts from upstream's controller (kubeflow/kubeflow components/profile-controller,
controllers/profile_controller.go, v1.10): a Profile whose namespace exists is reconciled only
when the namespace's `owner` annotation equals the Profile's owner; it then adds each label of
its namespace-labels file whose key is absent (never replacing a value) and removes keys
listed with an empty value. A namespace it creates itself it labels `istio-injection: enabled`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

# The annotation the controller compares with Profile.spec.owner.name.
OWNER_ANNOTATION = "owner"
# The controller's own label on the namespaces it creates: the mesh injects their pods.
ISTIO_INJECTION = {"istio-injection": "enabled"}
# The lock source and overlay of the controller, and its ConfigMap of default labels.
PROFILES_COMPONENT = "profiles"
NAMESPACE_LABELS_CONFIGMAP = "namespace-labels-data"
NAMESPACE_LABELS_FILE = "namespace-labels.yaml"


def default_labels(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The labels the controller gives profile namespaces, from its ConfigMap in an overlay build
    (an empty value: the controller removes that key)."""
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        if manifest["kind"] == "ConfigMap" and name.startswith(NAMESPACE_LABELS_CONFIGMAP):
            parsed = yaml.safe_load(manifest["data"][NAMESPACE_LABELS_FILE]) or {}
            return {str(k): "" if v is None else str(v) for k, v in parsed.items()}
    raise KeyError(f"the {PROFILES_COMPONENT} build has no ConfigMap {NAMESPACE_LABELS_CONFIGMAP}")


def controller_labels(resolved: Any) -> dict[str, str]:
    """Every label the controller would set on a namespace of this stack's profiles: its
    namespace-labels file (from the pinned profiles overlay) and istio-injection."""
    from mlplatform.overlays import build_overlay
    from mlplatform.upstream import upstream_sources

    sources = upstream_sources(resolved.lock_path, resolved.config.versions.pins)
    manifests = build_overlay(PROFILES_COMPONENT, resolved.config.environment, sources, resolved.mirror_path)
    return {**ISTIO_INJECTION, **default_labels(manifests)}


def with_controller_labels(
    labels: Mapping[str, str], controller: Mapping[str, str], ours: Mapping[str, str]
) -> dict[str, str]:
    """A team namespace's labels with the controller's defaults in: `ours` keep their values
    (Pod Security stays the profile's level: the controller would add its own only where the key
    is absent), every other default is written with the controller's value, and keys it would
    remove are left out. The controller then finds nothing to add or remove."""
    merged = dict(labels)
    for key, value in controller.items():
        if not value:
            merged.pop(key, None)
        elif key not in ours:
            merged[key] = value
    return merged
