"""A team member's journey on the lab stack, as that person: real requests to the apiserver
under impersonation (`--as` / `--as-group` with the team's groups from the stack), judged by
the apiserver's own RBAC, quota and admission. One row per (who, what, where) -> verdict."""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.on_stack("lab")

# From stacks/Pulumi.lab.yaml: vision's groups are admin vision-leads, edit vision, view
# analysts; nlp's edit group is nlp.
VISION, NLP = "team-vision", "team-nlp"
EDITOR, VIEWER, ADMIN = "vision", "analysts", "vision-leads"


def _notebook_image(plane) -> str:
    rules = plane.get("configmap", "notebook-defaults", "-n", VISION)["data"]
    return rules["allowedImages"].split("\n")[0]


def _restricted(container: dict) -> dict:
    return {
        **container,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _pod_template(image: str, limits: dict | None = None) -> dict:
    container = {"name": "main", "image": image}
    if limits:
        container["resources"] = {"limits": limits, "requests": limits}
    return {"spec": {"containers": [_restricted(container)], "restartPolicy": "Never"}}


def objects(image: str) -> dict[str, dict]:
    """One object of each module a team member makes, by the module that serves it."""
    name = f"j-{uuid.uuid4().hex[:6]}"
    return {
        "notebooks": {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Notebook",
            "metadata": {"name": name},
            "spec": {"template": _pod_template(image)},
        },
        "katib": {
            "apiVersion": "kubeflow.org/v1beta1",
            "kind": "Experiment",
            "metadata": {"name": name},
            "spec": {
                "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
                "algorithm": {"algorithmName": "random"},
                "maxTrialCount": 2,
                "parameters": [
                    {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.1"}}
                ],
                "trialTemplate": {
                    "primaryContainerName": "main",
                    "trialParameters": [{"name": "lr", "reference": "lr"}],
                    "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": _pod_template(image)}},
                },
            },
        },
        "kserve": {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://models/iris"}}},
        },
        "training": {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "metadata": {"name": name},
            "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": _pod_template(image)}}},
        },
        "gpu": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    _restricted(
                        {
                            "name": "main",
                            "image": image,
                            "resources": {"limits": {"nvidia.com/gpu.shared": "1"}},
                        }
                    )
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    }


MODULES = ["notebooks", "katib", "kserve", "training", "gpu"]
RESOURCES = {
    "notebooks": "notebooks.kubeflow.org",
    "katib": "experiments.kubeflow.org",
    "kserve": "inferenceservices.serving.kserve.io",
    "training": "pytorchjobs.kubeflow.org",
    "gpu": "pods",
}


def _create(plane, group: str, namespace: str, obj: dict):
    return plane.kubectl_as(group, "create", "-n", namespace, "-f", "-", input_text=json.dumps(obj))


# (module, who, namespace, allowed): each module's object, by each kind of person, here and there.
JOURNEY = [
    *[(module, EDITOR, VISION, True) for module in MODULES],
    *[(module, ADMIN, VISION, True) for module in MODULES],
    # Another team's namespace: no right there.
    *[(module, EDITOR, NLP, False) for module in MODULES],
    # Viewers read, and make nothing.
    *[(module, VIEWER, VISION, False) for module in MODULES],
]


@pytest.mark.parametrize(("module", "who", "namespace", "allowed"), JOURNEY)
def test_a_team_member_makes_each_modules_objects_only_where_their_role_allows(lab, module, who, namespace, allowed):
    obj = objects(_notebook_image(lab))[module]
    proc = _create(lab, who, namespace, obj)
    try:
        if allowed:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode != 0
            assert "is forbidden" in proc.stderr and f"{who}-member" in proc.stderr, proc.stderr
    finally:
        if proc.returncode == 0:
            lab.kubectl("delete", RESOURCES[module], obj["metadata"]["name"], "-n", namespace, "--wait=false")


@pytest.mark.parametrize("module", MODULES)
def test_nobody_in_a_team_reads_any_modules_objects_across_the_cluster(lab, module):
    for who in (EDITOR, ADMIN):
        proc = lab.kubectl_as(who, "get", RESOURCES[module], "--all-namespaces")
        assert proc.returncode != 0 and "cannot list resource" in proc.stderr and "at the cluster scope" in proc.stderr


@pytest.mark.parametrize("module", MODULES)
def test_viewers_read_their_teams_objects(lab, module):
    proc = lab.kubectl_as(VIEWER, "get", RESOURCES[module], "-n", VISION)
    assert proc.returncode == 0, proc.stderr


# What no one in the team may change, though the namespace is theirs.
GUARDS = [
    ("patch", "resourcequota", "team-quota", '{"spec":{"hard":{"requests.cpu":"1000"}}}'),
    ("patch", "limitrange", "team-defaults", '{"metadata":{"labels":{"x":"y"}}}'),
    ("delete", "networkpolicy", "default-deny", None),
]


