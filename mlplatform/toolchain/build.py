"""Build the pinned tools from Go modules into a cache outside the repository.

Each tool is built in a small wrapper module: upstream go.mod files often replace sibling
modules with local paths, which `go install module@version` refuses. The wrapper carries
those replaces over, pointing each local one at the published module of the pinned version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from mlplatform import progress
from mlplatform.go import go_env
from mlplatform.lock import Lock, Tool
from mlplatform.paths import BIN_DIR, SHARE_DIR, tool_cache_root

# Which tools each purpose needs; `mlplatform tools --only` takes these names too.
GROUPS: dict[str, tuple[str, ...]] = {
    "engine": ("pulumi", "pulumi-language-python", "pulumi-resource-kubernetes"),
    "render": ("helm", "helm-unittest", "kustomize"),
    "cluster": ("kubernetes", "etcd", "kwok", "cyclonus"),
}

# How to ask a binary for its version; the pinned version must appear in the answer.
VERSION_PROBES: dict[str, list[str]] = {
    "pulumi": ["version"],
    "pulumi-language-python": ["-version"],
    "pulumi-resource-kubernetes": ["-version"],
    "helm": ["version", "--template", "{{.Version}}"],
    "kustomize": ["version"],
    "kube-apiserver": ["--version"],
    "kube-controller-manager": ["--version"],
    "kube-scheduler": ["--version"],
    "kubectl": ["version", "--client"],
    "etcd": ["--version"],
    "kwok": ["--version"],
    "cyclonus": ["version"],
}


class ToolBuildError(RuntimeError):
    pass


@dataclass
class ToolResult:
    tool: str
    version: str  # the version in use: the installed one where source is "path"
    source: str  # "cache", "built", "path" or "unavailable"
    seconds: float
    detail: str = ""
    # Binaries taken from PATH (all of them where source is "path").
    found: dict[str, Installed] = field(default_factory=dict)
    # Installed copies not used, and why; warnings where an installed version could not be read.
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def used(self) -> str:
        """Which copy is in use, in one line: found on PATH at X / built from source at Y."""
        installed = ", ".join(
            f"{name} found on PATH at {found.version} ({found.path})"
            for name, found in self.found.items()
            if found.version
        )
        if self.source == "path":
            return installed
        if self.source == "unavailable":
            return f"not available at {self.version}"
        built = f"built from source at {self.version}"
        built += f" (cached, {self.detail})" if self.source == "cache" and self.detail else ""
        return f"{built}; {installed}" if installed else built


def bin_dir() -> Path:
    """The one folder put on PATH: links to the cached (or PATH-found) binaries."""
    return BIN_DIR


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise ToolBuildError(f"`{' '.join(cmd)}` failed:\n  " + "\n  ".join(tail))
    return proc.stdout


def _module_download(module: str, version: str, cwd: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], cwd=cwd, env=env, capture_output=True, text=True
    )
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {"Error": (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"}
    if info.get("Error") or proc.returncode != 0:
        # The proxy's answer, on one line: e.g. "... 403 Forbidden server response: ... not available."
        reason = " ".join(str(info.get("Error", "")).split())
        raise ToolBuildError(f"go mod download {module}@{version}: {reason}")
    return info


_REPLACE_LINE = re.compile(r"^\s*(\S+)(?:\s+(\S+))?\s*=>\s*(\S+)(?:\s+(\S+))?\s*$")


def upstream_replaces(gomod_text: str, local_version: str | None) -> list[str]:
    """Replace directives of an upstream go.mod, rewritten to work outside its repository.

    A local-path replace is dropped when the upstream go.mod requires real versions of its
    siblings (the requirement then resolves by itself); where the siblings are required as
    placeholders (k8s.io/kubernetes asks for v0.0.0), `local_version` names the real one.
    """
    lines: list[str] = []
    in_block = False
    for raw in gomod_text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if in_block:
            if line == ")":
                in_block = False
                continue
            body = line
        elif line.startswith("replace ("):
            in_block = True
            continue
        elif line.startswith("replace "):
            body = line[len("replace ") :]
        else:
            continue
        match = _REPLACE_LINE.match(body)
        if not match:
            raise ToolBuildError(f"cannot parse replace directive: {raw!r}")
        old, old_ver, new, new_ver = match.groups()
        if new.startswith("./") or new.startswith("../"):
            if local_version:
                lines.append(f"{old} => {old} {local_version}")
        else:
            left = f"{old} {old_ver}" if old_ver else old
            right = f"{new} {new_ver}" if new_ver else new
            lines.append(f"{left} => {right}")
    return lines


def _go_directive() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout
    match = re.match(r"go(\d+\.\d+)", out.strip())
    return match.group(1) if match else "1.25"


def _write_wrapper(tool: Tool, src: Path, replaces: list[str]) -> None:
    src.mkdir(parents=True, exist_ok=True)
    gomod = [
        f"module mlplatform.local/toolwrap/{tool.name}",
        "",
        f"go {_go_directive()}",
        "",
        f"require {tool.module} {tool.version}",
    ]
    if replaces:
        gomod += ["", "replace ("] + [f"\t{r}" for r in replaces] + [")"]
    (src / "go.mod").write_text("\n".join(gomod) + "\n")
    if tool.main_shim:
        (pkg,) = tool.binaries.values()
        alias = pkg.rsplit("/", 1)[-1]
        (src / "main.go").write_text(
            f'package main\n\nimport (\n\t"os"\n\n\t"{pkg}"\n)\n\n'
            f"func main() {{\n\t_ = os.Args\n\t{tool.main_shim.replace(alias + '.', alias + '.', 1)}\n}}\n"
        )
    else:
        imports = "\n".join(f'\t_ "{pkg}"' for pkg in sorted(set(tool.binaries.values())))
        (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")


# The first x.y.z (with any pre-release or build suffix) in a binary's answer to its probe.
_VERSION = re.compile(r"(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)")


def reported_version(binary: Path, name: str) -> str | None:
    """The version a binary reports; None when it fails or names no version."""
    probe = VERSION_PROBES.get(name, ["--version"])
    try:
        proc = subprocess.run([str(binary), *probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(proc.stdout + "\n" + proc.stderr) if proc.returncode == 0 else None
    return match.group(1) if match else None


def _comparable(version: str) -> Version:
    """A reported version as PEP 440 sees it; a vendor suffix outside PEP 440 (kubectl's
    "v1.32.4-dispatcher") is judged by its x.y.z."""
    try:
        return Version(version)
    except InvalidVersion:
        return Version(version.split("-", 1)[0].split("+", 1)[0])


@dataclass(frozen=True)
class Installed:
    """One binary as found on PATH (outside our bin folder), judged against its range."""

    name: str
    path: Path | None
    version: str | None
    usable: bool
    # Why it is not used, where it was found; a warning where its version could not be read.
    note: str = ""
    warning: str = ""


def shown(spec: SpecifierSet) -> str:
    """A range as the lock writes it, lower bound first (SpecifierSet sorts '<' first)."""
    return ",".join(sorted((str(s) for s in spec), reverse=True))


def supported_range(tool: Tool, name: str) -> SpecifierSet:
    """The versions of an installed binary used as they are: the lock's range, else the pin."""
    return tool.supported.get(name) or SpecifierSet(f"=={tool.reported_version.lstrip('v')}")


