"""Shared helpers: stack config as the Pulumi engine hands it over, and a recording mock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from mlplatform.render import RecordingMocks, stack_config_strings, use_mocks

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
        os.environ["MLPLATFORM_OVERLAY_CACHE"] = str(tmp_path_factory.mktemp("overlay-cache"))
    yield


@pytest.fixture
def mirror() -> Path:
    if not (UPSTREAM_MIRROR / "README.md").exists():
        pytest.fail(f"the upstream mirror is not at {UPSTREAM_MIRROR}: set MLPLATFORM_MIRROR", pytrace=False)
    return UPSTREAM_MIRROR


def pulumi_config_of(stack_file: Path) -> dict[str, str]:
    """The PULUMI_CONFIG map for a stack file: every value a string, structured ones as JSON."""
    return stack_config_strings((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {})


@pytest.fixture
def run_stack(mirror, monkeypatch):
    """Run the real program against mocks with a stack's config; returns (mocks, components).
    Upstream sources come from the offline mirror."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))

    def run(stack: str, config: dict[str, str] | None = None):
        from mlplatform.program import main

        mocks = RecordingMocks()
        use_mocks(mocks, stack)
        pulumi.runtime.set_all_config(
            config if config is not None else pulumi_config_of(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
        )
        result: dict[str, Any] = {}

        @pulumi.runtime.test
        def program():
            result.update(main())

        program()
        return mocks, result

    return run
