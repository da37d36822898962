"""The typed model of a whole platform config: what a stack file may say.

Keys are camelCase as in the stack files; every model forbids unknown keys and coerces
nothing (a quoted number stays a string and is rejected where a number is expected).
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mlplatform.config import rules
from mlplatform.config.quantity import parse_quantity

ENVIRONMENTS = ("lab", "openshift", "cloud")
CLOUD_PROVIDERS = ("eks", "gke", "aks", "generic")

Environment = Literal["lab", "openshift", "cloud"]
CloudProvider = Literal["eks", "gke", "aks", "generic"]

# GPU products a node pool may declare, named as the device plugin's `nvidia.com/gpu.product`
# label reports them (GPU feature discovery), so pool facts and node labels agree.
GPU_MODELS = (
    "A100-SXM4-40GB",
    "A100-SXM4-80GB",
    "A100-PCIE-40GB",
    "A100-PCIE-80GB",
    "A30",
    "H100-SXM5-80GB",
    "H100-PCIE-80GB",
    "H100-NVL",
    "H200-SXM5-141GB",
    "L4",
    "L40S",
    "A10G",
    "T4",
    "V100-SXM2-16GB",
)
GpuModel = Literal[GPU_MODELS]  # type: ignore[valid-type]


def _positive_quantity(value: str) -> str:
    amount = parse_quantity(value)
    if amount <= 0:
        raise ValueError(f"{value!r} must be greater than zero (allowed: a positive quantity such as 4, 500m, 64Gi)")
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(
            f"{rules.shown(value)} is not a CIDR (allowed: a network address with its prefix length, such as "
            "10.0.0.0/16 or 192.168.1.10/32; host bits must be zero)"
        ) from None
    return value


DnsLabel = Annotated[str, AfterValidator(rules.DNS_LABEL.validator)]
DnsSubdomain = Annotated[str, AfterValidator(rules.DNS_SUBDOMAIN.validator)]
# Label/annotation/taint keys and extended resource names (nvidia.com/gpu).
QualifiedName = Annotated[str, AfterValidator(rules.QUALIFIED_NAME.validator)]
LabelValue = Annotated[str, AfterValidator(rules.LABEL_VALUE.validator)]
StackName = Annotated[str, AfterValidator(rules.STACK_NAME.validator)]
# Free-form names (groups, instance types, regions): no stray whitespace or line breaks.
Name = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(rules.TRIMMED.validator)]
# A container image reference as the runtime takes it: one word, no whitespace.
Image = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
Cidr = Annotated[str, AfterValidator(_cidr)]
PositiveQuantity = Annotated[str, AfterValidator(_positive_quantity)]
AnnotationValue = Annotated[str, AfterValidator(rules.ANNOTATION_VALUE.validator)]
Labels = Annotated[dict[QualifiedName, LabelValue], Field(max_length=64)]
# A user as the identity provider names them in the token's email claim (Kubeflow's user id).
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Annotations = Annotated[dict[QualifiedName, AnnotationValue], Field(max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=False,
        # inf and nan are numbers YAML can spell; no threshold or ratio of ours means either.
        allow_inf_nan=False,
    )


class CloudSettings(Strict):
    provider: CloudProvider
    region: DnsLabel | None = None


class TimeSlicing(Strict):
    # Pods that may share one GPU (or one MIG device).
    replicas: int = Field(ge=2, le=64)
    # Advertise shared devices as `<name>.shared` so nobody mistakes a slice for a whole GPU.
    rename_by_default: bool = True
    # Refuse requests for more than one shared device: two slices of one GPU are no faster.
    fail_requests_greater_than_one: bool = True


class Mps(Strict):
    replicas: int = Field(ge=2, le=48)
    rename_by_default: bool = True


class MigLayout(Strict):
    # single: every MIG device of a node has one profile, advertised as nvidia.com/gpu;
    # mixed: each profile is its own resource, nvidia.com/mig-<profile>.
    strategy: Literal["single", "mixed"]
    # MIG devices per GPU: profile -> instances (every GPU of the node gets this layout).
    devices: dict[str, Annotated[int, Field(ge=1, le=rules.MAX_MIG_INSTANCES)]] = Field(min_length=1, max_length=8)


class GpuSharing(Strict):
    time_slicing: TimeSlicing | None = None
    mps: Mps | None = None
    mig: MigLayout | None = None


class GpuSpec(Strict):
    model: GpuModel
    # GPUs per node: the largest servers carry 8 (16 on a few HGX variants).
    count: int = Field(ge=1, le=16)
    sharing: GpuSharing = GpuSharing()


class Taint(Strict):
    # Taint keys and values follow the label key and value forms.
    key: QualifiedName
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodePool(Strict):
    name: DnsLabel
    count: int = Field(ge=1, le=rules.MAX_NODES_PER_POOL)
    cpu: PositiveQuantity
    memory: PositiveQuantity
    instance_type: Name | None = None
    gpu: GpuSpec | None = None
    # Labels every node of the pool carries, set where the nodes are made (the kubelet's
    # --node-labels, an OpenShift MachineSet's template, a cloud node pool's labels). Where
    # the provider labels its pools itself (EKS, GKE, AKS) the GPU layer finds the pool by
    # that label; elsewhere by these, so a GPU pool there must declare at least one.
    labels: Labels = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list, max_length=64)

    @property
    def cpu_cores(self) -> Decimal:
        return parse_quantity(self.cpu)


class StorageSettings(Strict):
    default_class: DnsSubdomain
    classes: list[DnsSubdomain] = Field(min_length=1, max_length=64)


class IngressTlsSettings(Strict):
    # cert-manager ClusterIssuer that issues the certificate of every host we expose through an
    # Ingress (annotation cert-manager.io/cluster-issuer); None: the Secret below is made by
    # whoever holds the certificate (or the load balancer finds its own by host, as ALB does).
    issuer: DnsSubdomain | None = None
    # The Secret (tls.crt, tls.key) an Ingress serves, beside the service; None: <service>-tls.
    secret_name: DnsSubdomain | None = None


class IngressSettings(Strict):
    style: Literal["ingress", "route"]
    class_name: DnsSubdomain | None = None
    domain: DnsSubdomain
    # Every Ingress we create serves HTTPS only; Routes terminate TLS at the router (edge, its
    # default certificate) and redirect plain HTTP.
    tls: IngressTlsSettings = IngressTlsSettings()


class ClusterSettings(Strict):
    node_pools: list[NodePool] = Field(min_length=1, max_length=rules.MAX_NODE_POOLS)
    storage: StorageSettings
    ingress: IngressSettings
    # Where the Kubernetes API is reached; empty means the local control plane's kubeconfig.
    kubeconfig: Name | None = None
    context: Name | None = None


class ObjectStoreSettings(Strict):
    kind: Literal["in-cluster", "s3", "gcs", "azure-blob"]
    bucket: DnsSubdomain | None = None
    endpoint: Name | None = None
    region: DnsLabel | None = None


class DatabaseSettings(Strict):
    kind: Literal["in-cluster", "managed"]
    engine: Literal["postgres", "mysql"] = "postgres"
    host: DnsSubdomain | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    # The account services log in as; its password is a stack secret.
    user: str = Field(default="mlplatform", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PlatformSettings(Strict):
    namespace: DnsLabel = "mlplatform-system"
    labels: Labels = Field(default_factory=dict)
    # Field descriptions in the upstream CRD schemas (the text `kubectl explain` prints). The
    # engine keeps each CRD three times in the stack's state and rewrites the state after every
    # step; the descriptions are half of those bytes. drop: installed without them (KServe's
    # upstream CRDs already ship so); keep: as upstream writes them.
    crd_descriptions: Literal["drop", "keep"] = "drop"
    # How the engine installs each module's CRDs. release: one Helm release of charts/crd-bundle
    # per module, applied in one step (the provider re-reads the API server's whole OpenAPI
    # document after every CRD it creates on its own, a second per CRD on the path of
    # everything after them); objects: one resource per CRD, as stacks installed before
    # release became the default hold them (switching an installed stack is refused by Helm,
    # which will not take over CRDs another manager created, and changes nothing).
    crd_install: Literal["release", "objects"] = "release"
    object_store: ObjectStoreSettings
    database: DatabaseSettings
    # Kubeflow Pipelines and Katib speak MySQL: their database where it is not platform.database
    # (e.g. a managed MySQL next to the managed Postgres MLflow uses).
    kubeflow_database: DatabaseSettings | None = None


class ModuleToggle(Strict):
    enabled: bool = False


class DcgmExporterSettings(Strict):
    enabled: bool = True
    # A ServiceMonitor for the Prometheus Operator (its CRDs must be served).
    service_monitor: bool = False
    # Profiling (DCP) metrics, DCGM_FI_PROF_* (SM, tensor pipe, DRAM, PCIe activity). DCGM reads
    # them only with SYS_ADMIN: off, the exporter neither collects them nor holds that capability.
    profiling_metrics: bool = False


class GpuOperatorSettings(Strict):
    # OLM subscription coordinates (OpenShift); the Helm chart path uses the lock's version.
    channel: Name = "stable"
    source: DnsSubdomain = "certified-operators"
    source_namespace: DnsLabel = "openshift-marketplace"


class GpuModuleSettings(ModuleToggle):
    # device-plugin: NVIDIA's device plugin (+ feature discovery) with our sharing configs;
    # operator: NVIDIA GPU operator (OLM on OpenShift, Helm elsewhere);
    # managed: the cloud installs the device plugin (GKE): we add only what is ours.
    install: Literal["device-plugin", "operator", "managed"] = "device-plugin"
    namespace: DnsLabel | None = None
    feature_discovery: bool = True
    dcgm_exporter: DcgmExporterSettings = DcgmExporterSettings()
    operator: GpuOperatorSettings = GpuOperatorSettings()
    # Oldest driver the node preflight (`mlplatform doctor --gpu`) accepts.
    min_driver_version: str = Field(default="550.54.15", pattern=r"^\d{1,4}(\.\d{1,4}){1,3}$")


def _quantity(value: str | int) -> str | int:
    amount = parse_quantity(value)
    if amount < 0:
        raise ValueError(f"{value!r} is negative (allowed: a quantity >= 0 such as 8, 500m, 64Gi)")
    return value


NonNegativeQuantity = Annotated[str | int, AfterValidator(_quantity)]


class TeamQuota(Strict):
    cpu: NonNegativeQuantity
    memory: NonNegativeQuantity
    pods: int = Field(default=100, ge=0, le=rules.MAX_PODS_PER_TEAM)
    persistent_volume_claims: int = Field(default=20, ge=0, le=rules.MAX_CLAIMS_PER_TEAM)
    # Requested storage per storage class (the class must exist in cluster.storage.classes).
    storage: dict[DnsSubdomain, NonNegativeQuantity] = Field(default_factory=dict, max_length=64)
    # GPU resources by the names the GPU layer publishes (e.g. nvidia.com/gpu.shared).
    gpus: dict[QualifiedName, Annotated[int, Field(ge=0, le=rules.MAX_GPUS_PER_TEAM)]] = Field(
        default_factory=dict, max_length=64
    )


class TeamGroups(Strict):
    admin: list[Name] = Field(default_factory=list, max_length=rules.MAX_LIST_ITEMS)
    edit: list[Name] = Field(default_factory=list, max_length=rules.MAX_LIST_ITEMS)
    view: list[Name] = Field(default_factory=list, max_length=rules.MAX_LIST_ITEMS)


class NotebookGpuProfile(Strict):
    # The GPU resource a team's notebooks may ask for (one the GPU layer publishes) and how many.
    resource: QualifiedName
    max_per_notebook: int = Field(default=1, ge=1, le=16)


class TeamNotebooks(Strict):
    """A team's own notebook rules; unset fields take modules.notebooks'."""

    allowed_images: list[Image] | None = Field(default=None, min_length=1, max_length=rules.MAX_LIST_ITEMS)
    gpu_profile: NotebookGpuProfile | None = None


class Team(Strict):
    name: DnsLabel
    description: str = Field(default="", max_length=1024)
    groups: TeamGroups = TeamGroups()
    # The team's Kubeflow Profile owner (modules.workspaces): the user the dashboard shows as
    # owning the workspace. Required where workspaces is on; rights still come from `groups`.
    owner: Email | None = None
    quota: TeamQuota
    notebooks: TeamNotebooks | None = None


class ContainerDefaults(Strict):
    """LimitRange defaults: what a container without requests/limits gets."""

    default_request_cpu: NonNegativeQuantity = "100m"
    default_request_memory: NonNegativeQuantity = "256Mi"
    default_limit_cpu: NonNegativeQuantity = "1"
    default_limit_memory: NonNegativeQuantity = "2Gi"


class QueueingSettings(Strict):
    # kueue: GPU (and CPU/memory) shares become Kueue ClusterQueues, one per team, with the
    # ResourceQuota kept as the hard ceiling.
    backend: Literal["none", "kueue"] = "none"
    # Teams in one cohort may borrow each other's unused nominal quota.
    cohort: DnsLabel | None = None


class TeamEgress(Strict):
    """Where team pods may connect outside the platform. Everything else leaving a team
    namespace is denied; the cloud metadata addresses are cut out of every range below."""

    # The Kubernetes API server's addresses as pods see them after the `kubernetes` Service
    # is resolved (its Endpoints: control-plane node or managed endpoint IPs). Notebooks and
    # pipeline steps that create objects need it; empty: team pods cannot reach the API.
    kube_api_cidrs: list[Cidr] = Field(default_factory=list, max_length=32)
    kube_api_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: [443, 6443], min_length=1, max_length=16
    )
    # Anything else team pods may reach, on any port: a package mirror, an object store
    # endpoint outside the cluster, a VPC endpoint range.
    allowed_cidrs: list[Cidr] = Field(default_factory=list, max_length=64)
    # HTTPS (443) to public addresses, every private, shared and link-local range cut out: a
    # cloud object store (registered models, pipeline artifacts) and package indexes.
    public_https: bool = False


class TenancySettings(ModuleToggle):
    teams: list[Team] = Field(default_factory=list, max_length=rules.MAX_TEAMS)
    # How far the sum of team GPU quotas may exceed what the pools offer (1.0: never).
    gpu_oversubscription: float = Field(default=1.0, ge=1.0, le=10.0)
    container_defaults: ContainerDefaults = ContainerDefaults()
    # Namespace name prefix: team `vision` lives in namespace `team-vision`.
    namespace_prefix: Annotated[str, AfterValidator(rules.NAMESPACE_PREFIX.validator)] = "team-"
    queueing: QueueingSettings = QueueingSettings()
    egress: TeamEgress = TeamEgress()
    # Stacks of this project that hold teams of their own: each one's file names this stack as
    # `mlplatform:platformStack` and lists its teams under `mlplatform:teams`. Their teams are
    # validated with these, get the same settings, and their objects are that stack's alone, so
    # adding a team previews and applies a stack of a few teams, not the platform
    # (docs/tenancy.md, "Team stacks").
    team_stacks: list[StackName] = Field(default_factory=list, max_length=rules.MAX_TEAM_STACKS)

    def team_namespace(self, team: str) -> str:
        """The one place a team's namespace is named."""
        return self.namespace_prefix + team

    def team_namespaces(self) -> dict[str, str]:
        """Team name -> its namespace, in the order the stack lists the teams."""
        return {team.name: self.team_namespace(team.name) for team in self.teams}


