"""The GitOps export: one file per object, names in apply order, integers kept integers, and
Secrets filled from stack secrets as references for a secret tool, never with placeholders."""

from __future__ import annotations

import pytest
import yaml

from mlplatform.render import RenderError, _apply_order, _manifest, write_export, write_manifests


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


def _secret(name: str, namespace: str = "kubeflow", **string_data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"mlplatform.io/stack": "lab"}},
        "type": "Opaque",
        "stringData": string_data,
    }


@pytest.mark.security
def test_secrets_filled_from_stack_secrets_are_exported_as_references(tmp_path):
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
        _secret("mysql-secret", username="root", password="<mlplatform:secrets.kubeflowDatabasePassword>"),
        _secret(
            "mlflow-admin",
            "mlflow",
            username="admin",
            password="<mlplatform:secrets.mlflowAdminPassword>",
            **{"flask-secret-key": "<mlplatform:sha256(mlflow-session:<mlplatform:secrets.mlflowAdminPassword>)>"},
        ),
        # A Secret of an upstream install, filled by no stack secret, stays in the export.
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook-cert", "namespace": "kubeflow"}},
    ]
    written, references = write_export(manifests, tmp_path, "lab", "vault")
    assert [p.name for p in written] == ["0001_namespace_kubeflow.yaml", "0002_secret_kubeflow_webhook-cert.yaml"]
    main = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())["resources"]
    assert main == [p.name for p in written] and not any("secrets" in name for name in main)
    assert "<mlplatform:" not in "".join(p.read_text() for p in written)

    assert [p.parent.name for p in references] == ["secrets", "secrets"]
    listed = yaml.safe_load((tmp_path / "secrets" / "kustomization.yaml").read_text())["resources"]
    assert listed == [p.name for p in references]
    mysql, admin = (yaml.safe_load(p.read_text()) for p in references)
    assert admin["metadata"]["name"] == "mlflow-admin" and admin["metadata"]["namespace"] == "mlflow"
    assert mysql["apiVersion"] == "external-secrets.io/v1" and mysql["kind"] == "ExternalSecret"
    assert mysql["metadata"] == {
        "name": "mysql-secret",
        "namespace": "kubeflow",
        "labels": {"mlplatform.io/stack": "lab"},
    }
    spec = mysql["spec"]
    assert spec["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "vault"}
    assert spec["data"] == [
        {"secretKey": "password", "remoteRef": {"key": "mlplatform/lab/kubeflowDatabasePassword"}},
    ]
    target = spec["target"]
    assert target["name"] == "mysql-secret"
    assert target["template"]["metadata"] == {"labels": {"mlplatform.io/stack": "lab"}}
    # Keys that are no stack secret are written out; the fetched ones merge in.
    assert target["template"]["mergePolicy"] == "Merge" and target["template"]["data"] == {"username": "root"}
    # A derived key becomes the same derivation in the secret tool's template.
    assert admin["spec"]["target"]["template"]["data"]["flask-secret-key"] == (
        '{{ print "mlflow-session:" (index . "password") | sha256sum }}'
    )


@pytest.mark.security
def test_the_export_refuses_a_placeholder_outside_a_secret(tmp_path):
    leaking = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "apps"},
        "data": {"url": "postgres://app:<mlplatform:secrets.databasePassword>@db"},
    }
    with pytest.raises(RenderError, match=r"values of ConfigMap apps/settings"):
        write_export([leaking], tmp_path, "lab")
    assert not list(tmp_path.iterdir())


def test_references_of_an_earlier_export_are_removed(tmp_path):
    secret = _secret("mysql-secret", password="<mlplatform:secrets.kubeflowDatabasePassword>")
    write_export([secret], tmp_path, "lab")
    assert (tmp_path / "secrets" / "0001_externalsecret_kubeflow_mysql-secret.yaml").is_file()
    write_export([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}], tmp_path, "lab")
    assert not list((tmp_path / "secrets").glob("*.yaml"))


@pytest.mark.security
def test_render_exits_non_zero_naming_the_object_that_would_leak(tmp_path, monkeypatch, capsys):
    from mlplatform import render
    from mlplatform.cli import main

    leaking = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "apps"},
        "spec": {"template": {"metadata": {"annotations": {"token": "<mlplatform:secrets.mlflowAdminPassword>"}}}},
    }
    monkeypatch.setattr(render, "render_manifests", lambda stack: [leaking])
    assert main(["render", "--stack", "lab", "--out", str(tmp_path / "out")]) == 1
    assert "values of Deployment apps/app" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
