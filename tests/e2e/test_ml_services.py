"""The ML services of each stack on the real apiserver: CRDs Established, every controller
Deployment Available (kwok runs the pods), and the example custom resources accepted, or
refused where the platform's rules say so."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import REPO_ROOT, STACKS

EXAMPLES = REPO_ROOT / "examples" / "stock-prediction"
SERVICE_MODULES = {"notebooks", "pipelines", "katib", "kserve", "training", "kserve-cert-manager"}


def bind_volumes(plane, manifests: list[dict]) -> None:
    """Simulated plane only: no storage provisioner runs, so each claim gets a volume bound to
    it up front (a real cluster's default StorageClass provisions one)."""
    for claim in (m for m in manifests if m["kind"] == "PersistentVolumeClaim"):
        namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"sim-{namespace}-{name}"},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "hostPath": {"path": f"/var/lib/sim/{namespace}/{name}"},
                "claimRef": {"namespace": namespace, "name": name},
                "storageClassName": claim["spec"].get("storageClassName", ""),
            },
        }
        plane.kubectl("apply", "-f", "-", input_text=json.dumps(volume))


def service_deployments(manifests: list[dict]) -> list[tuple[str, str]]:
    return sorted(
        (m["metadata"]["namespace"], m["metadata"]["name"])
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["labels"].get("mlplatform.io/module") in SERVICE_MODULES
    )


def unavailable(plane, deployments: list[tuple[str, str]]) -> list[str]:
    waiting = []
    for namespace, name in deployments:
        status = plane.get("deployment", name, "-n", namespace).get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conditions.get("Available") != "True":
            waiting.append(f"{namespace}/{name}")
    return waiting


def apply_example(plane, name: str, namespace: str, change=None):
    document = yaml.safe_load((EXAMPLES / name).read_text())
    document["metadata"]["namespace"] = namespace
    if change:
        change(document)
    return plane.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(document), check=False)


@pytest.mark.parametrize("stack", STACKS)
def test_ml_services_come_up_and_accept_their_resources(stack_planes, stack):
    deployed = stack_planes(stack)
    plane, manifests = deployed.plane, deployed.manifests

    crds = [m["metadata"]["name"] for m in manifests if m["kind"] == "CustomResourceDefinition"]
    established = plane.kubectl("wait", "--for=condition=Established", "crd", *crds, "--timeout=60s")
    assert established.returncode == 0

    deployments = service_deployments(manifests)
    assert len(deployments) >= 20, deployments
    plane.wait_for(
        f"{len(deployments)} service Deployments Available",
        lambda: not unavailable(plane, deployments),
        timeout=240,
    )

    team = next(
        m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace" and "team-" in m["metadata"]["name"]
    )
    accepted = apply_example(plane, "inference-service.yaml", team)
    assert accepted.returncode == 0, accepted.stderr
    accepted = apply_example(plane, "katib-experiment.yaml", team)
    assert accepted.returncode == 0, accepted.stderr
    accepted = apply_example(plane, "notebook.yaml", team)
    assert accepted.returncode == 0, accepted.stderr

    # The platform's notebook rules, enforced by the apiserver itself.
    def off_list(document):
        document["metadata"]["name"] = "off-list"
        document["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/library/python:latest"

    refused = apply_example(plane, "notebook.yaml", team, off_list)
    assert refused.returncode != 0 and "notebook images must be one of" in refused.stderr, refused.stderr

    def greedy(document):
        document["metadata"]["name"] = "greedy"
        limits = document["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        limits["nvidia.com/gpu"] = 2

    refused = apply_example(plane, "notebook.yaml", team, greedy)
    assert refused.returncode != 0 and "notebook" in refused.stderr, refused.stderr
