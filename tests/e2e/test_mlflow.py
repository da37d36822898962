"""MLflow as each stack renders it, on the real apiserver: admitted under restricted Pod
Security, the tracking server Available and the schema migration Job complete (kwok runs no
container: it marks pods Ready, and completes pods that a Job owns)."""

from __future__ import annotations

import pytest

from tests.conftest import STACKS

NAMESPACE = "mlflow"


@pytest.mark.parametrize("stack", STACKS)
def test_mlflow_server_becomes_available_and_its_migration_completes(stack_planes, stack):
    deployed = stack_planes(stack)
    plane, manifests = deployed.plane, deployed.manifests
    ours = [m for m in manifests if m["metadata"].get("namespace") == NAMESPACE]
    jobs = [m["metadata"]["name"] for m in ours if m["kind"] == "Job"]
    assert len(jobs) == 1 and jobs[0].startswith("mlflow-db-upgrade-")
    namespace = plane.get("namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    plane.kubectl("wait", "--for=condition=Available", "deployment/mlflow", "-n", NAMESPACE, "--timeout=120s")
    plane.kubectl("wait", "--for=condition=Complete", f"job/{jobs[0]}", "-n", NAMESPACE, "--timeout=120s")
    deployment = plane.get("deployment", "mlflow", "-n", NAMESPACE)
    assert deployment["status"]["availableReplicas"] == deployment["spec"]["replicas"]

    # The server's Service selects the server's pods.
    endpoints = plane.get("endpointslices", "-n", NAMESPACE, "-l", "kubernetes.io/service-name=mlflow")
    ready = [e for s in endpoints["items"] for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
    assert len(ready) == deployment["spec"]["replicas"]

    kinds = {(m["kind"], m["metadata"]["name"]) for m in ours}
    in_cluster_stores = {("StatefulSet", "mlflow-postgres"), ("StatefulSet", "mlflow-objectstore")}
    if stack == "cloud":
        assert not kinds & in_cluster_stores
    else:
        assert in_cluster_stores <= kinds
        for _, name in in_cluster_stores:
            plane.get("statefulset", name, "-n", NAMESPACE)
    exposure = "Route" if stack == "openshift" else "Ingress"
    assert plane.get(exposure.lower(), "mlflow", "-n", NAMESPACE)["spec"]
