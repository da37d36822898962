"""MLflow tracking server and model registry from our chart (charts/mlflow).

The backend store follows platform.database (in-cluster Postgres or the managed one), the
artifact store follows platform.objectStore (in-cluster SeaweedFS or the cloud bucket), and
the environment's traits choose Route or Ingress and whether pods may fix their UIDs.
Credentials come from the stack's encrypted `mlplatform:secrets` (SECRET_SOURCES below): every
Secret the chart refers to is created here, and the engine refuses to start while one of its
values is not set (`required_secrets`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi

from mlplatform.charts import chart_metadata, helm_template
from mlplatform.config import ResolvedConfig
from mlplatform.config.model import MlflowModuleSettings
from mlplatform.mlflow.validation import azure_storage_account
from mlplatform.modules.base import Module, ModuleContext, add_team_egress, create_object, target_kube_version
from mlplatform.modules.contracts import MlflowOutputs, ScrapeTarget, TenancyOutputs
from mlplatform.modules.services import secret_marker, sha256_marker, with_credentials_checksum
from mlplatform.tenancy import network

CHART = "mlflow"
RELEASE = "mlflow"
SERVICE_PORT = 5000
# Annotation naming where a Secret's values come from (the stack's `mlplatform:secrets`).
SECRET_SOURCE_ANNOTATION = "mlplatform.io/secret-source"

DATABASE_SECRET = "mlflow-db"
ARTIFACTS_SECRET = "mlflow-artifacts"
ADMIN_SECRET = "mlflow-admin"
OIDC_SECRET = "mlflow-oidc"
# The Ingress host's certificate (cert-manager writes it where cluster.ingress.tls.issuer is set).
TLS_SECRET = "mlflow-tls"
# Kubernetes Secret -> {key in the Secret: name under mlplatform:secrets}.
SECRET_SOURCES: dict[str, dict[str, str]] = {
    DATABASE_SECRET: {"password": "databasePassword"},
    ARTIFACTS_SECRET: {"AWS_ACCESS_KEY_ID": "objectStoreAccessKey", "AWS_SECRET_ACCESS_KEY": "objectStoreSecretKey"},
    ADMIN_SECRET: {"password": "mlflowAdminPassword"},
    OIDC_SECRET: {"client-secret": "mlflowOidcClientSecret", "cookie-secret": "mlflowOidcCookieSecret"},
}
ADMIN_USERNAME = "admin"
# The basic-auth app's session key is sha256(FLASK_KEY_PREFIX + admin password).
FLASK_KEY_PREFIX = "mlflow-session:"
# In each team namespace: the service account InferenceServices load registered models with,
# its storage Secret, and the ConfigMap telling clients where MLflow and its store are.
MODEL_SERVING_ACCOUNT = "mlflow-models"
MODEL_SERVING_SECRET = "mlflow-models-storage"
CLIENT_CONFIG = "mlflow"

# Platform namespaces (by our role label) whose pods log runs and load models: teams (their
# notebooks, trials and model servers), KFP's steps (in `kubeflow`) and the platform's own.
CLIENT_ROLES = ("system", "team", "pipelines")
# Who reads the in-cluster object store directly (besides the server): model servers in team
# namespaces, loading a registered model's artifacts.
OBJECT_STORE_CLIENT_ROLES = ("team",)
OBJECT_STORE_PORT = 8333
# The login proxy's port with auth=oidc (the chart's auth.oidc.port): the only one clients reach.
OIDC_PROXY_PORT = 4180

_OBJECT_STORE_MODES = {"in-cluster": "in-cluster", "s3": "s3", "gcs": "gcs", "azure-blob": "azure-blob"}


def external_host(resolved: ResolvedConfig) -> str:
    settings = resolved.config.modules.mlflow
    return settings.host or f"mlflow.{resolved.config.cluster.ingress.domain}"


def chart_values(resolved: ResolvedConfig, labels: dict[str, str]) -> dict[str, Any]:
    """The chart's values for this stack: traits and settings only, never secret material."""
    config = resolved.config
    profile = resolved.profile
    settings: MlflowModuleSettings = config.modules.mlflow
    cluster = config.cluster
    store = config.platform.object_store
    database = config.platform.database
    route = settings.expose and cluster.ingress.style == "route" and profile.route_api

    values: dict[str, Any] = {
        "global": {"openshift": not profile.fixed_uids},
        "commonLabels": labels,
        "serviceAccount": {"annotations": dict(settings.service_account_annotations)},
        "server": {"replicas": settings.replicas},
        "service": {"port": SERVICE_PORT},
        "database": {
            "mode": "in-cluster" if database.kind == "in-cluster" else "external",
            "name": settings.database_name,
            "user": settings.database_user,
            "existingSecret": DATABASE_SECRET,
        },
        "artifacts": {
            "mode": _OBJECT_STORE_MODES[store.kind],
            "bucket": store.bucket or "mlflow",
            "path": settings.artifact_path if store.kind != "in-cluster" else "",
            "existingSecret": ARTIFACTS_SECRET if settings.artifact_credentials == "secret" else "",
        },
        "auth": {"mode": settings.auth},
        "migration": {"enabled": True, "helmHook": False},
        "route": {"enabled": bool(route)},
        "ingress": {"enabled": settings.expose and not route},
        "serviceMonitor": {"enabled": settings.service_monitor},
        "networkPolicy": {
            "enabled": True,
            "allowNamespaces": sorted(
                {*profile.ingress_namespaces, *profile.monitoring_namespaces, config.platform.namespace}
            ),
            "allowNamespaceSelectors": [
                {
                    "matchExpressions": [
                        {"key": "mlplatform.io/role", "operator": "In", "values": list(CLIENT_ROLES)},
                    ]
                }
            ],
            "objectStoreClientSelectors": [
                {
                    "matchExpressions": [
                        {"key": "mlplatform.io/role", "operator": "In", "values": list(OBJECT_STORE_CLIENT_ROLES)},
                    ]
                }
            ],
        },
    }
    if database.kind == "in-cluster":
        values["database"]["inCluster"] = {
            "storage": {"size": settings.database_storage, "storageClass": cluster.storage.default_class}
        }
    else:
        values["database"]["external"] = {"host": database.host, "port": database.port or 5432, "sslMode": "require"}
    if store.kind == "in-cluster":
        values["artifacts"]["inCluster"] = {
            "storage": {"size": settings.object_store_storage, "storageClass": cluster.storage.default_class}
        }
    elif store.kind == "s3":
        values["artifacts"]["s3"] = {"endpoint": store.endpoint or "", "region": store.region or ""}
    elif store.kind == "azure-blob":
        values["artifacts"]["azure"] = {"storageAccount": azure_storage_account(store.endpoint) or ""}
    if settings.auth == "basic":
        values["auth"]["basic"] = {"adminSecret": ADMIN_SECRET}
    elif settings.auth == "oidc" and settings.oidc is not None:
        values["auth"]["oidc"] = {
            "issuerUrl": settings.oidc.issuer_url,
            "clientId": settings.oidc.client_id,
            "existingSecret": OIDC_SECRET,
            "allowedGroups": list(settings.oidc.allowed_groups),
        }
    if route:
        values["route"]["host"] = external_host(resolved)
    elif settings.expose:
        # HTTPS only: the certificate's Secret beside the server, issued by the stack's issuer.
        tls = cluster.ingress.tls
        values["ingress"].update(
            host=external_host(resolved),
            className=cluster.ingress.class_name or "",
            tlsSecret=tls.secret_name or TLS_SECRET,
            clusterIssuer=tls.issuer or "",
        )
    return values


