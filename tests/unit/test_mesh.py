"""The mesh module: Istio in CNI mode on every environment, the gateway reached through the
cluster's own ingress only, istiod from the mesh's pods only, and the CNI agent's host access
confined to it. Expected facts come from the stacks, the profiles and upstream's files."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from mlplatform.environments import profile_for
from mlplatform.modules.mesh import GATEWAY_NAME
from mlplatform.policy_check import load_pack_config, pack_config_path
from mlplatform.validation import load_stack
from tests.conftest import STACKS, render_shared
from tests.conftest import one_object as _one

UPSTREAM_INSTALL = "kubeflow-manifests/common/istio/istio-install/base/install.yaml"


@pytest.fixture(autouse=True)
def _mirror(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))


def _upstream_daemonset(mirror):
    for document in yaml.safe_load_all((mirror / UPSTREAM_INSTALL).read_text()):
        if document and document["kind"] == "DaemonSet":
            return document
    raise AssertionError("upstream ships no CNI DaemonSet")


def _pods_selected(selector, manifests, namespace):
    return [
        m
        for m in manifests
        if m["kind"] in ("Deployment", "DaemonSet")
        and m["metadata"].get("namespace") == namespace
        and all(m["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_every_environment_runs_istio_with_its_cni_agent(stack, mirror):
    manifests = render_shared(stack)
    upstream = _upstream_daemonset(mirror)
    agent = _one(manifests, "DaemonSet", upstream["metadata"]["name"], upstream["metadata"]["namespace"])
    assert agent["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.29.1")
    _one(manifests, "Deployment", "istiod", "istio-system")
    _one(manifests, "Deployment", "istio-ingressgateway", "istio-system")
    _one(manifests, "MutatingWebhookConfiguration", "istio-sidecar-injector")
    gateway = _one(manifests, "Gateway", GATEWAY_NAME, "kubeflow")
    # The Gateway binds the ingress gateway's pods.
    assert _pods_selected(gateway["spec"]["selector"], manifests, "istio-system")
    # We own no namespace of the agent's: kube-system stays as the cluster keeps it.
    assert not [m for m in manifests if m["kind"] == "Namespace" and m["metadata"]["name"] == "kube-system"]


@pytest.mark.parametrize("stack", STACKS)
def test_injected_pods_get_no_privileged_init_container(stack):
    """CNI mode: the injector adds istio-validation (no capabilities) instead of istio-init
    (NET_ADMIN, NET_RAW, root), so injected team pods stay Pod-Security restricted."""
    injector = _one(render_shared(stack), "ConfigMap", "istio-sidecar-injector", "istio-system")
    values = json.loads(injector["data"]["values"])
    assert values["pilot"]["cni"]["enabled"] is True
    assert values["global"]["proxy"]["privileged"] is False
    sidecar = yaml.safe_load(injector["data"]["config"])["templates"]["sidecar"]
    # The init container the injector adds (the proxy's own NET_ADMIN branches are pod opt-ins,
    # TPROXY and iptables tracing, that a restricted namespace refuses anyway).
    start = sidecar.index("initContainers:")
    template = sidecar[: sidecar.index("\n  containers:", start)]
    # Every place there that adds NET_ADMIN or names istio-init is a branch taken only without CNI.
    for needle in ("NET_ADMIN", "- name: istio-init"):
        positions = [m.start() for m in re.finditer(re.escape(needle), template) if m.start() > start]
        assert positions, needle
        for position in positions:
            tags = re.findall(
                r"\{\{-? *((?:if not|if) \.Values\.pilot\.cni\.enabled|else)[ -]*\}\}", template[:position]
            )
            assert tags, needle
            last = tags[-1]
            assert last == "if not .Values.pilot.cni.enabled" or (
                last == "else" and tags[-2] == "if .Values.pilot.cni.enabled"
            ), (needle, tags[-2:])
    if profile_for(stack).cni_multus:
        assert values["pilot"]["cni"]["provider"] == "multus"


@pytest.mark.parametrize("stack", STACKS)
def test_team_and_mesh_namespaces_stay_restricted(stack):
    manifests = render_shared(stack)
    namespaces = {m["metadata"]["name"]: m["metadata"]["labels"] for m in manifests if m["kind"] == "Namespace"}
    teams = [n for n, labels in namespaces.items() if labels.get("mlplatform.io/role") == "team"]
    assert teams
    for name in [*teams, "istio-system"]:
        assert namespaces[name]["pod-security.kubernetes.io/enforce"] == "restricted", name


@pytest.mark.parametrize("stack", STACKS)
def test_the_cni_agents_exemptions_name_it_alone(stack):
    """The policy pack waives host access and the restricted profile for the agent by
    namespace, kind and name, and for nothing else of the mesh."""
    config = load_pack_config(pack_config_path(load_stack(stack).config.environment))
    for policy in ("host-access", "pod-security-restricted"):
        entries = [e for e in config[policy][1]["exemptions"] if "istio" in json.dumps(e).lower()]
        assert entries, policy
        for entry in entries:
            assert (entry["namespace"], entry["kind"], entry["name"]) == ("kube-system", "DaemonSet", "istio-cni-node")
            assert "component" not in entry


@pytest.mark.parametrize("stack", STACKS)
def test_the_gateway_is_reached_through_the_clusters_ingress(stack):
    resolved = load_stack(stack)
    manifests = render_shared(stack)
    ingress = resolved.config.cluster.ingress
    host = resolved.config.modules.identity.host or f"kubeflow.{ingress.domain}"
    service = _one(manifests, "Service", "istio-ingressgateway", "istio-system")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    if ingress.style == "route":
        route = _one(manifests, "Route", "kubeflow", "istio-system")
        assert route["spec"]["host"] == host
        assert route["spec"]["to"]["name"] == service["metadata"]["name"]
        assert route["spec"]["port"]["targetPort"] in ports
        assert route["spec"]["tls"]["insecureEdgeTerminationPolicy"] == "Redirect"
        assert not [m for m in manifests if m["kind"] == "Ingress" and m["metadata"]["namespace"] == "istio-system"]
    else:
        exposed = _one(manifests, "Ingress", "kubeflow", "istio-system")
        assert exposed["spec"]["ingressClassName"] == ingress.class_name
        assert exposed["spec"]["tls"][0]["hosts"] == [host]
        rule = exposed["spec"]["rules"][0]
        assert rule["host"] == host
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"] and backend["port"]["name"] in ports
        issuer = (exposed["metadata"].get("annotations") or {}).get("cert-manager.io/cluster-issuer")
        assert issuer == ingress.tls.issuer


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_ingress_reaches_the_gateway_and_only_the_mesh_reaches_istiod(stack):
    resolved = load_stack(stack)
    manifests = render_shared(stack)
    service = _one(manifests, "Service", "istio-ingressgateway", "istio-system")
    guard = _one(manifests, "NetworkPolicy", "mlplatform-istio-ingressgateway", "istio-system")
    spec = guard["spec"]
    assert _pods_selected(spec["podSelector"]["matchLabels"], manifests, "istio-system")
    [rule] = spec["ingress"]
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http2")
    assert [p["port"] for p in rule["ports"]] == [http["targetPort"]]
    sources = rule["from"]
    if resolved.profile.ingress_namespaces:
        named = [s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources]
        assert named == list(resolved.profile.ingress_namespaces)
    else:
        assert all("ipBlock" in s for s in sources)
    # Upstream's policy opening istiod to every namespace is gone; ours names the mesh's pods.
    assert not [
        m for m in manifests if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == "allow-istiod-control-plane"
    ]
    istiod = _one(manifests, "NetworkPolicy", "mlplatform-istiod-xds", "istio-system")
    assert _pods_selected(istiod["spec"]["podSelector"]["matchLabels"], manifests, "istio-system")
    peers = istiod["spec"]["ingress"][0]["from"]
    assert all(peer.get("namespaceSelector") != {} or peer.get("podSelector") for peer in peers)
    injected = {"istio-injection": "enabled"}
    assert {"namespaceSelector": {"matchLabels": injected}} in peers


def test_openshift_runs_the_cni_agent_as_a_multus_plugin():
    """Istio's OpenShift platform settings (istio.io, platform prerequisites): the plugin where
    Multus reads plugins and their configs, not chained, the agent root under the privileged SCC."""
    manifests = render_shared("openshift")
    agent = _one(manifests, "DaemonSet", "istio-cni-node", "kube-system")
    paths = {v["name"]: v["hostPath"]["path"] for v in agent["spec"]["template"]["spec"]["volumes"]}
    assert paths["cni-bin-dir"] == "/var/lib/cni/bin"
    assert paths["cni-net-dir"] == "/etc/cni/multus/net.d"
    context = agent["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert context["runAsUser"] == 0 and context["seLinuxOptions"] == {"type": "spc_t"}
    assert _one(manifests, "ConfigMap", "istio-cni-config", "kube-system")["data"]["CHAINED_CNI_PLUGIN"] == "false"
    role = _one(manifests, "ClusterRole", "istio-cni")
    assert {
        "apiGroups": ["security.openshift.io"],
        "resources": ["securitycontextconstraints"],
        "resourceNames": ["privileged"],
        "verbs": ["use"],
    } in role["rules"]
    _one(manifests, "NetworkAttachmentDefinition", "istio-cni", "default")
    # Elsewhere the agent chains into the default network at upstream's paths.
    lab = _one(render_shared("lab"), "DaemonSet", "istio-cni-node", "kube-system")
    assert {v["hostPath"]["path"] for v in lab["spec"]["template"]["spec"]["volumes"]} >= {
        "/opt/cni/bin",
        "/etc/cni/net.d",
    }
