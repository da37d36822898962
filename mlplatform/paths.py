"""Well-known locations: the repository, its ignored state folders, the tool cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"
# Everything below .mlplatform/ is ignored by git: Pulumi state, cluster data, kubeconfig.
STATE_ROOT = Path(os.environ.get("MLPLATFORM_STATE_DIR", REPO_ROOT / ".mlplatform"))
# Links to the pinned tools; fixed, so a second state folder (tests) uses the same tools.
BIN_DIR = REPO_ROOT / ".mlplatform" / "bin"
# Data files that come with the tools (kwok's lifecycle stages).
SHARE_DIR = REPO_ROOT / ".mlplatform" / "share"


def tool_cache_root() -> Path:
    """Built binaries live outside the repository so a fresh clone reuses them."""
    override = os.environ.get("MLPLATFORM_TOOL_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlplatform" / "tools"
