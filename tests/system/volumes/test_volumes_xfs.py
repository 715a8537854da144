"""Clones on a real reflink filesystem (XFS loop image) and on the ext4 root.

On XFS every clone is a lazy clone whose chunks hydrate by sharing blocks
(FICLONERANGE): nothing is cloned at the cut, and hydration takes no new space.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
import unit.volumes.test_volumes_lazy_model as model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve._errors import BackendError
from targetcli_preserve.volumes import (
    DEFAULT_CHUNK_SIZE,
    CloneStrategy,
    FileVolume,
    LazyVolume,
    clone_volume,
    create_volume,
    open_volume,
    remove_volume,
)
from targetcli_preserve.volumes import bitmap as bitmap_mod
from targetcli_preserve.volumes import lazy as lazy_mod

FICLONE = 0x40049409
FICLONERANGE = 0x4020940D

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


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
_FIEMAP = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQQQIIII")


def shared_and_private(path: Path) -> tuple[int, int]:
    """Bytes of ``path``'s data extents that share blocks with another file, and not."""
    shared = private = 0
    start, count = 0, 64
    with open(path, "rb") as f:
        while True:
            buf = bytearray(
                _FIEMAP.pack(start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0, count, 0)
            )
            buf += bytes(_EXTENT.size * count)
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            mapped = _FIEMAP.unpack_from(buf)[3]
            last = False
            for i in range(mapped):
                logical, _, length, _, _, flags, *_ = _EXTENT.unpack_from(
                    buf, _FIEMAP.size + i * _EXTENT.size
                )
                if flags & FIEMAP_EXTENT_SHARED:
                    shared += length
                else:
                    private += length
                start = logical + length
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if mapped == 0 or last:
                return shared, private


