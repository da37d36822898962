"""The README is a guide (short, every command it names exists, its samples are what the commands
print) and, with the pages under docs/, links only to files and sections that exist."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_README_LINES = 300

FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", flags=re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", flags=re.M)


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` there is no heading, a link no link)."""
    return FENCE.sub("", text)


def _code(text: str) -> list[str]:
    """Fenced code blocks (their `# comments` left out) and inline code spans."""
    blocks = [re.sub(r"(^|\s)#.*$", "", m.group(0), flags=re.M) for m in FENCE.finditer(text)]
    spans = re.findall(r"`([^`\n]+)`", _prose(text))
    return blocks + spans


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(_prose(path.read_text())):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_github_slug():
    assert github_slug("GPU layer (`modules.gpu`)") == "gpu-layer-modulesgpu"
    assert github_slug("Which nodes are a pool's, and what you do on each provider") == (
        "which-nodes-are-a-pools-and-what-you-do-on-each-provider"
    )
    assert github_slug("GPUXidErrors") == "gpuxiderrors"


def test_readme_is_a_guide_of_at_most_300_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move details to docs/"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target}: no file {path_part}")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{target}: no heading #{fragment} in {path.relative_to(REPO_ROOT)}")
    assert broken == [], f"{page.relative_to(REPO_ROOT)}: {broken}"


def test_readme_links_every_docs_page():
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in LINK.findall(_prose(README.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)
    }
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert unlinked == []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _make_targets() -> set[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)[ \t]*:(?!=)", makefile, flags=re.M))
    for phony in re.findall(r"^\.PHONY:(.*)$", makefile, flags=re.M):
        targets.update(phony.split())
    return targets


def test_every_mlplatform_subcommand_and_make_target_in_the_readme_exists():
    from mlplatform.cli import build_parser

    commands = _subcommands(build_parser())
    targets = _make_targets()
    unknown = []
    named = 0
    for code in _code(README.read_text()):
        for command, rest in re.findall(r"(?<![\w/.:-])mlplatform ([a-z][\w-]*)((?: [a-z][\w-]*)?)", code):
            named += 1
            if command not in commands:
                unknown.append(f"mlplatform {command}")
                continue
            sub = _subcommands(commands[command])
            if sub and rest.strip() and rest.strip() not in sub:
                unknown.append(f"mlplatform {command}{rest}")
        for target in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code):
            named += 1
            if target not in targets:
                unknown.append(f"make {target}")
    assert named > 0
    assert unknown == []


def _validate_samples(page: Path) -> list[tuple[list[str], bool, str]]:
    """Each `$ mlplatform validate ...` of a console block: its arguments, whether it echoes the
    exit status, and the output shown under it."""
    samples = []
    for block in re.findall(r"^```console\n(.*?)^```", page.read_text(), flags=re.M | re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^\$ mlplatform validate\b(.*)$", line)
            if not m:
                continue
            command = m.group(1).split("#")[0].strip()
            echo = command.endswith("; echo $?")
            command = command.removesuffix("; echo $?").strip()
            output = []
            for following in lines[i + 1 :]:
                if following.startswith("$ "):
                    break
                output.append(following)
            samples.append((shlex.split(command), echo, "\n".join(output)))
    return samples


def _run_validate(args: list[str]) -> tuple[str, int]:
    from mlplatform.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            status = main(["validate", *args])
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    return buffer.getvalue().rstrip("\n"), status


def test_the_readme_shows_validate_on_a_shipped_stack_and_on_a_fixture():
    samples = _validate_samples(README)
    arguments = [args for args, _, _ in samples]
    assert any(args and not args[0].startswith("tests/") for args in arguments), arguments
    assert any(args and args[0].startswith("tests/fixtures/") for args in arguments), arguments


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_validate_samples_are_what_the_command_prints(page, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    for args, echo, shown in _validate_samples(page):
        output, status = _run_validate(args)
        expected = f"{output}\n{status}" if echo else output
        assert shown == expected, f"{page.name}: `mlplatform validate {' '.join(args)}` prints:\n{expected}"
