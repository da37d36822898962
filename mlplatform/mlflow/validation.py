"""MLflow rules a config must satisfy: what its auth, stores and exposure can honour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplatform.config.model import PlatformConfig

AddProblem = Callable[[tuple[Any, ...], str], None]


def azure_storage_account(endpoint: str | None) -> str | None:
    """The account of an endpoint like https://<account>.blob.core.windows.net."""
    if not endpoint:
        return None
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    account, _, rest = host.partition(".")
    return account if rest.startswith("blob.") and account else None


def mlflow_problems(config: PlatformConfig, add: AddProblem) -> None:
    settings = config.modules.mlflow
    if settings.auth == "oidc" and settings.oidc is None:
        add(
            ("modules", "mlflow", "oidc"),
            "required when auth is 'oidc' (allowed: a mapping with issuerUrl and clientId)",
        )
    if settings.auth != "oidc" and settings.oidc is not None:
        add(
            ("modules", "mlflow", "oidc"),
            f"only used when auth is 'oidc' (auth is {settings.auth!r}; allowed: remove it, or set auth: oidc)",
        )
    store = config.platform.object_store
    if settings.artifact_credentials == "workload-identity" and store.kind == "in-cluster":
        add(
            ("modules", "mlflow", "artifactCredentials"),
            "'workload-identity' needs a cloud object store; the in-cluster store takes keys (allowed: secret, or objectStore.kind s3, gcs, azure-blob)",
        )
    if settings.host and not settings.expose:
        add(
            ("modules", "mlflow", "host"),
            "only used when expose is true (allowed: remove host, or set expose: true)",
        )
    if not settings.enabled:
        return
    if config.platform.database.engine != "postgres":
        add(
            ("platform", "database", "engine"),
            f"{config.platform.database.engine!r} is not supported by the mlflow module, whose backend store is Postgres (allowed: postgres)",
        )
    if store.kind == "azure-blob" and not azure_storage_account(store.endpoint):
        add(
            ("platform", "objectStore", "endpoint"),
            f"{store.endpoint!r} does not name the storage account the mlflow module writes to (allowed: https://<account>.blob.core.windows.net)",
        )