_PROMETHEUS_DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")


def _duration(value: str) -> str:
    if not value or len(value) > 32 or not _PROMETHEUS_DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a Prometheus duration (allowed: e.g. 30s, 15m, 2h, 15d)")
    return value


Duration = Annotated[str, AfterValidator(_duration)]


class PrometheusSettings(Strict):
    replicas: int = Field(default=1, ge=1, le=5)
    retention: Duration = "15d"
    # Persistent TSDB: a class from cluster.storage.classes; unset keeps data on emptyDir.
    storage_class: DnsSubdomain | None = None
    storage_size: PositiveQuantity = "50Gi"


class AlertmanagerSettings(Strict):
    replicas: int = Field(default=1, ge=1, le=5)


def _runbook_base_url(value: str) -> str:
    # Alertmanager and Grafana resolve a relative link against their own host; `#<alert>` is appended.
    if len(value) > 2048 or not re.fullmatch(r"https://[^\s/?#]+[^\s#]*", value):
        raise ValueError(f"{value!r} is not an absolute https URL without a fragment (https://<host>/<path>)")
    return value


class AlertThresholds(Strict):
    """What the alert rules (charts/ml-alerts) compare against; profiles set per-environment defaults."""

    gpu_temperature_warning_celsius: int = Field(default=83, ge=40, le=120)
    gpu_temperature_critical_celsius: int = Field(default=90, ge=40, le=120)
    # Framebuffer used / total above which a GPU is under memory pressure.
    gpu_memory_used_ratio: float = Field(default=0.95, gt=0, le=1)
    # A GPU held by a pod below this utilisation for gpuIdleFor is allocated but idle.
    gpu_idle_utilisation_percent: float = Field(default=5, ge=0, lt=100)
    gpu_idle_for: Duration = "1h"
    # Used / hard of a team's GPU quota.
    quota_saturation_ratio: float = Field(default=0.9, gt=0, le=1)
    pending_gpu_pods_for: Duration = "15m"
    serving_p95_latency_seconds: float = Field(default=1.0, gt=0, le=3600)
    serving_error_ratio: float = Field(default=0.05, gt=0, le=1)
    model_accuracy_min: float = Field(default=0.8, ge=0, le=1)
    model_drift_max: float = Field(default=0.3, gt=0, le=1000)
    # The runbooks document (docs/runbooks.md) where on-call reads it; each alert links to its
    # section. The default's host is reserved (.example): set it where the document is served.
    runbook_base_url: Annotated[str, AfterValidator(_runbook_base_url)] = "https://mlplatform.example/docs/runbooks.md"


