"""Cost of the policy pack: `mlplatform policy check` against the stack's program alone.

    python benchmarks/bench_policy_check.py [--stacks lab openshift cloud] [--repeat 5]

For each stack: the program under the mock monitor alone (what `mlplatform render` runs),
the same program with the pack's records (parents, dependencies), and every policy's
validate over them with the environment's config; best of --repeat runs, in one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mlplatform.config.load import read_stack_file, stack_location  # noqa: E402
from mlplatform.policy_check import load_pack_config, pack_config_path, record_stack, run_policies  # noqa: E402
from mlplatform.render import render_manifests  # noqa: E402
from mlplatform.validation import load_stack  # noqa: E402


def best(repeat: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stacks", nargs="+", default=["lab", "openshift", "cloud"])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'stack':<12} {'resources':>9} {'render s':>9} {'record s':>9} {'policies s':>11} {'overhead':>9}")
    for stack in args.stacks:
        path, name = stack_location(stack)
        raw = read_stack_file(path)
        config = load_pack_config(pack_config_path(load_stack(stack).config.environment))
        render_s, _ = best(args.repeat, lambda stack=stack: render_manifests(stack))
        record_s, records = best(args.repeat, lambda name=name, raw=raw: record_stack(name, raw))
        policy_s, _ = best(args.repeat, lambda records=records, config=config: run_policies(records, config))
        overhead = (record_s + policy_s - render_s) / render_s
        print(f"{name:<12} {len(records):>9} {render_s:>9.3f} {record_s:>9.3f} {policy_s:>11.4f} {overhead:>8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
