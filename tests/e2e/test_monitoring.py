"""Each stack's monitoring flavour on the control plane: lab and cloud bring the Prometheus
Operator's CRDs and run kube-prometheus (the operator, exporters, Grafana); OpenShift's cluster
serves the CRDs and gets user workload monitoring switched on. The alert rules are accepted by the apiserver either way."""

from __future__ import annotations

import copy
import json

import pytest

from mlplatform.modules.monitoring import PROMETHEUS_NAME
from tests.conftest import STACKS

RULE_NAMES = {"ml-alerts-gpu", "ml-alerts-capacity", "ml-alerts-models"}


def _deployment_available(plane, namespace: str, name: str) -> bool:
    status = plane.get("deployment", name, "-n", namespace).get("status", {})
    return any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions", []))


@pytest.mark.parametrize("stack", STACKS)
def test_monitoring_flavour_applies_and_its_rules_are_accepted(stack_planes, stack):
    deployed = stack_planes(stack)
    plane, manifests = deployed.plane, deployed.manifests
    own_prometheus = any(
        m["kind"] == "CustomResourceDefinition" and m["spec"]["group"] == "monitoring.coreos.com" for m in manifests
    )
    assert own_prometheus == (stack != "openshift")

    rules = plane.get("prometheusrules", "-n", "monitoring", "-l", "mlplatform.io/monitoring=true")["items"]
    assert {r["metadata"]["name"] for r in rules} >= RULE_NAMES
    deployments = {d["metadata"]["name"] for d in plane.get("deployments", "-n", "monitoring")["items"]}
    # The model metrics gateway runs on every environment: jobs push model quality there.
    plane.wait_for(
        "deployment monitoring/model-metrics Available",
        lambda: _deployment_available(plane, "monitoring", "model-metrics"),
        timeout=120,
    )
    if own_prometheus:
        for name in ("prometheus-operator", "kube-state-metrics", "grafana"):
            plane.wait_for(
                f"deployment monitoring/{name} Available",
                lambda n=name: _deployment_available(plane, "monitoring", n),
                timeout=120,
            )
        prometheus = plane.get("prometheus", PROMETHEUS_NAME, "-n", "monitoring")
        assert prometheus["spec"]["ruleSelector"] == {"matchLabels": {"mlplatform.io/monitoring": "true"}}
    else:
        assert deployments == {"model-metrics"}, f"no Prometheus stack of ours on {stack}, found {deployments}"
        config = plane.get("configmap", "cluster-monitoring-config", "-n", "openshift-monitoring")
        assert "enableUserWorkload: true" in config["data"]["config.yaml"]

    # The apiserver validates rules against the served CRD: an unknown field is refused.
    rule = copy.deepcopy(next(r for r in rules if r["metadata"]["name"] == "ml-alerts-models"))
    bogus = {
        "apiVersion": rule["apiVersion"],
        "kind": rule["kind"],
        "metadata": {"name": "bogus-rule", "namespace": "monitoring"},
        "spec": {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "vector(1)", "severity": "page"}]}]},
    }
    proc = plane.kubectl(
        "apply", "--server-side", "--field-manager=e2e", "-f", "-", input_text=json.dumps(bogus), check=False
    )
    assert proc.returncode != 0 and ".rules[0].severity: field not declared in schema" in proc.stderr, proc.stderr
