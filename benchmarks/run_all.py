"""Every benchmark, one after another, as `make bench` runs them.

    python benchmarks/run_all.py [--quick] [--only NAME ...]

Each section prints its own tables as it goes. A section that fails does not stop the ones
after it (a run takes hours; one broken section should not cost the rest), but the run then
exits 1. The summary at the end gives each section's exit status and wall time, so a partial
run still says which figures it holds. --quick passes each section its smoke-run arguments.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mlplatform import progress  # noqa: E402

# (name, script, arguments of a quick run); in this order because the later sections are the
# long ones and the early ones check the toolchain and the plane they rely on.
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("toolchain", "bench_toolchain_and_plane.py", ["--starts", "1"]),
    ("tenancy-scale", "bench_tenancy_scale.py", ["--teams", "10", "100"]),
    ("policy-check", "bench_policy_check.py", ["--repeat", "1"]),
    ("peer", "bench_peer_install.py", []),
    ("gitops", "bench_gitops_reliability.py", ["--quick"]),
    ("engine", "bench_engine.py", ["--quick"]),
    # `bash .ci/run` on a clean clone with this machine's caches (`--cold` by hand: empty ones);
    # it has no shorter form.
    ("ci", "bench_ci.py", []),
]


def run(names: list[str], quick: bool) -> int:
    results: list[tuple[str, int, float]] = []
    for name, script, quick_args in SECTIONS:
        if name not in names:
            continue
        arguments = quick_args if quick else []
        print(f"\n---- section {name}: {script} {' '.join(arguments)}".rstrip(), flush=True)
        # live=False: the section prints its tables as it goes, which a live line would tear.
        with progress.step(f"section {name}", live=False) as section:
            code = subprocess.call([sys.executable, "-u", str(HERE / script), *arguments])
            if code != 0:
                section.fail(f"exit {code}")
        results.append((name, code, section.elapsed()))
    print(f"\n## Sections ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)")
    print("| section | exit | minutes |\n|---|---|---|")
    for name, code, seconds in results:
        print(f"| {name} | {code} | {seconds / 60:.1f} |")
    failed = [name for name, code, _ in results if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each section's smoke run")
    parser.add_argument("--only", nargs="+", choices=[name for name, _, _ in SECTIONS], help="these sections only")
    args = parser.parse_args()
    sys.exit(run(args.only or [name for name, _, _ in SECTIONS], args.quick))


if __name__ == "__main__":
    main()
