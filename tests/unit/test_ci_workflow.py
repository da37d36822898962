"""The adopters' workflow (.github/workflows/ci.yml) runs what `.ci/run` runs: `make test`,
which runs the Makefile's CI_TARGETS, each target once in a step named after it,
with the tool cache keyed on the lock. The checks take the workflow's text so that a broken
variant can be fed to them too."""

from __future__ import annotations

import os
import re
import shlex
from collections import Counter

import pytest
import yaml

from mlplatform.paths import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"
CI_RUN = REPO_ROOT / ".ci" / "run"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"

# Make targets a job may run besides CI_TARGETS: preparation only (virtualenv, tools).
PREPARATION = frozenset({"setup", "tools", "tools-test"})
# Jobs beyond `.ci/run` (real clusters, kind): their targets are not CI_TARGETS.
EXTRA_JOBS = frozenset({"policy-preview", "e2e-kind"})
# Targets whose recipes need the tools built from Go modules: their jobs restore the caches first.
NEEDS_TOOLS = frozenset({"tools", "tools-test", "validate", "unit", "checkov", "e2e", "engine"})
LOCK_HASH = "hashFiles('versions.lock.yaml')"
TOOL_CACHE = "MLPLATFORM_TOOL_CACHE"
GO_CACHE = "go-build"

SHELL_OPERATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", "{", "}", "then", "do", "else"})
MAKE_OPTIONS_WITH_VALUE = frozenset({"-C", "-f", "-o", "-W", "-I", "-j", "--directory", "--file"})


def variable(makefile_text: str, name: str) -> list[str]:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", makefile_text, re.MULTILINE)
    assert match, f"the Makefile defines no {name} := line"
    return match.group(1).split()


def ci_targets(makefile_text: str) -> list[str]:
    return variable(makefile_text, "CI_TARGETS")


def recipe(makefile_text: str, target: str) -> list[str]:
    """The recipe lines of a rule (tab-indented, after its rule line)."""
    match = re.search(rf"^{re.escape(target)}\s*:(?!=).*\n((?:\t.*\n?)*)", makefile_text, re.MULTILINE)
    assert match, f"the Makefile has no rule for {target!r}"
    return [line.strip() for line in match.group(1).splitlines()]


def prerequisites(makefile_text: str, target: str) -> list[str]:
    match = re.search(rf"^{re.escape(target)}\s*:(?!=)\s*(.*)$", makefile_text, re.MULTILINE)
    assert match, f"the Makefile has no rule for {target!r}"
    return match.group(1).split()


def makefile_targets(makefile_text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile_text, re.MULTILINE))


def make_invocations(script: str) -> list[str]:
    """Every target of every `make` command in a shell script, in order."""
    targets: list[str] = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:
            words = line.split()
        command_start = True
        index = 0
        while index < len(words):
            word = words[index]
            if command_start and word == "make":
                index += 1
                while index < len(words) and words[index] not in SHELL_OPERATORS:
                    argument = words[index]
                    if argument in MAKE_OPTIONS_WITH_VALUE:
                        index += 1
                    elif not argument.startswith("-") and "=" not in argument:
                        targets.append(argument)
                    index += 1
                command_start = True
                continue
            # An assignment before a command (`VAR=x make ...`) keeps the command position.
            command_start = word in SHELL_OPERATORS or (command_start and re.match(r"^\w+=", word) is not None)
            index += 1
    return targets


def _steps(workflow: dict) -> list[tuple[str, int, dict]]:
    return [
        (job_id, index, step)
        for job_id, job in (workflow.get("jobs") or {}).items()
        for index, step in enumerate(job.get("steps") or [])
    ]


def _path_of(step: dict) -> str:
    return str((step.get("with") or {}).get("path", ""))


def _is_cache(step: dict, kind: str) -> bool:
    return str(step.get("uses", "")).startswith("actions/cache") and kind in _path_of(step)


