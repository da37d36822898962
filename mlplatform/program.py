"""The Pulumi program: validate the whole stack config, then compose the modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from mlplatform.cluster import simulated
from mlplatform.config import ConfigError, ResolvedConfig, resolve
from mlplatform.config.load import config_from_pulumi_env, display_path, stack_file
from mlplatform.modules.base import ModuleContext, crds_without_descriptions, declared_state_wins
from mlplatform.modules.core import Core
from mlplatform.modules.registry import MODULES, composition_order
from mlplatform.paths import STATE_ROOT
from mlplatform.stack_traces import keep_project_frames_only


def stack_config() -> dict[str, Any]:
    """Every config value of the running stack (secrets already decrypted by the engine)."""
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return config_from_pulumi_env(values)


def load_running_stack() -> ResolvedConfig:
    stack = pulumi.get_stack()
    source = display_path(stack_file(stack))
    try:
        return resolve(stack_config(), source=source, stack=stack, decrypted=True)
    except ConfigError as exc:
        # RunError stops the update with our message alone, before any resource is registered.
        raise pulumi.RunError(f"invalid stack config ({len(exc.problems)} problem(s)):\n{exc}") from None


def under_mocks() -> bool:
    """Running under the mock monitor (render, policy check, tests), not the engine."""
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    return isinstance(get_monitor(), MockMonitor)


def require_secrets(resolved: ResolvedConfig) -> None:
    """Stop before any resource is registered when a Secret value the enabled services are given
    is not set (services would otherwise wait for Secrets that never come). Under the mock
    monitor (render, tests) nothing is decrypted: values stand as named markers."""
    from mlplatform.stack_secrets import secret_needs

    if under_mocks():
        return
    missing = [need for need in secret_needs(resolved) if need.name not in resolved.secrets]
    if missing:
        lines = [f"  {need.name} (for {', '.join(need.uses)}): {need.set_command()}" for need in missing]
        generatable = [need.name for need in missing if need.generatable]
        if generatable:
            lines.append(
                f"`mlplatform secrets generate --stack {resolved.stack}` sets new values for "
                + ", ".join(generatable)
                + " (`mlplatform up` does so itself)"
            )
        raise pulumi.RunError("stack secrets not set:\n" + "\n".join(lines))


def default_kubeconfig() -> Path:
    return STATE_ROOT / "cluster" / "kubeconfig"


def target_kubeconfig(resolved: ResolvedConfig) -> str | None:
    """The stack's kubeconfig, else the local plane's where one is up."""
    cluster = resolved.config.cluster
    kubeconfig = cluster.kubeconfig or resolved.provider_settings.get("kubeconfig")
    if kubeconfig is None and default_kubeconfig().exists():
        kubeconfig = str(default_kubeconfig())
    return kubeconfig


def build_provider(resolved: ResolvedConfig) -> k8s.Provider:
    cluster = resolved.config.cluster
    kubeconfig = target_kubeconfig(resolved)
    return k8s.Provider(
        "kubernetes",
        kubeconfig=kubeconfig,
        context=cluster.context or resolved.provider_settings.get("context"),
        enable_server_side_apply=True,
        delete_unreachable=False,
    )


def main() -> dict[str, pulumi.ComponentResource]:
    """Compose the stack; returns the module components by name (tests inspect them)."""
    resolved = load_running_stack()
    require_secrets(resolved)
    keep_project_frames_only()
    if resolved.config.platform.crd_descriptions == "drop":
        pulumi.runtime.register_stack_transformation(crds_without_descriptions)
    # A render is what the stack applies anywhere; only the engine forces its objects and
    # adapts them to the plane.
    if not under_mocks():
        pulumi.runtime.register_stack_transformation(declared_state_wins)
        if simulated.targets_simulated_plane(target_kubeconfig(resolved)):
            pulumi.log.info("target is the local simulated plane: webhooks fail open, CRDs convert without webhooks")
            pulumi.runtime.register_stack_transformation(simulated.without_webhook_servers)
    provider = build_provider(resolved)
    ctx = ModuleContext(resolved=resolved, provider=provider)
    core = Core("platform", ctx)
    components: dict[str, pulumi.ComponentResource] = {"core": core}
    ctx.outputs["core"] = core.outputs
    for name in composition_order(resolved.config.modules.enabled_names()):
        component = MODULES[name](name, ctx, pulumi.ResourceOptions(depends_on=[core]))
        components[name] = component
        ctx.outputs[name] = component.outputs
    pulumi.export("environment", resolved.config.environment)
    pulumi.export("platformNamespace", core.outputs.namespace)
    pulumi.export("modules", ["core", *resolved.config.modules.enabled_names()])
    return components
