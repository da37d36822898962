"""Parse and validate a stack's config once: raw stack values -> profile defaults -> typed model."""

from __future__ import annotations

import copy
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlplatform.config import rules
from mlplatform.config.model import CLOUD_PROVIDERS, ENVIRONMENTS, SECRET_NAMES, PlatformConfig
from mlplatform.config.problems import ConfigError, Problem
from mlplatform.config.rules import shown
from mlplatform.environments import Profile, profile_for
from mlplatform.paths import REPO_ROOT, STACKS_DIR

PROJECT = "mlplatform"
# Config namespaces a stack may use besides our own: the Kubernetes provider's settings.
PASS_THROUGH_NAMESPACES = ("kubernetes",)
STACK_FILE_KEYS = ("config", "encryptionsalt", "secretsprovider", "encryptedkey", "environment")
MIRROR_ENV = "MLPLATFORM_MIRROR"


@dataclass(frozen=True)
class ResolvedConfig:
    stack: str
    source: str
    config: PlatformConfig
    profile: Profile
    provider_settings: dict[str, Any] = field(default_factory=dict)
    # Secret name -> value as the engine decrypted it; None where the stack holds only
    # ciphertext (validate, render). Absent names are not set.
    secrets: dict[str, str | None] = field(default_factory=dict, repr=False)
    # The stack whose settings these are: `stack` itself, or the platform stack of a team stack.
    platform_stack: str = ""
    # Team name -> the team stack holding it (config/team_stacks.py); the platform's own teams
    # are not listed.
    team_stacks: dict[str, str] = field(default_factory=dict)

    @property
    def is_team_stack(self) -> bool:
        return self.stack != self.platform_stack

    @property
    def mirror_path(self) -> Path | None:
        return repo_path(self.config.mirror.path) if self.config.mirror.path else None

    @property
    def lock_path(self) -> Path:
        return repo_path(self.config.versions.lock)

    def upstream(self, name: str):
        """A pinned upstream source at the version this stack runs."""
        from mlplatform.upstream import upstream_sources

        return upstream_sources(self.lock_path, self.config.versions.pins)[name]

    def upstream_versions(self) -> dict[str, str]:
        """Every upstream component and the version this stack runs (pins over lock defaults)."""
        from mlplatform.upstream import upstream_sources

        return {name: s.version for name, s in upstream_sources(self.lock_path, self.config.versions.pins).items()}


def stack_file(stack: str, stacks_dir: Path = STACKS_DIR) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# A stack file is a page of settings; anything near this size is not one.
MAX_STACK_FILE_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 32


