"""`pulumi up` against the peer's install loop, for the same objects, each on a fresh plane.

    python benchmarks/bench_peer_install.py [--stacks kubeflow lab-core lab] [--sleep 5]
        [--give-up 1200] [--timeout 600] [--port-base 29000] [--no-engine]
        [--checkpoints fresh|every-step|both] [--engine-env NAME=VALUE ...]

Stacks (each the lab stack's file with modules turned off; the stack is named `lab` on both
sides, so the objects carry the same labels):
- `kubeflow`: the Kubeflow services (notebooks, pipelines, katib, kserve, training) on the core
  and tenancy (notebooks run in team namespaces: the stack is refused without it); monitoring,
  MLflow and the GPU layer off, and with it the GPU profile and the teams' GPU quotas;
- `lab-core`: the lab without monitoring and MLflow (ML services, GPU layer, tenancy);
- `lab`: the whole lab stack.

For each stack, one `mlplatform render` of it (the program under mocks: what it registers) gives
the object set. Both sides apply that set:
(peer) on a fresh plane, the objects as one stream piped to
    `kubectl apply --server-side --force-conflicts -f -` in upstream's loop
    (`while ! ...; do sleep N; done`) until it succeeds, then readiness: every
    PersistentVolumeClaim Bound and every Deployment, StatefulSet and DaemonSet Available;
(engine) on another fresh plane of the same stack, `pulumi up` of the same stack file (readiness
    awaited by Pulumi), then the state's objects, which must be exactly the rendered set.
The counts of both sides are printed; a difference stops the run with the objects that differ.

On the simulated plane no webhook server runs: the program registers webhooks with
failurePolicy Ignore and CRDs without conversion webhooks there (mlplatform.simulated_target),
and the peer's stream carries the same objects, changed the same way, from its first attempt.
The Secrets the export references (its secrets/ folder) are made as a secret tool would make
them; the engine makes the same Secrets from the stack's secrets.

`--checkpoints`: the engine's `up` as `mlplatform up` runs it on a fresh install (state written
once at the end, mlplatform.checkpoints), with per-step checkpoints (as before that), or both,
one after the other on fresh planes. Beside each `up`: CPU seconds of the CLI, the language
host with the program, and the provider; their peak memory; the state's size. Wall times are
wall-clock on a shared machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_engine import ProcessTreeUsage, cpu_split, mib, state_megabytes
from engine_timeline import dependencies, follow, report
from plane_support import (
    DEFAULT_PORT_BASE,
    REPO_ROOT,
    Plane,
    dump_stream,
    fresh_plane,
    identities,
    kubectl_cmd,
    load,
    machine,
    run,
    stop_plane,
    without_webhook_servers_in_manifests,
)

from mlplatform import checkpoints
from mlplatform.engine import EngineStack, up_summary
from mlplatform.render import _apply_order
from tests.e2e.secret_references import secrets_from_references
from tests.e2e.test_render_apply import read_export
from tests.engine.test_pulumi_lifecycle import stack_secrets

# Modules turned off in the lab stack's file, per measured stack.
VARIANTS = {
    "kubeflow": ("monitoring", "mlflow", "gpu"),
    "lab-core": ("monitoring", "mlflow"),
    "lab": (),
}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def stack_file(variant: str, folder: Path) -> Path:
    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    modules = document["config"]["mlplatform:modules"]
    for name in VARIANTS[variant]:
        modules[name]["enabled"] = False
    if "gpu" in VARIANTS[variant]:
        # GPU profiles and quotas name resources only the GPU layer advertises.
        modules["notebooks"].pop("gpuProfile", None)
        for team in modules["tenancy"]["teams"]:
            team.get("quota", {}).pop("gpus", None)
    folder.mkdir(parents=True)
    path = folder / "Pulumi.lab.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rendered(path: Path, out: Path) -> tuple[list[dict], float]:
    """`mlplatform render` of the stack file: every object the program registers, with the
    Secrets its references name, in apply order; and the seconds it took."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "mlplatform", "render", "--stack", str(path), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    manifests = sorted(read_export(out) + secrets_from_references(out), key=_apply_order)
    return manifests, time.monotonic() - started


