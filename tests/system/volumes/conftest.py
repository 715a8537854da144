"""An XFS filesystem with reflink, on a loop image, for the reflink clone tests.

Needs root, mkfs.xfs and mount with loop support; skips with the reason otherwise.
The filesystem is always unmounted and its loop device detached in teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def xfs_dir() -> Iterator[Path]:
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
        _run("truncate", "-s", "2G", str(img)).check_returncode()
        made = _run("mkfs.xfs", "-q", "-m", "reflink=1", str(img))
        if made.returncode != 0:
            pytest.skip(f"mkfs.xfs -m reflink=1 failed: {made.stderr.strip()}")
        mount = _run("mount", "-o", "loop", str(img), str(mnt))
        if mount.returncode != 0:
            pytest.skip(f"cannot mount an XFS loop image: {mount.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted:
            _run("umount", str(mnt))
        # mount -o loop sets autoclear; detach explicitly in case it did not.
        attached = _run("losetup", "-j", str(img)).stdout
        for line in attached.splitlines():
            _run("losetup", "-d", line.split(":", 1)[0])
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def xfs_tmp(xfs_dir: Path, request) -> Iterator[Path]:
    """A fresh directory on the XFS filesystem for one test."""
    d = xfs_dir / request.node.name.replace("[", "_").replace("]", "")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)
