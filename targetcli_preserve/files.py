"""Files that must survive a crash whole: a directory's fsync, and a file written
atomically (temporary name in the same directory, fsync, rename, directory fsync), so a
reader, or a run after a crash, sees the old file or the new one, never a part.
Blocking; callers on the loop run them in a thread."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TMP_PREFIX = ".tmp-"  # a temporary's name starts with it (a later run may remove them)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(final: Path) -> Path:
    """A fresh temporary name beside ``final``."""
    return final.parent / f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}"


def atomic_write(final: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``final`` (mode ``mode``, whatever the umask) whole or not at all."""
    tmp = tmp_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent)
