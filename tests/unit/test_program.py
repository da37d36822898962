"""The real Pulumi program run against mocks with each shipped stack file."""

from __future__ import annotations

import json

import pulumi
import pytest

from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT, STACKS, pulumi_config_of

CORE_INVENTORY = {
    ("pulumi:providers:kubernetes", "kubernetes"),
    ("mlplatform:core:Platform", "platform"),
    # The owner of namespaces several modules share (none in a stack without ML services).
    ("mlplatform:core:SharedNamespaces", "shared-namespaces"),
    ("kubernetes:core/v1:Namespace", "mlplatform-system"),
    ("kubernetes:core/v1:ConfigMap", "mlplatform-info"),
}
GPU_INVENTORY = {
    # Lab: device plugin + feature discovery per GPU pool, sharing configs, MIG layouts, DCGM.
    "lab": {
        ("mlplatform:gpu:GpuLayer", "gpu"),
        ("kubernetes:core/v1:Namespace", "nvidia-device-plugin"),
        ("kubernetes:core/v1:ConfigMap", "nvidia-device-plugin/nvidia-device-plugin-configs"),
        ("kubernetes:core/v1:ConfigMap", "nvidia-device-plugin/mlplatform-mig-parted-config"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/nvidia-device-plugin-gpu-a100"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/nvidia-device-plugin-gpu-t4"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/gpu-feature-discovery-gpu-a100"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/gpu-feature-discovery-gpu-t4"),
        # MIG off the operator path: the A100 pool's own MIG manager.
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/nvidia-mig-manager-gpu-a100"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/dcgm-exporter"),
        ("kubernetes:core/v1:Service", "nvidia-device-plugin/dcgm-exporter"),
        # The exporter's metric list: device fields, profiling ones only when switched on.
        ("kubernetes:core/v1:ConfigMap", "nvidia-device-plugin/dcgm-exporter-metrics"),
    },
    # OpenShift: the certified GPU operator through OLM, configured by a ClusterPolicy.
    "openshift": {
        ("mlplatform:gpu:GpuLayer", "gpu"),
        ("kubernetes:core/v1:Namespace", "nvidia-gpu-operator"),
        ("kubernetes:core/v1:ConfigMap", "nvidia-gpu-operator/nvidia-device-plugin-configs"),
        ("kubernetes:core/v1:ConfigMap", "nvidia-gpu-operator/mlplatform-mig-parted-config"),
        ("kubernetes:operators.coreos.com/v1:OperatorGroup", "nvidia-gpu-operator/nvidia-gpu-operator-group"),
        ("kubernetes:operators.coreos.com/v1alpha1:Subscription", "nvidia-gpu-operator/gpu-operator-certified"),
        ("kubernetes:nvidia.com/v1:ClusterPolicy", "gpu-cluster-policy"),
        ("kubernetes:core/v1:ConfigMap", "nvidia-gpu-operator/dcgm-exporter-metrics"),
    },
    # Cloud (EKS): the device plugin path without MIG.
    "cloud": {
        ("mlplatform:gpu:GpuLayer", "gpu"),
        ("kubernetes:core/v1:Namespace", "nvidia-device-plugin"),
        ("kubernetes:core/v1:ConfigMap", "nvidia-device-plugin/nvidia-device-plugin-configs"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/nvidia-device-plugin-gpu-a10g"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/nvidia-device-plugin-gpu-h100"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/gpu-feature-discovery-gpu-a10g"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/gpu-feature-discovery-gpu-h100"),
        ("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin/dcgm-exporter"),
        ("kubernetes:core/v1:Service", "nvidia-device-plugin/dcgm-exporter"),
        # The exporter's metric list: device fields, profiling ones only when switched on.
        ("kubernetes:core/v1:ConfigMap", "nvidia-device-plugin/dcgm-exporter-metrics"),
    },
}


def _type_token(manifest: dict) -> str:
    api_version = manifest["apiVersion"]
    return f"kubernetes:{api_version if '/' in api_version else 'core/' + api_version}:{manifest['kind']}"