def not_ready(plane: Plane, manifests: list[dict]) -> list[str]:
    """Claims not Bound and workloads not Available, one `kubectl get` per kind."""
    waiting = []
    for kind in ("PersistentVolumeClaim", *WORKLOADS):
        wanted = {(m["metadata"].get("namespace", ""), m["metadata"]["name"]) for m in manifests if m["kind"] == kind}
        if not wanted:
            continue
        items = json.loads(plane.kubectl("get", kind.lower(), "-A", "-o", "json").stdout)["items"]
        live = {(i["metadata"].get("namespace", ""), i["metadata"]["name"]): i for i in items}
        for key in sorted(wanted):
            item = live.get(key)
            if item is None or not _ready(kind, item):
                waiting.append(f"{kind} {key[0]}/{key[1]}")
    return waiting


def _ready(kind: str, item: dict) -> bool:
    status = item.get("status") or {}
    if kind == "PersistentVolumeClaim":
        return status.get("phase") == "Bound"
    if kind == "Deployment":
        return any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions") or [])
    if kind == "StatefulSet":
        return status.get("readyReplicas", 0) >= (item["spec"].get("replicas") or 1)
    return status.get("numberAvailable", 0) >= status.get("desiredNumberScheduled", 1)


def peer(manifests: list[dict], plane: Plane, sleep: float, give_up: float, timeout: float) -> dict:
    stream = dump_stream(manifests)
    apply = kubectl_cmd(plane, "apply", "--server-side", "--force-conflicts", "-f", "-")
    started = time.monotonic()
    refusals = []
    while True:
        proc = run(apply, stream)
        if proc.returncode == 0:
            break
        refusals.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
        if time.monotonic() - started > give_up:
            raise SystemExit(f"the peer's loop still refused after {len(refusals)} attempts: {refusals[-1]}")
        time.sleep(sleep)
    applied = time.monotonic()
    deadline = applied + timeout
    while waiting := not_ready(plane, manifests):
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready after {timeout:.0f} s: {', '.join(waiting[:10])}")
        time.sleep(1)
    done = time.monotonic()
    return {
        "apply s": applied - started,
        "ready s": done - applied,
        "total s": done - started,
        "refusals": refusals,
        "load": load(),
    }


def engine_up(
    path: Path, folder: Path, plane: Plane, skip_on_fresh: bool, extra: dict[str, str], keep: Path | None = None
) -> dict:
    engine = EngineStack("lab", folder / "engine", state_dir=plane.state_dir, extra_env=dict(extra))
    engine.create(stack_file=path, secrets=stack_secrets())
    fresh = checkpoints.is_fresh("lab", engine.project, engine.env)
    if skip_on_fresh:
        # As `mlplatform up` decides; a setting of --engine-env counts as the user's.
        engine.extra_env.update(checkpoints.up_env({}, fresh, user_env={**os.environ, **extra}))
    else:
        engine.extra_env.pop(checkpoints.SKIP, None)
    started = time.monotonic()
    proc = engine.popen("up", "--yes", "--skip-preview", "--json", capture=True)
    usage = ProcessTreeUsage(proc.pid)
    timeline, reader = follow(proc, started)
    stderr = proc.stderr.read()
    proc.wait()
    reader.join()
    usage.stop()
    seconds = time.monotonic() - started
    stdout = timeline.stdout()
    if proc.returncode != 0:
        raise SystemExit(f"pulumi up failed:\n{(stdout + stderr)[-3000:]}")
    exported = json.loads(engine.pulumi("stack", "export", "--stack", engine.stack).check().stdout)
    if keep is not None:
        # The steps (seconds from the start) and the state, to read again.
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "state.json").write_text(json.dumps(exported))
        (keep / "steps.json").write_text(json.dumps([vars(step) for step in timeline.steps.values()]))
    return {
        "total s": seconds,
        "fresh": fresh,
        "checkpoints": "at the end" if engine.env.get(checkpoints.SKIP) == "true" else "every step",
        "resources": sum(up_summary(stdout).values()),
        "objects": engine.state_inventory(),
        "cpu": cpu_split(usage),
        "cpu total": sum(usage.cpu_seconds(n) for n in ("CLI", "language host + program", "provider")),
        "peak MiB": f"{mib(usage.by_name['CLI'])} / {mib(usage.by_name['language host + program'])} / "
        f"{mib(usage.by_name['provider'])} / {mib(usage.total)}",
        "state MB": state_megabytes(engine, "lab"),
        "load": load(),
        "timeline": report(timeline, dependencies(exported)),
    }


