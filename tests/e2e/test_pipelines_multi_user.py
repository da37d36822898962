"""Multi-user Kubeflow Pipelines on the applied lab stack: a run is an Argo Workflow in the
team's namespace. A member of the team's edit group makes one as KFP's API server makes it for
a run (KFP 2.16's compiled shape: a driver step and an executor step), members of other teams
and viewers cannot; the step pods Argo's controller makes from it, under its own service account
and with the controller's executor config and workflow defaults, are admitted by the team's
Pod Security level and counted in its quota (no controller runs here: the test makes them as it
would, and kwok marks them Running). Judged by the apiserver's own RBAC and admission."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from mlplatform.paths import BIN_DIR
from tests.simulated_profiles.controller import ProfileController

pytestmark = pytest.mark.on_stack("lab")

# From stacks/Pulumi.lab.yaml: vision's edit group is vision, its view group analysts; nlp's
# edit group is nlp.
VISION, NLP = "team-vision", "team-nlp"
EDITOR, VIEWER, OTHER_TEAM = "vision", "analysts", "nlp"


def _env(deployment: dict, name: str) -> str:
    for each in deployment["spec"]["template"]["spec"]["containers"]:
        for env in each.get("env") or []:
            if env["name"] == name:
                return env["value"]
    raise KeyError(name)


@pytest.fixture(scope="module")
def kfp(lab) -> dict:
    """What the installed KFP and Argo say about a run: the runner account, the driver and
    launcher images, the controller's account, executor image, executor config and defaults.
    The Profile controller's round first (its stand-in): it makes the runner account."""
    controller = ProfileController(str(BIN_DIR / "kubectl"), str(lab.kubeconfig))
    controller.reconcile_all()
    # No stand-in runs after this round: the stack's Profiles stay deletable.
    controller.stop()
    api = lab.get("deployment", "ml-pipeline", "-n", "kubeflow")
    server_config = next(
        item
        for item in lab.get("configmap", "-n", "kubeflow")["items"]
        if item["metadata"]["name"].startswith("pipeline-api-server-config")
    )
    controller = lab.get("deployment", "workflow-controller", "-n", "kubeflow")
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    workflow_config = lab.get("configmap", "workflow-controller-configmap", "-n", "kubeflow")["data"]
    return {
        "runner": server_config["data"]["DEFAULTPIPELINERUNNERSERVICEACCOUNT"],
        "driver": _env(api, "V2_DRIVER_IMAGE"),
        "launcher": _env(api, "V2_LAUNCHER_IMAGE"),
        "controller_account": controller["spec"]["template"]["spec"]["serviceAccountName"],
        "executor_image": args[args.index("--executor-image") + 1],
        "executor": yaml.safe_load(workflow_config["executor"]),
        "defaults": yaml.safe_load(workflow_config["workflowDefaults"])["spec"],
    }


def run_workflow(kfp: dict, name: str) -> dict:
    """A one-step run as KFP 2.16's API server submits it: the container driver resolves the
    step's inputs and writes the executor's pod spec patch; the executor's kfp-launcher init
    container copies the launcher in, the main container is replaced by that patch."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "labels": {"pipelines.kubeflow.org/v2_component": "true"},
            "annotations": {"pipelines.kubeflow.org/v2_pipeline": "true"},
        },
        "spec": {
            "entrypoint": "entrypoint",
            "serviceAccountName": kfp["runner"],
            "podMetadata": {"labels": {"pipelines.kubeflow.org/v2_component": "true"}},
            "templates": [
                {
                    "name": "system-container-driver",
                    "inputs": {"parameters": [{"name": "component"}, {"name": "task"}, {"name": "container"}]},
                    "container": {
                        "image": kfp["driver"],
                        "command": ["driver"],
                        "args": ["--type", "CONTAINER", "--component", "{{inputs.parameters.component}}"],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    },
                    "outputs": {
                        "parameters": [{"name": "pod-spec-patch", "valueFrom": {"path": "/tmp/outputs/pod-spec-patch"}}]
                    },
                },
                {
                    "name": "system-container-impl",
                    "inputs": {"parameters": [{"name": "pod-spec-patch"}]},
                    "podSpecPatch": "{{inputs.parameters.pod-spec-patch}}",
                    "initContainers": [
                        {
                            "name": "kfp-launcher",
                            "image": kfp["launcher"],
                            "command": ["launcher-v2", "--copy", "/kfp-launcher/launch"],
                        }
                    ],
                    "container": {
                        "image": "gcr.io/ml-pipeline/should-be-overridden-during-runtime",
                        "command": ["should-be-overridden-during-runtime"],
                    },
                },
                {
                    "name": "entrypoint",
                    "dag": {
                        "tasks": [
                            {
                                "name": "train-driver",
                                "template": "system-container-driver",
                                "arguments": {
                                    "parameters": [
                                        {"name": "component", "value": "{}"},
                                        {"name": "task", "value": "{}"},
                                        {"name": "container", "value": "{}"},
                                    ]
                                },
                            },
                            {
                                "name": "train",
                                "template": "system-container-impl",
                                "depends": "train-driver.Succeeded",
                                "arguments": {
                                    "parameters": [
                                        {
                                            "name": "pod-spec-patch",
                                            "value": "{{tasks.train-driver.outputs.parameters.pod-spec-patch}}",
                                        }
                                    ]
                                },
                            },
                        ]
                    },
                },
            ],
        },
    }


def step_pod(kfp: dict, workflow: str, namespace: str, main: dict) -> dict:
    """The pod Argo's controller makes for a container step: its init and wait containers as the
    executor config sets them, the workflow defaults' pod context and `main` patch applied."""
    executor = kfp["executor"]
    defaults = kfp["defaults"]
    patch = {c["name"]: c for c in json.loads(defaults.get("podSpecPatch") or "{}").get("containers", [])}
    main = {**main, "name": "main"}
    if "main" in patch:
        main["securityContext"] = {**(main.get("securityContext") or {}), **patch["main"].get("securityContext", {})}

    def argoexec(name: str) -> dict:
        return {
            "name": name,
            "image": kfp["executor_image"],
            "command": ["argoexec", name],
            "securityContext": executor.get("securityContext") or {},
        }

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{workflow}-{uuid.uuid4().hex[:5]}",
            "namespace": namespace,
            "labels": {"workflows.argoproj.io/workflow": workflow, "pipelines.kubeflow.org/v2_component": "true"},
        },
        "spec": {
            "serviceAccountName": kfp["runner"],
            "restartPolicy": "Never",
            "securityContext": defaults.get("securityContext") or {},
            "initContainers": [argoexec("init")],
            "containers": [argoexec("wait"), main],
        },
    }


