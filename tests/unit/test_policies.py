"""The CrossGuard pack: every policy's `validate` on compliant and violating objects, the
per-environment pack config against what the stacks publish, the deliberate-violation
manifests (each mandatory policy blocks, for its reason) and the offline runner's records."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
)

from mlplatform.checkov_scan import Skip, failed_checks, load_skips
from mlplatform.cli import main as cli_main
from mlplatform.config.model import ENVIRONMENTS
from mlplatform.lock import load_lock
from mlplatform.modules.gpu import gpu_outputs
from mlplatform.policy_check import (
    PACK_DIR,
    RecordingMonitor,
    import_policies,
    load_pack_config,
    pack_config_path,
    policy_resources,
    records_from_manifests,
    run_policies,
)
from mlplatform.render import RecordingMocks
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT, STACKS

policies, objects = import_policies()

BY_NAME = {p.name: p for p in policies.POLICIES}
VIOLATIONS = REPO_ROOT / "tests" / "fixtures" / "policy-violations"


def _options(parent: str | None = None) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def _type(props: dict[str, Any]) -> str:
    group, _, version = props["apiVersion"].rpartition("/")
    return f"kubernetes:{group or 'core'}/{version}:{props['kind']}"


def check(name: str, props: dict[str, Any], config: dict[str, Any] | None = None, typ: str | None = None) -> list[str]:
    """The violations one resource policy reports for one object."""
    policy = BY_NAME[name]
    assert isinstance(policy, ResourceValidationPolicy)
    found: list[str] = []
    args = ResourceValidationArgs(typ or _type(props), props, "urn:x", "x", _options(), None, config or {})
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


def resource(props: dict[str, Any], urn: str | None = None, parent=None, dependencies=()) -> PolicyResource:
    meta = props.get("metadata") or {}
    return PolicyResource(
        _type(props),
        props,
        urn or f"urn:{props['kind']}:{meta.get('namespace', '')}/{meta.get('name')}",
        meta.get("name", ""),
        _options(parent.urn if parent else None),
        None,
        parent,
        list(dependencies),
        {},
    )


def check_stack(name: str, resources: list[PolicyResource], config: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []
    BY_NAME[name].validate(StackValidationArgs(resources, config or {}), lambda m, urn=None: found.append(m))
    return found


def deployment(pod: dict[str, Any] | None = None, namespace: str = "apps", **container: Any) -> dict[str, Any]:
    """A Deployment that meets every resource policy; keyword arguments replace container fields."""
    base_container = {
        "name": "app",
        "image": "registry.example.com/app:1.2.3",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    }
    base_container.update(container)
    spec = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [base_container],
        **(pod or {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {"template": {"spec": spec}},
    }


# -- resource policies -------------------------------------------------------------------------


def test_the_compliant_deployment_passes_every_resource_policy():
    config = {"gpuResourceNames": ["nvidia.com/gpu"]}
    for policy in policies.RESOURCE_POLICIES:
        if policy.name != "images-by-digest":
            assert check(policy.name, deployment(), config) == [], policy.name


def test_images_pinned():
    assert check("images-pinned", deployment(image="registry.example.com/app@sha256:" + "a" * 64)) == []
    assert check("images-pinned", deployment(image="registry.example.com:5000/app:v1")) == []
    assert check("images-pinned", deployment(image="registry.example.com/app:latest")) == [
        "Deployment apps/web: container app image registry.example.com/app:latest uses :latest"
    ]
    # A registry port is not a tag.
    assert check("images-pinned", deployment(image="registry.example.com:5000/app")) == [
        "Deployment apps/web: container app image registry.example.com:5000/app has no tag or digest"
    ]


def test_images_pinned_sees_init_containers_and_pod_templates_of_custom_resources():
    notebook = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": "nb", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "jupyter/base"}]}}},
    }
    assert check("images-pinned", notebook) == [
        "Notebook team-a/nb: container nb image jupyter/base has no tag or digest"
    ]
    props = deployment(pod={"initContainers": [{"name": "init", "image": "busybox:latest"}]})
    assert check("images-pinned", props) == ["Deployment apps/web: container init image busybox:latest uses :latest"]


def test_images_by_digest():
    assert check("images-by-digest", deployment(image="r.example.com/app:v1@sha256:" + "b" * 64)) == []
    assert check("images-by-digest", deployment()) == [
        "Deployment apps/web: container app image registry.example.com/app:1.2.3 is pinned by tag, not by digest (@sha256:...)"
    ]


def test_container_resources():
    assert check("container-resources", deployment(resources={"requests": {"cpu": "1"}, "limits": {"cpu": "1"}})) == [
        "Deployment apps/web: container app (spec.template.spec) sets no requests.memory, limits.memory"
    ]
    assert check("container-resources", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}) == []


def test_gpu_requests_names_and_limits():
    config = {"gpuResourceNames": ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]}
    gpus = {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "2"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    equal = copy.deepcopy(gpus)
    equal["limits"]["nvidia.com/gpu"] = 2
    assert check("gpu-requests", deployment(resources=equal), config) == []
    assert check("gpu-requests", deployment(resources=gpus), config) == [
        "Deployment apps/web: container app requests nvidia.com/gpu without a limit"
    ]
    unequal = copy.deepcopy(equal)
    unequal["limits"]["nvidia.com/gpu"] = "4"
    assert check("gpu-requests", deployment(resources=unequal), config) == [
        "Deployment apps/web: container app nvidia.com/gpu limit 4 differs from its request 2"
    ]
    other = {"requests": {"amd.com/gpu": "1"}, "limits": {"amd.com/gpu": "1"}}
    assert check("gpu-requests", deployment(resources=other), config) == [
        "Deployment apps/web: container app asks for amd.com/gpu (allowed: nvidia.com/gpu, nvidia.com/mig-1g.10gb)"
    ]


def test_gpu_requests_checks_quota_names():
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q", "namespace": "team-a"},
        "spec": {
            "hard": {
                "requests.nvidia.com/gpu": "4",
                "standard.storageclass.storage.k8s.io/requests.storage": "1Ti",
                "count/deployments.apps": "10",
            }
        },
    }
    assert check("gpu-requests", quota, {"gpuResourceNames": ["nvidia.com/gpu"]}) == []
    assert check("gpu-requests", quota, {"gpuResourceNames": ["nvidia.com/gpu.shared"]}) == [
        "ResourceQuota team-a/q: quota requests.nvidia.com/gpu names nvidia.com/gpu (allowed: nvidia.com/gpu.shared)"
    ]


def test_host_access_and_its_exemptions():
    host = deployment(
        pod={"hostPID": True, "volumes": [{"name": "sys", "hostPath": {"path": "/sys"}}]},
        securityContext={"privileged": True},
    )
    assert check("host-access", host) == [
        "Deployment apps/web: spec.template.spec.hostPID is true",
        "Deployment apps/web: volume sys mounts hostPath /sys",
        "Deployment apps/web: container app is privileged",
    ]
    exemption = {"namespace": "apps", "component": "web", "reason": "needs the host for testing"}
    objects.APPLIED.clear()
    assert check("host-access", host, {"exemptions": [exemption]}) == []
    assert [(use.policy, use.target) for use in objects.APPLIED] == [("host-access", "Deployment apps/web")]
    # Every field of an exemption must match: the same component elsewhere is not exempt.
    assert len(check("host-access", host, {"exemptions": [{**exemption, "namespace": "gpu"}]})) == 3
    objects.APPLIED.clear()


def test_exemptions_need_a_reason_and_a_target():
    privileged = deployment(securityContext={"privileged": True})
    with pytest.raises(ValueError, match="has no reason"):
        check("host-access", privileged, {"exemptions": [{"namespace": "apps"}]})
    with pytest.raises(ValueError, match="names no namespace, component, kind or name"):
        check("host-access", privileged, {"exemptions": [{"reason": "because it is upstream"}]})


def test_pod_security_restricted():
    loose = deployment(pod={"securityContext": {}}, securityContext={"capabilities": {"add": ["NET_ADMIN"]}})
    assert check("pod-security-restricted", loose) == [
        "Deployment apps/web: container app does not set runAsNonRoot: true",
        "Deployment apps/web: container app has no seccompProfile RuntimeDefault (got None)",
        "Deployment apps/web: container app does not set allowPrivilegeEscalation: false",
        "Deployment apps/web: container app does not drop ALL capabilities",
        "Deployment apps/web: container app adds capabilities NET_ADMIN",
    ]
    # Container settings override the pod's.
    root = deployment(
        securityContext={"runAsNonRoot": False, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    )
    assert check("pod-security-restricted", root) == [
        "Deployment apps/web: container app does not set runAsNonRoot: true"
    ]


def test_no_fixed_ids():
    fixed = deployment(
        pod={"securityContext": {"runAsNonRoot": True, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}}},
        securityContext={"runAsUser": 1000, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    )
    assert check("no-fixed-ids", fixed) == [
        "Deployment apps/web: spec.template.spec.securityContext.fsGroup is fixed to 2000",
        "Deployment apps/web: container app fixes runAsUser to 1000",
    ]


def test_load_balancer_services_follow_the_environment():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}}
    service["spec"] = {"type": "LoadBalancer"}
    assert check("load-balancer-services", service, {"allowLoadBalancer": True}) == []
    assert check("load-balancer-services", service, {"allowLoadBalancer": False}) == [
        "Service a/s: type LoadBalancer, which this environment does not allow (allowed: ClusterIP behind the ingress/route)"
    ]
    service["spec"] = {"type": "ClusterIP"}
    assert check("load-balancer-services", service, {"allowLoadBalancer": False}) == []


def test_secrets_not_plaintext():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "a"}}
    assert check("secrets-not-plaintext", {**secret, "stringData": {"password": Secret("x")}}) == []
    assert check("secrets-not-plaintext", {**secret, "stringData": Secret({"password": "x"})}) == []
    assert check("secrets-not-plaintext", {**secret, "stringData": {"password": "x", "user": Secret("u")}}) == [
        "Secret a/db: stringData key(s) password are plaintext in the stack "
        "(allowed: values from secret config, e.g. `pulumi config set --secret`)"
    ]
    # The typed Secret resource always marks data secret; an untyped object does not.
    assert check("secrets-not-plaintext", {**secret, "data": {"k": "eA=="}}) == []
    untyped = check("secrets-not-plaintext", {**secret, "data": {"k": "eA=="}}, typ="kubernetes:v1:Secret")
    assert untyped and "data key(s) k are plaintext" in untyped[0]


@pytest.mark.security
def test_secrets_not_plaintext_catches_upstream_defaults_through_the_secret_mark():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "kubeflow"}}
    # Marked secret, as the typed Secret marks its fields: still upstream's default.
    assert check("secrets-not-plaintext", {**secret, "stringData": Secret({"secretkey": Secret("minio123")})}) == [
        "Secret kubeflow/s: stringData key secretkey holds Kubeflow Pipelines' default object store secret key "
        "(an upstream default credential; allowed: a value from the stack's secrets, `mlplatform:secrets` "
        "(`mlplatform secrets generate`))"
    ]
    encoded = check("secrets-not-plaintext", {**secret, "data": Secret({"MYSQL_ROOT_PASSWORD": "dGVzdA=="})})
    assert len(encoded) == 1 and "data key MYSQL_ROOT_PASSWORD holds Katib's default MySQL root password" in encoded[0]
    empty = check("secrets-not-plaintext", {**secret, "stringData": Secret({"username": "root", "password": ""})})
    assert len(empty) == 1 and "stringData key password is an empty credential" in empty[0]
    assert check("secrets-not-plaintext", {**secret, "stringData": Secret({"password": "Zq8-generated"})}) == []
    # Every default lives in one list, each with where upstream sets it.
    defaults = policies.resource_policies.UPSTREAM_DEFAULT_CREDENTIALS
    assert {"minio", "minio123", "test"} <= set(defaults) and all(defaults.values())


@pytest.mark.security
def test_secrets_not_plaintext_judges_container_env():
    def env(*entries):
        return check("secrets-not-plaintext", deployment(env=list(entries)))

    assert env({"name": "MYSQL_ALLOW_EMPTY_PASSWORD", "value": "true"}) == [
        "Deployment apps/web: container app env MYSQL_ALLOW_EMPTY_PASSWORD=true: MySQL's root account without a "
        "password (allowed: a value from the stack's secrets, `mlplatform:secrets` (`mlplatform secrets generate`))"
    ]
    assert env({"name": "POSTGRES_HOST_AUTH_METHOD", "value": "scram-sha-256"}) == []
    assert "Postgres logins without a password" in env({"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"})[0]
    # A default anywhere in env, wrapped or not.
    assert "holds Kubeflow Pipelines' default object store access key" in env({"name": "S3_USER", "value": "minio"})[0]
    assert "holds Katib's default MySQL root password" in env(Secret({"name": "DB_PW", "value": Secret("test")}))[0]
    # A literal value of a credential's name, not from a Secret.
    assert env({"name": "AWS_SECRET_ACCESS_KEY", "value": "AKIAxyz"}) == [
        "Deployment apps/web: container app env AWS_SECRET_ACCESS_KEY is a literal value in the stack "
        "(allowed: valueFrom.secretKeyRef to a Secret)"
    ]
    assert env({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}) == []
    # Names of where a credential is, and $(VAR) expansions of one taken from a Secret, are not credentials.
    assert env({"name": "SECRET_NAME", "value": "webhook-cert"}, {"name": "TOKEN_PATH", "value": "/var/run/t"}) == []
    assert env({"name": "MLFLOW_TRACKING_PASSWORD", "value": "$(PASSWORD_FROM_SECRET)"}) == []


def _policy_props(record) -> dict[str, Any]:
    """A recorded resource's inputs as the offline runner hands them to a policy."""
    from mlplatform.policy_check import _with_secret_markers

    return _with_secret_markers(record.inputs)


