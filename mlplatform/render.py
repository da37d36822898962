"""Render a stack to plain manifests without a cluster or the Pulumi engine.

The real program runs against Pulumi's mock monitor, which records each resource's inputs;
for Kubernetes resources those inputs are complete manifests. The result is the set of
objects the stack applies, written one file per object in apply order (GitOps export).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor

from mlplatform.config.load import read_stack_file, stack_location
from mlplatform.modules.crd_bundle import bundled_crds, is_bundle

# Objects other objects live in or are checked against go first, workloads last.
KIND_ORDER = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "NetworkPolicy",
    "Service",
    # Operator plumbing before the custom resources the operator serves.
    "OperatorGroup",
    "Subscription",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "Job",
)


# libyaml's emitter where PyYAML has it: a few times faster than the pure-Python one, same YAML.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource the program registers; outputs echo the inputs."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def stack_config_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Stack file values as the engine hands them to a program: strings, structures as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


class RenderError(RuntimeError):
    pass


class StackMonitor(MockMonitor):
    """The SDK's mock monitor with URNs named after the run's stack and project: the SDK's own
    reads them from context variables, which its registration threads do not see (3.259)."""

    def __init__(self, mocks: pulumi.runtime.Mocks, stack: str, project: str = "mlplatform") -> None:
        super().__init__(mocks)
        self.stack, self.project = stack, project

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        if parent:
            type_ = parent.split("::")[2].split("$")[-1] + "$" + type_
        return "urn:pulumi:" + "::".join([self.stack, self.project, type_, name])


def use_mocks(mocks: pulumi.runtime.Mocks, stack: str, monitor: Any = None) -> None:
    """Point the runtime at `mocks` for one run of the program, from a fresh root stack resource:
    the mock runtime keeps its first one for the whole process, and with it the stack
    transformations an earlier run registered (another stack's platform.crdDescriptions)."""
    settings.ROOT.set(None)
    monitor = monitor or StackMonitor(mocks, stack)
    pulumi.runtime.set_mocks(mocks, project="mlplatform", stack=stack, preview=False, monitor=monitor)


def run_program(
    stack: str, config: Mapping[str, str], stacks_dir: Path | None = None
) -> tuple[RecordingMocks, dict[str, Any]]:
    """One run of the program under mocks with a stack's config (values as the engine hands
    them over: `stack_config_strings`): the recorded resources and what `main` returned.
    `stacks_dir`: where a team stack's platform stack (or a platform's team stacks) lie, when
    not in the project's stacks/."""
    from mlplatform.program import main, use_stacks_dir

    recorder = RecordingMocks()
    use_mocks(recorder, stack)
    pulumi.runtime.set_all_config(dict(config))
    result: dict[str, Any] = {}

    # The mock runtime's driver: runs the program and waits for every registration.
    @pulumi.runtime.test
    def program() -> None:
        result.update(main() or {})

    use_stacks_dir(stacks_dir)
    try:
        program()
    finally:
        use_stacks_dir(None)
    return recorder, result


def manifests_of(recorder: RecordingMocks, stack: str) -> list[dict[str, Any]]:
    """The Kubernetes objects a recorded run registered, in apply order."""
    objects = [args for args in recorder.resources if args.typ.startswith("kubernetes:") and args.custom]
    # A module's CRD release: its CRDs, read back from its chart copy, rendered as the objects they are.
    bundled = [crd for args in objects if is_bundle(args.typ, args.inputs) for crd in bundled_crds(args.inputs)]
    objects = [args for args in objects if not is_bundle(args.typ, args.inputs)]
    # Another Helm release's objects exist only once Helm renders its chart at apply time.
    releases = [args.name for args in objects if args.typ.startswith("kubernetes:helm.sh/")]
    if releases:
        raise RenderError(
            f"stack {stack} installs Helm release(s) {', '.join(releases)}, whose objects only Helm renders; "
            "export them with `helm template` of the pinned chart"
        )
    manifests = [_manifest(args.inputs) for args in objects] + [_manifest(crd) for crd in bundled]
    return sorted(manifests, key=_apply_order)


def render_manifests(stack_or_path: str, config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the stack applies, in apply order."""
    path, stack = stack_location(stack_or_path)
    raw = config if config is not None else read_stack_file(path)
    recorder, _ = run_program(stack, stack_config_strings(raw), stacks_dir=path.parent)
    return manifests_of(recorder, stack)


def _sorted(value: Any) -> Any:
    # The engine's wire format carries every number as a double: give integers back.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            # A secret as the mock monitor sees it; under mocks its value is only ever the
            # named marker a module writes in place of the undecrypted secret.
            return _sorted(value["value"])
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _manifest(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata first; every mapping below in key order (stable output)."""
    head = ("apiVersion", "kind", "metadata")
    ordered = {k: _sorted(inputs[k]) for k in head if k in inputs}
    ordered.update({k: _sorted(inputs[k]) for k in sorted(inputs) if k not in head})
    return ordered


def _apply_order(manifest: Mapping[str, Any]) -> tuple[int, str, str]:
    kind = manifest["kind"]
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    metadata = manifest.get("metadata") or {}
    return rank, metadata.get("namespace", ""), f"{kind}/{metadata.get('name', '')}"


def file_name(index: int, manifest: Mapping[str, Any], width: int = 4) -> str:
    metadata = manifest.get("metadata") or {}
    parts = [manifest["kind"], metadata.get("namespace", ""), metadata.get("name", "")]
    slug = "_".join(re.sub(r"[^a-z0-9.-]", "-", p.lower()) for p in parts if p)
    return f"{index:0{width}d}_{slug}.yaml"


# -- Secrets the stack fills: references for the GitOps tool's secret management -------------

# A stack secret the engine did not decrypt, as modules write it (services.secret_marker), and a
# value derived from one (services.sha256_marker).
_MARKER = re.compile(r"<mlplatform:secrets\.([A-Za-z0-9]+)>")
_DERIVED = re.compile(r"<mlplatform:sha256\((.*?)<mlplatform:secrets\.([A-Za-z0-9]+)>\)>")
# A bcrypt hash of one (identity.bcrypt_marker): Sprig's bcrypt of the stored value.
_BCRYPT = re.compile(r"<mlplatform:bcrypt\(<mlplatform:secrets\.([A-Za-z0-9]+)>\)>")
# Where a hashed stack secret is fetched into an ExternalSecret's data that no key of the Secret
# holds: read by the template only, never written into the Secret.
_HIDDEN_PREFIX = "mlplatform-source-"
_ANY_MARKER = "<mlplatform:"
# The folder of the export holding one ExternalSecret per such Secret (not in the main
# kustomization: applied where External Secrets Operator runs, after its secret store).
SECRET_REFERENCES = "secrets"
DEFAULT_SECRET_STORE = "mlplatform"
EXTERNAL_SECRETS_API = "external-secrets.io/v1"


def remote_key(stack: str, name: str) -> str:
    """Where the secret store holds one stack secret (`mlplatform:secrets.<name>`)."""
    return f"mlplatform/{stack}/{name}"


def _secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    values = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(encoded).decode()
        except (ValueError, UnicodeDecodeError):
            values[key] = ""
    values.update(secret.get("stringData") or {})
    return values


def _fills_from_stack_secrets(manifest: Mapping[str, Any]) -> bool:
    return manifest["kind"] == "Secret" and any(_ANY_MARKER in str(v) for v in _secret_values(manifest).values())


def _template(value: str, holders: Mapping[str, str], where: str) -> str:
    """A Secret value as a template of External Secrets' engine v2 (Go templates with Sprig):
    literal text kept, markers read from the data entry holding that stack secret."""

    def holder(name: str) -> str:
        if name not in holders:
            raise RenderError(f"{where}: a value derived from mlplatform:secrets.{name}, which no key of it holds")
        return f"(index . {json.dumps(holders[name])})"

    parts, position = [], 0
    for match in re.finditer(f"{_BCRYPT.pattern}|{_DERIVED.pattern}|{_MARKER.pattern}", value):
        parts.append(value[position : match.start()].replace("{{", '{{ "{{" }}'))
        hashed, prefix, derived_from, name = match.group(1), match.group(2), match.group(3), match.group(4)
        if hashed:
            parts.append(f"{{{{ {holder(hashed)} | bcrypt }}}}")
        elif derived_from:
            parts.append(f"{{{{ print {json.dumps(prefix)} {holder(derived_from)} | sha256sum }}}}")
        else:
            parts.append(f"{{{{ {holder(name)} }}}}")
        position = match.end()
    parts.append(value[position:].replace("{{", '{{ "{{" }}'))
    text = "".join(parts)
    if _ANY_MARKER in text:
        raise RenderError(f"{where}: a placeholder the export cannot turn into a reference")
    return text


def secret_reference(secret: Mapping[str, Any], stack: str, store: str) -> dict[str, Any]:
    """The ExternalSecret that makes this Secret from the stack's secrets in the store: a data
    entry per key that is one stack secret, a template for keys written out or derived."""
    metadata = secret["metadata"]
    where = f"Secret {metadata.get('namespace', '')}/{metadata['name']}"
    values = _secret_values(secret)
    data, holders = [], {}
    for key, value in sorted(values.items()):
        match = _MARKER.fullmatch(str(value))
        if match:
            data.append({"secretKey": key, "remoteRef": {"key": remote_key(stack, match.group(1))}})
            holders.setdefault(match.group(1), key)
    template: dict[str, Any] = {
        "engineVersion": "v2",
        "type": secret.get("type", "Opaque"),
        "metadata": {field: dict(metadata[field]) for field in ("labels", "annotations") if metadata.get(field)},
    }
    hidden = sorted({name for value in values.values() for name in _BCRYPT.findall(str(value))} - set(holders))
    for name in hidden:
        data.append({"secretKey": f"{_HIDDEN_PREFIX}{name}", "remoteRef": {"key": remote_key(stack, name)}})
        holders[name] = f"{_HIDDEN_PREFIX}{name}"
    written = {
        key: _template(str(value), holders, where)
        for key, value in sorted(values.items())
        if hidden or not _MARKER.fullmatch(str(value))
    }
    if hidden:
        # Only the Secret's own keys, each from the template: a value fetched only to be hashed
        # stays out of it.
        template.update(mergePolicy="Replace", data=written)
    elif written:
        # The keys written out join the ones fetched from the store.
        template.update(mergePolicy="Merge", data=written)
    reference_metadata = {"name": metadata["name"], "namespace": metadata.get("namespace", "")}
    for field in ("labels", "annotations"):
        if metadata.get(field):
            reference_metadata[field] = dict(metadata[field])
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": reference_metadata,
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": store},
            "target": {"name": metadata["name"], "creationPolicy": "Owner", "template": template},
            "data": data,
        },
    }


