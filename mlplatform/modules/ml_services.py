"""The ML services data scientists use, from pinned upstream sources: notebooks, Kubeflow
Pipelines, Katib, KServe (with cert-manager) and the training operator or Trainer v2.

Each builds its overlay (overlays/<component>/<env>, else its base) and changes, in code, only what comes
from the stack: endpoints, managed backends, credentials, ingress. What differs between
environments structurally lives in the overlays; behaviour that follows a profile trait
(no fixed UIDs on OpenShift) is applied by ServiceInstall.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import yaml

from mlplatform.config.model import DatabaseSettings
from mlplatform.environments import SELF_SIGNED_ISSUER
from mlplatform.gpu.capacity import GPU_VENDOR_PREFIX
from mlplatform.modules.base import ModuleContext, add_team_egress, create_object
from mlplatform.modules.contracts import (
    IdentityOutputs,
    KatibOutputs,
    KserveOutputs,
    MeshOutputs,
    MlflowOutputs,
    NotebooksOutputs,
    PipelinesOutputs,
    ScrapeTarget,
    TenancyOutputs,
    TrainingOutputs,
    WorkspacesOutputs,
)
from mlplatform.modules.services import (
    ServiceInstall,
    ServiceModule,
    container,
    find,
    overlay_manifests,
    secret_value,
    set_env,
)
from mlplatform.tenancy import network, rbac
from mlplatform.upstream import KUBEFLOW_NAMESPACE

# ml-pipeline's HTTP and gRPC ports (upstream's apiserver Deployment).
KFP_API_PORTS = (8888, 8887)
# Katib's DB manager, where trials' metrics collectors report (upstream's db-manager).
KATIB_DB_MANAGER_PORT = 6789
# The KFP UI's container port (upstream's ml-pipeline-ui Deployment).
KFP_UI_PORT = 3000
# ML Metadata's gRPC server (upstream's metadata-grpc-service), which run steps record to.
KFP_METADATA_PORT = 8080
KFP_METADATA_POD = {"component": "metadata-grpc-server"}
# The in-cluster SeaweedFS's S3 port (its Service's 9000 and 8333 both lead here).
KFP_OBJECT_STORE_PORT = 8333
# The ingress gateway's service account in the mesh namespace (upstream Istio's name): the only
# caller the KFP UI admits.
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
# KFP's own authorization checks (SubjectAccessReviews on pipelines.kubeflow.org, which no API
# server serves): what a viewer and an editor of a team may do there, as upstream's
# kubeflow-pipelines-view/edit roles grant them.
KFP_VIEW_RULES = [
    {
        "apiGroups": ["pipelines.kubeflow.org"],
        "resources": ["pipelines", "pipelineversions", "experiments", "jobs", "recurringruns"],
        "verbs": ["get", "list"],
    },
    {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["runs"], "verbs": ["get", "list", "readArtifact"]},
    {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["visualizations"], "verbs": ["create"]},
    # The UI's TensorBoard viewers of a run's output.
    {"apiGroups": ["kubeflow.org"], "resources": ["viewers"], "verbs": ["create", "get", "delete"]},
    # What a run is made of: its Workflow and Argo's record of each step, to read only.
    {"apiGroups": ["kubeflow.org"], "resources": ["scheduledworkflows"], "verbs": rbac.READ},
    {"apiGroups": ["argoproj.io"], "resources": ["workflows", "workflowtaskresults"], "verbs": rbac.READ},
]
KFP_EDIT_RULES = [
    {
        "apiGroups": ["pipelines.kubeflow.org"],
        "resources": ["pipelines", "pipelineversions"],
        "verbs": ["create", "update", "delete"],
    },
    {
        "apiGroups": ["pipelines.kubeflow.org"],
        "resources": ["experiments"],
        "verbs": ["create", "delete", "archive", "unarchive"],
    },
    {
        "apiGroups": ["pipelines.kubeflow.org"],
        "resources": ["runs"],
        "verbs": ["create", "delete", "archive", "unarchive", "retry", "terminate", "reportMetrics"],
    },
    {
        "apiGroups": ["pipelines.kubeflow.org"],
        "resources": ["jobs", "recurringruns"],
        "verbs": ["create", "delete", "enable", "disable"],
    },
    # Runs and recurring runs are a Workflow and a ScheduledWorkflow in the team namespace:
    # members may manage them directly too, as upstream's edit role lets them.
    {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": rbac.WRITE},
    {"apiGroups": ["kubeflow.org"], "resources": ["scheduledworkflows"], "verbs": rbac.WRITE},
]


def _managed(database: DatabaseSettings) -> bool:
    return database.kind == "managed"


def kubeflow_database(resolved: Any) -> DatabaseSettings:
    """Kubeflow Pipelines and Katib speak MySQL: their own database where the stack names one."""
    return resolved.config.platform.kubeflow_database or resolved.config.platform.database


class Notebooks(ServiceModule):
    """Kubeflow notebook controller, plus per-team rules on Notebook objects: images from the
    team's allow-list only, GPUs only of its notebook GPU profile and at most its count."""

    provides = NotebooksOutputs
    needs = (TenancyOutputs,)
    uses = (MlflowOutputs, MeshOutputs)

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:notebooks:Notebooks", name, None, opts)
        settings = ctx.resolved.config.modules.notebooks
        manifests = overlay_manifests(ctx, "notebooks")
        mesh = ctx.input(MeshOutputs)
        if mesh is not None:
            # Notebook servers are opened through the mesh's gateway, behind sign-in: the
            # controller writes each Notebook a VirtualService (/notebook/<namespace>/<name>/) on
            # the mesh's Gateway, as upstream's Kubeflow install configures it.
            config = next(
                m
                for m in manifests
                if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("notebook-controller-config")
            )
            config["data"].update({"USE_ISTIO": "true", "ISTIO_GATEWAY": mesh.gateway, "ISTIO_HOST": "*"})
        install = ServiceInstall(self, ctx, manifests, module_label="notebooks")
        self._team_rights(ctx, "notebooks", {"kubeflow.org": ["notebooks"]})
        labels = {**ctx.labels, "mlplatform.io/module": "notebooks"}
        after = ctx.child_opts(self, depends_on=install.ready)
        create_object(notebook_policy(labels), after)
        create_object(notebook_policy_binding(labels), after)
        mlflow = ctx.input(MlflowOutputs)
        tracking_uri = mlflow.tracking_uri if mlflow else None
        tenancy = ctx.require(TenancyOutputs)
        namespaces = tenancy.namespaces
        for team in ctx.resolved.config.modules.tenancy.teams:
            create_object(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": NOTEBOOK_RULES, "namespace": namespaces[team.name], "labels": labels},
                    "data": notebook_rules(settings, team, tracking_uri),
                },
                # In the team's namespace: created after it, deleted before it.
                ctx.child_opts(self, depends_on=[tenancy.namespace_resources[team.name]]),
            )
            if mesh is not None:
                create_object(
                    gateway_to_notebooks(namespaces[team.name], labels, mesh),
                    ctx.child_opts(self, depends_on=[tenancy.namespace_resources[team.name]]),
                )
        self._finish(tuple(install.namespaces), {}, install.ready)


