"""The rules a stack's config must follow beyond its form: between fields, across modules, and
against the lock and the mirror. mlplatform.config parses and types; this layer judges what it
typed, with each capability's own rules beside that capability (gpu/, tenancy/, services/,
monitoring/, mlflow/ `validation.py`). `load_stack` and `resolve` are the one way in: parse,
then judge, every problem reported at once."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlplatform.config import rules, team_stacks
from mlplatform.config.load import (
    ResolvedConfig,
    display_path,
    key_path,
    parse,
    read_stack_file,
    repo_path,
    stack_file,
    stack_location,
)
from mlplatform.config.model import CLOUD_PROVIDERS, PlatformConfig
from mlplatform.config.problems import ConfigError, Problem
from mlplatform.config.rules import shown
from mlplatform.environments import Profile
from mlplatform.gpu.pools import DEFAULT_NAMESPACES
from mlplatform.gpu.validation import gpu_problems
from mlplatform.lock import LockError, load_lock
from mlplatform.mlflow.validation import mlflow_problems
from mlplatform.modules.registry import available_modules, module_needs
from mlplatform.monitoring.validation import monitoring_problems
from mlplatform.paths import STACKS_DIR
from mlplatform.services.validation import identity_problems, ml_services_problems
from mlplatform.tenancy.validation import tenancy_problems
from mlplatform.upstream import UPSTREAM_NAMESPACES, upstream_sources

# What every command exits with when a stack does not validate.
EXIT_INVALID = 2


def load_or_report(stack: str) -> ResolvedConfig | None:
    """The validated stack, or None after printing its problems (callers exit EXIT_INVALID)."""
    try:
        return load_stack(stack)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def load_stack(stack_or_path: str, mirror_override: str | None = None) -> ResolvedConfig:
    """Resolve a stack by name (stacks/Pulumi.<name>.yaml) or by a path to a stack file (its
    team stacks, or its platform stack, beside it)."""
    path, stack = stack_location(stack_or_path)
    raw = read_stack_file(path)
    return resolve(raw, source=display_path(path), stack=stack, mirror_override=mirror_override, stacks_dir=path.parent)


def resolve(
    raw: Mapping[str, Any],
    source: str,
    stack: str,
    mirror_override: str | None = None,
    decrypted: bool = False,
    stacks_dir: Path = STACKS_DIR,
    platform_raw: Mapping[str, Any] | None = None,
) -> ResolvedConfig:
    """The typed, judged config; ConfigError carries every problem of form and of rule.

    A team stack (config/team_stacks.py) resolves to its platform's config with every team
    stack's teams: `platform_raw` gives the platform's values (the engine's, decrypted), else
    its file is read from `stacks_dir`, as are the other team stacks'."""
    if not team_stacks.is_team_stack(raw):
        return _resolve_platform(raw, source, stack, stack, {}, mirror_override, decrypted, stacks_dir)
    own = team_stacks.read_team_stack(raw, source, stack)
    platform_path = stack_file(own.platform, stacks_dir)
    platform_source = display_path(platform_path)
    if platform_raw is None:
        platform_raw = read_stack_file(platform_path)
    if team_stacks.is_team_stack(platform_raw):
        raise ConfigError(
            [
                Problem(
                    source,
                    team_stacks.PLATFORM_KEY,
                    f"{own.platform!r} is itself a team stack (allowed: a platform stack)",
                )
            ]
        )
    return _resolve_platform(
        platform_raw, platform_source, own.platform, stack, {stack: own}, mirror_override, decrypted, stacks_dir
    )


def _resolve_platform(
    raw: Mapping[str, Any],
    source: str,
    platform: str,
    running: str,
    given: dict[str, team_stacks.TeamStack],
    mirror_override: str | None,
    decrypted: bool,
    stacks_dir: Path,
) -> ResolvedConfig:
    resolved, problems = parse(raw, source, platform, mirror_override=mirror_override, decrypted=decrypted)
    if resolved is None:
        raise ConfigError(problems)
    tenancy = resolved.config.modules.tenancy
    listed = list(tenancy.team_stacks)
    teams_key = "mlplatform:modules.tenancy.teamStacks"
    if running != platform and running not in listed:
        allowed = f"add {running!r} there" + (f"; it lists {', '.join(listed)}" if listed else "")
        problems.append(Problem(source, teams_key, f"does not list team stack {running!r} (allowed: {allowed})"))
        raise ConfigError(problems)
    if not listed:
        # Problems of form and of rule, all at once.
        problems = [*problems, *cross_field_problems(resolved.config, resolved.profile, source)]
        if problems:
            raise ConfigError(problems)
        return dataclasses.replace(resolved, stack=running, platform_stack=platform)
    if not tenancy.enabled:
        problems.append(Problem(source, teams_key, "team stacks hold teams: enable modules.tenancy"))
    if len(set(listed)) != len(listed) or platform in listed:
        problems.append(Problem(source, teams_key, f"{listed} (allowed: other stacks than this one, each once)"))
    if problems:
        raise ConfigError(problems)
    found = [given.get(name) or _read_team_stack(stacks_dir, name, platform) for name in listed]
    merged, problems = parse(
        team_stacks.with_teams(raw, found), source, platform, mirror_override=mirror_override, decrypted=decrypted
    )
    own = team_stacks.own_team_count(raw)
    if merged is not None:
        problems = [*problems, *cross_field_problems(merged.config, merged.profile, source)]
    problems = team_stacks.attributed(problems, own, found)
    if merged is None or problems:
        raise ConfigError(problems)
    names = [team.name for team in merged.config.modules.tenancy.teams]
    placement: dict[str, str] = {}
    index = own
    for each in found:
        for name in names[index : index + len(each.teams)]:
            placement[name] = each.stack
        index += len(each.teams)
    return dataclasses.replace(merged, stack=running, platform_stack=platform, team_stacks=placement)


def _read_team_stack(stacks_dir: Path, name: str, platform: str) -> team_stacks.TeamStack:
    path = stack_file(name, stacks_dir)
    raw = read_stack_file(path)
    source = display_path(path)
    if not team_stacks.is_team_stack(raw):
        raise ConfigError(
            [
                Problem(
                    source,
                    team_stacks.PLATFORM_KEY,
                    f"missing: listed as a team stack of {platform!r} (allowed: {platform!r})",
                )
            ]
        )
    found = team_stacks.read_team_stack(raw, source, name)
    if found.platform != platform:
        raise ConfigError(
            [
                Problem(
                    source,
                    team_stacks.PLATFORM_KEY,
                    f"{found.platform!r}, but {platform!r} lists this stack among its team stacks (allowed: {platform!r})",
                )
            ]
        )
    return found


def cross_field_problems(config: PlatformConfig, profile: Profile, source: str) -> list[Problem]:
    problems: list[Problem] = []

    def add(loc: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(source, key_path(loc), message))

    if config.environment == "cloud" and config.cloud is None:
        add(
            ("cloud",),
            "required when environment is cloud (allowed: a mapping with provider: " + ", ".join(CLOUD_PROVIDERS) + ")",
        )
    if config.environment != "cloud" and config.cloud is not None:
        add(("cloud",), f"only allowed when environment is cloud (environment is {config.environment!r})")

    cluster = config.cluster
    seen: dict[str, int] = {}
    for index, pool in enumerate(cluster.node_pools):
        if pool.name in seen:
            add(
                ("cluster", "nodePools", index, "name"),
                f"duplicate node pool name {pool.name!r} (also at nodePools[{seen[pool.name]}]; allowed: unique names)",
            )
        seen.setdefault(pool.name, index)
    if cluster.storage.default_class not in cluster.storage.classes:
        add(
            ("cluster", "storage", "defaultClass"),
            f"{cluster.storage.default_class!r} is not among the storage classes (allowed: {', '.join(cluster.storage.classes)})",
        )
    if len(set(cluster.storage.classes)) != len(cluster.storage.classes):
        add(("cluster", "storage", "classes"), "lists a storage class twice (allowed: unique names)")
    if cluster.ingress.style == "route" and not profile.route_api:
        add(
            ("cluster", "ingress", "style"),
            f"'route' needs the OpenShift Route API, which the {profile.name} environment does not serve (allowed: ingress)",
        )

    store = config.platform.object_store
    if store.kind != "in-cluster" and not store.bucket:
        add(
            ("platform", "objectStore", "bucket"),
            f"required when objectStore.kind is {store.kind!r} (allowed: an existing bucket name)",
        )
    if store.kind == "in-cluster" and (store.bucket or store.endpoint):
        add(
            ("platform", "objectStore", "kind"),
            "'in-cluster' runs its own store: bucket and endpoint are not allowed with it (allowed: s3, gcs, azure-blob to use an external bucket)",
        )
    ml_services_problems(config, add)
    # OpenShift's OAuth server comes with the Route API: both are OpenShift's.
    identity_problems(config, profile.route_api, add)
    database = config.platform.database
    if database.kind == "managed" and not database.host:
        add(
            ("platform", "database", "host"),
            "required when database.kind is 'managed' (allowed: the managed database's host name)",
        )
    if database.kind == "in-cluster" and database.host:
        add(
            ("platform", "database", "host"),
            "not allowed when database.kind is 'in-cluster' (allowed: set kind: managed to use an external database)",
        )
    if config.platform.crd_install == "release" and config.platform.crd_descriptions == "keep":
        # Helm keeps each release's record, every CRD twice (chart and manifest) compressed, in
        # one Secret of at most 1 MiB; with their descriptions the monitoring CRDs take about
        # 1.2 MiB (the training CRDs 0.9).
        add(
            ("platform", "crdInstall"),
            "'release' cannot install CRDs with their descriptions (crdDescriptions: 'keep'): Helm's record "
            "of a release would exceed the 1 MiB a Secret holds (allowed: 'objects' with 'keep', or "
            "crdDescriptions: 'drop' with 'release')",
        )
    namespace_problems(config, profile, add)

    gpu_problems(config, config.cloud.provider if config.cloud else None, profile.node_pool_label, add)
    tenancy_problems(config, add)
    mlflow_problems(config, add)
    monitoring_problems(config, profile, add)

    available = available_modules()
    enabled = set(config.modules.enabled_names())
    needs = module_needs()
    for name in config.modules.enabled_names():
        if name not in available:
            built = ", ".join(sorted(available)) or "none yet"
            add(
                ("modules", name, "enabled"),
                f"module {name!r} is not part of this release yet (allowed: true only for built modules: {built})",
            )
        for dependency in needs.get(name, ()):
            if dependency not in enabled:
                add(
                    ("modules", name, "enabled"),
                    f"module {name!r} needs module {dependency!r}, which is disabled (allowed: enable {dependency} too, or disable {name})",
                )

    lock_path = repo_path(config.versions.lock)
    try:
        load_lock(lock_path)
    except LockError as exc:
        add(("versions", "lock"), f"{config.versions.lock!r} is not a usable lock file: {exc}")
    else:
        _pin_problems(config, lock_path, add)
    if config.mirror.path is not None:
        mirror = repo_path(config.mirror.path)
        if not mirror.is_dir():
            add(
                ("mirror", "path"),
                f"{config.mirror.path!r} is not a folder (allowed: a folder laid out like the upstream mirror, relative to the project root or absolute)",
            )
    return problems


def namespace_problems(config: PlatformConfig, profile: Profile, add) -> None:
    """Every namespace the stack names is one of its own: not Kubernetes' or OpenShift's, not
    the environment's ingress or DNS, not an upstream component's, and used by one owner only."""
    modules = config.modules
    owners: list[tuple[tuple[Any, ...], str, str]] = [
        (("platform", "namespace"), config.platform.namespace, "the platform (platform.namespace)")
    ]
    if modules.gpu.enabled:
        gpu_namespace = modules.gpu.namespace or DEFAULT_NAMESPACES[modules.gpu.install]
        owners.append((("modules", "gpu", "namespace"), gpu_namespace, "the gpu module"))
    if modules.mlflow.enabled:
        owners.append((("modules", "mlflow", "namespace"), modules.mlflow.namespace, "the mlflow module"))
    if modules.monitoring.enabled:
        owners.append((("modules", "monitoring", "namespace"), modules.monitoring.namespace, "the monitoring module"))
    if modules.tenancy.enabled:
        for index, team in enumerate(modules.tenancy.teams):
            owners.append(
                (
                    ("modules", "tenancy", "teams", index, "name"),
                    modules.tenancy.team_namespace(team.name),
                    f"team {team.name!r}",
                )
            )
    ours = {namespace for _, namespace, _ in owners}
    environment = {n: "the environment's ingress" for n in profile.ingress_namespaces}
    environment[profile.dns.namespace] = "the cluster DNS"
    environment.update({n: "the environment's monitoring" for n in profile.monitoring_namespaces if n not in ours})
    first: dict[str, str] = {}
    for loc, namespace, owner in owners:
        if rules.reserved_namespace(namespace):
            add(
                loc,
                f"namespace {shown(namespace)} is reserved by Kubernetes or OpenShift (allowed: a namespace of our "
                "own, not default, kube-* or openshift*)",
            )
        elif namespace in UPSTREAM_NAMESPACES:
            add(
                loc,
                f"namespace {shown(namespace)} belongs to {UPSTREAM_NAMESPACES[namespace]} (allowed: a namespace "
                f"of our own, not {', '.join(sorted(UPSTREAM_NAMESPACES))})",
            )
        elif namespace in environment:
            add(
                loc,
                f"namespace {shown(namespace)} belongs to {environment[namespace]} (allowed: a namespace of our own)",
            )
        elif namespace in first:
            add(
                loc,
                f"namespace {shown(namespace)} is also {first[namespace]}'s (allowed: a namespace no other module "
                "or team uses)",
            )
        first.setdefault(namespace, owner)


def _pin_problems(config: PlatformConfig, lock_path: Path, add) -> None:
    sources = upstream_sources(lock_path)
    for component, version in config.versions.pins.items():
        if component not in sources:
            add(
                ("versions", "pins", component),
                f"{component!r} is not an upstream component of the lock (allowed: {', '.join(sources)})",
            )
        elif version not in sources[component].versions:
            add(
                ("versions", "pins", component),
                f"{version!r} is not a version of {component} in the lock (allowed: {', '.join(sources[component].versions)})",
            )
