"""The local `file://` state backend, and what a killed CLI can leave broken in it.

Pulumi writes each checkpoint to a temporary file and renames it into place, so a checkpoint
is never half written. Its blob library, by default, also writes a `.attrs` sidecar beside
each file (content type, MD5) by truncating and rewriting it in place: a `kill -9` in that
moment leaves an empty sidecar, and from then on every command on the stack fails with
"failed to load checkpoint: EOF". Our backends are opened with `metadata=skip`, which writes
no sidecar; `repair` mends backends written without it (a missing sidecar reads as none).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

SCHEME = "file://"


def local_url(path: Path) -> str:
    """The backend URL of a state folder: no sidecar files (see above)."""
    return f"{SCHEME}{path}?metadata=skip"


def root(url: str) -> Path | None:
    """The folder of a `file://` backend URL, its query left out; None for other backends."""
    if not url.startswith(SCHEME):
        return None
    return Path(urlsplit(url).path)


def stack_files(backend_root: Path, project: str, stack: str) -> list[Path]:
    """The checkpoint and its backup, in the project-scoped layout and the legacy one."""
    folders = [backend_root / ".pulumi" / "stacks" / project, backend_root / ".pulumi" / "stacks"]
    return [path for folder in folders for path in sorted(folder.glob(f"{stack}.json*")) if path.is_file()]


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def repair(backend_root: Path, project: str, stack: str) -> list[str]:
    """Remove what a killed write left: unreadable sidecars and temporary files. Returns what
    was removed. Only call it while no process holds the stack's lock."""
    done = []
    files = stack_files(backend_root, project, stack)
    sidecars = [path for path in files if path.name.endswith(".attrs")]
    pulumi_dir = backend_root / ".pulumi"
    for history in (pulumi_dir / "history" / project / stack, pulumi_dir / "history" / stack):
        sidecars += sorted(history.glob("*.attrs"))
    if (pulumi_dir / "meta.yaml.attrs").is_file():
        sidecars.append(pulumi_dir / "meta.yaml.attrs")
    for sidecar in sidecars:
        if not _readable_json(sidecar):
            sidecar.unlink()
            done.append(f"removed {sidecar.name}, a metadata sidecar a killed write left unreadable")
    for leftover in files:
        if leftover.name.endswith(".tmp"):
            leftover.unlink()
            done.append(f"removed {leftover.name}, the temporary file of a write that never finished")
    return done