@pytest.mark.security
@pytest.mark.parametrize("stack", STACKS)
def test_secrets_policy_passes_the_output_of_each_shipped_stack(run_stack, stack):
    mocks, _ = run_stack(stack)
    secrets = [r for r in mocks.resources if r.typ == "kubernetes:core/v1:Secret"]
    assert any(r.name == "kubeflow/mysql-secret" for r in secrets)
    found = {
        r.name: problems
        for r in mocks.resources
        if r.custom and r.typ.startswith("kubernetes:")
        for problems in [check("secrets-not-plaintext", _policy_props(r), typ=r.typ)]
        if problems
    }
    assert found == {}


@pytest.mark.security
def test_secrets_policy_reports_a_default_credential_put_back(run_stack, monkeypatch):
    """The program's own output, with upstream's object store keys filled back in where the
    stack's secrets go: the policy names the Secret and the key."""
    import yaml

    from mlplatform.modules import ml_services
    from tests.conftest import stack_config_strings

    upstream = {"objectStoreAccessKey": "minio", "objectStoreSecretKey": "minio123"}
    filled = ml_services.secret_value

    def upstream_defaults(ctx, name):
        return pulumi.Output.secret(upstream[name]) if name in upstream else filled(ctx, name)

    monkeypatch.setattr(ml_services, "secret_value", upstream_defaults)
    config = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())["config"]
    config["mlplatform:modules"] = {"pipelines": {"enabled": True}}
    mocks, _ = run_stack("lab", stack_config_strings(config), fresh=True)
    (record,) = [r for r in mocks.resources if r.name == "kubeflow/mlpipeline-minio-artifact"]
    # The typed Secret marked stringData secret before any policy sees it.
    assert isinstance(_policy_props(record)["stringData"], Secret)
    problems = check("secrets-not-plaintext", _policy_props(record), typ=record.typ)
    assert [p.split(" (an upstream")[0] for p in problems] == [
        "Secret kubeflow/mlpipeline-minio-artifact: stringData key accesskey holds Kubeflow Pipelines' default "
        "object store access key",
        "Secret kubeflow/mlpipeline-minio-artifact: stringData key secretkey holds Kubeflow Pipelines' default "
        "object store secret key",
    ]


