"""`mlplatform policy check`: the CrossGuard pack run offline, without the Pulumi engine.

The stack's program runs under Pulumi mocks (as `mlplatform render` does) through a monitor
that also records each resource's parent and dependencies; every policy's `validate` then
runs over those records with the environment's pack config (policies/config.<env>.json),
as `pulumi preview --policy-pack policies` would.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from mlplatform import progress
from mlplatform.paths import REPO_ROOT
from mlplatform.render import RecordingMocks, stack_config_strings, use_mocks

PACK_DIR = REPO_ROOT / "policies"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")


def import_policies():
    """The pack's policy package (it lives in the pack folder, which the engine runs as is)."""
    if str(PACK_DIR) not in sys.path:
        sys.path.insert(0, str(PACK_DIR))
    import mlplatform_policies
    from mlplatform_policies import objects

    return mlplatform_policies, objects


def pack_config_path(environment: str) -> Path:
    return PACK_DIR / f"config.{environment}.json"


@dataclass(frozen=True)
class Recorded:
    urn: str
    typ: str
    name: str
    custom: bool
    props: dict[str, Any]
    parent: str | None
    dependencies: tuple[str, ...]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, keeping what the engine would hand a policy pack: parent and dependencies,
    secrets still marked as secrets."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.recorded: list[Recorded] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.recorded.append(
                Recorded(
                    urn=response.urn,
                    typ=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    props=_with_secret_markers(rpc.deserialize_properties(request.object, keep_unknowns=True)),
                    parent=request.parent or None,
                    dependencies=tuple(request.dependencies),
                )
            )
        return response


# Fields whose secretness a policy judges; elsewhere a secret is read as its value.
SECRET_FIELDS = ("data", "stringData")


def _with_secret_markers(props: Mapping[str, Any]) -> dict[str, Any]:
    """Wire secrets in Secret fields as the policy SDK's Secret; all else plain."""
    from pulumi_policy import Secret

    return {
        key: Secret(_plain(value)) if key in SECRET_FIELDS and rpc.is_rpc_secret(value) else _plain(value)
        for key, value in props.items()
    }


def _plain(value: Any) -> Any:
    """Secrets unwrapped; integral doubles (the wire format's numbers) back to integers."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def record_stack(stack: str, raw_config: Mapping[str, Any]) -> list[Recorded]:
    """Every resource the stack's program registers (components included), in registration order."""
    from mlplatform.program import main

    monitor = RecordingMonitor(RecordingMocks())
    use_mocks(monitor.mocks, stack, monitor)
    pulumi.runtime.set_all_config(stack_config_strings(raw_config))

    @pulumi.runtime.test
    def program() -> None:
        main()

    program()
    return monitor.recorded


def records_from_manifests(folder: Path) -> list[Recorded]:
    """Plain manifests (a GitOps export, test fixtures) as resources without dependencies."""
    records: dict[str, Recorded] = {}
    for path in sorted(folder.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") == "Kustomization":
                continue
            api_version, kind = document["apiVersion"], document["kind"]
            group, _, version = api_version.rpartition("/")
            typ = f"kubernetes:{group or 'core'}/{version}:{kind}"
            meta = document.get("metadata") or {}
            name = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta.get("name", "")
            urn = f"urn:pulumi:manifests::mlplatform::{typ}::{name}"
            # One object in several files (a shared namespace) is one resource.
            records.setdefault(urn, Recorded(urn, typ, name, True, document, None, ()))
    return list(records.values())


def policy_resources(records: list[Recorded]) -> list[Any]:
    """The records as the engine gives them to stack policies: parents and dependencies linked."""
    from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions

    by_urn: dict[str, PolicyResource] = {}
    for record in records:
        options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], record.parent)
        by_urn[record.urn] = PolicyResource(
            record.typ, record.props, record.urn, record.name, options, None, None, [], {}
        )
    for record in records:
        resource = by_urn[record.urn]
        resource.parent = by_urn.get(record.parent) if record.parent else None
        resource.dependencies = [by_urn[u] for u in record.dependencies if u in by_urn]
    return list(by_urn.values())


