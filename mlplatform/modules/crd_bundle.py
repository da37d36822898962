"""A module's CRDs as one Helm release (platform.crdInstall: release, the default), or one
resource per CRD (objects).

Why: the Kubernetes provider forgets its copy of the API server's OpenAPI document after every
CRD it creates, and the next check or create, which the engine runs one resource at a time,
fetches and parses the whole document again. With one resource per CRD, a stack with 56 CRDs
spends a second per CRD on that path before anything depending on them starts. A release is one
step: Helm applies the CRDs together and waits until each is Established.

The release installs a copy of our chart `charts/crd-bundle` whose `files/` hold the module's
CRDs, written by the program under `.mlplatform/crd-releases/<release>-<digest>/` in the
project's root (the engine's working directory: the same relative path on every machine). The
release's values only list each CRD's name, group and kind, so the stack's state holds names, not
the schemas (held three times, they were most of its bytes); a render reads the CRDs back from
the copy, and the policies see what each release defines."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pulumi
import yaml

from mlplatform.modules import placement
from mlplatform.modules.base import CRD_TYPE, ModuleContext, create_object
from mlplatform.paths import REPO_ROOT

# Where the copies go, relative to the project's root.
BUNDLE_DIR = ".mlplatform/crd-releases"
SOURCE_CHART = REPO_ROOT / "charts" / "crd-bundle"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
VALUES_KEY = "customResourceDefinitions"
# libyaml's when installed.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Helm's limit on a release name.
_NAME_LIMIT = 53
# Helm waits for every CRD to be Established; creating them takes seconds, a large upgrade longer.
TIMEOUT_SECONDS = 600


def release_name(name: str) -> str:
    """`<name>-crds`: the release `mlplatform recover` recognises as a CRD release."""
    full = f"{name}-crds"
    if len(full) > _NAME_LIMIT:
        raise ValueError(f"CRD release name {full!r} is longer than Helm's {_NAME_LIMIT} characters")
    return full


def is_bundle(resource_type: str, inputs: Any) -> bool:
    """A registered resource (type, inputs) that is one of these releases."""
    if resource_type != RELEASE_TYPE or not isinstance(inputs, dict):
        return False
    chart = inputs.get("chart")
    return isinstance(chart, str) and chart.startswith(BUNDLE_DIR + "/")


def chart_root() -> Path:
    """Where the copies are written: the engine's working directory, the project's root, whose
    relative path the provider resolves; this checkout under mocks (a render, a test), wherever
    it is run from."""
    from mlplatform.modules.base import under_mocks

    return REPO_ROOT if under_mocks() else Path.cwd()


def bundled_crds(inputs: Any, root: Path | None = None) -> list[dict[str, Any]]:
    """The CRDs a release installs, read back from its chart copy under `root` (by default this
    checkout, where a render's run wrote it), in the order its values list them."""
    chart = (root or REPO_ROOT) / inputs["chart"]
    listed = (inputs.get("values") or {}).get(VALUES_KEY) or []
    return [_read_file((chart / "files" / f"{entry['name']}.yaml").read_text()) for entry in listed]


def adapted(manifest: dict[str, Any], transformations: Sequence[Callable[..., Any]]) -> dict[str, Any]:
    """One CRD after the stack transformations that every CRD of the stack gets (dropped
    descriptions, conversion on the simulated plane): a release's CRDs are not registered as
    resources, so the program's stack transformations are applied here, the same functions."""
    # Each transformation copies what it changes; the manifest itself is left as it came.
    body = manifest
    for transformation in transformations:
        props = {key: value for key, value in body.items() if key not in ("apiVersion", "kind")}
        args = pulumi.ResourceTransformationArgs(
            resource=None,  # type: ignore[arg-type]  # the transformations read type_ and props only
            type_=CRD_TYPE,
            name=body["metadata"]["name"],
            props=props,
            opts=pulumi.ResourceOptions(),
        )
        result = transformation(args)
        if result is not None:
            body = {"apiVersion": body["apiVersion"], "kind": body["kind"], **result.props}
    return body


def _without_nulls(value: Any) -> Any:
    """Map entries whose value is null left out, as the engine leaves them out of a resource's
    inputs (upstream files carry `creationTimestamp: null`)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# Helm's annotation that keeps an object on uninstall: upstream puts it on Istio's and
# cert-manager's CRDs. The stack owns its CRDs as it owns every other object: a destroy removes
# them whichever way they are installed (the engine never reads the annotation when the CRDs are
# resources of their own), so a release's copies go without it.
_HELM_RESOURCE_POLICY = "helm.sh/resource-policy"


def _removable(crd: dict[str, Any]) -> dict[str, Any]:
    """`crd` without Helm's keep policy (a copy when there was one to take out)."""
    annotations = (crd.get("metadata") or {}).get("annotations") or {}
    if _HELM_RESOURCE_POLICY not in annotations:
        return crd
    kept = {key: value for key, value in annotations.items() if key != _HELM_RESOURCE_POLICY}
    metadata = {key: value for key, value in crd["metadata"].items() if key != "annotations"}
    if kept:
        metadata["annotations"] = kept
    return {**crd, "metadata": metadata}


# Helm keeps each release's record in one Secret, whose data may hold at most 1 MiB: the record
# is base64(gzip(JSON)), the JSON holding the chart's files (base64) and the rendered manifest,
# so every CRD twice. A margin below the limit, for the record's other fields.
RECORD_LIMIT = 1_000_000


def record_bytes(crds: Sequence[dict[str, Any]]) -> int:
    """About how many bytes Helm's record of a release of these CRDs takes, encoded as Helm
    encodes it (KServe's CRDs: 259 KiB measured, 252 KiB estimated)."""
    return _record_bytes(_files(crds))


def _files(crds: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each CRD's file, as JSON: YAML is a superset of JSON, so Helm reads it as any manifest,
    and for MBs of schemas `json.dumps` takes milliseconds where YAML's emitter took seconds (the
    lab's CRDs: 4.9 s of the program, KServe's on the path of its release)."""
    return {
        f"{crd['metadata']['name']}.yaml": json.dumps(crd, sort_keys=True, separators=(",", ":")) + "\n" for crd in crds
    }


def _read_file(text: str) -> dict[str, Any]:
    # Copies written by earlier releases of the program hold YAML.
    return json.loads(text) if text.startswith("{") else yaml.load(text, Loader=_LOADER)


def _record_bytes(files: dict[str, str]) -> int:
    text = "".join(files.values()).encode()
    return len(base64.b64encode(gzip.compress(base64.b64encode(text) + text, compresslevel=6)))


class ReleaseTooLarge(ValueError):
    pass


def _index(crd: dict[str, Any]) -> dict[str, str]:
    return {"name": crd["metadata"]["name"], "group": crd["spec"]["group"], "kind": crd["spec"]["names"]["kind"]}


def write_chart(name: str, crds: Sequence[dict[str, Any]], root: Path) -> str:
    """The chart copy holding `crds`, written once per content; returns its path relative to
    `root`. The digest of the content names the folder and is the chart version's build
    metadata: a changed CRD is a new chart version, which Helm upgrades to."""
    source = {
        path.relative_to(SOURCE_CHART).as_posix(): path.read_text()
        for path in sorted(SOURCE_CHART.rglob("*"))
        if path.is_file()
        and path.relative_to(SOURCE_CHART).parts[0] in ("templates", "values.yaml", "values.schema.json")
    }
    chart_meta = yaml.safe_load((SOURCE_CHART / "Chart.yaml").read_text())
    # The digest of the data (JSON is fast); the YAML is written only for a new copy.
    digest = hashlib.sha256(json.dumps([chart_meta, source, list(crds)], sort_keys=True).encode()).hexdigest()[:16]
    chart_meta["version"] = f"{chart_meta['version']}+{digest}"
    relative = f"{BUNDLE_DIR}/{name}-{digest}"
    target = root / relative
    if (target / "Chart.yaml").is_file():
        return relative
    files = _files(crds)
    size = _record_bytes(files)
    if size > RECORD_LIMIT:
        raise ReleaseTooLarge(
            f"the CRDs of release {name} would take about {size // 1024} KiB in Helm's record of it, which "
            f"must fit one Secret (at most {RECORD_LIMIT // 1024} KiB): install them with "
            "platform.crdInstall: objects"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: a concurrent run writes the same content, a reader never
    # sees half a chart.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        (staging / "Chart.yaml").write_text(yaml.safe_dump(chart_meta, sort_keys=False))
        for path, text in {**source, **{f"files/{k}": v for k, v in files.items()}}.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_text(text)
        os.chmod(staging, 0o755)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "Chart.yaml").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return relative


def install_crds(
    owner: pulumi.Resource,
    ctx: ModuleContext,
    name: str,
    manifests: Sequence[dict[str, Any]],
    depends_on: Sequence[pulumi.Resource] = (),
) -> list[pulumi.Resource]:
    """The resources that install `manifests` (CRDs of one module): what dependents wait on.
    `name`: the release's, fixed once installed (another name is another release: Helm would
    remove the CRDs of the old one, and with them every object of their kinds)."""
    if not manifests:
        return []
    if not placement.holds_platform():
        return [placement.held_elsewhere()]
    if ctx.resolved.config.platform.crd_install == "objects":
        return [create_object(dict(m), ctx.child_opts(owner, depends_on=list(depends_on))) for m in manifests]
    import pulumi_kubernetes as k8s

    from mlplatform.modules.contracts import CoreOutputs

    full_name = release_name(name)
    if full_name in ctx.crd_releases:
        raise ValueError(f"two CRD releases named {full_name!r} in one stack: give one of them another name")
    crds = [_removable(_without_nulls(adapted(m, ctx.crd_transformations))) for m in manifests]
    try:
        chart = write_chart(full_name, crds, chart_root())
    except ReleaseTooLarge as exc:
        raise pulumi.RunError(str(exc)) from None
    core = ctx.outputs.get(CoreOutputs)
    # Helm keeps its record of the release in the platform's namespace (core's: made first).
    namespace = core.namespace if core is not None else ctx.resolved.config.platform.namespace
    release = k8s.helm.v3.Release(
        full_name,
        name=full_name,
        chart=chart,
        namespace=namespace,
        values={VALUES_KEY: [_index(crd) for crd in crds]},
        timeout=TIMEOUT_SECONDS,
        # The API server validates each CRD itself; Helm's check against the cluster's OpenAPI
        # document first (fetched whole) adds a second per release.
        disable_openapi_validation=True,
        # Two records at most: each holds every CRD of the release.
        max_history=2,
        opts=ctx.child_opts(owner, depends_on=list(depends_on)),
    )
    ctx.crd_releases[full_name] = release
    return [release]


def release_objects(outputs: Any) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of what a release's state says Helm installed: the provider's
    `resourceNames`, `{"<Kind>.<group>/<apiVersion>": ["[namespace/]name", ...]}`."""
    found: set[tuple[str, str, str]] = set()
    for key, names in ((outputs or {}).get("resourceNames") or {}).items():
        kind = key.split("/", 1)[0].split(".", 1)[0]
        for name in names or []:
            namespace, _, short = name.rpartition("/")
            found.add((kind, namespace, short))
    return found