# -- stack policies ----------------------------------------------------------------------------


def namespace(name: str, **labels: str) -> PolicyResource:
    return resource({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def namespaced(kind: str, api_version: str, ns: str, name: str, spec: dict[str, Any] | None = None) -> PolicyResource:
    return resource(
        {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}
    )


def test_team_namespace_guardrails():
    team = namespace("team-a", **{"mlplatform.io/role": "team"})
    complete = [
        team,
        namespaced("ResourceQuota", "v1", "team-a", "q", {"hard": {"pods": "10"}}),
        namespaced("LimitRange", "v1", "team-a", "l", {"limits": []}),
        namespaced(
            "NetworkPolicy",
            "networking.k8s.io/v1",
            "team-a",
            "deny",
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        ),
    ]
    assert check_stack("team-namespace-guardrails", complete) == []
    # Ingress denied but egress open: not isolated.
    ingress_only = [
        *complete[:3],
        namespaced(
            "NetworkPolicy", "networking.k8s.io/v1", "team-a", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]}
        ),
    ]
    assert check_stack("team-namespace-guardrails", ingress_only) == [
        "team namespace team-a has no default-deny egress NetworkPolicy"
    ]
    assert check_stack("team-namespace-guardrails", complete[:2]) == [
        "team namespace team-a has no LimitRange, default-deny ingress NetworkPolicy, default-deny egress NetworkPolicy"
    ]
    # Objects in another namespace do not count; non-team namespaces are not judged.
    elsewhere = [
        team,
        namespace("tools"),
        *(namespaced(r.props["kind"], r.props["apiVersion"], "tools", "x", r.props["spec"]) for r in complete[1:]),
    ]
    assert check_stack("team-namespace-guardrails", elsewhere) == [
        "team namespace team-a has no ResourceQuota, LimitRange, default-deny ingress NetworkPolicy, "
        "default-deny egress NetworkPolicy"
    ]


