"""Kustomize overlays, app first: `overlays/<component>/base` is what every environment gets,
`overlays/<component>/<env>` a variant only where that environment differs.

An overlay names its upstream base as `../../upstream/<source>/<key>`: `overlays/upstream/` is
not in the repository. `lay_down` writes it (`mlplatform overlays prepare`), one kustomization
per pinned base: the mirror's copy in airgap mode, kustomize's remote form online, a Go
module's tree from the module proxy. Upstream trees that themselves name remote bases (Kubeflow
Pipelines names Argo Workflows by its GitHub URL) are copied there in airgap mode with those
references pointed at the same tree fetched as a pinned Go module, so an offline build never
reaches the network beyond the module proxy (or its local cache). Every overlay then builds
with a plain `kustomize build`; `build_overlay` runs that same lay-down and build.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mlplatform.config.model import ENVIRONMENTS
from mlplatform.paths import BIN_DIR, REPO_ROOT, overlay_cache_root
from mlplatform.plain_data import plain_copy
from mlplatform.upstream import ManifestLoader, UpstreamError, UpstreamSource, mirror_path_of, read_text

OVERLAYS_DIR = REPO_ROOT / "overlays"
# The laid-down upstream bases, inside overlays/ so the overlays name them by relative path.
UPSTREAM = "upstream"
BASE = "base"
# Shared optional features (`kind: Component`), not an app.
COMPONENTS_DIR = "components"
# Upstream trees copied whole (airgap): under a name no source can take.
_TREES = "_trees"
_UPSTREAM_REF = re.compile(r"(?:\.\./)+upstream/(?P<source>[a-z0-9-]+)/(?P<key>[a-z0-9-]+)$")


class OverlayError(RuntimeError):
    pass


def components(root: Path | None = None) -> list[str]:
    """Every app with an overlay: a folder of `overlays/` holding `base/kustomization.yaml`."""
    root = root or OVERLAYS_DIR
    return sorted(path.parent.parent.name for path in root.glob(f"*/{BASE}/kustomization.yaml"))


def overlay_names(root: Path | None = None) -> list[str]:
    """Every overlay that builds on its own: `<component>/base` and each `<component>/<env>`."""
    root = root or OVERLAYS_DIR
    return sorted(
        f"{component}/{folder}"
        for component in components(root)
        for folder in (BASE, *ENVIRONMENTS)
        if (root / component / folder / "kustomization.yaml").exists()
    )


def overlay_for(component: str, environment: str, root: Path | None = None) -> str:
    """The overlay an environment installs for a component: its own variant where it has
    one, else the component's base."""
    root = root or OVERLAYS_DIR
    if environment not in ENVIRONMENTS:
        raise OverlayError(f"no environment {environment!r} (allowed: {', '.join(ENVIRONMENTS)})")
    known = components(root)
    if component not in known:
        raise OverlayError(f"no overlay for component {component!r} (allowed: {', '.join(known)})")
    variant = root / component / environment / "kustomization.yaml"
    return f"{component}/{environment if variant.exists() else BASE}"


def kustomize_binary() -> str:
    if (BIN_DIR / "kustomize").exists():
        return str(BIN_DIR / "kustomize")
    found = shutil.which("kustomize")
    if not found:
        raise OverlayError("kustomize is needed to build the overlays: run `mlplatform tools --only render`")
    return found


def _references(tree: Path, overlay: str) -> set[tuple[str, str]]:
    """(source, key) of every upstream base the overlay reaches through its local bases."""
    found: set[tuple[str, str]] = set()
    pending, seen = [(tree / overlay).resolve()], set()
    while pending:
        folder = pending.pop()
        if folder in seen or not (folder / "kustomization.yaml").exists():
            continue
        seen.add(folder)
        document = yaml.safe_load((folder / "kustomization.yaml").read_text()) or {}
        for entry in (document.get("resources") or []) + (document.get("components") or []):
            match = _UPSTREAM_REF.search(str(entry))
            if match:
                found.add((match["source"], match["key"]))
            elif "://" not in str(entry):
                pending.append((folder / str(entry)).resolve())
    return found


def go_module_dir(source: UpstreamSource) -> Path:
    """The source tree of a pinned Go module, from the module cache or the module proxy."""
    from mlplatform.go import go_env

    if not shutil.which("go"):
        raise UpstreamError(
            f"{source.name} {source.version}: the Go toolchain is needed to fetch {source.get('module')}"
        )
    with tempfile.TemporaryDirectory(prefix="mlplatform-gomod-") as work:
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{source.get('module')}@{source.version}"],
            cwd=work,
            env=go_env(),
            capture_output=True,
            text=True,
        )
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {"Error": (proc.stderr or "").strip() or f"exit status {proc.returncode}"}
    if info.get("Error") or not info.get("Dir"):
        reason = " ".join(str(info.get("Error", "")).split())
        raise UpstreamError(f"{source.name} {source.version}: cannot fetch {source.get('module')}: {reason}")
    return Path(info["Dir"])


