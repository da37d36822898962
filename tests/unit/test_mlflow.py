"""The MLflow module per environment: what it deploys, how it is exposed, what it publishes,
and that no credential leaves the program in clear."""

from __future__ import annotations

import json

import pytest
import yaml
from pulumi.runtime import rpc

from mlplatform.modules.mlflow import ADMIN_SECRET, DATABASE_SECRET, SECRET_SOURCE_ANNOTATION
from mlplatform.modules.services import secret_marker
from tests.conftest import REPO_ROOT, render_shared

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
FIXED_IDS = ("runAsUser", "runAsGroup", "fsGroup")


def _objects(mocks, typ):
    return {r.name: r.inputs for r in mocks.resources if r.typ == typ}


def _readable(inputs: dict) -> dict:
    """A workload's inputs with its spec unwrapped: the credentials checksum on its pod template
    is a secret, which marks the whole spec secret for the engine."""
    spec = inputs.get("spec")
    return {**inputs, "spec": spec["value"]} if rpc.is_rpc_secret(spec) else inputs


def _mlflow_objects(mocks) -> dict[tuple[str, str], dict]:
    """(kind, name) -> inputs of every Kubernetes object in the mlflow namespace (or the namespace)."""
    found = {}
    for resource in mocks.resources:
        if not resource.typ.startswith("kubernetes:"):
            continue
        metadata = resource.inputs.get("metadata") or {}
        if metadata.get("namespace") == "mlflow" or (resource.typ.endswith(":Namespace") and resource.name == "mlflow"):
            kind = resource.inputs.get("kind") or resource.typ.rsplit(":", 1)[-1]
            found[(kind, metadata["name"])] = _readable(resource.inputs)
    return found


def _pod_specs(objects):
    return {
        name: inputs["spec"]["template"]["spec"]
        for (kind, name), inputs in objects.items()
        if kind in ("Deployment", "StatefulSet", "Job")
    }


def _stack_raw(stack: str, **changes) -> dict:
    """The stack's config with MLflow as its only module (it depends on no other), so these
    tests see the MLflow module alone."""
    raw = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw["mlplatform:modules"] = {"mlflow": raw["mlplatform:modules"]["mlflow"]}
    raw.update(changes)
    return raw


def _config(stack: str, **changes) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in _stack_raw(stack, **changes).items()}


