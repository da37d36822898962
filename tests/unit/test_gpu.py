"""GPU layer: hardware facts, capacity per sharing mode, generated configs, install paths."""

from __future__ import annotations

import json

import pytest
import yaml

from mlplatform.config import ConfigError, load_stack, resolve
from mlplatform.config.model import NodePool
from mlplatform.gpu.capacity import extended_resources
from mlplatform.gpu.facts import MIG_GEOMETRY, PCI_DEVICE_IDS, mig_problems
from mlplatform.gpu.plugin_config import device_plugin_config, mig_parted_config
from mlplatform.modules.gpu import gpu_outputs
from tests.conftest import REPO_ROOT, pulumi_config_of, render_shared, validate_against


def _mig_parted_layouts(mirror):
    document = yaml.safe_load((mirror / "gpu-operator" / "default-mig-parted-config.yaml").read_text())
    return yaml.safe_load(document["data"]["config.yaml"])["mig-configs"]


def _entries_for(layouts, device_id):
    """(layout name, mig-devices) of every MIG-enabled entry that applies to this device."""
    for name, entries in layouts.items():
        for entry in entries:
            if not entry.get("mig-enabled"):
                continue
            device_filter = entry.get("device-filter")
            ids = [device_filter] if isinstance(device_filter, str) else device_filter
            if ids is not None and device_id in ids:
                yield name, entry.get("mig-devices") or {}


@pytest.mark.parametrize("model", sorted(PCI_DEVICE_IDS))
def test_mig_facts_agree_with_the_gpu_operators_layouts(mirror, model):
    layouts = _mig_parted_layouts(mirror)
    geometry = MIG_GEOMETRY[model]
    entries = list(_entries_for(layouts, PCI_DEVICE_IDS[model]))
    assert entries, f"the mirror names no layout for {model}"
    for name, devices in entries:
        # Every layout upstream ships for this GPU uses known profiles and passes our fit rule.
        assert set(devices) <= set(geometry.profiles), (name, devices)
        assert mig_problems(model, devices) == [], (name, devices)
        if len(devices) == 1:
            ((profile, count),) = devices.items()
            assert geometry.profiles[profile].max_instances == count, (name, profile)


def test_unfiltered_single_profile_layouts_match_our_maximum(mirror):
    """Upstream layouts without a device filter (e.g. all-1g.5gb: 7) hold for every GPU
    whose profile set has that profile, unless a filtered entry of the same layout says otherwise."""
    layouts = _mig_parted_layouts(mirror)
    checked = 0
    for name, entries in layouts.items():
        filtered_ids = {
            i
            for e in entries
            for i in ([e["device-filter"]] if isinstance(e.get("device-filter"), str) else e.get("device-filter") or [])
        }
        for entry in entries:
            devices = entry.get("mig-devices") or {}
            if "device-filter" in entry or len(devices) != 1:
                continue
            ((profile, count),) = devices.items()
            for model, geometry in MIG_GEOMETRY.items():
                if profile in geometry.profiles and PCI_DEVICE_IDS[model] not in filtered_ids:
                    assert geometry.profiles[profile].max_instances == count, (name, model)
                    checked += 1
    assert checked > 10


@pytest.mark.parametrize(
    ("model", "devices", "fragment"),
    [
        ("A100-SXM4-40GB", {"1g.10gb": 5}, "5 instance(s) of 1g.10gb do not fit a A100-SXM4-40GB (allowed: 1 to 4)"),
        (
            "A100-SXM4-40GB",
            {"3g.20gb": 2, "1g.5gb": 1},
            "needs 7 compute and 9 memory slices; a A100-SXM4-40GB has 7 and 8",
        ),
        ("H100-SXM5-80GB", {"4g.40gb": 1, "3g.40gb": 1, "1g.10gb": 1}, "needs 8 compute and 9 memory slices"),
        ("A30", {"2g.12gb": 2, "1g.6gb": 1}, "needs 5 compute and 5 memory slices; a A30 has 4 and 4"),
        ("H100-SXM5-80GB", {"1g.5gb": 1}, "'1g.5gb' is not a MIG profile of H100-SXM5-80GB"),
    ],
)
def test_mig_layouts_that_do_not_fit_are_named(model, devices, fragment):
    problems = mig_problems(model, devices)
    assert any(fragment in message for _, message in problems), problems


