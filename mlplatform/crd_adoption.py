"""`mlplatform adopt-crds --stack X`: a stack installed when each CRD was a resource of its own
(platform.crdInstall: objects, the only way before releases) moves its CRDs into the releases
the program now declares, without deleting any CRD (deleting one deletes every object of its
kind).

A plain `pulumi up` cannot make that move: it would create each release, which Helm refuses
("exists and cannot be imported into the current release": the CRDs carry no mark of it), and
the update stops before it deletes anything, so nothing is lost, but nothing moves either.
Adoption:

1. asks the program (under mocks, with the stack's config) which release installs each CRD;
2. marks each live CRD as that release's, as Helm marks what it creates (label
   app.kubernetes.io/managed-by=Helm, annotations meta.helm.sh/release-name and
   -namespace), so Helm takes it over;
3. removes the CRD resources from the state (and from the dependencies of the resources that
   waited on them), with `pulumi stack export` / `import`: the state forgets them, the cluster
   keeps them.

The next `up` creates the releases, which adopt the marked CRDs. `mlplatform up` adopts by
itself before its `up` when the state holds CRDs and the stack's config says release.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mlplatform.modules.base import CRD_TYPE
from mlplatform.recover import Cluster

HELM_MANAGED_BY = "app.kubernetes.io/managed-by=Helm"


class AdoptionError(RuntimeError):
    pass


def state_crds(exported: dict[str, Any]) -> dict[str, str]:
    """CRD name -> URN of each CRD the state holds as a resource of its own."""
    found = {}
    for resource in (exported.get("deployment") or {}).get("resources") or []:
        if resource.get("type") == CRD_TYPE:
            name = ((resource.get("inputs") or {}).get("metadata") or {}).get("name") or resource["id"]
            found[str(name)] = resource["urn"]
    return found


def declared_releases(stack: str, raw_config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """CRD name -> (release, namespace) as the program declares them for this config."""
    from mlplatform.modules.crd_bundle import VALUES_KEY, is_bundle
    from mlplatform.render import run_program, stack_config_strings

    recorder, _ = run_program(stack, stack_config_strings(raw_config))
    found = {}
    for args in recorder.resources:
        if is_bundle(args.typ, args.inputs):
            for entry in args.inputs["values"][VALUES_KEY]:
                found[entry["name"]] = (args.inputs["name"], args.inputs["namespace"])
    return found


def without_resources(exported: dict[str, Any], urns: set[str]) -> dict[str, Any]:
    """The state without `urns`, and without them among the others' dependencies."""
    deployment = exported["deployment"]
    kept = []
    for resource in deployment.get("resources") or []:
        if resource["urn"] in urns:
            continue
        resource = dict(resource)
        if resource.get("dependencies"):
            resource["dependencies"] = [d for d in resource["dependencies"] if d not in urns]
        if resource.get("propertyDependencies"):
            resource["propertyDependencies"] = {
                key: [d for d in deps if d not in urns] for key, deps in resource["propertyDependencies"].items()
            }
        if resource.get("deletedWith") in urns:
            resource.pop("deletedWith")
        kept.append(resource)
    return {**exported, "deployment": {**deployment, "resources": kept}}


def adopt(
    stack: str,
    cwd: Path,
    env: dict[str, str],
    raw_config: dict[str, Any],
    cluster: Cluster,
) -> list[str]:
    """Moves the stack's CRD resources into the declared releases; returns what was done."""
    exported = _pulumi_json(["stack", "export", "--stack", stack], cwd, env)
    held = state_crds(exported)
    if not held:
        return []
    declared = declared_releases(stack, raw_config)
    moving = {name: urn for name, urn in held.items() if name in declared}
    if not moving:
        return []
    for name in sorted(moving):
        release, namespace = declared[name]
        _kubectl(cluster, "label", "--overwrite", "customresourcedefinition", name, HELM_MANAGED_BY)
        _kubectl(
            cluster,
            "annotate",
            "--overwrite",
            "customresourcedefinition",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
    edited = without_resources(exported, set(moving.values()))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(edited, handle)
        path = handle.name
    try:
        proc = subprocess.run(
            ["pulumi", "stack", "import", "--stack", stack, "--file", path],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        Path(path).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise AdoptionError(f"pulumi stack import failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    releases = sorted({declared[name][0] for name in moving})
    return [
        f"marked {len(moving)} CRD(s) for Helm releases {', '.join(releases)} and removed them from the state "
        "(the cluster keeps them; the next `up` creates the releases, which take them over)"
    ]


def _kubectl(cluster: Cluster, *args: str) -> None:
    proc = subprocess.run([*cluster.kubectl, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AdoptionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")


def _pulumi_json(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(["pulumi", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AdoptionError(f"pulumi {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return json.loads(proc.stdout)
