"""KServe Serverless: Knative Serving (net-istio) from the pinned kubeflow/manifests, installed
before KServe's controller, KServe's ingress on the mesh's gateway, canary rollouts valid
against the pinned InferenceService schema. RawDeployment stays the default.

Serverless is on in a fixture stack (tests/fixtures/stacks/Pulumi.lab-serverless.yaml), not in
a shipped one. Expected facts come from the mirror's files, read here."""

from __future__ import annotations

import copy
import json
import subprocess

import jsonschema
import pytest
import yaml

from mlplatform.overlays import ENVIRONMENTS, build_overlay, kustomize_binary
from mlplatform.upstream import upstream_sources
from tests.conftest import REPO_ROOT, pulumi_config_of, render_shared, validate_against
from tests.conftest import one_object as _find

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "stacks" / "Pulumi.lab-serverless.yaml"
KNATIVE_BASE = "common/knative/knative-serving/base"
KSERVE_KUBEFLOW = "applications/kserve/kserve/kserve_kubeflow.yaml"


@pytest.fixture
def serverless(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    return render_shared(str(FIXTURE))


def _key(manifest):
    return (manifest["kind"], manifest["metadata"].get("namespace", ""), manifest["metadata"]["name"])


def _upstream_knative(mirror):
    """kustomize's build of the mirror's Knative Serving base, as kubeflow/manifests installs it."""
    folder = mirror / "kubeflow-manifests" / KNATIVE_BASE
    output = subprocess.run([kustomize_binary(), "build", str(folder)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(output.stdout) if d]


def _upstream_ingress(mirror):
    """The ingress settings kubeflow/manifests gives KServe in a Kubeflow install."""
    text = (mirror / "kubeflow-manifests" / KSERVE_KUBEFLOW).read_text()
    for document in yaml.safe_load_all(text):
        if document and document["kind"] == "ConfigMap" and document["metadata"]["name"] == "inferenceservice-config":
            return json.loads(document["data"]["ingress"])
    raise AssertionError("no inferenceservice-config in kserve_kubeflow.yaml")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_knative_overlay_is_upstreams_kubeflow_install(mirror, environment):
    ours = {_key(m) for m in build_overlay("knative-serving", environment, upstream_sources(), mirror)}
    upstream = _upstream_knative(mirror)
    assert ours == {_key(m) for m in upstream}
    versions = {m["metadata"].get("labels", {}).get("app.kubernetes.io/version") for m in upstream} - {None}
    assert versions == {upstream_sources()["knative-serving"].version.lstrip("v")}


def test_serverless_installs_knative_serving_with_net_istio(serverless, mirror):
    rendered = {_key(m) for m in serverless}
    upstream = {_key(m) for m in _upstream_knative(mirror)}
    assert upstream <= rendered, sorted(upstream - rendered)
    crds = {m["metadata"]["name"] for m in serverless if m["kind"] == "CustomResourceDefinition"}
    assert {"services.serving.knative.dev", "revisions.serving.knative.dev", "routes.serving.knative.dev"} <= crds
    assert ("Deployment", "knative-serving", "net-istio-controller") in rendered


def test_kserve_ingress_is_on_the_mesh_gateway_as_upstream_configures_it(serverless, mirror):
    upstream = _upstream_ingress(mirror)
    config = _find(serverless, "ConfigMap", "inferenceservice-config", "kserve")["data"]
    ingress = json.loads(config["ingress"])
    assert json.loads(config["deploy"]) == {"defaultDeploymentMode": "Serverless"}
    gateways = [m for m in serverless if m["kind"] == "Gateway" and m["apiVersion"].startswith("networking.istio.io")]
    mesh_gateway = [f"{g['metadata']['namespace']}/{g['metadata']['name']}" for g in gateways]
    assert ingress["ingressGateway"] in mesh_gateway
    assert ingress["ingressGateway"] == upstream["ingressGateway"]
    assert ingress["disableIstioVirtualHost"] is False
    for key in ("localGateway", "localGatewayService"):
        assert ingress[key] == upstream[key], key
    # The local gateway and its Service exist in the render, on the mesh's ingress pods.
    local_namespace, local_name = ingress["localGateway"].split("/")
    _find(serverless, "Gateway", local_name, local_namespace)
    service_name, service_namespace = ingress["localGatewayService"].split(".")[:2]
    service = _find(serverless, "Service", service_name, service_namespace)
    gateway_pods = [
        m["spec"]["template"]["metadata"]["labels"]
        for m in serverless
        if m["kind"] == "Deployment" and m["metadata"].get("namespace") == service_namespace
    ]
    assert any(all(labels.get(k) == v for k, v in service["spec"]["selector"].items()) for labels in gateway_pods)
    # net-istio programs the same Gateway for external routes.
    istio = _find(serverless, "ConfigMap", "config-istio", "knative-serving")["data"]
    namespace, name = ingress["ingressGateway"].split("/")
    assert f"gateway.{namespace}.{name}" in istio


def test_knative_comes_before_kserves_controller(run_stack, mirror, monkeypatch):
    from mlplatform.modules import base, ml_services, services

    recorded: dict[str, list[str]] = {}
    original = base.create_object

    def spying(manifest, opts):
        key = f"{manifest['kind']}:{manifest['metadata'].get('namespace', '')}/{manifest['metadata']['name']}"
        recorded[key] = [getattr(d, "_name", "") for d in opts.depends_on or []]
        return original(manifest, opts)

    for module in (base, services, ml_services):
        monkeypatch.setattr(module, "create_object", spying)
    mocks, _ = run_stack("lab-serverless", pulumi_config_of(FIXTURE), fresh=True)
    controller = recorded["Deployment:kserve/kserve-controller-manager"]
    # Knative's CRDs Established (their release) and its controllers Available before KServe watches them.
    from mlplatform.modules.crd_bundle import is_bundle

    (knative_crds,) = [
        r.name
        for r in mocks.resources
        if is_bundle(r.typ, r.inputs)
        and "services.serving.knative.dev" in [e["name"] for e in r.inputs["values"]["customResourceDefinitions"]]
    ]
    assert knative_crds in controller
    assert {"knative-serving/controller", "knative-serving/webhook", "knative-serving/net-istio-controller"} <= set(
        controller
    )
    # Knative's webhooks after their servers, its custom resources after its webhooks.
    for key, dependencies in recorded.items():
        if key.startswith(("ValidatingWebhookConfiguration:", "MutatingWebhookConfiguration:")) and "knative" in key:
            assert "knative-serving/webhook" in dependencies or "knative-serving/net-istio-webhook" in dependencies
    image = next(k for k in recorded if k.startswith("Image:knative-serving/"))
    assert "knative-serving/webhook" in recorded[image]


def _inference_service_schema(manifests):
    crd = _find(manifests, "CustomResourceDefinition", "inferenceservices.serving.kserve.io")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return version["schema"]["openAPIV3Schema"]


def _canary(percent):
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "fraud", "namespace": "team-serving"},
        "spec": {
            "predictor": {
                # The share of traffic the latest revision gets; the rest stays on the previous one.
                "canaryTrafficPercent": percent,
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": "s3://models/fraud/v2",
                },
            }
        },
    }


