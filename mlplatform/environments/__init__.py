"""Environment profiles: what makes lab, OpenShift and cloud different.

A profile has two halves. `defaults` is config merged under the stack file, so a stack
holds only what differs. The traits are facts of the environment that no stack can change
(OpenShift assigns UIDs per namespace; only OpenShift serves the Route API); modules read
the traits, never the environment's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]


@dataclass(frozen=True)
class DnsPeer:
    """Where the cluster's DNS pods run and the ports they listen on (after the Service's
    port is translated): what a pod with egress denied must still reach."""

    namespace: str
    pod_labels: dict[str, str]
    ports: tuple[int, ...]


# CoreDNS/kube-dns as kubeadm, EKS, GKE and AKS deploy it.
KUBE_DNS = DnsPeer(namespace="kube-system", pod_labels={"k8s-app": "kube-dns"}, ports=(53,))
# OpenShift's DNS operator runs CoreDNS as a DaemonSet listening on 5353.
OPENSHIFT_DNS = DnsPeer(
    namespace="openshift-dns", pod_labels={"dns.operator.openshift.io/daemonset-dns": "default"}, ports=(5353,)
)


@dataclass(frozen=True)
class Profile:
    name: str
    # May our workloads set runAsUser/fsGroup? OpenShift's restricted-v2 SCC assigns them.
    fixed_uids: bool
    # The cluster's admission fills in the restricted securityContext fields a pod leaves
    # unset (OpenShift's restricted-v2 SCC); upstream manifests for it leave them out.
    admission_sets_restricted_context: bool
    # Route (route.openshift.io/v1) is served; Ingress stays available everywhere.
    route_api: bool
    # How operators are installed: OLM subscriptions or plain manifests/charts.
    operator_install: Literal["olm", "manifests"]
    load_balancer_services: bool
    # Namespaces (not ours) whose pods reach team workloads: ingress controller/router, monitoring.
    ingress_namespaces: tuple[str, ...]
    monitoring_namespaces: tuple[str, ...]
    # Labels every platform namespace carries on this environment.
    namespace_labels: dict[str, str]
    # The cluster runs Prometheus (and serves its Operator's CRDs) with a user workload
    # monitoring stack: we configure that and ship rules and monitors into it, never a second one.
    user_workload_monitoring: bool = False
    # The label the provider puts on every node of a node pool, valued with the pool's name
    # (EKS managed node groups, GKE node pools, AKS agent pools). None where nodes carry no
    # such label (on-premises, OpenShift MachineSets): pools are then matched by the labels
    # the stack declares for them.
    node_pool_label: str | None = None
    dns: DnsPeer = KUBE_DNS
    # The pod network is Multus (OpenShift): a CNI plugin outside the default network is
    # attached per pod through a NetworkAttachmentDefinition, not chained into it.
    cni_multus: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)


# The self-signed ClusterIssuer the platform creates where it installs cert-manager (KServe's,
# modules.kserve.certManager: install): lab Ingress certificates come from it, trusted by no
# browser but encrypting. A lab with its own cert-manager must serve a ClusterIssuer of this
# name, or the stack names its own in cluster.ingress.tls.issuer.
SELF_SIGNED_ISSUER = "mlplatform-selfsigned"


def _pod_security(level: PodSecurityLevel) -> dict[str, str]:
    return {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "audit", "warn")}


LAB = Profile(
    name="lab",
    fixed_uids=True,
    admission_sets_restricted_context=False,
    route_api=False,
    operator_install="manifests",
    load_balancer_services=False,
    ingress_namespaces=("ingress-nginx",),
    monitoring_namespaces=("monitoring",),
    namespace_labels=_pod_security("restricted"),
    defaults={
        "cluster": {
            "storage": {"defaultClass": "standard", "classes": ["standard"]},
            "ingress": {
                "style": "ingress",
                "className": "nginx",
                "domain": "mlplatform.localhost",
                "tls": {"issuer": SELF_SIGNED_ISSUER},
            },
        },
        "platform": {
            "objectStore": {"kind": "in-cluster"},
            "database": {"kind": "in-cluster", "engine": "postgres"},
        },
        # A lab may promise twice its GPUs: teams rarely peak together. Lab GPUs idle between
        # experiments and lab models are slower: alerts there are more patient.
        "modules": {
            "gpu": {"install": "device-plugin"},
            "tenancy": {"gpuOversubscription": 2.0},
            "monitoring": {"alerts": {"gpuIdleFor": "4h", "servingP95LatencySeconds": 2.0}},
            # No directory in a lab: Dex in the cluster with one static user.
            "identity": {"provider": "dex"},
        },
    },
)

OPENSHIFT = Profile(
    name="openshift",
    fixed_uids=False,
    admission_sets_restricted_context=True,
    route_api=True,
    operator_install="olm",
    load_balancer_services=False,
    ingress_namespaces=("openshift-ingress",),
    monitoring_namespaces=("openshift-monitoring", "openshift-user-workload-monitoring"),
    # OpenShift keeps Pod Security labels in step with the SCCs a namespace may use;
    # we pin restricted and turn that synchronisation off so our label is the one enforced.
    namespace_labels={
        **_pod_security("restricted"),
        "security.openshift.io/scc.podSecurityLabelSync": "false",
    },
    user_workload_monitoring=True,
    dns=OPENSHIFT_DNS,
    cni_multus=True,
    defaults={
        "cluster": {
            "storage": {"defaultClass": "gp3-csi", "classes": ["gp3-csi"]},
            # Routes terminate TLS at the router with its default (wildcard) certificate.
            "ingress": {"style": "route"},
        },
        "platform": {
            "objectStore": {"kind": "in-cluster"},
            "database": {"kind": "in-cluster", "engine": "postgres"},
        },
        # The certified GPU operator through OLM is how OpenShift clusters get GPUs.
        # Users sign in as to the console: Dex in front of the cluster's OAuth server.
        "modules": {"gpu": {"install": "operator"}, "identity": {"provider": "openshift"}},
    },
)

_CLOUD_BASE = dict(
    fixed_uids=True,
    admission_sets_restricted_context=False,
    route_api=False,
    operator_install="manifests",
    load_balancer_services=True,
    monitoring_namespaces=("monitoring",),
    namespace_labels=_pod_security("restricted"),
)

# Ingress controllers that run in-cluster per provider (ALB and GCE load balancers reach pods
# from outside the cluster, through the VPC).
_CLOUD_INGRESS_NAMESPACES = {"eks": (), "gke": (), "aks": ("app-routing-system",), "generic": ("ingress-nginx",)}

# The label each provider's node pools put on their nodes, valued with the pool's name.
_CLOUD_NODE_POOL_LABELS = {
    "eks": "eks.amazonaws.com/nodegroup",
    "gke": "cloud.google.com/gke-nodepool",
    "aks": "kubernetes.azure.com/agentpool",
    "generic": None,
}

# Per provider: the storage class, ingress class, object store and GPU install path its
# clusters come with (GKE installs the device plugin on GPU node pools itself).
_CLOUD_PROVIDER_DEFAULTS: dict[str, tuple[str, str, str, str]] = {
    "eks": ("gp3", "alb", "s3", "device-plugin"),
    "gke": ("standard-rwo", "gce", "gcs", "managed"),
    "aks": ("managed-csi", "webapprouting.kubernetes.azure.com", "azure-blob", "device-plugin"),
    "generic": ("standard", "nginx", "s3", "device-plugin"),
}


def cloud_profile(provider: str) -> Profile:
    storage_class, ingress_class, object_store, gpu_install = _CLOUD_PROVIDER_DEFAULTS[provider]
    return Profile(
        name="cloud",
        ingress_namespaces=_CLOUD_INGRESS_NAMESPACES[provider],
        node_pool_label=_CLOUD_NODE_POOL_LABELS[provider],
        **_CLOUD_BASE,
        defaults={
            # No issuer: the stack names its own ClusterIssuer (cluster.ingress.tls.issuer) or
            # provides the certificate Secret; ALB finds an ACM certificate by the TLS hosts.
            "cluster": {
                "storage": {"defaultClass": storage_class, "classes": [storage_class]},
                "ingress": {"style": "ingress", "className": ingress_class},
            },
            "platform": {
                "objectStore": {"kind": object_store},
                "database": {"kind": "managed", "engine": "postgres"},
            },
            # Cloud GPUs are billed by the hour: an idle allocation is worth a page sooner.
            # Users come from the organisation's OIDC issuer (modules.identity.oidc).
            "modules": {
                "gpu": {"install": gpu_install},
                "monitoring": {"alerts": {"gpuIdleFor": "30m"}},
                "identity": {"provider": "oidc"},
            },
        },
    )


def profile_for(environment: str, cloud_provider: str | None = None) -> Profile:
    """The profile of a validated environment (and provider, for cloud)."""
    if environment == "lab":
        return LAB
    if environment == "openshift":
        return OPENSHIFT
    if environment == "cloud":
        return cloud_profile(cloud_provider or "generic")
    raise KeyError(environment)
