"""Environment promotion: move one stack's upstream version pins into another stack.

Only `mlplatform:versions.pins` moves. Everything else in the target stack file (storage
classes, endpoints, node pools, secrets, comments, key order) stays byte for byte. The target
is written only after its new config validates and its gate (the program run under the mock
monitor, plus the policy pack where one is installed) passes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import CommentMark
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from mlplatform.config import ConfigError, ResolvedConfig
from mlplatform.config.load import display_path, read_stack_file, stack_location
from mlplatform.config.model import ENVIRONMENTS
from mlplatform.safe_write import FileLockedError, atomic_write, write_lock
from mlplatform.validation import resolve

VERSIONS_KEY = "mlplatform:versions"
# Seconds `record` waits for another command writing the same record.
RECORD_LOCK_WAIT = 5.0


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
    # The target's bytes the plan was made from, and the config its new text must read as.
    original: bytes = b""
    new_config: dict[str, Any] = field(default_factory=dict)


def environment_rank(resolved: ResolvedConfig) -> int:
    """Promotion runs lab -> openshift -> cloud."""
    return ENVIRONMENTS.index(resolved.config.environment)


def _load(stack: str) -> tuple[Path, dict[str, Any], ResolvedConfig]:
    path, name = stack_location(stack)
    raw = read_stack_file(path)
    return path, raw, resolve(raw, source=display_path(path), stack=name)


# Indentations (mapping, sequence, dash offset) a stack file may be written in; the first whose
# round trip reproduces the file is the one new entries are written with.
_INDENTS = ((2, 4, 2), (2, 2, 0), (4, 6, 4), (4, 4, 2), (4, 4, 0))


def _round_trip_yaml(indent: tuple[int, int, int]) -> YAML:
    loader = YAML(typ="rt")
    loader.preserve_quotes = True
    loader.allow_duplicate_keys = False
    loader.width = 1 << 16  # long lines stay on one line
    loader.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    return loader


def _dump(loader: YAML, document: Any) -> str:
    buffer = io.StringIO()
    loader.dump(document, buffer)
    return buffer.getvalue()


def _yaml_problem(exc: YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1})" if mark is not None else problem


def _block_end(container: Any, key: Any) -> tuple[list[Any], Any, Any]:
    """The block collections that end where the value of container[key] ends (outermost first),
    and the entry on that last line."""
    chain = []
    while True:
        value = container[key]
        if not isinstance(value, CommentedMap | CommentedSeq) or not value or value.fa.flow_style():
            return chain, container, key
        chain.append(value)
        container, key = value, (list(value)[-1] if isinstance(value, CommentedMap) else len(value) - 1)


def _comment_slot(container: Any) -> int:
    return 2 if isinstance(container, CommentedMap) else 0


def _take_tail(container: Any, key: Any) -> str:
    """Detach the comment and blank lines that follow the value of container[key]. The parser
    hangs them on the last entry inside it (or on the end of a collection in it), so anything
    added after that entry would land below them."""
    chain, leaf, at = _block_end(container, key)
    tail = ""
    entry = leaf.ca.items.get(at)
    token = entry[_comment_slot(leaf)] if entry else None
    if token is not None:
        head, newline, tail = token.value.partition("\n")
        if head:
            token.value = head + newline
        elif tail:
            entry[_comment_slot(leaf)] = None
    for collection in reversed(chain):
        tail += "".join(" " * (t.column or 0) + t.value for t in collection.ca.end or ())
        collection.ca.end = []
    return tail


def _put_tail(container: Any, key: Any, tail: str) -> None:
    """Hang `tail` after the (possibly new) last line of the value of container[key]."""
    if not tail:
        return
    _, leaf, at = _block_end(container, key)
    slot = _comment_slot(leaf)
    entry = leaf.ca.items.setdefault(at, [None, None, None, None] if slot == 2 else [None, None])
    if entry[slot] is None:
        entry[slot] = CommentToken("\n" + tail, CommentMark(0), None)
    else:
        entry[slot].value += tail


def _set_pins(current: CommentedMap, pins: dict[str, str]) -> None:
    """Pins set in place: unchanged entries keep their quoting and comments; new ones go where
    sorted order puts them (at the end when the existing ones are not sorted)."""
    for name in [name for name in current if name not in pins]:
        # Comment lines below a removed pin stay, below the pin before it.
        names = list(current)
        tail = _take_tail(current, name)
        del current[name]
        if tail and names.index(name) > 0:
            _put_tail(current, names[names.index(name) - 1], tail)
    ordered = list(current) == sorted(current)
    for name, version in pins.items():
        if name in current:
            old = current[name]
            if old != version or not isinstance(old, str):
                # A quoted version stays quoted; a plain one is quoted by the dumper where needed.
                keep = type(old) if isinstance(old, SingleQuotedScalarString | DoubleQuotedScalarString) else str
                current[name] = keep(version)
        elif ordered:
            current.insert(sum(1 for other in current if other < name), name, version)
        else:
            current[name] = version


def with_pins(path: Path, text: str, pins: dict[str, str]) -> str:
    """`text`, the stack file at `path`, with `config["mlplatform:versions"]["pins"]` set to `pins`
    (the versions entry added at the end of `config` where it is missing) and every other byte kept.

    Raises PromotionError where that cannot be done safely."""
    where = display_path(path)

    def refuse(why: str) -> PromotionError:
        return PromotionError(f"{where} cannot be edited safely: {why}; nothing is written (move the pins by hand)")

    # A value written once and used twice (anchor, alias, merge key) or a tagged one would
    # make one edit change other places, or change meaning when written back.
    try:
        for event in _round_trip_yaml(_INDENTS[0]).parse(text):
            if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
                raise refuse("it uses YAML anchors or aliases")
            if getattr(event, "tag", None) is not None:
                raise refuse(f"it uses a YAML tag ({event.tag})")
            if isinstance(event, ScalarEvent) and event.value == "<<" and event.style is None:
                raise refuse("it uses a YAML merge key (<<)")
    except YAMLError as exc:
        raise refuse(f"it is not valid YAML: {_yaml_problem(exc)}") from None
    first_difference = 0
    for indent in _INDENTS:
        loader = _round_trip_yaml(indent)
        try:
            document = loader.load(text)
        except DuplicateKeyError as exc:
            raise refuse(f"duplicate key: {_yaml_problem(exc)}") from None
        except YAMLError as exc:
            raise refuse(f"it is not valid YAML: {_yaml_problem(exc)}") from None
        written = _dump(loader, document)
        if written == text:
            break
        pairs = zip(text.splitlines(keepends=True), written.splitlines(keepends=True), strict=False)
        first_difference = max(first_difference, next((n for n, (a, b) in enumerate(pairs, 1) if a != b), 0))
    else:
        raise refuse(
            "reading it and writing it back unchanged does not reproduce it byte for byte "
            f"(from line {first_difference or 1}: spacing, quoting or line ends the YAML writer changes)"
        )
    if not isinstance(document, CommentedMap):
        raise refuse("it is not a mapping")
    config = document.get("config")
    if not isinstance(config, CommentedMap):
        raise refuse("`config` is missing or not a mapping")
    new_pins = CommentedMap(pins)
    had_versions = VERSIONS_KEY in config
    if had_versions:
        versions = config[VERSIONS_KEY]
        if versions is not None and not isinstance(versions, CommentedMap):
            raise refuse(f"`{VERSIONS_KEY}` is not a mapping")
        current = versions.get("pins") if versions is not None else None
        if current is not None and not isinstance(current, CommentedMap):
            raise refuse(f"`{VERSIONS_KEY}.pins` is not a mapping")
        after_block = _take_tail(config, VERSIONS_KEY)
        if versions is None:
            config[VERSIONS_KEY] = CommentedMap(pins=new_pins)
        else:
            after_pins = _take_tail(versions, "pins") if "pins" in versions else ""
            if current is None:
                versions["pins"] = new_pins
            else:
                _set_pins(current, pins)
            _put_tail(versions, "pins", after_pins)
        _put_tail(config, VERSIONS_KEY, after_block)
    else:
        after_config = _take_tail(config, list(config)[-1]) if config else ""
        config[VERSIONS_KEY] = CommentedMap(pins=new_pins)
        _put_tail(config, VERSIONS_KEY, after_config)
    new_text = _dump(loader, document)
    if _lines_outside_pins(loader, text, added=False) != _lines_outside_pins(loader, new_text, added=not had_versions):
        raise refuse("writing the new pins would move or change lines outside them")
    return new_text


def _lines_outside_pins(loader: YAML, text: str, *, added: bool) -> list[str]:
    """The lines of a stack file less those that hold the pins: the pins' lines, the line of a
    versions entry written in flow style, and the versions key line where the edit `added` it."""
    config = loader.load(text)["config"]
    skip: set[int] = set()
    versions = config.get(VERSIONS_KEY)
    if added:
        skip.add(config.lc.key(VERSIONS_KEY)[0])
    if isinstance(versions, CommentedMap) and versions.fa.flow_style():
        skip.add(config.lc.value(VERSIONS_KEY)[0])
    elif isinstance(versions, CommentedMap) and "pins" in versions:
        skip.add(versions.lc.key("pins")[0])
        pins = versions["pins"]
        if isinstance(pins, CommentedMap) and not pins.fa.flow_style():
            skip.update(pins.lc.key(name)[0] for name in pins)
    lines = text.splitlines(keepends=True)
    return [line for number, line in enumerate(lines) if number not in skip]


def read_record(resolved: ResolvedConfig) -> dict[str, Any] | None:
    from mlplatform.config.load import repo_path as _repo_path

    if not resolved.config.versions.record:
        return None
    path = _repo_path(resolved.config.versions.record)
    if not path.exists():
        return {"result": "missing", "path": str(path)}
    return json.loads(path.read_text())


def write_record(stack: str, result: str, path: Path | None = None) -> Path:
    """Record the outcome of a stack's e2e/preview run with the pins it ran."""
    from mlplatform.config.load import repo_path as _repo_path

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
    with write_lock(target, wait=RECORD_LOCK_WAIT):
        atomic_write(target, json.dumps(record, indent=2, sort_keys=True) + "\n")
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
    target_path = stack_location(target_stack)[0]
    try:
        original = target_path.read_bytes()
    except FileNotFoundError:
        original = b""  # _load reports the missing file
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
    new_pins = dict(sorted(source_versions.items()))
    new_versions = {**(target_raw.get(VERSIONS_KEY) or {}), "pins": new_pins}
    new_raw = {**target_raw, VERSIONS_KEY: new_versions}
    try:
        text = original.decode()
    except UnicodeDecodeError:
        raise PromotionError(f"{display_path(target_path)} is not UTF-8 text; nothing is written") from None
    new_text = with_pins(target_path, text, new_pins)
    # The edited text must read as the old config with only the pins changed.
    if _config_of(new_text) != new_raw or _config_of(text) != target_raw:
        raise PromotionError(
            f"{display_path(target_path)} cannot be edited safely: the edited file would not read as "
            "the old config with new pins; nothing is written (move the pins by hand)"
        )
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
        original=original,
        new_config=new_raw,
    )


