"""Shared helpers for the volume unit tests (run on the ext4 root: the lazy path)."""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path

import pytest
from helpers.skips import not_applicable

FICLONE = 0x40049409


def reflink_works(directory: Path) -> bool:
    a, b = directory / ".probe-a", directory / ".probe-b"
    a.write_bytes(b"x" * 4096)
    try:
        with open(a, "rb") as src, open(b, "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError as err:
        assert err.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY)
        return False
    finally:
        a.unlink()
        b.unlink(missing_ok=True)


@pytest.fixture
def lazy_dir(tmp_path: Path) -> Path:
    """A directory on a filesystem without reflink (the lazy-clone path)."""
    if reflink_works(tmp_path):
        not_applicable(f"{tmp_path} supports reflink; these tests need a filesystem without it")
    return tmp_path
