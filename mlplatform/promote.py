"""Environment promotion: move one stack's upstream version pins into another stack.

Only `mlplatform:versions.pins` moves. Everything else in the target stack file (storage
classes, endpoints, node pools, secrets, comments, key order) stays byte for byte. The target
is written only after its new config validates and its gate (the program run under the mock
monitor, plus the policy pack where one is installed) passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mlplatform.config import ConfigError, ResolvedConfig, resolve
from mlplatform.config.load import display_path, read_stack_file, stack_location
from mlplatform.config.model import ENVIRONMENTS

VERSIONS_KEY = "mlplatform:versions"


class PromotionError(RuntimeError):
    pass


@dataclass(frozen=True)
class PinChange:
    component: str
    old: str
    new: str


@dataclass
class PromotionPlan:
    source: str
    target: str
    target_file: Path
    changes: list[PinChange]
    unchanged: int
    new_text: str
    problems: list[str] = field(default_factory=list)


def environment_rank(resolved: ResolvedConfig) -> int:
    """Promotion runs lab -> openshift -> cloud."""
    return ENVIRONMENTS.index(resolved.config.environment)


def _load(stack: str) -> tuple[Path, dict[str, Any], ResolvedConfig]:
    path, name = stack_location(stack)
    raw = read_stack_file(path)
    return path, raw, resolve(raw, source=display_path(path), stack=name)


def versions_block(text: str) -> tuple[int, int] | None:
    """(start, end) line indexes of the `mlplatform:versions:` entry under `config:`."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        match = re.match(r"^(\s+)mlplatform:versions:\s*(#.*)?$", line)
        if not match:
            continue
        indent = len(match.group(1))
        end = index + 1
        while end < len(lines):
            current = lines[end]
            stripped = current.strip()
            if stripped and not stripped.startswith("#") and len(current) - len(current.lstrip()) <= indent:
                break
            end += 1
        # Trailing blank or comment lines belong to whatever follows.
        while end > index + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
        return index, end
    return None


def with_versions(text: str, versions: dict[str, Any]) -> str:
    """The stack file text with its versions entry replaced (or added at the end of config)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    block = versions_block(text)
    indent = "  "
    if block is not None:
        first = lines[block[0]]
        indent = first[: len(first) - len(first.lstrip())]
    body = yaml.safe_dump(versions, sort_keys=True, default_flow_style=False)
    rendered = [f"{indent}{VERSIONS_KEY}:\n"] + [f"{indent}  {line}\n" for line in body.splitlines()]
    if block is not None:
        start, end = block
        return "".join(lines[:start] + rendered + lines[end:])
    config_at = next((i for i, line in enumerate(lines) if re.match(r"^config:\s*(#.*)?$", line)), None)
    if config_at is None:
        raise PromotionError("the target stack file has no `config:` mapping to add the pins to")
    end = config_at + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    while end > config_at + 1 and not lines[end - 1].strip():
        end -= 1
    return "".join(lines[:end] + rendered + lines[end:])


def read_record(resolved: ResolvedConfig) -> dict[str, Any] | None:
    from mlplatform.config.load import _repo_path

    if not resolved.config.versions.record:
        return None
    path = _repo_path(resolved.config.versions.record)
    if not path.exists():
        return {"result": "missing", "path": str(path)}
    return json.loads(path.read_text())


def write_record(stack: str, result: str, path: Path | None = None) -> Path:
    """Record the outcome of a stack's e2e/preview run with the pins it ran."""
    from mlplatform.config.load import _repo_path

    _, _, resolved = _load(stack)
    target = path or (
        _repo_path(resolved.config.versions.record)
        if resolved.config.versions.record
        else _repo_path(f".mlplatform/records/{resolved.stack}.json")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "stack": resolved.stack,
        "result": result,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": resolved.upstream_versions(),
    }
    target.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return target


def plan_promotion(
    source_stack: str,
    target_stack: str,
    *,
    force: bool = False,
    gate: Callable[[str, dict[str, Any]], list[str]] | None = None,
) -> PromotionPlan:
    """What promoting source's pins into target changes; problems say why it must not happen."""
    try:
        _, _, source = _load(source_stack)
    except ConfigError as exc:
        raise PromotionError(f"the source stack {source_stack} does not validate:\n{exc}") from None
    target_path, target_raw, target = _load(target_stack)

    problems: list[str] = []
    if environment_rank(source) > environment_rank(target) and not force:
        problems.append(
            f"{source.stack} ({source.config.environment}) comes after {target.stack} "
            f"({target.config.environment}) in lab -> openshift -> cloud: promoting backwards needs --force"
        )
    record = read_record(source)
    source_versions = source.upstream_versions()
    if record is not None:
        if record.get("result") != "passed":
            problems.append(
                f"the last recorded run of {source.stack} is {record.get('result')!r} "
                f"({record.get('path') or source.config.versions.record}): promote a stack whose run passed"
            )
        elif record.get("versions") != source_versions:
            problems.append(
                f"the last recorded run of {source.stack} ran other versions than its current pins: "
                "run its tests again and record them (`mlplatform record`)"
            )

    old_versions = target.upstream_versions()
    changes = [
        PinChange(name, old_versions.get(name, "-"), version)
        for name, version in sorted(source_versions.items())
        if old_versions.get(name) != version
    ]
    # Every component is written out: the target runs exactly what the source ran.
    new_versions = {**(target_raw.get(VERSIONS_KEY) or {}), "pins": dict(sorted(source_versions.items()))}
    text = target_path.read_text()
    new_text = with_versions(text, new_versions)
    new_raw = {**target_raw, VERSIONS_KEY: new_versions}
    try:
        resolve(new_raw, source=display_path(target_path), stack=target.stack)
    except ConfigError as exc:
        problems.extend(str(p) for p in exc.problems)
    else:
        if gate is not None and not problems:
            problems.extend(gate(target_stack, new_raw))
    return PromotionPlan(
        source=source.stack,
        target=target.stack,
        target_file=target_path,
        changes=changes,
        unchanged=len(source_versions) - len(changes),
        new_text=new_text,
        problems=problems,
    )


def render_gate(target_stack: str, raw: dict[str, Any]) -> list[str]:
    """The target's program under the mock monitor with the new pins, then the policy pack with
    the target environment's config: a version that breaks a module or a mandatory policy stops
    the promotion (`pulumi preview --policy-pack` gates the same way where the engine runs)."""
    from mlplatform.policy_check import load_pack_config, pack_config_path, record_stack, run_policies

    try:
        records = record_stack(target_stack, raw)
    except Exception as exc:  # any failure of the program blocks the promotion
        return [f"the {target_stack} program fails with the promoted versions: {exc}"]
    environment = str(raw.get("mlplatform:environment"))
    report = run_policies(records, load_pack_config(pack_config_path(environment)))
    return [f"policy {v.policy} (mandatory): {v.message}" for v in report.violations if v.level == "mandatory"]


def format_table(plan: PromotionPlan) -> str:
    rows = [("component", "old", "new"), *((c.component, c.old, c.new) for c in plan.changes)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)
