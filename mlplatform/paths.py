"""Well-known locations: the repository, its ignored state folders, the tool cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"
# Everything below .mlplatform/ is ignored by git: Pulumi state, cluster data, kubeconfig.
STATE_ROOT = Path(os.environ.get("MLPLATFORM_STATE_DIR", REPO_ROOT / ".mlplatform"))
# The Pulumi home the project's commands use unless the user set PULUMI_HOME.
PULUMI_HOME = STATE_ROOT / "pulumi-home"
# Links to the pinned tools; fixed, so a second state folder (tests) uses the same tools.
BIN_DIR = REPO_ROOT / ".mlplatform" / "bin"
# Data files that come with the tools (kwok's lifecycle stages).
SHARE_DIR = REPO_ROOT / ".mlplatform" / "share"


def cache_root() -> Path:
    """The user's cache folder for the project: outside the repository, so clones share it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlplatform"


def tool_cache_root() -> Path:
    """Built binaries live outside the repository so a fresh clone reuses them."""
    override = os.environ.get("MLPLATFORM_TOOL_CACHE")
    if override:
        return Path(override)
    return cache_root() / "tools"


def overlay_cache_root() -> Path | None:
    """Overlay builds kept across processes; `MLPLATFORM_OVERLAY_CACHE=off` builds every time."""
    override = os.environ.get("MLPLATFORM_OVERLAY_CACHE")
    if override == "off":
        return None
    return Path(override) if override else cache_root() / "overlays"