def artifact_store_uri(values: dict[str, Any]) -> str:
    artifacts = values["artifacts"]
    path = f"/{artifacts['path']}" if artifacts.get("path") else ""
    mode, bucket = artifacts["mode"], artifacts["bucket"]
    if mode in ("in-cluster", "s3"):
        return f"s3://{bucket}{path}"
    if mode == "gcs":
        return f"gs://{bucket}{path}"
    return f"wasbs://{bucket}@{artifacts['azure']['storageAccount']}.blob.core.windows.net{path}"


def required_secrets(resolved: ResolvedConfig) -> list[tuple[str, str]]:
    """(secret, what needs it) for the Secrets this stack's MLflow is given."""
    values = chart_values(resolved, {})
    return [
        (source, f"MLflow's Secret {name}")
        for name in wanted_secrets(values)
        for source in SECRET_SOURCES[name].values()
    ]


def wanted_secrets(values: dict[str, Any]) -> list[str]:
    """The Secrets the chart refers to with these values."""
    names = [DATABASE_SECRET]
    if values["artifacts"]["existingSecret"]:
        names.append(ARTIFACTS_SECRET)
    if values["auth"]["mode"] == "basic":
        names.append(ADMIN_SECRET)
    if values["auth"]["mode"] == "oidc":
        names.append(OIDC_SECRET)
    return names


