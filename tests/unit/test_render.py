"""The GitOps export: one file per object, names in apply order, integers kept integers."""

from __future__ import annotations

import yaml

from mlplatform.render import _apply_order, _manifest, write_manifests


def test_file_names_sort_in_apply_order_past_a_thousand_objects(tmp_path):
    manifests = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "n"}} for i in range(1200)
    ]
    written = write_manifests(manifests, tmp_path)
    assert [p.name for p in sorted(tmp_path.glob("*_*.yaml"))] == [p.name for p in written]
    assert written[0].name == "0001_configmap_n_c0.yaml" and written[-1].name == "1200_configmap_n_c1199.yaml"
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [p.name for p in written]


def test_rewriting_an_export_removes_objects_that_are_gone(tmp_path):
    write_manifests([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}] * 3, tmp_path)
    write_manifests([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == ["0001_namespace_a.yaml", "kustomization.yaml"]


def test_manifests_keep_integers_and_sorted_keys():
    manifest = _manifest(
        {
            "kind": "PriorityClass",
            "value": 100.0,
            "apiVersion": "scheduling.k8s.io/v1",
            "metadata": {"name": "p", "labels": {"b": "1", "a": "2"}},
        }
    )
    assert list(manifest) == ["apiVersion", "kind", "metadata", "value"]
    assert manifest["value"] == 100 and isinstance(manifest["value"], int)
    assert list(manifest["metadata"]["labels"]) == ["a", "b"]


def test_namespaces_and_crds_come_before_what_lives_in_them():
    kinds = ["ClusterQueue", "Deployment", "ConfigMap", "CustomResourceDefinition", "Namespace"]
    ordered = sorted(({"kind": k, "metadata": {"name": "x"}} for k in kinds), key=_apply_order)
    assert [m["kind"] for m in ordered] == [
        "Namespace",
        "CustomResourceDefinition",
        "ConfigMap",
        "Deployment",
        "ClusterQueue",
    ]
