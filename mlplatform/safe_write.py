"""Writes of files the user owns (stack files, run records): whole or not at all, one writer at a time.

A write goes to a temporary file in the same folder, reaches the disk, then replaces the file in
one rename: a crash or a full disk leaves the old file or the new one, never a cut-short mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class FileLockedError(RuntimeError):
    pass


def _real(path: Path | str) -> Path:
    # Write through a symlink to the file it names, next to that file (the rename stays on one filesystem).
    return Path(os.path.realpath(path))


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot sync a folder; the rename has happened all the same.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    """What open() gives a new file. The umask is read from /proc where it can be: reading it with
    os.umask means setting it, which races other threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path | str, text: str | bytes, new_file_mode: int | None = None) -> None:
    """Replace `path` with `text`: a temp file in the same folder (the original's mode where it
    exists, else `new_file_mode` or the umask's), written, flushed and fsynced, renamed over the
    file, then the folder fsynced."""
    target = _real(path)
    data = text.encode() if isinstance(text, str) else text
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = _new_file_mode() if new_file_mode is None else new_file_mode
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(target.parent)


def lock_path(path: Path | str) -> Path:
    target = _real(path)
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def write_lock(path: Path | str, wait: float = 0.0) -> Iterator[None]:
    """Hold `.<name>.lock` next to `path` (fcntl.flock) while writing it; a second writer waits
    up to `wait` seconds, then FileLockedError."""
    lock = lock_path(path)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise FileLockedError(f"another mlplatform command is writing {path} (lock: {lock})") from None
            time.sleep(0.05)
            continue
        except BaseException:
            os.close(fd)
            raise
        # The holder before us removes the lock file on release: a lock taken on the removed
        # file guards nothing, so take the one now at that path.
        try:
            held = os.fstat(fd)
            current = os.stat(lock)
        except FileNotFoundError:
            os.close(fd)
            continue
        if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
            os.close(fd)
            continue
        break
    try:
        yield
    finally:
        # Removed while still held, so no lock file is left behind next to the user's file.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
