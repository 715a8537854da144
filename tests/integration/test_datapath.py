"""The data path with real volumes and journal, driven in-process through LunStore.

The engine's rules are proven against a model in tests/property; these check that the
driver carries them out on real files: replication of a pre-cut write into the clone,
a post-cut write never reaching the preserved volume, a lock released when write data
never comes, durability before SYNCHRONIZE CACHE completes, a failed clone with no
effect.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from targetcli_preserve._errors import BackendError, ProtocolError
from targetcli_preserve.daemon import Daemon
from targetcli_preserve.journal import Journal
from targetcli_preserve.options import Config, LunSpec

BS = 512
SIZE = 8 << 20


@pytest.fixture
async def daemon(tmp_path):
    daemon = Daemon(
        Config(tmp_path / "state", "127.0.0.1", 0, [LunSpec("lun0", SIZE), LunSpec("lun1", SIZE)])
    )
    await daemon.start()
    yield daemon
    await daemon.stop()


def block(byte: int, n: int = 8) -> bytes:
    return bytes([byte]) * n * BS


async def test_pre_cut_write_in_flight_reaches_both_volumes(daemon):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    data = asyncio.get_running_loop().create_future()
    pre = store.write(0, 8, data)  # issued before the cut, its data still arriving
    cut = dp.preserve(["lun0"])
    post_other = store.write(64, 8, block(0x22))  # post-cut, elsewhere: runs at once
    post_same = store.write(0, 8, block(0x33))  # post-cut, overlapping: waits for pre
    await cut
    await asyncio.wait_for(post_other, 5)
    assert not post_same.done(), "an overlapping post-cut write ran before the pre-cut one"
    data.set_result(block(0x11))
    await asyncio.wait_for(asyncio.gather(pre, post_same), 5)
    await dp.wait_frozen("lun0", 0)
    frozen = Path(dp.catalog.volume_path("lun0", 0)).read_bytes()
    assert frozen[: 8 * BS] == block(0x11), "the pre-cut write is in the preserved image"
    assert frozen[64 * BS : 72 * BS] == bytes(8 * BS), "no post-cut write reached it"
    live = await store.read(0, 72)
    assert live[: 8 * BS] == block(0x33) and live[64 * BS :] == block(0x22)


async def test_write_whose_data_never_comes_releases_its_lock(daemon):
    store = daemon.services.datapath.store("lun0")
    data = asyncio.get_running_loop().create_future()
    write = store.write(0, 8, data)
    read = store.read(0, 8)
    assert [lock["state"] for lock in await daemon.services.commands.locks()] == ["held"]
    data.set_exception(ProtocolError("connection lost"))
    with pytest.raises(BackendError):
        await write
    assert await asyncio.wait_for(read, 5) == bytes(8 * BS)
    assert await daemon.services.commands.locks() == []


async def test_one_cut_over_two_luns_shares_t(daemon):
    dp = daemon.services.datapath
    await dp.store("lun0").write(0, 8, block(1))
    await dp.store("lun1").write(0, 8, block(2))
    cut = await dp.preserve(["lun0", "lun1"])
    after = [dp.store(n).write(0, 8, block(9)) for n in ("lun0", "lun1")]
    await asyncio.gather(*after)
    for name, byte in (("lun0", 1), ("lun1", 2)):
        await dp.wait_frozen(name, 0)
        assert Path(dp.catalog.volume_path(name, 0)).read_bytes()[: 8 * BS] == block(byte)
        assert [g.cut_seq for g in dp.engine.generations(name)] == [0, cut.seq]


async def test_synchronize_cache_waits_for_the_cut_to_be_durable(daemon):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    cut = await dp.preserve(["lun0"])
    await store.write(0, 8, block(5))
    await store.flush()
    records = Journal.read(dp.catalog.state_dir / "journal")
    assert {"op": "durable", "cut": cut.id} in records, "SYNCHRONIZE CACHE came back first"


async def test_failed_clone_has_no_effect_on_io(daemon, monkeypatch):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    await store.write(0, 8, block(7))
    await dp.clones.close()  # no standby: force a clone at the cut, then break it

    async def broken(*args, **kwargs):
        raise BackendError("no space left on the device")

    monkeypatch.setattr("targetcli_preserve.clones.clone_volume", broken)
    cut = dp.preserve(["lun0"])
    post = store.write(8, 8, block(8))  # post-cut: waits for the clone, then goes home
    with pytest.raises(BackendError, match="nothing was changed"):
        await cut
    await asyncio.wait_for(post, 5)
    assert [g.index for g in dp.engine.generations("lun0")] == [0]
    assert (await store.read(0, 16)) == block(7) + block(8)
    ops = [r["op"] for r in Journal.read(dp.catalog.state_dir / "journal")]
    assert ops[-2:] == ["cut", "abort"]


# ---- the driver's rules, one at a time ----------------------------------------------------


class Gate:
    """Holds every call of one volume method until opened, and counts the calls."""

    def __init__(self, vol, method: str, closed: bool = True) -> None:
        self.calls: list[tuple] = []
        self.opened = asyncio.Event()
        if not closed:
            self.opened.set()
        real = getattr(vol, method)

        async def gated(*args):
            self.calls.append(args)
            await self.opened.wait()
            return await real(*args)

        setattr(vol, method, gated)  # this instance only


async def test_a_held_pre_cut_write_is_on_the_live_lun_beside_a_post_cut_write(daemon):
    """The pre-cut write's data arrives after the cut (a WRITE held at its R2T); a
    post-cut write lands next to it in the same chunk first. The live LUN must have
    both: a driver that wrote the pre-cut write to its home volume only would lose it
    from the live LUN (the clone's chunk was filled from the source before it came)."""
    dp = daemon.services.datapath
    store = dp.store("lun0")
    data = asyncio.get_running_loop().create_future()
    pre = store.write(0, 8, data)
    cut = dp.preserve(["lun0"])
    post = store.write(8, 8, block(0x22))  # no overlap: runs at once, in the same chunk
    await cut
    await asyncio.wait_for(post, 5)
    assert not pre.done()
    data.set_result(block(0x11))
    await asyncio.wait_for(pre, 5)
    assert await store.read(0, 16) == block(0x11) + block(0x22)
    await dp.wait_frozen("lun0", 0)
    frozen = Path(dp.catalog.volume_path("lun0", 0)).read_bytes()
    assert frozen[: 16 * BS] == block(0x11) + bytes(8 * BS)


async def test_a_pre_cut_write_is_acknowledged_only_once_the_clone_has_it(daemon):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    data = asyncio.get_running_loop().create_future()
    pre = store.write(0, 8, data)
    cut = await dp.preserve(["lun0"])
    clone = Gate(dp.volumes[("lun0", cut.new_generations["lun0"])], "write")
    try:
        data.set_result(block(0x44))
        await asyncio.sleep(0.05)
        assert len(clone.calls) == 1, "the pre-cut write was not replicated into the clone"
        assert not pre.done(), "acknowledged before its copy reached the clone"
    finally:
        clone.opened.set()
    await asyncio.wait_for(pre, 5)
    assert await store.read(0, 8) == block(0x44)


async def test_partial_overlaps_across_the_cut(daemon):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    data = asyncio.get_running_loop().create_future()
    pre = store.write(0, 16, data)  # blocks 0-15, pre-cut, data held
    await dp.preserve(["lun0"])
    post = store.write(8, 16, block(0x66, 16))  # blocks 8-23: overlaps half of it
    await asyncio.sleep(0.02)
    assert not post.done(), "an overlapping post-cut write overtook the pre-cut one"
    data.set_result(block(0x55, 16))
    await asyncio.wait_for(asyncio.gather(pre, post), 5)
    assert await store.read(0, 24) == block(0x55) + block(0x66, 16)
    await dp.wait_frozen("lun0", 0)
    frozen = Path(dp.catalog.volume_path("lun0", 0)).read_bytes()
    assert frozen[: 24 * BS] == block(0x55, 16) + bytes(8 * BS), "a post-cut write leaked"


async def test_post_cut_writes_never_reach_the_preserved_volume(daemon):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    await store.write(0, 8, block(0x01))
    cut = await dp.preserve(["lun0"])
    old = Gate(dp.volumes[("lun0", 0)], "write", closed=False)
    for lba in (0, 4, 8, 100, 2000):  # overlapping, partial, beside, far
        await store.write(lba, 8, block(0x77))
    assert old.calls == []
    await dp.wait_frozen("lun0", cut.new_generations["lun0"] - 1)
    frozen = Path(dp.catalog.volume_path("lun0", 0)).read_bytes()
    assert frozen[: 8 * BS] == block(0x01) and frozen[8 * BS :].count(0) == len(frozen) - 8 * BS


@pytest.mark.parametrize("cut_first", [False, True])
async def test_fua_reaches_stable_storage_before_the_write_completes(daemon, cut_first):
    """SBC-3 5.40 (WRITE(10) FUA): the data is on the medium when the command ends: every
    volume the write reaches is flushed, before it is acknowledged."""
    dp = daemon.services.datapath
    store = dp.store("lun0")
    data = asyncio.get_running_loop().create_future()
    write = store.write(0, 8, data, fua=True)
    homes = [dp.volumes[("lun0", 0)]]
    if cut_first:  # a pre-cut FUA write: the clone must be flushed too
        cut = await dp.preserve(["lun0"])
        homes.append(dp.volumes[("lun0", cut.new_generations["lun0"])])
    flushes = [Gate(vol, "flush") for vol in homes]
    try:
        data.set_result(block(0x88))
        await asyncio.sleep(0.05)
        assert all(gate.calls for gate in flushes), "FUA did not flush every volume"
        assert not write.done(), "acknowledged before the flush completed"
    finally:
        for gate in flushes:
            gate.opened.set()
    await asyncio.wait_for(write, 5)


async def test_synchronize_cache_flushes_the_live_volume_before_it_completes(daemon):
    dp = daemon.services.datapath
    store = dp.store("lun0")
    await store.write(0, 8, block(0x99))
    gate = Gate(dp.volumes[("lun0", 0)], "flush")
    flush = store.flush()
    try:
        await asyncio.sleep(0.05)
        assert len(gate.calls) == 1 and not flush.done()
    finally:
        gate.opened.set()
    await asyncio.wait_for(flush, 5)
