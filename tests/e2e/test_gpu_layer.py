"""The GPU layer on nodes that carry only what their provider gives them.

The plane's nodes have no `nvidia.com/*` label and no GPU capacity of their own; the stand-in
for NVIDIA's software (tests/simulated_nvidia) publishes them only from what the platform
installed: the per-pool device plugin, MIG manager, GPU feature discovery and NFD, and their
ConfigMaps. Every expected figure below is worked out by hand from the stack's hardware and
sharing (and NVIDIA's facts), never taken from mlplatform.gpu.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO_ROOT

NAMESPACE = "nvidia-device-plugin"

# The lab stack, by hand:
# - gpu-a100: 8 A100-40GB, MIG mixed 2x 1g.5gb + 2g.10gb + 3g.20gb each -> 16, 8, 8 per node;
# - gpu-t4: 4 T4 time-sliced 4 ways, renamed .shared -> 16 per node; cpu pools: nothing.
LAB_RESOURCES = {
    "cpu-0": {},
    "cpu-1": {},
    "gpu-a100-0": {"nvidia.com/mig-1g.5gb": "16", "nvidia.com/mig-2g.10gb": "8", "nvidia.com/mig-3g.20gb": "8"},
    "gpu-t4-0": {"nvidia.com/gpu.shared": "16"},
    "gpu-t4-1": {"nvidia.com/gpu.shared": "16"},
}


def gpu_resources(node: dict) -> dict[str, str]:
    return {k: v for k, v in node["status"].get("allocatable", {}).items() if k.startswith("nvidia.com/")}


def wait_for_resources(plane, expected: dict[str, dict[str, str]], timeout: float = 90) -> None:
    """Until every named node advertises exactly these GPU resources (the message says what
    they advertise instead)."""
    seen: dict[str, dict[str, str]] = {}

    def matches() -> bool:
        nodes = {n["metadata"]["name"]: n for n in plane.get("nodes")["items"]}
        seen.clear()
        seen.update({name: gpu_resources(nodes[name]) if name in nodes else {"<missing>": ""} for name in expected})
        return seen == expected

    try:
        plane.wait_for("GPU resources", matches, timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}: nodes advertise {seen}, expected {expected}") from None


def _daemonset_ready(plane, name: str, expected: int) -> bool:
    status = plane.get("daemonset", name, "-n", NAMESPACE).get("status", {})
    return status.get("desiredNumberScheduled") == expected and status.get("numberReady") == expected


def _nodes_of(plane, selector: str) -> set[str]:
    pods = plane.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
    return {p["spec"].get("nodeName") for p in pods}


pytestmark = pytest.mark.on_stack("lab")


@pytest.fixture
def lab_stack(stack_planes):
    """The lab stack applied on the session's plane (deleted by test_render_apply)."""
    return stack_planes("lab")


@pytest.fixture
def lab_gpu(lab_stack):
    return lab_stack.plane


def test_gpu_daemonsets_run_once_per_node_of_their_pool(lab_gpu):
    plane = lab_gpu
    expected = {
        "nvidia-device-plugin-gpu-a100": 1,
        "nvidia-device-plugin-gpu-t4": 2,
        "gpu-feature-discovery-gpu-a100": 1,
        "gpu-feature-discovery-gpu-t4": 2,
        "nvidia-mig-manager-gpu-a100": 1,
        "dcgm-exporter": 3,
        # Node Feature Discovery's workers read every node.
        "nfd-worker": 5,
    }
    for name, count in expected.items():
        plane.wait_for(
            f"daemonset {name} ready on {count} node(s)", lambda n=name, c=count: _daemonset_ready(plane, n, c)
        )
    plugin = "app.kubernetes.io/name=nvidia-device-plugin"
    assert _nodes_of(plane, f"mlplatform.io/gpu-config=gpu-t4,{plugin}") == {"gpu-t4-0", "gpu-t4-1"}
    assert _nodes_of(plane, f"mlplatform.io/gpu-config=gpu-a100,{plugin}") == {"gpu-a100-0"}
    assert _nodes_of(plane, "app.kubernetes.io/name=nvidia-mig-manager") == {"gpu-a100-0"}
    assert _nodes_of(plane, "app.kubernetes.io/name=dcgm-exporter") == {"gpu-a100-0", "gpu-t4-0", "gpu-t4-1"}


