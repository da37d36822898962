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
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
    version: str
    source: str  # "cache", "built", "path", "stand-in" or "unavailable"
    seconds: float
    detail: str = ""


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


def _version_matches(binary: Path, name: str, version: str) -> bool:
    probe = VERSION_PROBES.get(name, ["--version"])
    try:
        proc = subprocess.run([str(binary), *probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return version.lstrip("v") in (proc.stdout + proc.stderr)


def _from_path(tool: Tool) -> dict[str, Path] | None:
    """Official binaries already installed at the pinned version are used as they are."""
    found: dict[str, Path] = {}
    for name in tool.binaries:
        location = shutil.which(name, path=_path_without_ours())
        if not location or not _version_matches(Path(location), name, tool.reported_version):
            return None
        found[name] = Path(location)
    for companion in tool.companions:
        # Data companions are not found on PATH: such a tool comes from the cache.
        location = shutil.which(companion.name, path=_path_without_ours()) if companion.into == "bin" else None
        if not location:
            return None
        found[companion.name] = Path(location)
    return found


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


def build_tool(tool: Tool) -> dict[str, Path]:
    target = cached_dir(tool)
    out = target / "bin"
    src = target / "src"
    if src.exists():
        shutil.rmtree(src)
    out.mkdir(parents=True, exist_ok=True)
    env = go_env()
    progress.phase(f"go mod download {tool.module}@{tool.version}")
    info = _module_download(tool.module, tool.version, target, env)
    replaces = upstream_replaces(Path(info["GoMod"]).read_text(), tool.local_replace_version)
    replaces += [f"{module} => {module} {version}" for module, version in sorted(tool.pins.items())]
    if tool.prepare:
        if tool.prepare not in PREPARE_STEPS:
            raise ToolBuildError(
                f"{tool.name}: unknown prepare step {tool.prepare!r} (allowed: {', '.join(PREPARE_STEPS)})"
            )
        progress.phase(f"prepare {tool.prepare}")
        copy = src / "module"
        shutil.copytree(info["Dir"], copy)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
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


def _install_stand_in(tool: Tool) -> dict[str, Path]:
    """Where the proxy refuses the module, run the project's own implementation as the tool.

    The launcher goes into the project's bin folder, not the shared cache: it names the
    interpreter of this checkout's virtualenv.
    """
    target = cached_dir(tool)
    companions = _fetch_companions(tool, target, go_env())
    (name,) = tool.binaries
    launcher = bin_dir().parent / "stand-in" / name
    launcher.parent.mkdir(parents=True, exist_ok=True)
    shim_args = "".join(f' --exec-shim "{path}"' for path in companions.values())
    launcher.write_text(
        "#!/bin/sh\n"
        f"# {tool.module}@{tool.version} cannot be built here: the Go module proxy refuses it.\n"
        f"# {tool.stand_in} stands in for it.\n"
        f'exec "{sys.executable}" -m {tool.stand_in}{shim_args} "$@"\n'
    )
    launcher.chmod(0o755)
    return {name: launcher, **companions}


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


def ensure_tool(tool: Tool, rebuild: bool = False, link: bool = True) -> ToolResult:
    """Reuse or build one tool; `link=False` builds without touching the links in use."""
    started = time.monotonic()
    marker = cached_dir(tool) / "complete.json"
    if not rebuild:
        on_path = _from_path(tool)
        if on_path:
            _link(on_path)
            return ToolResult(tool.name, tool.version, "path", time.monotonic() - started)
        if marker.exists():
            record = json.loads(marker.read_text())
            binaries = {k: Path(v) for k, v in record["binaries"].items()}
            if all(p.exists() for p in binaries.values()):
                _link(binaries)
                return ToolResult(
                    tool.name,
                    tool.version,
                    "cache",
                    time.monotonic() - started,
                    f"built in {record['seconds']:.0f}s",
                )
    # Only a build is a long step; the caller prints its outcome (the `mlplatform tools` table).
    with progress.step(f"build {tool.name} {tool.version}", report=False):
        try:
            binaries = build_tool(tool)
        except ToolBuildError as exc:
            if not tool.stand_in:
                return ToolResult(tool.name, tool.version, "unavailable", time.monotonic() - started, str(exc))
            try:
                binaries = _install_stand_in(tool)
            except ToolBuildError as companion_exc:
                return ToolResult(
                    tool.name, tool.version, "unavailable", time.monotonic() - started, str(companion_exc)
                )
            _link(binaries)
            return ToolResult(
                tool.name, tool.version, "stand-in", time.monotonic() - started, f"{tool.stand_in}: {exc}"
            )
    seconds = time.monotonic() - started
    marker.write_text(json.dumps({"binaries": {k: str(v) for k, v in binaries.items()}, "seconds": seconds}, indent=2))
    _link(binaries)
    return ToolResult(tool.name, tool.version, "built", seconds)


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