def check_workflow(text: str, targets: list[str], extra_jobs: frozenset[str] = EXTRA_JOBS) -> list[str]:
    """What keeps the workflow from running CI_TARGETS as `.ci/run` does; empty when nothing."""
    workflow = yaml.safe_load(text)
    problems: list[str] = []
    missing_jobs = extra_jobs - set(workflow.get("jobs") or {})
    if missing_jobs:
        problems.append(f"extra jobs named by the test are gone: {sorted(missing_jobs)}")
    runs: Counter[str] = Counter()
    for job_id, index, step in _steps(workflow):
        invoked = make_invocations(str(step.get("run", "")))
        if not invoked:
            continue
        where = f"{job_id} step {index + 1}"
        if len(invoked) > 1:
            problems.append(f"{where} runs several make targets ({', '.join(invoked)}): one step each")
        for target in invoked:
            name = str(step.get("name", ""))
            if name != f"make {target}" and not name.startswith(f"make {target} "):
                problems.append(f"{where} runs `make {target}` but is named {name!r}")
            if job_id in extra_jobs:
                if target in targets:
                    problems.append(f"{where}: extra job runs CI target `make {target}`")
                continue
            if target in targets:
                runs[target] += 1
            elif target not in PREPARATION:
                problems.append(f"{where} runs `make {target}`: neither a CI target nor preparation")
    for target in targets:
        if runs[target] != 1:
            problems.append(f"make {target}: run {runs[target]} times by the workflow, expected once")
    problems += _check_caches(workflow)
    return problems


def _check_caches(workflow: dict) -> list[str]:
    problems: list[str] = []
    tool_cache_steps = 0
    for job_id, job in (workflow.get("jobs") or {}).items():
        steps = job.get("steps") or []
        restores = {step.get("id"): step for step in steps if step.get("id")}
        for index, step in enumerate(steps):
            if not _is_cache(step, TOOL_CACHE):
                continue
            tool_cache_steps += 1
            key = str(step["with"].get("key", ""))
            saved_from = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.cache-primary-key\s*\}\}", key)
            if saved_from:
                source = restores.get(saved_from.group(1), {})
                key = str((source.get("with") or {}).get("key", ""))
                if _path_of(source) != _path_of(step):
                    problems.append(f"{job_id} step {index + 1} saves another path than it restored")
            if LOCK_HASH not in key:
                problems.append(f"{job_id} step {index + 1}: tool cache key {key!r} does not hash versions.lock.yaml")
        first_tools = next(
            (
                index
                for index, step in enumerate(steps)
                if NEEDS_TOOLS & set(make_invocations(str(step.get("run", ""))))
            ),
            None,
        )
        if first_tools is None:
            continue
        for kind in (TOOL_CACHE, GO_CACHE):
            restored = [index for index, step in enumerate(steps) if _is_cache(step, kind)]
            if not restored or restored[0] > first_tools:
                problems.append(f"{job_id}: builds tools before restoring the {kind} cache")
    if not tool_cache_steps:
        problems.append(f"no step caches {TOOL_CACHE}")
    return problems


def _without_steps_running(text: str, target: str) -> str:
    workflow = yaml.safe_load(text)
    for job in workflow["jobs"].values():
        job["steps"] = [s for s in job["steps"] if target not in make_invocations(str(s.get("run", "")))]
    return yaml.safe_dump(workflow, sort_keys=False)


@pytest.fixture(scope="module")
def makefile_text() -> str:
    return MAKEFILE.read_text()


@pytest.fixture(scope="module")
def workflow_text() -> str:
    return WORKFLOW.read_text()