def find_installed(tool: Tool, name: str) -> Installed:
    location = shutil.which(name, path=_path_without_ours())
    if not location:
        return Installed(name, None, None, False)
    path = Path(location)
    version = reported_version(path, name)
    if version is None:
        probe = " ".join([name, *VERSION_PROBES.get(name, ["--version"])])
        return Installed(
            name, path, None, False, warning=f"{path}: `{probe}` names no version; building {name} from source instead"
        )
    allowed = supported_range(tool, name)
    if _comparable(version) not in allowed:
        return Installed(
            name, path, version, False, note=f"{name} {version} on PATH ({path}) is outside {shown(allowed)}"
        )
    return Installed(name, path, version, True)


@dataclass
class PathChoice:
    """What an installed copy provides for a tool: all of it, some binaries, or nothing."""

    taken: dict[str, Installed]
    whole: bool
    notes: list[str]
    warnings: list[str]


def _installed(tool: Tool) -> tuple[dict[str, Installed], bool, list[str], list[str]]:
    """The tool's binaries and helpers as installed; whether all are there and supported."""
    found = {name: find_installed(tool, name) for name in tool.binaries}
    notes = [f.note for f in found.values() if f.note]
    warnings = [f.warning for f in found.values() if f.warning]
    usable = all(f.usable for f in found.values())
    for companion in tool.companions:
        # Data companions are not found on PATH: such a tool comes from the cache.
        location = shutil.which(companion.name, path=_path_without_ours()) if companion.into == "bin" else None
        if not location:
            usable = False
            if any(f.path for f in found.values()):
                notes.append(f"{companion.name}, which {tool.name} runs, is not on PATH")
            continue
        found[companion.name] = Installed(companion.name, Path(location), None, True)
    return found, usable, notes, warnings