def test_a_canary_rollout_is_valid_against_the_pinned_inference_service_schema(serverless):
    schema = _inference_service_schema(serverless)
    predictor = schema["properties"]["spec"]["properties"]["predictor"]
    assert "canaryTrafficPercent" in predictor["properties"]
    validate_against(_canary(10), schema)
    # The schema judges the field: a wrong type is refused, so the check above means something.
    with pytest.raises(jsonschema.ValidationError):
        validate_against(_canary("ten percent"), schema)
    broken = copy.deepcopy(_canary(10))
    del broken["spec"]["predictor"]["model"]["modelFormat"]["name"]
    with pytest.raises(jsonschema.ValidationError):
        validate_against(broken, schema)


def test_team_members_read_what_kserve_makes_of_their_services(serverless):
    roles = [
        m
        for m in serverless
        if m["kind"] == "ClusterRole" and m["metadata"]["name"].startswith("mlplatform-team-kserve")
    ]

    def granted(verb: str) -> set[tuple[str, str]]:
        return {
            (group, resource)
            for role in roles
            for rule in role["rules"]
            if verb in rule["verbs"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        }

    assert {("serving.knative.dev", "services"), ("serving.knative.dev", "revisions")} <= granted("get")
    assert not {key for key in granted("create") if key[0] == "serving.knative.dev"}


def test_raw_deployment_stays_the_default(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    lab = render_shared("lab")
    config = _find(lab, "ConfigMap", "inferenceservice-config", "kserve")["data"]
    assert json.loads(config["deploy"]) == {"defaultDeploymentMode": "RawDeployment"}
    assert json.loads(config["ingress"])["disableIstioVirtualHost"] is True
    assert not [m for m in lab if m["metadata"].get("namespace") == "knative-serving"]
