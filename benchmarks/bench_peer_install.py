"""ML services install, ours against upstream's way, each on a fresh local control plane.

    python benchmarks/bench_peer_install.py [--sleep 5] [--give-up 1200] [--port-base 29000]

(a) ours: `mlplatform render --stack lab` and the export applied in its two ordered phases
    (server-side, no retry), PVCs bound, then every ML service Deployment Available.
(c) ours through the engine: `pulumi up` of the lab stack (monitoring and MLflow off, so that
    it installs what (b) installs plus the GPU layer and tenancy), readiness awaited by Pulumi
    itself, on the plane's simulated controllers (volumes, addresses). Skipped with --no-engine.
(b) upstream's way: `kustomize build` of the lab overlays' upstream bases (cert-manager,
    notebooks, pipelines, katib, kserve, kserve-runtimes, training) as one stream, piped to
    `kubectl apply --server-side --force-conflicts -f -` in upstream's loop
    (`while ! ...; do sleep N; done`; upstream's README sleeps 20 s) until it succeeds, PVCs
    bound, then every Deployment of the stream Available.

Both planes are the same (`mlplatform cluster up --stack lab --simulated`). No webhook server
runs on them, so both get the harness's webhook handling after their first apply: webhook
configurations to failurePolicy Ignore, CRD conversion webhooks off. In (b) the stream itself
carries that handling from the second attempt on, since every attempt re-applies the
configurations. Wall times are wall-clock on a shared machine: the load average is printed
beside them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from plane_support import (
    DEFAULT_PORT_BASE,
    REPO_ROOT,
    apply_phases,
    bind_volumes,
    deployments_of,
    dump_stream,
    fresh_plane,
    kubectl_cmd,
    load,
    machine,
    render_export,
    run,
    service_deployments,
    stop_plane,
    wait_available,
    without_webhook_servers_in_cluster,
    without_webhook_servers_in_manifests,
)

# The lab's overlays (each app's base: the lab has no variant of its own).
COMPONENTS = ("cert-manager", "notebooks", "pipelines", "katib", "kserve", "kserve-runtimes", "training")


def ours(scratch: Path, port_base: int, timeout: float) -> dict:
    plane = fresh_plane(scratch / "state-ours", port_base)
    try:
        out = scratch / "export"
        started = time.monotonic()
        manifests = render_export("lab", out)
        rendered = time.monotonic()
        steps = apply_phases(plane, manifests, out)
        applied = time.monotonic()
        bind_volumes(plane, manifests)
        deployments = service_deployments(manifests)
        wait_available(plane, deployments, timeout)
        done = time.monotonic()
        return {
            "objects": len(manifests),
            "service objects": sum(
                1 for m in manifests if m["metadata"].get("labels", {}).get("mlplatform.io/module") in SERVICE_MODULES
            ),
            "deployments": deployments,
            "build s": rendered - started,
            "apply s": applied - rendered,
            "failed applies": 0,
            "apply steps": steps,
            "available s": done - applied,
            "total s": done - started,
            "load": load(),
        }
    finally:
        stop_plane(plane)


def upstream_way(scratch: Path, port_base: int, sleep: float, give_up: float, timeout: float) -> dict:
    from mlplatform.overlays import build_overlay
    from mlplatform.upstream import upstream_sources

    mirror = Path(os.environ["MLPLATFORM_MIRROR"]) if os.environ.get("MLPLATFORM_MIRROR") else None
    plane = fresh_plane(scratch / "state-upstream", port_base)
    try:
        started = time.monotonic()
        sources = upstream_sources()
        manifests = [doc for component in COMPONENTS for doc in build_overlay(component, "lab", sources, mirror)]
        built = time.monotonic()
        apply = kubectl_cmd(plane, "apply", "--server-side", "--force-conflicts", "-f", "-")
        stream = dump_stream(manifests)
        failures, refusals, steps = 0, [], {}
        while True:
            attempt = time.monotonic()
            proc = run(apply, stream)
            steps[f"attempt {failures + 1}"] = time.monotonic() - attempt
            if proc.returncode == 0:
                break
            failures += 1
            refusals.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
            if failures == 1:
                handling = time.monotonic()
                without_webhook_servers_in_cluster(plane, manifests)
                without_webhook_servers_in_manifests(manifests)
                stream = dump_stream(manifests)
                steps["webhook handling"] = time.monotonic() - handling
            if time.monotonic() - started > give_up:
                raise RuntimeError(f"upstream's loop still refused after {failures} attempts: {refusals[-1]}")
            time.sleep(sleep)
        applied = time.monotonic()
        bind_volumes(plane, manifests)
        deployments = deployments_of(manifests)
        wait_available(plane, deployments, timeout)
        done = time.monotonic()
        return {
            "objects": len(manifests),
            "service objects": len(manifests),
            "deployments": deployments,
            "build s": built - started,
            "apply s": applied - built,
            "failed applies": failures,
            "refusals": refusals,
            "apply steps": steps,
            "available s": done - applied,
            "total s": done - started,
            "load": load(),
        }
    finally:
        stop_plane(plane)


def ours_engine(scratch: Path, port_base: int) -> dict:
    import yaml

    from mlplatform.engine import EngineStack, up_summary
    from tests.engine.test_pulumi_lifecycle import stack_secrets

    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    for name in ("monitoring", "mlflow"):
        document["config"]["mlplatform:modules"][name]["enabled"] = False
    stack_file = scratch / "Pulumi.lab.yaml"
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
    plane = fresh_plane(scratch / "state-engine", port_base)
    try:
        engine = EngineStack("lab", scratch / "engine", state_dir=scratch / "state-engine")
        engine.create(stack_file=stack_file, secrets=stack_secrets())
        up = engine.pulumi("up", "--yes", "--skip-preview", "--json").check()
        state = engine.state_inventory()
        deployments = sorted((namespace, name) for kind, namespace, name in state if kind == "Deployment")
        return {
            "objects": sum(up_summary(up.stdout).values()) - 1,  # less the stack itself
            "service objects": "-",
            "deployments": deployments,
            "build s": 0.0,
            "apply s": up.seconds,
            "failed applies": 0,
            "apply steps": {"pulumi up": up.seconds},
            "available s": 0.0,
            "total s": up.seconds,
            "load": load(),
        }
    finally:
        stop_plane(plane)


SERVICE_MODULES = {"notebooks", "pipelines", "katib", "kserve", "training", "kserve-cert-manager"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sleep", type=float, default=5, help="seconds between upstream's attempts (README: 20)")
    parser.add_argument("--give-up", type=float, default=1200, help="stop upstream's loop after this many seconds")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for Deployments Available")
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE, help="ports of the planes")
    parser.add_argument("--no-engine", action="store_true", help="leave out (c), `pulumi up`")
    args = parser.parse_args()
    print(f"# ML services install, ours vs upstream's way — {time.strftime('%Y-%m-%d %H:%M')}, {machine()}")
    print(f"upstream loop: while ! kubectl apply --server-side --force-conflicts -f -; do sleep {args.sleep:g}; done")
    scratch = Path(tempfile.mkdtemp(prefix="mlp-peer-"))
    try:
        first = ours(scratch, args.port_base, args.timeout)
        second = upstream_way(scratch, args.port_base + 100, args.sleep, args.give_up, args.timeout)
        third = None if args.no_engine else ours_engine(scratch, args.port_base + 200)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        "\n| way | objects applied | ML service objects | Deployments waited | build s | apply s "
        "| failed applies | until Available s | total s | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [("ours: render + ordered phases", first), ("upstream: kustomize + retry loop", second)]
    if third:
        rows.append(("ours: pulumi up (readiness awaited inside)", third))
    for name, row in rows:
        print(
            f"| {name} | {row['objects']} | {row['service objects']} | {len(row['deployments'])} "
            f"| {row['build s']:.1f} | {row['apply s']:.1f} | {row['failed applies']} "
            f"| {row['available s']:.1f} | {row['total s']:.1f} | {row['load']} |"
        )
    for name, row in (("ours", first), ("upstream", second)):
        print(f"{name} apply steps: " + ", ".join(f"{step} {s:.1f} s" for step, s in row["apply steps"].items()))
    print(f"\nratio upstream / ours (total wall time): {second['total s'] / first['total s']:.2f}")
    if third:
        print(f"ratio upstream / pulumi up (total wall time): {second['total s'] / third['total s']:.2f}")
    if second["failed applies"]:
        for attempt, refusal in enumerate(second["refusals"], 1):
            print(f"upstream attempt {attempt} refused (last line): {refusal[:300]}")
        at_readme_sleep = second["total s"] + second["failed applies"] * (20 - args.sleep)
        print(f"upstream at the README's 20 s sleep (same attempts): {at_readme_sleep:.1f} s")
    same = set(first["deployments"]) == set(second["deployments"])
    print(f"same Deployments in both: {same}")
    if not same:
        print(f"  only ours: {sorted(set(first['deployments']) - set(second['deployments']))}")
        print(f"  only upstream's: {sorted(set(second['deployments']) - set(first['deployments']))}")


if __name__ == "__main__":
    main()