def test_gpu_workload_namespaces():
    gpu = {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}}
    config = {"gpuResourceNames": ["nvidia.com/gpu"]}
    marked = namespace("team-a", **{"mlplatform.io/gpu": "true"})
    unmarked = namespace("team-b", **{"mlplatform.io/gpu": "false"})
    ok = resource(deployment(namespace="team-a", resources=gpu))
    assert check_stack("gpu-workload-namespaces", [marked, unmarked, ok], config) == []
    bad = resource(deployment(namespace="team-b", resources=gpu))
    quota = namespaced("ResourceQuota", "v1", "team-b", "q", {"hard": {"requests.nvidia.com/gpu": "2"}})
    zero = namespaced("ResourceQuota", "v1", "team-b", "z", {"hard": {"requests.nvidia.com/gpu": "0"}})
    assert check_stack("gpu-workload-namespaces", [marked, unmarked, bad, quota, zero], config) == [
        "Deployment team-b/web asks for nvidia.com/gpu in namespace team-b, which is not labelled mlplatform.io/gpu=true",
        "ResourceQuota team-b/q asks for requests.nvidia.com/gpu in namespace team-b, which is not labelled mlplatform.io/gpu=true",
    ]


def test_gpu_quota_capacity():
    def quota(ns: str, count: int) -> PolicyResource:
        return namespaced("ResourceQuota", "v1", ns, "team-quota", {"hard": {"requests.nvidia.com/gpu": str(count)}})

    config = {"gpuCapacity": {"nvidia.com/gpu": 8}, "gpuOversubscription": 1.5}
    assert check_stack("gpu-quota-capacity", [quota("a", 6), quota("b", 6)], config) == []
    assert check_stack("gpu-quota-capacity", [quota("a", 6), quota("b", 7)], config) == [
        "nvidia.com/gpu: quotas total 13 (a/team-quota 6, b/team-quota 7) but the pools offer 8 x oversubscription 1.5 "
        "= 12 (allowed: at most 12)"
    ]
    # A GPU resource no pool offers has no capacity at all.
    assert check_stack("gpu-quota-capacity", [quota("a", 1)], {"gpuCapacity": {}}) == [
        "nvidia.com/gpu: quotas total 1 (a/team-quota 1) but the pools offer 0 x oversubscription 1.0 = 0 (allowed: at most 0)"
    ]