def _create_as_controller(plane, kfp: dict, pod: dict):
    account = f"system:serviceaccount:kubeflow:{kfp['controller_account']}"
    return plane.kubectl("create", "-f", "-", f"--as={account}", input_text=json.dumps(pod), check=False)


def test_a_team_member_runs_a_pipeline_in_the_team_namespace_and_its_steps_are_admitted(lab, kfp):
    name = f"run-{uuid.uuid4().hex[:6]}"
    workflow = run_workflow(kfp, name)
    made = lab.kubectl_as(EDITOR, "create", "-n", VISION, "-f", "-", input_text=json.dumps(workflow))
    assert made.returncode == 0, made.stderr
    try:
        # The run's account is the team Profile's, in the team namespace.
        lab.get("serviceaccount", kfp["runner"], "-n", VISION)
        driver = step_pod(kfp, name, VISION, {"image": kfp["driver"], "command": ["driver"]})
        created = _create_as_controller(lab, kfp, driver)
        assert created.returncode == 0, created.stderr
        pod = driver["metadata"]["name"]
        lab.wait_for(
            f"pod {pod} running",
            lambda: lab.get("pod", pod, "-n", VISION).get("status", {}).get("phase") == "Running",
        )
        # Counted in the team's quota, with the team's default requests.
        quota = lab.get("resourcequota", "team-quota", "-n", VISION)
        assert int(quota["status"]["used"]["pods"]) >= 1
        running = lab.get("pod", pod, "-n", VISION)
        assert all(c.get("resources", {}).get("requests") for c in running["spec"]["containers"])
        # The user's step (what the driver's patch makes of `main`) is admitted the same way.
        step = step_pod(kfp, name, VISION, {"image": "python:3.11", "command": ["python", "-c", "print(1)"]})
        created = _create_as_controller(lab, kfp, step)
        assert created.returncode == 0, created.stderr
    finally:
        lab.kubectl("delete", "workflow", name, "-n", VISION, "--wait=false", check=False)
        lab.kubectl("delete", "pod", "-l", f"workflows.argoproj.io/workflow={name}", "-n", VISION, check=False)


def test_pod_security_is_what_admits_the_steps(lab, kfp):
    """Without the workflow defaults, the same step pod is refused: the namespace's level is
    restricted and it is enforced."""
    name = f"run-{uuid.uuid4().hex[:6]}"
    bare = {**kfp, "defaults": {}}
    pod = step_pod(bare, name, VISION, {"image": kfp["driver"], "command": ["driver"]})
    proc = _create_as_controller(lab, kfp, pod)
    if proc.returncode == 0:
        lab.kubectl("delete", "pod", pod["metadata"]["name"], "-n", VISION, "--wait=false")
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("who", "namespace"), [(OTHER_TEAM, VISION), (VIEWER, VISION), (EDITOR, NLP)])
def test_nobody_runs_a_pipeline_where_their_role_does_not_allow_it(lab, kfp, who, namespace):
    workflow = run_workflow(kfp, f"run-{uuid.uuid4().hex[:6]}")
    proc = lab.kubectl_as(who, "create", "-n", namespace, "-f", "-", input_text=json.dumps(workflow))
    if proc.returncode == 0:
        lab.kubectl("delete", "workflow", workflow["metadata"]["name"], "-n", namespace, "--wait=false")
    assert proc.returncode != 0 and "is forbidden" in proc.stderr and f"{who}-member" in proc.stderr, proc.stderr


def test_viewers_read_their_teams_runs(lab):
    proc = lab.kubectl_as(VIEWER, "get", "workflows.argoproj.io", "-n", VISION)
    assert proc.returncode == 0, proc.stderr
