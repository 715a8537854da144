"""Lazy clones on a filesystem without reflink (docs/design.md rule 3)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from volume_testlib import allocated_bytes, io_counters

from targetcli_preserve._errors import BackendError, UserError
from targetcli_preserve.volumes import (
    CloneStrategy,
    FileVolume,
    LazyVolume,
    clone_volume,
    create_volume,
    open_volume,
    remove_volume,
)
from targetcli_preserve.volumes.bitmap import HEADER_SIZE
from targetcli_preserve.volumes.lazy import DEFAULT_CHUNK_SIZE

MiB = 1 << 20
GiB = 1 << 30
CS = 64 * 1024  # small chunks keep the tests quick


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed * 31 + i * 7) % 251 + 1 for i in range(n))


async def make_source(d: Path, size: int = 16 * CS) -> FileVolume:
    src = await create_volume(d / "src", size)
    await src.write(0, pattern(1, 3 * CS))  # chunks 0-2
    await src.write(8 * CS + 100, pattern(2, 5000))  # inside chunk 8
    return src  # type: ignore[return-value]


def read_source_calls(monkeypatch, src: FileVolume) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real = src._read_blocking

    def spy(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return real(offset, length)

    monkeypatch.setattr(src, "_read_blocking", spy)
    return calls


async def test_automatic_mode_picks_lazy_without_reflink(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", background=False)
    try:
        assert isinstance(clone, LazyVolume)
        assert clone.strategy is CloneStrategy.LAZY
        assert clone.size == src.size and not clone.read_only
        assert clone.hydration_progress() == 0.0
        meta = json.loads((lazy_dir / "c.clone.json").read_text())
        assert meta["strategy"] == "lazy" and meta["source"] == str(src.path)
        assert meta["chunk_size"] == DEFAULT_CHUNK_SIZE and meta["hydrated"] is False
    finally:
        await clone.close()
        await src.close()


async def test_explicit_reflink_without_support_is_a_clear_error(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    try:
        with pytest.raises(BackendError, match="does not support FICLONE"):
            await clone_volume(src, lazy_dir / "c", CloneStrategy.REFLINK)
        assert sorted(os.listdir(lazy_dir)) == ["src"]  # nothing half-made is left
    finally:
        await src.close()


async def test_clone_to_an_existing_path_fails_and_keeps_it(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    (lazy_dir / "c").write_bytes(b"mine")
    try:
        with pytest.raises(UserError, match="already exists"):
            await clone_volume(src, lazy_dir / "c")
        assert (lazy_dir / "c").read_bytes() == b"mine"
        assert sorted(os.listdir(lazy_dir)) == ["c", "src"]
    finally:
        await src.close()


async def test_reads_go_through_to_the_source(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    try:
        assert await clone.read(0, 3 * CS) == pattern(1, 3 * CS)
        assert await clone.read(8 * CS + 100, 5000) == pattern(2, 5000)
        assert await clone.read(5 * CS, CS) == bytes(CS)
        assert allocated_bytes(lazy_dir / "c") == 0  # reads never copy
        assert clone.hydration_progress() == 0.0
    finally:
        await clone.close()
        await src.close()


async def test_partial_write_hydrates_its_chunk(lazy_dir: Path, monkeypatch) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    try:
        calls = read_source_calls(monkeypatch, src)
        await clone.write(CS + 1000, b"W" * 100)  # inside chunk 1
        assert clone._bitmap.test(1) and not clone._bitmap.test(0)
        # only the parts of the chunk outside the write were copied
        assert calls == [(CS, 1000), (CS + 1100, CS - 1100)]
        expect = bytearray(pattern(1, 3 * CS))
        expect[CS + 1000 : CS + 1100] = b"W" * 100
        assert await clone.read(0, 3 * CS) == bytes(expect)
        # the clone's own file now holds chunk 1 in full
        assert (lazy_dir / "c").read_bytes()[CS : 2 * CS] == bytes(expect[CS : 2 * CS])
        assert await src.read(0, 3 * CS) == pattern(1, 3 * CS)  # source untouched
    finally:
        await clone.close()
        await src.close()


async def test_full_chunk_write_copies_nothing(lazy_dir: Path, monkeypatch) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    try:
        calls = read_source_calls(monkeypatch, src)
        await clone.write(2 * CS, b"F" * CS)
        assert calls == []
        assert clone._bitmap.test(2)
        assert await clone.read(2 * CS - 10, CS + 20) == (
            pattern(1, 3 * CS)[2 * CS - 10 : 2 * CS] + b"F" * CS + bytes(10)
        )
    finally:
        await clone.close()
        await src.close()


async def test_write_spanning_chunks_and_a_source_hole(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    try:
        # from the middle of chunk 2 (data) over chunk 3 (hole) into chunk 4 (hole)
        await clone.write(2 * CS + CS // 2, b"S" * (2 * CS))
        assert all(clone._bitmap.test(c) for c in (2, 3, 4))
        expect = bytearray(pattern(1, 3 * CS) + bytes(3 * CS))
        expect[2 * CS + CS // 2 : 4 * CS + CS // 2] = b"S" * (2 * CS)
        assert await clone.read(0, 6 * CS) == bytes(expect)
    finally:
        await clone.close()
        await src.close()


async def test_bitmap_survives_a_crash_and_open_volume_resumes(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.write(CS + 10, b"A" * 10)  # hydrates chunk 1 (data)
    await clone.write(6 * CS, b"B" * CS)  # full chunk 6 (hole in the source)
    await clone.write(0, b"C" * 5)  # chunk 0
    expect = await clone.read(0, src.size)
    # Crash: no flush, no close. The object is simply dropped (fds leak like a dead
    # process's would until the kernel closes them).
    del clone
    # The bits are in the volatile bitmap (page cache); nothing reached the durable one.
    assert (lazy_dir / "c.bitmap.volatile").read_bytes()[HEADER_SIZE:] == bytes([0b0100_0011, 0])
    assert (lazy_dir / "c.bitmap").read_bytes()[HEADER_SIZE:] == bytes(2)
    again = await open_volume(lazy_dir / "c", source=src, background=False)
    try:
        assert isinstance(again, LazyVolume)
        assert again.hydration_progress() == pytest.approx(3 / 16)
        assert await again.read(0, src.size) == expect
        await again.wait_hydrated()
        assert await again.read(0, src.size) == expect
    finally:
        await again.close()
        await src.close()


async def test_open_volume_rebuilds_the_source_chain_itself(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.write(CS + 10, b"A" * 10)
    expect = await clone.read(0, src.size)
    await clone.close()
    await src.close()
    again = await open_volume(lazy_dir / "c", background=False)
    try:
        assert isinstance(again, LazyVolume)
        assert again.source is not None and again.source.read_only  # owned, read-only
        assert await again.read(0, again.size) == expect
    finally:
        await again.close()
    with pytest.raises(UserError, match="lazy clone of"):
        other = await create_volume(lazy_dir / "other", src.size)
        try:
            await open_volume(lazy_dir / "c", source=other)
        finally:
            await other.close()


async def test_chain_of_two_lazy_clones(lazy_dir: Path) -> None:
    base = await make_source(lazy_dir)
    mid = await clone_volume(base, lazy_dir / "mid", chunk_size=CS, background=False)
    await mid.write(CS + 5, b"M" * 10)  # mid hydrates chunk 1 only
    top = await clone_volume(mid, lazy_dir / "top", chunk_size=2 * CS, background=False)
    assert isinstance(top, LazyVolume)
    expect_mid = bytearray(pattern(1, 3 * CS))
    expect_mid[CS + 5 : CS + 15] = b"M" * 10
    assert await top.read(0, 3 * CS) == bytes(expect_mid)
    await top.write(2 * CS + 1, b"T")  # top chunk 1 = bytes 2CS..4CS, hydrated via mid and base
    expect_top = bytearray(expect_mid)
    expect_top[2 * CS + 1] = ord("T")
    assert await top.read(0, 3 * CS) == bytes(expect_top)
    await top.wait_hydrated()  # mid is still not hydrated: top copies through the chain
    assert mid.hydration_progress() < 1.0
    assert await top.read(0, 3 * CS) == bytes(expect_top)
    assert await top.read(8 * CS + 100, 5000) == pattern(2, 5000)
    await top.close()
    await mid.close()
    await base.close()
    # reopen the whole chain from the top after a "restart"
    top2 = await open_volume(lazy_dir / "top")  # hydrated: needs no source any more
    assert type(top2) is FileVolume and top2.strategy is CloneStrategy.LAZY
    assert await top2.read(0, 3 * CS) == bytes(expect_top)
    await top2.close()
    mid2 = await open_volume(lazy_dir / "mid", background=False)
    assert isinstance(mid2, LazyVolume) and mid2.source is not None
    assert await mid2.read(0, 3 * CS) == bytes(expect_mid)
    await mid2.close()


async def test_reopen_of_an_unhydrated_chain_from_the_top(lazy_dir: Path) -> None:
    base = await make_source(lazy_dir)
    mid = await clone_volume(base, lazy_dir / "mid", chunk_size=CS, background=False)
    top = await clone_volume(mid, lazy_dir / "top", chunk_size=CS, background=False)
    await top.write(0, b"top")
    for v in (top, mid, base):
        await v.close()
    top2 = await open_volume(lazy_dir / "top", background=False)
    try:
        assert isinstance(top2, LazyVolume)
        mid2 = top2.source
        assert isinstance(mid2, LazyVolume) and isinstance(mid2.source, FileVolume)
        assert await top2.read(0, 3 * CS) == b"top" + pattern(1, 3 * CS)[3:]
        await top2.wait_hydrated()
        assert await top2.read(8 * CS + 100, 5000) == pattern(2, 5000)
    finally:
        await top2.close()
    assert mid2._fd == -1  # owned chain closed with the clone


async def test_background_hydration_completes_and_skips_holes(lazy_dir: Path) -> None:
    src = await create_volume(lazy_dir / "src", 64 * MiB)
    await src.write(3 * MiB + 7, b"x" * 5000)
    await src.write(40 * MiB, os.urandom(MiB))
    clone = await clone_volume(src, lazy_dir / "c")  # default chunks, background on
    try:
        await asyncio.wait_for(clone.wait_hydrated(), 30)
        assert clone.hydration_progress() == 1.0
        assert await clone.read(3 * MiB, 6000) == bytes(7) + b"x" * 5000 + bytes(993)
        assert await clone.read(40 * MiB, MiB) == await src.read(40 * MiB, MiB)
        # 1 MiB of real data + one 64 KiB piece: the hole chunks stayed holes
        assert allocated_bytes(lazy_dir / "c") <= MiB + 128 * 1024
        meta = json.loads((lazy_dir / "c.clone.json").read_text())
        assert meta["hydrated"] is True
        assert clone.source is None
    finally:
        await clone.close()
        await src.close()
    # a hydrated clone no longer needs its source at all
    await remove_volume(lazy_dir / "src")
    again = await open_volume(lazy_dir / "c")
    try:
        assert type(again) is FileVolume and again.strategy is CloneStrategy.LAZY
        assert await again.read(3 * MiB + 7, 5000) == b"x" * 5000
    finally:
        await again.close()


async def test_hydrating_a_64_gib_sparse_source_is_quick_and_stays_sparse(lazy_dir: Path) -> None:
    src = await create_volume(lazy_dir / "src", 64 * GiB)
    await src.write(17 * GiB, b"d" * 4096)
    clone = await clone_volume(src, lazy_dir / "c")
    try:
        await asyncio.wait_for(clone.wait_hydrated(), 20)
        assert allocated_bytes(lazy_dir / "c") <= 128 * 1024
        assert await clone.read(17 * GiB, 4096) == b"d" * 4096
    finally:
        await clone.close()
        await src.close()


@pytest.mark.parametrize("size", [GiB, 64 * GiB])
async def test_clone_creation_does_no_size_dependent_work(lazy_dir: Path, size: int) -> None:
    src = await create_volume(lazy_dir / "src", size)
    await src.write(size // 2, b"data" * 1024)
    await src.flush()
    before = io_counters()
    clone = await clone_volume(src, lazy_dir / "c", background=False)
    after = io_counters()
    try:
        # No data read from the source or written to the clone at the cut: the syscall
        # byte counters of the whole process move by a few hundred bytes (the JSON
        # sidecar and one byte of bitmap), whatever the size.
        assert after["rchar"] - before["rchar"] < 16 * 1024
        assert after["wchar"] - before["wchar"] < 4 * 1024
        assert allocated_bytes(lazy_dir / "c") == 0
        assert os.stat(lazy_dir / "c").st_size == size
        for bitmap in (lazy_dir / "c.bitmap", lazy_dir / "c.bitmap.volatile"):
            assert os.stat(bitmap).st_size == HEADER_SIZE + size // DEFAULT_CHUNK_SIZE // 8
            assert allocated_bytes(bitmap) <= 4096  # a hole plus at most one block
    finally:
        await clone.close()
        await src.close()


async def test_frozen_lazy_clone_keeps_hydrating_and_serving_reads(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    try:
        await clone.write(10, b"pre-freeze")
        await clone.freeze()
        assert clone.read_only
        with pytest.raises(BackendError, match="frozen"):
            await clone.write(0, b"x")
        assert await clone.read(10, 10) == b"pre-freeze"
        assert await clone.read(CS, CS) == pattern(1, 3 * CS)[CS : 2 * CS]
        await clone.wait_hydrated()
        assert clone.hydration_progress() == 1.0
        import fcntl

        assert fcntl.fcntl(clone._fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        assert await clone.read(0, 20) == pattern(1, 10) + b"pre-freeze"
    finally:
        await clone.close()
        await src.close()


async def test_crash_during_background_hydration(lazy_dir: Path) -> None:
    src = await create_volume(lazy_dir / "src", 32 * CS)
    payload = os.urandom(32 * CS)
    await src.write(0, payload)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS)
    await clone.write(5 * CS + 3, b"acked")
    async with asyncio.timeout(30):
        while clone.hydration_progress() < 0.3:
            await asyncio.sleep(0.001)
    assert clone._hydrator is not None
    clone._hydrator.cancel()  # the process "dies" mid-hydration; nothing is flushed
    await asyncio.sleep(0.05)
    again = await open_volume(lazy_dir / "c", source=src)
    try:
        await asyncio.wait_for(again.wait_hydrated(), 20)
        expect = bytearray(payload)
        expect[5 * CS + 3 : 5 * CS + 8] = b"acked"
        assert await again.read(0, src.size) == bytes(expect)
    finally:
        await again.close()
        await src.close()


async def test_hydration_failure_is_reported(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await src.close()  # the source vanished from under the clone
    with pytest.raises(BackendError, match="hydration of .* failed"):
        await clone.wait_hydrated()
    with pytest.raises(BackendError):
        await clone.read(0, 10)
    await clone.close()


async def test_remove_volume_deletes_the_sidecars(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.close()
    assert sorted(os.listdir(lazy_dir)) == [
        "c",
        "c.bitmap",
        "c.bitmap.volatile",
        "c.clone.json",
        "src",
    ]
    await remove_volume(lazy_dir / "c")
    await remove_volume(lazy_dir / "c")
    assert os.listdir(lazy_dir) == ["src"]
    await src.close()


async def test_corrupt_metadata_is_a_clear_error(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.close()
    await src.close()
    meta = lazy_dir / "c.clone.json"
    doc = json.loads(meta.read_text())
    doc["chunk_size"] = "big"
    meta.write_text(json.dumps(doc))
    with pytest.raises(BackendError, match="chunk_size"):
        await open_volume(lazy_dir / "c")
    meta.write_text("{not json")
    with pytest.raises(BackendError, match="not valid JSON"):
        await open_volume(lazy_dir / "c")


async def test_concurrent_writes_to_one_unhydrated_chunk_with_hydration(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    try:
        writes = [clone.write(CS + i * 512, bytes([i + 1]) * 512) for i in range(16)]
        await asyncio.gather(*writes, clone.hydrate_step(), clone.hydrate_step())
        expect = bytearray(pattern(1, 3 * CS)[CS : 2 * CS])
        for i in range(16):
            expect[i * 512 : (i + 1) * 512] = bytes([i + 1]) * 512
        assert await clone.read(CS, CS) == bytes(expect)
        assert not clone._locks  # per-chunk locks are dropped once hydrated
    finally:
        await clone.close()
        await src.close()


async def test_a_source_cannot_be_removed_while_a_lazy_clone_reads_through_it(
    lazy_dir: Path,
) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    with pytest.raises(UserError, match="still read through it"):
        await remove_volume(lazy_dir / "src")
    assert (lazy_dir / "src").exists()
    await clone.wait_hydrated()
    await src.close()
    await remove_volume(lazy_dir / "src")  # hydrated: the source may go
    assert await clone.read(0, 3 * CS) == pattern(1, 3 * CS)
    await clone.close()