def crd(group: str = "example.com", kind: str = "Widget") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {"group": group, "names": {"kind": kind, "plural": "widgets"}},
    }


WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "a"}}


def test_custom_resources_depend_on_their_crd():
    definition = resource(crd())
    assert check_stack("crds-before-custom-resources", [definition, resource(WIDGET, dependencies=[definition])]) == []
    assert check_stack("crds-before-custom-resources", [definition, resource(WIDGET)]) == [
        "Widget a/w does not depend on CRD widgets.example.com: it may be registered before its API exists"
    ]


def crd_release(*crds: dict, chart: str = ".mlplatform/crd-releases/demo-crds-0123456789abcdef") -> PolicyResource:
    listed = [
        {"name": c["metadata"]["name"], "group": c["spec"]["group"], "kind": c["spec"]["names"]["kind"]} for c in crds
    ]
    props = {"name": "demo-crds", "chart": chart, "values": {"customResourceDefinitions": listed}}
    return PolicyResource(
        "kubernetes:helm.sh/v3:Release", props, "urn:release:demo-crds", "demo-crds", _options(), None, None, [], {}
    )


def test_custom_resources_depend_on_the_release_of_their_crd():
    release = crd_release(crd())
    assert check_stack("crds-before-custom-resources", [release, resource(WIDGET, dependencies=[release])]) == []
    assert check_stack("crds-before-custom-resources", [release, resource(WIDGET)]) == [
        "Widget a/w does not depend on CRD widgets.example.com (in Helm release demo-crds): it may be registered "
        "before its API exists"
    ]
    # Another chart's release installs no CRD the policy knows of.
    other = crd_release(crd(), chart="gpu-operator")
    assert check_stack("crds-before-custom-resources", [other, resource(WIDGET, dependencies=[other])]) == [
        "Widget a/w: no CRD for Widget.example.com in the stack and example.com is not an API the environment "
        "serves (externalApiGroups)"
    ]


def component(urn: str, dependencies=()) -> PolicyResource:
    return PolicyResource("mlplatform:test:Box", {}, urn, urn, _options(), None, None, list(dependencies), {})


