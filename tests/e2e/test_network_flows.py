"""Who may talk to whom on the lab stack, judged by a NetworkPolicy engine over the policies
applied to the plane.

The plane has no CNI, so nothing enforces a policy there; cyclonus (pinned in the lock) reads
the NetworkPolicies the apiserver holds and says, for each flow, whether it is allowed. The
flows' endpoints are pods as the applied workloads label them (upstream's manifests, our
chart), as the Prometheus operator labels the pods it makes, and as kubeadm labels CoreDNS;
the expected verdict of each row is written here, by hand, from what a team may reach.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field

import pytest

from mlplatform.paths import BIN_DIR

pytestmark = pytest.mark.on_stack("lab")

VISION, NLP = "team-vision", "team-nlp"
# From stacks/Pulumi.lab.yaml: the API server's and the package mirror's addresses.
KUBE_API_ADDRESS, PACKAGE_MIRROR = "192.168.10.2", "192.168.20.15"


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    # Which workload on the plane the labels come from ((kind, name) or a label query).
    workload: tuple[str, ...] = ()


@dataclass(frozen=True)
class Address:
    ip: str


# name -> where it runs; labels of workloads are read from the plane below.
ENDPOINTS: dict[str, Pod | Address] = {
    "vision pod": Pod(VISION, {"app": "trainer"}),
    "vision model server": Pod(VISION, {"serving.kserve.io/inferenceservice": "churn"}),
    "nlp pod": Pod(NLP, {"app": "tokenizer"}),
    "MLflow server": Pod("mlflow", workload=("deployment", "-l", "app.kubernetes.io/component=server")),
    "MLflow Postgres": Pod("mlflow", workload=("statefulset", "-l", "app.kubernetes.io/component=postgres")),
    "MLflow object store": Pod("mlflow", workload=("statefulset", "-l", "app.kubernetes.io/component=objectstore")),
    "KFP API": Pod("kubeflow", workload=("deployment", "ml-pipeline")),
    "KFP MySQL": Pod("kubeflow", workload=("deployment", "mysql")),
    "KFP object store": Pod("kubeflow", workload=("deployment", "seaweedfs")),
    "Katib MySQL": Pod("kubeflow", workload=("deployment", "katib-mysql")),
    "Katib DB manager": Pod("kubeflow", workload=("deployment", "katib-db-manager")),
    # A KFP run's step: Argo labels the pods of a workflow with its name.
    "KFP step": Pod(
        "kubeflow", {"workflows.argoproj.io/workflow": "train-7x2k", "pipelines.kubeflow.org/v2_component": "true"}
    ),
    # The Prometheus operator labels the pods it makes with the kind and the object's name.
    "Prometheus": Pod("monitoring", workload=("prometheus",)),
    "Alertmanager": Pod("monitoring", workload=("alertmanager",)),
    "model metrics gateway": Pod("monitoring", workload=("deployment", "model-metrics")),
    "ingress controller": Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "CoreDNS": Pod("kube-system", {"k8s-app": "kube-dns"}),
    "default namespace pod": Pod("default", {"app": "stray"}),
    "cloud metadata": Address("169.254.169.254"),
    "Kubernetes API": Address(KUBE_API_ADDRESS),
    "package mirror": Address(PACKAGE_MIRROR),
    "internet": Address("8.8.8.8"),
}

# (source, destination, port, protocol) -> allowed?
FLOWS: list[tuple[str, str, int, str, bool]] = [
    ("vision pod", "vision model server", 8080, "TCP", True),
    ("vision pod", "nlp pod", 8080, "TCP", False),
    ("nlp pod", "vision model server", 8080, "TCP", False),
    ("vision pod", "CoreDNS", 53, "UDP", True),
    ("vision pod", "CoreDNS", 53, "TCP", True),
    ("vision pod", "MLflow server", 5000, "TCP", True),
    ("vision model server", "MLflow object store", 8333, "TCP", True),
    ("vision pod", "MLflow Postgres", 5432, "TCP", False),
    ("vision pod", "KFP API", 8888, "TCP", True),
    ("vision pod", "KFP MySQL", 3306, "TCP", False),
    # Multi-user Pipelines (the lab's): runs execute in the team's namespace and read and write
    # their artifacts in KFP's store, with the keys the namespace holds.
    ("vision pod", "KFP object store", 8333, "TCP", True),
    ("vision pod", "Katib MySQL", 3306, "TCP", False),
    ("vision pod", "Katib DB manager", 6789, "TCP", True),
    ("vision pod", "Alertmanager", 9093, "TCP", False),
    ("vision pod", "Prometheus", 9090, "TCP", False),
    ("vision pod", "cloud metadata", 80, "TCP", False),
    ("vision pod", "Kubernetes API", 6443, "TCP", True),
    ("vision pod", "Kubernetes API", 22, "TCP", False),
    ("vision pod", "package mirror", 443, "TCP", True),
    ("vision pod", "internet", 443, "TCP", False),
    ("KFP step", "MLflow server", 5000, "TCP", True),
    ("KFP step", "KFP object store", 8333, "TCP", True),
    ("KFP API", "KFP MySQL", 3306, "TCP", True),
    ("Katib DB manager", "Katib MySQL", 3306, "TCP", True),
    ("MLflow server", "MLflow Postgres", 5432, "TCP", True),
    ("MLflow server", "MLflow object store", 8333, "TCP", True),
    ("default namespace pod", "MLflow server", 5000, "TCP", False),
    ("default namespace pod", "KFP MySQL", 3306, "TCP", False),
    ("Prometheus", "vision model server", 8080, "TCP", True),
    ("Prometheus", "MLflow server", 5000, "TCP", True),
    ("Prometheus", "Alertmanager", 9093, "TCP", True),
    ("vision pod", "model metrics gateway", 9091, "TCP", True),
    ("KFP step", "model metrics gateway", 9091, "TCP", True),
    ("Prometheus", "model metrics gateway", 9091, "TCP", True),
    ("default namespace pod", "model metrics gateway", 9091, "TCP", False),
    ("ingress controller", "vision model server", 8080, "TCP", True),
    ("ingress controller", "MLflow server", 5000, "TCP", True),
]


def _row_id(row: tuple) -> str:
    source, destination, port, protocol, allowed = row
    return f"{source} -> {destination}:{port}/{protocol} {'allow' if allowed else 'deny'}"


def _pod_labels(plane, pod: Pod) -> dict[str, str]:
    if not pod.workload:
        return dict(pod.labels)
    kind, *query = pod.workload
    if kind in ("prometheus", "alertmanager"):
        (item,) = plane.get(kind, "-n", pod.namespace)["items"]
        # What the operator puts on the pods of a Prometheus/Alertmanager object: the object's
        # podMetadata labels (upstream's policies select on them) and its kind and name.
        labels = ((item["spec"].get("podMetadata") or {}).get("labels")) or {}
        return {**labels, "app.kubernetes.io/name": kind, kind: item["metadata"]["name"]}
    found = plane.get(kind, *query, "-n", pod.namespace)
    (workload,) = found.get("items", [found])
    return workload["spec"]["template"]["metadata"]["labels"]


def _namespace_labels(plane, namespace: str) -> dict[str, str]:
    found = plane.kubectl("get", "namespace", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        # Not on the plane (an ingress controller the cluster brings): what the apiserver sets.
        return {"kubernetes.io/metadata.name": namespace}
    return json.loads(found.stdout)["metadata"]["labels"]


@pytest.fixture(scope="module")
def verdicts(stack_planes, tmp_path_factory) -> dict[str, bool]:
    plane = stack_planes("lab").plane
    cyclonus = BIN_DIR / "cyclonus"
    if not cyclonus.exists():
        pytest.fail("the flow table needs cyclonus: run `make tools-test` (make e2e does)", pytrace=False)
    peers = {}
    for index, (name, endpoint) in enumerate(ENDPOINTS.items()):
        if isinstance(endpoint, Address):
            peers[name] = {"IP": endpoint.ip}
            continue
        peers[name] = {
            "Internal": {
                "Namespace": endpoint.namespace,
                "NamespaceLabels": _namespace_labels(plane, endpoint.namespace),
                "PodLabels": _pod_labels(plane, endpoint),
            },
            # Pod addresses from a range no team CIDR of the stack covers.
            "IP": f"10.244.{index}.10",
        }
    work = tmp_path_factory.mktemp("flows")
    (work / "policies").mkdir()
    applied = plane.kubectl("get", "networkpolicies", "--all-namespaces", "-o", "json").stdout
    (work / "policies" / "applied.json").write_text(applied)
    traffic = [
        {
            "Source": peers[source],
            "Destination": peers[destination],
            "ResolvedPort": port,
            "ResolvedPortName": "",
            "Protocol": protocol,
        }
        for source, destination, port, protocol, _ in FLOWS
    ]
    (work / "traffic.json").write_text(json.dumps(traffic, indent=2))
    proc = subprocess.run(
        [
            str(cyclonus),
            "analyze",
            "--mode=query-traffic",
            f"--policy-path={work / 'policies'}",
            f"--traffic-path={work / 'traffic.json'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (work / "verdicts.txt").write_text(proc.stdout)
    # One "Is traffic allowed?" table per flow, in order, its footer holding the verdict.
    answers = re.findall(r"\|\s*IS ALLOWED\?\s*\|\s*(TRUE|FALSE)\s*\|", proc.stdout)
    assert len(answers) == len(FLOWS), f"cyclonus answered {len(answers)} of {len(FLOWS)} flows: {work}"
    return {_row_id(row): answer == "TRUE" for row, answer in zip(FLOWS, answers, strict=True)}


@pytest.mark.parametrize("row", FLOWS, ids=_row_id)
def test_flow(verdicts, row):
    allowed = row[-1]
    assert verdicts[_row_id(row)] is allowed, (
        f"{_row_id(row)}: the applied policies {'deny' if allowed else 'allow'} it"
    )


def test_every_applied_policy_is_read(stack_planes, tmp_path):
    """The engine must see the policies as applied: a count that drops means it skipped some."""
    plane = stack_planes("lab").plane
    applied = plane.get("networkpolicies", "--all-namespaces")["items"]
    (tmp_path / "applied.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": applied}))
    proc = subprocess.run(
        [str(BIN_DIR / "cyclonus"), "analyze", "--mode=parse", f"--policy-path={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The parse table names each policy it read as <namespace>/<name> in its first column.
    read = set(re.findall(r"^\|\s+([a-z0-9-]+/[a-z0-9.-]+)\s+\|", proc.stdout, flags=re.MULTILINE))
    expected = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in applied}
    assert read == expected and len(expected) > 20, sorted(expected ^ read)
