"""Multi-user Kubeflow Pipelines (modules.pipelines.multiUser): upstream's multi-user install
without its profile controller, whose per-namespace objects the module writes into each team
namespace; the UI behind the mesh's gateway; the API server reading the gateway's user header;
team rights as upstream's roles grant them; workflow pods that Pod Security `restricted` admits.

Expected facts come from the mirror's files (kubeflow/manifests at the locked commit), read here,
and from the render's other modules (the mesh's gateway, the dashboard's user header)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from mlplatform.overlays import ENVIRONMENTS, build_overlay, kustomize_binary, lay_down
from mlplatform.upstream import upstream_sources
from tests.conftest import one_object as _find
from tests.conftest import render_shared

KFP_TREE = "kubeflow-manifests/applications/pipeline/upstream"
PROFILE_CONTROLLER = f"{KFP_TREE}/base/installs/multi-user/pipelines-profile-controller"
METACONTROLLER = f"{KFP_TREE}/third-party/metacontroller/base"
ROLES = f"{KFP_TREE}/base/installs/multi-user/view-edit-cluster-roles.yaml"
MULTI_USER = "pipelines-multi-user"
# The stack that runs Pipelines multi-user.
STACK = "lab"


def _key(manifest):
    return (manifest["kind"], manifest["metadata"]["name"])


def _yaml_objects(folder):
    objects = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d]
    return objects


def _left_out(mirror):
    """What upstream's profile controller is made of: metacontroller, its DecoratorController,
    the hook's Deployment and Service, and the ConfigMaps its kustomization generates."""
    objects = _yaml_objects(mirror / METACONTROLLER) + _yaml_objects(mirror / PROFILE_CONTROLLER)
    names = {_key(o) for o in objects}
    kustomization = yaml.safe_load((mirror / PROFILE_CONTROLLER / "kustomization.yaml").read_text())
    generated = {("ConfigMap", g["name"]) for g in kustomization.get("configMapGenerator") or []}
    return names, generated


def _upstream_multi_user(mirror, tmp_path):
    """kustomize's build of upstream's env/platform-agnostic-multi-user, laid down offline as the
    overlays are (Argo from its pinned module)."""
    root = tmp_path / "overlays"
    (root / "upstream-only" / "base").mkdir(parents=True)
    (root / "upstream-only" / "base" / "kustomization.yaml").write_text(
        "resources:\n  - ../../upstream/kubeflow-pipelines/platform-agnostic-multi-user\n"
    )
    lay_down(upstream_sources(), mirror, root)
    output = subprocess.run(
        [kustomize_binary(), "build", str(root / "upstream-only" / "base")], capture_output=True, text=True, check=True
    )
    shutil.rmtree(root)
    return [d for d in yaml.safe_load_all(output.stdout) if d]


def _without_generator_hash(key, generated):
    kind, name = key
    for generator_kind, prefix in generated:
        if kind == generator_kind and re.fullmatch(rf"{re.escape(prefix)}-[a-z0-9]{{10}}", name):
            return (kind, prefix)
    return key


def test_the_multi_user_overlay_is_upstreams_without_the_profile_controller(mirror, tmp_path):
    upstream = _upstream_multi_user(mirror, tmp_path)
    controller, generated = _left_out(mirror)
    upstream_keys = {_without_generator_hash(_key(m), generated) for m in upstream}
    assert controller | generated <= upstream_keys, "the profile controller's objects are in upstream's install"
    for environment in ENVIRONMENTS:
        ours = {
            _without_generator_hash(_key(m), generated)
            for m in build_overlay(MULTI_USER, environment, upstream_sources(), mirror)
        }
        assert not ours & (controller | generated), environment
        if environment != "cloud":
            assert ours == upstream_keys - controller - generated, environment
    # What makes it multi-user upstream: the API server's MULTIUSER switch and the UI's VirtualService.
    config = next(m for m in upstream if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("pipeline-api"))
    assert config["data"]["MULTIUSER"] == "true"


def test_the_cloud_variant_leaves_out_the_in_cluster_stores_and_their_mesh_objects(mirror):
    cloud = build_overlay(MULTI_USER, "cloud", upstream_sources(), mirror)
    base = build_overlay(MULTI_USER, "lab", upstream_sources(), mirror)
    assert {("Deployment", "mysql"), ("Deployment", "seaweedfs")} <= {_key(m) for m in base}
    assert not {("Deployment", "mysql"), ("Deployment", "seaweedfs")} & {_key(m) for m in cloud}
    for manifest in cloud:
        if manifest["kind"] == "AuthorizationPolicy":
            selected = manifest["spec"].get("selector", {}).get("matchLabels", {}).get("app")
            assert selected not in ("mysql", "seaweedfs"), manifest["metadata"]["name"]
        if manifest["kind"] == "DestinationRule":
            assert not re.match(r"(mysql|seaweedfs)\.", manifest["spec"]["host"]), manifest["metadata"]["name"]