def _from_path(tool: Tool, paired: Tool | None = None) -> PathChoice:
    """Installed official binaries inside their supported range are used as they are."""
    found, usable, notes, warnings = _installed(tool)
    if usable and paired:
        # One release's CLI and language host: both installed, the same version, or neither used.
        partner, partner_usable, _, _ = _installed(paired)
        versions = {f.version for f in [*found.values(), *partner.values()] if f.version}
        if not partner_usable or len(versions) != 1:
            usable = False
            notes.append(f"{tool.name} is used from PATH only with {paired.name} of the same release beside it")
    if usable:
        return PathChoice(found, True, notes, warnings)
    # A binary with its own range stands alone (kubectl beside a built apiserver); a tool with
    # helpers or a partner is taken whole or not at all.
    alone = not tool.companions and not paired
    taken = {n: f for n, f in found.items() if alone and f.usable and n in tool.supported}
    return PathChoice(taken, False, notes, warnings)


def _path_without_ours() -> str:
    ours = str(bin_dir())
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != ours)


def cached_dir(tool: Tool) -> Path:
    return tool_cache_root() / tool.name / f"{tool.version}-{tool.cache_key}"


def _prepare_pulumi_provider_schema(source: Path, tool: Tool) -> None:
    """Pulumi providers embed their schema with the version stamped in; upstream writes those
    files with `go generate`, and the published module carries only the unstamped originals."""
    folder = source / "cmd" / f"pulumi-resource-{tool.name.removeprefix('pulumi-resource-')}"
    schema = json.loads((folder / "schema.json").read_text())
    schema["version"] = tool.reported_version.lstrip("v")
    (folder / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
    mapping = folder / "terraform-mapping.json"
    if mapping.exists():
        compact = json.dumps(json.loads(mapping.read_text()), separators=(",", ":"))
        (folder / "terraform-mapping-embed.json").write_text(compact)


# Steps a lock entry names under `prepare`, run over a writable copy of the module source.
PREPARE_STEPS = {"pulumi-provider-schema": _prepare_pulumi_provider_schema}


def _fetch_companions(tool: Tool, target: Path, env: dict[str, str]) -> dict[str, Path]:
    fetched: dict[str, Path] = {}
    for companion in tool.companions:
        progress.phase(f"companion {companion.name} from {companion.module}@{tool.version}")
        comp_info = _module_download(companion.module, tool.version, target, env)
        source = Path(comp_info["Dir"]) / companion.path
        if not source.is_file():
            raise ToolBuildError(f"{companion.module}@{tool.version} has no {companion.path}")
        folder = target / companion.into
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / companion.name)
        (folder / companion.name).chmod(0o755 if companion.into == "bin" else 0o644)
        fetched[companion.name] = folder / companion.name
    return fetched


