"""Malformed and hostile stack files are refused before anything is registered: exit 2, one
bounded line per problem naming the file, the key path and the rule, never a traceback.

The cases live in tests/fixtures/invalid (each states the key and reason it must be refused
for; tests/unit/test_validation.py checks each one). Here: the CLI's answer to all of them,
the bounds, and the rules themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from decimal import Decimal

import pytest
from pydantic import BaseModel

from mlplatform.config import ConfigError, rules
from mlplatform.config.model import PlatformConfig
from mlplatform.config.problems import MAX_PROBLEMS_SHOWN
from mlplatform.config.quantity import parse_quantity
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.security

FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))
# Longest line a problem may print: a path, a value cut to rules.SHOWN_CHARACTERS, the rule.
MAX_LINE = 600


def test_every_malformed_fixture_is_refused_by_the_cli_with_bounded_lines_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "mlplatform", "validate", *(str(f.relative_to(REPO_ROOT)) for f in FIXTURES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        # The mirror setting of the environment would mend the fixture of a missing mirror.
        env={k: v for k, v in os.environ.items() if k != "MLPLATFORM_MIRROR"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # not one of them is reported valid
    lines = proc.stderr.splitlines()
    assert max(len(line) for line in lines) <= MAX_LINE
    reported = {line.split(": ", 1)[0] for line in lines}
    assert reported == {f"tests/fixtures/invalid/{f.name}" for f in FIXTURES}


def _lab_with(tmp_path, extra: str):
    text = (REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text() + extra
    path = tmp_path / "Pulumi.hostile.yaml"
    path.write_text(text)
    return path


def test_a_huge_value_is_quoted_back_cut_short(tmp_path):
    path = _lab_with(tmp_path, "  mlplatform:platform:\n    namespace: " + "a" * 200_000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_stack(str(path))
    (problem,) = info.value.problems
    assert problem.path == "mlplatform:platform.namespace"
    assert "breaks dns-1123-label" in problem.message
    assert len(str(problem)) < MAX_LINE


def test_a_report_of_many_problems_is_cut_to_a_bounded_number_of_lines(tmp_path):
    pools = "".join(f"      - {{name: P{i}, count: 0, cpu: x, memory: y}}\n" for i in range(400))
    path = tmp_path / "Pulumi.many.yaml"
    path.write_text(f"config:\n  mlplatform:environment: lab\n  mlplatform:cluster:\n    nodePools:\n{pools}")
    with pytest.raises(ConfigError) as info:
        load_stack(str(path))
    assert len(info.value.problems) > MAX_PROBLEMS_SHOWN
    lines = info.value.lines()
    assert len(lines) == MAX_PROBLEMS_SHOWN + 1
    assert lines[-1].startswith(f"... and {len(info.value.problems) - MAX_PROBLEMS_SHOWN} more problem(s)")


def test_a_stack_file_far_larger_than_a_config_is_refused_unread(tmp_path):
    path = _lab_with(tmp_path, "#" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError) as info:
        load_stack(str(path))
    assert info.value.problems[0].path == "<file>"


def _bounded(annotation) -> bool:
    """Whether an int/float annotation carries an upper bound."""
    metadata = list(typing.get_args(annotation)[1:]) if typing.get_origin(annotation) is typing.Annotated else []
    # Field(...) inside Annotated carries its constraints in its own metadata.
    metadata += [inner for m in metadata for inner in getattr(m, "metadata", [])]
    return any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in metadata)


def _numbers_without_bound(model: type[BaseModel], path: str = "") -> list[str]:
    unbounded = []
    for name, field in model.model_fields.items():
        where = f"{path}.{field.alias or name}"
        annotation = field.annotation
        members = (
            typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, type(int | None)) else ()
        )
        inner = next((m for m in members if m is not type(None)), annotation) if members else annotation
        bounds = [m for m in field.metadata if getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None]
        if inner in (int, float) and not bounds:
            unbounded.append(where)
        origin = typing.get_origin(inner)
        if origin in (list, dict):
            item = typing.get_args(inner)[-1]
            base = typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item
            if base in (int, float) and not _bounded(item):
                unbounded.append(where + "[]")
            if not any(getattr(m, "max_length", None) for m in field.metadata):
                unbounded.append(where + " (length)")
            if isinstance(base, type) and issubclass(base, BaseModel):
                unbounded += _numbers_without_bound(base, where + "[]")
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            unbounded += _numbers_without_bound(inner, where)
    return unbounded


def test_every_count_threshold_and_list_in_the_config_has_an_upper_bound():
    assert _numbers_without_bound(PlatformConfig) == []


def test_the_bound_walk_finds_a_missing_bound():
    class Loose(BaseModel):
        replicas: int
        sizes: list[int] = []

    assert _numbers_without_bound(Loose) == [".replicas", ".sizes[]", ".sizes (length)"]


@pytest.mark.parametrize(
    "text",
    ["1e31", "1e999999", "1e9999999999", "99999999999999999999Ei", "10000000000000000000", "nan", "inf", " 4", "4\n"],
)
def test_quantities_beyond_what_kubernetes_holds_or_not_written_as_one_are_refused(text):
    with pytest.raises(ValueError, match="breaks kubernetes-quantity"):
        parse_quantity(text)


def test_quantities_kubernetes_holds_parse_exactly():
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("64Gi") == 64 * 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("9223372036854775807") == rules.MAX_QUANTITY


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (rules.DNS_LABEL, ["a", "team-1", "x" * 63], ["A", "a_b", "-a", "a-", "x" * 64, "a\n", " a", ""]),
        (rules.DNS_SUBDOMAIN, ["a.b", "gp3-csi", "example.com"], ["a..b", "A.b", "a.b\n", "x" * 254]),
        (
            rules.QUALIFIED_NAME,
            ["nvidia.com/gpu", "app", "mlplatform.io/node-pool", "A_b.c"],
            ["/gpu", "nvidia.com/", "-a.com/x", "a b", "a/b/c", "x" * 64, "gpu\n", "example.com/" + "x" * 64],
        ),
        (rules.LABEL_VALUE, ["", "a", "A-b_c.d"], ["-a", "a-", "a b", "x" * 64, "a\n"]),
        (rules.NAMESPACE_PREFIX, ["", "team-", "ml"], ["Team-", "-team", "team_", "x" * 33, "team-\n"]),
        (rules.TRIMMED, ["vision-leads", "a b"], [" a", "a ", "a\n", "a\rb"]),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_each_rule_takes_what_kubernetes_takes_and_refuses_the_rest(rule, good, bad):
    assert [v for v in good if rule.problem(v) is not None] == []
    assert [v for v in bad if rule.problem(v) is None] == []
    assert f"breaks {rule.name} (allowed: {rule.allowed})" in rule.problem(bad[0])


@pytest.mark.parametrize("namespace", ["default", "kube-system", "kube-anything", "openshift-ml", "openshift"])
def test_reserved_namespaces(namespace):
    assert rules.reserved_namespace(namespace)
    assert not rules.reserved_namespace("mlplatform-system")