def test_crd_dependency_through_components_and_parents():
    # The CRD under a component the CR's parent depends on: waiting on a component waits on its children.
    controller = component("urn:controller")
    definition = resource(crd(), parent=controller)
    services = component("urn:services", dependencies=[controller])
    widget = resource(WIDGET, parent=services)
    assert check_stack("crds-before-custom-resources", [controller, definition, services, widget]) == []
    # Transitively: the CR waits on a Deployment that waits on the CRD.
    deploy = resource(deployment(), dependencies=[definition])
    assert (
        check_stack("crds-before-custom-resources", [definition, deploy, resource(WIDGET, dependencies=[deploy])]) == []
    )


def test_custom_resources_of_apis_the_environment_serves():
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "r", "namespace": "a"}}
    assert check_stack("crds-before-custom-resources", [resource(route)]) == [
        "Route a/r: no CRD for Route.route.openshift.io in the stack and route.openshift.io is not an API the "
        "environment serves (externalApiGroups)"
    ]
    served = {"externalApiGroups": [{"group": "route.openshift.io", "reason": "OpenShift serves Routes"}]}
    assert check_stack("crds-before-custom-resources", [resource(route)], served) == []
    built_in = [resource(deployment()), namespace("a")]
    assert check_stack("crds-before-custom-resources", built_in) == []


def test_upstream_versions_follow_the_lock():
    kueue = deployment(image="registry.k8s.io/kueue/kueue:v0.19.2")
    assert check_stack("upstream-versions-locked", [resource(kueue)]) == []
    old = deployment(image="registry.k8s.io/kueue/kueue:v0.18.0")
    assert check_stack("upstream-versions-locked", [resource(old)]) == [
        "Deployment apps/web: image registry.k8s.io/kueue/kueue:v0.18.0 but kueue is locked at v0.19.2"
    ]
    # A stack pin is what the component must run.
    assert check_stack("upstream-versions-locked", [resource(old)], {"pins": {"kueue": "v0.18.0"}}) == []
    mapped = {"componentImages": {"registry.example.com/app": "katib"}}
    assert check_stack("upstream-versions-locked", [resource(deployment())], mapped) == [
        "Deployment apps/web: image registry.example.com/app:1.2.3 but katib is locked at v0.19.0"
    ]
    unknown = {"componentImages": {"registry.example.com/app": "not-in-the-lock"}}
    assert check_stack("upstream-versions-locked", [], unknown) == [
        "componentImages names not-in-the-lock, which versions.lock.yaml does not pin"
    ]


# -- the pack and its config -------------------------------------------------------------------


def test_pack_files_and_pins():
    assert "runtime: python" in (PACK_DIR / "PulumiPolicy.yaml").read_text().splitlines()
    main = (PACK_DIR / "__main__.py").read_text()
    assert "PolicyPack(" in main and "POLICIES" in main
    pin = f"pulumi-policy=={load_lock().python['pulumi-policy']}"
    assert pin in (PACK_DIR / "requirements.txt").read_text().splitlines()
    assert f"pulumi=={load_lock().python['pulumi']}" in (PACK_DIR / "requirements.txt").read_text().splitlines()
    dev = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert pin in dev
    assert importlib.metadata.version("pulumi-policy") == load_lock().python["pulumi-policy"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pack_config_is_complete_and_every_exemption_has_a_reason(environment):
    raw = json.loads(pack_config_path(environment).read_text())
    assert set(raw) - {"all"} == set(BY_NAME)
    config = load_pack_config(pack_config_path(environment))
    for name, (level, properties) in config.items():
        for entry in properties.get("exemptions", []):
            objects.Exemption.parse(entry)
        for entry in properties.get("externalApiGroups", []):
            assert len(entry["reason"]) >= 10, (name, entry)
        assert level != "disabled" or name in ("images-by-digest", "no-fixed-ids"), name


@pytest.mark.parametrize("stack", STACKS)
def test_pack_config_matches_the_environment_and_the_gpu_layer(stack):
    resolved = load_stack(stack)
    config = load_pack_config(pack_config_path(resolved.config.environment))
    gpus = gpu_outputs(resolved.config.cluster.node_pools, "gpu", resolved.profile.node_pool_label)
    names = list(gpus.resource_names)
    assert config["gpu-requests"][1]["gpuResourceNames"] == names
    assert config["gpu-workload-namespaces"][1]["gpuResourceNames"] == names
    capacity = config["gpu-quota-capacity"][1]
    assert capacity["gpuCapacity"] == {name: gpus.total(name) for name in names}
    assert capacity["gpuOversubscription"] == resolved.config.modules.tenancy.gpu_oversubscription
    profile = resolved.profile
    assert config["load-balancer-services"][1]["allowLoadBalancer"] is profile.load_balancer_services
    assert (config["no-fixed-ids"][0] == "mandatory") is (not profile.fixed_uids)


def test_unknown_policies_and_properties_in_the_pack_config_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"images-pined": "mandatory"}))
    with pytest.raises(ValueError, match="unknown policies images-pined"):
        load_pack_config(path)
    path.write_text(json.dumps({"images-pinned": {"enforcementLevel": "mandatory", "requireDigest": True}}))
    with pytest.raises(ValueError, match="images-pinned: unknown properties requireDigest"):
        load_pack_config(path)


