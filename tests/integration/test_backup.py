"""Backups of preserved images with a real daemon, driven through the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.qemu_load import QemuIo, overlapping_writes
from helpers.served import Served
from helpers.skips import need

from targetcli_preserve.backup.repository import CHUNK_SIZE as C
from targetcli_preserve.volumes.api import open_volume

MiB = 1 << 20
SIZE = 16 * MiB
CLI = [sys.executable, "-m", "targetcli_preserve.cli"]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tcp-bk-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(short_dir: Path) -> Iterator[Served]:
    need("qemu-io")
    daemon = Served(short_dir / "state", ["lun0:16M"]).start()
    yield daemon
    daemon.stop()


def qemu_io(served: Served, *commands: str) -> None:
    args = ["qemu-io", "-f", "raw"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, served.url(0)], check=True, capture_output=True, timeout=60)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, timeout=120)


def chunk_digests(image: bytes) -> set[str]:
    chunks = (image[i : i + C] for i in range(0, len(image), C))
    return {hashlib.sha256(c).hexdigest() for c in chunks if c.strip(b"\0")}


def test_backup_restore_verify_of_preserved_images(served: Served, short_dir: Path) -> None:
    repo = short_dir / "repo"
    qemu_io(served, f"write -P 0x11 0 {2 * C}")
    first = served.json("preserve", "--wait", "lun0")
    at_cut_1 = bytes([0x11]) * (2 * C) + bytes(SIZE - 2 * C)
    qemu_io(served, f"write -P 0x22 {C} {C}", f"write -P 0x33 {3 * C} {MiB}")
    live = served.json("volumes", "lun0")[-1]["path"]
    assert Path(live).read_bytes() != at_cut_1  # the backup must not be the live data

    done = served.cli(
        "--json", "backup", "lun0", "--preserve", str(first["id"]), "--repo", str(repo)
    )
    assert done.returncode == 0, done.stderr
    one = json.loads(done.stdout)
    assert one["new_chunks"] == 1 and one["zero_chunks"] == 2  # two equal 0x11 chunks
    restored = short_dir / "one.img"
    done = cli("restore", "--repo", str(repo), one["id"], "--to", str(restored))
    assert done.returncode == 0, done.stderr
    assert restored.read_bytes() == at_cut_1

    second = served.json("preserve", "--wait", "lun0")
    at_cut_2 = bytearray(at_cut_1)
    at_cut_2[C : 2 * C] = bytes([0x22]) * C
    at_cut_2[3 * C : 3 * C + MiB] = bytes([0x33]) * MiB
    two = served.json("backup", "lun0", "--repo", str(repo))  # default: the newest frozen
    assert two["preserve"]["id"] == second["id"]
    assert two["new_chunks"] == 2  # chunk 0 is stored already
    done = cli("restore", "--repo", str(repo), two["id"], "--to", str(short_dir / "two.img"))
    assert done.returncode == 0, done.stderr
    assert (short_dir / "two.img").read_bytes() == bytes(at_cut_2)

    listing = cli("backups", "--repo", str(repo))
    assert listing.returncode == 0 and one["id"] in listing.stdout and two["id"] in listing.stdout
    assert cli("verify", "--repo", str(repo)).returncode == 0

    digest = hashlib.sha256(bytes([0x22]) * C).hexdigest()
    chunk = repo / "chunks" / digest[:2] / digest
    body = bytearray(chunk.read_bytes())
    body[-1] ^= 1
    chunk.write_bytes(bytes(body))
    done = cli("verify", "--repo", str(repo))
    assert done.returncode == 1 and digest in done.stdout
    assert "OK" in done.stdout  # the first backup does not use that chunk
    out = short_dir / "bad.img"
    done = cli("restore", "--repo", str(repo), two["id"], "--to", str(out))
    assert done.returncode == 1 and "corrupt" in done.stderr
    assert not out.exists() and not list(short_dir.glob(".tmp-*"))


def test_backup_while_writes_are_in_flight_holds_only_the_frozen_image(
    served: Served, short_dir: Path
) -> None:
    repo = short_dir / "repo"
    io = QemuIo(served.url(0))
    try:
        writes = overlapping_writes(seed=7, count=250, region=SIZE)
        feeder = io.feed_in_background([w.line().replace(" -q", "") for w in writes])
        io.wait_acknowledged(50)
        cut = served.json("preserve", "--wait", "lun0")
        done = served.cli("--json", "backup", "lun0", "--repo", str(repo))  # writes go on
        assert done.returncode == 0, done.stderr
        feeder.join(60)
        io.finish()
    finally:
        io.kill()
    frozen = Path(cut["luns"][0]["preserved"]["path"])

    async def read() -> bytes:
        vol = await open_volume(frozen, read_only=True, background=False)
        try:
            return await vol.read(0, vol.size)
        finally:
            await vol.close()

    image = asyncio.run(read())
    files = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}
    chunks = {f for f in files if f.startswith("chunks/")}
    others = files - chunks
    assert others == {"config.json", f"backups/{json.loads(done.stdout)['id']}.json"}
    assert {Path(f).name for f in chunks} == chunk_digests(image)
    assert (served.state_dir / "journal").read_bytes() not in image
