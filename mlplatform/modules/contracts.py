"""What modules give each other: the typed outputs each module provides, and nothing else.

A module reads another's outputs only through `ModuleContext.input(<Outputs type>)`, and only
the types its registry entry declares (`needs` or `uses`); the registry orders the modules by
those declarations. Nothing here builds a resource: this file is the contract, the modules
are its implementations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

from mlplatform.gpu.capacity import PoolGpuResources


@dataclass(frozen=True)
class CoreOutputs:
    namespace: pulumi.Output[str]
    labels: dict[str, str]


@dataclass(frozen=True)
class ScrapeTarget:
    """A monitor for the service of one module, created only when that module is enabled. Each
    module declares its own (registry `scrape_targets`); the monitoring module creates them."""

    module: str
    kind: Literal["ServiceMonitor", "PodMonitor"]
    name: str
    selector: dict[str, Any]
    endpoint: dict[str, Any]
    # Where the targets run: monitors go there on environments that ignore namespace selectors.
    namespaces: tuple[str, ...]


@dataclass(frozen=True)
class MonitoringOutputs:
    """What other modules may know of monitoring."""

    namespace: str
    # Labels a ServiceMonitor/PodMonitor/PrometheusRule needs to be picked up.
    monitor_labels: dict[str, str]
    # What a monitor must wait for: the CRDs we install (none where the cluster serves them).
    crds: tuple[pulumi.Resource, ...]
    # True where we run Prometheus ourselves; False where the cluster's monitoring stack does.
    own_prometheus: bool
    # Where jobs push model quality gauges (Prometheus Pushgateway, in `namespace`): its pods
    # as a network policy selects them and its port (team namespaces need a way out to it).
    model_metrics_pod_labels: dict[str, str]
    model_metrics_port: int


@dataclass(frozen=True)
class GpuOutputs:
    """What other modules may know of the GPU layer."""

    pools: dict[str, PoolGpuResources]
    # Every extended resource name some pool advertises: the only GPU names quotas may use.
    resource_names: tuple[str, ...]
    # Labels that select each GPU pool's nodes (provider node-pool label or declared labels):
    # what the pool's DaemonSets run on and what a scheduler pins a pool's workloads with.
    node_selectors: dict[str, dict[str, str]]
    namespace: str

    def total(self, resource: str) -> int:
        return sum(p.total.get(resource, 0) for p in self.pools.values())


@dataclass(frozen=True)
class TenancyOutputs:
    # team name -> namespace
    namespaces: dict[str, str]
    priority_classes: tuple[str, ...]
    # team name -> its Namespace resource: what other modules' objects in it depend on
    namespace_resources: dict[str, pulumi.Resource] = field(default_factory=dict)


@dataclass(frozen=True)
class MlflowOutputs:
    namespace: str
    service_name: str
    port: int
    # What KServe, notebooks and pipelines set as MLFLOW_TRACKING_URI.
    tracking_uri: str
    # Where the server keeps artifacts (clients reach them through the server, mlflow-artifacts:/).
    artifact_store_uri: str
    # Route/Ingress URL, None when not exposed.
    external_url: str | None
    # none, basic or oidc: basic clients set MLFLOW_TRACKING_USERNAME/PASSWORD.
    auth: str
    # The ConfigMap holding `client_config()`, in every namespace whose pods are MLflow clients.
    client_config_name: str = "mlflow"

    def client_config(self) -> dict[str, str]:
        """What a client pod is told (ConfigMap `client_config_name` beside it): where the server
        is, and the store behind `mlflow-artifacts:/` that a model server reads directly."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_ARTIFACT_STORE": self.artifact_store_uri}


@dataclass(frozen=True)
class ServiceOutputs:
    # Namespaces the service runs in, and its in-cluster endpoints by role.
    namespaces: tuple[str, ...]
    endpoints: dict[str, str]
    # CRDs Established and workloads Available: what dependents wait on.
    ready: tuple[pulumi.Resource, ...] = ()


# One type per service module, so that a module can declare which service it needs.
class NotebooksOutputs(ServiceOutputs):
    pass


class PipelinesOutputs(ServiceOutputs):
    pass


class KatibOutputs(ServiceOutputs):
    pass


class KserveOutputs(ServiceOutputs):
    pass


class TrainingOutputs(ServiceOutputs):
    pass


@dataclass(frozen=True)
class MeshOutputs:
    """What other modules may know of the service mesh (Istio)."""

    # Where istiod and the ingress gateway run.
    namespace: str
    # The Istio Gateway every UI's VirtualService binds to, as `<namespace>/<name>`.
    gateway: str
    # The ingress gateway pods' labels: what AuthorizationPolicies at the gateway select.
    ingress_selector: dict[str, str]
    # The namespace label that has istiod inject the sidecar into a namespace's pods.
    injection_labels: dict[str, str]
    # The extension provider the mesh config declares for the gateway's external authorizer:
    # what a CUSTOM AuthorizationPolicy names (identity's oauth2-proxy serves it).
    external_authorizer: str = "oauth2-proxy"
    # CRDs Established, istiod and its injection webhook serving, the CNI agent running: what an
    # injected workload or an Istio object must come after.
    ready: tuple[pulumi.Resource, ...] = ()


@dataclass(frozen=True)
class IdentityOutputs:
    """What other modules may know of sign-in at the gateway."""

    # The header the gateway sets to the signed-in user's id (the token's email claim) and the
    # prefix before it: what Kubeflow's apps read (USERID_HEADER / USERID_PREFIX).
    user_header: str
    user_prefix: str
    # The header carrying the user's groups (comma separated), where the apps read one.
    groups_header: str
    # The OIDC issuer the gateway checks tokens against (RequestAuthentication).
    issuer_url: str
    # Where a user opens the platform in a browser and is sent to sign in.
    sign_in_url: str
    # The lab's static user (Dex), None where users come from a directory.
    test_user: str | None
    # oauth2-proxy serving and the gateway's authentication objects applied.
    ready: tuple[pulumi.Resource, ...] = ()


class WorkspacesOutputs(ServiceOutputs):
    """Profiles, KFAM, the central dashboard and the web apps: `endpoints` names each UI's path."""