class IoctlSpy:
    """Every FICLONE / FICLONERANGE this process issues, through ``fcntl.ioctl``."""

    def __init__(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.calls: list[tuple[str, int, int, int, int, int]] = []
        self._lock = threading.Lock()
        real = fcntl.ioctl

        def spy(fd, request, arg=0, *rest):  # type: ignore[no-untyped-def]
            if request == FICLONERANGE:
                src_fd, off, length, dst_off = struct.unpack("=qQQQ", arg)
                with self._lock:
                    self.calls.append(("range", fd, src_fd, off, length, dst_off))
            elif request == FICLONE:
                with self._lock:
                    self.calls.append(("file", fd, arg, 0, 0, 0))
            return real(fd, request, arg, *rest)

        monkeypatch.setattr(fcntl, "ioctl", spy)

    def take(self) -> list[tuple[str, int, int, int, int, int]]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls

    def shared(self) -> list[tuple[int, int]]:
        """(offset, length) of every FICLONERANGE that shared data, and forget them all."""
        return [(c[3], c[4]) for c in self.take() if c[0] == "range" and c[4]]


async def test_automatic_mode_picks_a_reflink_lazy_clone_on_xfs(xfs_tmp: Path, monkeypatch) -> None:
    src = await create_volume(xfs_tmp / "src", 64 * MiB)
    payload = os.urandom(4 * MiB)
    await src.write(MiB, payload)
    await src.flush()
    ioctls = IoctlSpy(monkeypatch)
    before = io_counters()
    clone = await clone_volume(src, xfs_tmp / "c", background=False)
    after = io_counters()
    try:
        assert isinstance(clone, LazyVolume) and clone.strategy is CloneStrategy.REFLINK
        # O(1): one zero-length FICLONERANGE (the probe) and no data read or written.
        calls = ioctls.take()
        assert [(c[0], c[4]) for c in calls] == [("range", 0)], calls
        assert after["rchar"] - before["rchar"] < 64 * 1024
        assert after["wchar"] - before["wchar"] < 16 * 1024
        assert clone.hydration_progress() == 0.0 and clone.source is src
        assert await clone.read(MiB, 4 * MiB) == payload
        # The first write to a data chunk shares the whole chunk, then writes over it.
        cs = DEFAULT_CHUNK_SIZE
        await clone.write(MiB + 100, b"clone")
        assert ioctls.shared() == [(MiB, cs)]
        assert await src.read(MiB + 100, 5) == payload[100:105]  # copy-on-write
        assert await clone.read(MiB, cs) == payload[:100] + b"clone" + payload[105:cs]
        assert sorted(os.listdir(xfs_tmp)) == [
            "c",
            "c.bitmap",
            "c.bitmap.volatile",
            "c.clone.json",
            "src",
        ]
        assert json.loads((xfs_tmp / "c.clone.json").read_text())["strategy"] == "reflink"
    finally:
        await clone.close()
    again = await open_volume(xfs_tmp / "c", source=src, background=False)
    try:
        assert isinstance(again, LazyVolume) and again.strategy is CloneStrategy.REFLINK
        assert await again.read(MiB + 100, 5) == b"clone"
        await again.wait_hydrated()
        await src.write(2 * MiB, b"source")  # after hydration: the clone does not see it
        assert await again.read(2 * MiB, 6) == payload[MiB : MiB + 6]
    finally:
        await again.close()
        await src.close()
    # Hydrated: a plain file that needs no source any more.
    await remove_volume(xfs_tmp / "src")
    done = await open_volume(xfs_tmp / "c")
    try:
        assert type(done) is FileVolume and done.strategy is CloneStrategy.REFLINK
        assert await done.read(MiB, 8) == payload[:8]
        assert await done.read(MiB + 100, 5) == b"clone"
        assert await done.read(2 * MiB, 6) == payload[MiB : MiB + 6]
    finally:
        await done.close()
    await remove_volume(xfs_tmp / "c")
    assert os.listdir(xfs_tmp) == []


async def test_explicit_strategies_on_xfs(xfs_tmp: Path, monkeypatch) -> None:
    src = await create_volume(xfs_tmp / "src", 16 * MiB)
    await src.write(0, b"r" * MiB)
    ioctls = IoctlSpy(monkeypatch)
    reflinked = await clone_volume(
        src, xfs_tmp / "r", CloneStrategy.REFLINK, chunk_size=MiB, background=False
    )
    lazy = await clone_volume(src, xfs_tmp / "l", CloneStrategy.LAZY, chunk_size=MiB)
    try:
        assert [(c[0], c[4]) for c in ioctls.take()] == [("range", 0)]  # REFLINK's probe
        assert isinstance(reflinked, LazyVolume) and reflinked.strategy is CloneStrategy.REFLINK
        assert isinstance(lazy, LazyVolume) and lazy.strategy is CloneStrategy.LAZY
        await lazy.write(10, b"L")
        await asyncio.wait_for(lazy.wait_hydrated(), 20)
        assert ioctls.take() == []  # a LAZY clone copies
        assert await lazy.read(0, 12) == b"r" * 10 + b"Lr"
        await asyncio.wait_for(reflinked.wait_hydrated(), 20)
        # One batch from the only data chunk on; the chunks after it are holes.
        assert ioctls.shared() == [(0, max(MiB, lazy_mod.SHARE_BATCH_BYTES))]
        assert await reflinked.read(0, 12) == b"r" * 12
        # A clone still hydrating can be the source of a REFLINK clone (a chain).
        lazy2 = await clone_volume(src, xfs_tmp / "l2", CloneStrategy.LAZY, background=False)
        auto = await clone_volume(lazy2, xfs_tmp / "x", background=False)
        assert isinstance(auto, LazyVolume) and auto.strategy is CloneStrategy.REFLINK
        assert auto.source is lazy2
        assert await auto.read(0, 4) == b"rrrr"
        await auto.wait_hydrated()
        assert await auto.read(0, MiB + 1) == b"r" * MiB + b"\0"
        await auto.close()
        await lazy2.close()
    finally:
        await reflinked.close()
        await lazy.close()
        await src.close()


async def test_automatic_mode_picks_lazy_on_xfs_without_reflink(xfs_noreflink_dir: Path) -> None:
    d = xfs_noreflink_dir
    src = await create_volume(d / "src", 8 * MiB)
    await src.write(0, b"n" * 100)
    clone = await clone_volume(src, d / "c", background=False)
    try:
        assert isinstance(clone, LazyVolume) and clone.strategy is CloneStrategy.LAZY
        with pytest.raises(BackendError, match="does not support FICLONERANGE"):
            await clone_volume(src, d / "d", CloneStrategy.REFLINK)
        assert not (d / "d").exists() and not (d / "d.partial").exists()
        await clone.wait_hydrated()
        assert await clone.read(0, 101) == b"n" * 100 + b"\0"
    finally:
        await clone.close()
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
    await src.flush()  # else the first write copies: sharing dirty pages waits (below)
    synced: list[tuple[str, int]] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def spy(fd: int, _real=real, _name=name) -> None:  # type: ignore[no-untyped-def]
            synced.append((_name, os.fstat(fd).st_ino))
            _real(fd)

        monkeypatch.setattr(os, name, spy)
    clone = await clone_volume(src, xfs_tmp / "c", CloneStrategy.REFLINK, background=False)
    ioctls = IoctlSpy(monkeypatch)
    await clone.write(0, b"c")  # shares chunk 0, then writes
    assert ioctls.shared() == [(0, DEFAULT_CHUNK_SIZE)]
    assert synced == []  # the cut and the first write wait for no disk flush
    await clone.flush()
    names = ("", "c", "c.clone.json", "c.bitmap")
    inodes = {os.stat(xfs_tmp / n).st_ino: n for n in names}
    # The data file (its shared extents) first, then the bitmap, metadata, directory.
    assert [inodes[ino] for _, ino in synced] == ["c", "c.bitmap", "c.clone.json", ""]
    synced.clear()
    await clone.flush()  # nothing changed
    assert synced == []
    await clone.write(1, b"d")  # a hydrated chunk: no bit changes
    await clone.flush()
    assert synced == [("fdatasync", os.stat(xfs_tmp / "c").st_ino)]
    synced.clear()
    await clone.write(2 * DEFAULT_CHUNK_SIZE, b"e")  # a source hole: a new bit
    await clone.flush()
    assert [(n, inodes[ino]) for n, ino in synced] == [
        ("fdatasync", "c"),
        ("fdatasync", "c.bitmap"),
    ]
    await clone.close()
    await src.close()


async def _hydrated_space(d: Path, strategy: CloneStrategy) -> int:
    """Filesystem space a clone of 64 MiB of data takes once hydrated and flushed."""
    src = await create_volume(d / f"src-{strategy.value}", 256 * MiB)
    for i in range(64):
        await src.write(i * MiB, os.urandom(MiB))
    await src.flush()
    os.sync()
    before = free_bytes(d)
    clone = await clone_volume(src, d / f"c-{strategy.value}", strategy, background=False)
    await asyncio.wait_for(clone.wait_hydrated(), 60)
    await clone.flush()
    os.sync()
    used = before - free_bytes(d)
    assert await clone.read(0, 64 * MiB) == await src.read(0, 64 * MiB)
    shared, private = shared_and_private(d / f"c-{strategy.value}")
    if strategy is CloneStrategy.REFLINK:
        assert shared == 64 * MiB and private == 0
    else:
        assert shared == 0 and private == 64 * MiB
    await clone.close()
    await src.close()
    return used


async def test_reflink_hydration_shares_extents(xfs_tmp: Path) -> None:
    shared = await _hydrated_space(xfs_tmp, CloneStrategy.REFLINK)
    copied = await _hydrated_space(xfs_tmp, CloneStrategy.LAZY)  # the control
    print(
        f"\nhydrating 64 MiB of data takes {shared / MiB:.1f} MiB shared, {copied / MiB:.1f} copied"
    )
    assert copied > 60 * MiB
    assert shared < 4 * MiB


async def test_chain_of_reflink_clones_shares_from_whoever_holds_the_data(
    xfs_tmp: Path, monkeypatch
) -> None:
    cs = 64 * 1024
    base = await create_volume(xfs_tmp / "base", 16 * cs)
    base_data = os.urandom(8 * cs)
    await base.write(0, base_data)
    await base.flush()
    mid = await clone_volume(base, xfs_tmp / "mid", chunk_size=cs, background=False)
    await mid.write(cs + 5, b"M" * 10)  # mid holds chunk 1 only
    await mid.flush()
    top = await clone_volume(mid, xfs_tmp / "top", chunk_size=2 * cs, background=False)
    assert isinstance(top, LazyVolume) and top.strategy is CloneStrategy.REFLINK
    assert top.source is mid and mid.strategy is CloneStrategy.REFLINK
    expect = bytearray(base_data)
    expect[cs + 5 : cs + 15] = b"M" * 10
    assert await top.read(0, 8 * cs) == bytes(expect)
    ioctls = IoctlSpy(monkeypatch)
    await top.write(10, b"T")  # top chunk 0 = mid chunk 0 (base's) + mid chunk 1 (mid's)
    expect[10] = ord("T")
    calls = ioctls.take()
    assert [(c[2], c[3], c[4]) for c in calls] == [(base._fd, 0, cs), (mid._fd, cs, cs)]
    free = free_bytes(xfs_tmp)
    await top.wait_hydrated()  # mid is still not hydrated: top shares base's blocks
    assert mid.hydration_progress() < 1.0
    assert {c[2] for c in ioctls.take()} == {base._fd}
    assert free - free_bytes(xfs_tmp) < cs  # nothing was copied
    assert await top.read(0, 16 * cs) == bytes(expect) + bytes(8 * cs)
    # Changing the lower volumes now changes nothing in top (copy-on-write).
    await mid.write(3 * cs, b"x" * cs)
    await top.close()
    await mid.close()
    await base.close()
    top2 = await open_volume(xfs_tmp / "top")  # hydrated: needs no source any more
    try:
        assert type(top2) is FileVolume and top2.strategy is CloneStrategy.REFLINK
        assert await top2.read(0, 16 * cs) == bytes(expect) + bytes(8 * cs)
    finally:
        await top2.close()
    mid2 = await open_volume(xfs_tmp / "mid", background=False)
    try:
        assert isinstance(mid2, LazyVolume) and mid2.strategy is CloneStrategy.REFLINK
        await mid2.wait_hydrated()
        mid_expect = bytearray(base_data)
        mid_expect[cs + 5 : cs + 15] = b"M" * 10
        mid_expect[3 * cs : 4 * cs] = b"x" * cs
        assert await mid2.read(0, 8 * cs) == bytes(mid_expect)
    finally:
        await mid2.close()


@pytest.fixture
def boot(monkeypatch) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The boot id the volumes see; replace ``boot[0]`` to simulate a reboot."""
    ids = [uuid.uuid4().bytes]
    monkeypatch.setattr(bitmap_mod, "current_boot_id", lambda: ids[0])
    return ids


async def test_crash_and_reboot_reopen_a_reflink_clone(xfs_tmp: Path, boot: list[bytes]) -> None:
    cs = 64 * 1024
    src = await create_volume(xfs_tmp / "src", 16 * cs)
    src_data = os.urandom(6 * cs)
    await src.write(0, src_data)
    clone = await clone_volume(src, xfs_tmp / "c", chunk_size=cs, background=False)
    assert isinstance(clone, LazyVolume) and clone.strategy is CloneStrategy.REFLINK
    await clone.write(cs + 10, b"A" * 10)  # shares chunk 1, then writes
    await clone.flush()
    await clone.write(3 * cs, b"B" * 20)  # acknowledged, not flushed
    expect = bytearray(src_data) + bytes(10 * cs)
    expect[cs + 10 : cs + 20] = b"A" * 10
    expect[3 * cs : 3 * cs + 20] = b"B" * 20
    # Process crash: no flush, no close; the page cache (volatile bitmap) survives.
    os.close(clone._fd)
    clone._bitmap.close()
    again = await open_volume(xfs_tmp / "c", source=src, background=False)
    assert isinstance(again, LazyVolume) and again.strategy is CloneStrategy.REFLINK
    assert again._bitmap.test(1) and again._bitmap.test(3)
    assert await again.read(0, 16 * cs) == bytes(expect)
    await again.flush()
    await again.write(5 * cs + 1, b"C")
    expect[5 * cs + 1] = ord("C")
    await again.flush()
    # Reboot after the flush: only the durable bitmap counts, and it has all three.
    os.close(again._fd)
    again._bitmap.close()
    boot[0] = uuid.uuid4().bytes
    third = await open_volume(xfs_tmp / "c", source=src, background=False)
    try:
        assert isinstance(third, LazyVolume) and third.strategy is CloneStrategy.REFLINK
        assert [third._bitmap.test(c) for c in range(6)] == [0, 1, 0, 1, 0, 1]
        assert await third.read(0, 16 * cs) == bytes(expect)
        await third.wait_hydrated()
        assert await third.read(0, 16 * cs) == bytes(expect)
        assert (xfs_tmp / "c").read_bytes() == bytes(expect)  # the file alone holds it
    finally:
        await third.close()
        await src.close()


@pytest.mark.parametrize(
    "size,cs",
    [(3 * 65536 + 1000, 65536), (10 * 6144, 6144)],
    ids=["unaligned-tail", "chunks-not-block-multiples"],
)
async def test_ranges_not_aligned_to_the_block_are_copied(
    xfs_tmp: Path, monkeypatch, size: int, cs: int
) -> None:
    blk = os.statvfs(xfs_tmp).f_bsize
    src = await create_volume(xfs_tmp / "src", size)
    src_data = os.urandom(size)
    await src.write(0, src_data)
    await src.flush()
    clone = await clone_volume(src, xfs_tmp / "c", chunk_size=cs, background=False)
    assert isinstance(clone, LazyVolume) and clone.strategy is CloneStrategy.REFLINK
    ioctls = IoctlSpy(monkeypatch)
    await clone.write(size - 1, b"E")  # the last chunk, written first
    await clone.wait_hydrated()
    shared = ioctls.shared()
    assert shared  # the aligned parts were shared...
    for off, length in shared:  # ...and nothing else
        assert off % blk == 0 and length % blk == 0 and off + length <= size // blk * blk
    covered = sum(length for _, length in shared)
    assert covered > size // 2
    expect = src_data[:-1] + b"E"
    assert await clone.read(0, size) == expect
    assert (xfs_tmp / "c").read_bytes() == expect
    await clone.close()
    await src.close()


async def test_chain_whose_hydrated_chunks_are_not_block_aligned(
    xfs_tmp: Path, monkeypatch
) -> None:
    """The middle clone's chunks (5 KiB) do not start on a 4 KiB block: the top clone
    shares the aligned middle of each holder's piece and copies its edges."""
    size = 64 * 1024
    base = await create_volume(xfs_tmp / "base", size)
    data = bytearray(os.urandom(size))
    await base.write(0, bytes(data))
    mid = await clone_volume(base, xfs_tmp / "mid", chunk_size=5120, background=False)
    for c in range(1, 5):  # mid holds chunks 1-4: [5120, 25600)
        await mid.write(c * 5120 + 7, b"M")
        data[c * 5120 + 7] = ord("M")
    top = await clone_volume(mid, xfs_tmp / "top", chunk_size=size, background=False)
    ioctls = IoctlSpy(monkeypatch)
    await top.wait_hydrated()
    calls = [(c[2], c[3], c[4]) for c in ioctls.take()]
    # base [0, 5120) -> [0, 4096); mid [5120, 25600) -> [8192, 24576); base the rest
    assert calls == [(base._fd, 0, 4096), (mid._fd, 8192, 16384), (base._fd, 28672, size - 28672)]
    assert await top.read(0, size) == bytes(data)
    assert (xfs_tmp / "top").read_bytes() == bytes(data)
    for v in (top, mid, base):
        await v.close()


async def test_a_first_write_is_widened_to_whole_blocks_only_within_its_own_chunks(
    xfs_tmp: Path, monkeypatch
) -> None:
    """A partial-block first write is written as whole blocks (the source's bytes
    around it), so copy-on-write never reads a shared block back; never into a chunk
    that is already hydrated (its bytes are the clone's own, not the source's)."""
    cs = 6144  # chunk 1 starts inside block 1
    size = 8 * cs
    src = await create_volume(xfs_tmp / "src", size)
    data = bytearray(os.urandom(size))
    await src.write(0, bytes(data))
    await src.flush()
    clone = await clone_volume(src, xfs_tmp / "c", chunk_size=cs, background=False)
    written: list[tuple[int, int]] = []
    real = lazy_mod.pwrite_all

    def spy(fd: int, buf: bytes, off: int) -> None:
        if fd == clone._fd:
            written.append((off, len(buf)))
        real(fd, buf, off)

    monkeypatch.setattr(lazy_mod, "pwrite_all", spy)
    await clone.write(4200, b"A" * 100)  # chunk 0: block 1 = [4096, 8192) is split
    data[4200:4300] = b"A" * 100
    assert written == [(4096, 6144 - 4096)]  # widened to the end of chunk 0 only
    written.clear()
    await clone.write(5000, b"B" * 2000)  # chunk 0 (hydrated) and chunk 1 (not)
    data[5000:7000] = b"B" * 2000
    assert written == [(5000, 8192 - 5000)]  # widened at the tail only
    assert await clone.read(0, size) == bytes(data)
    await clone.wait_hydrated()
    assert (xfs_tmp / "c").read_bytes() == bytes(data)
    await clone.close()
    await src.close()


async def test_a_failing_ficlonerange_falls_back_to_a_copy(
    xfs_tmp: Path, monkeypatch, caplog
) -> None:
    cs = 64 * 1024
    src = await create_volume(xfs_tmp / "src", 8 * cs)
    src_data = os.urandom(8 * cs)
    await src.write(0, src_data)
    clone = await clone_volume(src, xfs_tmp / "c", chunk_size=cs, background=False)
    assert clone.strategy is CloneStrategy.REFLINK
    failed = []

    def broken(dst_fd: int, src_fd: int, off: int, length: int, dst_off: int) -> None:
        failed.append(off)
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(lazy_mod, "clone_range", broken)
    await src.flush()
    await clone.write(cs + 1, b"w")
    await clone.wait_hydrated()
    assert failed  # it tried, and copied instead
    assert "copying instead" in caplog.text
    assert shared_and_private(xfs_tmp / "c") == (0, 8 * cs)  # really copied
    assert await clone.read(0, 8 * cs) == src_data[: cs + 1] + b"w" + src_data[cs + 2 :]
    await clone.close()
    await src.close()


async def test_first_write_copies_a_dirty_source_range_and_the_hydrator_shares_it(
    xfs_tmp: Path, monkeypatch
) -> None:
    """A post-cut write must not wait for the disk: FICLONERANGE would first write back
    the source's dirty pages, so the first write copies a dirty chunk from the page
    cache instead; the background hydrator writes back first, then shares.

    The page cache tracks dirtiness per folio, and XFS folios may span 2 MiB: the
    chunks used here are 2 MiB apart."""
    cs = DEFAULT_CHUNK_SIZE
    far = 2 * MiB
    src = await create_volume(xfs_tmp / "src", 4 * far)
    await src.write(0, os.urandom(4 * far))
    await src.flush()
    clone = await clone_volume(src, xfs_tmp / "c", background=False)
    ioctls = IoctlSpy(monkeypatch)
    await clone.write(far, b"x")  # clean: shared
    assert ioctls.shared() == [(far, cs)]
    await src.write(2 * far + 8192, b"dirty")  # a pre-cut write still in the cache...
    await clone.write(2 * far + 8192, b"dirty")  # ...and its replica: copied, not shared
    assert ioctls.shared() == []
    await src.write(3 * far, b"dirty")  # pre-cut, replicated after the hydration
    expect = bytearray(await src.read(0, 4 * far))
    expect[far] = ord("x")
    await clone.wait_hydrated()  # the hydrator writes back, then shares that chunk too
    assert any(o <= 3 * far and 3 * far + cs <= o + n for o, n in ioctls.shared())
    await clone.write(3 * far, b"dirty")
    assert await clone.read(0, 4 * far) == bytes(expect)
    await clone.close()
    await src.close()


# ---- the lazy-clone model (tests/unit/volumes), with REFLINK clones on XFS ----


def test_reflink_clone_matches_the_model(xfs_dir: Path) -> None:
    """The lazy-clone model with REFLINK clones on XFS: every example matches the model
    and no FICLONERANGE fails; over the run, blocks really were shared (a hydration that
    silently copied everything would pass the model and fail here)."""
    shared = {"ioctls": 0}

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        init=model.initial,
        chain=st.booleans(),
        background=st.booleans(),
        plan=model.steps,
        # one block (4 KiB) per chunk; several (a first write shares the blocks it does
        # not touch); one and a half, and less than one (edges copied; with a chain the
        # middle clone's hydrated chunks do not start on a block either)
        cs=st.sampled_from([model.CS, 2 * model.CS, 3 * model.CS, 6144, 2560]),
    )
    def check(init, chain, background, plan, cs) -> None:  # type: ignore[no-untyped-def]
        real = lazy_mod.clone_range
        failures: list[OSError] = []

        def counting(*args):  # type: ignore[no-untyped-def]
            try:
                real(*args)
            except OSError as err:  # the clone would copy instead: the model cannot tell
                failures.append(err)
                raise
            shared["ioctls"] += 1

        with tempfile.TemporaryDirectory(dir=xfs_dir) as d:
            disk = model.Disk(Path(d) / "clone")
            patches = [*disk.patches(), mock.patch.object(lazy_mod, "clone_range", counting)]
            for patch in patches:
                patch.start()
            try:
                asyncio.run(
                    model.scenario(
                        Path(d), disk, init, chain, background, plan, CloneStrategy.REFLINK, cs
                    )
                )
            finally:
                for patch in patches:
                    patch.stop()
        assert failures == []

    check()
    assert shared["ioctls"] > 50, f"only {shared['ioctls']} FICLONERANGE calls over the run"