def _config_of(text: str) -> Any:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return document.get("config") if isinstance(document, dict) else None


def _check_written(plan: PromotionPlan) -> None:
    """The file as it now is on disk reads, validates, and holds exactly the planned config."""
    raw = read_stack_file(plan.target_file)
    resolve(raw, source=display_path(plan.target_file), stack=plan.target)
    pins = (raw.get(VERSIONS_KEY) or {}).get("pins")
    if pins != plan.new_config[VERSIONS_KEY]["pins"]:
        raise PromotionError(f"its pins read back as {pins}")
    if raw != plan.new_config:
        raise PromotionError("its config outside the pins changed")


def apply_promotion(plan: PromotionPlan) -> bool:
    """Write the plan's new text over its target, unless that file changed since the plan was made.
    The written file is read back and checked; where it does not hold what was planned, the
    original bytes are put back. False where there was nothing to write."""
    path = plan.target_file
    where = display_path(path)
    try:
        with write_lock(path):
            if path.read_bytes() != plan.original:
                raise PromotionError(
                    f"{where} changed since the promotion was planned; nothing is written (run it again)"
                )
            new = plan.new_text.encode()
            if new == plan.original:
                return False
            atomic_write(path, new)
            try:
                _check_written(plan)
            except (ConfigError, PromotionError, OSError) as exc:
                atomic_write(path, plan.original)
                raise PromotionError(
                    f"{where} did not read back as planned after writing ({exc}); its original content is restored"
                ) from None
    except FileLockedError as exc:
        raise PromotionError(f"{exc}; nothing is written") from None
    except OSError as exc:
        raise PromotionError(f"cannot write {where}: {exc}") from None
    return True


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