def test_pack_config_levels_follow_the_engine_precedence(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"all": "advisory", "images-pinned": {"enforcementLevel": "mandatory"}, "host-access": {}})
    )
    config = load_pack_config(path)
    assert config["images-pinned"][0] == "mandatory" and config["host-access"][0] == "advisory"
    path.write_text("{}")
    assert load_pack_config(path)["images-by-digest"][0] == "advisory"
    assert load_pack_config(path)["images-pinned"][0] == "mandatory"


# -- deliberate violations ---------------------------------------------------------------------


def fixture_headers(path: Path) -> dict[str, str]:
    headers = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            headers.setdefault(key.strip(), value.strip())
    return headers


FIXTURES = sorted(VIOLATIONS.glob("*.yaml"))


def test_every_mandatory_policy_has_a_deliberate_violation():
    covered = {fixture_headers(p)["expect-policy"] for p in FIXTURES}
    mandatory = {
        name
        for environment in ENVIRONMENTS
        for name, (level, _) in load_pack_config(pack_config_path(environment)).items()
        if level == "mandatory"
    }
    assert mandatory <= covered


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_each_violation_is_blocked_by_its_policy_alone(path, tmp_path):
    headers = fixture_headers(path)
    shutil.copy(path, tmp_path / path.name)
    config = load_pack_config(pack_config_path(headers.get("environment", "lab")))
    report = run_policies(records_from_manifests(tmp_path), config)
    blocking = {(v.policy, v.message) for v in report.mandatory}
    assert {policy for policy, _ in blocking} == {headers["expect-policy"]}, blocking
    assert any(headers["expect"] in message for _, message in blocking), blocking


def test_the_runner_exits_non_zero_on_the_violations(capsys):
    assert cli_main(["policy", "check", "--manifests", str(VIOLATIONS), "--environment", "lab"]) == 1
    err = capsys.readouterr().err
    assert "[mandatory] images-pinned: Deployment apps/latest-image: container app image" in err


# -- the offline runner's records --------------------------------------------------------------


def test_recording_monitor_keeps_parents_dependencies_and_secrets():
    import pulumi_kubernetes as k8s

    monitor = RecordingMonitor(RecordingMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="mlplatform", stack="t", preview=False, monitor=monitor)

    class Box(pulumi.ComponentResource):
        def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
            super().__init__("test:box:Box", name, None, opts)

    @pulumi.runtime.test
    def program():
        box = Box("box")
        definition = k8s.apiextensions.v1.CustomResourceDefinition(
            "widgets",
            opts=pulumi.ResourceOptions(parent=box),
            **{k: v for k, v in crd().items() if k != "kind" and k != "apiVersion"},
        )
        k8s.apiextensions.CustomResource(
            "w",
            api_version="example.com/v1",
            kind="Widget",
            metadata={"name": "w", "namespace": "a"},
            opts=pulumi.ResourceOptions(depends_on=[definition]),
        )
        k8s.apiextensions.CustomResource(
            "orphan", api_version="example.com/v1", kind="Widget", metadata={"name": "orphan", "namespace": "a"}
        )
        k8s.core.v1.Secret(
            "db",
            metadata={"name": "db", "namespace": "a"},
            string_data={"password": pulumi.Output.secret("s3cret"), "user": "app"},
        )

    program()
    records = {r.name: r for r in monitor.recorded}
    assert records["widgets"].parent == records["box"].urn and not records["box"].custom
    assert records["w"].dependencies == (records["widgets"].urn,)
    resources = policy_resources(monitor.recorded)
    assert check_stack("crds-before-custom-resources", resources) == [
        "Widget a/orphan does not depend on CRD widgets.example.com: it may be registered before its API exists"
    ]
    # One secret value makes the whole field secret on the wire; the marker reaches the policy.
    assert isinstance(records["db"].props["stringData"], Secret)
    assert check("secrets-not-plaintext", records["db"].props, typ=records["db"].typ) == []


