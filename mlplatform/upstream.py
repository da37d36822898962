"""Upstream sources pinned in the lock, resolved online or from the offline mirror."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlplatform.lock import LOCK_FILE, LockError, read_lock_document
from mlplatform.plain_data import plain_copy

# The namespace Kubeflow's components (Pipelines, Katib, the training operator) install into.
KUBEFLOW_NAMESPACE = "kubeflow"
# Namespaces the upstream components we install live in, whether or not their module is on:
# a namespace of ours there would share their network policies and RBAC.
UPSTREAM_NAMESPACES = {
    KUBEFLOW_NAMESPACE: "Kubeflow Pipelines, Katib and the training operator",
    "kubeflow-system": "the Kubeflow trainer",
    "jobset-system": "JobSet",
    "notebook-controller-system": "the notebook controller",
    "kserve": "KServe",
    "cert-manager": "cert-manager",
    "kueue-system": "Kueue",
    "node-feature-discovery": "Node Feature Discovery",
    "istio-system": "Istio",
    "auth": "Dex",
    "oauth2-proxy": "oauth2-proxy",
}


class UpstreamError(RuntimeError):
    pass


class ManifestLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader without YAML 1.1's `value` type: PyYAML reads a bare `=` (an enum member in
    the Prometheus Operator's CRDs) as that type and cannot construct it; it is a string.
    libyaml's parser where PyYAML has it: the pure-Python one took most of a render."""


ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class UpstreamSource:
    name: str
    kind: str
    version: str
    raw: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.raw.get(key)

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version a stack may pin: the lock's default first, then its other releases."""
        return (self.version, *(str(v) for v in (self.raw.get("releases") or {}) if str(v) != self.version))

    def at(self, version: str) -> UpstreamSource:
        """The source at one of its versions: a release's fields override the default's."""
        if version == self.version:
            return self
        releases = {str(k): v for k, v in (self.raw.get("releases") or {}).items()}
        if version not in releases:
            raise UpstreamError(
                f"{self.name}: version {version!r} is not in the lock (allowed: {', '.join(self.versions)})"
            )
        overrides = releases[version] or {}
        raw = {k: v for k, v in self.raw.items() if k != "releases"}
        raw.update(overrides)
        raw["version"] = version
        files = {**self.files, **(overrides.get("files") or {})}
        return UpstreamSource(name=self.name, kind=self.kind, version=version, raw=raw, files=files)