class Mlflow(Module):
    outputs: MlflowOutputs
    provides = MlflowOutputs
    uses = (TenancyOutputs,)

    @staticmethod
    def scrape_targets(resolved: ResolvedConfig) -> list[ScrapeTarget]:
        return [
            ScrapeTarget(
                module="mlflow",
                kind="ServiceMonitor",
                name="mlflow",
                # Our chart's server Service (charts/mlflow), scraped on its /metrics.
                selector={
                    "matchLabels": {
                        "app.kubernetes.io/name": "mlflow",
                        "app.kubernetes.io/component": "server",
                        "app.kubernetes.io/part-of": "mlplatform",
                    }
                },
                endpoint={"port": "http", "path": "/metrics", "interval": "30s"},
                namespaces=(resolved.config.modules.mlflow.namespace,),
            )
        ]

    @staticmethod
    def required_secrets(resolved: ResolvedConfig) -> list[tuple[str, str]]:
        return required_secrets(resolved)

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplatform:mlflow:Mlflow", name, None, opts)
        resolved = ctx.resolved
        config = resolved.config
        settings = config.modules.mlflow
        namespace = settings.namespace
        labels = {**ctx.labels, "mlplatform.io/module": "mlflow"}

        depends: list[pulumi.Resource] = []
        if namespace != config.platform.namespace:
            depends.append(
                create_object(
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {
                            "name": namespace,
                            "labels": {**labels, **resolved.profile.namespace_labels, "mlplatform.io/role": "mlflow"},
                        },
                    },
                    ctx.child_opts(self),
                )
            )

        values = chart_values(resolved, labels)
        filled: dict[tuple[str, str], dict[str, Any]] = {}
        for secret_name in wanted_secrets(values):
            secret, filled[(namespace, secret_name)] = self._secret(ctx, secret_name, namespace, labels, depends)
            depends.append(secret)

        manifests = helm_template(CHART, RELEASE, namespace, values, kube_version=target_kube_version(resolved))
        for manifest in manifests:
            # Pods roll when a credential they read changes.
            with_credentials_checksum(manifest, filled, resolved.stack)
            create_object(manifest, ctx.child_opts(self, depends_on=depends))

        # The chart names its objects after the release when the release holds the chart name.
        service_name = RELEASE
        # Route and Ingress alike serve HTTPS only.
        exposed = values["route"]["enabled"] or values["ingress"]["enabled"]
        self.outputs = MlflowOutputs(
            namespace=namespace,
            service_name=service_name,
            port=SERVICE_PORT,
            tracking_uri=f"http://{service_name}.{namespace}.svc:{SERVICE_PORT}",
            artifact_store_uri=artifact_store_uri(values),
            external_url=f"https://{external_host(resolved)}" if exposed else None,
            auth=settings.auth,
            client_config_name=CLIENT_CONFIG,
        )
        self._team_egress(ctx, values, namespace, labels)
        self._model_serving_access(ctx, values, namespace, labels)
        self.register_outputs(
            {
                "trackingUri": self.outputs.tracking_uri,
                "artifactStoreUri": self.outputs.artifact_store_uri,
                "chartVersion": chart_metadata(CHART)["version"],
            }
        )

    def _team_egress(self, ctx: ModuleContext, values: dict[str, Any], namespace: str, labels: dict[str, str]) -> None:
        """Each team namespace's way out to the tracking server and, in-cluster, to the object
        store its model servers load registered models from."""
        oidc = values["auth"]["mode"] == "oidc"
        server_port = OIDC_PROXY_PORT if oidc else SERVICE_PORT
        rules = [([network.namespace_peer(namespace, chart_selector("server"))], (server_port,))]
        if values["artifacts"]["mode"] == "in-cluster":
            rules.append(([network.namespace_peer(namespace, chart_selector("objectstore"))], (OBJECT_STORE_PORT,)))
        add_team_egress(self, ctx, labels, "allow-mlflow", rules)

    def _model_serving_access(
        self, ctx: ModuleContext, values: dict[str, Any], namespace: str, labels: dict[str, str]
    ) -> None:
        """Per team: what a model server needs to load a model registered in MLflow. KServe's
        storage initializer reads `storageUri` (the registry's artifact store: MLFLOW_ARTIFACT_STORE
        + the path after `mlflow-artifacts:/`) with the credentials of the InferenceService's
        service account: `mlflow-models` holds the store's keys in a Secret annotated for KServe
        (S3-compatible stores), or the cloud identity MLflow's own account has."""
        tenancy = ctx.input(TenancyOutputs)
        if tenancy is None:
            return
        settings = ctx.resolved.config.modules.mlflow
        store = ctx.resolved.config.platform.object_store
        sources = SECRET_SOURCES[ARTIFACTS_SECRET]
        secrets = {source: ctx.resolved.secrets.get(source) for source in sources.values()}
        keyed = settings.artifact_credentials == "secret" and store.kind in ("in-cluster", "s3")
        endpoint = ""
        if store.kind == "in-cluster":
            endpoint = f"{RELEASE}-objectstore.{namespace}.svc:{OBJECT_STORE_PORT}"
        elif store.kind == "s3" and store.endpoint:
            endpoint = store.endpoint.split("://", 1)[-1]
        for team, team_namespace in tenancy.namespaces.items():
            opts = ctx.child_opts(self, depends_on=[tenancy.namespace_resources[team]])
            account: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": MODEL_SERVING_ACCOUNT, "namespace": team_namespace, "labels": labels},
            }
            if keyed:
                account["secrets"] = [{"name": MODEL_SERVING_SECRET}]
            else:
                account["metadata"]["annotations"] = dict(settings.service_account_annotations)
            create_object(account, opts)
            if keyed:
                annotations = {"serving.kserve.io/s3-usehttps": "0" if store.kind == "in-cluster" else "1"}
                if endpoint:
                    annotations["serving.kserve.io/s3-endpoint"] = endpoint
                if store.region:
                    annotations["serving.kserve.io/s3-region"] = store.region
                create_object(
                    secret_manifest(
                        MODEL_SERVING_SECRET,
                        team_namespace,
                        labels,
                        sources,
                        secret_string_data(sources, secrets),
                        annotations,
                    ),
                    opts,
                )
            create_object(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": CLIENT_CONFIG, "namespace": team_namespace, "labels": labels},
                    "data": {**self.outputs.client_config(), "MLFLOW_MODELS_SERVICE_ACCOUNT": MODEL_SERVING_ACCOUNT},
                },
                opts,
            )

    def _secret(
        self,
        ctx: ModuleContext,
        secret_name: str,
        namespace: str,
        labels: dict[str, str],
        depends: list[pulumi.Resource],
    ) -> tuple[pulumi.Resource, dict[str, Any]]:
        """The Secret from the stack's secrets, and its values. Where the engine has not decrypted
        a value (render, validate) the Secret holds a placeholder naming it, never ciphertext or
        clear text; the engine itself never runs without them (`required_secrets`)."""
        sources = SECRET_SOURCES[secret_name]
        secrets = {source: ctx.resolved.secrets.get(source) for source in sources.values()}
        string_data = secret_string_data(sources, secrets)
        if secret_name == ADMIN_SECRET:
            string_data["username"] = ADMIN_USERNAME
            # One session-signing key for every server worker, derived so there is no extra secret.
            password = secrets[sources["password"]]
            string_data["flask-secret-key"] = pulumi.Output.secret(
                hashlib.sha256(f"{FLASK_KEY_PREFIX}{password}".encode()).hexdigest()
                if password is not None
                else sha256_marker(FLASK_KEY_PREFIX, sources["password"])
            )
        secret = create_object(
            secret_manifest(secret_name, namespace, labels, sources, string_data),
            ctx.child_opts(self, depends_on=list(depends)),
        )
        return secret, string_data


def secret_string_data(sources: dict[str, str], secrets: dict[str, Any]) -> dict[str, Any]:
    """A Secret's keys from the stack's secrets, each marked secret for the engine; where the
    engine has not decrypted a value (render, validate), a placeholder naming it."""
    return {
        key: pulumi.Output.secret(secret_marker(source) if secrets[source] is None else secrets[source])
        for key, source in sources.items()
    }


def secret_manifest(
    name: str,
    namespace: str,
    labels: dict[str, str],
    sources: dict[str, str],
    string_data: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret filled from the stack's `mlplatform:secrets`, annotated with where each key comes from."""
    source_note = ", ".join(f"{key}=mlplatform:secrets.{source}" for key, source in sources.items())
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {**(annotations or {}), SECRET_SOURCE_ANNOTATION: source_note},
        },
        "type": "Opaque",
        "stringData": string_data,
    }


def chart_selector(component: str) -> dict[str, str]:
    """The pod labels our chart selects a component by (charts/mlflow/_helpers.tpl)."""
    return {
        "app.kubernetes.io/name": CHART,
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }
