"""The service mesh: Istio from the pinned upstream (kubeflow/manifests' CNI install), the
gateway every Kubeflow UI is reached through, exposed by the cluster's own ingress.

CNI mode: the node agent (a DaemonSet in kube-system, as upstream installs it) sets up each
injected pod's traffic redirection, so injected pods carry no NET_ADMIN init container and team
namespaces stay Pod-Security restricted. The agent's host access is the one exception, and it
lives in kube-system, which Pod Security leaves privileged on the clusters we target.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import yaml

from mlplatform.modules.base import Module, ModuleContext, add_team_egress, create_object, gateway_host
from mlplatform.modules.contracts import MeshOutputs, TenancyOutputs
from mlplatform.modules.services import NAMESPACE_ROLES, ServiceInstall, find, overlay_manifests
from mlplatform.tenancy import network
from mlplatform.upstream import KUBEFLOW_NAMESPACE

MESH_NAMESPACE = "istio-system"
# Upstream's Gateway (kubeflow-istio-resources): every Kubeflow VirtualService binds to it.
GATEWAY_NAME = "kubeflow-gateway"
# The ingress gateway's Service and the pod port its `http2` Service port targets.
GATEWAY_SERVICE = "istio-ingressgateway"
GATEWAY_HTTP_PORT = 8080
# istiod's xDS (TLS) port the sidecars connect to.
ISTIOD_XDS_PORT = 15012
# The namespace label upstream's injection webhook matches.
INJECTION_LABELS = {"istio-injection": "enabled"}
# The ingress certificate's Secret beside the gateway, where the stack names none.
TLS_SECRET = "kubeflow-tls"


def gateway_pod_labels(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The ingress gateway pods as upstream's Service selects them."""
    return dict(find(manifests, "Service", GATEWAY_SERVICE)["spec"]["selector"])


def mesh_config(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The mesh config (ConfigMap `istio`, key `mesh`) of the install."""
    return yaml.safe_load(find(manifests, "ConfigMap", "istio")["data"]["mesh"])


def external_authorizer(manifests: list[dict[str, Any]]) -> str:
    """The extension provider upstream's oauth2-proxy overlay declares for external authorization."""
    providers = [p for p in mesh_config(manifests).get("extensionProviders") or [] if "envoyExtAuthzHttp" in p]
    if len(providers) != 1:
        raise KeyError(f"the mesh config declares {len(providers)} HTTP external authorizers, expected one")
    return str(providers[0]["name"])


class Mesh(Module):
    """Istio (CRDs, istiod, CNI agent, ingress gateway, injection webhook, kubeflow-gateway) and
    the way in from outside: an Ingress or a Route to the gateway, and network policies that let
    only the cluster's ingress reach the gateway and only the mesh's pods reach istiod."""

    provides = MeshOutputs
    uses = (TenancyOutputs,)

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:mesh:Mesh", name, None, opts)
        resolved = ctx.resolved
        labels = {**ctx.labels, "mlplatform.io/module": "mesh"}
        manifests = overlay_manifests(ctx, "istio")
        if resolved.profile.cni_multus:
            # Injected pods ask Multus for the istio-cni attachment the overlay declares.
            set_cni_provider(manifests, "multus")
        selector = gateway_pod_labels(manifests)
        authorizer = external_authorizer(manifests)
        # The Gateway and upstream's Sidecar exceptions live in `kubeflow`, shared with the
        # Kubeflow services: the one program-wide owner creates it, whichever module comes first.
        ctx.shared_namespace(KUBEFLOW_NAMESPACE, {"mlplatform.io/role": NAMESPACE_ROLES[KUBEFLOW_NAMESPACE]})
        install = ServiceInstall(self, ctx, manifests, module_label="mesh")
        namespace = [install.namespaces[MESH_NAMESPACE]]
        self._expose(ctx, labels, namespace)
        self._guards(ctx, labels, selector, namespace)
        # Injected team pods fetch their configuration and certificates from istiod.
        add_team_egress(
            self,
            ctx,
            labels,
            "allow-istiod",
            [([network.namespace_peer(MESH_NAMESPACE, {"app": "istiod"})], (ISTIOD_XDS_PORT,))],
        )
        self.outputs = MeshOutputs(
            namespace=MESH_NAMESPACE,
            gateway=f"{KUBEFLOW_NAMESPACE}/{GATEWAY_NAME}",
            ingress_selector=selector,
            injection_labels=dict(INJECTION_LABELS),
            external_authorizer=authorizer,
            # istiod, the CNI agent and the gateway Available, the injection webhook registered
            # after them, the CRDs Established: an injected pod created before would run unmeshed.
            ready=(*install.ready, *install.webhooks),
        )
        self.register_outputs({"namespace": MESH_NAMESPACE, "gateway": self.outputs.gateway})

    def _expose(self, ctx: ModuleContext, labels: dict[str, str], after: list[pulumi.Resource]) -> None:
        """The gateway from outside, as the environment exposes services: a Route where the
        cluster serves them and the stack asks for one, else an Ingress (HTTPS only)."""
        resolved = ctx.resolved
        ingress = resolved.config.cluster.ingress
        host = gateway_host(resolved)
        metadata = {"name": "kubeflow", "namespace": MESH_NAMESPACE, "labels": labels}
        if ingress.style == "route" and resolved.profile.route_api:
            manifest: dict[str, Any] = {
                "apiVersion": "route.openshift.io/v1",
                "kind": "Route",
                "metadata": metadata,
                "spec": {
                    "host": host,
                    "to": {"kind": "Service", "name": GATEWAY_SERVICE, "weight": 100},
                    "port": {"targetPort": "http2"},
                    "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
                    "wildcardPolicy": "None",
                },
            }
        else:
            annotations = {"cert-manager.io/cluster-issuer": ingress.tls.issuer} if ingress.tls.issuer else {}
            spec: dict[str, Any] = {
                "tls": [{"hosts": [host], "secretName": ingress.tls.secret_name or TLS_SECRET}],
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": GATEWAY_SERVICE, "port": {"name": "http2"}}},
                                }
                            ]
                        },
                    }
                ],
            }
            if ingress.class_name:
                spec["ingressClassName"] = ingress.class_name
            manifest = {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {**metadata, **({"annotations": annotations} if annotations else {})},
                "spec": spec,
            }
        create_object(manifest, ctx.child_opts(self, depends_on=after))

    def _guards(
        self, ctx: ModuleContext, labels: dict[str, str], gateway: dict[str, str], after: list[pulumi.Resource]
    ) -> None:
        profile = ctx.resolved.profile
        if profile.ingress_namespaces:
            sources = [network.namespace_peer(n) for n in profile.ingress_namespaces]
        else:
            # The cloud's load balancer (ALB, GCE) sends to pod addresses from outside the
            # cluster's pods: no namespace to name, so the gateway's HTTP port is open to all
            # sources; nothing else of the gateway is.
            sources = [network.ip_block("0.0.0.0/0"), network.ip_block("::/0")]
        create_object(
            network.guard(
                "mlplatform-istio-ingressgateway", MESH_NAMESPACE, labels, gateway, sources, (GATEWAY_HTTP_PORT,)
            ),
            ctx.child_opts(self, depends_on=after),
        )
        # istiod's xDS: the mesh's pods only (injected namespaces, pods that ask for injection
        # anywhere; istio-system's own pods reach it through upstream's same-namespace policy).
        mesh_pods = [
            {"namespaceSelector": {"matchLabels": dict(INJECTION_LABELS)}},
            {"namespaceSelector": {"matchExpressions": [{"key": "istio.io/rev", "operator": "Exists"}]}},
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"sidecar.istio.io/inject": "true"}}},
        ]
        create_object(
            network.guard(
                "mlplatform-istiod-xds", MESH_NAMESPACE, labels, {"app": "istiod"}, mesh_pods, (ISTIOD_XDS_PORT,)
            ),
            ctx.child_opts(self, depends_on=after),
        )


def set_cni_provider(manifests: list[dict[str, Any]], provider: str) -> None:
    """The sidecar injector told which CNI provider the pods it injects use (changed in place)."""
    config_map = find(manifests, "ConfigMap", "istio-sidecar-injector")
    values = json.loads(config_map["data"]["values"])
    values["pilot"]["cni"]["provider"] = provider
    config_map["data"]["values"] = json.dumps(values, indent=2)
