"""The Pulumi program: validate the whole stack config, then compose the modules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from mlplatform import simulated_target as simulated
from mlplatform.config import ConfigError, ResolvedConfig
from mlplatform.config.load import config_from_pulumi_env, display_path, stack_file
from mlplatform.modules.base import (
    ModuleContext,
    cluster_services_not_awaited,
    crds_without_descriptions,
    declared_state_wins,
    target_kubeconfig,
    under_mocks,
)
from mlplatform.modules.contracts import CoreOutputs, GpuOutputs, MlflowOutputs, ServiceOutputs, TenancyOutputs
from mlplatform.modules.core import Core, SharedNamespaces
from mlplatform.modules.registry import MODULES, composition_order, declared_inputs, provider_of, scrape_targets
from mlplatform.stack_traces import keep_project_frames_only
from mlplatform.validation import resolve


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


# Between modules: measured on the Kubeflow services (docs/benchmarks.md), the first resource
# reaches the engine at 2 s instead of 5 s, for at most 50 ms per module.
_PAUSES = 5
_PAUSE_SECONDS = 0.01


def main() -> dict[str, pulumi.ComponentResource]:
    """Compose the stack; returns the module components by name (tests inspect them)."""
    components: dict[str, pulumi.ComponentResource] = {}
    for _ in _compose(components):
        pass
    return components


async def main_async() -> None:
    """Compose the stack as the engine runs it: after the core and after each module, the event
    loop runs, so the resources registered so far reach the engine, which creates them while the
    next module is built. (A program's body runs before the loop does: built in one go, the lab's
    first resource would wait for its last module, seconds of Python.)"""
    for _ in _compose({}):
        # A few short sleeps, not one bare yield: a registration is several round trips (the
        # parent's URN, the provider's), each finishing on a worker thread that needs the loop.
        for _ in range(_PAUSES):
            await asyncio.sleep(_PAUSE_SECONDS)


def _compose(components: dict[str, pulumi.ComponentResource]) -> Iterator[None]:
    """The stack's composition, pausing (yield) where registrations so far may go out; fills
    `components` with the module components by name."""
    resolved = load_running_stack()
    require_secrets(resolved)
    keep_project_frames_only()
    # Every CRD gets these, whether registered on its own or in a module's CRD release.
    crd_transformations = []
    if resolved.config.platform.crd_descriptions == "drop":
        pulumi.runtime.register_stack_transformation(crds_without_descriptions)
        crd_transformations.append(crds_without_descriptions)
    # A render is what the stack applies anywhere; only the engine forces its objects and
    # adapts them to the plane.
    if not under_mocks():
        pulumi.runtime.register_stack_transformation(declared_state_wins)
        pulumi.runtime.register_stack_transformation(cluster_services_not_awaited)
        if simulated.targets_simulated_plane(target_kubeconfig(resolved)):
            pulumi.log.info("target is the local simulated plane: webhooks fail open, CRDs convert without webhooks")
            pulumi.runtime.register_stack_transformation(simulated.without_webhook_servers)
            crd_transformations.append(simulated.without_webhook_servers)
    provider = build_provider(resolved)
    base_ctx = ModuleContext(resolved=resolved, provider=provider, crd_transformations=tuple(crd_transformations))
    core = Core("platform", base_ctx)
    yield
    # Namespaces several modules install into belong to neither: their own owner, present
    # whichever modules are on, so toggling one never moves another's objects.
    shared = SharedNamespaces("shared-namespaces", pulumi.ResourceOptions(depends_on=[core]))
    ctx = ModuleContext(
        resolved=resolved,
        provider=provider,
        shared_owner=shared,
        scrape_targets=tuple(scrape_targets(resolved)),
        crd_transformations=base_ctx.crd_transformations,
        crd_releases=base_ctx.crd_releases,
    )
    components["core"] = core
    ctx.outputs[CoreOutputs] = core.outputs
    for name in composition_order(resolved.config.modules.enabled_names()):
        module = MODULES[name]
        component = module(name, ctx.for_module(name, declared_inputs(name)), pulumi.ResourceOptions(depends_on=[core]))
        components[name] = component
        ctx.outputs[module.provides] = component.outputs
        yield
    shared.register_outputs({"namespaces": sorted(ctx.namespaces)})
    pulumi.export("environment", resolved.config.environment)
    pulumi.export("platformNamespace", core.outputs.namespace)
    pulumi.export("modules", ["core", *resolved.config.modules.enabled_names()])
    for key, value in stack_outputs(ctx.outputs).items():
        pulumi.export(key, value)


def stack_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """What a user of the stack reads with `pulumi stack output`: service endpoints, the GPU
    resource names each pool advertises, the teams' namespaces. Taken from the modules' typed
    outputs only, and present only for the modules the stack enables."""
    endpoints: dict[str, dict[str, str]] = {}
    exported: dict[str, Any] = {}
    for contract, module in outputs.items():
        if contract is CoreOutputs:
            continue
        name = provider_of(contract)
        if isinstance(module, MlflowOutputs):
            endpoints[name] = {"trackingUri": module.tracking_uri}
            if module.external_url:
                endpoints[name]["externalUrl"] = module.external_url
        elif isinstance(module, ServiceOutputs) and module.endpoints:
            endpoints[name] = dict(module.endpoints)
        elif isinstance(module, GpuOutputs):
            exported["gpuResources"] = {pool: sorted(res.per_node) for pool, res in module.pools.items()}
        elif isinstance(module, TenancyOutputs):
            exported["teamNamespaces"] = dict(module.namespaces)
    return {"endpoints": endpoints, **exported}
