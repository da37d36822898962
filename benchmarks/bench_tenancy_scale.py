"""Team scale: 10, 100 and 500 teams on the lab stack, its ML services off.

    python benchmarks/bench_tenancy_scale.py [--teams 10 100 500]

For each size: validate + render time and object count (the program under the mock
monitor), then on a fresh local control plane the server-side apply of the export (cold),
the same apply again (nothing to change), and adding one team (render + apply).
bench_engine.py --only scale measures the same sizes through `pulumi up`.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from plane_support import SCALE_RENDER_PORT_BASE  # noqa: E402

from mlplatform.paths import BIN_DIR  # noqa: E402


def stack_with_teams(count: int, folder: Path) -> Path:
    """The lab stack with `count` teams and its ML services off, so that teams alone grow."""
    document = copy.deepcopy(yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text()))
    teams = []
    for index in range(count):
        quota = {"cpu": "4", "memory": "16Gi", "storage": {"standard": "100Gi"}}
        if index < 32:  # the lab's 32 shared T4 slices, one per team, within the bound
            quota["gpus"] = {"nvidia.com/gpu.shared": 1}
        teams.append({"name": f"team{index:03d}", "groups": {"edit": [f"team{index:03d}"]}, "quota": quota})
    modules = document["config"]["mlplatform:modules"]
    modules["tenancy"]["teams"] = teams
    for name, module in modules.items():
        if name not in ("tenancy", "gpu") and isinstance(module, dict) and "enabled" in module:
            module["enabled"] = False
    path = folder / f"Pulumi.scale{count}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(cmd: list[str], env: dict[str, str]) -> None:
    """Run a step of the measurement; a failure stops the bench with the step's own output."""
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    run(cmd, env)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, nargs="+", default=[10, 100, 500])
    args = parser.parse_args()
    mlp = [sys.executable, "-m", "mlplatform"]
    kubectl = str(BIN_DIR / "kubectl")
    print(f"# Tenancy scale — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print("| teams | objects | validate+render s | cold apply s | no-op apply s | add one team s |")
    print("|---|---|---|---|---|---|")
    for count in args.teams:
        scratch = Path(tempfile.mkdtemp(prefix="mlp-scale-"))
        env = dict(
            os.environ,
            MLPLATFORM_STATE_DIR=str(scratch / "state"),
            MLPLATFORM_CLUSTER_PORT_BASE=str(SCALE_RENDER_PORT_BASE),
        )
        try:
            stack = stack_with_teams(count, scratch)
            out = scratch / "render"
            render_s = timed([*mlp, "render", "--stack", str(stack), "--out", str(out)], env)
            objects = len([p for p in out.glob("*.yaml") if p.name != "kustomization.yaml"])
            run([*mlp, "cluster", "up", "--stack", "lab", "--simulated"], env)
            kubeconfig = f"--kubeconfig={scratch / 'state' / 'cluster' / 'kubeconfig'}"
            apply = [kubectl, kubeconfig, "apply", "--server-side", "--field-manager=mlplatform", "-k", str(out)]
            cold_s = timed(apply, env)
            noop_s = timed(apply, env)
            bigger = stack_with_teams(count + 1, scratch)
            out_plus = scratch / "render-plus"
            started = time.monotonic()
            run([*mlp, "render", "--stack", str(bigger), "--out", str(out_plus)], env)
            run([kubectl, kubeconfig, "apply", "--server-side", "--field-manager=mlplatform", "-k", str(out_plus)], env)
            add_s = time.monotonic() - started
            print(f"| {count} | {objects} | {render_s:.1f} | {cold_s:.1f} | {noop_s:.1f} | {add_s:.1f} |", flush=True)
        finally:
            subprocess.run([*mlp, "cluster", "down", "--purge"], cwd=REPO_ROOT, env=env, capture_output=True)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
