"""The Pulumi program: validate the whole stack config, then compose the modules."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from mlplatform import simulated_target as simulated
from mlplatform.config import ConfigError, ResolvedConfig, team_stacks
from mlplatform.config.load import config_from_pulumi_env, display_path, stack_file
from mlplatform.modules import placement
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
from mlplatform.modules.placement import Placement
from mlplatform.modules.registry import MODULES, composition_order, declared_inputs, provider_of, scrape_targets
from mlplatform.paths import STACKS_DIR
from mlplatform.stack_traces import keep_project_frames_only
from mlplatform.validation import resolve


def stack_config() -> dict[str, Any]:
    """Every config value of the running stack (secrets already decrypted by the engine)."""
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return config_from_pulumi_env(values)


# Where a render (under mocks) found the stack file: its team or platform stack lies beside it.
_stacks_dir: Path | None = None


def use_stacks_dir(folder: Path | None) -> None:
    global _stacks_dir
    _stacks_dir = folder


def running_stacks_dir() -> Path:
    """The folder of the project's stack files: the render's, else the project's the engine runs
    (its Pulumi.yaml's stackConfigDir, in the program's working directory)."""
    if _stacks_dir is not None:
        return _stacks_dir
    project = Path.cwd() / "Pulumi.yaml"
    if project.is_file():
        folder = (yaml.safe_load(project.read_text()) or {}).get("stackConfigDir")
        if folder:
            return Path.cwd() / folder
    return STACKS_DIR


def load_running_stack() -> ResolvedConfig:
    stack = pulumi.get_stack()
    folder = running_stacks_dir()
    source = display_path(stack_file(stack, folder))
    values = stack_config()
    try:
        platform_raw = None
        if team_stacks.is_team_stack(values) and not under_mocks():
            platform_raw = platform_stack_values(values, stack, folder)
        return resolve(values, source=source, stack=stack, decrypted=True, stacks_dir=folder, platform_raw=platform_raw)
    except ConfigError as exc:
        # RunError stops the update with our message alone, before any resource is registered.
        raise pulumi.RunError(f"invalid stack config ({len(exc.problems)} problem(s)):\n{exc}") from None


def platform_stack_values(values: dict[str, Any], stack: str, stacks_dir: Path) -> dict[str, Any]:
    """A team stack's platform config as the engine would hand it to the platform's program
    (secrets decrypted), after checking that the platform stack was applied listing this one:
    its objects (CRDs, roles, controllers) are what the team's wait for."""
    from mlplatform.stack_secrets import checkout_config_file

    platform = str(values.get(team_stacks.PLATFORM_KEY))
    # Where `mlplatform up` keeps the platform's config in this checkout (a local plane's
    # generated secrets), the CLI reads it there.
    local = checkout_config_file(platform, stacks_dir)
    config_file = ["--config-file", str(local)] if local else []
    with ThreadPoolExecutor(max_workers=2) as pool:
        config = pool.submit(_pulumi_json, "config", "--show-secrets", "--json", "--stack", platform, *config_file)
        outputs = pool.submit(_pulumi_json, "stack", "output", "--json", "--stack", platform)
        config_values, applied = config.result(), outputs.result()
    if stack not in (applied.get("teamStacks") or []):
        raise pulumi.RunError(
            f"platform stack {platform!r} has not been applied with team stack {stack!r} listed "
            f"(modules.tenancy.teamStacks): run `pulumi up --stack {platform}` first"
        )
    return config_from_pulumi_env({key: entry.get("value") for key, entry in config_values.items()})


def _pulumi_json(*args: str) -> dict[str, Any]:
    # As `mlplatform up` reads a per-checkout file written before its salt was known.
    env = {"PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER": "true", **os.environ}
    proc = subprocess.run(["pulumi", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise pulumi.RunError(f"`pulumi {' '.join(args)}` failed: {detail[0]}")
    return json.loads(proc.stdout or "{}")


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
    where = placement_of(resolved)
    placement.use(where)
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
    outputs = stack_outputs(ctx.outputs)
    if where is not None and "teamNamespaces" in outputs:
        # The teams this stack holds.
        outputs["teamNamespaces"] = {t: ns for t, ns in outputs["teamNamespaces"].items() if where.holds_team(t)}
    if resolved.is_team_stack:
        # A team stack: its teams; the platform's outputs are the platform stack's.
        pulumi.export("platformStack", resolved.platform_stack)
        outputs = {"teamNamespaces": outputs.get("teamNamespaces") or {}}
    elif resolved.config.modules.tenancy.team_stacks:
        # What a team stack checks before it applies: the platform was applied listing it.
        pulumi.export("teamStacks", list(resolved.config.modules.tenancy.team_stacks))
    for key, value in outputs.items():
        pulumi.export(key, value)


def placement_of(resolved: ResolvedConfig) -> Placement | None:
    """None where the stack holds every object of its config (no team stacks)."""
    if not resolved.team_stacks and not resolved.is_team_stack:
        return None
    tenancy = resolved.config.modules.tenancy
    return Placement(
        stack=resolved.stack,
        platform_stack=resolved.platform_stack,
        team_stack=dict(resolved.team_stacks),
        namespace_stack={tenancy.team_namespace(team): stack for team, stack in resolved.team_stacks.items()},
    )


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
