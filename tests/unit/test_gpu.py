"""GPU layer: hardware facts, capacity per sharing mode, generated configs, install paths."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from mlplatform.config import ConfigError
from mlplatform.config.model import NodePool
from mlplatform.gpu.capacity import extended_resources
from mlplatform.gpu.dcgm_metrics import (
    DCGM_METRICS_CONFIGMAP,
    DCGM_METRICS_KEY,
    DEVICE_FIELDS,
    PROFILING_FIELDS,
    PROFILING_PREFIX,
)
from mlplatform.gpu.facts import MIG_GEOMETRY, PCI_DEVICE_IDS, mig_problems
from mlplatform.gpu.plugin_config import device_plugin_config, mig_parted_config
from mlplatform.modules.gpu import gpu_outputs
from mlplatform.validation import load_stack, resolve
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
    outputs = gpu_outputs(list(lab.cluster.node_pools), "nvidia-device-plugin", None)
    assert outputs.resource_names == (
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/mig-2g.10gb",
        "nvidia.com/mig-3g.20gb",
    )
    assert outputs.total("nvidia.com/gpu.shared") == 2 * 4 * 4
    assert outputs.total("nvidia.com/mig-1g.5gb") == 16
    # No node-pool label on a lab's nodes: the pool is found by the label the stack declares.
    assert outputs.node_selectors["gpu-a100"] == {"mlplatform.io/node-pool": "gpu-a100"}
    assert "cpu" not in outputs.pools and "cpu" not in outputs.node_selectors
    # Where the provider labels its pools, by that label alone.
    cloud = load_stack("cloud")
    eks = gpu_outputs(list(cloud.config.cluster.node_pools), "x", cloud.profile.node_pool_label)
    assert eks.node_selectors == {
        "gpu-a10g": {"eks.amazonaws.com/nodegroup": "gpu-a10g"},
        "gpu-h100": {"eks.amazonaws.com/nodegroup": "gpu-h100"},
    }


def _with_gpu_module(stack: str, **gpu_settings) -> dict:
    config = pulumi_config_of(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    config["mlplatform:modules"] = json.dumps({"gpu": {"enabled": True, **gpu_settings}})
    return config


def test_device_plugin_daemonsets_select_their_pool_and_read_its_config(run_stack):
    mocks, _ = run_stack("cloud")
    daemonsets = {
        r.inputs["metadata"]["name"]: r.inputs for r in mocks.resources if r.typ == "kubernetes:apps/v1:DaemonSet"
    }
    template = daemonsets["nvidia-device-plugin-gpu-a10g"]["spec"]["template"]
    plugin = template["spec"]
    # The EKS node group's own label: a node the group adds later gets its plugin at once.
    assert plugin["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "gpu-a10g"}
    assert template["metadata"]["annotations"]["mlplatform.io/gpu-config-hash"]
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
    dcgm_pod = daemonsets["dcgm-exporter"]["spec"]["template"]["spec"]
    dcgm = dcgm_pod["containers"][0]
    assert dcgm["image"] == "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    terms = dcgm_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"][0]["values"] for t in terms] == [["gpu-a10g"], ["gpu-h100"]]
    # No MIG on the cloud stack, so no MIG manager; GFD is on, so NFD runs beside it.
    assert not [name for name in daemonsets if name.startswith("nvidia-mig-manager")]
    assert "nfd-worker" in daemonsets
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
    config = _with_gpu_module("cloud", install="operator")
    # The operator gives every node one config: the pools share GPUs alike.
    cluster = json.loads(config["mlplatform:cluster"])
    for pool in cluster["nodePools"]:
        if "gpu" in pool:
            pool["gpu"].pop("sharing", None)
    config["mlplatform:cluster"] = json.dumps(cluster)
    mocks, _ = run_stack("cloud", config)
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
    for pool in config["mlplatform:cluster"]["nodePools"]:
        pool.get("gpu", {}).pop("sharing", None)
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
            "labels": {"mlplatform.io/node-pool": "gpu-a100", "nvidia.com/mig.config": "mlplatform-gpu-a100"},
            "gpu": {
                "model": "A100-SXM4-80GB",
                "count": 8,
                "sharing": {"mig": {"strategy": "mixed", "devices": {"3g.40gb": 2}}},
            },
        }
    )
    with pytest.raises(ConfigError, match=r"one MIG strategy to the whole cluster.*gpu-h100=single, gpu-a100=mixed"):
        resolve(raw, source="stacks/Pulumi.openshift.yaml", stack="openshift")


def _lab_with_pools(edit) -> dict:
    raw = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())["config"]
    edit({p["name"]: p for p in raw["mlplatform:cluster"]["nodePools"]})
    return raw


def test_a_gpu_pool_nothing_identifies_is_refused_with_what_to_add():
    raw = _lab_with_pools(lambda pools: pools["gpu-t4"].pop("labels"))
    with pytest.raises(ConfigError) as error:
        resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab")
    message = str(error.value)
    assert "mlplatform:cluster.nodePools[2].labels" in message
    assert "GPU pool 'gpu-t4' declares no label its nodes carry" in message
    assert "mlplatform.io/node-pool: gpu-t4" in message


def test_a_gpu_pool_whose_labels_select_another_pool_is_refused():
    def share_a_label(pools):
        pools["gpu-t4"]["labels"] = {"accelerator": "nvidia"}
        pools["cpu"]["labels"] = {"accelerator": "nvidia", "tier": "cpu"}

    with pytest.raises(
        ConfigError,
        match=r"nodePools\[2\]\.labels: GPU pool 'gpu-t4' is found by accelerator=nvidia, "
        r"which pool 'cpu' carries too",
    ):
        resolve(_lab_with_pools(share_a_label), source="stacks/Pulumi.lab.yaml", stack="lab")


def test_the_operator_path_refuses_pools_that_share_gpus_differently():
    raw = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.openshift.yaml").read_text())["config"]
    raw["mlplatform:cluster"]["nodePools"].append(
        {
            "name": "gpu-l4",
            "count": 1,
            "cpu": "16",
            "memory": "64Gi",
            "labels": {"mlplatform.io/node-pool": "gpu-l4"},
            "gpu": {"model": "L4", "count": 1, "sharing": {"timeSlicing": {"replicas": 4}}},
        }
    )
    with pytest.raises(ConfigError, match=r"one device plugin config, and pools gpu-l4 share"):
        resolve(raw, source="stacks/Pulumi.openshift.yaml", stack="openshift")


def test_operator_defaults_are_the_pools_config_and_layout(run_stack):
    mocks, _ = run_stack("openshift")
    (policy,) = [r for r in mocks.resources if r.typ == "kubernetes:nvidia.com/v1:ClusterPolicy"]
    spec = policy.inputs["spec"]
    # Every node gets them with no label of ours: the operator's defaults.
    assert spec["devicePlugin"]["config"] == {"name": "nvidia-device-plugin-configs", "default": "gpu-h100"}
    # The operator's only MIG default is all-disabled: the pool's nodes name their layout.
    assert spec["migManager"]["config"] == {"name": "mlplatform-mig-parted-config", "default": "all-disabled"}


def test_mig_off_the_operator_path_gets_a_mig_manager_per_pool(run_stack):
    mocks, _ = run_stack("lab")
    daemonsets = {
        r.inputs["metadata"]["name"]: r.inputs for r in mocks.resources if r.typ == "kubernetes:apps/v1:DaemonSet"
    }
    manager = daemonsets["nvidia-mig-manager-gpu-a100"]["spec"]["template"]["spec"]
    assert manager["nodeSelector"] == {"mlplatform.io/node-pool": "gpu-a100"}
    (container,) = manager["containers"]
    assert container["image"] == "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.15.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MIG_PARTED_SELECTED_CONFIG"] == "mlplatform-gpu-a100"
    assert env["MIG_PARTED_CONFIG_FILE"] == "/etc/nvidia/mig/config.yaml"
    assert "nvidia-mig-parted apply" in container["command"][-1]
    assert manager["volumes"] == [{"name": "mig-config", "configMap": {"name": "mlplatform-mig-parted-config"}}]
    # The pool's device plugin starts once the layout is asserted; the T4 pool's has no wait.
    (wait,) = daemonsets["nvidia-device-plugin-gpu-a100"]["spec"]["template"]["spec"]["initContainers"]
    assert wait["command"][-1] == "nvidia-mig-parted assert"
    assert "initContainers" not in daemonsets["nvidia-device-plugin-gpu-t4"]["spec"]["template"]["spec"]
    assert "nvidia-mig-manager-gpu-t4" not in daemonsets


def test_node_feature_discovery_publishes_nvidia_labels_from_the_gpu_namespace(run_stack):
    mocks, _ = run_stack("lab")
    nfd = [r.inputs for r in mocks.resources if r.inputs.get("metadata", {}).get("name", "").startswith("nfd-")]
    namespaced = [m for m in nfd if m["metadata"].get("namespace")]
    assert namespaced and {m["metadata"]["namespace"] for m in namespaced} == {"nvidia-device-plugin"}
    assert not [
        r for r in mocks.resources if r.typ == "kubernetes:core/v1:Namespace" and r.name == "node-feature-discovery"
    ]
    (master_conf,) = [m for m in nfd if m.get("kind") == "ConfigMap" and "nfd-master.conf" in m["data"]]
    assert yaml.safe_load(master_conf["data"]["nfd-master.conf"]) == {"extraLabelNs": ["nvidia.com"]}
    (binding,) = [m for m in nfd if m.get("kind") == "ClusterRoleBinding" and m["metadata"]["name"] == "nfd-master"]
    assert {s["namespace"] for s in binding["subjects"]} == {"nvidia-device-plugin"}
    (worker,) = [m for m in nfd if m.get("kind") == "DaemonSet"]
    assert (
        worker["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.k8s.io/nfd/node-feature-discovery:v0.19.0"
    )


def test_kueue_flavors_pin_workloads_with_the_pools_own_label(run_stack):
    mocks, _ = run_stack("cloud")
    flavors = {
        r.inputs["metadata"]["name"]: r.inputs["spec"] for r in mocks.resources if r.typ.endswith(":ResourceFlavor")
    }
    assert flavors["gpu-h100"]["nodeLabels"] == {"eks.amazonaws.com/nodegroup": "gpu-h100"}


def test_the_operator_path_needs_mig_pools_to_name_their_layout():
    raw = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.openshift.yaml").read_text())["config"]
    pool = next(p for p in raw["mlplatform:cluster"]["nodePools"] if p["name"] == "gpu-h100")
    del pool["labels"]["nvidia.com/mig.config"]
    with pytest.raises(ConfigError) as error:
        resolve(raw, source="stacks/Pulumi.openshift.yaml", stack="openshift")
    assert "nodePools[1].labels: the GPU operator's MIG manager partitions a node as its label" in str(error.value)
    assert "{nvidia.com/mig.config: mlplatform-gpu-h100}" in str(error.value)


def _dcgm(mocks) -> tuple[list[dict], dict]:
    """Our DCGM exporter DaemonSets and the metric list they read."""
    daemonsets = [
        r.inputs
        for r in mocks.resources
        if r.typ == "kubernetes:apps/v1:DaemonSet" and r.inputs["metadata"]["name"].startswith("dcgm-exporter")
    ]
    (metrics,) = [
        r.inputs
        for r in mocks.resources
        if r.typ == "kubernetes:core/v1:ConfigMap" and r.inputs["metadata"]["name"] == DCGM_METRICS_CONFIGMAP
    ]
    return daemonsets, metrics


@pytest.mark.security
@pytest.mark.parametrize("stack", ["lab", "cloud"])
def test_the_dcgm_exporter_holds_no_sys_admin_and_collects_no_profiling_fields_by_default(run_stack, stack):
    mocks, _ = run_stack(stack)
    daemonsets, metrics = _dcgm(mocks)
    assert daemonsets
    assert "SYS_ADMIN" not in json.dumps(daemonsets)
    assert "DCGM_FI_PROF_" not in metrics["data"][DCGM_METRICS_KEY]
    (container,) = daemonsets[0]["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    # It reads our list, mounted from the ConfigMap, not the image's own.
    collectors = next(e["value"] for e in container["env"] if e["name"] == "DCGM_EXPORTER_COLLECTORS")
    mount = next(m for m in container["volumeMounts"] if collectors.startswith(m["mountPath"] + "/"))
    volume = next(v for v in daemonsets[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == DCGM_METRICS_CONFIGMAP
    assert collectors.endswith("/" + DCGM_METRICS_KEY)


@pytest.mark.security
def test_profiling_metrics_bring_sys_admin_and_the_profiling_fields(run_stack):
    mocks, _ = run_stack("cloud", _with_gpu_module("cloud", dcgmExporter={"profilingMetrics": True}))
    (daemonset,), metrics = _dcgm(mocks)
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"] == {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    fields = {line.split(",")[0] for line in metrics["data"][DCGM_METRICS_KEY].splitlines() if line[:1] != "#"}
    assert {field for field, _, _ in PROFILING_FIELDS} <= fields


def test_the_operator_path_reads_our_metric_list(run_stack):
    mocks, _ = run_stack("openshift")
    (policy,) = [r for r in mocks.resources if r.typ == "kubernetes:nvidia.com/v1:ClusterPolicy"]
    assert policy.inputs["spec"]["dcgmExporter"]["config"] == {"name": DCGM_METRICS_CONFIGMAP}
    _, metrics = _dcgm(mocks)
    assert metrics["metadata"]["namespace"] == "nvidia-gpu-operator"
    assert "DCGM_FI_PROF_" not in metrics["data"][DCGM_METRICS_KEY]


@pytest.mark.security
def test_our_rules_and_dashboards_read_only_fields_the_exporter_collects_without_profiling():
    read = set()
    for path in (REPO_ROOT / "charts" / "ml-alerts").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".tpl") and "tests" not in path.parts:
            read |= set(re.findall(r"\bDCGM_FI_[A-Z0-9_]+", path.read_text()))
    assert read, "no DCGM field found in charts/ml-alerts"
    assert not {field for field in read if field.startswith(PROFILING_PREFIX)}
    assert read <= {field for field, _, _ in DEVICE_FIELDS}
    assert all(not field.startswith(PROFILING_PREFIX) for field, _, _ in DEVICE_FIELDS)
