"""Volume.read_cached: the data path's no-task read, never different from read()."""

from __future__ import annotations

from pathlib import Path

from targetcli_preserve.volumes import clone_volume, create_volume

CS = 64 * 1024


async def test_file_volume_answers_cached_reads_like_read(tmp_path: Path):
    vol = await create_volume(tmp_path / "v", 16 * CS)
    await vol.write(4096, b"\xaa" * 8192)
    for offset, length in ((4096, 8192), (0, 4096), (4000, 512), (15 * CS, CS)):
        cached = vol.read_cached(offset, length)
        if cached is not None:
            assert cached == await vol.read(offset, length)
    assert vol.read_cached(4096, 8192) == b"\xaa" * 8192  # just written: in memory
    assert vol.read_cached(16 * CS - 512, 1024) is None  # past the end: read() says why
    assert vol.read_cached(-512, 512) is None
    assert vol.read_cached(0, 0) is None
    await vol.close()


async def test_lazy_clone_reads_cached_from_the_right_place(tmp_path: Path):
    src = await create_volume(tmp_path / "src", 16 * CS)
    await src.write(0, b"\x01" * (2 * CS))
    clone = await clone_volume(src, tmp_path / "clone", chunk_size=CS, background=False)
    await clone.write(CS + 512, b"\x02" * 512)  # hydrates chunk 1 only
    await src.write(0, b"\x03" * 512)  # a pre-cut write the engine would replicate too
    # chunk 0: not hydrated, read through the source (which the engine keeps right)
    assert clone.read_cached(0, 1024) in (None, await clone.read(0, 1024))
    assert (await clone.read(0, 512)) == b"\x03" * 512
    # chunk 1: hydrated, from the clone's own file
    got = clone.read_cached(CS, 1024)
    assert got in (None, await clone.read(CS, 1024))
    assert (await clone.read(CS + 512, 512)) == b"\x02" * 512
    # chunks 0 and 1 together: part the source's, part ours: never answered here
    assert clone.read_cached(CS - 512, 1024) is None
    await clone.close()
    await src.close()