def mirror_folder(tool: Tool) -> Path | None:
    """Where a mirror (MLPLATFORM_MIRROR) keeps the tool's source; None without a mirror."""
    from mlplatform.config.load import MIRROR_ENV, repo_path

    setting = os.environ.get(MIRROR_ENV)
    return repo_path(setting) / tool.mirror_source if setting and tool.mirror_source else None


def _no_source(tool: Tool, refused: ToolBuildError) -> ToolBuildError:
    folder = mirror_folder(tool)
    where = f"{folder} has no go.mod" if folder else "MLPLATFORM_MIRROR is not set"
    bare = tool.reported_version.lstrip("v")
    ranges = " or ".join(sorted({shown(spec) for spec in tool.supported.values()})) or f"=={bare}"
    return ToolBuildError(
        f"{tool.name} {tool.version} has no source here: {refused}; and no mirror holds it ({where}).\n"
        f"Either install the official Pulumi CLI, which bundles {tool.name}: "
        f"`curl -fsSL https://get.pulumi.com | sh -s -- --version {bare}` (or another release in {ranges}), "
        "put ~/.pulumi/bin on PATH and run `mlplatform tools` again;\n"
        f"or set MLPLATFORM_MIRROR to a mirror folder holding {tool.mirror_source}/: the upstream source "
        f"folder of {tool.module} at {tool.version} (go.mod, go.sum, main.go)."
    )


def _module_source(tool: Tool, target: Path, env: dict[str, str]) -> tuple[Path, bool]:
    """The module's source folder, and whether it is a mirror's (built from a copy then)."""
    folder = mirror_folder(tool)
    if folder and (folder / "go.mod").is_file():
        return folder, True
    try:
        info = _module_download(tool.module, tool.version, target, env)
    except ToolBuildError as exc:
        if tool.mirror_source:
            raise _no_source(tool, exc) from exc
        raise
    return Path(info["Dir"]), False


def build_tool(tool: Tool) -> dict[str, Path]:
    target = cached_dir(tool)
    out = target / "bin"
    src = target / "src"
    if src.exists():
        shutil.rmtree(src)
    out.mkdir(parents=True, exist_ok=True)
    env = go_env()
    progress.phase(f"go mod download {tool.module}@{tool.version}")
    source, from_mirror = _module_source(tool, target, env)
    # Upstream's local replaces point at sibling folders; the wrapper points them at the
    # published modules (localReplaceVersion, pins).
    replaces = upstream_replaces((source / "go.mod").read_text(), tool.local_replace_version)
    replaces += [f"{module} => {module} {version}" for module, version in sorted(tool.pins.items())]
    if tool.prepare and tool.prepare not in PREPARE_STEPS:
        raise ToolBuildError(
            f"{tool.name}: unknown prepare step {tool.prepare!r} (allowed: {', '.join(PREPARE_STEPS)})"
        )
    if tool.prepare or from_mirror:
        # A writable copy outside the repository and the mirror, built in place of the module.
        copy = src / "module"
        shutil.copytree(source, copy)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        if tool.prepare:
            progress.phase(f"prepare {tool.prepare}")
            PREPARE_STEPS[tool.prepare](copy, tool)
        replaces.append(f"{tool.module} => ./module")
    _write_wrapper(tool, src, replaces)
    progress.phase("go mod tidy")
    _run(["go", "mod", "tidy"], src, env)
    ldflags = " ".join(f"-X '{k}={v}'" for k, v in sorted(tool.rendered_ldflags().items()))
    built: dict[str, Path] = {}
    for name, pkg in tool.binaries.items():
        target_pkg = "." if tool.main_shim else pkg
        progress.phase(f"go build {pkg}")
        _run(
            ["go", "build", "-trimpath", "-ldflags", f"-s -w {ldflags}", "-o", str(out / name), target_pkg],
            src,
            env,
        )
        built[name] = out / name
    built.update(_fetch_companions(tool, target, env))
    shutil.rmtree(src, ignore_errors=True)
    return built