def _pool(gpu: dict, count: int = 2) -> NodePool:
    return NodePool.model_validate({"name": "p", "count": count, "cpu": "8", "memory": "32Gi", "gpu": gpu})


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        ({"model": "L4", "count": 2}, {"nvidia.com/gpu": 2}),
        ({"model": "L4", "count": 2, "sharing": {"timeSlicing": {"replicas": 3}}}, {"nvidia.com/gpu.shared": 6}),
        (
            {"model": "L4", "count": 2, "sharing": {"timeSlicing": {"replicas": 3, "renameByDefault": False}}},
            {"nvidia.com/gpu": 6},
        ),
        ({"model": "L40S", "count": 4, "sharing": {"mps": {"replicas": 2}}}, {"nvidia.com/gpu.shared": 8}),
        (
            {
                "model": "H100-SXM5-80GB",
                "count": 8,
                "sharing": {"mig": {"strategy": "single", "devices": {"3g.40gb": 2}}},
            },
            {"nvidia.com/gpu": 16},
        ),
        (
            {
                "model": "A30",
                "count": 1,
                "sharing": {"mig": {"strategy": "mixed", "devices": {"2g.12gb": 1, "1g.6gb": 2}}},
            },
            {"nvidia.com/mig-2g.12gb": 1, "nvidia.com/mig-1g.6gb": 2},
        ),
        (
            {
                "model": "A100-SXM4-80GB",
                "count": 2,
                "sharing": {"mig": {"strategy": "mixed", "devices": {"3g.40gb": 2}}, "timeSlicing": {"replicas": 2}},
            },
            {"nvidia.com/mig-3g.40gb.shared": 8},
        ),
    ],
)
def test_extended_resources_per_sharing_mode(gpu, expected):
    assert extended_resources(_pool(gpu)) == expected


def test_device_plugin_config_time_slices_each_mig_profile_under_mixed():
    pool = _pool(
        {
            "model": "A100-SXM4-80GB",
            "count": 2,
            "sharing": {
                "mig": {"strategy": "mixed", "devices": {"1g.10gb": 3, "2g.20gb": 2}},
                "timeSlicing": {"replicas": 2},
            },
        }
    )
    config = device_plugin_config(pool)
    assert config["version"] == "v1"
    assert config["flags"]["migStrategy"] == "mixed"
    assert config["sharing"]["timeSlicing"] == {
        "renameByDefault": True,
        "failRequestsGreaterThanOne": True,
        "resources": [
            {"name": "nvidia.com/mig-1g.10gb", "replicas": 2},
            {"name": "nvidia.com/mig-2g.20gb", "replicas": 2},
        ],
    }
    assert "sharing" not in device_plugin_config(_pool({"model": "T4", "count": 1}))


def test_mig_parted_config_has_a_layout_per_mig_pool_and_the_fallback():
    lab = load_stack("lab").config
    config = mig_parted_config(list(lab.cluster.node_pools))
    assert config["version"] == "v1"
    assert config["mig-configs"] == {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        "mlplatform-gpu-a100": [
            {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}}
        ],
    }
    assert mig_parted_config([p for p in lab.cluster.node_pools if p.name != "gpu-a100"]) is None


def test_gpu_outputs_publish_names_and_totals_per_pool():
    lab = load_stack("lab").config
    outputs = gpu_outputs(list(lab.cluster.node_pools), "nvidia-device-plugin")
    assert outputs.resource_names == (
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/mig-2g.10gb",
        "nvidia.com/mig-3g.20gb",
    )
    assert outputs.total("nvidia.com/gpu.shared") == 2 * 4 * 4
    assert outputs.total("nvidia.com/mig-1g.5gb") == 16
    assert outputs.node_labels["gpu-a100"] == {
        "nvidia.com/device-plugin.config": "gpu-a100",
        "nvidia.com/mig.config": "mlplatform-gpu-a100",
    }
    assert "cpu" not in outputs.pools