def test_each_pool_publishes_what_its_sharing_promises(lab_gpu):
    plane = lab_gpu
    wait_for_resources(plane, LAB_RESOURCES)
    # GPU feature discovery's labels, published through NFD.
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in plane.get("nodes")["items"]}
    plane.wait_for(
        "feature labels", lambda: "nvidia.com/gpu.product" in plane.get("node", "gpu-t4-0")["metadata"]["labels"]
    )
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in plane.get("nodes")["items"]}
    t4, a100 = nodes["gpu-t4-0"], nodes["gpu-a100-0"]
    assert t4["nvidia.com/gpu.product"] == "Tesla-T4"
    assert t4["nvidia.com/gpu.count"] == "4"
    assert t4["nvidia.com/gpu.replicas"] == "4"
    assert t4["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert a100["nvidia.com/mig.strategy"] == "mixed"
    assert a100["nvidia.com/mig-3g.20gb.count"] == "8"
    assert t4["feature.node.kubernetes.io/pci-10de.present"] == "true"
    assert not [k for k in nodes["cpu-0"] if k.startswith("nvidia.com/")]


def _pod(name: str, resource: str, count: int = 1) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.k8s.io/pause:3.10", "resources": {"limits": {resource: str(count)}}}
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def _unschedulable_reason(plane, name: str, namespace: str) -> str:
    conditions = plane.get("pod", name, "-n", namespace)["status"].get("conditions", [])
    scheduled = next((c for c in conditions if c["type"] == "PodScheduled"), {})
    return scheduled.get("message", "") if scheduled.get("reason") == "Unschedulable" else ""


@pytest.mark.parametrize(
    ("resource", "count", "pool_prefix"),
    [
        ("nvidia.com/gpu.shared", 1, "gpu-t4-"),
        ("nvidia.com/mig-3g.20gb", 8, "gpu-a100-"),
        ("nvidia.com/mig-1g.5gb", 1, "gpu-a100-"),
    ],
)
def test_workload_lands_on_the_pool_offering_its_resource(lab_gpu, make_namespace, resource, count, pool_prefix):
    plane = lab_gpu
    wait_for_resources(plane, LAB_RESOURCES)
    namespace = make_namespace()
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(_pod("work", resource, count)))
    plane.wait_for("pod Running", lambda: plane.get("pod", "work", "-n", namespace)["status"].get("phase") == "Running")
    assert plane.get("pod", "work", "-n", namespace)["spec"]["nodeName"].startswith(pool_prefix)


@pytest.mark.parametrize(
    ("resource", "count"),
    [
        # The lab shares every GPU: whole nvidia.com/gpu devices and 7g.40gb slices exist nowhere.
        ("nvidia.com/mig-7g.40gb", 1),
        ("nvidia.com/gpu", 1),
        # One T4 node holds 16 shares.
        ("nvidia.com/gpu.shared", 17),
    ],
)
def test_resource_no_node_offers_stays_pending_with_the_schedulers_reason(lab_gpu, make_namespace, resource, count):
    plane = lab_gpu
    wait_for_resources(plane, LAB_RESOURCES)
    namespace = make_namespace()
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(_pod("nowhere", resource, count)))
    plane.wait_for("Unschedulable", lambda: _unschedulable_reason(plane, "nowhere", namespace) != "")
    assert f"Insufficient {resource}" in _unschedulable_reason(plane, "nowhere", namespace)
    assert plane.get("pod", "nowhere", "-n", namespace)["status"]["phase"] == "Pending"


def _provider_node(pool: str, index: int, stack: str = "lab") -> dict:
    """A node the pool's provider adds after the install (the simulated plane's provider)."""
    from mlplatform.cluster.provider_nodes import provider_node
    from mlplatform.validation import load_stack

    resolved = load_stack(stack)
    (wanted,) = [p for p in resolved.config.cluster.node_pools if p.name == pool]
    return provider_node(resolved, wanted, index)


def _add_node(plane, node: dict) -> None:
    plane.kubectl("apply", "-f", "-", input_text=json.dumps(node))
    status = {"status": {k: node["status"][k] for k in ("capacity", "allocatable")}}
    plane.kubectl(
        "patch", "node", node["metadata"]["name"], "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def test_a_node_that_joins_a_pool_later_becomes_gpu_ready_with_no_new_up(lab_gpu):
    plane = lab_gpu
    wait_for_resources(plane, LAB_RESOURCES)
    node = _provider_node("gpu-t4", 2)
    assert not [k for k in node["metadata"]["labels"] if k.startswith("nvidia.com/")]
    _add_node(plane, node)
    try:
        wait_for_resources(plane, {**LAB_RESOURCES, "gpu-t4-2": {"nvidia.com/gpu.shared": "16"}})
        assert "gpu-t4-2" in _nodes_of(
            plane, "mlplatform.io/gpu-config=gpu-t4,app.kubernetes.io/name=nvidia-device-plugin"
        )
    finally:
        plane.kubectl("delete", "node", "gpu-t4-2", "--wait=true")


def test_gpus_on_a_node_no_pool_selects_stay_invisible(lab_gpu):
    # Hardware alone makes no resource: a T4 node without the pool's label gets no plugin.
    plane = lab_gpu
    node = _provider_node("gpu-t4", 9)
    node["metadata"]["name"] = node["metadata"]["labels"]["kubernetes.io/hostname"] = "stray-t4"
    del node["metadata"]["labels"]["mlplatform.io/node-pool"]
    _add_node(plane, node)
    try:
        plane.wait_for(
            "stray-t4 Ready",
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in plane.get("node", "stray-t4")["status"].get("conditions", [])
            ),
        )
        wait_for_resources(plane, {**LAB_RESOURCES, "stray-t4": {}})
        assert "stray-t4" not in _nodes_of(plane, "app.kubernetes.io/name=nvidia-device-plugin")
    finally:
        plane.kubectl("delete", "node", "stray-t4", "--wait=true")


