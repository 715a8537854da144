"""Clones on a real reflink filesystem (XFS loop image) and on the ext4 root."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from targetcli_preserve._errors import BackendError
from targetcli_preserve.volumes import (
    CloneStrategy,
    FileVolume,
    LazyVolume,
    clone_volume,
    create_volume,
    open_volume,
    remove_volume,
)

MiB = 1 << 20
GiB = 1 << 30


def io_counters() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, value = line.split(":")
        out[key] = int(value)
    return out


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


async def test_automatic_mode_picks_reflink_on_xfs(xfs_tmp: Path) -> None:
    src = await create_volume(xfs_tmp / "src", 64 * MiB)
    payload = os.urandom(4 * MiB)
    await src.write(MiB, payload)
    clone = await clone_volume(src, xfs_tmp / "c")
    try:
        assert type(clone) is FileVolume and clone.strategy is CloneStrategy.REFLINK
        assert clone.hydration_progress() == 1.0
        assert await clone.read(MiB, 4 * MiB) == payload
        # copy-on-write both ways
        await clone.write(MiB, b"clone")
        await src.write(2 * MiB, b"source")
        assert await src.read(MiB, 5) == payload[:5]
        assert await clone.read(2 * MiB, 6) == payload[MiB : MiB + 6]
        assert sorted(os.listdir(xfs_tmp)) == ["c", "c.clone.json", "src"]
    finally:
        await clone.close()
        await src.close()
    again = await open_volume(xfs_tmp / "c")
    try:
        assert again.strategy is CloneStrategy.REFLINK
        assert await again.read(MiB, 5) == b"clone"
    finally:
        await again.close()
    await remove_volume(xfs_tmp / "c")
    assert sorted(os.listdir(xfs_tmp)) == ["src"]


async def test_explicit_strategies_on_xfs(xfs_tmp: Path) -> None:
    src = await create_volume(xfs_tmp / "src", 16 * MiB)
    await src.write(0, b"r" * MiB)
    reflinked = await clone_volume(src, xfs_tmp / "r", CloneStrategy.REFLINK)
    lazy = await clone_volume(src, xfs_tmp / "l", CloneStrategy.LAZY, chunk_size=MiB)
    try:
        assert reflinked.strategy is CloneStrategy.REFLINK
        assert isinstance(lazy, LazyVolume) and lazy.strategy is CloneStrategy.LAZY
        await lazy.write(10, b"L")
        await asyncio.wait_for(lazy.wait_hydrated(), 20)
        assert await lazy.read(0, 12) == b"r" * 10 + b"Lr"
        assert await reflinked.read(0, 12) == b"r" * 12
        # A lazy clone still reading through its source cannot be reflinked.
        lazy2 = await clone_volume(src, xfs_tmp / "l2", CloneStrategy.LAZY, background=False)
        with pytest.raises(BackendError, match="still hydrating"):
            await clone_volume(lazy2, xfs_tmp / "x", CloneStrategy.REFLINK)
        auto = await clone_volume(lazy2, xfs_tmp / "x")
        assert auto.strategy is CloneStrategy.LAZY
        assert await auto.read(0, 4) == b"rrrr"
        await auto.close()
        await lazy2.close()
        # ...but once hydrated it is a plain file and reflinks.
        again = await clone_volume(lazy, xfs_tmp / "y")
        assert again.strategy is CloneStrategy.REFLINK
        assert await again.read(0, 12) == b"r" * 10 + b"Lr"
        await again.close()
    finally:
        await reflinked.close()
        await lazy.close()
        await src.close()


async def test_automatic_mode_picks_lazy_on_ext4_and_across_filesystems(
    xfs_tmp: Path, tmp_path: Path
) -> None:
    ext4_src = await create_volume(tmp_path / "src", 8 * MiB)
    await ext4_src.write(0, b"e" * 100)
    on_ext4 = await clone_volume(ext4_src, tmp_path / "c", background=False)
    across = await clone_volume(ext4_src, xfs_tmp / "c", background=False)  # EXDEV
    try:
        assert on_ext4.strategy is CloneStrategy.LAZY
        assert across.strategy is CloneStrategy.LAZY
        assert await across.read(0, 101) == b"e" * 100 + b"\0"
        with pytest.raises(BackendError, match="does not support FICLONE"):
            await clone_volume(ext4_src, xfs_tmp / "d", CloneStrategy.REFLINK)
        assert not (xfs_tmp / "d").exists() and not (xfs_tmp / "d.partial").exists()
    finally:
        await on_ext4.close()
        await across.close()
        await ext4_src.close()


async def _timed_clone(d: Path, size: int, strategy: CloneStrategy | None) -> tuple[float, dict]:
    src = await create_volume(d / f"src-{size}", size)
    for i in range(16):  # some real extents spread over the volume
        await src.write(i * (size // 16), os.urandom(64 * 1024))
    await src.flush()
    free = free_bytes(d)
    before = io_counters()
    t0 = time.perf_counter()
    clone = await clone_volume(src, d / f"clone-{size}", strategy, background=False)
    elapsed = time.perf_counter() - t0
    after = io_counters()
    work = {
        "rchar": after["rchar"] - before["rchar"],
        "wchar": after["wchar"] - before["wchar"],
        "space": free - free_bytes(d),
        "strategy": clone.strategy,
    }
    assert await clone.read(size // 2, 64 * 1024) == await src.read(size // 2, 64 * 1024)
    await clone.close()
    await src.close()
    return elapsed, work


@pytest.mark.parametrize("strategy", [CloneStrategy.REFLINK, CloneStrategy.LAZY])
async def test_clone_time_does_not_grow_with_size_on_xfs(
    xfs_tmp: Path, strategy: CloneStrategy
) -> None:
    results = {}
    for size in (GiB, 64 * GiB):
        results[size] = await _timed_clone(xfs_tmp, size, strategy)
    for size, (elapsed, work) in results.items():
        print(
            f"\nxfs {strategy.value} clone of {size // GiB:>2} GiB sparse: "
            f"{elapsed * 1000:.2f} ms, {work}"
        )
        assert work["strategy"] is strategy
        # No data copied: a few KiB of syscall I/O and no new space, whatever the size.
        assert work["rchar"] < 64 * 1024 and work["wchar"] < 16 * 1024
        assert work["space"] < 4 * MiB
        assert elapsed < 1.0
    t1, t64 = results[GiB][0], results[64 * GiB][0]
    assert t64 < 5 * t1 + 0.05, (t1, t64)


async def test_clone_time_does_not_grow_with_size_on_ext4(tmp_path: Path) -> None:
    results = {size: await _timed_clone(tmp_path, size, None) for size in (GiB, 64 * GiB)}
    for size, (elapsed, work) in results.items():
        print(
            f"\next4 automatic clone of {size // GiB:>2} GiB sparse: "
            f"{elapsed * 1000:.2f} ms, {work}"
        )
        assert work["strategy"] is CloneStrategy.LAZY
        assert work["rchar"] < 64 * 1024 and work["wchar"] < 16 * 1024
        assert elapsed < 1.0
    t1, t64 = results[GiB][0], results[64 * GiB][0]
    assert t64 < 5 * t1 + 0.05, (t1, t64)


async def test_reflink_clone_issues_no_fsync_and_its_first_flush_makes_it_durable(
    xfs_tmp: Path, monkeypatch
) -> None:
    src = await create_volume(xfs_tmp / "src", 16 * MiB)
    await src.write(0, b"r" * MiB)
    synced: list[tuple[str, int]] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def spy(fd: int, _real=real, _name=name) -> None:  # type: ignore[no-untyped-def]
            synced.append((_name, os.fstat(fd).st_ino))
            _real(fd)

        monkeypatch.setattr(os, name, spy)
    clone = await clone_volume(src, xfs_tmp / "c", CloneStrategy.REFLINK)
    await clone.write(0, b"c")
    assert synced == []  # the cut and the first write wait for no disk flush
    await clone.flush()
    inodes = {os.stat(p).st_ino: p.name for p in (xfs_tmp, xfs_tmp / "c", xfs_tmp / "c.clone.json")}
    assert sorted(inodes[ino] for _, ino in synced) == sorted(inodes.values())
    synced.clear()
    await clone.flush()  # nothing changed
    assert synced == []
    await clone.write(1, b"d")
    await clone.flush()
    assert synced == [("fdatasync", os.stat(xfs_tmp / "c").st_ino)]
    await clone.close()
    await src.close()
