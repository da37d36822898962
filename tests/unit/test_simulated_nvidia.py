"""The stand-in for NVIDIA's software behaves as NVIDIA documents it, and knows nothing of
mlplatform: every expected figure here is NVIDIA's semantics worked by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.simulated_nvidia.facts import layout_fits, mig_profile_limits
from tests.simulated_nvidia.stack import (
    Cluster,
    Hardware,
    PluginFailed,
    advertised,
    mig_devices,
    node_state,
    plugin_config,
)

SIMULATOR = Path(__file__).resolve().parents[1] / "simulated_nvidia"


def test_the_simulator_imports_nothing_from_mlplatform():
    for path in SIMULATOR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "mlplatform"], path.name


def test_mig_limits_come_from_the_operators_published_layouts(mirror):
    # default-mig-parted-config.yaml: all-1g.10gb is 4 on an A100-40GB, 7 on an H100-80GB.
    assert mig_profile_limits(mirror, "A100-SXM4-40GB")["1g.10gb"] == 4
    assert mig_profile_limits(mirror, "H100-SXM5-80GB")["1g.10gb"] == 7
    assert mig_profile_limits(mirror, "A100-SXM4-40GB")["3g.20gb"] == 2


@pytest.mark.parametrize(
    ("model", "devices", "fits"),
    [
        ("A100-SXM4-40GB", {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}, True),
        ("A100-SXM4-40GB", {"3g.20gb": 2}, True),
        ("A100-SXM4-40GB", {"1g.5gb": 7}, True),
        ("A100-SXM4-40GB", {"1g.5gb": 8}, False),  # more than the GPU holds
        ("A100-SXM4-40GB", {"3g.20gb": 2, "1g.5gb": 1}, False),  # 7 slices, 45 GB
        ("A100-SXM4-40GB", {"1g.10gb": 7}, False),  # an H100 profile count
        ("H100-SXM5-80GB", {"1g.10gb": 7}, True),
        ("H100-SXM5-80GB", {"1g.5gb": 1}, False),  # an A100-40GB profile
        ("T4", {"1g.5gb": 1}, False),  # no MIG
    ],
)
def test_layouts_fit_as_nvidia_documents(mirror, model, devices, fits):
    assert layout_fits(mirror, model, devices) is fits


def _layouts(**layouts) -> str:
    return yaml.safe_dump({"version": "v1", "mig-configs": layouts})


def test_mig_parted_applies_only_a_known_layout_that_fits(mirror):
    hw = Hardware(2, "A100-SXM4-40GB")
    good = _layouts(mine=[{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 2}}])
    assert mig_devices(mirror, hw, good, "mine") == [{"3g.20gb": 2}, {"3g.20gb": 2}]
    assert mig_devices(mirror, hw, good, "other") is None
    assert mig_devices(mirror, hw, good, None) is None
    too_big = _layouts(mine=[{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 3}}])
    assert mig_devices(mirror, hw, too_big, "mine") is None


@pytest.mark.parametrize(
    ("hw", "migs", "config", "expected"),
    [
        # Whole GPUs.
        (Hardware(4, "T4"), None, {"flags": {"migStrategy": "none"}}, {"nvidia.com/gpu": 4}),
        # Time-slicing, renamed: 4 x 4.
        (
            Hardware(4, "T4"),
            None,
            {
                "flags": {"migStrategy": "none"},
                "sharing": {
                    "timeSlicing": {"renameByDefault": True, "resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}
                },
            },
            {"nvidia.com/gpu.shared": 16},
        ),
        # Mixed: each profile its own resource.
        (
            Hardware(2, "A100-SXM4-40GB"),
            [{"1g.5gb": 2, "3g.20gb": 1}] * 2,
            {"flags": {"migStrategy": "mixed"}},
            {"nvidia.com/mig-1g.5gb": 4, "nvidia.com/mig-3g.20gb": 2},
        ),
        # Single: slices as nvidia.com/gpu.
        (
            Hardware(8, "H100-SXM5-80GB"),
            [{"1g.10gb": 7}] * 8,
            {"flags": {"migStrategy": "single"}},
            {"nvidia.com/gpu": 56},
        ),
        # A MIG strategy with MIG still off: whole GPUs.
        (Hardware(8, "H100-SXM5-80GB"), None, {"flags": {"migStrategy": "mixed"}}, {"nvidia.com/gpu": 8}),
    ],
)
def test_the_device_plugin_advertises_as_documented(hw, migs, config, expected):
    assert advertised(hw, migs, config) == expected


def test_single_strategy_with_two_profiles_fails_the_plugin():
    with pytest.raises(PluginFailed):
        advertised(Hardware(1, "A100-SXM4-40GB"), [{"1g.5gb": 2, "3g.20gb": 1}], {"flags": {"migStrategy": "single"}})


def _pod(container: dict, volumes: list[dict], node: str = "n") -> dict:
    return {
        "metadata": {"name": "p", "namespace": "gpu", "uid": "u1"},
        "spec": {"nodeName": node, "containers": [container], "volumes": volumes},
        "status": {"phase": "Running"},
    }


PLUGIN = {
    "name": "plugin",
    "image": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
    "env": [{"name": "CONFIG_FILE", "value": "/etc/cfg/config.yaml"}],
    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
}
VOLUME = [{"name": "cfg", "configMap": {"name": "plugin-configs", "items": [{"key": "t4", "path": "config.yaml"}]}}]


def test_the_plugin_reads_the_file_its_mount_provides_and_fails_without_it():
    config = {"version": "v1", "flags": {"migStrategy": "none"}}
    configmaps = {("gpu", "plugin-configs"): {"data": {"t4": yaml.safe_dump(config)}}}
    assert plugin_config(_pod(PLUGIN, VOLUME), PLUGIN, configmaps)["flags"] == {"migStrategy": "none"}
    with pytest.raises(PluginFailed, match="does not exist"):
        plugin_config(_pod(PLUGIN, VOLUME), PLUGIN, {("gpu", "plugin-configs"): {"data": {"a100": "x"}}})


def test_a_gpu_node_with_no_plugin_on_it_advertises_nothing(mirror):
    node = {
        "metadata": {"name": "n", "uid": "n1", "labels": {}, "annotations": {"sim.mlplatform.io/gpus": "4 T4"}},
        "status": {},
    }
    config = {"version": "v1", "flags": {"migStrategy": "none"}}
    configmaps = {("gpu", "plugin-configs"): {"data": {"t4": yaml.safe_dump(config)}}}
    assert node_state(Cluster([node], [], configmaps, [], mirror), node).resources == {}
    with_plugin = Cluster([node], [_pod(PLUGIN, VOLUME)], configmaps, [], mirror)
    assert node_state(with_plugin, node).resources == {"nvidia.com/gpu": 4}
    # The plugin on another node does nothing for this one.
    elsewhere = Cluster([node], [_pod(PLUGIN, VOLUME, node="m")], configmaps, [], mirror)
    assert node_state(elsewhere, node).resources == {}
