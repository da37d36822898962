"""Reliability of the GitOps path: the lab export applied to one local control plane.

    python benchmarks/bench_gitops_reliability.py [--quick] [--applies 20] [--crashes 20]

- idempotency: the export applied N times in its ordered phases; after each apply,
  `kubectl diff --server-side` of the export against the cluster must show no change;
- crash recovery: `kill -9` of the export's apply at a random moment within the measured
  full-apply time, then the one recovery command (the export applied again, in order), then
  the labelled inventory (`mlplatform.io/stack=lab`) must equal the export: no orphan, none
  missing. The stack is deleted between trials, so each kill hits an apply from empty;
- drift: 20 out-of-band changes to objects of the export (edits, scales, deletes, relabels),
  each checked by `kubectl diff --server-side` of its object, then one re-apply of the export
  and each changed field checked against the export. The re-apply runs twice: first a plain
  server-side apply (`--server-side --field-manager=mlplatform`), then with `--force-conflicts`.

No webhook server runs on the simulated plane: the export is applied with its webhook
configurations at failurePolicy Ignore and its CRD conversion webhooks off (written into the
manifests, since every re-apply would set them back). Aggregated APIServices are left out, as
in the e2e harness. The Pulumi engine's figures (refresh drift detection, interrupted `up`)
are bench_engine.py's.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from plane_support import (
    DEFAULT_PORT_BASE,
    Plane,
    fresh_plane,
    identities,
    kubectl_cmd,
    labelled_inventory,
    load,
    machine,
    phases,
    render_export,
    stop_plane,
    without_webhook_servers_in_manifests,
    write_phases,
)

FIELD_MANAGER = "--field-manager=mlplatform"


class Export:
    """The lab export as two phase folders, applied in order with the pinned kubectl."""

    def __init__(self, plane: Plane, manifests: list[dict], out: Path) -> None:
        self.plane = plane
        self.manifests = manifests
        self.first, self.second = write_phases(manifests, out)
        self.crds = sorted(
            m["metadata"]["name"] for m in phases(manifests)[0] if m["kind"] == "CustomResourceDefinition"
        )
        self.running: subprocess.Popen | None = None
        self.killed = threading.Event()
        self.cancel = threading.Event()

    def steps(self, force: bool) -> list[list[str]]:
        extra = ["--force-conflicts"] if force else []
        steps = [kubectl_cmd(self.plane, "apply", "--server-side", FIELD_MANAGER, *extra, "-f", str(self.first))]
        if self.second:
            steps.append(
                kubectl_cmd(self.plane, "wait", "--for=condition=Established", "crd", *self.crds, "--timeout=60s")
            )
            steps.append(
                kubectl_cmd(self.plane, "apply", "--server-side", FIELD_MANAGER, *extra, "-f", str(self.second))
            )
        return steps

    def apply(self, force: bool = False) -> tuple[bool, str]:
        """(succeeded, last error line); stops at the first failing step or at a kill."""
        self.killed.clear()
        for step in self.steps(force):
            if self.killed.is_set():
                return False, "killed"
            self.running = subprocess.Popen(step, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _, stderr = self.running.communicate()
            code, self.running = self.running.returncode, None
            if code != 0:
                lines = stderr.strip().splitlines()
                return False, "killed" if code == -signal.SIGKILL else (lines[-1] if lines else f"exit {code}")
        return True, ""

    def kill_after(self, delay: float) -> threading.Thread:
        """SIGKILL whichever kubectl of the apply runs `delay` seconds from now, unless `cancel`
        is set first (the apply finished before the moment came)."""
        self.cancel.clear()

        def killer() -> None:
            if self.cancel.wait(delay):
                return
            self.killed.set()
            running = self.running
            if running is not None and running.poll() is None:
                running.send_signal(signal.SIGKILL)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        return thread

    def diff(self, path: Path | None = None) -> int:
        """kubectl diff's exit status: 0 no change, 1 changes, above 1 an error."""
        folders = [path] if path else [f for f in (self.first, self.second) if f]
        worst = 0
        for folder in folders:
            proc = subprocess.run(
                kubectl_cmd(self.plane, "diff", "--server-side", FIELD_MANAGER, "--force-conflicts", "-f", str(folder)),
                capture_output=True,
                text=True,
            )
            worst = max(worst, proc.returncode)
        return worst

    def delete(self) -> None:
        for folder in (self.second, self.first):
            if folder:
                self.plane.kubectl(
                    "delete", "-f", str(folder), "--ignore-not-found", "--wait=true", "--timeout=300s", check=False
                )

    def inventory(self) -> set[tuple[str, str, str]]:
        """Objects labelled `mlplatform.io/stack=lab`: one kubectl call over every kind of the
        export, or one call per kind while some CRD of the export is missing."""
        resources = sorted({_resource(m) for m in self.manifests})
        proc = self.plane.kubectl(
            "get", ",".join(resources), "-A", "-l", "mlplatform.io/stack=lab", "-o", "json", check=False
        )
        if proc.returncode == 0:
            return identities(json.loads(proc.stdout)["items"])
        return labelled_inventory(self.plane, {m["kind"] for m in self.manifests}, "lab")

    def inventory_gap(self) -> tuple[int, int]:
        """(orphans, missing): labelled objects the export does not hold, and the reverse."""
        found, wanted = self.inventory(), identities(self.manifests)
        return len(found - wanted), len(wanted - found)


