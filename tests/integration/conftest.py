"""Fixtures for tests that run the real daemon: a state directory per clone strategy.

``state_root`` is parametrised: "lazy" puts the state directory on the test machine's
own filesystem (ext4 here: no reflink, so clones are lazy), "reflink" on an XFS loop
image made for the session (needs root and xfsprogs; skipped with a reason otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def xfs_mount():
    if os.geteuid() != 0:
        pytest.skip("an XFS loop mount needs root")
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs is not installed (scripts/setup installs xfsprogs)")
    top = Path(tempfile.mkdtemp(prefix="tcp-xfs-"))
    image, mnt = top / "xfs.img", top / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(4 << 30)
    try:
        subprocess.run(
            ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True
        )
        subprocess.run(
            ["mount", "-o", "loop", str(image), str(mnt)], check=True, capture_output=True
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(top, ignore_errors=True)
        pytest.skip(f"cannot make an XFS loop mount here: {err.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(params=["lazy", "reflink"])
def clone_strategy(request) -> str:
    return request.param


@pytest.fixture
def state_dir(clone_strategy, tmp_path, request) -> Path:
    if clone_strategy == "lazy":
        yield tmp_path / "state"
        return
    mnt = request.getfixturevalue("xfs_mount")
    path = Path(tempfile.mkdtemp(prefix="state-", dir=mnt))
    yield path
    shutil.rmtree(path, ignore_errors=True)
