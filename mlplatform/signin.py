"""Where people sign in: what `mlplatform up` tells the person who ran it, from the stack's
config alone (the identity module serves the same host)."""

from __future__ import annotations

from typing import Any

from mlplatform.stack_secrets import SECRETS_KEY

# The UIs behind the gateway and the paths upstream's dashboard links them at.
UI_PATHS = {
    "central dashboard": "/",
    "notebooks (Jupyter web app)": "/jupyter/",
    "volumes": "/volumes/",
    "pipelines (KFP UI)": "/pipeline/",
}


def dashboard_host(config: Any) -> str:
    """The host users open: modules.identity.host, else kubeflow.<cluster.ingress.domain>."""
    return config.modules.identity.host or f"kubeflow.{config.cluster.ingress.domain}"


def sign_in_url(config: Any) -> str:
    return f"https://{dashboard_host(config)}/"


def sign_in_lines(config: Any, password_command: str) -> list[str]:
    """What a person needs to sign in to the stack just applied; none where sign-in is off."""
    identity = config.modules.identity
    if not identity.enabled:
        return []
    url = sign_in_url(config)
    lines = [f"sign in at {url}"]
    if identity.provider == "dex":
        lines.append(f"  user: {identity.test_user} (Dex, the stack's static user)")
        lines.append(f"  password: {password_command}")
    elif identity.provider == "openshift":
        lines.append("  with your OpenShift account, as to the web console (the cluster's OAuth server)")
    else:
        lines.append(f"  with your account at {identity.oidc.issuer_url if identity.oidc else 'the OIDC issuer'}")
    modules = config.modules
    shown = {
        "central dashboard": modules.workspaces.enabled,
        "notebooks (Jupyter web app)": modules.workspaces.enabled,
        "volumes": modules.workspaces.enabled,
        "pipelines (KFP UI)": modules.pipelines.enabled and modules.pipelines.multi_user,
    }
    for ui, path in UI_PATHS.items():
        if shown[ui]:
            lines.append(f"  {ui}: {url.rstrip('/')}{path}")
    return lines


def password_command(stack: str, config_args: list[str]) -> str:
    """How the person reads the Dex user's password (kept encrypted in the stack's config)."""
    words = ["pulumi", "config", "get", "--path", f"{SECRETS_KEY}.identityTestUserPassword", "--stack", stack]
    return " ".join([*words, *config_args])