@pytest.mark.parametrize(("verb", "kind", "name", "patch"), GUARDS)
@pytest.mark.parametrize("who", [EDITOR, ADMIN])
def test_team_members_cannot_loosen_their_own_limits_or_isolation(lab, who, verb, kind, name, patch):
    args = [verb, kind, name, "-n", VISION] + (["--type=merge", "-p", patch] if patch else [])
    proc = lab.kubectl_as(who, *args)
    assert proc.returncode != 0 and "is forbidden" in proc.stderr, proc.stderr


def test_admins_share_their_namespace_but_nothing_cluster_wide(lab):
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "guest"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mlplatform-team-view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "guest"}],
    }
    assert _create(lab, ADMIN, VISION, binding).returncode == 0
    lab.kubectl("delete", "rolebinding", "guest", "-n", VISION)
    # Editors do not hand out access.
    assert _create(lab, EDITOR, VISION, binding).returncode != 0
    cluster_binding = {**binding, "kind": "ClusterRoleBinding"}
    proc = lab.kubectl_as(ADMIN, "create", "-f", "-", input_text=json.dumps(cluster_binding))
    assert proc.returncode != 0 and "is forbidden" in proc.stderr


def test_the_clusters_reserved_priorities_stay_out_of_team_namespaces(lab):
    pod = objects(_notebook_image(lab))["gpu"]
    pod["spec"]["containers"][0]["resources"] = {}
    pod["spec"]["priorityClassName"] = "system-node-critical"
    proc = _create(lab, EDITOR, VISION, pod)
    assert proc.returncode != 0
    assert "exceeded quota: team-reserved-priorities" in proc.stderr, proc.stderr


def test_a_gpu_request_beyond_the_quota_is_refused_naming_the_resource(lab):
    # vision's quota: nvidia.com/gpu.shared 16.
    pod = objects(_notebook_image(lab))["gpu"]
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu.shared": "17"}}
    proc = _create(lab, EDITOR, VISION, pod)
    assert proc.returncode != 0
    assert "exceeded quota: team-quota" in proc.stderr and "requests.nvidia.com/gpu.shared=17" in proc.stderr


def test_a_team_admin_lets_pipeline_runs_deploy_models_into_their_namespace_only(lab):
    """The example's deploy-rbac.yaml, applied by the team's admin as that person: KFP's runner
    (namespace kubeflow) may then create InferenceServices there, with the team's model account
    and its `mlflow` ConfigMap, and still nowhere else."""
    import yaml

    from tests.conftest import REPO_ROOT

    runner = "system:serviceaccount:kubeflow:pipeline-runner"
    documents = list(yaml.safe_load_all((REPO_ROOT / "examples/stock-prediction/deploy-rbac.yaml").read_text()))
    for document in documents:
        document["metadata"]["namespace"] = VISION
    isvc = objects(_notebook_image(lab))["kserve"]
    isvc["spec"]["predictor"]["serviceAccountName"] = "mlflow-models"

    def as_runner(*args, input_text=None):
        return lab.kubectl(*args, f"--as={runner}", input_text=input_text, check=False)

    before = as_runner("create", "-n", VISION, "-f", "-", input_text=json.dumps(isvc))
    assert before.returncode != 0 and "forbidden" in before.stderr, before.stderr
    granted = lab.kubectl_as(
        ADMIN, "apply", "-f", "-", input_text=json.dumps({"kind": "List", "apiVersion": "v1", "items": documents})
    )
    assert granted.returncode == 0, granted.stderr
    try:
        created = as_runner("create", "-n", VISION, "-f", "-", input_text=json.dumps(isvc))
        assert created.returncode == 0, created.stderr
        team = as_runner("get", "configmap", "mlflow", "-n", VISION, "-o", "json")
        assert team.returncode == 0, team.stderr
        assert json.loads(team.stdout)["data"]["MLFLOW_MODELS_SERVICE_ACCOUNT"] == "mlflow-models"
        assert lab.kubectl("get", "serviceaccount", "mlflow-models", "-n", VISION, check=False).returncode == 0
        elsewhere = as_runner("create", "-n", NLP, "-f", "-", input_text=json.dumps(isvc))
        assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr, elsewhere.stderr
        secrets = as_runner("get", "secrets", "-n", VISION)
        assert secrets.returncode != 0 and "forbidden" in secrets.stderr
    finally:
        lab.kubectl(
            "delete", "inferenceservice", isvc["metadata"]["name"], "-n", VISION, "--ignore-not-found", check=False
        )
        lab.kubectl("delete", "role,rolebinding", "kfp-model-deployer", "-n", VISION, "--ignore-not-found", check=False)
