"""Reads versions.lock.yaml: the single source of pinned versions."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from mlplatform.paths import REPO_ROOT
from mlplatform.plain_data import plain_copy

LOCK_FILE = REPO_ROOT / "versions.lock.yaml"
# libyaml's parser where PyYAML has it: a program reads the lock a dozen times per run.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LockError(ValueError):
    pass


@dataclass(frozen=True)
class Companion:
    name: str
    module: str
    path: str
    # "bin" (next to the binaries, where a program looks for its helpers) or "share" (data).
    into: str = "bin"


@dataclass(frozen=True)
class Tool:
    name: str
    module: str
    version: str
    binaries: dict[str, str]
    ldflags: dict[str, str] = field(default_factory=dict)
    local_replace_version: str | None = None
    main_shim: str | None = None
    companions: tuple[Companion, ...] = ()
    # The version the binary reports when that differs from the module version (a build of a
    # commit between tags); ldflags and version probes use it.
    reports_version: str | None = None
    # Extra module versions the wrapper pins (siblings an upstream go.mod replaces locally).
    pins: dict[str, str] = field(default_factory=dict)
    # A step run over a writable copy of the module before the build (build.PREPARE_STEPS).
    prepare: str | None = None
    # The folder of a mirror (MLPLATFORM_MIRROR) holding the module's source, for a module the
    # proxy refuses.
    mirror_source: str | None = None
    # Binary -> versions of an installed copy used as it is (PEP 440 ranges); a binary named
    # here is taken from PATH when it reports a version inside its range.
    supported: dict[str, SpecifierSet] = field(default_factory=dict)
    # A tool shipped together with this one: each is taken from PATH only when both are, at
    # the same version.
    paired_with: str | None = None

    @property
    def reported_version(self) -> str:
        return self.reports_version or self.version

    @property
    def cache_key(self) -> str:
        """Changes whenever anything that shapes the built binaries changes."""
        payload = json.dumps(
            {
                "module": self.module,
                "version": self.version,
                "binaries": self.binaries,
                "ldflags": self.ldflags,
                "localReplaceVersion": self.local_replace_version,
                "mainShim": self.main_shim,
                "companions": [c.__dict__ for c in self.companions],
                "reportsVersion": self.reports_version,
                "pins": self.pins,
                "prepare": self.prepare,
                # Only where set: the keys of the tools built before it existed stay the same.
                **({"mirrorSource": self.mirror_source} if self.mirror_source else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def rendered_ldflags(self) -> dict[str, str]:
        bare = self.reported_version.lstrip("v")
        parts = bare.split(".")
        subst = {
            "version": self.reported_version,
            "bare_version": bare,
            "major": parts[0],
            "minor": parts[1] if len(parts) > 1 else "0",
        }
        return {k: v.format(**subst) for k, v in self.ldflags.items()}


@dataclass(frozen=True)
class Lock:
    go_minimum: str
    python: dict[str, str]
    tools: dict[str, Tool]
    raw: dict


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def read_lock_document(path: Path = LOCK_FILE) -> Any:
    """The lock file parsed, a fresh copy per call; the text is read each time (a test or a
    user may change it), the parse is kept per text."""
    return plain_copy(_parsed(path.read_text()))


def _supported(ranges: dict, binaries: dict) -> dict[str, SpecifierSet]:
    parsed: dict[str, SpecifierSet] = {}
    for binary, text in ranges.items():
        if binary not in binaries:
            raise ValueError(f"supported: {binary!r} is not one of its binaries ({', '.join(binaries)})")
        try:
            # Pre-releases are never "supported": only releases are inside a range.
            parsed[binary] = SpecifierSet(str(text), prereleases=False)
        except InvalidSpecifier as exc:
            raise ValueError(f"supported.{binary}: {text!r} is not a version range like '>=1.2.0,<2': {exc}") from exc
    return parsed


def load_lock(path: Path = LOCK_FILE) -> Lock:
    try:
        raw = read_lock_document(path)
    except (OSError, yaml.YAMLError) as exc:
        raise LockError(f"{path}: cannot read lock file: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("lockVersion") != 1:
        raise LockError(f"{path}: lockVersion: expected 1")
    tools: dict[str, Tool] = {}
    for name, spec in (raw.get("tools") or {}).items():
        try:
            tools[name] = Tool(
                name=name,
                module=spec["module"],
                version=spec["version"],
                binaries=dict(spec["binaries"]),
                ldflags=dict(spec.get("ldflags") or {}),
                local_replace_version=spec.get("localReplaceVersion"),
                main_shim=spec.get("mainShim"),
                companions=tuple(
                    Companion(name=c_name, module=c["module"], path=c["path"], into=c.get("into", "bin"))
                    for c_name, c in (spec.get("companions") or {}).items()
                ),
                reports_version=spec.get("reportsVersion"),
                pins=dict(spec.get("pins") or {}),
                prepare=spec.get("prepare"),
                mirror_source=spec.get("mirrorSource"),
                supported=_supported(spec.get("supported") or {}, dict(spec["binaries"])),
                paired_with=spec.get("pairedWith"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LockError(f"{path}: tools.{name}: missing or malformed field {exc}") from exc
    for tool in tools.values():
        if tool.paired_with and tools.get(tool.paired_with, tool).paired_with != tool.name:
            raise LockError(f"{path}: tools.{tool.name}: pairedWith {tool.paired_with!r} must name a tool paired back")
    return Lock(
        go_minimum=str((raw.get("go") or {}).get("minimum", "")),
        python={k: str(v) for k, v in (raw.get("python") or {}).items()},
        tools=tools,
        raw=raw,
    )