def test_lab_runs_postgres_and_seaweedfs_in_cluster_behind_an_ingress(run_stack):
    mocks, components = run_stack("lab", _config("lab"))
    objects = _mlflow_objects(mocks)
    kinds = {(kind, name) for kind, name in objects}
    assert {
        ("Namespace", "mlflow"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "mlflow-postgres"),
        ("StatefulSet", "mlflow-objectstore"),
        ("Ingress", "mlflow"),
        ("NetworkPolicy", "mlflow"),
    } <= kinds
    assert not any(kind == "Route" for kind, _ in kinds)
    jobs = [name for kind, name in kinds if kind == "Job"]
    assert jobs == ["mlflow-db-upgrade-v3-18-0-full"]

    postgres = objects[("StatefulSet", "mlflow-postgres")]["spec"]
    assert postgres["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "standard"
    ingress = objects[("Ingress", "mlflow")]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["rules"][0]["host"] == "mlflow.mlplatform.localhost"
    # HTTPS only, the certificate issued by the lab profile's self-signed ClusterIssuer.
    assert ingress["tls"] == [{"hosts": ["mlflow.mlplatform.localhost"], "secretName": "mlflow-tls"}]
    annotations = objects[("Ingress", "mlflow")]["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "mlplatform-selfsigned"
    server = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    assert server["securityContext"]["runAsUser"] == 1000
    args = server["containers"][0]["args"]
    assert "--serve-artifacts" in args and "--app-name=basic-auth" in args
    assert "--artifacts-destination=s3://mlflow" in args
    # MLflow refuses Host headers it does not know: the tracking URI's and the Ingress host.
    (allowed,) = [a.removeprefix("--allowed-hosts=").split(",") for a in args if a.startswith("--allowed-hosts=")]
    assert {"mlflow.mlflow.svc:5000", "mlflow.mlplatform.localhost"} <= set(allowed)
    # Exact names only: a pattern like 10.* also matches 10.attacker.example.
    assert not [host for host in allowed if set(host) & set("*?[")]

    outputs = components["mlflow"].outputs
    assert outputs.tracking_uri == "http://mlflow.mlflow.svc:5000"
    assert outputs.namespace == "mlflow" and outputs.service_name == "mlflow"
    assert outputs.artifact_store_uri == "s3://mlflow"
    assert outputs.external_url == "https://mlflow.mlplatform.localhost"


def test_every_object_carries_the_stack_labels_and_restricted_security(run_stack):
    mocks, _ = run_stack("lab", _config("lab"))
    objects = _mlflow_objects(mocks)
    for (kind, name), inputs in objects.items():
        labels = inputs["metadata"]["labels"]
        assert labels["mlplatform.io/stack"] == "lab", (kind, name)
        assert labels["mlplatform.io/module"] == "mlflow", (kind, name)
    assert objects[("Namespace", "mlflow")]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, spec in _pod_specs(objects).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert "resources" in container, (name, container["name"])


def test_openshift_sets_no_fixed_ids_and_uses_a_route(run_stack):
    mocks, components = run_stack("openshift", _config("openshift"))
    objects = _mlflow_objects(mocks)
    specs = _pod_specs(objects)
    assert set(specs) == {"mlflow", "mlflow-postgres", "mlflow-objectstore", "mlflow-db-upgrade-v3-18-0-full"}
    for name, spec in specs.items():
        for context in [spec["securityContext"]] + [c["securityContext"] for c in spec["containers"]]:
            assert not set(FIXED_IDS) & set(context), name
    route = objects[("Route", "mlflow")]
    assert route["apiVersion"] == "route.openshift.io/v1"
    assert route["spec"]["host"] == "mlflow.apps.ocp.example.com"
    assert ("Ingress", "mlflow") not in objects
    policy = objects[("NetworkPolicy", "mlflow")]["spec"]["ingress"][0]["from"]
    allowed = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in policy[1:-1]}
    assert {"openshift-ingress", "openshift-user-workload-monitoring", "mlplatform-system"} <= allowed
    assert components["mlflow"].outputs.external_url == "https://mlflow.apps.ocp.example.com"


def test_cloud_uses_the_managed_database_and_the_bucket_through_workload_identity(run_stack):
    mocks, components = run_stack("cloud", _config("cloud"))
    objects = _mlflow_objects(mocks)
    assert not any(kind == "StatefulSet" for kind, _ in objects)
    server = objects[("Deployment", "mlflow")]
    assert server["spec"]["replicas"] == 2
    container = server["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"] == (
        "postgresql://mlflow:$(MLFLOW_DB_PASSWORD)@mlplatform.cluster-abc123.eu-west-1.rds.amazonaws.com:5432/mlflow"
        "?sslmode=require"
    )
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in env
    assert "--artifacts-destination=s3://mlplatform-artifacts/mlflow" in container["args"]
    account = objects[("ServiceAccount", "mlflow")]["metadata"]["annotations"]
    assert account == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlplatform-mlflow"}
    assert components["mlflow"].outputs.artifact_store_uri == "s3://mlplatform-artifacts/mlflow"
    # No issuer on the cloud profile: the Ingress serves the stack's Secret (or ALB finds an
    # ACM certificate by the TLS host).
    ingress = objects[("Ingress", "mlflow")]
    assert ingress["spec"]["tls"] == [{"hosts": ["mlflow.ml.example.com"], "secretName": "mlflow-tls"}]
    assert "cert-manager.io/cluster-issuer" not in (ingress["metadata"].get("annotations") or {})
    assert components["mlflow"].outputs.external_url == "https://mlflow.ml.example.com"


@pytest.mark.security
def test_the_stack_names_the_ingress_issuer_and_secret(run_stack):
    cluster = _stack_raw("cloud")["mlplatform:cluster"]
    cluster["ingress"]["tls"] = {"issuer": "letsencrypt", "secretName": "wildcard-ml-example-com"}
    mocks, _ = run_stack("cloud", _config("cloud", **{"mlplatform:cluster": cluster}))
    ingress = _mlflow_objects(mocks)[("Ingress", "mlflow")]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"][0]["secretName"] == "wildcard-ml-example-com"


@pytest.mark.security
def test_every_secret_the_chart_refers_to_is_made_from_the_stack_secrets(run_stack):
    """Undecrypted (render, tests), each holds placeholders naming its stack secrets: none is
    left for someone to create by hand."""
    mocks, _ = run_stack("lab", _config("lab"))
    made = {n: i for n, i in _objects(mocks, "kubernetes:core/v1:Secret").items() if n.startswith("mlflow/")}
    assert set(made) == {"mlflow/mlflow-db", "mlflow/mlflow-admin", "mlflow/mlflow-artifacts"}
    assert made["mlflow/mlflow-artifacts"]["stringData"]["value"] == {
        "AWS_ACCESS_KEY_ID": secret_marker("objectStoreAccessKey"),
        "AWS_SECRET_ACCESS_KEY": secret_marker("objectStoreSecretKey"),
    }
    server = _mlflow_objects(mocks)[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in server["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {DATABASE_SECRET, ADMIN_SECRET, "mlflow-artifacts"}


@pytest.mark.security
def test_the_engine_refuses_to_start_without_mlflows_secrets(monkeypatch):
    """Before any resource: each missing name, what it is for, and how to set it."""
    import pulumi

    from mlplatform import program
    from mlplatform.validation import resolve

    raw = _stack_raw("lab")
    raw["mlplatform:secrets"] = {"objectStoreAccessKey": "k-1", "objectStoreSecretKey": "k-2"}
    resolved = resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab", decrypted=True)
    monkeypatch.setattr(program, "under_mocks", lambda: False)
    with pytest.raises(pulumi.RunError) as error:
        program.require_secrets(resolved)
    message = str(error.value)
    assert "  databasePassword (for MLflow's Secret mlflow-db): pulumi config set --secret --path " in message
    assert "mlplatform:secrets.mlflowAdminPassword <value>" in message
    assert "objectStoreAccessKey" not in message and "k-1" not in message
    assert "`mlplatform secrets generate --stack lab` sets new values for databasePassword, mlflowAdminPassword" in (
        message
    )
    raw["mlplatform:secrets"].update(databasePassword="d", mlflowAdminPassword="a")
    program.require_secrets(resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab", decrypted=True))


def test_oidc_needs_its_client_secret_which_nobody_can_generate():
    from mlplatform.stack_secrets import secret_needs
    from mlplatform.validation import resolve

    raw = _stack_raw("lab")
    raw["mlplatform:modules"]["mlflow"].update(
        auth="oidc", oidc={"issuerUrl": "https://id.example.com", "clientId": "mlflow"}
    )
    needs = {n.name: n for n in secret_needs(resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab"))}
    assert set(needs) == {
        "databasePassword",
        "objectStoreAccessKey",
        "objectStoreSecretKey",
        "mlflowOidcClientSecret",
        "mlflowOidcCookieSecret",
    }
    assert not needs["mlflowOidcClientSecret"].generatable and needs["mlflowOidcCookieSecret"].generatable


def test_decrypted_secrets_reach_the_secrets_data_and_nothing_else(run_stack):
    secrets = {
        "databasePassword": "db-pw-7f3a9c",
        "objectStoreAccessKey": "access-4b1e",
        "objectStoreSecretKey": "secret-9d2c",
        "mlflowAdminPassword": "admin-pw-0e8b",
    }
    mocks, _ = run_stack("lab", _config("lab", **{"mlplatform:secrets": secrets}))
    created = {n: i for n, i in _objects(mocks, "kubernetes:core/v1:Secret").items() if n.startswith("mlflow/")}
    assert set(created) == {"mlflow/mlflow-db", "mlflow/mlflow-artifacts", "mlflow/mlflow-admin"}
    # The engine receives the data as a secret (kept encrypted in the state).
    for inputs in created.values():
        assert inputs["stringData"][rpc._special_sig_key] == rpc._special_secret_sig
    assert created["mlflow/mlflow-db"]["stringData"]["value"] == {"password": "db-pw-7f3a9c"}
    admin = created["mlflow/mlflow-admin"]["stringData"]["value"]
    assert admin["username"] == "admin" and admin["password"] == "admin-pw-0e8b"
    assert len(admin["flask-secret-key"]) == 64 and "admin-pw-0e8b" not in admin["flask-secret-key"]
    annotations = created["mlflow/mlflow-admin"]["metadata"]["annotations"]
    assert annotations[SECRET_SOURCE_ANNOTATION] == "password=mlplatform:secrets.mlflowAdminPassword"
    # Nothing but the Secrets' own data holds a secret value: not the chart's values, not the
    # workloads, not an annotation.
    elsewhere = json.dumps(
        [r.inputs for r in mocks.resources if r.typ != "kubernetes:core/v1:Secret"]
        + [s["metadata"] for s in created.values()]
    )
    for value in secrets.values():
        assert value not in elsewhere


def test_render_writes_placeholders_for_encrypted_secrets(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    raw = _stack_raw("lab")
    ciphertext = "v1:Zm9vYmFyYmF6cXV4"
    raw["mlplatform:secrets"] = {
        name: {"secure": f"{ciphertext}-{name}"}
        for name in ("databasePassword", "objectStoreAccessKey", "objectStoreSecretKey", "mlflowAdminPassword")
    }
    manifests = render_shared("lab", raw)
    secrets = {
        m["metadata"]["name"]: m for m in manifests if m["kind"] == "Secret" and m["metadata"]["namespace"] == "mlflow"
    }
    assert secrets["mlflow-db"]["stringData"] == {"password": secret_marker("databasePassword")}
    assert secrets["mlflow-admin"]["stringData"] == {
        "username": "admin",
        "password": secret_marker("mlflowAdminPassword"),
        "flask-secret-key": "<mlplatform:sha256(mlflow-session:<mlplatform:secrets.mlflowAdminPassword>)>",
    }
    assert ciphertext not in yaml.safe_dump_all(manifests)


@pytest.mark.parametrize("stack", ["lab", "openshift", "cloud"])
def test_rendered_workloads_take_every_credential_from_a_secret(stack, mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = [m for m in render_shared(stack, _stack_raw(stack)) if m["metadata"].get("namespace") == "mlflow"]
    workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert workloads
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASSWORD", "SECRET", "ACCESS_KEY")):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (workload["metadata"]["name"], env)
    assert not [m for m in manifests if m["kind"] == "ConfigMap"]
    # The Secrets hold placeholders of stack secrets (the export turns them into references).
    for secret in [m for m in manifests if m["kind"] == "Secret"]:
        for key, value in secret["stringData"].items():
            assert value.startswith("<mlplatform:") or key == "username", (secret["metadata"]["name"], key)


def test_outputs_are_published_for_other_modules(run_stack):
    _, components = run_stack("openshift", _config("openshift"))
    outputs = components["mlflow"].outputs
    assert outputs.tracking_uri == f"http://{outputs.service_name}.{outputs.namespace}.svc:{outputs.port}"
    assert outputs.auth == "basic"


def _with_tenancy(stack: str, **changes) -> dict[str, str]:
    raw = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    modules = raw["mlplatform:modules"]
    raw["mlplatform:modules"] = {name: modules[name] for name in ("mlflow", "tenancy", "gpu")}
    raw.update(changes)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def test_each_team_gets_a_service_account_its_model_servers_load_registered_models_with(run_stack):
    secrets = {"objectStoreAccessKey": "access-4b1e", "objectStoreSecretKey": "secret-9d2c"}
    mocks, components = run_stack("lab", _with_tenancy("lab", **{"mlplatform:secrets": secrets}))
    accounts = _objects(mocks, "kubernetes:core/v1:ServiceAccount")
    secrets_made = _objects(mocks, "kubernetes:core/v1:Secret")
    configs = _objects(mocks, "kubernetes:core/v1:ConfigMap")
    for team in ("team-vision", "team-nlp", "team-analytics"):
        assert accounts[f"{team}/mlflow-models"]["secrets"] == [{"name": "mlflow-models-storage"}]
        storage = secrets_made[f"{team}/mlflow-models-storage"]
        # KServe's storage initializer reads the S3 endpoint and scheme from these annotations.
        assert storage["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == (
            "mlflow-objectstore.mlflow.svc:8333"
        )
        assert storage["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "0"
        data = storage["stringData"]
        assert data[rpc._special_sig_key] == rpc._special_secret_sig
        assert data["value"] == {"AWS_ACCESS_KEY_ID": "access-4b1e", "AWS_SECRET_ACCESS_KEY": "secret-9d2c"}
        client = configs[f"{team}/mlflow"]["data"]
        assert client["MLFLOW_ARTIFACT_STORE"] == components["mlflow"].outputs.artifact_store_uri == "s3://mlflow"
        assert client["MLFLOW_TRACKING_URI"] == components["mlflow"].outputs.tracking_uri


def test_on_workload_identity_the_team_account_carries_the_cloud_identity(run_stack):
    mocks, _ = run_stack("cloud", _with_tenancy("cloud"))
    accounts = _objects(mocks, "kubernetes:core/v1:ServiceAccount")
    account = accounts["team-recsys/mlflow-models"]
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlplatform-mlflow"
    }
    assert "secrets" not in account
    assert "team-recsys/mlflow-models-storage" not in _objects(mocks, "kubernetes:core/v1:Secret")


def _checksums(mocks) -> dict[str, str]:
    """The credentials checksum on each MLflow workload's pod template. It is left readable:
    were it secret, the engine would hold the whole spec as one and previews would hide it."""
    from mlplatform.modules.services import CREDENTIALS_CHECKSUM_ANNOTATION

    found = {}
    for resource in mocks.resources:
        if resource.typ in (DEPLOYMENT, STATEFUL_SET) and resource.name.startswith("mlflow/"):
            spec = resource.inputs["spec"]
            assert rpc._special_sig_key not in spec, resource.name
            annotations = spec["template"]["metadata"]["annotations"]
            found[resource.name.removeprefix("mlflow/")] = annotations[CREDENTIALS_CHECKSUM_ANNOTATION]
    return found


@pytest.mark.security
def test_pods_roll_when_a_credential_they_read_changes(run_stack):
    """The checksum follows the values of the Secrets each workload reads, and nothing else."""
    first = {
        "databasePassword": "db-pw-1",
        "objectStoreAccessKey": "access-1",
        "objectStoreSecretKey": "secret-1",
        "mlflowAdminPassword": "admin-pw-1",
    }
    rotated = {**first, "databasePassword": "db-pw-2"}
    before = _checksums(run_stack("lab", _config("lab", **{"mlplatform:secrets": first}), fresh=True)[0])
    again = _checksums(run_stack("lab", _config("lab", **{"mlplatform:secrets": first}), fresh=True)[0])
    after = _checksums(run_stack("lab", _config("lab", **{"mlplatform:secrets": rotated}), fresh=True)[0])
    assert set(before) == {"mlflow", "mlflow-postgres", "mlflow-objectstore"}
    for checksum in before.values():
        # A salted digest, never the values.
        assert len(checksum) == 64 and not [v for v in first.values() if v in checksum]
    assert again == before
    # The server and Postgres read mlflow-db; the object store reads only the store's keys.
    assert after["mlflow"] != before["mlflow"] and after["mlflow-postgres"] != before["mlflow-postgres"]
    assert after["mlflow-objectstore"] == before["mlflow-objectstore"]