class MonitoringModuleSettings(ModuleToggle):
    # Our rules, dashboards and (where we run one) Prometheus live here.
    namespace: DnsLabel = "monitoring"
    # Our own Prometheus and Alertmanager; not allowed where the cluster runs them (OpenShift).
    prometheus: PrometheusSettings | None = None
    alertmanager: AlertmanagerSettings | None = None
    alerts: AlertThresholds = AlertThresholds()
    # Grafana dashboards as ConfigMaps for the Grafana sidecar.
    dashboards: bool = True


def _https_url(value: str) -> str:
    if len(value) > 2048 or not re.fullmatch(r"https://[^\s/]+\S*", value):
        raise ValueError(f"{value!r} is not an https URL (allowed: https://<host>[/path], as the issuer publishes it)")
    return value


class MlflowOidcSettings(Strict):
    issuer_url: Annotated[str, AfterValidator(_https_url)]
    client_id: Name
    # Only members of these groups get in; empty: every user the issuer authenticates.
    allowed_groups: list[Name] = Field(default_factory=list, max_length=rules.MAX_LIST_ITEMS)


class MlflowModuleSettings(ModuleToggle):
    """MLflow tracking server + model registry (our chart, charts/mlflow). Backend store and
    artifact store follow platform.database / platform.objectStore."""

    namespace: DnsLabel = "mlflow"
    replicas: int = Field(default=1, ge=1, le=20)
    # basic: MLflow's basic-auth app, admin password from secrets.mlflowAdminPassword;
    # oidc: an oauth2-proxy sidecar in front (secrets.mlflowOidcClientSecret/CookieSecret).
    auth: Literal["none", "basic", "oidc"] = "basic"
    oidc: MlflowOidcSettings | None = None
    # secret: object store keys from secrets.objectStoreAccessKey/SecretKey;
    # workload-identity: the cloud grants the service account access (annotate it below).
    artifact_credentials: Literal["secret", "workload-identity"] = "secret"
    service_account_annotations: Annotations = Field(default_factory=dict)
    # Key prefix inside platform.objectStore.bucket (cloud stores share the bucket).
    artifact_path: str = Field(default="mlflow", pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$")
    database_name: str = Field(default="mlflow", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    database_user: str = Field(default="mlflow", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Volumes of the in-cluster Postgres and object store.
    database_storage: PositiveQuantity = "20Gi"
    object_store_storage: PositiveQuantity = "50Gi"
    # Host name outside the cluster; default: mlflow.<cluster.ingress.domain>.
    host: DnsSubdomain | None = None
    expose: bool = True
    # A ServiceMonitor for the Prometheus Operator (its CRDs must be served).
    service_monitor: bool = False


class NotebooksSettings(ModuleToggle):
    # Container images team notebooks may run; enforced on Notebook objects in team namespaces.
    allowed_images: list[Image] = Field(
        default_factory=lambda: [
            "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0",
            "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-pytorch-cuda-full:v1.10.0",
        ],
        min_length=1,
        max_length=rules.MAX_LIST_ITEMS,
    )
    gpu_profile: NotebookGpuProfile | None = None


class PipelinesSettings(ModuleToggle):
    # Where artifacts go by default (s3://, gs://, minio://); unset: the platform object store.
    default_pipeline_root: Name | None = None
    # Runs execute in the team's namespace under the signed-in user's identity, the UI behind
    # the sign-in gateway (needs modules.workspaces); off: single-user, runs in `kubeflow`.
    multi_user: bool = False


class KatibSettings(ModuleToggle):
    pass


class KserveSettings(ModuleToggle):
    # RawDeployment: plain Deployments/Services/Ingress, no Knative. Serverless: Knative
    # Serving on the mesh's gateway (needs modules.mesh): scale to zero, canary rollouts.
    deployment_mode: Literal["RawDeployment", "Serverless"] = "RawDeployment"
    # Serverless only. install: the pinned Knative Serving comes with KServe; existing: the
    # cluster runs one (OpenShift Serverless, a managed Knative).
    knative: Literal["install", "existing"] = "install"
    # install: the pinned cert-manager comes with KServe; existing: the cluster runs one.
    cert_manager: Literal["install", "existing"] = "install"
    # Upstream's ClusterServingRuntimes (sklearn, xgboost, torchserve, triton, huggingface, …).
    cluster_serving_runtimes: bool = True


class TrainingSettings(ModuleToggle):
    # training-operator: v1 job kinds (PyTorchJob, TFJob, …); trainer: Trainer v2 (TrainJob).
    operator: Literal["training-operator", "trainer"] = "training-operator"


class MeshSettings(ModuleToggle):
    """Istio from the pinned upstream, with its CNI node agent (no privileged init containers in
    team pods, so they stay Pod-Security restricted): the gateway every Kubeflow UI is reached
    through and the sidecars that carry a signed-in user's identity to the services."""


class OidcIssuerSettings(Strict):
    # The issuer as it publishes itself (/.well-known/openid-configuration under it).
    issuer_url: Annotated[str, AfterValidator(_https_url)]
    client_id: Name
    # The token claim that lists the user's groups (team groups are matched against it).
    groups_claim: Name = "groups"
    # Only members of these groups sign in; empty: every user the issuer authenticates.
    allowed_groups: list[Name] = Field(default_factory=list, max_length=rules.MAX_LIST_ITEMS)


class IdentitySettings(ModuleToggle):
    """Sign-in for every Kubeflow UI and API at the mesh's gateway: oauth2-proxy in front, an
    identity provider behind it. The profile picks the provider; a stack may override it."""

    # dex: Dex in the cluster with one static test user (a lab without a directory);
    # openshift: Dex in front of the cluster's own OAuth server (users sign in as to the console);
    # oidc: the stack's OIDC issuer, directly (Entra ID, Google, Okta, Cognito, Keycloak, ...).
    provider: Literal["dex", "openshift", "oidc"] = "dex"
    oidc: OidcIssuerSettings | None = None
    # Where users open the dashboard; default: kubeflow.<cluster.ingress.domain>.
    host: DnsSubdomain | None = None
    # dex only: the static user (password from secrets.identityTestUserPassword).
    test_user: Email = "user@example.com"


class WorkspacesSettings(ModuleToggle):
    """Kubeflow's multi-user layer: each team a Profile (Profiles controller + KFAM), the central
    dashboard, the Jupyter and volumes web apps, PodDefaults. Needs mesh, identity and tenancy."""


class ModulesSettings(Strict):
    gpu: GpuModuleSettings = GpuModuleSettings()
    tenancy: TenancySettings = TenancySettings()
    mesh: MeshSettings = MeshSettings()
    identity: IdentitySettings = IdentitySettings()
    workspaces: WorkspacesSettings = WorkspacesSettings()
    notebooks: NotebooksSettings = NotebooksSettings()
    pipelines: PipelinesSettings = PipelinesSettings()
    katib: KatibSettings = KatibSettings()
    kserve: KserveSettings = KserveSettings()
    training: TrainingSettings = TrainingSettings()
    mlflow: MlflowModuleSettings = MlflowModuleSettings()
    monitoring: MonitoringModuleSettings = MonitoringModuleSettings()

    def enabled_names(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name).enabled]


class VersionsSettings(Strict):
    lock: Name = "versions.lock.yaml"
    # Upstream component -> version this stack runs (one the lock lists); unpinned components
    # run the lock's default. `mlplatform promote` moves these, and only these, between stacks.
    pins: dict[DnsSubdomain, Name] = Field(default_factory=dict, max_length=200)
    # A JSON record of the stack's last e2e/preview run (`mlplatform record`); when set,
    # promotion from this stack requires it to have passed with the stack's current pins.
    record: Name | None = None


# Credentials the platform hands to its services, under `mlplatform:secrets`. Each is set with
# `pulumi config set --secret --path mlplatform:secrets.<name> <value>`: the stack file keeps
# only ciphertext ({secure: ...}) and the engine decrypts it for the program. They stay out of
# the model so that no error message or render ever carries their value.
SECRET_NAMES = (
    "databasePassword",
    # Kubeflow Pipelines' and Katib's MySQL (platform.kubeflowDatabase).
    "kubeflowDatabasePassword",
    "objectStoreAccessKey",
    "objectStoreSecretKey",
    # MLflow's basic-auth admin; the OIDC client of its login proxy.
    "mlflowAdminPassword",
    "mlflowOidcClientSecret",
    "mlflowOidcCookieSecret",
    # The sign-in proxy at the mesh's gateway (modules.identity): its OIDC client and cookies,
    # and the lab's static Dex user.
    "identityClientSecret",
    "identityCookieSecret",
    "identityTestUserPassword",
)


class MirrorSettings(Strict):
    # A folder laid out like the upstream mirror; unset means online sources.
    path: Name | None = None


class PlatformConfig(Strict):
    environment: Environment
    cloud: CloudSettings | None = None
    cluster: ClusterSettings
    platform: PlatformSettings
    modules: ModulesSettings = ModulesSettings()
    versions: VersionsSettings = VersionsSettings()
    mirror: MirrorSettings = MirrorSettings()
