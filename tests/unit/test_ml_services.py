"""ML services: overlays build over the mirror, modules register objects in dependency order,
environment differences hold, credentials never appear in clear, the examples are valid."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

from mlplatform.modules.crd_bundle import bundled_crds, is_bundle
from mlplatform.modules.services import BUILT_IN_GROUPS, api_group
from mlplatform.overlays import ENVIRONMENTS, build_overlay, components
from mlplatform.upstream import upstream_sources
from tests.conftest import REPO_ROOT, STACKS, render_shared, validate_against

EXAMPLES = REPO_ROOT / "examples" / "stock-prediction"
EXAMPLES_PYTHON = REPO_ROOT / ".venv-examples" / "bin" / "python"
SERVICE_TYPES = {
    "notebooks": "mlplatform:notebooks:Notebooks",
    "pipelines": "mlplatform:pipelines:Pipelines",
    "katib": "mlplatform:katib:Katib",
    "kserve": "mlplatform:kserve:Kserve",
    "training": "mlplatform:training:Training",
}


@pytest.mark.slow
def test_every_overlay_builds_from_the_mirror(mirror):
    sources = upstream_sources()
    assert set(ENVIRONMENTS) == set(STACKS)
    for component in components():
        for environment in ENVIRONMENTS:
            documents = build_overlay(component, environment, sources, mirror)
            assert documents, (component, environment)
            kinds = Counter(d["kind"] for d in documents)
            if not component.endswith("-runtimes"):
                assert kinds["Deployment"] >= 1, f"{component} ({environment}): {kinds}"


def test_pipelines_build_offline_with_argo_from_its_module(mirror):
    documents = build_overlay("pipelines", "lab", upstream_sources(), mirror)
    images = {
        c["image"] for d in documents if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert "quay.io/argoproj/workflow-controller:v3.7.3" in images
    assert "ghcr.io/kubeflow/kfp-api-server:2.16.0" in images
    crds = {d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"}
    assert "workflows.argoproj.io" in crds


def test_cloud_pipelines_leave_out_the_in_cluster_database_and_store(mirror):
    names = {
        (d["kind"], d["metadata"]["name"]) for d in build_overlay("pipelines", "cloud", upstream_sources(), mirror)
    }
    assert ("Deployment", "ml-pipeline") in names
    assert (
        not {("Deployment", "mysql"), ("Deployment", "seaweedfs"), ("PersistentVolumeClaim", "mysql-pv-claim")} & names
    )


def test_an_unknown_overlay_is_named_with_the_allowed_ones(mirror):
    with pytest.raises(
        Exception,
        match=r"no overlay for component 'jupyterhub' \(allowed: admission-webhook, centraldashboard, cert-manager, "
        r"dex, istio, jupyter-web-app, katib, knative-serving, kserve,",
    ):
        build_overlay("jupyterhub", "lab", upstream_sources(), mirror)
    with pytest.raises(Exception, match=r"no environment 'staging' \(allowed: lab, openshift, cloud\)"):
        build_overlay("katib", "staging", upstream_sources(), mirror)


@pytest.mark.parametrize("stack", STACKS)
def test_each_service_is_a_component_and_every_object_its_child(run_stack, stack):
    mocks, components = run_stack(stack)
    for module, typ in SERVICE_TYPES.items():
        assert type(components[module]).__name__ in typ, module
    parents = {r.name: r for r in mocks.resources if not r.custom}
    assert {typ for typ in SERVICE_TYPES.values()} <= {r.typ for r in parents.values()}


@pytest.mark.parametrize("stack", STACKS)
def test_custom_resources_and_webhooks_wait_for_what_serves_them(run_stack, stack, monkeypatch):
    recorded: dict[str, list[str]] = {}
    import pulumi_kubernetes as k8s

    from mlplatform.modules import base

    original = base.create_object

    def spying(manifest, opts):
        names = []
        for dependency in opts.depends_on or []:
            names.append(getattr(dependency, "_name", "") or "")
        key = f"{manifest['kind']}:{manifest['metadata'].get('namespace', '')}/{manifest['metadata']['name']}"
        recorded[key] = names
        return original(manifest, opts)

    monkeypatch.setattr(base, "create_object", spying)
    from mlplatform.modules import ml_services, services

    monkeypatch.setattr(services, "create_object", spying)
    monkeypatch.setattr(ml_services, "create_object", spying)
    mocks, _ = run_stack(stack, fresh=True)
    assert k8s  # the typed classes are what create_object builds
    # Each CRD is installed by its module's CRD release: a dependent waits on that release.
    installer = {
        crd["metadata"]["name"]: r.name
        for r in mocks.resources
        if is_bundle(r.typ, r.inputs)
        for crd in bundled_crds(r.inputs)
    }
    certificates = [k for k in recorded if k.startswith("Certificate:")]
    assert certificates, "KServe's Certificates are registered"
    for key in certificates:
        # cert-manager's webhook Deployment and the Certificate CRD come first.
        assert "cert-manager/cert-manager-webhook" in recorded[key], key
        assert installer["certificates.cert-manager.io"] in recorded[key], key
    for key in [k for k in recorded if k.startswith("ValidatingWebhookConfiguration:")]:
        if "inferenceservice" in key:
            assert "kserve/kserve-controller-manager" in recorded[key], key
    runtimes = [k for k in recorded if k.startswith("ClusterServingRuntime:")]
    assert len(runtimes) == 11
    for key in runtimes:
        assert installer["clusterservingruntimes.serving.kserve.io"] in recorded[key]
        assert "kserve/kserve-controller-manager" in recorded[key]
    # Namespaced objects wait for their namespace.
    for key, dependencies in recorded.items():
        if key.startswith("Deployment:kubeflow/"):
            assert "kubeflow" in dependencies, key


def _custom_resource_kinds(manifests: list[dict]) -> Counter:
    return Counter(m["kind"] for m in manifests if api_group(m) not in BUILT_IN_GROUPS)


def test_openshift_workloads_carry_no_fixed_ids_and_lab_keeps_upstreams(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    for stack, expect_fixed in (("openshift", False), ("lab", True)):
        manifests = render_shared(stack)
        fixed = []
        for m in manifests:
            if m["kind"] in ("ClusterServingRuntime", "ServingRuntime"):
                spec = m["spec"]
            elif m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                spec = m["spec"]["template"]["spec"]
            else:
                continue
            contexts = [spec.get("securityContext") or {}] + [
                c.get("securityContext") or {} for c in spec["containers"] + spec.get("initContainers", [])
            ]
            # A container that declares it runs as root (runAsNonRoot: false) keeps its ids: on
            # OpenShift only Istio's CNI node agent, admitted by the privileged SCC.
            if any(ctx.get("runAsNonRoot") is False for ctx in contexts):
                continue
            if any(k in ctx for ctx in contexts for k in ("runAsUser", "runAsGroup", "fsGroup")):
                fixed.append(m["metadata"]["name"])
        assert bool(fixed) == expect_fixed, f"{stack}: {fixed}"
    openshift = render_shared("openshift")
    # Multi-user Pipelines: the UI is reached through the mesh's gateway (its Route), not a
    # Route of its own as upstream's single-user OpenShift variant has.
    assert not any(m["kind"] == "Route" and m["metadata"]["name"] == "ml-pipeline-ui" for m in openshift)
    assert any(
        m["kind"] == "VirtualService" and m["metadata"]["name"] == "ml-pipeline-ui" and m["spec"]["gateways"]
        for m in openshift
    )


def test_cloud_backends_and_no_credential_in_clear(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared("cloud")
    # The services' own objects: team namespaces hold run objects of the same names (multi-user).
    teams = {
        m["metadata"]["name"]
        for m in manifests
        if m["kind"] == "Namespace" and (m["metadata"].get("labels") or {}).get("mlplatform.io/role") == "team"
    }
    by_key = {(m["kind"], m["metadata"]["name"]): m for m in manifests if m["metadata"].get("namespace") not in teams}
    install = by_key[("ConfigMap", "pipeline-install-config")]["data"]
    assert install["dbHost"] == "kubeflow.cluster-abc123.eu-west-1.rds.amazonaws.com"
    assert install["bucketName"] == "mlplatform-artifacts"
    assert by_key[("ConfigMap", "kfp-launcher")]["data"]["defaultPipelineRoot"] == "s3://mlplatform-artifacts/pipelines"
    repository = json.loads(by_key[("ConfigMap", "workflow-controller-configmap")]["data"]["artifactRepository"])
    assert repository["s3"]["endpoint"] == "s3.eu-west-1.amazonaws.com" and repository["s3"]["insecure"] is False
    assert ("Deployment", "mysql") not in by_key and ("Deployment", "seaweedfs") not in by_key
    mysql = by_key[("Secret", "mysql-secret")]
    assert mysql["stringData"]["password"] == "<mlplatform:secrets.kubeflowDatabasePassword>"
    katib = next(m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"].startswith("katib-mysql"))
    assert katib["stringData"]["DB_PASSWORD"] == "<mlplatform:secrets.kubeflowDatabasePassword>"
    artifact = by_key[("Secret", "mlpipeline-minio-artifact")]
    assert artifact["stringData"] == {
        "accesskey": "<mlplatform:secrets.objectStoreAccessKey>",
        "secretkey": "<mlplatform:secrets.objectStoreSecretKey>",
    }
    # Trainer v2 with JobSet on cloud; the training operator elsewhere.
    assert ("Deployment", "kubeflow-trainer-controller-manager") in by_key
    assert ("Deployment", "jobset-controller-manager") in by_key
    assert sum(1 for kind, _ in by_key if kind == "ClusterTrainingRuntime") >= 1


def test_kserve_runs_raw_deployment_on_the_stack_ingress(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    for stack, ingress_class in (("lab", "nginx"), ("openshift", "openshift-default")):
        manifests = render_shared(stack)
        config = next(m for m in manifests if m["metadata"]["name"] == "inferenceservice-config")["data"]
        assert json.loads(config["deploy"]) == {"defaultDeploymentMode": "RawDeployment"}
        ingress = json.loads(config["ingress"])
        assert ingress["ingressClassName"] == ingress_class, stack
        # Predictors announce their metrics for the predictor PodMonitor.
        assert json.loads(config["metricsAggregator"])["enablePrometheusScraping"] == "true"
        names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
        # Privileged node agent and the LLM pieces without a server stay out.
        assert ("DaemonSet", "kserve-localmodelnode-agent") not in names
        assert ("ValidatingWebhookConfiguration", "llminferenceserviceconfig.serving.kserve.io") not in names
        assert _custom_resource_kinds(manifests)["ClusterServingRuntime"] == 11


def test_notebook_rules_follow_the_allow_list_and_gpu_profile(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared("lab")
    policy = next(m for m in manifests if m["kind"] == "ValidatingAdmissionPolicy")
    assert policy["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    binding = next(m for m in manifests if m["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["paramRef"] == {"name": "notebook-defaults", "parameterNotFoundAction": "Deny"}
    rules = {
        m["metadata"]["namespace"]: m["data"]
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "notebook-defaults"
    }
    assert set(rules) == {"team-vision", "team-nlp", "team-analytics"}
    # The module's list and GPU profile, except where a team sets its own.
    assert rules["team-vision"]["allowedImages"].split("\n") == [
        "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0",
        "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-pytorch-cuda-full:v1.10.0",
    ]
    assert (
        rules["team-analytics"]["allowedImages"] == "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"
    )
    assert rules["team-vision"]["gpuResource"] == "nvidia.com/gpu.shared"
    assert rules["team-vision"]["gpuMaxPerNotebook"] == "1"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "mlplatform:platform",
            {
                "objectStore": {"kind": "in-cluster"},
                "database": {"kind": "managed", "engine": "postgres", "host": "db"},
            },
            "Kubeflow Pipelines and Katib need MySQL",
        ),
        ("mlplatform:secrets", {"kubeflowDatabasePassword": "hunter2"}, "must be stored encrypted"),
        ("mlplatform:secrets", {"apiToken": {"secure": "v1:abc"}}, "unknown secret 'apiToken'"),
    ],
)
def test_service_settings_are_checked_before_anything_is_registered(key, value, expected):
    from mlplatform.config import ConfigError
    from mlplatform.validation import resolve

    raw = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())["config"]
    raw[key] = value
    with pytest.raises(ConfigError) as error:
        resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab")
    assert expected in str(error.value)
    assert "hunter2" not in str(error.value)


@pytest.mark.security
def test_the_engine_refuses_a_stack_without_its_service_credentials():
    from mlplatform.modules.registry import required_secrets
    from mlplatform.validation import resolve

    raw = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.cloud.yaml").read_text())["config"]
    resolved = resolve(raw, source="stacks/Pulumi.cloud.yaml", stack="cloud")
    assert {name for name, _ in required_secrets(resolved)} == {
        "kubeflowDatabasePassword",
        "objectStoreAccessKey",
        "objectStoreSecretKey",
        # MLflow's managed Postgres and its basic-auth admin (its store: workload identity).
        "databasePassword",
        "mlflowAdminPassword",
        # The gateway's sign-in proxy: its client at the stack's issuer, its cookies.
        "identityClientSecret",
        "identityCookieSecret",
    }
    raw["mlplatform:secrets"] = {"kubeflowDatabasePassword": "s3cret"}
    decrypted = resolve(raw, source="stacks/Pulumi.cloud.yaml", stack="cloud", decrypted=True)
    assert decrypted.secrets == {"kubeflowDatabasePassword": "s3cret"}
    assert "s3cret" not in repr(decrypted)


@pytest.mark.security
def test_every_in_cluster_credential_is_a_stack_secret_the_platform_may_generate():
    from mlplatform.stack_secrets import secret_needs
    from mlplatform.validation import load_stack

    for stack in ("lab", "openshift"):
        needs = secret_needs(load_stack(stack))
        # Dex signs users in on both; only the lab's has a static user.
        test_user = ["identityTestUserPassword"] if stack == "lab" else []
        assert [n.name for n in needs] == [
            "databasePassword",
            "kubeflowDatabasePassword",
            "objectStoreAccessKey",
            "objectStoreSecretKey",
            "mlflowAdminPassword",
            "identityClientSecret",
            "identityCookieSecret",
            *test_user,
        ], stack
        assert all(n.generatable for n in needs), stack
    cloud = {n.name: n.generatable for n in secret_needs(load_stack("cloud"))}
    # Managed database passwords, the bucket's keys and the OIDC client secret are issued
    # outside the platform.
    assert [name for name, generatable in cloud.items() if generatable] == [
        "mlflowAdminPassword",
        "identityCookieSecret",
    ]


def _env_values(manifest: dict) -> list[dict]:
    spec = manifest.get("spec", {}).get("template", {}).get("spec")
    if not isinstance(spec, dict):
        return []
    return [e for c in spec.get("containers", []) + spec.get("initContainers", []) for e in c.get("env") or []]


@pytest.mark.security
@pytest.mark.parametrize("stack", STACKS)
def test_no_rendered_object_carries_an_upstream_default_credential(stack, mirror, monkeypatch):
    import base64

    from mlplatform.policy_check import import_policies

    policies, _ = import_policies()
    defaults = policies.resource_policies.UPSTREAM_DEFAULT_CREDENTIALS
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared(stack)
    for manifest in manifests:
        name = f"{manifest['kind']} {manifest['metadata'].get('namespace', '')}/{manifest['metadata']['name']}"
        for env in _env_values(manifest):
            assert env["name"] != "MYSQL_ALLOW_EMPTY_PASSWORD", name
            assert env.get("value") not in defaults, (name, env["name"])
        if manifest["kind"] == "Secret":
            values = dict(manifest.get("stringData") or {})
            values.update({k: base64.b64decode(v).decode() for k, v in (manifest.get("data") or {}).items()})
            for key, value in values.items():
                assert value not in defaults and (value or "password" not in key.lower()), (name, key)
    # The in-cluster MySQLs start with root's password from their Secret.
    for deployment, secret in (("mysql", "mysql-secret"), ("katib-mysql", "katib-mysql-secrets")):
        found = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == deployment]
        if stack == "cloud":
            assert not found
            continue
        (root,) = [e for e in _env_values(found[0]) if e["name"] == "MYSQL_ROOT_PASSWORD"]
        assert root["valueFrom"]["secretKeyRef"]["name"] == secret


@pytest.mark.security
def test_workloads_reading_the_credentials_we_fill_roll_with_them(mirror, monkeypatch):
    from mlplatform.modules.services import CREDENTIALS_CHECKSUM_ANNOTATION, consumed_secrets

    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared("lab")
    filled = {
        "mysql-secret",
        "mlpipeline-minio-artifact",
        "katib-mysql-secrets",
        "mlflow-db",
        "mlflow-artifacts",
        "mlflow-admin",
        "dex-oidc-client",
        "dex-passwords",
        # oauth2-proxy's, named with kustomize's content hash.
        *(
            m["metadata"]["name"]
            for m in manifests
            if m["kind"] == "Secret" and m["metadata"]["namespace"] == "oauth2-proxy"
        ),
    }
    readers = {}
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            annotations = m["spec"]["template"].get("metadata", {}).get("annotations") or {}
            readers[m["metadata"]["name"]] = (
                consumed_secrets(m["spec"]["template"]["spec"]) & filled,
                CREDENTIALS_CHECKSUM_ANNOTATION in annotations,
            )
    for name in (
        "mysql",
        "seaweedfs",
        "ml-pipeline",
        "katib-mysql",
        "katib-db-manager",
        "mlflow",
        "mlflow-postgres",
        "dex",
        "oauth2-proxy",
    ):
        assert readers[name] == (readers[name][0], True) and readers[name][0], name
    # Nothing else is rolled by a credential change.
    assert all(annotated == bool(reads) for reads, annotated in readers.values())


def crd_schema(mirror: Path, api_version: str, kind: str) -> dict:
    """The schema of a custom resource: the mirror's catalogue where it has one, else the
    openAPIV3Schema of the upstream CRD the services install (Katib's, Trainer's)."""
    group, version = api_version.split("/")
    catalogued = mirror / "crd-schemas" / group / f"{kind.lower()}_{version}.json"
    if catalogued.exists():
        return json.loads(catalogued.read_text())
    sources = upstream_sources()
    for component in ("katib", "trainer", "training", "notebooks", "pipelines"):
        for document in build_overlay(component, "lab", sources, mirror):
            spec = document.get("spec", {})
            if (
                document["kind"] == "CustomResourceDefinition"
                and spec["group"] == group
                and spec["names"]["kind"] == kind
            ):
                served = next(v for v in spec["versions"] if v["name"] == version)
                return served["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no schema for {api_version} {kind}")


def test_example_custom_resources_match_the_upstream_schemas(mirror):
    documents = [
        d
        for p in sorted(EXAMPLES.glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if not d["apiVersion"].startswith("rbac.authorization.k8s.io/")
    ]
    assert [d["kind"] for d in documents] == ["InferenceService", "Experiment", "Notebook"]
    for document in documents:
        validate_against(document, crd_schema(mirror, document["apiVersion"], document["kind"]))
    # Katib's Experiment CRD keeps every field (no structural schema): the API server and the
    # e2e test judge it. KServe's schema types each field.
    broken = json.loads(json.dumps(documents[0]))
    broken["spec"]["predictor"]["minReplicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        validate_against(broken, crd_schema(mirror, broken["apiVersion"], broken["kind"]))


def test_stock_prediction_pipeline_compiles(tmp_path):
    if not EXAMPLES_PYTHON.exists():
        pytest.fail("the examples environment is missing: run `make examples-env`", pytrace=False)
    out = tmp_path / "stock-prediction.yaml"
    subprocess.run([str(EXAMPLES_PYTHON), str(EXAMPLES / "pipeline.py"), str(out)], check=True)
    spec, platform = yaml.safe_load_all(out.read_text())
    assert spec["pipelineInfo"]["name"] == "stock-prediction"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"generate-prices", "build-features", "train", "evaluate", "publish-quality", "condition-1"}
    # The evaluation's accuracy and drift go to the model metrics gateway the model alerts read.
    published = tasks["publish-quality"]["inputs"]["parameters"]
    assert published["accuracy"]["taskOutputParameter"] == {
        "outputParameterKey": "accuracy",
        "producerTask": "evaluate",
    }
    assert published["drift"]["taskOutputParameter"] == {"outputParameterKey": "drift", "producerTask": "evaluate"}
    assert spec["root"]["inputDefinitions"]["parameters"]["metrics_gateway"]["defaultValue"] == (
        "http://model-metrics.monitoring.svc:9091"
    )
    assert tasks["condition-1"]["triggerPolicy"]["condition"].startswith("inputs.parameter_values")
    # Accurate enough: registered in MLflow, then that registered version is served.
    accurate = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(accurate) == {"register", "deploy"}
    assert accurate["deploy"]["inputs"]["parameters"]["version"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "register",
    }
    # Both log in to MLflow with the pipeline's account from a Secret, never from a parameter.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("exec-register", "exec-deploy"):
        # MLflow's address from the platform's ConfigMap in `kubeflow`, where the steps run.
        (config_map,) = executors[step]["configMapAsEnv"]
        assert config_map["configMapName"] == "mlflow"
        assert config_map["keyToEnv"] == [{"configMapKey": "MLFLOW_TRACKING_URI", "envVar": "MLFLOW_TRACKING_URI"}]
        (secret,) = executors[step]["secretAsEnv"]
        assert secret["secretName"] == "mlflow-pipeline-credentials"
        assert {k["envVar"] for k in secret["keyToEnv"]} == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_service_custom_resource_matches_its_upstream_schema(mirror, monkeypatch, stack):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    service_resources = [
        m
        for m in render_shared(stack)
        if api_group(m) not in BUILT_IN_GROUPS
        and m["metadata"]["labels"].get("mlplatform.io/module") in ("kserve", "kserve-cert-manager", "training")
    ]
    validated = Counter()
    for manifest in service_resources:
        validate_against(manifest, crd_schema(mirror, manifest["apiVersion"], manifest["kind"]))
        validated[manifest["kind"]] += 1
    assert validated["Certificate"] == 2 and validated["Issuer"] == 1, validated
    assert validated["ClusterServingRuntime"] == 11 and validated["ClusterStorageContainer"] == 1, validated


def test_kubeflow_back_ends_admit_only_their_own_namespace_and_named_clients(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared("lab")
    policies = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"]
        for m in manifests
        if m["kind"] == "NetworkPolicy"
    }
    kubeflow_only = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}, "podSelector": {}}
    ]
    for name, pod_labels in (
        ("mlplatform-kfp-mysql", {"app": "mysql"}),
        ("mlplatform-katib-mysql", {"katib.kubeflow.org/component": "mysql"}),
    ):
        spec = policies[("kubeflow", name)]
        assert spec["podSelector"] == {"matchLabels": pod_labels}
        assert spec["ingress"] == [{"from": kubeflow_only, "ports": [{"port": 3306, "protocol": "TCP"}]}]
    # Trials report to the DB manager from their team's namespace; teams reach it, and only it.
    db_manager = policies[("kubeflow", "mlplatform-katib-db-manager")]["ingress"][0]["from"]
    assert db_manager[1] == {
        "namespaceSelector": {"matchExpressions": [{"key": "mlplatform.io/role", "operator": "In", "values": ["team"]}]}
    }
    egress = policies[("team-vision", "allow-katib-db-manager")]["egress"]
    assert egress[0]["to"][0]["podSelector"] == {"matchLabels": {"katib.kubeflow.org/component": "db-manager"}}
    # KFP's steps run in `kubeflow`: MLflow admits it by the role the platform gives it, and
    # they find it through the ConfigMap the pipelines module puts there.
    kfp_mlflow = next(
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"] == {**m["metadata"], "name": "mlflow", "namespace": "kubeflow"}
    )
    assert kfp_mlflow["data"] == {
        "MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000",
        "MLFLOW_ARTIFACT_STORE": "s3://mlflow",
    }
    namespaces = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Namespace"}
    assert namespaces["kubeflow"]["metadata"]["labels"]["mlplatform.io/role"] == "pipelines"
    assert namespaces["kserve"]["metadata"]["labels"]["mlplatform.io/role"] == "serving"
    assert (
        namespaces["team-vision"]["metadata"]["labels"]["katib.kubeflow.org/metrics-collector-injection"] == "enabled"
    )


@pytest.mark.parametrize("stack", STACKS)
def test_notebooks_are_opened_through_the_signed_in_gateway_only(stack, mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared(stack)
    # Upstream's Gateway for Kubeflow's UIs (common/istio/kubeflow-istio-resources).
    (gateway,) = [m for m in manifests if m["kind"] == "Gateway" and m["metadata"]["name"] == "kubeflow-gateway"]
    gateway_ref = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"
    gateway_pods = gateway["spec"]["selector"]
    (ingress,) = [
        m
        for m in manifests
        if m["kind"] == "Deployment"
        and m["spec"]["template"]["metadata"].get("labels", {}).items() >= gateway_pods.items()
    ]
    ingress_namespace = ingress["metadata"]["namespace"]
    # The controller routes each Notebook on that gateway (its VirtualService).
    (config,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("notebook-controller-config")
    ]
    assert config["data"]["USE_ISTIO"] == "true" and config["data"]["ISTIO_GATEWAY"] == gateway_ref
    # The gateway's pods send whoever has not signed in to the sign-in proxy.
    custom = [
        m
        for m in manifests
        if m["kind"] == "AuthorizationPolicy"
        and m["spec"].get("action") == "CUSTOM"
        and m["metadata"]["namespace"] == ingress_namespace
    ]
    ingress_pods = ingress["spec"]["template"]["metadata"]["labels"]
    assert any(p["spec"]["selector"]["matchLabels"].items() <= ingress_pods.items() for p in custom)
    # In every team namespace the notebook servers admit the gateway's pods, from its namespace.
    teams = [
        m["metadata"]["name"]
        for m in manifests
        if m["kind"] == "Namespace" and (m["metadata"].get("labels") or {}).get("mlplatform.io/role") == "team"
    ]
    assert teams
    for namespace in teams:
        (policy,) = [
            m
            for m in manifests
            if m["kind"] == "NetworkPolicy"
            and m["metadata"].get("namespace") == namespace
            and m["metadata"]["name"] == "allow-gateway-to-notebooks"
        ]
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": ingress_namespace}
        assert peer["podSelector"]["matchLabels"].items() >= gateway_pods.items()
        assert [p["port"] for p in rule["ports"]] == [8888]


@pytest.mark.parametrize("stack", STACKS)
def test_no_role_carries_a_rule_list_the_api_server_would_drop(stack, mirror, monkeypatch):
    """The API server stores an empty `rules` list as none: a role applied with one would differ
    from what the server holds on every preview after the first `up`."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    empty = [
        (m["kind"], m["metadata"]["name"])
        for m in render_shared(stack)
        if m["kind"] in ("ClusterRole", "Role") and "rules" in m and not m["rules"]
    ]
    assert empty == []