@pytest.fixture
def rendered(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    manifests = render_shared(STACK)
    install = _find(manifests, "ConfigMap", "pipeline-install-config", "kubeflow")
    assert _find(manifests, "Deployment", "ml-pipeline", "kubeflow"), install
    return manifests


def _team_namespaces(manifests):
    return sorted(
        m["metadata"]["name"]
        for m in manifests
        if m["kind"] == "Namespace" and (m["metadata"].get("labels") or {}).get("mlplatform.io/role") == "team"
    )


def _profile_controller_objects(mirror):
    """The objects upstream's hook writes into a namespace (sync.py's desired resources), and
    those it writes only with ARTIFACTS_PROXY_ENABLED."""
    source = (mirror / PROFILE_CONTROLLER / "sync.py").read_text()
    named = r'"name":\s*"([a-z0-9-]+)",\s*"namespace": namespace'
    proxied = source[source.index('if artifacts_proxy_enabled.lower() == "true":\n                desired_resources') :]
    proxied = proxied[: proxied.index("print(")]
    proxy = set(re.findall(named, proxied))
    return set(re.findall(named, source)) - proxy, proxy, source


def test_each_team_namespace_holds_what_a_run_reads_there(rendered, mirror):
    names, proxy, source = _profile_controller_objects(mirror)
    assert {"kfp-launcher", "metadata-grpc-configmap", "artifact-repositories", "mlpipeline-minio-artifact"} <= names
    install = _find(rendered, "ConfigMap", "pipeline-install-config", "kubeflow")["data"]
    assert install["ARTIFACTS_PROXY_ENABLED"] == "false"  # so upstream writes no proxy objects either
    metadata_service = _find(rendered, "Service", "metadata-grpc-service", "kubeflow")
    annotation = re.search(r'"(workflows\.argoproj\.io/default-artifact-repository)": "([a-z-]+)"', source)
    teams = _team_namespaces(rendered)
    assert teams
    for namespace in teams:
        objects = [m for m in rendered if m["metadata"].get("namespace") == namespace]
        present = {m["metadata"]["name"] for m in objects if m["kind"] in ("ConfigMap", "Secret")}
        assert names <= present, (namespace, names - present)
        assert not proxy & {m["metadata"]["name"] for m in objects}
        grpc = _find(objects, "ConfigMap", "metadata-grpc-configmap")["data"]
        assert grpc["METADATA_GRPC_SERVICE_HOST"] == "metadata-grpc-service.kubeflow"
        assert int(grpc["METADATA_GRPC_SERVICE_PORT"]) in {p["port"] for p in metadata_service["spec"]["ports"]}
        repositories = _find(objects, "ConfigMap", "artifact-repositories")
        assert repositories["metadata"]["annotations"] == {annotation[1]: annotation[2]}
        repository = json.loads(repositories["data"][annotation[2]])["s3"]
        # Each team's artifacts under its own prefix, in the bucket KFP's install names.
        assert repository["keyFormat"].startswith(f"private-artifacts/{namespace}/")
        assert repository["bucket"] == install["bucketName"]
        launcher = _find(objects, "ConfigMap", "kfp-launcher")["data"]
        assert f"/private-artifacts/{namespace}/" in launcher["defaultPipelineRoot"]
        keys = _find(objects, "Secret", "mlpipeline-minio-artifact")
        # The stack's secrets, never upstream's defaults (minio/minio123).
        assert keys["stringData"] == {
            "accesskey": "<mlplatform:secrets.objectStoreAccessKey>",
            "secretkey": "<mlplatform:secrets.objectStoreSecretKey>",
        }


def test_the_ui_is_reached_only_through_the_mesh_gateway(rendered):
    gateways = [m for m in rendered if m["kind"] == "Gateway" and m["apiVersion"].startswith("networking.istio.io")]
    mesh_gateway = {f"{g['metadata']['namespace']}/{g['metadata']['name']}" for g in gateways}
    kfp = [m for m in rendered if m["kind"] == "VirtualService" and m["metadata"].get("namespace") == "kubeflow"]
    ui = _find(kfp, "VirtualService", "ml-pipeline-ui")
    assert ui["spec"]["gateways"] and set(ui["spec"]["gateways"]) <= mesh_gateway
    # The gateway's identity: the service account its pods run as, in the mesh's namespace.
    gateway = next(iter(gateways))
    selector = gateway["spec"]["selector"]
    pods = [
        m
        for m in rendered
        if m["kind"] == "Deployment"
        and all((m["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
    ]
    assert len(pods) == 1
    principal = f"cluster.local/ns/{pods[0]['metadata']['namespace']}/sa/{pods[0]['spec']['template']['spec']['serviceAccountName']}"
    policy = _find(rendered, "AuthorizationPolicy", "ml-pipeline-ui", "kubeflow")["spec"]
    assert policy["rules"] == [{"from": [{"source": {"principals": [principal]}}]}]


def _env(deployment, name):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    values = {e["name"]: e.get("value") for c in containers for e in c.get("env") or []}
    return values.get(name)


def test_the_api_server_and_ui_read_the_user_the_gateway_signs_in(rendered):
    # The dashboard (workspaces) reads the same header from the same gateway.
    dashboard = _find(rendered, "Deployment", "centraldashboard", "kubeflow")
    header, prefix = _env(dashboard, "USERID_HEADER"), _env(dashboard, "USERID_PREFIX")
    assert header
    for name in ("ml-pipeline", "ml-pipeline-ui"):
        deployment = _find(rendered, "Deployment", name, "kubeflow")
        assert _env(deployment, "KUBEFLOW_USERID_HEADER") == header, name
        assert _env(deployment, "KUBEFLOW_USERID_PREFIX") == prefix, name


def _granted(roles):
    return {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_team_roles_grant_what_upstreams_kfp_roles_grant(rendered, mirror):
    upstream = {d["metadata"]["name"]: d for d in yaml.safe_load_all((mirror / ROLES).read_text()) if d}
    ours = {
        level: [
            m
            for m in rendered
            if m["kind"] == "ClusterRole"
            and (m["metadata"].get("labels") or {}).get(f"mlplatform.io/aggregate-to-team-{level}") == "true"
        ]
        for level in ("view", "edit")
    }
    for level in ("view", "edit"):
        wanted = {
            key
            for key in _granted([upstream[f"aggregate-to-kubeflow-pipelines-{level}"]])
            if key[0] == "pipelines.kubeflow.org"
        }
        assert wanted, level
        assert wanted <= _granted(ours[level]), (level, wanted - _granted(ours[level]))
    # Viewers read a run's Workflow; they do not write one.
    viewer = _granted(ours["view"])
    assert ("argoproj.io", "workflows", "get") in viewer
    assert ("argoproj.io", "workflows", "create") not in viewer
    assert ("argoproj.io", "workflows", "create") in _granted(ours["edit"])


def test_team_namespaces_reach_the_api_metadata_and_store_and_these_let_them_in(rendered):
    for namespace in _team_namespaces(rendered):
        egress = [
            m
            for m in rendered
            if m["kind"] == "NetworkPolicy"
            and m["metadata"].get("namespace") == namespace
            and "Egress" in m["spec"]["policyTypes"]
        ]
        reached = {
            (json.dumps(peer.get("podSelector", {}).get("matchLabels", {}), sort_keys=True), port["port"])
            for policy in egress
            for rule in policy["spec"].get("egress") or []
            for peer in rule.get("to") or []
            for port in rule.get("ports") or []
            if peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "kubeflow"
        }
        for service in ("ml-pipeline", "metadata-grpc-service", "seaweedfs"):
            spec = _find(rendered, "Service", service, "kubeflow")["spec"]
            pods = {k: v for k, v in spec["selector"].items() if k != "application-crd-id"}
            ports = {p.get("targetPort", p["port"]) for p in spec["ports"]}
            assert any(json.loads(labels).items() <= pods.items() and port in ports for labels, port in reached), (
                namespace,
                service,
            )


def _restricted_problems(pod):
    """Pod Security `restricted` (Kubernetes' Pod Security Standards) checks a pod's containers
    and pod-level context against."""
    problems = []
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    for each in spec.get("initContainers", []) + spec["containers"]:
        context = each.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{each['name']}: allowPrivilegeEscalation")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{each['name']}: capabilities")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{each['name']}: runAsNonRoot")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{each['name']}: seccompProfile")
    return problems


def test_argo_step_pods_are_admitted_by_restricted_pod_security(rendered):
    """A step's pod as Argo makes it: its own init and wait containers from the controller's
    executor config, the workflow defaults' pod context and patch of the `main` container."""
    config = _find(rendered, "ConfigMap", "workflow-controller-configmap", "kubeflow")["data"]
    executor = yaml.safe_load(config["executor"])
    defaults = yaml.safe_load(config["workflowDefaults"])["spec"]
    patch = json.loads(defaults["podSpecPatch"])
    main = {"name": "main", "image": "python:3.11"}
    for patched in patch["containers"]:
        if patched["name"] == "main":
            main = {**main, **patched}
    pod = {
        "spec": {
            "securityContext": defaults["securityContext"],
            "initContainers": [{"name": "init", "securityContext": executor["securityContext"]}],
            "containers": [{"name": "wait", "securityContext": executor["securityContext"]}, main],
        }
    }
    assert _restricted_problems(pod) == []
    # Without our defaults, upstream's main container is refused.
    pod["spec"]["containers"][1] = {"name": "main", "image": "python:3.11"}
    pod["spec"]["securityContext"] = {}
    assert _restricted_problems(pod)
    install = _find(rendered, "ConfigMap", "pipeline-install-config", "kubeflow")["data"]
    assert install["defaultSecurityContextRunAsNonRoot"] == "true"


def _selects(selector, labels):
    """A Kubernetes label selector (matchLabels, matchExpressions) against labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def test_kfps_pods_get_the_mesh_sidecar_that_enforces_its_authorization_policies(rendered):
    """The API server trusts the user header only because its AuthorizationPolicy refuses it
    from anyone but KFP's own accounts: its pods must be injected by the mesh's webhook."""
    kubeflow = _find(rendered, "Namespace", "kubeflow")["metadata"].get("labels") or {}
    injectors = [
        webhook
        for m in rendered
        if m["kind"] == "MutatingWebhookConfiguration"
        for webhook in m["webhooks"]
        if webhook["name"].endswith("sidecar-injector.istio.io")
    ]
    assert injectors

    def injected(pod_labels):
        return any(
            _selects(w.get("namespaceSelector"), kubeflow) and _selects(w.get("objectSelector"), pod_labels)
            for w in injectors
        )

    policies = [
        m for m in rendered if m["kind"] == "AuthorizationPolicy" and m["metadata"].get("namespace") == "kubeflow"
    ]
    workloads = [
        m
        for m in rendered
        if m["kind"] == "Deployment"
        and m["metadata"].get("namespace") == "kubeflow"
        and (m["metadata"].get("labels") or {}).get("mlplatform.io/module") == "pipelines"
    ]
    guarded = 0
    for policy in policies:
        selector = policy["spec"].get("selector")
        for workload in workloads:
            labels = workload["spec"]["template"]["metadata"].get("labels") or {}
            if selector and _selects(selector, labels):
                assert injected(labels), (policy["metadata"]["name"], workload["metadata"]["name"])
                guarded += 1
    assert guarded >= 4  # the API server, the UI, ML Metadata, the stores


def test_only_the_gateway_reaches_the_ui(rendered):
    ui = _find(rendered, "Deployment", "ml-pipeline-ui", "kubeflow")
    pod_labels = ui["spec"]["template"]["metadata"]["labels"]
    ports = {p["containerPort"] for c in ui["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
    gateway = next(m for m in rendered if m["kind"] == "Gateway" and m["apiVersion"].startswith("networking.istio.io"))
    gateway_pods = [
        m
        for m in rendered
        if m["kind"] == "Deployment"
        and _selects(
            {"matchLabels": gateway["spec"]["selector"]}, m["spec"]["template"]["metadata"].get("labels") or {}
        )
    ]
    assert len(gateway_pods) == 1
    gateway_namespace = gateway_pods[0]["metadata"]["namespace"]
    gateway_labels = gateway_pods[0]["spec"]["template"]["metadata"]["labels"]
    guards = [
        m
        for m in rendered
        if m["kind"] == "NetworkPolicy"
        and m["metadata"].get("namespace") == "kubeflow"
        and "Ingress" in m["spec"]["policyTypes"]
        and _selects(m["spec"]["podSelector"], pod_labels)
    ]
    assert guards
    for guard in guards:
        for rule in guard["spec"].get("ingress") or []:
            assert {p["port"] for p in rule.get("ports") or []} <= ports
            for peer in rule["from"]:
                assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": gateway_namespace}
                assert _selects(peer["podSelector"], gateway_labels)