def _point_remote_bases(tree: Path, sources: dict[str, UpstreamSource]) -> None:
    """Point the tree's remote references at the pinned Go module that serves the same files."""
    served = {s.get("serves"): s for s in sources.values() if s.kind == "go-module" and s.get("serves")}
    pattern = re.compile(r"(?P<repo>https://github\.com/[\w.-]+/[\w.-]+)/(?P<path>[^?\s]+)\?ref=(?P<ref>[\w.-]+)")
    module_dirs: dict[str, Path] = {}
    for kustomization in tree.rglob("kustomization.yaml"):
        text = kustomization.read_text()

        def local(match: re.Match[str], here: Path = kustomization) -> str:
            source = served.get(match["repo"])
            if source is None:
                return match[0]
            if match["ref"] != source.version:
                raise UpstreamError(
                    f"{here}: names {match['repo']} at {match['ref']}, but the lock pins {source.name} {source.version}"
                )
            if source.name not in module_dirs:
                module_dirs[source.name] = go_module_dir(source)
            return os.path.relpath(module_dirs[source.name] / match["path"], here.parent)

        rewritten = pattern.sub(local, text)
        if rewritten != text:
            kustomization.write_text(rewritten)


def _all_references(root: Path) -> set[tuple[str, str]]:
    """(source, key) of every upstream base some overlay under `root` names."""
    found: set[tuple[str, str]] = set()
    for name in overlay_names(root):
        found |= _references(root, name)
    return found


def _materialise(
    upstream: Path, source: UpstreamSource, key: str, sources: dict[str, UpstreamSource], mirror: Path | None
) -> None:
    """Write `<upstream>/<source>/<key>/kustomization.yaml`: a plain kustomization over the
    pinned base, so `kustomize build` needs no flag (no file it loads lies outside its folder)."""
    if key not in source.files:
        raise OverlayError(
            f"overlays name upstream/{source.name}/{key}, but the lock has no such file for {source.name}"
        )
    target = upstream / source.name / key
    target.mkdir(parents=True, exist_ok=True)
    relative = source.files[key]
    if source.kind == "go-module":
        resource = os.path.relpath(go_module_dir(source) / relative, target)
    elif mirror is not None and source.get("root"):
        root = source.get("root")
        # The whole upstream tree, so its relative and remote references resolve.
        copied = upstream / _TREES / source.name
        if not copied.exists():
            shutil.copytree(mirror_path_of(source, root, mirror), copied)
            _point_remote_bases(copied, sources)
        resource = os.path.relpath(copied / os.path.relpath(relative, root), target)
    elif source.kind == "kustomize":
        if mirror is not None:
            resource = os.path.relpath(mirror_path_of(source, relative, mirror), target)
        else:
            resource = f"{source.raw['source']}/{relative}?ref={source.get('ref') or source.version}"
    else:
        # A manifest file: copied beside its kustomization (kustomize loads a file only from
        # within the folder it builds, unless told otherwise).
        resource = Path(relative).name
        (target / resource).write_text(read_text(source, key, mirror))
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [resource],
    }
    images = []
    for name, reference in (source.get("images") or {}).items():
        new_name, _, tag = reference.rpartition(":")
        images.append({"name": name, "newName": new_name, "newTag": tag})
    if images:
        kustomization["images"] = images
    (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))


def _lay_down_into(
    upstream: Path,
    references: Iterable[tuple[str, str]],
    sources: dict[str, UpstreamSource],
    mirror: Path | None,
) -> None:
    for source_name, key in sorted(references):
        if source_name not in sources:
            raise OverlayError(f"overlays name upstream/{source_name}, which is not in the lock")
        _materialise(upstream, sources[source_name], key, sources, mirror)


def lay_down(
    sources: dict[str, UpstreamSource], mirror: Path | None, root: Path | None = None
) -> list[tuple[str, str]]:
    """Write `<root>/upstream/` (default: the checkout's overlays/) with every upstream base the
    overlays name, replacing what an earlier run left; the (source, key) pairs laid down."""
    root = (root or OVERLAYS_DIR).resolve()
    references = sorted(_all_references(root))
    # Written beside the final folder (the same depth, so every relative path holds after the
    # rename): a failed run leaves the previous tree in place.
    partial = Path(tempfile.mkdtemp(prefix=f".{UPSTREAM}-", dir=root))
    try:
        _lay_down_into(partial, references, sources, mirror)
        final = root / UPSTREAM
        if final.exists():
            stale = final.rename(root / f".{UPSTREAM}-stale-{os.getpid()}")
            partial.rename(final)
            shutil.rmtree(stale)
        else:
            partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return references


# One build per overlay, pinned versions and mirror in a process: a stack's program, its render
# and the tests build the same overlays many times.
_BUILDS: dict[tuple[str, tuple[tuple[str, str], ...], str], list[dict[str, Any]]] = {}
# Builds kept on disk, so a new process (each `pulumi up` and `preview`, each render) skips
# kustomize and the YAML parse: most of the program's time for a stack with ML services.
_CACHE_FORMAT = "2"
_CACHE_ENTRIES_KEPT = 256