def upstream_sources(lock_path: Path = LOCK_FILE, pins: dict[str, str] | None = None) -> dict[str, UpstreamSource]:
    """The lock's upstream sources, each at the version a stack pins (default: the lock's)."""
    raw = read_lock_document(lock_path) or {}
    sources = {}
    for name, spec in (raw.get("upstream") or {}).items():
        try:
            sources[name] = UpstreamSource(
                name=name,
                kind=spec["kind"],
                version=str(spec["version"]),
                raw=spec,
                files=dict(spec.get("files") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise LockError(f"{lock_path}: upstream.{name}: missing or malformed field {exc}") from exc
    for name, version in (pins or {}).items():
        if name not in sources:
            raise UpstreamError(f"pinned component {name!r} is not in the lock (allowed: {', '.join(sources)})")
        sources[name] = sources[name].at(version)
    return sources


def mirror_path_of(source: UpstreamSource, relative: str, mirror: Path) -> Path:
    """Where the mirror keeps a file: under the source's folder, at the upstream path."""
    path = mirror / source.raw["mirror"] / relative
    if not path.exists():
        raise UpstreamError(f"{source.name} {source.version}: {relative} is not in the mirror at {path.parent}")
    return path


@dataclass(frozen=True)
class MirrorEntry:
    source: str
    version: str
    key: str
    path: str
    problem: str | None


def check_mirror(mirror: Path, sources: dict[str, UpstreamSource] | None = None) -> list[MirrorEntry]:
    """Which pinned sources the mirror satisfies: each file present (a kustomize base with
    its kustomization.yaml, a CRD folder with YAML in it)."""
    entries = []
    for source in (sources or upstream_sources()).values():
        # Images are pulled by the cluster; Go modules come from the module proxy or its cache.
        if source.kind in ("image", "go-module"):
            continue
        for key, relative in source.files.items():
            path = mirror / source.raw["mirror"] / relative
            problem = None
            if not path.exists():
                problem = "missing"
            elif source.kind == "kustomize" and not (path / "kustomization.yaml").exists():
                problem = "no kustomization.yaml"
            elif path.is_dir() and not any(path.glob("*.y*ml")) and source.kind != "kustomize":
                problem = "no YAML files"
            entries.append(MirrorEntry(source.name, source.version, key, str(path.relative_to(mirror)), problem))
    return entries


def read_text(source: UpstreamSource, key: str, mirror: Path | None) -> str:
    relative = source.files[key]
    if mirror is not None:
        return mirror_path_of(source, relative, mirror).read_text()
    url = f"{source.raw['source']}/{relative}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise UpstreamError(
            f"{source.name} {source.version}: cannot fetch {url} ({exc}); for offline installs set "
            "mirror.path or MLPLATFORM_MIRROR to a mirror of the upstream sources"
        ) from exc


def load_documents(source: UpstreamSource, key: str, mirror: Path | None) -> list[dict[str, Any]]:
    """The Kubernetes objects of one pinned upstream file (a folder: every YAML in it)."""
    if mirror is not None:
        path = mirror_path_of(source, source.files[key], mirror)
        files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
        return [doc for file in files for doc in _mirrored_documents(file)]
    return [doc for doc in yaml.load_all(read_text(source, key, None), Loader=ManifestLoader) if doc]


# Parsed mirror files of this process, by path, size and modification time: a program and the
# tests that run it many times read the same CRD files (the Prometheus operator's: 3 MB).
_PARSED: dict[tuple[str, int, int], list[dict[str, Any]]] = {}


def _mirrored_documents(file: Path) -> list[dict[str, Any]]:
    """The documents of one mirrored file, a fresh copy per call (callers change them)."""
    stat = file.stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns)
    if key not in _PARSED:
        _PARSED[key] = [doc for doc in yaml.load_all(file.read_text(), Loader=ManifestLoader) if doc]
    return plain_copy(_PARSED[key])


def kustomize_build(source: UpstreamSource, key: str, mirror: Path | None) -> list[dict[str, Any]]:
    """`kustomize build` of a pinned upstream base, with the lock's image overrides applied.

    Online the base is kustomize's remote form (<repo>/<path>?ref=<version>); offline it is
    the mirror's copy of the same tree.
    """
    import os
    import shutil
    import subprocess
    import tempfile

    from mlplatform.paths import BIN_DIR

    binary = BIN_DIR / "kustomize" if (BIN_DIR / "kustomize").exists() else shutil.which("kustomize")
    if not binary:
        raise UpstreamError(
            f"{source.name}: kustomize is needed to build {source.files[key]}: run `mlplatform tools --only render`"
        )
    images = []
    for name, reference in (source.get("images") or {}).items():
        new_name, _, tag = reference.rpartition(":")
        images.append({"name": name, "newName": new_name, "newTag": tag})
    with tempfile.TemporaryDirectory(prefix=f"mlplatform-{source.name}-") as work:
        if mirror is not None:
            base = mirror_path_of(source, source.files[key], mirror)
            # kustomize refuses absolute resource paths: name the base relative to the overlay.
            resource = os.path.relpath(base, work)
        else:
            resource = f"{source.raw['source']}/{source.files[key]}?ref={source.get('ref') or source.version}"
        overlay = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [resource]}
        if images:
            overlay["images"] = images
        Path(work, "kustomization.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
        proc = subprocess.run(
            [str(binary), "build", "--load-restrictor", "LoadRestrictionsNone", work], capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise UpstreamError(f"{source.name} {source.version}: kustomize build failed: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