def idempotency(export: Export, applies: int) -> None:
    print(f"\n## Idempotency: the export applied {applies} times, `kubectl diff --server-side` after each")
    clean, apply_s, diff_s, failures = 0, [], [], []
    for _ in range(applies):
        started = time.monotonic()
        ok, error = export.apply()
        apply_s.append(time.monotonic() - started)
        if not ok:
            failures.append(error)
        started = time.monotonic()
        code = export.diff()
        diff_s.append(time.monotonic() - started)
        clean += code == 0
    print(
        "| applies | failed applies | clean diffs (0 changes) | first apply s | re-apply s (median) | diff s (median) | load |"
    )
    print("|---|---|---|---|---|---|---|")
    reapply = statistics.median(apply_s[1:]) if len(apply_s) > 1 else float("nan")
    print(
        f"| {applies} | {len(failures)} | {clean}/{applies} | {apply_s[0]:.1f} | {reapply:.1f} "
        f"| {statistics.median(diff_s):.1f} | {load()} |"
    )
    for error in failures[:3]:
        print(f"apply failed: {error[:300]}")


def crash_recovery(export: Export, trials: int, full_apply_s: float, seed: int) -> None:
    print(f"\n## Crash recovery: kill -9 of the export's apply within its {full_apply_s:.1f} s, then one re-apply")
    print(
        "| trial | kill at s | interrupted | left after delete | missing after kill | recovery "
        "| orphans | missing | recovery s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    chance = random.Random(seed)
    successes, interrupted_count = 0, 0
    for trial in range(1, trials + 1):
        export.delete()
        left = len(export.inventory())
        delay = chance.uniform(0, full_apply_s)
        killer = export.kill_after(delay)
        ok, _ = export.apply()
        export.cancel.set()
        killer.join()
        interrupted = not ok
        interrupted_count += interrupted
        missing_after_kill = export.inventory_gap()[1]
        started = time.monotonic()
        recovered, error = export.apply()
        recovery_s = time.monotonic() - started
        orphans, missing = export.inventory_gap()
        successes += recovered and orphans == 0 and missing == 0
        print(
            f"| {trial} | {delay:.1f} | {'yes' if interrupted else 'no (apply done first)'} | {left} "
            f"| {missing_after_kill} | {'ok' if recovered else error[:80]} | {orphans} | {missing} "
            f"| {recovery_s:.1f} | {load()} |",
            flush=True,
        )
    print(f"\nrecovered: {successes}/{trials} (interrupted by the kill: {interrupted_count}/{trials})")


@dataclass
class Drift:
    """One out-of-band change: the object it touches, how, and the field that shows it."""

    name: str
    manifest: dict
    change: Callable[[Plane, dict], None]
    probe: Callable[[dict], object]


def _contains(live: object, wanted: object) -> bool:
    """The export's value holds in the live one (the apiserver adds defaults around it)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(_contains(live.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(live, list) or len(live) != len(wanted):
            return False
        return all(_contains(a, b) for a, b in zip(live, wanted, strict=True))
    return live == wanted


def _live(plane: Plane, manifest: dict) -> dict | None:
    proc = plane.kubectl("get", *_ref(manifest), "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _resource(manifest: dict) -> str:
    """`kind.group` as kubectl reads it, so a kind never resolves to another group's."""
    api_version = manifest["apiVersion"]
    group = api_version.split("/")[0] if "/" in api_version else ""
    return f"{manifest['kind'].lower()}{'.' + group if group else ''}"


def _ref(manifest: dict) -> list[str]:
    ref = [f"{_resource(manifest)}/{manifest['metadata']['name']}"]
    if manifest["metadata"].get("namespace"):
        ref += ["-n", manifest["metadata"]["namespace"]]
    return ref


def _patch(kind: str, body: dict) -> Callable[[Plane, dict], None]:
    def change(plane: Plane, manifest: dict) -> None:
        plane.kubectl("patch", *_ref(manifest), f"--type={kind}", "-p", json.dumps(body))

    return change


def _delete(plane: Plane, manifest: dict) -> None:
    plane.kubectl("delete", *_ref(manifest), "--wait=true")


def _first(manifests: list[dict], kind: str, test: Callable[[dict], bool] = lambda m: True) -> dict:
    return next(m for m in manifests if m["kind"] == kind and test(m))


def drifts(manifests: list[dict]) -> list[Drift]:
    quota = _first(manifests, "ResourceQuota")
    quota_key = sorted(quota["spec"]["hard"])[0]
    scaled = _first(manifests, "Deployment", lambda m: "replicas" in m["spec"])
    imaged = _first(manifests, "Deployment", lambda m: m is not scaled)
    config_map = _first(manifests, "ConfigMap")
    restricted = _first(
        manifests,
        "Namespace",
        lambda m: m["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
    )
    relabelled = _first(
        manifests, "Namespace", lambda m: m is not restricted and "mlplatform.io/module" in m["metadata"]["labels"]
    )
    policy = _first(manifests, "NetworkPolicy")
    role_binding = _first(manifests, "RoleBinding")
    limit_range = _first(manifests, "LimitRange")
    priority = _first(manifests, "PriorityClass")
    cluster_role = _first(manifests, "ClusterRole", lambda m: len(m.get("rules") or []) > 1)
    role = _first(manifests, "Role", lambda m: bool(m.get("rules")))
    service = _first(manifests, "Service", lambda m: bool(m["spec"].get("selector")))
    secret = _first(manifests, "Secret", lambda m: bool(m.get("stringData") or m.get("data")))
    webhook = _first(manifests, "ValidatingWebhookConfiguration", lambda m: bool(m.get("webhooks")))
    binding = _first(manifests, "ValidatingAdmissionPolicyBinding")
    daemon_set = _first(manifests, "DaemonSet")
    rule = _first(manifests, "PrometheusRule")
    runtime = _first(manifests, "ClusterServingRuntime")
    service_account = _first(manifests, "ServiceAccount")

    def containers(m: dict) -> list:
        return m["spec"]["template"]["spec"]["containers"]

    def replace_priority(plane: Plane, manifest: dict) -> None:
        # value is immutable: an out-of-band edit is a delete and a create with another value.
        plane.kubectl("delete", *_ref(manifest))
        changed = copy.deepcopy(manifest)
        changed["value"] = manifest["value"] + 1000
        plane.kubectl("create", "-f", "-", input_text=json.dumps(changed))

    secret_field = "stringData" if secret.get("stringData") else "data"
    secret_key = sorted(secret[secret_field])[0]
    return [
        Drift(
            "ResourceQuota: hard limit raised",
            quota,
            _patch("merge", {"spec": {"hard": {quota_key: "999"}}}),
            lambda o: o["spec"]["hard"],
        ),
        Drift(
            "Deployment: scaled",
            scaled,
            lambda p, m: p.kubectl("scale", *_ref(m), f"--replicas={m['spec']['replicas'] + 2}"),
            lambda o: o["spec"]["replicas"],
        ),
        Drift(
            "Deployment: container image changed",
            imaged,
            lambda p, m: p.kubectl("set", "image", *_ref(m), f"{containers(m)[0]['name']}=registry.invalid/changed:1"),
            lambda o: [c["image"] for c in o["spec"]["template"]["spec"]["containers"]],
        ),
        Drift("ConfigMap: deleted", config_map, _delete, lambda o: o["metadata"]["name"]),
        Drift(
            "Namespace: Pod Security relabelled privileged",
            restricted,
            lambda p, m: p.kubectl(
                "label",
                "namespace",
                m["metadata"]["name"],
                "pod-security.kubernetes.io/enforce=privileged",
                "--overwrite",
            ),
            lambda o: o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        ),
        Drift(
            "Namespace: module label removed",
            relabelled,
            lambda p, m: p.kubectl("label", "namespace", m["metadata"]["name"], "mlplatform.io/module-"),
            lambda o: o["metadata"]["labels"].get("mlplatform.io/module"),
        ),
        Drift(
            "NetworkPolicy: opened to every source",
            policy,
            _patch("merge", {"spec": {"ingress": [{}], "podSelector": {}}}),
            lambda o: o["spec"],
        ),
        Drift("RoleBinding: deleted", role_binding, _delete, lambda o: o["metadata"]["name"]),
        Drift(
            "LimitRange: limits replaced",
            limit_range,
            _patch("merge", {"spec": {"limits": [{"type": "Container", "max": {"cpu": "64"}}]}}),
            lambda o: o["spec"]["limits"],
        ),
        Drift("PriorityClass: value changed", priority, replace_priority, lambda o: o["value"]),
        Drift(
            "ClusterRole: rules cut to one",
            cluster_role,
            _patch("merge", {"rules": (cluster_role.get("rules") or [])[:1]}),
            lambda o: o.get("rules"),
        ),
        Drift(
            "Role: every verb on every resource",
            role,
            _patch("merge", {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
            lambda o: o.get("rules"),
        ),
        Drift(
            "Service: selector changed",
            service,
            _patch("merge", {"spec": {"selector": {"drifted": "yes"}}}),
            lambda o: o["spec"]["selector"],
        ),
        Drift(
            "Secret: value changed",
            secret,
            _patch("merge", {"stringData": {secret_key: "changed-out-of-band"}}),
            lambda o: o.get("data", {}).get(secret_key),
        ),
        Drift(
            "ValidatingWebhookConfiguration: webhook timeout changed",
            webhook,
            _patch("json", [{"op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": 29}]),
            lambda o: o["webhooks"][0].get("timeoutSeconds"),
        ),
        Drift(
            "ValidatingAdmissionPolicyBinding: Deny turned to Warn",
            binding,
            _patch("merge", {"spec": {"validationActions": ["Warn"]}}),
            lambda o: o["spec"]["validationActions"],
        ),
        Drift(
            "DaemonSet: container image changed",
            daemon_set,
            lambda p, m: p.kubectl("set", "image", *_ref(m), f"{containers(m)[0]['name']}=registry.invalid/changed:1"),
            lambda o: [c["image"] for c in o["spec"]["template"]["spec"]["containers"]],
        ),
        Drift(
            "PrometheusRule (custom resource): rule expression changed",
            rule,
            _patch("json", [{"op": "replace", "path": "/spec/groups/0/rules/0/expr", "value": "vector(0)"}]),
            lambda o: o["spec"]["groups"][0]["rules"][0]["expr"],
        ),
        Drift(
            "ClusterServingRuntime (custom resource): server image changed",
            runtime,
            _patch("json", [{"op": "replace", "path": "/spec/containers/0/image", "value": "registry.invalid/x:1"}]),
            lambda o: o["spec"]["containers"][0]["image"],
        ),
        Drift("ServiceAccount: deleted", service_account, _delete, lambda o: o["metadata"]["name"]),
    ]


def _expected(drift: Drift, plane: Plane) -> object:
    """The probe of the export's own object; a Secret's stringData reads back as base64 data."""
    if drift.manifest["kind"] == "Secret":
        live = _live(plane, drift.manifest)
        return drift.probe(live) if live else None
    return drift.probe(drift.manifest)


def drift_section(export: Export, scratch: Path, count: int) -> None:
    print(f"\n## Drift: {count} out-of-band changes, `kubectl diff --server-side`, then one re-apply")
    plane = export.plane
    chosen = drifts(export.manifests)[:count]
    expected = {d.name: _expected(d, plane) for d in chosen}
    baseline = {}
    for drift in chosen:
        live = _live(plane, drift.manifest)
        baseline[drift.name] = live is not None and _contains(drift.probe(live), expected[drift.name])
    changed = {}
    for drift in chosen:
        try:
            drift.change(plane, drift.manifest)
            changed[drift.name] = "yes"
        except AssertionError as refused:
            changed[drift.name] = "refused: " + str(refused).strip().splitlines()[-1][:80]
    results = {}
    for index, drift in enumerate(chosen):
        live = _live(plane, drift.manifest)
        effective = live is None or not _contains(drift.probe(live), expected[drift.name])
        one = scratch / f"drift-{index:02d}"
        one.mkdir()
        (one / "object.yaml").write_text(yaml.safe_dump(drift.manifest))
        results[drift.name] = {"effective": effective, "diff": export.diff(one)}

    def repaired(drift: Drift) -> bool:
        live = _live(plane, drift.manifest)
        return live is not None and _contains(drift.probe(live), expected[drift.name])

    plain_ok, plain_error = export.apply(force=False)
    for drift in chosen:
        results[drift.name]["plain"] = repaired(drift)
    forced_ok, forced_error = export.apply(force=True)
    for drift in chosen:
        results[drift.name]["forced"] = repaired(drift)
    print(
        "| out-of-band change | in place before | change took | diff detects | re-apply repairs | with --force-conflicts |"
    )
    print("|---|---|---|---|---|---|")
    for drift in chosen:
        row = results[drift.name]
        detected = {0: "no", 1: "yes"}.get(row["diff"], f"error ({row['diff']})")
        took = _yes(row["effective"]) if changed[drift.name] == "yes" else changed[drift.name]
        print(
            f"| {drift.name} | {_yes(baseline[drift.name])} | {took} | {detected} "
            f"| {_yes(row['plain'])} | {_yes(row['forced'])} |"
        )
    detected = sum(1 for r in results.values() if r["diff"] == 1)
    print(
        f"\ndetected {detected}/{len(chosen)}; repaired by the re-apply {sum(r['plain'] for r in results.values())}"
        f"/{len(chosen)} (apply {'ok' if plain_ok else 'refused: ' + plain_error[:200]}); "
        f"with --force-conflicts {sum(r['forced'] for r in results.values())}/{len(chosen)} "
        f"(apply {'ok' if forced_ok else 'refused: ' + forced_error[:200]}); load {load()}"
    )


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 applies, 3 crash trials, 20 drifts")
    parser.add_argument("--applies", type=int, default=20)
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--drifts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261201, help="seed of the kill moments")
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE + 200, help="ports of the plane")
    args = parser.parse_args()
    applies, crashes = (3, 3) if args.quick else (args.applies, args.crashes)
    print(f"# GitOps path reliability, lab export — {time.strftime('%Y-%m-%d %H:%M')}, {machine()}, load {load()}")
    scratch = Path(tempfile.mkdtemp(prefix="mlp-reliability-"))
    plane = fresh_plane(scratch / "state", args.port_base)
    try:
        started = time.monotonic()
        manifests = render_export("lab", scratch / "render")
        print(f"render: {len(manifests)} objects in {time.monotonic() - started:.1f} s (load {load()})")
        without_webhook_servers_in_manifests(manifests)
        export = Export(plane, manifests, scratch / "export")
        idempotency(export, applies)
        export.delete()
        started = time.monotonic()
        ok, error = export.apply()
        full_apply_s = time.monotonic() - started
        if not ok:
            raise SystemExit(f"the export's apply failed: {error}")
        print(f"\nfull apply from empty: {full_apply_s:.1f} s (load {load()})")
        crash_recovery(export, crashes, full_apply_s, args.seed)
        drift_section(export, scratch, args.drifts)
    finally:
        stop_plane(plane)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