def split_export(
    manifests: list[dict[str, Any]], stack: str, store: str = DEFAULT_SECRET_STORE
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(objects of the export, ExternalSecrets): a Secret filled from stack secrets is exported
    as a reference, never with placeholders as its values. Refused where a placeholder would
    still be in the export."""
    kept = [m for m in manifests if not _fills_from_stack_secrets(m)]
    references = [secret_reference(m, stack, store) for m in manifests if _fills_from_stack_secrets(m)]
    leaking = [
        f"{m['kind']} {m['metadata'].get('namespace', '')}/{m['metadata'].get('name', '')}".replace(" /", " ")
        for m in kept
        if _ANY_MARKER in json.dumps(m)
    ]
    if leaking:
        raise RenderError(
            f"stack {stack}: placeholders of undecrypted secrets would be written as values of "
            + ", ".join(leaking)
            + " (allowed: only in Secrets, which the export writes as references)"
        )
    return kept, references


def write_export(
    manifests: list[dict[str, Any]], out: Path, stack: str, store: str = DEFAULT_SECRET_STORE
) -> tuple[list[Path], list[Path]]:
    """The GitOps export: the objects (write_manifests) and, in OUT/secrets/ with a kustomization
    of its own, one ExternalSecret per Secret filled from the stack's secrets."""
    kept, references = split_export(manifests, stack, store)
    written = write_manifests(kept, out)
    folder = out / SECRET_REFERENCES
    if folder.is_dir():
        for stale in folder.glob("*.yaml"):
            stale.unlink()
    if not references:
        return written, []
    return written, write_manifests(references, folder)


def write_manifests(manifests: list[dict[str, Any]], out: Path) -> list[Path]:
    """One file per object plus a kustomization.yaml listing them in apply order."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.yaml"):
        stale.unlink()
    written = []
    # Names sort in apply order: the index is as wide as the largest one needs.
    width = max(4, len(str(len(manifests))))
    for index, manifest in enumerate(manifests, start=1):
        path = out / file_name(index, manifest, width)
        path.write_text(yaml.dump(manifest, Dumper=_Dumper, sort_keys=False))
        written.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [p.name for p in written],
    }
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return written