def measure(variant: str, scratch: Path, port_base: int, args: argparse.Namespace, modes: list[bool]) -> bool:
    folder = scratch / variant
    path = stack_file(variant, folder)
    manifests, render_s = rendered(path, folder / "export")
    # What the program registers on this plane: webhooks failing open, CRDs without conversion.
    without_webhook_servers_in_manifests(manifests)
    objects = identities(manifests)
    if len(objects) != len(manifests):
        raise SystemExit(f"{variant}: the render holds duplicate objects")
    off = ", ".join(VARIANTS[variant]) or "none"
    print(f"\n## {variant} (modules off: {off}): {len(manifests)} objects rendered in {render_s:.1f} s (load {load()})")
    rows = []
    plane = fresh_plane(folder / "plane-peer", port_base)
    try:
        result = peer(manifests, plane, args.sleep, args.give_up, args.timeout)
    finally:
        stop_plane(plane)
    rows.append(("peer: kubectl apply --server-side loop + readiness", len(manifests), result))
    for attempt, refusal in enumerate(result["refusals"], 1):
        print(f"peer attempt {attempt} refused (last line): {refusal[:240]}")
    same = True
    for index, skip in enumerate(modes, 1):
        plane = fresh_plane(folder / f"plane-engine-{index}", port_base + 100 * index)
        try:
            keep = args.keep / f"{variant}-{index}" if args.keep else None
            up = engine_up(path, folder / f"engine-{index}", plane, skip, args.engine_env, keep)
        finally:
            stop_plane(plane)
        rows.append((f"pulumi up, checkpoints {up['checkpoints']}", len(up["objects"]), up))
        if up["objects"] != objects:
            same = False
            print(f"DIFFERENT OBJECTS: only the engine's: {sorted(up['objects'] - objects)[:20]}")
            print(f"                   only the peer's: {sorted(objects - up['objects'])[:20]}")
    print(
        "\n| way | objects | refused attempts | apply s | until ready s | total s | CPU s (CLI / host+program / "
        "provider) | peak MiB (CLI / host+program / provider / all) | state MB | engine / peer | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    peer_s = rows[0][2]["total s"]
    for name, count, row in rows:
        if "refusals" in row:
            print(
                f"| {name} | {count} | {len(row['refusals'])} | {row['apply s']:.1f} | {row['ready s']:.1f} "
                f"| {row['total s']:.1f} | - | - | - | 1.00 | {row['load']} |"
            )
        else:
            print(
                f"| {name} | {count} | 0 | - | - | {row['total s']:.1f} | {row['cpu']} (sum {row['cpu total']:.0f}) "
                f"| {row['peak MiB']} | {row['state MB']:.1f} | {row['total s'] / peer_s:.2f} | {row['load']} |"
            )
    print(f"same objects on both sides: {same} ({len(objects)} rendered)")
    for name, _, row in rows:
        if "timeline" in row:
            print(f"\n{name}, where its time went:\n{row['timeline']}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--sleep", type=float, default=5, help="seconds between the peer's attempts (README: 20)")
    parser.add_argument("--give-up", type=float, default=1200, help="stop the peer's loop after this many seconds")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for readiness")
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE, help="ports of the planes")
    parser.add_argument("--no-engine", action="store_true", help="the peer's side only")
    parser.add_argument(
        "--checkpoints",
        choices=("fresh", "every-step", "both"),
        default="fresh",
        help="the engine's up as `mlplatform up` runs a fresh install (default), with per-step checkpoints, or both",
    )
    parser.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set for the engine's processes (a lever to measure: PULUMI_PARALLEL=64, GOGC=100, ...)",
    )
    parser.add_argument("--keep", type=Path, help="write each up's steps and state under this folder")
    args = parser.parse_args()
    args.engine_env = dict(item.split("=", 1) for item in args.engine_env)
    modes = [] if args.no_engine else {"fresh": [True], "every-step": [False], "both": [False, True]}[args.checkpoints]
    print(f"# pulumi up against the peer's loop, same objects — {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    if args.engine_env:
        print("engine environment: " + " ".join(f"{k}={v}" for k, v in sorted(args.engine_env.items())))
    print(f"peer: while ! kubectl apply --server-side --force-conflicts -f -; do sleep {args.sleep:g}; done; readiness")
    scratch = Path(tempfile.mkdtemp(prefix="mlp-peer-"))
    same = True
    try:
        for index, variant in enumerate(args.stacks):
            same &= measure(variant, scratch, args.port_base + 300 * index, args, modes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not same:
        raise SystemExit("the two sides applied different objects (see above)")


if __name__ == "__main__":
    main()