def nfd_inventory(namespace: str) -> set[tuple[str, str]]:
    """Every object of the pinned Node Feature Discovery overlay (built from the mirror) but
    its namespace, in the GPU namespace."""
    from mlplatform.upstream import kustomize_build, upstream_sources
    from tests.conftest import UPSTREAM_MIRROR

    inventory = set()
    for manifest in kustomize_build(upstream_sources()["node-feature-discovery"], "default", UPSTREAM_MIRROR):
        if manifest["kind"] == "Namespace":
            continue
        if manifest["kind"] == "CustomResourceDefinition":
            # The CRDs come as one release.
            inventory.add(("kubernetes:helm.sh/v3:Release", "node-feature-discovery-crds"))
            continue
        meta = manifest["metadata"]
        name = f"{namespace}/{meta['name']}" if meta.get("namespace") else meta["name"]
        inventory.add((_type_token(manifest), name))
    return inventory


def kueue_inventory(config: dict) -> set[tuple[str, str]]:
    """Every object of the pinned Kueue base (built from the mirror), and the teams' queues."""
    from mlplatform.upstream import kustomize_build, upstream_sources
    from tests.conftest import UPSTREAM_MIRROR

    inventory = set()
    for manifest in kustomize_build(upstream_sources()["kueue"], "default", UPSTREAM_MIRROR):
        if manifest["kind"] == "CustomResourceDefinition":
            inventory.add(("kubernetes:helm.sh/v3:Release", "kueue-crds"))
            continue
        meta = manifest["metadata"]
        name = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        inventory.add((_type_token(manifest), name))
    queue_api = "kubernetes:kueue.x-k8s.io/v1beta2"
    gpu_pools = [p["name"] for p in config["mlplatform:cluster"]["nodePools"] if "gpu" in p]
    inventory |= {(f"{queue_api}:ResourceFlavor", name) for name in ["default", *gpu_pools]}
    for team in config["mlplatform:modules"]["tenancy"]["teams"]:
        inventory.add((f"{queue_api}:ClusterQueue", f"team-{team['name']}"))
        inventory.add((f"{queue_api}:LocalQueue", f"team-{team['name']}/default"))
    return inventory


def tenancy_inventory(stack: str) -> set[tuple[str, str]]:
    """Per team: namespace, quotas, limits, its network policies, a binding per role with groups."""
    import yaml

    config = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    inventory = {("mlplatform:tenancy:Tenancy", "tenancy")}
    # The team roles and the core rights they aggregate.
    inventory |= {
        ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", f"mlplatform-team-{part}{level}")
        for part in ("", "core-")
        for level in ("view", "edit", "admin")
    }
    inventory |= {
        ("kubernetes:scheduling.k8s.io/v1:PriorityClass", f"mlplatform-{c}")
        for c in ("serving", "interactive", "batch")
    }
    tenancy = config["mlplatform:modules"]["tenancy"]
    if tenancy.get("queueing", {}).get("backend") == "kueue":
        inventory |= kueue_inventory(config)
    for team in tenancy["teams"]:
        ns = f"team-{team['name']}"
        inventory |= {
            ("kubernetes:core/v1:Namespace", ns),
            ("kubernetes:core/v1:ResourceQuota", f"{ns}/team-quota"),
            ("kubernetes:core/v1:ResourceQuota", f"{ns}/team-reserved-priorities"),
            ("kubernetes:core/v1:LimitRange", f"{ns}/team-defaults"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{ns}/default-deny"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{ns}/allow-same-namespace"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{ns}/allow-from-platform"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{ns}/allow-dns"),
        }
        # The ways out the stack names.
        egress = tenancy.get("egress", {})
        for key, policy in (
            ("kubeApiCidrs", "allow-kube-api"),
            ("allowedCidrs", "allow-egress-cidrs"),
            ("publicHttps", "allow-public-https"),
        ):
            if egress.get(key):
                inventory.add(("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{ns}/{policy}"))
        for role, groups in team.get("groups", {}).items():
            if groups:
                inventory.add(("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", f"{ns}/team-{role}"))
    return inventory