def _with_gpu_module(stack: str, **gpu_settings) -> dict:
    config = pulumi_config_of(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    config["mlplatform:modules"] = json.dumps({"gpu": {"enabled": True, **gpu_settings}})
    return config


def test_device_plugin_daemonsets_select_their_pool_and_read_its_config(run_stack):
    mocks, _ = run_stack("cloud")
    daemonsets = {
        r.inputs["metadata"]["name"]: r.inputs for r in mocks.resources if r.typ == "kubernetes:apps/v1:DaemonSet"
    }
    plugin = daemonsets["nvidia-device-plugin-gpu-a10g"]["spec"]["template"]["spec"]
    assert plugin["nodeSelector"] == {"nvidia.com/device-plugin.config": "gpu-a10g"}
    config_volume = next(v for v in plugin["volumes"] if v["name"] == "gpu-config")
    assert config_volume["configMap"] == {
        "name": "nvidia-device-plugin-configs",
        "items": [{"key": "gpu-a10g", "path": "config.yaml"}],
    }
    container = plugin["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"
    assert {"name": "CONFIG_FILE", "value": "/etc/nvidia/gpu-config/config.yaml"} in container["env"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plugin["tolerations"]
    dcgm = daemonsets["dcgm-exporter"]["spec"]["template"]["spec"]["containers"][0]
    assert dcgm["image"] == "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    namespaces = {r.name: r.inputs for r in mocks.resources if r.typ == "kubernetes:core/v1:Namespace"}
    assert (
        namespaces["nvidia-device-plugin"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    )


def test_gke_managed_installs_no_device_plugin(run_stack, mirror):
    config = pulumi_config_of(REPO_ROOT / "tests" / "fixtures" / "stacks" / "Pulumi.cloud-gke.yaml")
    mocks, components = run_stack("cloud-gke", config)
    assert not [r for r in mocks.resources if r.typ == "kubernetes:apps/v1:DaemonSet"]
    assert components["gpu"].outputs.resource_names == ("nvidia.com/gpu",)
    assert components["gpu"].outputs.total("nvidia.com/gpu") == 2 * 2 * 3


def test_operator_on_a_cloud_without_olm_is_the_pinned_helm_chart(run_stack):
    mocks, _ = run_stack("cloud", _with_gpu_module("cloud", install="operator"))
    (release,) = [r for r in mocks.resources if r.typ == "kubernetes:helm.sh/v3:Release"]
    assert release.inputs["chart"] == "gpu-operator"
    assert release.inputs["version"] == "v26.7.0"
    assert release.inputs["values"]["devicePlugin"]["config"]["name"] == "nvidia-device-plugin-configs"
    assert not [r for r in mocks.resources if r.typ == "kubernetes:apps/v1:DaemonSet"]


def test_render_refuses_helm_releases_it_cannot_expand(mirror, monkeypatch):
    from mlplatform.render import RenderError

    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    config = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.cloud.yaml").read_text())["config"]
    config["mlplatform:modules"] = {"gpu": {"enabled": True, "install": "operator"}}
    with pytest.raises(RenderError, match="Helm release"):
        render_shared("cloud", config)


def _schema(mirror, group: str, kind: str, version: str) -> dict:
    return json.loads((mirror / "crd-schemas" / group / f"{kind.lower()}_{version}.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["openshift", "cloud"])
def test_custom_resources_validate_against_the_upstream_crd_schemas(mirror, monkeypatch, stack):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    config = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    config["mlplatform:modules"]["gpu"]["dcgmExporter"] = {"serviceMonitor": True}
    # Custom resources: API groups that Kubernetes itself does not serve.
    custom = [
        m
        for m in render_shared(stack, config)
        if "/" in m["apiVersion"]
        and "." in (group := m["apiVersion"].split("/")[0])
        and not group.endswith(".k8s.io")
        and m["metadata"]["labels"].get("mlplatform.io/module") == "gpu"
    ]
    assert custom, "no custom resources rendered"
    for manifest in custom:
        group, version = manifest["apiVersion"].split("/")
        validate_against(manifest, _schema(mirror, group, manifest["kind"], version))
    kinds = {m["kind"] for m in custom}
    assert kinds == ({"OperatorGroup", "Subscription", "ClusterPolicy"} if stack == "openshift" else {"ServiceMonitor"})


def test_invalid_gpu_config_registers_nothing(run_stack):
    config = _with_gpu_module("lab", install="managed")
    import pulumi

    with pytest.raises(pulumi.RunError, match=r"mlplatform:modules\.gpu\.install: 'managed' leaves the device plugin"):
        run_stack("lab", config)


def test_operator_needs_one_mig_strategy_for_the_cluster():
    raw = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.openshift.yaml").read_text())["config"]
    raw["mlplatform:cluster"]["nodePools"].append(
        {
            "name": "gpu-a100",
            "count": 1,
            "cpu": "64",
            "memory": "512Gi",
            "gpu": {
                "model": "A100-SXM4-80GB",
                "count": 8,
                "sharing": {"mig": {"strategy": "mixed", "devices": {"3g.40gb": 2}}},
            },
        }
    )
    with pytest.raises(ConfigError, match=r"one MIG strategy to the whole cluster.*gpu-h100=single, gpu-a100=mixed"):
        resolve(raw, source="stacks/Pulumi.openshift.yaml", stack="openshift")
