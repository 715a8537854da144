"""Durability of volumes and lazy clones without fsync on the hot path (docs/design.md 3, 8).

- A process crash (the page cache survives) never loses a bit set by a write that
  returned: open_volume in the same boot uses the volatile bitmap.
- A reboot or power loss (simulated by another boot id) uses only the durable bitmap:
  bits set after the last flush() are gone and those chunks read through the source
  again, and stray bytes the clone's file still holds there never show up.
- clone_volume and write() issue no fsync/fdatasync; flush() does, and a flush() with
  nothing new to make durable does not.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path

import pytest

from targetcli_preserve._errors import BackendError
from targetcli_preserve.volumes import (
    LazyVolume,
    clone_volume,
    create_volume,
    open_volume,
)
from targetcli_preserve.volumes import bitmap as bitmap_mod
from targetcli_preserve.volumes import file as file_mod
from targetcli_preserve.volumes import lazy as lazy_mod
from targetcli_preserve.volumes.bitmap import HEADER_SIZE

KiB = 1024
CS = 64 * KiB


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed * 31 + i * 7) % 251 + 1 for i in range(n))


class SyncLog:
    """Records os.fsync/os.fdatasync calls (any thread) with the file synced, named by
    its path now (found by inode: a clone's fd was opened under its ``.partial`` name)."""

    def __init__(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.calls: list[tuple[str, tuple[int, int]]] = []
        self._lock = threading.Lock()
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)

            def spy(fd: int, _real=real, _name=name) -> None:  # type: ignore[no-untyped-def]
                st = os.fstat(fd)
                with self._lock:
                    self.calls.append((_name, (st.st_dev, st.st_ino)))
                _real(fd)

            monkeypatch.setattr(os, name, spy)

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            calls, self.calls = self.calls, []
        return [(name, _path_of(key)) for name, key in calls]


_known_dirs: set[Path] = set()


def _path_of(key: tuple[int, int]) -> str:
    for d in _known_dirs:
        for p in [d, *d.iterdir()]:
            st = os.stat(p)
            if (st.st_dev, st.st_ino) == key:
                return str(p)
    return f"inode {key}"


@pytest.fixture(autouse=True)
def _names(tmp_path: Path):  # type: ignore[no-untyped-def]
    _known_dirs.add(tmp_path)
    yield
    _known_dirs.discard(tmp_path)


@pytest.fixture
def boot(monkeypatch) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The boot id the volumes see; replace ``boot[0]`` to simulate a reboot."""
    ids = [uuid.uuid4().bytes]
    monkeypatch.setattr(bitmap_mod, "current_boot_id", lambda: ids[0])
    return ids


async def make_source(d: Path, size: int = 16 * CS):  # type: ignore[no-untyped-def]
    src = await create_volume(d / "src", size)
    await src.write(0, pattern(1, 3 * CS))  # chunks 0-2 (64 KiB chunks)
    await src.write(8 * CS + 100, pattern(2, 5000))  # inside chunk 8
    return src


def crash(vol: LazyVolume) -> None:
    """The process dies: no flush, no close; the kernel closes the descriptors."""
    os.close(vol._fd)
    vol._bitmap.close()


def read_source_calls(monkeypatch, src) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    calls: list[tuple[int, int]] = []
    real = src._read_blocking

    def spy(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return real(offset, length)

    monkeypatch.setattr(src, "_read_blocking", spy)
    return calls


# ---- (a) process crash, same boot: the volatile bitmap ----


async def test_process_crash_in_the_same_boot_keeps_every_acknowledged_bit(
    lazy_dir: Path, boot: list[bytes], monkeypatch
) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    assert isinstance(clone, LazyVolume)
    await clone.flush()
    await clone.write(CS + 10, b"A" * 10)  # chunk 1: copy then write
    await clone.write(6 * CS, b"B" * CS)  # chunk 6: a hole in the source
    expect = await clone.read(0, src.size)
    crash(clone)
    # Not flushed: the durable bitmap has no bit, the volatile one has both.
    assert (lazy_dir / "c.bitmap").read_bytes()[HEADER_SIZE:] == bytes(2)
    assert (lazy_dir / "c.bitmap.volatile").read_bytes()[HEADER_SIZE:] == bytes([0b0100_0010, 0])
    again = await open_volume(lazy_dir / "c", source=src, background=False)
    try:
        assert isinstance(again, LazyVolume)
        assert again._bitmap.test(1) and again._bitmap.test(6)
        assert again.hydration_progress() == pytest.approx(2 / 16)
        calls = read_source_calls(monkeypatch, src)
        assert await again.read(CS, CS) == expect[CS : 2 * CS]
        assert await again.read(6 * CS, CS) == b"B" * CS
        assert calls == []  # both chunks come from the clone's own file
        await again.wait_hydrated()
        assert await again.read(0, src.size) == expect
    finally:
        await again.close()
        await src.close()


# ---- (b) reboot / power loss: the durable bitmap only ----


async def test_reboot_uses_only_the_durable_bitmap(
    lazy_dir: Path, boot: list[bytes], monkeypatch
) -> None:
    big = 4 * CS  # 256 KiB chunks: several 64 KiB sparse pieces per chunk
    src = await make_source(lazy_dir)  # 1 MiB: data in 0..192K and at 512K+100
    source_image = await src.read(0, src.size)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=big, background=False)
    assert isinstance(clone, LazyVolume)
    await clone.write(10, b"F" * 10)  # chunk 0, flushed below
    await clone.flush()
    await clone.write(2 * big + 2 * CS, b"L" * 100)  # chunk 2, where the source is zeros
    await clone.write(3 * big + 4000, b"H" * 100)  # chunk 3, a hole in the source
    assert await clone.read(3 * big + 4000, 100) == b"H" * 100
    crash(clone)
    boot[0] = uuid.uuid4().bytes  # the machine restarted
    # Power loss keeps what flush() made durable. Here the clone's file also still
    # holds the later writes' bytes: they must not show through a lost bit.
    again = await open_volume(lazy_dir / "c", source=src, background=False)
    try:
        assert isinstance(again, LazyVolume)
        assert again._bitmap.test(0)
        assert not again._bitmap.test(2) and not again._bitmap.test(3)
        reads: list[tuple[int, int]] = []
        real_read = src.read

        async def spy(offset: int, length: int) -> bytes:
            reads.append((offset, length))
            return await real_read(offset, length)

        monkeypatch.setattr(src, "read", spy)
        expect = bytearray(source_image)
        expect[10:20] = b"F" * 10  # flushed before the reboot: survives
        for c in range(4):
            assert await again.read(c * big, big) == bytes(expect[c * big : (c + 1) * big])
        # chunk 0 from the clone's file; chunks 2 and 3 through the source again
        assert reads == [(big, big), (2 * big, big), (3 * big, big)]
        # The volatile bitmap was rewritten for this boot from the durable one.
        raw = (lazy_dir / "c.bitmap.volatile").read_bytes()
        assert raw[HEADER_SIZE:] == bytes([0b1111_0001])  # chunk 0 + padding bits
        assert boot[0] in raw[:HEADER_SIZE]
        # Hydration copies chunks 2 and 3 exactly: the stray "L"/"H" bytes never appear.
        await again.wait_hydrated()
        assert await again.read(0, src.size) == bytes(expect)
        assert (lazy_dir / "c").read_bytes() == bytes(expect)
    finally:
        await again.close()
        await src.close()


async def test_stray_bytes_under_a_clear_bit_are_overwritten_by_a_partial_write(
    lazy_dir: Path, boot: list[bytes]
) -> None:
    big = 4 * CS
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=big, background=False)
    await clone.flush()
    await clone.write(2 * big + 2 * CS, b"L" * 100)
    await clone.write(3 * big, b"H" * 100)
    crash(clone)  # type: ignore[arg-type]
    boot[0] = uuid.uuid4().bytes
    again = await open_volume(lazy_dir / "c", source=src, background=False)
    try:
        await again.write(2 * big, b"w")  # partial write to chunk 2: copy exactly, then write
        await again.write(3 * big + CS, b"v")  # chunk 3 (source hole): zeros over "H"
        expect = bytearray(await src.read(0, src.size))
        expect[2 * big] = ord("w")
        expect[3 * big + CS] = ord("v")
        assert await again.read(0, src.size) == bytes(expect)
    finally:
        await again.close()
        await src.close()


async def test_reboot_before_any_flush_reads_the_source(lazy_dir: Path, boot: list[bytes]) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.write(0, b"lost")
    crash(clone)  # type: ignore[arg-type]
    boot[0] = uuid.uuid4().bytes
    # The durable bitmap's header never reached the disk either.
    raw = (lazy_dir / "c.bitmap").read_bytes()
    (lazy_dir / "c.bitmap").write_bytes(bytes(HEADER_SIZE) + raw[HEADER_SIZE:])
    again = await open_volume(lazy_dir / "c", source=src, background=False)
    try:
        assert again.hydration_progress() == 0.0
        assert await again.read(0, 3 * CS) == pattern(1, 3 * CS)
    finally:
        await again.close()
        await src.close()


async def test_bitmap_header_errors_name_the_field(lazy_dir: Path, boot: list[bytes]) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.flush()
    await clone.close()
    path = lazy_dir / "c.bitmap"
    good = path.read_bytes()
    path.write_bytes(b"garbage!" + good[8:])
    with pytest.raises(BackendError, match="field 'magic'"):
        await open_volume(lazy_dir / "c", source=src)
    bad = bitmap_mod._header(bitmap_mod.KIND_DURABLE, 5, bytes(16))
    path.write_bytes(bad + good[HEADER_SIZE:])
    with pytest.raises(BackendError, match="field 'nchunks' is 5, expected 16"):
        await open_volume(lazy_dir / "c", source=src)
    path.write_bytes(good[:-1])
    with pytest.raises(BackendError, match="bytes of bits"):
        await open_volume(lazy_dir / "c", source=src)
    path.write_bytes(good)
    (lazy_dir / "c.clone.json").unlink()
    with pytest.raises(BackendError, match="incomplete lazy clone"):
        await open_volume(lazy_dir / "c")
    await src.close()


# ---- (c), (d) where fsync happens ----


async def test_clone_and_writes_issue_no_fsync_flush_does(lazy_dir: Path, monkeypatch) -> None:
    src = await make_source(lazy_dir)
    syncs = SyncLog(monkeypatch)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.write(CS + 10, b"A" * 10)  # unhydrated chunk with source data
    await clone.write(5 * CS, b"B" * 4096)  # unhydrated chunk, source hole
    await clone.write(CS + 20, b"C" * 10)  # hydrated chunk (lock-free path)
    await clone.write(2 * CS - 5, b"D" * 10)  # spans a hydrated and an unhydrated chunk
    await clone.hydrate_step()
    assert syncs.take() == []
    await clone.flush()  # first flush: data file, durable bitmap, metadata, directory
    synced = {os.path.basename(p) for _, p in syncs.take()}
    assert synced == {"c", "c.bitmap", "c.clone.json", lazy_dir.name}
    await clone.flush()  # (d) nothing changed: no fsync at all
    assert syncs.take() == []
    await clone.write(CS + 30, b"E")  # hydrated chunk: data only
    await clone.flush()
    assert syncs.take() == [("fdatasync", str(lazy_dir / "c"))]
    await clone.write(9 * CS, b"G")  # a new chunk: data, then its durable bit
    await clone.flush()
    assert syncs.take() == [
        ("fdatasync", str(lazy_dir / "c")),
        ("fdatasync", str(lazy_dir / "c.bitmap")),
    ]
    assert (lazy_dir / "c.bitmap").read_bytes()[HEADER_SIZE:] == bytes([0b0010_0111, 0b10])
    await clone.flush()
    assert syncs.take() == []
    await clone.close()
    await src.close()


async def test_plain_volume_flush_skips_when_clean(tmp_path: Path, monkeypatch) -> None:
    vol = await create_volume(tmp_path / "v", 1 << 20)  # created durable
    syncs = SyncLog(monkeypatch)
    await vol.flush()
    assert syncs.take() == []
    await vol.write(0, b"x")
    assert syncs.take() == []
    await vol.flush()
    assert syncs.take() == [("fdatasync", str(tmp_path / "v"))]
    await vol.flush()
    assert syncs.take() == []
    await vol.close()
    again = await open_volume(tmp_path / "v")  # reopened: flushes everything once
    await again.flush()
    assert {os.path.basename(p) for _, p in syncs.take()} == {"v", tmp_path.name}
    await again.flush()
    assert syncs.take() == []
    await again.close()


async def test_a_write_running_during_a_flush_is_not_counted_as_flushed(
    tmp_path: Path, monkeypatch
) -> None:
    vol = await create_volume(tmp_path / "v", 1 << 20)
    gate, entered = threading.Event(), threading.Event()
    real = file_mod.pwrite_all

    def slow(fd: int, data: bytes, offset: int) -> None:
        entered.set()
        gate.wait(5)
        real(fd, data, offset)

    monkeypatch.setattr(file_mod, "pwrite_all", slow)
    write = asyncio.ensure_future(vol.write(512, b"b"))  # issued before the flush...
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
    await vol.flush()  # ...which cannot cover it: it has not finished
    gate.set()
    await write
    syncs = SyncLog(monkeypatch)
    await vol.flush()  # so this one must sync
    assert syncs.take() == [("fdatasync", str(tmp_path / "v"))]
    await vol.close()


async def test_hydrator_flushes_in_batches_in_order(lazy_dir: Path, monkeypatch) -> None:
    src = await create_volume(lazy_dir / "src", 32 * CS)
    await src.write(0, os.urandom(32 * CS))
    monkeypatch.setattr(lazy_mod, "HYDRATE_SYNC_BYTES", 8 * CS)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    assert isinstance(clone, LazyVolume)
    events: list[tuple[str, int]] = []
    real_write = clone._bitmap.write_durable

    def write_durable(snapshot: bytes, *, sync_file: bool = False) -> None:
        events.append(("durable", int.from_bytes(snapshot, "little").bit_count()))
        real_write(snapshot, sync_file=sync_file)

    monkeypatch.setattr(clone._bitmap, "write_durable", write_durable)
    syncs = SyncLog(monkeypatch)
    await clone.wait_hydrated()
    calls = syncs.take()
    data = [i for i, (_, p) in enumerate(calls) if p == str(lazy_dir / "c")]
    # 32 chunks, a flush every 8: 4 batches (the last one is the final flush), plus
    # the metadata update: far fewer than one fsync per chunk.
    assert len(data) == 4, calls
    assert [n for _, n in events] == [8, 16, 24, 32]
    # In each batch the data file is synced before the durable bitmap.
    bitmap_syncs = [i for i, (_, p) in enumerate(calls) if p == str(lazy_dir / "c.bitmap")]
    assert len(bitmap_syncs) == 4 and all(d < b for d, b in zip(data, bitmap_syncs, strict=True))
    assert (lazy_dir / "c.bitmap").read_bytes()[HEADER_SIZE:] == b"\xff" * 4
    await clone.close()
    await src.close()


async def test_flush_of_a_closed_volume_is_a_backend_error(lazy_dir: Path) -> None:
    src = await make_source(lazy_dir)
    clone = await clone_volume(src, lazy_dir / "c", chunk_size=CS, background=False)
    await clone.write(0, b"x")
    await clone.close()
    with pytest.raises(BackendError, match="closed"):
        await clone.flush()
    await src.write(0, b"y")
    await src.close()
    with pytest.raises(BackendError, match="closed"):
        await src.flush()