def _render_with(tmp_path, edit) -> list[dict]:
    """The lab stack's GPU objects, rendered by `mlplatform render` from an edited copy."""
    stack = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    edit(stack["config"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "Pulumi.lab-edited.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    out = tmp_path / "render"
    subprocess.run(
        [sys.executable, "-m", "mlplatform", "render", "--stack", str(path), "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    documents = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml")) if p.name != "kustomization.yaml"]
    return [
        d for d in documents if d["metadata"].get("namespace") == NAMESPACE and d["kind"] in ("ConfigMap", "DaemonSet")
    ]


def _apply_gpu_objects(plane, documents: list[dict]) -> None:
    for document in documents:
        # The edited stack's name is only in the inventory label: keep the lab's.
        document["metadata"].setdefault("labels", {})["mlplatform.io/stack"] = "lab"
    plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=mlplatform",
        "-f",
        "-",
        input_text=yaml.safe_dump_all(documents),
    )


def _pool(config: dict, name: str) -> dict:
    return next(p for p in config["mlplatform:cluster"]["nodePools"] if p["name"] == name)


def test_changing_a_pools_sharing_republishes_its_capacity(lab_stack, tmp_path):
    plane = lab_stack.plane
    wait_for_resources(plane, LAB_RESOURCES)

    def two_replicas_and_another_layout(config: dict) -> None:
        _pool(config, "gpu-t4")["gpu"]["sharing"]["timeSlicing"]["replicas"] = 2
        _pool(config, "gpu-a100")["gpu"]["sharing"]["mig"]["devices"] = {"3g.20gb": 2}
        # The lab's quotas name the old slices: drop them, only the GPU objects are applied.
        for team in config["mlplatform:modules"]["tenancy"]["teams"]:
            team["quota"].pop("gpus", None)

    original = [
        d
        for d in lab_stack.manifests
        if d["metadata"].get("namespace") == NAMESPACE and d["kind"] in ("ConfigMap", "DaemonSet")
    ]
    changed = _render_with(tmp_path / "after", two_replicas_and_another_layout)
    _apply_gpu_objects(plane, changed)
    try:
        # 4 T4 x 2; 8 A100 x 2 3g.20gb.
        wait_for_resources(
            plane,
            {
                **LAB_RESOURCES,
                "gpu-a100-0": {"nvidia.com/mig-3g.20gb": "16"},
                "gpu-t4-0": {"nvidia.com/gpu.shared": "8"},
                "gpu-t4-1": {"nvidia.com/gpu.shared": "8"},
            },
            timeout=120,
        )
    finally:
        _apply_gpu_objects(plane, original)
    wait_for_resources(plane, LAB_RESOURCES, timeout=120)


def test_a_pool_whose_config_is_missing_publishes_nothing(lab_gpu):
    plane = lab_gpu
    wait_for_resources(plane, LAB_RESOURCES)
    configmap = plane.get("configmap", "nvidia-device-plugin-configs", "-n", NAMESPACE)
    patch = {"data": {"gpu-t4": None}}
    plane.kubectl(
        "patch", "configmap", "nvidia-device-plugin-configs", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch)
    )
    selector = "mlplatform.io/gpu-config=gpu-t4,app.kubernetes.io/name=nvidia-device-plugin"
    try:
        # The plugins restart (a node reboot, an eviction) and find no config.
        plane.kubectl("delete", "pods", "-n", NAMESPACE, "-l", selector, "--wait=true")
        wait_for_resources(plane, {**LAB_RESOURCES, "gpu-t4-0": {}, "gpu-t4-1": {}})
    finally:
        restore = {"data": {"gpu-t4": configmap["data"]["gpu-t4"]}}
        plane.kubectl(
            "patch",
            "configmap",
            "nvidia-device-plugin-configs",
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            json.dumps(restore),
        )
        plane.kubectl("delete", "pods", "-n", NAMESPACE, "-l", selector, "--wait=true")
    wait_for_resources(plane, LAB_RESOURCES)