def _by_type(mocks, typ):
    return [r for r in mocks.resources if r.typ == typ]


def gpu_and_tenancy_only(stack: str) -> dict[str, str]:
    """The stack's config with every module but the GPU layer and tenancy switched off (the
    service modules have inventory tests of their own)."""
    import yaml

    from tests.conftest import stack_config_strings

    config = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    modules = config["mlplatform:modules"]
    for name in list(modules):
        if name not in ("gpu", "tenancy"):
            del modules[name]
    return stack_config_strings(config)


@pytest.mark.parametrize("stack", STACKS)
def test_inventory_per_environment(run_stack, stack):
    mocks, components = run_stack(stack, gpu_and_tenancy_only(stack))
    inventory = {(r.typ, r.name) for r in mocks.resources}
    expected = CORE_INVENTORY | GPU_INVENTORY[stack] | tenancy_inventory(stack)
    if stack != "openshift":
        # The device plugin path brings NFD for GPU feature discovery's labels.
        expected |= nfd_inventory("nvidia-device-plugin")
    assert inventory == expected, f"stack {stack}: missing {expected - inventory}, unexpected {inventory - expected}"
    assert set(components) == {"core", "gpu", "tenancy"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_carries_the_stack_inventory_labels(run_stack, stack):
    from mlplatform.modules.crd_bundle import bundled_crds, is_bundle

    mocks, _ = run_stack(stack)
    objects = []
    for resource in mocks.resources:
        if is_bundle(resource.typ, resource.inputs):
            # A CRD release: the CRDs it installs.
            objects += [(f"{resource.name}: {crd['metadata']['name']}", crd) for crd in bundled_crds(resource.inputs)]
        elif resource.typ.startswith("kubernetes:"):
            objects.append((resource.name, resource.inputs))
    assert any(":" in name for name, _ in objects), "the stack installs CRDs through releases"
    for name, inputs in objects:
        labels = inputs["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "mlplatform", name
        assert labels["mlplatform.io/stack"] == stack, name


def test_namespace_labels_follow_the_environment_profile(run_stack):
    labels = {}
    for stack in STACKS:
        mocks, _ = run_stack(stack)
        (namespace,) = [n for n in _by_type(mocks, "kubernetes:core/v1:Namespace") if n.name == "mlplatform-system"]
        labels[stack] = namespace.inputs["metadata"]["labels"]
    for stack in STACKS:
        assert labels[stack]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["openshift"]["security.openshift.io/scc.podSecurityLabelSync"] == "false"
    assert "security.openshift.io/scc.podSecurityLabelSync" not in labels["lab"]
    assert "security.openshift.io/scc.podSecurityLabelSync" not in labels["cloud"]


def test_platform_info_records_environment_and_lock_digest(run_stack):
    mocks, _ = run_stack("cloud")
    (info,) = [c for c in _by_type(mocks, "kubernetes:core/v1:ConfigMap") if c.name == "mlplatform-info"]
    data = info.inputs["data"]
    assert data["environment"] == "cloud"
    assert data["cloudProvider"] == "eks"
    assert data["lockDigest"].startswith("sha256:") and len(data["lockDigest"]) == len("sha256:") + 64
    assert json.loads(data["nodePools"]) == ["system", "gpu-a10g", "gpu-h100"]
    modules = json.loads(data["modules"])
    assert modules[0] == "core"
    assert set(modules[1:]) == set(load_stack("cloud").config.modules.enabled_names())
    assert {"gpu", "tenancy", "kserve", "mlflow", "monitoring"} <= set(modules)


def test_children_are_parented_to_the_component(run_stack):
    _, components = run_stack("lab")
    core = components["core"]
    urns = {}

    def check(args):
        namespace_urn, component_urn = args
        urns["namespace"] = namespace_urn
        assert component_urn == "urn:pulumi:lab::mlplatform::pulumi:pulumi:Stack$mlplatform:core:Platform::platform"
        # The child's type chain names the component it belongs to.
        assert namespace_urn == (
            "urn:pulumi:lab::mlplatform::mlplatform:core:Platform$kubernetes:core/v1:Namespace::mlplatform-system"
        )

    @pulumi.runtime.test
    def verify():
        return pulumi.Output.all(core.namespace.urn, core.urn).apply(check)

    verify()
    assert urns


@pytest.mark.parametrize(
    ("stack", "key", "value", "expected"),
    [
        (
            "lab",
            "mlplatform:environment",
            "staging",
            "stacks/Pulumi.lab.yaml: mlplatform:environment: 'staging' is not allowed",
        ),
        (
            "cloud",
            "mlplatform:modules",
            json.dumps({"kserve": {"enabled": True, "deploymentMode": "Knative"}}),
            "stacks/Pulumi.cloud.yaml: mlplatform:modules.kserve.deploymentMode",
        ),
    ],
)
def test_invalid_stack_registers_zero_resources(stack, key, value, expected):
    from mlplatform.program import main
    from tests.conftest import RecordingMocks

    recorder = RecordingMocks()
    config = pulumi_config_of(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    config[key] = value
    pulumi.runtime.set_mocks(recorder, project="mlplatform", stack=stack, preview=False)
    pulumi.runtime.set_all_config(config)

    @pulumi.runtime.test
    def program():
        main()

    with pytest.raises(pulumi.RunError) as info:
        program()
    assert expected in str(info.value)
    # Not even the provider: validation runs before the first registration.
    assert recorder.resources == []


def _stack_outputs() -> dict:
    """The outputs the last program run exported on its root stack resource, resolved."""
    from pulumi.runtime.settings import get_root_resource

    resolved: dict = {}

    @pulumi.runtime.test
    def read():
        return pulumi.Output.from_input(get_root_resource().outputs).apply(resolved.update)

    read()
    return resolved


def test_lab_stack_outputs_name_endpoints_gpu_resources_and_team_namespaces(run_stack):
    import yaml

    run_stack("lab", fresh=True)
    outputs = _stack_outputs()
    config = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())["config"]
    assert outputs["environment"] == "lab"
    assert outputs["platformNamespace"] == "mlplatform-system"
    endpoints = outputs["endpoints"]
    assert endpoints["mlflow"]["trackingUri"].startswith("http://")
    assert endpoints["mlflow"]["externalUrl"].startswith("https://")
    assert endpoints["pipelines"] == {
        "api": "http://ml-pipeline.kubeflow.svc.cluster.local:8888",
        "ui": "http://ml-pipeline-ui.kubeflow.svc.cluster.local:80",
        # Multi-user: the UI's path on the mesh's gateway, behind sign-in.
        "path": "/pipeline",
    }
    gpu_pools = [p["name"] for p in config["mlplatform:cluster"]["nodePools"] if "gpu" in p]
    assert set(outputs["gpuResources"]) == set(gpu_pools)
    assert all(names and all("/" in n for n in names) for names in outputs["gpuResources"].values())
    teams = config["mlplatform:modules"]["tenancy"]["teams"]
    assert outputs["teamNamespaces"] == {t["name"]: f"team-{t['name']}" for t in teams}


def test_requirements_txt_installs_the_runtime_dependencies():
    """`pulumi install` (Pulumi.yaml: toolchain pip) fills the program's virtualenv from the root
    requirements.txt: it must bring every runtime dependency of pyproject.toml at its pin."""
    import tomllib

    import yaml

    runtime = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["runtime"]
    assert runtime["name"] == "python"
    assert runtime["options"]["toolchain"] == "pip"
    assert runtime["options"]["virtualenv"]
    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#", 1)[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    # The project itself (its own dependencies are pyproject's list) or each pin spelled the same.
    if not ({"-e .", "--editable .", "."} & set(lines)):
        assert set(pins) <= set(lines), f"requirements.txt lacks {sorted(set(pins) - set(lines))}"