def test_ci_run_runs_make_test_which_runs_every_ci_target_once(makefile_text):
    commands = [
        line.strip() for line in CI_RUN.read_text().splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert "make test" in commands
    assert make_invocations("\n".join(commands)) == ["test"]
    # `make test`: CI_IN_ORDER one after another (and the tools), then CI_SIDE_BY_SIDE in one
    # parallel make: together, every CI target once, in CI_TARGETS' order.
    in_order, side_by_side = variable(makefile_text, "CI_IN_ORDER"), variable(makefile_text, "CI_SIDE_BY_SIDE")
    assert in_order + side_by_side == ci_targets(makefile_text)
    assert prerequisites(makefile_text, "test") == ["$(CI_IN_ORDER)", "tools"]
    assert recipe(makefile_text, "test") == ["$(MAKE) -j2 $(addprefix beside-,$(CI_SIDE_BY_SIDE))"]
    beside = "$(addprefix beside-,$(CI_SIDE_BY_SIDE))"
    assert prerequisites(makefile_text, beside) == ["beside-%:"]
    assert recipe(makefile_text, beside) == ["@$(MAKE) --no-print-directory $* 2>&1 | sed -u 's/^/[$*] /'"]
    assert "engine" in ci_targets(makefile_text)


def test_workflow_runs_each_ci_target_once_in_a_step_named_after_it(makefile_text, workflow_text):
    assert check_workflow(workflow_text, ci_targets(makefile_text)) == []


def test_every_target_the_workflow_runs_is_a_makefile_target(makefile_text, workflow_text):
    defined = makefile_targets(makefile_text)
    invoked = {
        t for _, _, step in _steps(yaml.safe_load(workflow_text)) for t in make_invocations(str(step.get("run", "")))
    }
    assert invoked - defined == set()
    assert defined >= PREPARATION


def test_the_engine_job_installs_the_official_pulumi_cli_before_building_tools(workflow_text):
    workflow = yaml.safe_load(workflow_text)
    (job_id,) = [j for j, _, s in _steps(workflow) if "engine" in make_invocations(str(s.get("run", "")))]
    steps = workflow["jobs"][job_id]["steps"]
    actions = [i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("pulumi/actions@v6")]
    builds = [i for i, s in enumerate(steps) if {"tools", "engine"} & set(make_invocations(str(s.get("run", ""))))]
    assert actions and builds and actions[0] < builds[0]
    assert "steps.pulumi-version.outputs.version" in str(steps[actions[0]]["with"]["pulumi-version"])


def test_extra_jobs_say_they_go_beyond_ci_run(workflow_text):
    lines = workflow_text.splitlines()
    for job_id in EXTRA_JOBS:
        start = lines.index(f"  {job_id}:")
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"  \S", lines[i])), len(lines))
        comments = " ".join(line.strip() for line in lines[start:end] if line.strip().startswith("#"))
        assert "beyond .ci/run" in comments.lower(), f"{job_id} has no comment saying it goes beyond .ci/run"


def test_a_workflow_without_the_engine_step_is_reported(makefile_text, workflow_text):
    broken = _without_steps_running(workflow_text, "engine")
    assert "make engine: run 0 times by the workflow, expected once" in check_workflow(
        broken, ci_targets(makefile_text)
    )


def test_a_twice_run_target_a_misnamed_step_and_an_unpinned_tool_cache_are_reported(makefile_text, workflow_text):
    workflow = yaml.safe_load(workflow_text)
    jobs = workflow["jobs"]
    jobs["lint"]["steps"].append({"name": "lint again", "run": "make lint"})
    jobs["lint"]["steps"].append({"name": "bench", "run": "make bench"})
    for step in jobs["validate"]["steps"]:
        if _is_cache(step, TOOL_CACHE):
            step["with"]["key"] = "mlplatform-tools-${{ runner.os }}"
    problems = check_workflow(yaml.safe_dump(workflow, sort_keys=False), ci_targets(makefile_text))
    assert "make lint: run 2 times by the workflow, expected once" in problems
    assert any("is named 'lint again'" in p for p in problems)
    assert any("`make bench`: neither a CI target nor preparation" in p for p in problems)
    assert any("does not hash versions.lock.yaml" in p for p in problems)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("make lint", ["lint"]),
        ("make -j2 unit && make e2e", ["unit", "e2e"]),
        ("cd x; make -C sub tools STACK=lab # make nothing", ["tools"]),
        ("echo make lint\nmakefile=1 make validate", ["validate"]),
        ("if true; then make engine; fi", ["engine"]),
    ],
)
def test_make_invocations(script, expected):
    assert make_invocations(script) == expected


@pytest.mark.parametrize("target", ["e2e", "engine"])
def test_make_test_runs_the_side_by_side_suites_for_real(target):
    """What make itself would run for `beside-<target>` (a dry run): the suite's pytest. A rule
    make does not apply (a pattern rule for a phony target) runs nothing and still exits 0."""
    import subprocess

    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", f"beside-{target}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    assert f"pytest -m {target} " in proc.stdout, proc.stdout