def _link(binaries: dict[str, Path]) -> None:
    """Point the links in use at these binaries. A link is swapped in one rename, never
    removed first: a test run or a plane using the tools meanwhile always finds one."""
    for name, path in binaries.items():
        folder = SHARE_DIR if path.parent.name == "share" else bin_dir()
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / name
        if link.is_symlink() and os.readlink(link) == str(path):
            continue
        fresh = folder / f".{name}.{os.getpid()}.{threading.get_ident()}"
        if fresh.is_symlink() or fresh.exists():
            fresh.unlink()
        fresh.symlink_to(path)
        os.replace(fresh, link)


def ensure_tool(tool: Tool, rebuild: bool = False, link: bool = True, paired: Tool | None = None) -> ToolResult:
    """Use the installed tool where its version is supported, else reuse or build it;
    `link=False` builds without touching the links in use. `paired` is the lock's partner of
    `tool` (read from the lock where not given)."""
    started = time.monotonic()
    marker = cached_dir(tool) / "complete.json"
    choice = PathChoice({}, False, [], [])
    if not rebuild:
        if tool.paired_with and paired is None:
            from mlplatform.lock import load_lock

            paired = load_lock().tools[tool.paired_with]
        choice = _from_path(tool, paired)
        if choice.whole:
            _link({name: found.path for name, found in choice.taken.items()})
            return ToolResult(
                tool.name,
                next(f.version for f in choice.taken.values() if f.version),
                "path",
                time.monotonic() - started,
                found=choice.taken,
                notes=choice.notes,
            )
        if marker.exists():
            record = json.loads(marker.read_text())
            binaries = {k: Path(v) for k, v in record["binaries"].items()}
            if all(p.exists() for p in binaries.values()):
                _link({**binaries, **{name: found.path for name, found in choice.taken.items()}})
                return ToolResult(
                    tool.name,
                    tool.version,
                    "cache",
                    time.monotonic() - started,
                    f"built in {record['seconds']:.0f}s",
                    found=choice.taken,
                    notes=choice.notes,
                    warnings=choice.warnings,
                )
    # Only a build is a long step; the caller prints its outcome (the `mlplatform tools` table).
    with progress.step(f"build {tool.name} {tool.version}", report=False):
        try:
            binaries = build_tool(tool)
        except ToolBuildError as exc:
            return ToolResult(
                tool.name,
                tool.version,
                "unavailable",
                time.monotonic() - started,
                str(exc),
                notes=choice.notes,
                warnings=choice.warnings,
            )
    seconds = time.monotonic() - started
    marker.write_text(json.dumps({"binaries": {k: str(v) for k, v in binaries.items()}, "seconds": seconds}, indent=2))
    if link:
        _link({**binaries, **{name: found.path for name, found in choice.taken.items()}})
    return ToolResult(
        tool.name, tool.version, "built", seconds, found=choice.taken, notes=choice.notes, warnings=choice.warnings
    )


def select_tools(lock: Lock, only: list[str] | None) -> list[Tool]:
    if not only:
        return list(lock.tools.values())
    names: list[str] = []
    for item in only:
        expanded = GROUPS.get(item, (item,))
        for name in expanded:
            if name not in lock.tools:
                known = ", ".join(sorted([*lock.tools, *GROUPS]))
                raise ToolBuildError(f"unknown tool or group {name!r} (allowed: {known})")
            if name not in names:
                names.append(name)
    return [lock.tools[n] for n in names]
