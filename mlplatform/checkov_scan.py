"""checkov over each stack's render: every failure must be covered by a documented skip
(policies/checkov-skips.yaml). Run by `make checkov` with checkov from its own virtualenv."""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlplatform.paths import REPO_ROOT

SKIPS_FILE = REPO_ROOT / "policies" / "checkov-skips.yaml"


@dataclass(frozen=True)
class Skip:
    checks: tuple[str, ...]
    resources: tuple[str, ...]
    reason: str

    def covers(self, check_id: str, resource: str) -> bool:
        return check_id in self.checks and (
            not self.resources or any(fnmatch.fnmatchcase(resource, p) for p in self.resources)
        )


def load_skips(path: Path = SKIPS_FILE) -> list[Skip]:
    skips = []
    for index, entry in enumerate((yaml.safe_load(path.read_text()) or {}).get("skips") or []):
        unknown = set(entry) - {"checks", "resources", "reason"}
        if unknown or not entry.get("checks") or len(str(entry.get("reason") or "")) < 10:
            raise ValueError(f"{path}: skips[{index}] needs checks and a reason (and nothing else: {sorted(unknown)})")
        skips.append(Skip(tuple(entry["checks"]), tuple(entry.get("resources") or ()), entry["reason"]))
    return skips


def failed_checks(output: str, folder: Path | None = None) -> list[dict[str, Any]]:
    """checkov's JSON report: one object per framework (a list when several ran). A report
    that judged nothing is an error, not a pass: checkov skips whole trees it deems hidden."""
    reports = json.loads(output) if output.strip() else []
    failures = []
    judged = 0
    for report in reports if isinstance(reports, list) else [reports]:
        failures.extend((report.get("results") or {}).get("failed_checks") or [])
        summary = report.get("summary") or {}
        judged += int(summary.get("passed") or 0) + int(summary.get("failed") or 0)
    if not judged:
        raise RuntimeError(f"checkov judged no object in {folder or 'its input'}")
    return failures


def start_scan(checkov: str, folder: Path) -> subprocess.Popen:
    """checkov over one folder, in the background: the next stack renders meanwhile."""
    return subprocess.Popen(
        [checkov, "--framework", "kubernetes", "-d", str(folder), "--output", "json", "--quiet", "--compact"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_scan(proc: subprocess.Popen, folder: Path) -> list[dict[str, Any]]:
    stdout, stderr = proc.communicate()
    # checkov exits 1 when a check fails; anything else is checkov itself failing.
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed on {folder}: {stderr.strip()[-2000:]}")
    return failed_checks(stdout, folder)


def main(argv: list[str] | None = None) -> int:
    from mlplatform.render import render_manifests, write_manifests

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkov", default="checkov", help="the checkov executable")
    # Not under .mlplatform/: checkov leaves out every path with a hidden folder in it.
    parser.add_argument(
        "--out", default=str(REPO_ROOT / "build" / "checkov"), help="where the renders go (one folder per stack)"
    )
    parser.add_argument("stacks", nargs="+")
    args = parser.parse_args(argv)
    skips = load_skips()
    used: set[Skip] = set()
    blocking = 0
    # Each stack's scan runs while the next one renders (checkov and the program each keep one
    # core busy); the reports are read in the stacks' order.
    scans = []
    for stack in args.stacks:
        folder = Path(args.out) / Path(stack).stem.removeprefix("Pulumi.")
        write_manifests(render_manifests(stack), folder)
        scans.append((stack, folder, start_scan(args.checkov, folder)))
    for stack, folder, proc in scans:
        failures = finish_scan(proc, folder)
        remaining = []
        for failure in failures:
            skip = next((s for s in skips if s.covers(failure["check_id"], failure["resource"])), None)
            if skip is None:
                remaining.append(failure)
            else:
                used.add(skip)
        print(
            f"checkov {stack}: {len(failures)} failed check(s), {len(failures) - len(remaining)} skipped as documented"
        )
        for failure in remaining:
            print(f"  {failure['check_id']} {failure['resource']}: {failure['check_name']}", file=sys.stderr)
        blocking += len(remaining)
    for skip in skips:
        if skip not in used:
            print(f"note: skip of {', '.join(skip.checks)} ({', '.join(skip.resources) or 'all'}) matched nothing")
    if blocking:
        print(f"{blocking} checkov failure(s) outside {SKIPS_FILE.relative_to(REPO_ROOT)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
