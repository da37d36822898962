"""Digest of what each of our charts deploys, recorded beside its version in
charts/<chart>/.content-digest, so that a change without a version bump is caught.

    python -m tests.chart_digest --update    # record every chart's version and digest
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import yaml

CHARTS_DIR = Path(__file__).resolve().parent.parent / "charts"
RECORD = ".content-digest"
UPDATE_COMMAND = "python -m tests.chart_digest --update"
# Not deployed: documentation, the record itself, test suites and lint cases.
SKIPPED = {"README.md", RECORD}
SKIPPED_DIRS = {"tests", "ci"}
_VERSION_LINE = re.compile(r"^version:.*$\n?", flags=re.M)


def charts() -> list[Path]:
    return sorted(p.parent for p in CHARTS_DIR.glob("*/Chart.yaml"))


def chart_version(chart: Path) -> str:
    return str(yaml.safe_load((chart / "Chart.yaml").read_text())["version"])


def content_digest(chart: Path) -> str:
    """sha256 over every deployed file (path and bytes); Chart.yaml without its version line."""
    digest = hashlib.sha256()
    for path in sorted(p for p in chart.rglob("*") if p.is_file()):
        relative = path.relative_to(chart)
        if (len(relative.parts) == 1 and relative.name in SKIPPED) or relative.parts[0] in SKIPPED_DIRS:
            continue
        data = path.read_bytes()
        if relative.as_posix() == "Chart.yaml":
            data = _VERSION_LINE.sub("", data.decode()).encode()
        digest.update(relative.as_posix().encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def recorded(chart: Path) -> dict[str, str]:
    path = chart / RECORD
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def problem(chart: Path) -> str | None:
    """Why the record of this chart does not match it, or None."""
    record, version, digest = recorded(chart), chart_version(chart), content_digest(chart)
    name = f"charts/{chart.name}"
    if record.get("version") == version and record.get("sha256") == digest:
        return None
    if record.get("version") == version:
        return f"{name} changed but its version ({version}) did not: bump {name}/Chart.yaml version and run `{UPDATE_COMMAND}` to record it"
    return f"{name} version {version} is not recorded (recorded: {record.get('version')}): run `{UPDATE_COMMAND}`"


def update(chart: Path) -> str:
    record, version = recorded(chart), chart_version(chart)
    if record.get("version") == version and record.get("sha256") != content_digest(chart):
        raise SystemExit(f"charts/{chart.name} changed: bump charts/{chart.name}/Chart.yaml version first")
    (chart / RECORD).write_text(
        f"# Chart version and sha256 of what it deploys (tests/chart_digest.py); `{UPDATE_COMMAND}`\n"
        f"# records a new version: any change of templates, values or schema needs one.\n"
        + yaml.safe_dump({"version": version, "sha256": content_digest(chart)}, sort_keys=False)
    )
    return f"charts/{chart.name}: {version}"


def main(argv: list[str]) -> int:
    if argv == ["--update"]:
        for chart in charts():
            print(update(chart))
        return 0
    problems = [p for p in map(problem, charts()) if p]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