def read_stack_file(path: Path) -> dict[str, Any]:
    """The `config` mapping of a Pulumi stack file; structural problems raise ConfigError."""
    source = display_path(path)
    try:
        size = path.stat().st_size
        if size > MAX_STACK_FILE_BYTES:
            raise ConfigError(
                [Problem(source, "<file>", f"{size} bytes (allowed: a stack file of at most {MAX_STACK_FILE_BYTES})")]
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(source, "<file>", "no such stack file")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(source, "<file>", "not UTF-8 text (allowed: a UTF-8 YAML file)")]) from None
    document = parse_yaml(text, source)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(
            [Problem(source, "<root>", "expected a mapping (allowed keys: " + ", ".join(STACK_FILE_KEYS) + ")")]
        )
    problems = [
        Problem(source, str(key), "unknown stack file key (allowed: " + ", ".join(STACK_FILE_KEYS) + ")")
        for key in document
        if key not in STACK_FILE_KEYS
    ]
    config = document.get("config") or {}
    if not isinstance(config, dict):
        problems.append(Problem(source, "config", "expected a mapping of namespaced keys"))
    if problems:
        raise ConfigError(problems)
    return config


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document, refused where the YAML itself is ambiguous or hostile: a key given twice
    in one mapping (YAML keeps the last one silently), aliases and merge keys (one small alias
    can stand for an exponentially large value), keys that are not plain strings, deep nesting."""
    try:
        aliases = _aliases(text)
        if aliases:
            lines = sorted(set(aliases))
            shown_lines = ", ".join(str(line) for line in lines[:5]) + (" ..." if len(lines) > 5 else "")
            raise ConfigError(
                [
                    Problem(
                        source,
                        f"line {aliases[0]}",
                        f"{len(aliases)} YAML alias(es) (lines {shown_lines}) "
                        "(allowed: values written out; aliases and anchors are not allowed)",
                    )
                ]
            )
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            problems = _node_problems(node, source)
            if problems:
                raise ConfigError(problems)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<yaml>"
        detail = rules.shown(str(getattr(exc, "problem", None) or exc))
        raise ConfigError([Problem(source, where, f"not valid YAML: {detail}")]) from None
    except RecursionError:
        raise ConfigError(
            [Problem(source, "<yaml>", f"nested too deeply (allowed: at most {MAX_YAML_DEPTH} levels)")]
        ) from None


def _aliases(text: str) -> list[int]:
    """Lines of the document's aliases, found from the event stream before anything is built."""
    lines = []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            lines.append(event.start_mark.line + 1)
    return lines


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _node_problems(root: yaml.Node, source: str) -> list[Problem]:
    problems: list[Problem] = []
    # (node, path, depth); iterative so a deep document cannot exhaust the stack here.
    pending: list[tuple[yaml.Node, str, int]] = [(root, "", 0)]
    while pending:
        node, path, depth = pending.pop()
        where = path or "<root>"
        if isinstance(node, yaml.ScalarNode):
            continue
        if depth >= MAX_YAML_DEPTH:
            problems.append(Problem(source, where, f"nested too deeply (allowed: at most {MAX_YAML_DEPTH} levels)"))
            continue
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                pending.append((item, f"{path}[{index}]", depth + 1))
            continue
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                problems.append(
                    Problem(source, where, f"a YAML merge key '<<' (line {key_line}) (allowed: the keys written out)")
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(
                    Problem(source, where, f"a key that is not a plain string (line {key_line}) (allowed: text keys)")
                )
                continue
            key = key_node.value
            child = _child_path(path, key)
            if key in first_line:
                problems.append(
                    Problem(
                        source,
                        child,
                        f"duplicate key (lines {first_line[key]} and {key_line}; YAML would keep only the last) "
                        "(allowed: each key once per mapping)",
                    )
                )
                continue
            first_line[key] = key_line
            pending.append((value_node, child, depth + 1))
    return sorted(problems, key=lambda p: p.path)


def _child_path(path: str, key: str) -> str:
    # Under `config:` the path reads as a key path does elsewhere: mlplatform:modules.tenancy.
    if path in ("", "config"):
        return key
    return f"{path}.{key}" if _PLAIN_KEY.match(key) else f'{path}["{rules.shown(key)[1:-1]}"]'


def config_from_pulumi_env(values: Mapping[str, str]) -> dict[str, Any]:
    """Pulumi hands a program its config as strings; structured values arrive as JSON text."""
    decoded: dict[str, Any] = {}
    for key, text in values.items():
        try:
            decoded[key] = json.loads(text)
        except (TypeError, ValueError):
            decoded[key] = text
    return decoded


def stack_location(stack_or_path: str) -> tuple[Path, str]:
    """(file, stack name) of a stack given by name (stacks/Pulumi.<name>.yaml) or by path."""
    candidate = Path(stack_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in stack_or_path:
        return candidate, candidate.name.removeprefix("Pulumi.").rsplit(".", 1)[0]
    return stack_file(stack_or_path), stack_or_path


def parse(
    raw: Mapping[str, Any],
    source: str,
    stack: str,
    mirror_override: str | None = None,
    decrypted: bool = False,
) -> tuple[ResolvedConfig | None, list[Problem]]:
    """The typed config (profile defaults under the stack's values) and every problem of form
    found on the way; None where the config could not be typed. The rules between fields sit
    above this package (mlplatform.validation)."""
    problems: list[Problem] = []
    ours: dict[str, Any] = {}
    provider_settings: dict[str, Any] = {}
    for key, value in raw.items():
        namespace, sep, name = str(key).partition(":")
        if not sep:
            problems.append(Problem(source, str(key), f"config keys are namespaced (allowed: {PROJECT}:{key})"))
        elif namespace == PROJECT:
            ours[name] = value
        elif namespace in PASS_THROUGH_NAMESPACES:
            provider_settings[name] = value
        else:
            allowed = ", ".join(f"{ns}:<key>" for ns in (PROJECT, *PASS_THROUGH_NAMESPACES))
            problems.append(Problem(source, str(key), f"unknown config namespace {namespace!r} (allowed: {allowed})"))

    secrets = _secrets(ours.pop("secrets", None), decrypted, source, problems)

    mirror = mirror_override if mirror_override is not None else os.environ.get(MIRROR_ENV)
    if mirror:
        ours = {**ours, "mirror": {**(ours.get("mirror") or {}), "path": mirror}}

    environment = ours.get("environment")
    known_environment = environment in ENVIRONMENTS
    provider = None
    if environment == "cloud" and isinstance(ours.get("cloud"), dict):
        candidate = ours["cloud"].get("provider")
        provider = candidate if candidate in CLOUD_PROVIDERS else None
    profile = profile_for(environment, provider) if known_environment else None
    merged = _deep_merge(profile.defaults, ours) if profile else ours

    config: PlatformConfig | None = None
    try:
        config = PlatformConfig.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            # Without a known environment no profile filled the defaults: missing keys are noise.
            if not known_environment and error["type"] == "missing" and error["loc"][0] != "environment":
                continue
            problems.append(_problem_from_error(source, error))

    if config is None or profile is None:
        return None, problems
    resolved = ResolvedConfig(
        stack=stack,
        source=source,
        config=config,
        profile=profile,
        provider_settings=provider_settings,
        secrets=secrets,
    )
    return resolved, problems


def _secrets(raw: Any, decrypted: bool, source: str, problems: list[Problem]) -> dict[str, str | None]:
    """Secret values are checked for form only, and never quoted back in a message."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(
            Problem(source, f"{PROJECT}:secrets", f"must be a mapping (allowed names: {', '.join(SECRET_NAMES)})")
        )
        return {}
    secrets: dict[str, str | None] = {}
    for name, value in raw.items():
        path = f"{PROJECT}:secrets.{name}"
        if name not in SECRET_NAMES:
            problems.append(Problem(source, path, f"unknown secret {name!r} (allowed: {', '.join(SECRET_NAMES)})"))
        elif isinstance(value, Mapping) and set(value) == {"secure"}:
            secrets[name] = None
        elif decrypted and isinstance(value, str) and value:
            # The engine hands the program decrypted values.
            secrets[name] = value
        else:
            problems.append(
                Problem(
                    source,
                    path,
                    "must be stored encrypted (allowed: set it with "
                    f"`pulumi config set --secret --path {PROJECT}:secrets.{name} <value>`)",
                )
            )
    return secrets


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key_path(loc: tuple[Any, ...]) -> str:
    """mlplatform:cluster.nodePools[1].gpu.sharing.mig.devices["1g.5gb"]: keys that hold dots
    or slashes (resource names, MIG profiles) are quoted so the path stays unambiguous."""
    text = f"{PROJECT}:"
    for index, part in enumerate(loc):
        if part == "[key]":
            # pydantic's marker for a problem with a mapping's key: the key above names it.
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        elif index > 0 and not _PLAIN_KEY.match(str(part)):
            text += f'["{part}"]'
        else:
            text += ("" if index == 0 else ".") + str(part)
    return text


def _unwrap(annotation: Any) -> Any:
    """The model type inside Optional[...] / list[...] / dict[str, ...] / Annotated[...]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = members[0] if len(members) == 1 else annotation
            if len(members) != 1:
                return annotation
        elif origin in (list, tuple, set):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = PlatformConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        by_alias = {f.alias or n: f for n, f in current.model_fields.items()}
        if part not in by_alias:
            return None
        current = _unwrap(by_alias[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _allowed_keys(parent_loc: tuple[Any, ...]) -> str:
    model = _model_at(parent_loc)
    if model is None:
        return "?"
    return ", ".join(f.alias or n for n, f in model.model_fields.items())


_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "float_type": "a number",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _problem_from_error(source: str, error: Mapping[str, Any]) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        message = f"unknown key (allowed: {_allowed_keys(loc[:-1])})"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        message = f"{shown(value)} is not allowed (allowed: {expected})"
    elif kind in _TYPE_NAMES:
        message = (
            f"expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {shown(value)} (allowed: {_TYPE_NAMES[kind]})"
        )
    elif kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        op = ">=" if kind == "greater_than_equal" else ">"
        message = f"{shown(value)} is too small (allowed: {op} {bound})"
    elif kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        op = "<=" if kind == "less_than_equal" else "<"
        message = f"{shown(value)} is too large (allowed: {op} {bound})"
    elif kind == "finite_number":
        message = f"{shown(value)} is not a finite number (allowed: a finite number; inf and nan are not)"
    elif kind == "too_short":
        if isinstance(value, str):
            message = f"{shown(value)} is empty (allowed: at least {ctx.get('min_length')} character(s))"
        else:
            shape = "mapping" if isinstance(value, dict) else "list"
            message = f"needs at least {ctx.get('min_length')} item(s) (allowed: a non-empty {shape})"
    elif kind == "too_long":
        size = len(value) if hasattr(value, "__len__") else "?"
        unit = "characters" if isinstance(value, str) else "items"
        message = f"has {size} {unit} (allowed: at most {ctx.get('max_length')})"
    elif kind == "string_too_long":
        message = f"{shown(value)} is too long (allowed: at most {ctx.get('max_length')} characters)"
    elif kind == "string_too_short":
        message = f"{shown(value)} is empty (allowed: at least {ctx.get('min_length')} character(s))"
    elif kind == "string_pattern_mismatch":
        message = f"{shown(value)} does not match {ctx.get('pattern')} (allowed: text matching that pattern)"
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
    else:
        message = f"{error['msg']} (got {shown(value)})"
    return Problem(source, key_path(loc), message)


def repo_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()
