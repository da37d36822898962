"""What selects what in every shipped stack's render: a workload's selector matches its own pod
template (the API server refuses it otherwise), a Service with a selector selects some pod
template of the render or a pod an operator makes from a rendered object, and a ServiceMonitor
of ours finds a Service. Labels we add must never break a selector upstream wrote."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT, STACKS, render_shared

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job")
# Objects whose pods their operator makes (pod labels from the object's spec): kind -> how.
OPERATOR_PODS = {
    # prometheus-operator: app.kubernetes.io/name and the object's name under its kind's key,
    # plus spec.podMetadata.labels.
    "Prometheus": "prometheus",
    "Alertmanager": "alertmanager",
}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_templates(manifests: list[dict]) -> list[tuple[str, dict[str, str]]]:
    found = []
    for m in manifests:
        namespace = m["metadata"].get("namespace", "")
        if m["kind"] in WORKLOADS:
            found.append((namespace, m["spec"]["template"]["metadata"].get("labels") or {}))
        elif m["kind"] == "CronJob":
            found.append((namespace, m["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels") or {}))
        elif m["kind"] in OPERATOR_PODS:
            key = OPERATOR_PODS[m["kind"]]
            labels = {
                **((m["spec"].get("podMetadata") or {}).get("labels") or {}),
                "app.kubernetes.io/name": key,
                key: m["metadata"]["name"],
            }
            found.append((namespace, labels))
    return found


# Fixture stacks that turn on what no shipped stack does (KServe Serverless: Knative Serving).
FIXTURE_STACKS = (str(REPO_ROOT / "tests" / "fixtures" / "stacks" / "Pulumi.lab-serverless.yaml"),)


@pytest.fixture(scope="module", params=STACKS + FIXTURE_STACKS)
def rendered(request, mirror_env):
    return request.param, render_shared(request.param)


@pytest.fixture(scope="module", params=STACKS)
def rendered_with_monitoring(request, mirror_env):
    """The shipped stacks: each runs the monitoring module (the fixtures do not)."""
    return request.param, render_shared(request.param)


@pytest.fixture(scope="module")
def mirror_env():
    from tests.conftest import UPSTREAM_MIRROR

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLPLATFORM_MIRROR", str(UPSTREAM_MIRROR))
        yield


def test_every_workload_selects_its_own_pod_template(rendered):
    stack, manifests = rendered
    broken = []
    for m in manifests:
        if m["kind"] not in WORKLOADS or "selector" not in m["spec"]:
            continue
        selector = m["spec"]["selector"].get("matchLabels") or {}
        if not _matches(selector, m["spec"]["template"]["metadata"].get("labels") or {}):
            broken.append(f"{m['kind']} {m['metadata'].get('namespace')}/{m['metadata']['name']}")
    assert broken == [], f"{stack}: selector does not match the pod template: {broken}"


def test_every_service_selects_pods_of_the_render(rendered):
    stack, manifests = rendered
    templates = _pod_templates(manifests)
    assert templates
    lonely = []
    for m in manifests:
        selector = m["spec"].get("selector") if m["kind"] == "Service" else None
        if not selector:
            continue
        namespace = m["metadata"].get("namespace", "")
        if not any(ns == namespace and _matches(selector, labels) for ns, labels in templates):
            lonely.append(f"{namespace}/{m['metadata']['name']}")
    # Services whose pods the stack's users create (model servers, notebooks) are none of ours.
    assert lonely == [], f"{stack}: Services selecting no pod of the render: {lonely}"


def test_every_monitor_finds_its_targets_in_the_render(rendered_with_monitoring):
    """ServiceMonitors find a Service, PodMonitors a pod template, in the namespaces they name.
    Monitors of the cluster's own components (kubelet, API server, DNS: kube-system, default)
    select what the cluster runs, not the render."""
    stack, manifests = rendered_with_monitoring
    ours = {m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"}
    services = [
        (m["metadata"].get("namespace", ""), m["metadata"].get("labels") or {})
        for m in manifests
        if m["kind"] == "Service"
    ]
    targets = {"ServiceMonitor": services, "PodMonitor": _pod_templates(manifests)}
    checked, missing = 0, []
    for m in manifests:
        if m["kind"] not in targets or m["spec"]["selector"].get("matchExpressions"):
            continue
        spec = m["spec"]
        namespace_selector = spec.get("namespaceSelector") or {}
        namespaces = set(namespace_selector.get("matchNames") or [m["metadata"]["namespace"]])
        if namespace_selector.get("any"):
            namespaces = ours
        elif not namespaces <= ours:
            continue
        selector = spec["selector"].get("matchLabels") or {}
        checked += 1
        if not any(ns in namespaces and _matches(selector, labels) for ns, labels in targets[m["kind"]]):
            missing.append(f"{m['kind']} {m['metadata']['namespace']}/{m['metadata']['name']}")
    assert checked
    assert missing == [], f"{stack}: monitors that select nothing of the render: {missing}"
