"""Cross-field rules of the ML services' settings, reported like every other config problem."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplatform.config.model import PlatformConfig
from mlplatform.tenancy.validation import offered_gpu_resources

AddProblem = Callable[[tuple[Any, ...], str], None]


def ml_services_problems(config: PlatformConfig, add: AddProblem) -> None:
    modules = config.modules
    kubeflow_db = config.platform.kubeflow_database
    if kubeflow_db is not None:
        loc = ("platform", "kubeflowDatabase")
        if kubeflow_db.kind == "managed" and not kubeflow_db.host:
            add((*loc, "host"), "required when kubeflowDatabase.kind is 'managed' (allowed: the database's host name)")
        if kubeflow_db.kind == "in-cluster" and kubeflow_db.host:
            add((*loc, "host"), "not allowed when kubeflowDatabase.kind is 'in-cluster' (allowed: set kind: managed)")
    effective = kubeflow_db or config.platform.database
    if (
        (modules.pipelines.enabled or modules.katib.enabled)
        and effective.kind == "managed"
        and effective.engine != "mysql"
    ):
        where = ("platform", "kubeflowDatabase") if kubeflow_db else ("platform", "database")
        add(
            (*where, "engine"),
            f"{effective.engine!r}: Kubeflow Pipelines and Katib need MySQL on a managed database "
            "(allowed: mysql; set platform.kubeflowDatabase to give them their own)",
        )
    if modules.pipelines.enabled and modules.pipelines.multi_user:
        # Runs execute in the teams' Profile namespaces, the UI sits behind the mesh's gateway
        # and the API server trusts the user header only the identity module's gateway sets.
        missing = [m for m in ("workspaces", "mesh", "identity") if not getattr(modules, m).enabled]
        if missing:
            add(
                ("modules", "pipelines", "multiUser"),
                f"multi-user Kubeflow Pipelines requires workspaces, mesh and identity ({', '.join(missing)} "
                f"disabled; allowed: enable {', '.join(missing)}, or set multiUser: false)",
            )
    kserve = modules.kserve
    serverless = kserve.enabled and kserve.deployment_mode == "Serverless"
    if serverless and kserve.knative == "install" and not modules.mesh.enabled:
        add(
            ("modules", "kserve", "deploymentMode"),
            "'Serverless' with knative: install needs the mesh: Knative Serving routes through the mesh's "
            "gateway (allowed: enable modules.mesh, set knative: existing for a cluster's own Knative, or "
            "deploymentMode: RawDeployment)",
        )
    if modules.notebooks.enabled and not modules.tenancy.enabled:
        add(("modules", "notebooks", "enabled"), "notebooks run in team namespaces (allowed: enable modules.tenancy)")
    if modules.workspaces.enabled:
        for index, team in enumerate(modules.tenancy.teams):
            if not team.owner:
                add(
                    ("modules", "tenancy", "teams", index, "owner"),
                    f"team {team.name!r} has no owner: each team is a Kubeflow Profile where modules.workspaces "
                    "is on (allowed: the owner's email as the identity provider signs them in)",
                )
        if not modules.kserve.enabled:
            add(
                ("modules", "workspaces", "enabled"),
                "the PodDefaults webhook takes its certificate from cert-manager, which comes with KServe "
                "(allowed: enable modules.kserve, with certManager install or existing)",
            )
    offered = offered_gpu_resources(config)
    profiles = [(("modules", "notebooks", "gpuProfile"), modules.notebooks.gpu_profile)]
    images = [(("modules", "notebooks", "allowedImages"), modules.notebooks.allowed_images)]
    for index, team in enumerate(modules.tenancy.teams):
        if team.notebooks is not None:
            loc = ("modules", "tenancy", "teams", index, "notebooks")
            profiles.append(((*loc, "gpuProfile"), team.notebooks.gpu_profile))
            images.append(((*loc, "allowedImages"), team.notebooks.allowed_images or []))
    for loc, profile in profiles:
        if modules.notebooks.enabled and profile is not None and profile.resource not in offered:
            allowed = ", ".join(sorted(offered)) or "none: no node pool offers GPUs"
            add((*loc, "resource"), f"{profile.resource!r} is not offered by any node pool (allowed: {allowed})")
    root = modules.pipelines.default_pipeline_root
    if root is not None and not root.startswith(("s3://", "gs://", "minio://", "azblob://")):
        add(
            ("modules", "pipelines", "defaultPipelineRoot"),
            f"{root!r} is not an object store URI (allowed: s3://, gs://, minio://, azblob://<bucket>/<path>)",
        )
    for loc, listed in images:
        for index, image in enumerate(listed):
            name, _, tag = image.rpartition(":")
            if "@sha256:" not in image and (not name or not tag or "/" in tag or tag == "latest"):
                add(
                    (*loc, index),
                    f"{image!r} is not pinned (allowed: <image>:<tag> other than latest, or <image>@sha256:<digest>)",
                )


def identity_problems(config: PlatformConfig, openshift_oauth: bool, add: AddProblem) -> None:
    """Sign-in settings that fit the provider: the oidc block with provider oidc and only then,
    and the OpenShift provider only where the cluster runs OpenShift's OAuth server."""
    identity = config.modules.identity
    loc = ("modules", "identity")
    if identity.enabled and identity.provider == "oidc" and identity.oidc is None:
        add((*loc, "oidc"), "required when provider is 'oidc' (allowed: a mapping with issuerUrl and clientId)")
    if identity.oidc is not None and identity.provider != "oidc":
        add(
            (*loc, "oidc"),
            f"only allowed when provider is 'oidc' (provider is {identity.provider!r}; allowed: remove it, "
            "or set provider: oidc)",
        )
    if identity.enabled and identity.provider == "openshift" and not openshift_oauth:
        add(
            (*loc, "provider"),
            f"'openshift' signs users in with OpenShift's OAuth server, which the {config.environment} "
            "environment does not run (allowed: dex, oidc)",
        )