# The notebook controller labels each server's pod with its Notebook's name; Jupyter listens here.
NOTEBOOK_POD_LABEL = "notebook-name"
NOTEBOOK_PORT = 8888


def gateway_to_notebooks(namespace: str, labels: dict[str, str], mesh: MeshOutputs) -> dict[str, Any]:
    """A team's notebook servers take connections from the mesh's ingress gateway (where sign-in
    is checked) on Jupyter's port: the one way in from outside the team's namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-gateway-to-notebooks", "namespace": namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": NOTEBOOK_POD_LABEL, "operator": "Exists"}]},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [network.namespace_peer(mesh.namespace, mesh.ingress_selector)],
                    "ports": network.ports((NOTEBOOK_PORT,)),
                }
            ],
        },
    }


# The policy reads each team namespace's rules from this ConfigMap (its parameters).
NOTEBOOK_RULES = "notebook-defaults"
NOTEBOOK_POLICY = "mlplatform-notebook-rules"


def notebook_rules(settings: Any, team: Any, tracking_uri: Any = None) -> dict[str, Any]:
    """A team's notebook rules: its own where tenancy sets them, else the module's."""
    own = team.notebooks
    images = (own.allowed_images if own and own.allowed_images else None) or settings.allowed_images
    profile = own.gpu_profile if own and own.gpu_profile else settings.gpu_profile
    rules: dict[str, Any] = {"allowedImages": "\n".join(images)}
    if profile:
        rules["gpuResource"] = profile.resource
        rules["gpuMaxPerNotebook"] = str(profile.max_per_notebook)
    if tracking_uri is not None:
        rules["MLFLOW_TRACKING_URI"] = tracking_uri
    return rules


def notebook_policy(labels: dict[str, str]) -> dict[str, Any]:
    """A ValidatingAdmissionPolicy: the API server itself refuses a team's Notebook that runs
    an image off the team's list or asks for GPUs outside its notebook GPU profile."""
    containers = "object.spec.template.spec.containers"
    limits = "!has(c.resources) || !has(c.resources.limits)"
    has_profile = "('gpuResource' in params.data)"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": NOTEBOOK_POLICY, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["kubeflow.org"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["notebooks"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"{containers}.all(c, c.image in params.data.allowedImages.split('\\n'))",
                    "messageExpression": (
                        "'notebook images must be one of: ' + params.data.allowedImages.split('\\n').join(', ')"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        f"{containers}.all(c, {limits} || c.resources.limits.all(r, "
                        f"!r.startsWith('{GPU_VENDOR_PREFIX}') || ({has_profile} && r == params.data.gpuResource)))"
                    ),
                    "messageExpression": (
                        f"{has_profile} ? 'notebooks may request GPUs only as ' + params.data.gpuResource"
                        " : 'notebooks of this team may not request GPUs'"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        f"!{has_profile} || {containers}.all(c, {limits} || "
                        "!(params.data.gpuResource in c.resources.limits) || "
                        "int(c.resources.limits[params.data.gpuResource]) <= int(params.data.gpuMaxPerNotebook))"
                    ),
                    "messageExpression": (
                        "'a notebook container may ask for at most ' + params.data.gpuMaxPerNotebook + ' ' + "
                        "params.data.gpuResource"
                    ),
                    "reason": "Forbidden",
                },
            ],
        },
    }


