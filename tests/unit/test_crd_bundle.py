"""A module's CRDs as one Helm release of charts/crd-bundle (platform.crdInstall: release), or
one resource per CRD (objects): the same objects either way, and what reads the stack (render,
policies, the state's inventory, recover) sees the CRDs inside the releases."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from mlplatform.config.load import read_stack_file
from mlplatform.lock import load_lock
from mlplatform.modules.crd_bundle import (
    BUNDLE_DIR,
    SOURCE_CHART,
    bundled_crds,
    is_bundle,
    release_name,
    release_objects,
    write_chart,
)
from mlplatform.recover import Cluster, RecoverError, forget_crd_releases, held_crd_releases
from mlplatform.render import stack_config_strings
from tests.conftest import HELM_KEEP, REPO_ROOT, STACKS, render_shared, without_helm_keep

CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def _crds(manifests):
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "CustomResourceDefinition"}


def _objects_config(stack: str) -> dict:
    config = read_stack_file(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    config.setdefault("mlplatform:platform", {})["crdInstall"] = "objects"
    return config


@pytest.mark.slow
@pytest.mark.parametrize("stack", STACKS)
def test_each_module_installs_its_crds_as_one_release_of_the_chart(run_stack, stack):
    mocks, _ = run_stack(stack)
    releases = [r for r in mocks.resources if is_bundle(r.typ, r.inputs)]
    assert not [r.name for r in mocks.resources if r.typ == CRD_TYPE], "no CRD is registered on its own"
    assert len(releases) >= 6, [r.name for r in releases]
    schema = json.loads((SOURCE_CHART / "values.schema.json").read_text())
    names = [r.inputs["name"] for r in releases]
    assert len(set(names)) == len(names) and all(n.endswith("-crds") and len(n) <= 53 for n in names), names
    for release in releases:
        assert release.inputs["chart"].startswith(f"{BUNDLE_DIR}/{release.name}-")
        assert release.inputs["namespace"] == "mlplatform-system"
        assert release.name == release.inputs["name"], "the Helm name is set, never generated"
        # The values list names, groups and kinds only: the schemas stay out of the state.
        listed = release.inputs["values"]["customResourceDefinitions"]
        assert listed and all(set(entry) == {"name", "group", "kind"} for entry in listed), release.name
        jsonschema.validate(release.inputs["values"], schema)
        assert [c["metadata"]["name"] for c in bundled_crds(release.inputs)] == [e["name"] for e in listed]
    bundled = [crd["metadata"]["name"] for r in releases for crd in bundled_crds(r.inputs)]
    assert len(bundled) == len(set(bundled)), "each CRD in one release"
    # The render lists each of them as the object it is.
    assert sorted(bundled) == sorted(_crds(render_shared(stack)))


@pytest.mark.slow
def test_objects_mode_registers_each_crd_and_renders_the_same(run_stack, mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    config = _objects_config("lab")
    mocks, _ = run_stack("lab", stack_config_strings(config))
    assert not [r for r in mocks.resources if is_bundle(r.typ, r.inputs)]
    registered = {r.inputs["metadata"]["name"] for r in mocks.resources if r.typ == CRD_TYPE}
    released = _crds(render_shared("lab"))
    assert registered == set(released)
    # Same objects, same content, whichever way they are installed, but for Helm's keep policy
    # that upstream puts on some CRDs: a release's copies go without it, or Helm's uninstall (a
    # destroy) would leave them behind, where the engine deletes them as resources of their own.
    as_objects = _crds(render_shared("lab", config))
    kept = {name for name, crd in as_objects.items() if HELM_KEEP in ((crd["metadata"].get("annotations")) or {})}
    assert {"gateways.networking.istio.io", "certificates.cert-manager.io"} <= kept, sorted(kept)
    assert not [name for name, crd in released.items() if HELM_KEEP in (crd["metadata"].get("annotations") or {})]
    assert {name: without_helm_keep(crd) for name, crd in as_objects.items()} == released


def test_an_unknown_crd_install_value_is_refused_with_the_allowed_ones():
    from mlplatform.config import ConfigError
    from mlplatform.validation import resolve

    raw = read_stack_file(REPO_ROOT / "stacks" / "Pulumi.lab.yaml")
    raw.setdefault("mlplatform:platform", {})["crdInstall"] = "helm"
    with pytest.raises(ConfigError) as raised:
        resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab")
    message = str(raised.value)
    assert "stacks/Pulumi.lab.yaml" in message and "platform.crdInstall" in message, message
    assert "'helm'" in message and "'release'" in message and "'objects'" in message, message


def test_release_names_fit_helm():
    assert release_name("kserve") == "kserve-crds"
    with pytest.raises(ValueError, match="longer than Helm's 53"):
        release_name("x" * 50)


def test_the_state_inventory_counts_what_helm_installed():
    outputs = {
        "resourceNames": {
            "CustomResourceDefinition.apiextensions.k8s.io/apiextensions.k8s.io/v1": ["widgets.example.com"],
            "ConfigMap/v1": ["team-a/settings"],
        }
    }
    assert release_objects(outputs) == {
        ("CustomResourceDefinition", "", "widgets.example.com"),
        ("ConfigMap", "team-a", "settings"),
    }
    assert release_objects({}) == set()


def _exported(*names: str) -> dict:
    resources = [
        {
            "type": "kubernetes:helm.sh/v3:Release",
            "inputs": {"chart": f"{BUNDLE_DIR}/{n}-0123456789abcdef", "name": n},
            "outputs": {"name": n},
        }
        for n in names
    ]
    resources.append({"type": "kubernetes:helm.sh/v3:Release", "inputs": {"chart": "gpu-operator", "name": "gpu"}})
    return {"deployment": {"resources": resources}}


def test_recover_forgets_only_crd_releases_the_state_does_not_hold(tmp_path):
    # A stand-in kubectl: lists Helm's records, logs each deletion.
    records = [
        ("sh.helm.release.v1.kserve-crds.v1", "kserve-crds"),
        ("sh.helm.release.v1.katib-crds.v1", "katib-crds"),
        ("sh.helm.release.v1.katib-crds.v2", "katib-crds"),
        ("sh.helm.release.v1.gpu.v1", "gpu"),
    ]
    listing = {"items": [{"metadata": {"name": s, "labels": {"owner": "helm", "name": r}}} for s, r in records]}
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/calls\n'
        f'case "$*" in *" get "*) cat {tmp_path}/listing.json;; *) exit 0;; esac\n'
    )
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    cluster = Cluster(kubectl=(str(kubectl), "--kubeconfig=/k"), namespace="mlplatform-system")

    held = held_crd_releases(_exported("kserve-crds"))
    assert held == {"kserve-crds"}
    assert forget_crd_releases(cluster, held) == ["katib-crds"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "--kubeconfig=/k get secrets -n mlplatform-system -l owner=helm -o json"
    assert calls[1:] == [
        "--kubeconfig=/k delete secret -n mlplatform-system --ignore-not-found "
        "sh.helm.release.v1.katib-crds.v1 sh.helm.release.v1.katib-crds.v2"
    ]
    # Everything held: nothing removed.
    assert forget_crd_releases(cluster, {"kserve-crds", "katib-crds"}) == []
    # A cluster that does not answer: a clear error, nothing deleted.
    kubectl.write_text("#!/bin/sh\necho 'connection refused' >&2\nexit 1\n")
    with pytest.raises(RecoverError, match="listing Helm's records in mlplatform-system failed: connection refused"):
        forget_crd_releases(cluster, set())


def test_helm_unittest_suites_pass():
    from mlplatform.paths import BIN_DIR

    tool = BIN_DIR / "helm-unittest"
    if not tool.exists():
        pytest.fail("helm-unittest is not built: run `make tools-test`", pytrace=False)
    proc = subprocess.run([str(tool), "--color=false", str(SOURCE_CHART)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Test Suites:\s+2 passed, 2 total", proc.stdout), proc.stdout


def test_values_file_points_at_its_schema_and_passes_it():
    text = (SOURCE_CHART / "values.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"
    schema = json.loads((SOURCE_CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    jsonschema.validate(yaml.safe_load(text), schema)


def _crd(plural: str, kind: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.com", "labels": {"mlplatform.io/stack": "lab"}},
        "spec": {
            "group": "example.com",
            "names": {"kind": kind, "plural": plural},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"note": {"type": "string", "default": "{{ .Release.Name }}"}},
                        }
                    },
                }
            ],
        },
    }


def test_a_chart_copy_renders_its_crds_as_given(tmp_path):
    """`helm template` of the copy the program writes: each CRD as declared, braces as data."""
    from mlplatform.paths import BIN_DIR

    crds = [_crd("widgets", "Widget"), _crd("gadgets", "Gadget")]
    chart = write_chart("demo-crds", crds, tmp_path)
    assert chart.startswith(f"{BUNDLE_DIR}/demo-crds-")
    # The same content is the same copy; another content another one, another chart version.
    assert write_chart("demo-crds", crds, tmp_path) == chart
    changed = write_chart("demo-crds", [crds[0]], tmp_path)
    assert changed != chart
    versions = {yaml.safe_load((tmp_path / c / "Chart.yaml").read_text())["version"] for c in (chart, changed)}
    assert len(versions) == 2 and all(v.startswith("0.1.0+") for v in versions)

    values = tmp_path / "values.yaml"
    listed = [{"name": c["metadata"]["name"], "group": "example.com", "kind": c["spec"]["names"]["kind"]} for c in crds]
    values.write_text(yaml.safe_dump({"customResourceDefinitions": listed}))
    proc = subprocess.run(
        [
            str(BIN_DIR / "helm"),
            "template",
            "demo-crds",
            str(tmp_path / chart),
            "-f",
            str(values),
            # The Kubernetes the pinned cluster tools run: `helm template` has no cluster to ask.
            "--kube-version",
            load_lock().tools["kubernetes"].version,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert rendered == crds
    inputs = {"chart": chart, "values": {"customResourceDefinitions": listed}}
    assert bundled_crds(inputs, root=tmp_path) == crds


def test_the_chart_copy_is_where_the_engine_resolves_it():
    # Relative to the project's root, the working directory of the program and the provider.
    assert not Path(BUNDLE_DIR).is_absolute()


def test_releases_with_kept_descriptions_are_refused_before_anything_runs():
    from mlplatform.config import ConfigError
    from mlplatform.validation import resolve

    raw = read_stack_file(REPO_ROOT / "stacks" / "Pulumi.lab.yaml")
    raw.setdefault("mlplatform:platform", {})["crdDescriptions"] = "keep"
    with pytest.raises(ConfigError) as raised:
        resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab")
    message = str(raised.value)
    assert "stacks/Pulumi.lab.yaml" in message and "platform.crdInstall" in message and "1 MiB" in message, message
    raw["mlplatform:platform"]["crdInstall"] = "objects"
    resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab")


def test_a_release_record_too_large_for_a_secret_is_refused_naming_the_way_out(tmp_path):
    """The record estimate follows Helm's encoding; a module whose CRDs would not fit stops the
    program before the release is registered, instead of failing in Helm mid-`up`."""
    from mlplatform.modules.crd_bundle import RECORD_LIMIT, ReleaseTooLarge, record_bytes

    small = [_crd("widgets", "Widget")]
    assert record_bytes(small) < RECORD_LIMIT
    # Incompressible text in a schema, as long descriptions nearly are.
    import secrets

    noisy = _crd("gadgets", "Gadget")
    noisy["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = secrets.token_hex(700_000)
    assert record_bytes([noisy]) > RECORD_LIMIT
    with pytest.raises(
        ReleaseTooLarge, match=r"release demo-crds would take about \d+ KiB .* platform.crdInstall: objects"
    ):
        write_chart("demo-crds", [noisy], tmp_path)
    assert not (tmp_path / BUNDLE_DIR).exists() or not list((tmp_path / BUNDLE_DIR).iterdir()), "nothing written"