# -- checkov's documented skips ----------------------------------------------------------------


def test_checkov_skips_each_have_a_reason_and_scope_by_object():
    skips = load_skips()
    assert skips and all(len(skip.reason) > 40 for skip in skips)
    privileged = next(s for s in skips if "CKV_K8S_16" in s.checks)
    assert privileged.covers("CKV_K8S_16", "DaemonSet.nvidia-device-plugin.gpu-feature-discovery-gpu-t4")
    # The GPU components' skips do not reach our own workloads.
    assert not any(s.covers("CKV_K8S_16", "Deployment.team-a.web") for s in skips)


def test_checkov_skips_without_a_reason_are_refused(tmp_path):
    path = tmp_path / "skips.yaml"
    path.write_text("skips:\n  - checks: [CKV_K8S_16]\n")
    with pytest.raises(ValueError, match=r"skips\[0\] needs checks and a reason"):
        load_skips(path)


def test_checkov_reports_are_read_per_framework():
    one = {
        "results": {"failed_checks": [{"check_id": "CKV_K8S_8", "resource": "Deployment.a.b"}]},
        "summary": {"passed": 40, "failed": 1},
    }
    assert failed_checks(json.dumps(one)) == one["results"]["failed_checks"]
    assert failed_checks(json.dumps([one, {"results": {}}])) == one["results"]["failed_checks"]
    # Nothing judged (no object found, or a tree checkov deems hidden) is an error, not a pass.
    with pytest.raises(RuntimeError, match="judged no object"):
        failed_checks(json.dumps({"passed": 0, "failed": 0}))
    with pytest.raises(RuntimeError, match="judged no object"):
        failed_checks("")
    assert Skip(("CKV_K8S_8",), (), "every object, for a reason").covers("CKV_K8S_8", "Deployment.a.b")


# -- the pack as the engine runs it ------------------------------------------------------------


def _struct(value: dict[str, Any]):
    from google.protobuf import struct_pb2

    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def test_the_pack_serves_its_policies_over_the_analyzer_protocol():
    """`policies/__main__.py` as the engine starts it: the engine's gRPC calls (configure with an
    environment's config, analyze one object, analyze the stack) reach the policies, whose input
    arrives wrapped in the SDK's unknown-checking proxies."""
    import subprocess
    import sys

    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    pack = subprocess.Popen([sys.executable, "__main__.py"], cwd=PACK_DIR, stdout=subprocess.PIPE)
    try:
        port = int(pack.stdout.readline())
        stub = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        assert info.name == "mlplatform" and {p.name for p in info.policies} == set(BY_NAME)
        levels = {"mandatory": analyzer_pb2.MANDATORY, "advisory": analyzer_pb2.ADVISORY}
        levels["disabled"] = analyzer_pb2.DISABLED
        config = load_pack_config(pack_config_path("cloud"))
        stub.Configure(
            analyzer_pb2.ConfigureAnalyzerRequest(
                policyConfig={
                    name: analyzer_pb2.PolicyConfig(enforcementLevel=levels[level], properties=_struct(properties))
                    for name, (level, properties) in config.items()
                }
            ),
            timeout=30,
        )
        latest = deployment(image="registry.example.com/app:latest")
        analyzed = stub.Analyze(
            analyzer_pb2.AnalyzeRequest(
                type="kubernetes:apps/v1:Deployment", properties=_struct(latest), urn="urn:web", name="web"
            ),
            timeout=30,
        )
        found = {(d.policyName, d.enforcementLevel) for d in analyzed.diagnostics}
        assert found == {("images-pinned", analyzer_pb2.MANDATORY), ("images-by-digest", analyzer_pb2.ADVISORY)}
        team = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "t", "labels": {"mlplatform.io/role": "team"}},
        }
        stack = stub.AnalyzeStack(
            analyzer_pb2.AnalyzeStackRequest(
                resources=[
                    analyzer_pb2.AnalyzerResource(
                        type="kubernetes:core/v1:Namespace", properties=_struct(team), urn="urn:t", name="t"
                    )
                ]
            ),
            timeout=30,
        )
        assert [(d.policyName, d.message) for d in stack.diagnostics] == [
            (
                "team-namespace-guardrails",
                "Every team namespace has a ResourceQuota, a LimitRange and default-deny ingress and egress "
                "NetworkPolicies.\n"
                "team namespace t has no ResourceQuota, LimitRange, default-deny ingress NetworkPolicy, "
                "default-deny egress NetworkPolicy",
            )
        ]
    finally:
        pack.terminate()
        pack.wait(timeout=30)