def load_pack_config(path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """policy name -> (enforcement level, properties), as the engine reads --policy-pack-config."""
    raw = json.loads(path.read_text())
    policies, _ = import_policies()
    names = {p.name for p in policies.POLICIES}
    unknown = sorted(set(raw) - names - {"all"})
    if unknown:
        raise ValueError(f"{path}: unknown policies {', '.join(unknown)} (allowed: {', '.join(sorted(names))})")
    result = {}
    for policy in policies.POLICIES:
        entry = raw.get(policy.name, {})
        if isinstance(entry, str):
            entry = {"enforcementLevel": entry}
        # The engine's precedence: the policy's own entry, then "all", then the level in the code.
        level = entry.get("enforcementLevel") or raw.get("all") or policy.enforcement_level.value
        if level not in LEVELS:
            raise ValueError(f"{path}: {policy.name}: enforcementLevel {level!r} (allowed: {', '.join(LEVELS)})")
        properties = {k: v for k, v in entry.items() if k != "enforcementLevel"}
        schema = policy.config_schema.properties if policy.config_schema else {}
        extra = sorted(set(properties) - set(schema))
        if extra:
            raise ValueError(f"{path}: {policy.name}: unknown properties {', '.join(extra)}")
        for key, spec in schema.items():
            if key not in properties and "default" in spec:
                properties[key] = spec["default"]
        result[policy.name] = (level, properties)
    return result


@dataclass
class Violation:
    policy: str
    level: str
    target: str
    message: str


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    exemptions: list[Any] = field(default_factory=list)
    levels: dict[str, str] = field(default_factory=dict)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]


@contextmanager
def _collect_exemptions(objects_module) -> Iterator[list[Any]]:
    objects_module.APPLIED.clear()
    collected: list[Any] = []
    try:
        yield collected
    finally:
        collected.extend(objects_module.APPLIED)
        objects_module.APPLIED.clear()


def run_policies(records: list[Recorded], config: Mapping[str, tuple[str, dict[str, Any]]]) -> Report:
    """Every enabled policy's validate over the records, as the engine calls them."""
    from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs

    policies, objects = import_policies()
    report = Report()
    resources = policy_resources(records)
    custom_urns = {record.urn for record in records if record.custom}
    custom = [r for r in resources if r.urn in custom_urns]
    with _collect_exemptions(objects) as applied:
        for policy in policies.POLICIES:
            level, properties = config[policy.name]
            report.levels[policy.name] = level
            if level == "disabled":
                continue

            def violation(message: str, urn: str | None = None, *, target: str = "stack", policy=policy, level=level):
                report.violations.append(Violation(policy.name, level, urn or target, message))

            if isinstance(policy, ResourceValidationPolicy):
                for resource in custom:
                    args = ResourceValidationArgs(
                        resource.resource_type,
                        resource.props,
                        resource.urn,
                        resource.name,
                        resource.opts,
                        None,
                        properties,
                    )
                    policy.validate(args, lambda message, urn=None, r=resource: violation(message, target=r.urn))
            else:
                policy.validate(StackValidationArgs(resources, properties), violation)
    report.exemptions = applied
    return report


def print_report(report: Report, title: str) -> None:
    print(title)
    print(f"  {'policy':<32} {'level':<10} {'violations':>10} {'exempted':>9}")
    for name, level in report.levels.items():
        count = sum(1 for v in report.violations if v.policy == name)
        exempt = sum(1 for e in report.exemptions if e.policy == name)
        print(f"  {name:<32} {level:<10} {count:>10} {exempt:>9}")
    if report.exemptions:
        print("exemptions applied:")
        seen = set()
        for use in report.exemptions:
            key = (use.policy, use.exemption)
            if key in seen:
                continue
            seen.add(key)
            targets = [u.target for u in report.exemptions if (u.policy, u.exemption) == key]
            print(f"  {use.policy}: {use.exemption.describe()} ({len(targets)} object(s)): {use.exemption.reason}")
    for v in report.violations:
        stream = sys.stderr if v.level == "mandatory" else sys.stdout
        print(f"[{v.level}] {v.policy}: {v.message}", file=stream)


def check_stack(stack: str, config_path: Path | None = None) -> tuple[Report, float, float]:
    """(report, seconds to run the program under mocks, seconds the policies took)."""
    from mlplatform.config.load import read_stack_file, stack_location
    from mlplatform.validation import load_stack

    resolved = load_stack(stack)
    path, name = stack_location(stack)
    started = time.perf_counter()
    progress.phase("program under mocks")
    records = record_stack(name, read_stack_file(path))
    rendered = time.perf_counter()
    progress.phase("policies")
    config = load_pack_config(config_path or pack_config_path(resolved.config.environment))
    report = run_policies(records, config)
    return report, rendered - started, time.perf_counter() - rendered
