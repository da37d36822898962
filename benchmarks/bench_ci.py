"""What CI costs: `bash .ci/run` on a clean clone of this checkout's HEAD, timed.

    python benchmarks/bench_ci.py [--cold] [--keep]

The clone sits in a scratch folder, with the upstream mirror named by MLPLATFORM_MIRROR (as
`.ci/run` sets it beside a checkout). `--cold` gives the run empty Go module, Go build, pip
and user caches (the tool cache, the overlay cache and checkov's virtualenv are in the last),
all in the scratch folder, so it pays every tool build and every download as a fresh machine
does; without it the run uses this machine's caches, as a CI machine that has run before.

Prints the run's exit status and minutes, the tools it built (the rows of `mlplatform tools`:
source, start, seconds), each test suite's counts and minutes from its JUnit report, and the
slowest tests as each suite lists them.
The run's whole output is kept in the scratch folder's `ci.log` with --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

REPO_ROOT = Path(__file__).resolve().parent.parent
MIRROR_BESIDE = REPO_ROOT.parent / "shared" / "upstream"

# A row of `mlplatform tools`: tool, version, source, started, seconds.
TOOL_ROW = re.compile(
    r"^(?P<tool>[a-z][\w-]+) +(?P<version>v\S+) +(?P<source>\S+) +(?P<started>\d\d:\d\d:\d\d) +[\d.]+$"
)
# Where `make` leaves each suite's JUnit report (the Makefile's REPORTS).
REPORTS = Path("build") / "test-reports"


def cold_environment(scratch: Path) -> dict[str, str]:
    caches = scratch / "caches"
    return {
        "GOMODCACHE": str(caches / "go-mod"),
        "GOCACHE": str(caches / "go-build"),
        "PIP_CACHE_DIR": str(caches / "pip"),
        # The tool cache, the overlay cache and checkov's virtualenv live under it.
        "XDG_CACHE_HOME": str(caches / "user"),
    }


def run_ci(clone: Path, env: dict[str, str], log: Path) -> tuple[int, float]:
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", ".ci/run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)
        code = proc.wait()
    return code, time.monotonic() - started


def report(log: Path, code: int, seconds: float, cold: bool) -> None:
    text = log.read_text(errors="replace")
    print(f"\n## `bash .ci/run` on a clean clone ({'empty caches' if cold else 'the caches of this machine'})")
    print(f"exit {code} in {seconds / 60:.1f} min ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')})")
    rows = [m for m in map(TOOL_ROW.match, text.splitlines()) if m]
    built = [m for m in rows if m["source"] != "cache"]
    if built:
        print("\n| tool | source | started | seconds |\n|---|---|---|---|")
        for m in built:
            print(f"| {m['tool']} {m['version']} | {m['source']} | {m['started']} | {m.group(0).split()[-1]} |")
    reports = sorted((log.parent / "clone" / REPORTS).glob("*.xml"), key=lambda p: p.stat().st_mtime)
    if reports:
        print("\n| suite | tests | failed | errors | skipped | minutes |\n|---|---|---|---|---|---|")
        for path in reports:
            suite = ElementTree.parse(path).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = [int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")]
            print(f"| {path.stem} | {' | '.join(map(str, counts))} | {float(suite.get('time', 0)) / 60:.1f} |")
    slowest = [line for line in text.splitlines() if re.match(r"^\d+\.\d+s (call|setup|teardown) ", line)]
    if slowest:
        print("\nslowest (as each suite lists them):")
        for line in slowest:
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="empty Go, pip and user caches, as a fresh machine")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (clone, caches, ci.log)")
    args = parser.parse_args()
    mirror = os.environ.get("MLPLATFORM_MIRROR") or (str(MIRROR_BESIDE) if MIRROR_BESIDE.is_dir() else "")
    scratch = Path(tempfile.mkdtemp(prefix="mlplatform-ci-"))
    code = 1
    try:
        clone = scratch / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
        env = dict(os.environ, CI="true")
        if mirror:
            env["MLPLATFORM_MIRROR"] = mirror
        if args.cold:
            env.update(cold_environment(scratch))
        log = scratch / "ci.log"
        print(f"running bash .ci/run in {clone} (log: {log})", flush=True)
        code, seconds = run_ci(clone, env, log)
        report(log, code, seconds, args.cold)
    finally:
        if args.keep:
            print(f"\nkept: {scratch}")
        else:
            # Go's module cache is read-only on disk: make it writable to remove it.
            subprocess.run(["chmod", "-R", "u+w", str(scratch)], check=False)
            shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
