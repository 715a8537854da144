"""Plain file volumes: create/read/write/flush/freeze/close/remove, errors."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from targetcli_preserve._errors import BackendError, UserError
from targetcli_preserve.volumes import (
    FileVolume,
    create_volume,
    open_volume,
    remove_volume,
)
from targetcli_preserve.volumes import file as file_mod

MiB = 1 << 20


async def test_create_is_sparse_and_reads_zeros(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", 64 * MiB)
    try:
        assert vol.size == 64 * MiB and vol.strategy is None and not vol.read_only
        assert os.stat(tmp_path / "v").st_size == 64 * MiB
        assert os.stat(tmp_path / "v").st_blocks == 0
        assert await vol.read(5 * MiB, 4096) == bytes(4096)
        assert vol.hydration_progress() == 1.0
        await vol.wait_hydrated()
    finally:
        await vol.close()
    assert sorted(os.listdir(tmp_path)) == ["v"]  # no partial file left behind


async def test_write_read_flush_reopen(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", 4 * MiB)
    await vol.write(4096, b"a" * 8192)
    await vol.write(MiB - 10, b"b" * 20)  # unaligned
    assert await vol.read(4096, 8192) == b"a" * 8192
    assert await vol.read(MiB - 12, 24) == b"\0\0" + b"b" * 20 + b"\0\0"
    assert await vol.read(0, 0) == b""
    await vol.flush()
    await vol.close()
    again = await open_volume(tmp_path / "v")
    try:
        assert isinstance(again, FileVolume) and again.strategy is None
        assert again.size == 4 * MiB
        assert await again.read(MiB - 10, 20) == b"b" * 20
    finally:
        await again.close()


async def test_create_rejects_existing_bad_size_and_missing_dir(tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(b"keep")
    with pytest.raises(UserError, match="already exists"):
        await create_volume(tmp_path / "v", MiB)
    assert (tmp_path / "v").read_bytes() == b"keep"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UserError, match="size"):
            await create_volume(tmp_path / "w", bad)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="no such directory"):
        await create_volume(tmp_path / "nope" / "v", MiB)
    assert sorted(os.listdir(tmp_path)) == ["v"]


async def test_out_of_range_io_is_a_user_error(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", MiB)
    try:
        with pytest.raises(UserError, match="outside"):
            await vol.read(MiB - 10, 11)
        with pytest.raises(UserError, match="outside"):
            await vol.read(-1, 1)
        with pytest.raises(UserError, match="outside"):
            await vol.write(MiB, b"x")
    finally:
        await vol.close()


async def test_freeze_reopens_read_only(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", MiB)
    try:
        await vol.write(0, b"before")
        await vol.freeze()
        assert vol.read_only
        assert fcntl.fcntl(vol._fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        with pytest.raises(BackendError, match="frozen"):
            await vol.write(0, b"after")
        assert await vol.read(0, 6) == b"before"
        await vol.freeze()  # idempotent
    finally:
        await vol.close()


async def test_closed_volume_raises_backend_error(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", MiB)
    await vol.close()
    await vol.close()  # idempotent
    with pytest.raises(BackendError):
        await vol.read(0, 512)
    with pytest.raises(BackendError):
        await vol.write(0, b"x")


async def test_remove_volume_is_idempotent(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", MiB)
    await vol.close()
    await remove_volume(tmp_path / "v")
    assert os.listdir(tmp_path) == []
    await remove_volume(tmp_path / "v")
    with pytest.raises(UserError, match="no such volume"):
        await open_volume(tmp_path / "v")


async def test_uncached_read_falls_back_to_the_executor(tmp_path: Path, monkeypatch) -> None:
    vol = await create_volume(tmp_path / "v", MiB)
    try:
        await vol.write(512, b"q" * 512)
        calls = []

        def no_cache(fd, buffers, offset, flags=0):  # type: ignore[no-untyped-def]
            calls.append(flags)
            raise BlockingIOError

        monkeypatch.setattr(file_mod.os, "preadv", no_cache)
        assert await vol.read(512, 512) == b"q" * 512
        assert calls == [file_mod._RWF_NOWAIT]

        def unsupported(fd, buffers, offset, flags=0):  # type: ignore[no-untyped-def]
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(file_mod.os, "preadv", unsupported)
        assert await vol.read(512, 512) == b"q" * 512
        assert vol._nowait is False  # stops trying
    finally:
        await vol.close()


async def test_cached_read_path_returns_correct_bytes(tmp_path: Path) -> None:
    vol = await create_volume(tmp_path / "v", MiB)
    try:
        payload = os.urandom(128 * 1024)
        await vol.write(4096, payload)
        assert vol._read_cached(4096, len(payload)) == payload
        assert await vol.read(4096, len(payload)) == payload
    finally:
        await vol.close()