def notebook_policy_binding(labels: dict[str, str]) -> dict[str, Any]:
    """Team namespaces only; each is judged by its own rules ConfigMap, and a team namespace
    without one refuses notebooks rather than letting them through unchecked."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": NOTEBOOK_POLICY, "labels": labels},
        "spec": {
            "policyName": NOTEBOOK_POLICY,
            "validationActions": ["Deny"],
            "paramRef": {"name": NOTEBOOK_RULES, "parameterNotFoundAction": "Deny"},
            "matchResources": {"namespaceSelector": {"matchLabels": {"mlplatform.io/role": "team"}}},
        },
    }


class Pipelines(ServiceModule):
    """Kubeflow Pipelines 2.16 (with its Argo Workflows controller).

    Single-user (the default): teams use it through its API and runs execute in `kubeflow`.
    Multi-user (`multiUser`): upstream's multi-user install; the UI behind the mesh's gateway,
    the API server reads the signed-in user from the identity module's header and checks the
    team's rights, runs execute in the team namespaces (their per-namespace objects written
    here)."""

    provides = PipelinesOutputs
    # Mesh, identity and workspaces only in multi-user mode (a validation rule requires them).
    uses = (MlflowOutputs, TenancyOutputs, MeshOutputs, IdentityOutputs, WorkspacesOutputs)

    @staticmethod
    def scrape_targets(resolved: Any) -> list[ScrapeTarget]:
        return [
            ScrapeTarget(
                module="pipelines",
                # The API server's pods: upstream's ml-pipeline Service carries no label of its own
                # beyond the one all of KFP's Services share.
                kind="PodMonitor",
                name="kfp-api-server",
                selector={"matchLabels": {"app": "ml-pipeline"}},
                endpoint={"port": "http", "path": "/metrics", "interval": "30s"},
                namespaces=(KUBEFLOW_NAMESPACE,),
            )
        ]

    @staticmethod
    def required_secrets(resolved: Any) -> list[tuple[str, str]]:
        where = "managed" if _managed(kubeflow_database(resolved)) else "in-cluster"
        return [
            ("kubeflowDatabasePassword", f"Kubeflow Pipelines' {where} MySQL"),
            ("objectStoreAccessKey", "Kubeflow Pipelines' artifact store"),
            ("objectStoreSecretKey", "Kubeflow Pipelines' artifact store"),
        ]

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:pipelines:Pipelines", name, None, opts)
        config = ctx.resolved.config
        multi_user = config.modules.pipelines.multi_user
        manifests = overlay_manifests(ctx, "pipelines-multi-user" if multi_user else "pipelines")
        store = config.platform.object_store
        database = kubeflow_database(ctx.resolved)
        install_config = find(manifests, "ConfigMap", "pipeline-install-config")
        if _managed(database):
            port = str(database.port or 3306)
            install_config["data"].update(
                {"dbHost": database.host, "dbPort": port, "mysqlHost": database.host, "mysqlPort": port}
            )
        pipeline_root = config.modules.pipelines.default_pipeline_root
        endpoint = None
        if store.kind != "in-cluster":
            endpoint = store.endpoint or _object_store_endpoint(store)
            install_config["data"]["bucketName"] = store.bucket
            set_env(
                container(find(manifests, "Deployment", "ml-pipeline")),
                {
                    "OBJECTSTORECONFIG_HOST": endpoint,
                    "OBJECTSTORECONFIG_PORT": "443",
                    "OBJECTSTORECONFIG_SECURE": "true",
                    "OBJECTSTORECONFIG_REGION": store.region or "",
                },
            )
            workflow_config = find(manifests, "ConfigMap", "workflow-controller-configmap")
            workflow_config["data"]["artifactRepository"] = _argo_artifact_repository(endpoint, store)
            pipeline_root = pipeline_root or f"{_scheme(store.kind)}://{store.bucket}/pipelines"
        if pipeline_root:
            find(manifests, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"] = pipeline_root
            install_config["data"]["defaultPipelineRoot"] = pipeline_root
        # Credentials come from the stack's secrets: never upstream's defaults (root with an empty
        # password, minio/minio123), never the stack file in clear.
        credentials: dict[tuple[str, str], dict[str, Any]] = {}
        self._credentials(
            manifests,
            credentials,
            "mysql-secret",
            {
                "username": database.user if _managed(database) else IN_CLUSTER_MYSQL_USER,
                "password": secret_value(ctx, "kubeflowDatabasePassword"),
            },
        )
        # Also the in-cluster SeaweedFS's S3 identity: it reads this Secret (envFrom) and
        # configures its admin user with these keys when it starts.
        object_store_keys = {
            "accesskey": secret_value(ctx, "objectStoreAccessKey"),
            "secretkey": secret_value(ctx, "objectStoreSecretKey"),
        }
        self._credentials(manifests, credentials, "mlpipeline-minio-artifact", object_store_keys)
        if not _managed(database):
            with_root_password(find(manifests, "Deployment", "mysql"), "mysql-secret", "password")
        mesh = identity = None
        if multi_user:
            mesh, identity = ctx.require(MeshOutputs), ctx.require(IdentityOutputs)
            # Team namespaces, their Profiles and the run service account (default-editor) come
            # from workspaces: runs are created only once those exist.
            ctx.require(WorkspacesOutputs)
            behind_gateway(manifests, mesh, identity)
            with_restricted_workflow_pods(manifests, ctx.resolved.profile.fixed_uids)
            # Upstream's multi-user tree carries no Namespace: `kubeflow` is shared (the mesh's
            # gateway lives there too).
            ctx.shared_namespace(KUBEFLOW_NAMESPACE, {})
        install = ServiceInstall(
            self,
            ctx,
            manifests,
            module_label="pipelines",
            credentials=credentials,
            after=[*mesh.ready, *identity.ready] if mesh and identity else (),
        )
        namespace = list(install.namespaces.values())
        mlflow = ctx.input(MlflowOutputs)
        if mlflow is not None:
            # Single-user runs execute here: their steps take MLflow's address from this ConfigMap
            # (kfp-kubernetes use_config_map_as_env), as team pods take it from theirs.
            create_object(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": mlflow.client_config_name,
                        "namespace": KUBEFLOW_NAMESPACE,
                        "labels": {**ctx.labels, "mlplatform.io/module": "pipelines"},
                    },
                    "data": mlflow.client_config(),
                },
                ctx.child_opts(self, depends_on=namespace),
            )
        kubeflow = network.namespace_peer(KUBEFLOW_NAMESPACE)
        teams = network.role_peer((network.TEAM_ROLE,))
        # The metadata store: KFP's own pods only (the API server, the metadata writer, ...).
        if not _managed(database):
            self._guard(ctx, "pipelines", "mlplatform-kfp-mysql", {"app": "mysql"}, [kubeflow], (3306,), namespace)
        # The API: KFP's UI and runs, teams' SDK clients (notebooks), the platform and monitoring.
        api_clients = [kubeflow, network.role_peer((network.TEAM_ROLE, "system", "monitoring"))]
        api_clients += [network.namespace_peer(n) for n in ctx.resolved.profile.monitoring_namespaces]
        if mesh is not None:
            # The UI's requests arrive through the ingress gateway.
            api_clients.append(network.namespace_peer(mesh.namespace))
        self._guard(
            ctx, "pipelines", "mlplatform-kfp-api", {"app": "ml-pipeline"}, api_clients, KFP_API_PORTS, namespace
        )
        egress = [([network.namespace_peer(KUBEFLOW_NAMESPACE, {"app": "ml-pipeline"})], KFP_API_PORTS)]
        if mesh is not None:
            # The UI: the ingress gateway's pods only, as its AuthorizationPolicy says in the mesh.
            self._guard(
                ctx,
                "pipelines",
                "mlplatform-kfp-ui",
                {"app": "ml-pipeline-ui"},
                [network.namespace_peer(mesh.namespace, mesh.ingress_selector)],
                (KFP_UI_PORT,),
                namespace,
            )
        if multi_user:
            # Run steps in team namespaces record to ML Metadata and keep artifacts in the
            # in-cluster store: both let teams in, and team namespaces let their pods out.
            self._guard(
                ctx,
                "pipelines",
                "mlplatform-kfp-metadata",
                KFP_METADATA_POD,
                [kubeflow, teams],
                (KFP_METADATA_PORT,),
                namespace,
            )
            egress.append(([network.namespace_peer(KUBEFLOW_NAMESPACE, KFP_METADATA_POD)], (KFP_METADATA_PORT,)))
            if store.kind == "in-cluster":
                self._guard(
                    ctx,
                    "pipelines",
                    "mlplatform-kfp-object-store",
                    {"app": "seaweedfs"},
                    [teams],
                    (KFP_OBJECT_STORE_PORT,),
                    namespace,
                )
                egress.append(
                    ([network.namespace_peer(KUBEFLOW_NAMESPACE, {"app": "seaweedfs"})], (KFP_OBJECT_STORE_PORT,))
                )
        add_team_egress(self, ctx, {**ctx.labels, "mlplatform.io/module": "pipelines"}, "allow-pipelines-api", egress)
        if multi_user:
            self._team_objects(ctx, store, endpoint, object_store_keys, install.ready)
            labels = {**ctx.labels, "mlplatform.io/module": "pipelines"}
            for role in (
                rbac.rights_role("mlplatform-team-pipelines-view", "view", KFP_VIEW_RULES, labels),
                rbac.rights_role("mlplatform-team-pipelines-edit", "edit", KFP_EDIT_RULES, labels),
            ):
                create_object(role, ctx.child_opts(self))
        endpoints = {
            "api": f"http://ml-pipeline.{KUBEFLOW_NAMESPACE}.svc.cluster.local:8888",
            "ui": f"http://ml-pipeline-ui.{KUBEFLOW_NAMESPACE}.svc.cluster.local:80",
        }
        if multi_user:
            endpoints["path"] = KFP_UI_PATH
        self._finish((KUBEFLOW_NAMESPACE,), endpoints, install.ready)

    def _team_objects(
        self,
        ctx: ModuleContext,
        store: Any,
        endpoint: str | None,
        keys: dict[str, Any],
        after: list[pulumi.Resource],
    ) -> None:
        """What a run needs in the team namespace it executes in (upstream's profile controller
        writes the same objects): where artifacts go, where ML Metadata is, the object store's
        keys. Written here from the stack, so they follow the stack's object store."""
        tenancy = ctx.require(TenancyOutputs)
        labels = {**ctx.labels, "mlplatform.io/module": "pipelines"}
        for team, namespace in tenancy.namespaces.items():
            opts = ctx.child_opts(self, depends_on=[tenancy.namespace_resources[team], *after])
            for manifest in team_run_objects(namespace, labels, store, endpoint, ctx.resolved.config.modules.pipelines):
                if manifest["kind"] == "Secret":
                    manifest["stringData"] = dict(keys)
                create_object(manifest, opts)

    @staticmethod
    def _credentials(
        manifests: list[dict[str, Any]],
        filled: dict[tuple[str, str], dict[str, Any]],
        name: str,
        values: dict[str, Any],
    ) -> None:
        secret = find(manifests, "Secret", name)
        secret.pop("data", None)
        secret["stringData"] = values
        filled[(secret["metadata"].get("namespace", KUBEFLOW_NAMESPACE), name)] = values


# The account the in-cluster MySQL's clients log in as (upstream's `mysql-secret` username).
IN_CLUSTER_MYSQL_USER = "root"
# Where the multi-user UI is served on the gateway (upstream's VirtualService prefix).
KFP_UI_PATH = "/pipeline"
# KFP's bucket name for the in-cluster store (upstream's pipeline-install-config bucketName).
IN_CLUSTER_BUCKET = "mlpipeline"


def behind_gateway(manifests: list[dict[str, Any]], mesh: MeshOutputs, identity: IdentityOutputs) -> None:
    """The multi-user install (changed in place) on the mesh's gateway and the identity module's
    header: VirtualServices bound to the mesh's Gateway, the UI admitting only the gateway's
    calls (upstream also admits any caller with a bearer token and no user header), the API
    server and UI reading the user from the header the gateway sets, and KFP's pods in the mesh."""
    for manifest in manifests:
        if manifest["kind"] == "VirtualService":
            manifest["spec"]["gateways"] = [mesh.gateway]
    principal = f"cluster.local/ns/{mesh.namespace}/sa/{GATEWAY_SERVICE_ACCOUNT}"
    find(manifests, "AuthorizationPolicy", "ml-pipeline-ui")["spec"]["rules"] = [
        {"from": [{"source": {"principals": [principal]}}]}
    ]
    user = {"KUBEFLOW_USERID_HEADER": identity.user_header, "KUBEFLOW_USERID_PREFIX": identity.user_prefix}
    for name in ("ml-pipeline", "ml-pipeline-ui"):
        set_env(container(find(manifests, "Deployment", name)), user)
    # Upstream's AuthorizationPolicies are what keep the user header trustworthy (the API server
    # refuses it from anyone but KFP's own accounts); a proxy enforces them only in injected
    # pods. `kubeflow` carries no injection label (other modules' pods live there too), so KFP's
    # pods ask for the sidecar themselves, as upstream's injected namespace would give it them,
    # except those upstream keeps out of the mesh.
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            template = manifest["spec"]["template"].setdefault("metadata", {})
            labels = template.setdefault("labels", {})
            labels.setdefault(SIDECAR_INJECT, "true")


# The pod label Istio's injector selects pods by outside injected namespaces.
SIDECAR_INJECT = "sidecar.istio.io/inject"
# Argo's names for a step's containers: the user's command runs in `main`.
_ARGO_MAIN = "main"


def with_restricted_workflow_pods(manifests: list[dict[str, Any]], fixed_uids: bool) -> None:
    """Workflow pods that Pod Security `restricted` admits in team namespaces (changed in
    place). Argo's own init and wait containers already run so (upstream's `executor` config);
    the workflow defaults add the pod's seccomp profile and non-root rule and the main
    container's dropped capabilities and no privilege escalation, and KFP's API server sets
    its non-root user on the steps it compiles (a fixed UID only where the environment allows
    one; OpenShift assigns it)."""
    pod_context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    main_patch = {
        "containers": [
            {
                "name": _ARGO_MAIN,
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ]
    }
    defaults = {"spec": {"securityContext": pod_context, "podSpecPatch": json.dumps(main_patch)}}
    workflow_config = find(manifests, "ConfigMap", "workflow-controller-configmap")
    workflow_config["data"]["workflowDefaults"] = yaml.safe_dump(defaults, sort_keys=False)
    install_config = find(manifests, "ConfigMap", "pipeline-install-config")["data"]
    install_config["defaultSecurityContextRunAsNonRoot"] = "true"
    if fixed_uids:
        install_config["defaultSecurityContextRunAsUser"] = str(RUN_AS_USER)


# The UID run steps run as where the environment lets a pod choose one (upstream's KFP images
# run as 1000 elsewhere too, e.g. the UI).
RUN_AS_USER = 1000


def team_run_objects(
    namespace: str, labels: dict[str, str], store: Any, endpoint: str | None, settings: Any
) -> list[dict[str, Any]]:
    """The objects a multi-user run reads in its namespace, as upstream's profile controller
    names them: `kfp-launcher` (the pipeline root), `metadata-grpc-configmap` (ML Metadata's
    address), `artifact-repositories` (Argo's default artifact store for the namespace) and
    `mlpipeline-minio-artifact` (the store's keys; its values are the caller's to fill). Each
    team's artifacts go under its own prefix."""
    in_cluster = store.kind == "in-cluster"
    bucket = IN_CLUSTER_BUCKET if in_cluster else store.bucket
    scheme = "minio" if in_cluster else _scheme(store.kind)
    root = settings.default_pipeline_root or f"{scheme}://{bucket}/private-artifacts/{namespace}/v2/artifacts"
    s3: dict[str, Any] = {
        "endpoint": f"seaweedfs.{KUBEFLOW_NAMESPACE}.svc.cluster.local:9000" if in_cluster else endpoint,
        "bucket": bucket,
        "keyFormat": (
            f"private-artifacts/{namespace}/{{{{workflow.name}}}}/{{{{workflow.creationTimestamp.Y}}}}/"
            "{{workflow.creationTimestamp.m}}/{{workflow.creationTimestamp.d}}/{{pod.name}}"
        ),
        # The in-cluster store serves plain HTTP inside the cluster; cloud stores TLS.
        "insecure": in_cluster,
        "accessKeySecret": {"name": "mlpipeline-minio-artifact", "key": "accesskey"},
        "secretKeySecret": {"name": "mlpipeline-minio-artifact", "key": "secretkey"},
    }
    if not in_cluster and store.region:
        s3["region"] = store.region

    def meta(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": labels, **extra}

    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("kfp-launcher"),
            "data": {"defaultPipelineRoot": root},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("metadata-grpc-configmap"),
            "data": {
                "METADATA_GRPC_SERVICE_HOST": f"metadata-grpc-service.{KUBEFLOW_NAMESPACE}",
                "METADATA_GRPC_SERVICE_PORT": str(KFP_METADATA_PORT),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(
                "artifact-repositories",
                annotations={"workflows.argoproj.io/default-artifact-repository": "default-namespaced"},
            ),
            "data": {"default-namespaced": json.dumps({"archiveLogs": True, "s3": s3})},
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("mlpipeline-minio-artifact"), "type": "Opaque"},
    ]


def with_root_password(deployment: dict[str, Any], secret: str, key: str) -> None:
    """An in-cluster MySQL (changed in place) initialised with root's password from the Secret
    rather than upstream's empty one."""
    mysql = container(deployment)
    mysql["env"] = [e for e in mysql.get("env", []) if e["name"] != "MYSQL_ALLOW_EMPTY_PASSWORD"]
    set_env(mysql, {"MYSQL_ROOT_PASSWORD": {"secretKeyRef": {"name": secret, "key": key}}})


def _scheme(kind: str) -> str:
    return {"s3": "s3", "gcs": "gs", "azure-blob": "azblob"}[kind]


def _object_store_endpoint(store: Any) -> str:
    return {
        "s3": f"s3.{store.region}.amazonaws.com" if store.region else "s3.amazonaws.com",
        "gcs": "storage.googleapis.com",
        "azure-blob": f"{store.bucket}.blob.core.windows.net",
    }[store.kind]


def _argo_artifact_repository(endpoint: str, store: Any) -> str:
    repository = {
        "archiveLogs": True,
        "s3": {
            "endpoint": endpoint,
            "bucket": store.bucket,
            "region": store.region or "",
            "insecure": False,
            "keyFormat": "private-artifacts/{{workflow.namespace}}/{{workflow.name}}/{{pod.name}}",
            "accessKeySecret": {"name": "mlpipeline-minio-artifact", "key": "accesskey"},
            "secretKeySecret": {"name": "mlpipeline-minio-artifact", "key": "secretkey"},
        },
    }
    return json.dumps(repository, indent=2)


class Katib(ServiceModule):
    """Katib hyperparameter tuning (standalone, OpenShift variant, or on a managed MySQL)."""

    provides = KatibOutputs
    uses = (TenancyOutputs,)

    @staticmethod
    def required_secrets(resolved: Any) -> list[tuple[str, str]]:
        where = "managed" if _managed(kubeflow_database(resolved)) else "in-cluster"
        return [("kubeflowDatabasePassword", f"Katib's {where} MySQL")]

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:katib:Katib", name, None, opts)
        manifests = overlay_manifests(ctx, "katib")
        database = kubeflow_database(ctx.resolved)
        secret = next(
            m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"].startswith("katib-mysql-secrets")
        )
        secret.pop("data", None)
        password = secret_value(ctx, "kubeflowDatabasePassword")
        if _managed(database):
            secret["stringData"] = {
                "KATIB_MYSQL_DB_DATABASE": "katib",
                "KATIB_MYSQL_DB_HOST": database.host,
                "KATIB_MYSQL_DB_PORT": str(database.port or 3306),
                "DB_USER": database.user,
                "DB_PASSWORD": password,
            }
        else:
            # Upstream's root password is `test`, with empty passwords allowed besides.
            secret["stringData"] = {"MYSQL_ROOT_PASSWORD": password}
            with_root_password(
                find(manifests, "Deployment", "katib-mysql"), secret["metadata"]["name"], "MYSQL_ROOT_PASSWORD"
            )
        metadata = secret["metadata"]
        credentials = {(metadata.get("namespace", KUBEFLOW_NAMESPACE), metadata["name"]): secret["stringData"]}
        install = ServiceInstall(self, ctx, manifests, module_label="katib", credentials=credentials)
        namespace = list(install.namespaces.values())
        kubeflow = network.namespace_peer(KUBEFLOW_NAMESPACE)
        if not _managed(database):
            self._guard(
                ctx,
                "katib",
                "mlplatform-katib-mysql",
                {"katib.kubeflow.org/component": "mysql"},
                [kubeflow],
                (3306,),
                namespace,
            )
        # Trials run in the team's namespace; their metrics collectors report to the DB manager.
        db_manager = {"katib.kubeflow.org/component": "db-manager"}
        self._guard(
            ctx,
            "katib",
            "mlplatform-katib-db-manager",
            db_manager,
            [kubeflow, network.role_peer((network.TEAM_ROLE,))],
            (KATIB_DB_MANAGER_PORT,),
            namespace,
        )
        add_team_egress(
            self,
            ctx,
            {**ctx.labels, "mlplatform.io/module": "katib"},
            "allow-katib-db-manager",
            [([network.namespace_peer(KUBEFLOW_NAMESPACE, db_manager)], (KATIB_DB_MANAGER_PORT,))],
        )
        # People write Experiments; Katib makes the Trials and Suggestions from them.
        self._team_rights(
            ctx, "katib", {"kubeflow.org": ["experiments"]}, read_only={"kubeflow.org": ["trials", "suggestions"]}
        )
        self._finish(
            (KUBEFLOW_NAMESPACE,),
            {"ui": f"http://katib-ui.{KUBEFLOW_NAMESPACE}.svc.cluster.local:80"},
            install.ready,
        )


class Kserve(ServiceModule):
    """KServe (RawDeployment by default) with the pinned cert-manager for its webhook
    certificates, and upstream's ClusterServingRuntimes once its webhook serves. Serverless:
    Knative Serving (net-istio) on the mesh's gateway, installed before KServe's controller
    where the stack installs it."""

    provides = KserveOutputs
    # Serverless only (a validation rule requires the mesh there).
    uses = (MeshOutputs,)

    @staticmethod
    def scrape_targets(resolved: Any) -> list[ScrapeTarget]:
        tenancy = resolved.config.modules.tenancy
        team_namespaces = tuple(tenancy.team_namespaces().values()) if tenancy.enabled else ()
        # Predictor pods announce their metrics port and path (prometheus.io/* annotations that
        # KServe sets from the serving runtime); the InferenceService name becomes a label.
        return [
            ScrapeTarget(
                module="kserve",
                kind="PodMonitor",
                name="kserve-predictors",
                selector={"matchExpressions": [{"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}]},
                endpoint={
                    "interval": "30s",
                    "relabelings": [
                        {
                            "action": "keep",
                            "sourceLabels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                            "regex": "true",
                        },
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                            "regex": "(.+)",
                            "targetLabel": "__metrics_path__",
                        },
                        {
                            "sourceLabels": [
                                "__meta_kubernetes_pod_ip",
                                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                            ],
                            "regex": "(.+);([0-9]+)",
                            "replacement": "$1:$2",
                            "targetLabel": "__address__",
                        },
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"],
                            "targetLabel": "inferenceservice",
                        },
                    ],
                },
                namespaces=team_namespaces,
            )
        ]

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:kserve:Kserve", name, None, opts)
        settings = ctx.resolved.config.modules.kserve
        cert_manager_ready: list[pulumi.Resource] = []
        if settings.cert_manager == "install":
            cert_manager = ServiceInstall(
                self, ctx, overlay_manifests(ctx, "cert-manager"), module_label="kserve-cert-manager"
            )
            cert_manager_ready = cert_manager.ready
            if ctx.resolved.config.cluster.ingress.tls.issuer == SELF_SIGNED_ISSUER:
                # The lab's Ingress certificates: issued here, with nothing outside the cluster.
                create_object(
                    {
                        "apiVersion": "cert-manager.io/v1",
                        "kind": "ClusterIssuer",
                        "metadata": {
                            "name": SELF_SIGNED_ISSUER,
                            "labels": {**ctx.labels, "mlplatform.io/module": "kserve-cert-manager"},
                        },
                        "spec": {"selfSigned": {}},
                    },
                    ctx.child_opts(self, depends_on=cert_manager_ready),
                )
        serverless = settings.deployment_mode == "Serverless"
        mesh = ctx.input(MeshOutputs) if serverless else None
        knative_ready: list[pulumi.Resource] = []
        if serverless and settings.knative == "install":
            knative_manifests = overlay_manifests(ctx, "knative-serving")
            if mesh is not None:
                on_mesh_gateway(knative_manifests, mesh)
            knative = ServiceInstall(
                self,
                ctx,
                knative_manifests,
                module_label="kserve-knative",
                after=list(mesh.ready) if mesh is not None else (),
                after_for_custom_resources=cert_manager_ready,
            )
            knative_ready = knative.ready
        manifests = overlay_manifests(ctx, "kserve")
        inference_config = find(manifests, "ConfigMap", "inferenceservice-config")
        inference_config["data"]["deploy"] = json.dumps({"defaultDeploymentMode": settings.deployment_mode})
        ingress = json.loads(inference_config["data"]["ingress"])
        cluster_ingress = ctx.resolved.config.cluster.ingress
        ingress.update(
            {
                "ingressDomain": cluster_ingress.domain,
                # OpenShift's router admits Ingress objects of its default class as Routes.
                "ingressClassName": cluster_ingress.class_name
                or ("openshift-default" if ctx.resolved.profile.route_api else "nginx"),
                "disableIstioVirtualHost": not serverless,
            }
        )
        if mesh is not None:
            # Serverless: routes on the mesh's gateway; cluster-local traffic through Knative's
            # local gateway, as upstream's Kubeflow install configures it.
            ingress.update(
                {
                    "ingressGateway": mesh.gateway,
                    "localGateway": f"{KNATIVE_NAMESPACE}/{KNATIVE_LOCAL_GATEWAY}",
                    "localGatewayService": f"{KNATIVE_LOCAL_GATEWAY}.{mesh.namespace}.svc.cluster.local",
                }
            )
        inference_config["data"]["ingress"] = json.dumps(ingress, indent=2)
        # Predictor pods get prometheus.io/{scrape,port,path} annotations, which our predictor
        # PodMonitor keeps (upstream leaves scraping off).
        inference_config["data"]["metricsAggregator"] = json.dumps(
            {"enableMetricAggregation": "false", "enablePrometheusScraping": "true"}, indent=2
        )
        # KServe's controller watches Knative Services in Serverless mode: it starts after them.
        install = ServiceInstall(
            self,
            ctx,
            manifests,
            module_label="kserve",
            after=knative_ready,
            after_for_custom_resources=cert_manager_ready,
        )
        # cert-manager and (Serverless) Knative are part of what KServe installs: what waits on
        # KServe waits on them too (the PodDefaults webhook's Certificate, workspaces).
        ready = [*cert_manager_ready, *knative_ready, *install.ready]
        if settings.cluster_serving_runtimes:
            runtimes = ServiceInstall(
                self,
                ctx,
                overlay_manifests(ctx, "kserve-runtimes"),
                module_label="kserve",
                after_for_custom_resources=[*install.ready, *install.custom_resources],
                crd_release="kserve-runtimes",
            )
            ready += runtimes.custom_resources
        self._team_rights(
            ctx,
            "kserve",
            {"serving.kserve.io": ["inferenceservices", "inferencegraphs", "servingruntimes", "trainedmodels"]},
            # What KServe makes of an InferenceService in Serverless mode, to read only.
            read_only=(
                {"serving.knative.dev": ["services", "configurations", "revisions", "routes"]} if serverless else None
            ),
        )
        namespaces = ("kserve", KNATIVE_NAMESPACE) if knative_ready else ("kserve",)
        self._finish(namespaces, {"ingressDomain": cluster_ingress.domain}, ready)


# Knative Serving's namespace and its cluster-local gateway (upstream's names).
KNATIVE_NAMESPACE = "knative-serving"
KNATIVE_LOCAL_GATEWAY = "knative-local-gateway"
# Upstream's name for the ingress gateway's Service (in the mesh namespace).
INGRESS_GATEWAY_SERVICE = "istio-ingressgateway"


def on_mesh_gateway(manifests: list[dict[str, Any]], mesh: MeshOutputs) -> None:
    """Knative Serving (changed in place) on the mesh's gateway: net-istio programs the mesh's
    Gateway for external routes, and the local gateway and its Service select the mesh's
    ingress gateway pods in the mesh's namespace."""
    gateway_namespace, _, gateway_name = mesh.gateway.partition("/")
    config_istio = find(manifests, "ConfigMap", "config-istio")
    config_istio["data"] = {key: value for key, value in config_istio["data"].items() if not key.startswith("gateway.")}
    config_istio["data"][f"gateway.{gateway_namespace}.{gateway_name}"] = (
        f"{INGRESS_GATEWAY_SERVICE}.{mesh.namespace}.svc.cluster.local"
    )
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        if manifest["kind"] == "Gateway" and name == KNATIVE_LOCAL_GATEWAY:
            manifest["spec"]["selector"] = dict(mesh.ingress_selector)
        if manifest["kind"] == "Service" and name == KNATIVE_LOCAL_GATEWAY:
            manifest["metadata"]["namespace"] = mesh.namespace
            manifest["spec"]["selector"] = dict(mesh.ingress_selector)


class Training(ServiceModule):
    """Distributed training: the training operator (v1 job kinds) or Trainer v2."""

    provides = TrainingOutputs

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:training:Training", name, None, opts)
        operator = ctx.resolved.config.modules.training.operator
        component = "training" if operator == "training-operator" else "trainer"
        install = ServiceInstall(self, ctx, overlay_manifests(ctx, component), module_label="training")
        ready = [*install.ready]
        if operator == "trainer":
            # TrainJobs name a training runtime: upstream's ship with the controller.
            runtimes = ServiceInstall(
                self,
                ctx,
                overlay_manifests(ctx, "trainer-runtimes"),
                module_label="training",
                after_for_custom_resources=install.ready,
                crd_release="training-runtimes",
            )
            ready += runtimes.custom_resources
        if operator == "trainer":
            # A TrainJob runs as a JobSet the controller makes.
            self._team_rights(
                ctx,
                "training",
                {"trainer.kubeflow.org": ["trainjobs", "trainingruntimes"]},
                read_only={"jobset.x-k8s.io": ["jobsets"]},
            )
        else:
            self._team_rights(
                ctx,
                "training",
                {"kubeflow.org": ["pytorchjobs", "tfjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs"]},
            )
        self._finish(tuple(install.namespaces), {}, ready)