def build_overlay(
    component: str, environment: str, sources: dict[str, UpstreamSource], mirror: Path | None
) -> list[dict[str, Any]]:
    """The objects of `component` in `environment` (its variant, else its base) over the pinned
    bases; a fresh copy each call, so callers may change them."""
    overlay = overlay_for(component, environment)
    # Keyed by the overlay folder: environments without a variant share one build.
    key = (overlay, tuple(sorted((s.name, s.version) for s in sources.values())), str(mirror))
    if key not in _BUILDS:
        _BUILDS[key] = _cached_build(overlay, sources, mirror)
    return plain_copy(_BUILDS[key])


def _overlay_files(root: Path) -> list[Path]:
    """The overlays' own files: what `_build` copies (not the laid-down bases, not the docs)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not path.relative_to(root).parts[0].startswith((UPSTREAM, f".{UPSTREAM}"))
        and path.suffix != ".md"
    )


@functools.lru_cache(maxsize=256)
def _mirror_files(mirror: Path, folder: str) -> tuple[tuple[Path, Path], ...]:
    """(path relative to the mirror, path) of each file of a mirrored source, in order. Listed
    once per process (a program run builds a dozen overlays over the same sources); each file
    is still stat-ed at every digest, so a file refreshed in place changes the key."""
    return tuple((path.relative_to(mirror), path) for path in sorted((mirror / folder).rglob("*")) if path.is_file())


def build_digest(overlay: str, sources: dict[str, UpstreamSource], mirror: Path | None) -> str:
    """A digest of everything a build of `overlay` (`<component>/<folder>`) reads: the overlays
    as `_build` copies them, every pinned source's lock entry, the mirrored files of the sources
    the overlay names (size and mtime: a pinned release does not change, but a mirror can be
    refreshed in place) and kustomize."""
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            digest.update(str(part).encode())
            digest.update(b"\0")

    add(_CACHE_FORMAT, overlay, mirror)
    for path in _overlay_files(OVERLAYS_DIR):
        add(path.relative_to(OVERLAYS_DIR), hashlib.sha256(path.read_bytes()).hexdigest())
    for name in sorted(sources):
        add(name, json.dumps(sources[name].raw, sort_keys=True, default=str), sorted(sources[name].files.items()))
    if mirror is not None:
        for source_name, _ in sorted(_references(OVERLAYS_DIR, overlay)):
            folder = sources[source_name].get("mirror") if source_name in sources else None
            if not folder:
                continue
            for relative, path in _mirror_files(mirror, folder):
                stat = path.stat()
                add(relative, stat.st_size, stat.st_mtime_ns)
    binary = Path(kustomize_binary()).resolve()
    stat = binary.stat()
    add(binary, stat.st_size, stat.st_mtime_ns)
    return digest.hexdigest()


def _cached_build(overlay: str, sources: dict[str, UpstreamSource], mirror: Path | None) -> list[dict[str, Any]]:
    folder = overlay_cache_root()
    if folder is None:
        return _build(overlay, sources, mirror)
    entry = folder / f"{build_digest(overlay, sources, mirror)}.json"
    try:
        documents = json.loads(entry.read_text())
        if isinstance(documents, list):
            os.utime(entry)  # recently used, so kept by _prune
            return documents
    except (OSError, ValueError):
        pass  # absent or cut short: build again
    documents = _build(overlay, sources, mirror)
    try:
        text = json.dumps(documents)
    except (TypeError, ValueError):
        return documents
    # YAML holds what JSON cannot (dates, integer keys): such a build is not kept.
    if json.loads(text) != documents:
        return documents
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = entry.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, entry)
        _prune(folder)
    except OSError:
        pass  # a read-only cache only costs time
    return documents


def _prune(folder: Path) -> None:
    """Keep the newest entries: every edit of an overlay leaves a build no key reaches again."""
    entries = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime, reverse=True)
    for stale in entries[_CACHE_ENTRIES_KEPT:]:
        stale.unlink(missing_ok=True)


def kustomize_build(folder: Path, name: str) -> str:
    """`kustomize build` as a user runs it: no flags."""
    proc = subprocess.run([kustomize_binary(), "build", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OverlayError(f"overlay {name}: kustomize build failed: {proc.stderr.strip()}")
    return proc.stdout


def _build(overlay: str, sources: dict[str, UpstreamSource], mirror: Path | None) -> list[dict[str, Any]]:
    """The overlay built as a user builds it after `mlplatform overlays prepare`, in a scratch
    copy of overlays/ with its upstream bases laid down by the same code: a stack's pins and
    mirror need not match what the checkout's overlays/upstream holds, and concurrent builds
    never write the same folder."""
    with tempfile.TemporaryDirectory(prefix="mlplatform-overlay-") as scratch:
        tree = Path(scratch) / "overlays"
        tree.mkdir()
        for path in _overlay_files(OVERLAYS_DIR):
            copy = tree / path.relative_to(OVERLAYS_DIR)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        _lay_down_into(tree / UPSTREAM, _references(tree, overlay), sources, mirror)
        output = kustomize_build(tree / overlay, overlay)
    return [doc for doc in yaml.load_all(output, Loader=ManifestLoader) if doc]
