"""XFS filesystems on loop images, for the reflink clone tests.

Needs root, mkfs.xfs and mount with loop support; skips with the reason otherwise.
Each filesystem is always unmounted and its loop device detached in teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def _xfs(size: str, reflink: bool) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount an XFS loop image")
    for tool in ("mkfs.xfs", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="tp-xfs-", dir="/var/tmp"))
    img, mnt = work / "xfs.img", work / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        _run("truncate", "-s", size, str(img)).check_returncode()
        flag = f"reflink={int(reflink)}"
        made = _run("mkfs.xfs", "-q", "-m", flag, str(img))
        if made.returncode != 0:
            pytest.skip(f"mkfs.xfs -m {flag} failed: {made.stderr.strip()}")
        mount = _run("mount", "-o", "loop", str(img), str(mnt))
        if mount.returncode != 0:
            pytest.skip(f"cannot mount an XFS loop image: {mount.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted and _run("umount", str(mnt)).returncode != 0:
            # Busy: a failed test left a descriptor open. Detach it now; the kernel
            # frees it (and, with autoclear, its loop device) when the last one closes.
            _run("umount", "-l", str(mnt))
        # mount -o loop sets autoclear; detach explicitly in case it did not.
        attached = _run("losetup", "-j", str(img)).stdout
        for line in attached.splitlines():
            _run("losetup", "-d", line.split(":", 1)[0])
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def xfs_dir() -> Iterator[Path]:
    """An XFS filesystem made with ``-m reflink=1``."""
    with _xfs("2G", reflink=True) as mnt:
        yield mnt


@pytest.fixture
def xfs_noreflink_dir() -> Iterator[Path]:
    """An XFS filesystem made with ``-m reflink=0``: no block sharing."""
    with _xfs("512M", reflink=False) as mnt:
        yield mnt


@pytest.fixture
def xfs_tmp(xfs_dir: Path, request) -> Iterator[Path]:
    """A fresh directory on the reflink XFS filesystem for one test."""
    d = xfs_dir / request.node.name.replace("[", "_").replace("]", "")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)
