"""Figures for the toolchain and the local control plane.

    python benchmarks/bench_toolchain_and_plane.py [--cold-tools] [--starts N]

Prints: the build time of each pinned tool (as recorded when it was built, or measured now
from an empty module and build cache with --cold-tools), the control plane's start time,
and render time per stack. The Pulumi engine's figures, each stack on a plane of its own, are
bench_engine.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from plane_support import PLANE_START_PORT_BASE  # noqa: E402

from mlplatform.lock import load_lock  # noqa: E402
from mlplatform.toolchain.build import cached_dir, ensure_tool  # noqa: E402


def mlplatform(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )


def tool_build_times(cold: bool) -> None:
    lock = load_lock()
    rows = []
    if cold:
        scratch = Path(tempfile.mkdtemp(prefix="mlp-cold-"))
        os.environ.update(
            MLPLATFORM_TOOL_CACHE=str(scratch / "tools"),
            GOMODCACHE=str(scratch / "gomod"),
            GOCACHE=str(scratch / "gocache"),
        )
    for tool in lock.tools.values():
        if cold:
            result = ensure_tool(tool, rebuild=True, link=False)
            rows.append((tool.name, tool.version, result.source, result.seconds))
            continue
        marker = cached_dir(tool) / "complete.json"
        if marker.exists():
            rows.append((tool.name, tool.version, "recorded", json.loads(marker.read_text())["seconds"]))
        else:
            rows.append((tool.name, tool.version, "not built", float("nan")))
    print("\n## Tool build time (2 cores)" + (" — cold: empty module and build caches" if cold else ""))
    print(f"| {'tool':<28} | {'version':<9} | {'source':<11} | {'seconds':>8} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 13}|{'-' * 10}|")
    for name, version, source, seconds in rows:
        print(f"| {name:<28} | {version:<9} | {source:<11} | {seconds:>8.1f} |")
    built = [s for _, _, src, s in rows if src in ("built", "recorded")]
    print(f"| {'total (built tools)':<28} | {'':<9} | {'':<11} | {sum(built):>8.1f} |")
    if cold:
        shutil.rmtree(scratch, ignore_errors=True)


def plane_start_times(starts: int) -> None:
    times = []
    for attempt in range(starts):
        state = Path(tempfile.mkdtemp(prefix="mlp-plane-"))
        env = dict(
            os.environ,
            MLPLATFORM_STATE_DIR=str(state),
            MLPLATFORM_CLUSTER_PORT_BASE=str(PLANE_START_PORT_BASE + attempt * 100),
        )
        started = time.monotonic()
        proc = mlplatform("cluster", "up", "--stack", "lab", "--simulated", env=env)
        elapsed = time.monotonic() - started
        mlplatform("cluster", "down", "--purge", env=env)
        shutil.rmtree(state, ignore_errors=True)
        if proc.returncode != 0:
            print(f"cluster up failed: {proc.stderr.strip()}")
            return
        times.append(elapsed)
    print("\n## Control plane start (cold data dir, lab stack: 5 nodes Ready)")
    print("| starts | min s | median s | max s |\n|---|---|---|---|")
    print(f"| {len(times)} | {min(times):.1f} | {statistics.median(times):.1f} | {max(times):.1f} |")


def render_times() -> None:
    print("\n## Render (program under the mock monitor, no cluster)")
    print("| stack | objects | seconds, overlay cache empty | seconds, overlays kept |\n|---|---|---|---|")
    for stack in ("lab", "openshift", "cloud"):
        cache = Path(tempfile.mkdtemp(prefix="mlp-overlay-cache-"))
        env = dict(os.environ, MLPLATFORM_OVERLAY_CACHE=str(cache))
        seconds, counts = [], []
        for _ in ("empty", "kept"):
            out = Path(tempfile.mkdtemp(prefix="mlp-render-"))
            started = time.monotonic()
            proc = mlplatform("render", "--stack", stack, "--out", str(out), env=env)
            seconds.append(time.monotonic() - started)
            counts.append(
                len([p for p in out.glob("*.yaml") if p.name != "kustomization.yaml"])
                if proc.returncode == 0
                else "failed"
            )
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        count = counts[0] if counts[0] == counts[1] else f"{counts[0]}, then {counts[1]}"
        print(f"| {stack} | {count} | {seconds[0]:.2f} | {seconds[1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold-tools", action="store_true", help="rebuild every tool from empty caches (minutes)")
    parser.add_argument("--starts", type=int, default=3, help="control plane starts to time")
    args = parser.parse_args()
    print(f"# mlplatform toolchain and control plane — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    tool_build_times(args.cold_tools)
    plane_start_times(args.starts)
    render_times()


if __name__ == "__main__":
    main()
