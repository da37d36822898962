"""Shared helpers: stack config as the Pulumi engine hands it over, and a recording mock."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlplatform.config.load import read_stack_file, stack_location
from mlplatform.plain_data import plain_copy
from mlplatform.render import RecordingMocks, manifests_of, run_program, stack_config_strings

__all__ = ["RecordingMocks", "pulumi_config_of"]

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS = ("lab", "openshift", "cloud")
# The offline mirror of upstream sources (CI exports MLPLATFORM_MIRROR; the default is where
# the mirror sits beside a checkout). Captured before any test changes the environment.
UPSTREAM_MIRROR = Path(os.environ.get("MLPLATFORM_MIRROR") or REPO_ROOT.parent / "shared" / "upstream")


@pytest.fixture(scope="session", autouse=True)
def overlay_cache_of_the_session(tmp_path_factory):
    """Overlay builds shared by this run's processes (renders, the engine's programs) but not
    taken from an earlier run: every run builds each overlay with kustomize at least once."""
    if "MLPLATFORM_OVERLAY_CACHE" not in os.environ:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # Parallel workers (pytest -n) share one: the run's base folder holds each worker's.
            folder = tmp_path_factory.getbasetemp().parent / "overlay-cache"
            folder.mkdir(exist_ok=True)
        else:
            folder = tmp_path_factory.mktemp("overlay-cache")
        os.environ["MLPLATFORM_OVERLAY_CACHE"] = str(folder)
    yield


@pytest.fixture
def mirror() -> Path:
    if not (UPSTREAM_MIRROR / "README.md").exists():
        pytest.fail(f"the upstream mirror is not at {UPSTREAM_MIRROR}: set MLPLATFORM_MIRROR", pytrace=False)
    return UPSTREAM_MIRROR


def one_object(manifests: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    """The one object of a render with this kind and name (in this namespace, where given)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and m["metadata"]["name"] == name
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, (kind, name, namespace, len(found))
    return found[0]


# Helm's annotation that keeps an object on uninstall: upstream puts it on some CRDs, and the
# copies a CRD release installs go without it (a destroy removes them).
HELM_KEEP = "helm.sh/resource-policy"


def without_helm_keep(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` as a CRD release installs it: without Helm's keep annotation."""
    annotations = {k: v for k, v in (manifest["metadata"].get("annotations") or {}).items() if k != HELM_KEEP}
    metadata = {k: v for k, v in manifest["metadata"].items() if k != "annotations"}
    return {**manifest, "metadata": {**metadata, **({"annotations": annotations} if annotations else {})}}


@functools.cache
def _validator(schema_json: str):
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_against(document: Any, schema: dict[str, Any]) -> None:
    """`jsonschema.validate`, with each schema checked and compiled once per session: the
    upstream CRD schemas are large and many objects share one."""
    _validator(json.dumps(schema, sort_keys=True)).validate(document)


def pulumi_config_of(stack_file: Path) -> dict[str, str]:
    """The PULUMI_CONFIG map for a stack file: every value a string, structured ones as JSON."""
    return stack_config_strings((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {})


class ProgramRuns:
    """The real program under mocks, run once per stack, config and environment in a test
    process: dozens of tests read the same shipped stack, and one run of a stack with ML
    services takes 10-20 s. The key holds every input of a run (the stack name, each config
    value, the MLPLATFORM_* environment); the project's code and the mirror do not change
    within a test session. Manifests are handed out as fresh copies (tests change them); the
    recorded resources and components are shared and only read."""

    def __init__(self) -> None:
        self._runs: dict[tuple, tuple[RecordingMocks, dict[str, Any]]] = {}
        self.runs = 0

    @staticmethod
    def _key(stack: str, config: dict[str, str]) -> tuple:
        environment = sorted(
            (name, value)
            for name, value in os.environ.items()
            if name.startswith("MLPLATFORM_") and name != "MLPLATFORM_OVERLAY_CACHE"
        )
        return stack, json.dumps(config, sort_keys=True), tuple(environment)

    def run(self, stack: str, config: dict[str, str]) -> tuple[RecordingMocks, dict[str, Any]]:
        key = self._key(stack, config)
        if key not in self._runs:
            self._runs[key] = run_program(stack, config)
            self.runs += 1
        return self._runs[key]

    def manifests(self, stack_or_path: str, raw: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """What `render_manifests(stack_or_path, raw)` returns, from the shared run."""
        path, stack = stack_location(stack_or_path)
        config = stack_config_strings(raw if raw is not None else read_stack_file(path))
        recorder, _ = self.run(stack, config)
        return plain_copy(manifests_of(recorder, stack))


PROGRAM_RUNS = ProgramRuns()
# `render_manifests` for tests: the same objects, from the run the session shares.
render_shared = PROGRAM_RUNS.manifests


@pytest.fixture
def run_stack(mirror, monkeypatch):
    """Run the real program against mocks with a stack's config; returns (mocks, components),
    shared with every test that runs the same stack and config (see ProgramRuns). Upstream
    sources come from the offline mirror."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))

    def run(stack: str, config: dict[str, str] | None = None, *, fresh: bool = False):
        """`fresh=True` for a test that watches the program as it runs (a spy on a function)."""
        if config is None:
            config = pulumi_config_of(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
        return run_program(stack, config) if fresh else PROGRAM_RUNS.run(stack, config)

    return run
