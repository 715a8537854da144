"""Sparse copies of lazy clones: only the source's data extents are read (docs/design.md 3).

A first write to an unhydrated chunk copies the rest of the chunk from the source, on
the latency path of the first post-cut write. Reading a hole of the source fills the
page cache with zero pages, so the copy reads only the ranges that
``_data_extents_blocking`` names. That is only right if the list is conservative: it
may name zeros as data, never data as a hole, for a plain file just written (dirty,
delayed allocation), for a lazy clone (hydrated chunks from its own file, the others
from its source, stray bytes of its own under a clear bit ignored) and for a chain.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from targetcli_preserve.volumes import LazyVolume, clone_volume, create_volume, open_volume
from targetcli_preserve.volumes import bitmap as bitmap_mod
from targetcli_preserve.volumes import file as file_mod
from targetcli_preserve.volumes.file import FileVolume, data_extents

KiB = 1024
CS = 64 * KiB


def outside_is_zero(image: bytes, extents: list[tuple[int, int]], start: int, end: int) -> None:
    pos = start
    for begin, stop in extents:
        assert start <= begin < stop <= end and begin >= pos, (extents, start, end)
        assert image[pos:begin] == bytes(begin - pos), f"data at {pos}..{begin} not in {extents}"
        pos = stop
    assert image[pos:end] == bytes(end - pos), f"data at {pos}..{end} not in {extents}"


async def test_file_extents_cover_every_byte_just_written(tmp_path: Path) -> None:
    rng = random.Random(7)
    size = 8 << 20
    vol = await create_volume(tmp_path / "v", size)
    assert isinstance(vol, FileVolume)
    image = bytearray(size)
    try:
        for round_ in range(6):
            for _ in range(40):  # dirty pages, not yet allocated (ext4 delalloc)
                off, n = rng.randrange(size - 9000), rng.randrange(1, 9000)
                data = bytes(rng.randrange(1, 256) for _ in range(n))
                await vol.write(off, data)
                image[off : off + n] = data
            if round_ % 2:
                await vol.flush()
            for _ in range(30):
                start = rng.randrange(size)
                end = min(size, start + rng.choice([512, CS, 256 * KiB, 1 << 20]))
                outside_is_zero(bytes(image), vol._data_extents_blocking(start, end), start, end)
    finally:
        await vol.close()


def test_fragmented_extents_are_merged_and_capped(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 4 << 20)
        for i in range(200):  # a 4 KiB block every 32 KiB, then every 8 KiB
            os.pwrite(fd, b"a" * 4096, i * 32 * KiB if i < 100 else (3 << 20) + i * 8 * KiB)
        image = os.pread(fd, 4 << 20, 0)
        ext = data_extents(fd, 0, 4 << 20)
        assert len(ext) <= file_mod.MAX_EXTENTS + 1
        outside_is_zero(image, ext, 0, 4 << 20)
        # blocks 8 KiB apart are one extent (a small hole is cheaper to read than lseek)
        tail_start = (3 << 20) + 800 * KiB
        tail = data_extents(fd, tail_start, 4 << 20)
        assert len(tail) == 1
        outside_is_zero(image, tail, tail_start, 4 << 20)
    finally:
        os.close(fd)


async def test_first_write_reads_only_the_source_data_extents(lazy_dir: Path, monkeypatch) -> None:
    src = await create_volume(lazy_dir / "src", 4 << 20)
    await src.write(0, b"d" * (16 * KiB))  # 16 KiB of data in a 1 MiB chunk
    await src.write(700 * KiB, b"e" * 100)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=1 << 20, background=False)
    reads: list[tuple[int, int]] = []
    real = src._read_blocking

    def spy(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return real(offset, length)

    monkeypatch.setattr(src, "_read_blocking", spy)
    try:
        await clone.write(8 * KiB, b"W" * 512)
        assert sum(n for _, n in reads) <= 20 * KiB  # two blocks of data; no hole read
        assert all(off < 16 * KiB or 700 * KiB <= off < 704 * KiB for off, _ in reads)
        expect = bytearray(await src.read(0, 1 << 20))
        expect[8 * KiB : 8 * KiB + 512] = b"W" * 512
        assert await clone.read(0, 1 << 20) == bytes(expect)
        assert (lazy_dir / "c").read_bytes()[: 1 << 20] == bytes(expect)
    finally:
        await clone.close()
        await src.close()


@pytest.fixture
def boot(monkeypatch) -> list[bytes]:  # type: ignore[no-untyped-def]
    ids = [uuid.uuid4().bytes]
    monkeypatch.setattr(bitmap_mod, "current_boot_id", lambda: ids[0])
    return ids


async def test_lazy_extents_ignore_stray_bytes_and_follow_the_chain(
    lazy_dir: Path, boot: list[bytes]
) -> None:
    """mid: chunk 1 hydrated by a write, chunk 3 holds stray bytes under a lost bit
    (reboot); top, a clone of mid, must copy mid's content, never the strays."""
    base = await create_volume(lazy_dir / "base", 8 * CS)
    await base.write(CS + 10, b"b" * 100)
    await base.write(5 * CS, b"B" * CS)
    mid = await clone_volume(base, lazy_dir / "mid", chunk_size=CS, background=False)
    assert isinstance(mid, LazyVolume)
    await mid.flush()
    await mid.write(CS + 2000, b"m" * 10)
    await mid.flush()  # chunk 1 durable
    await mid.write(3 * CS + 100, b"S" * 100)  # chunk 3: lost at the reboot below
    os.close(mid._fd)
    mid._bitmap.close()
    boot[0] = uuid.uuid4().bytes
    mid = await open_volume(lazy_dir / "mid", source=base, background=False)
    assert isinstance(mid, LazyVolume)
    assert mid._bitmap.test(1) and not mid._bitmap.test(3)
    try:
        image = await mid.read(0, 8 * CS)
        assert image[3 * CS + 100 : 3 * CS + 200] == bytes(100)  # strays never show
        ext = mid._data_extents_blocking(0, 8 * CS)
        outside_is_zero(image, ext, 0, 8 * CS)
        assert not any(b < 4 * CS and e > 3 * CS for b, e in ext)  # no stray extent
        top = await clone_volume(mid, lazy_dir / "top", chunk_size=4 * CS, background=False)
        assert isinstance(top, LazyVolume)
        try:
            outside_is_zero(image, top._data_extents_blocking(0, 8 * CS), 0, 8 * CS)
            await top.write(2 * CS, b"T")  # top chunk 0 = mid chunks 0-3, partly
            await top.write(7 * CS + 5, b"U")  # top chunk 1 = mid chunks 4-7
            expect = bytearray(image)
            expect[2 * CS] = ord("T")
            expect[7 * CS + 5] = ord("U")
            assert await top.read(0, 8 * CS) == bytes(expect)
            assert (lazy_dir / "top").read_bytes() == bytes(expect)
        finally:
            await top.close()
    finally:
        await mid.close()
        await base.close()


async def test_source_written_after_the_cut_is_copied(lazy_dir: Path) -> None:
    """A pre-cut write lands in the source after the clone was made (rule 4), then the
    clone's first write to that chunk must copy it: the extents are never cached."""
    src = await create_volume(lazy_dir / "src", 4 * CS)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=2 * CS, background=False)
    try:
        assert clone._source._data_extents_blocking(0, 4 * CS) == []  # type: ignore[attr-defined]
        await src.write(CS + 7, b"p" * 300)  # into a hole of the source
        await clone.write(0, b"q")
        expect = bytearray(2 * CS)
        expect[CS + 7 : CS + 307] = b"p" * 300
        expect[0] = ord("q")
        assert await clone.read(0, 2 * CS) == bytes(expect)
    finally:
        await clone.close()
        await src.close()
