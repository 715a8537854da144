"""A live preserve through the TCMU ring, checked byte for byte (docs/design.md rules 1-6).

The real product stack (a started ``Daemon``: engine, data path, file volumes, journal,
its ``ScsiTarget``) is fed by the simulated kernel through :class:`RingServer`, as the
TCMU edge will feed it from a real ``/dev/uioN``: many overlapping writes in flight on a
ring small enough to wrap and make the kernel queue commands, and a preserve in the
middle of the burst. Afterwards:

- the live LUN, read back through the ring, equals every write applied in ring order
  (rule 1: with TCMU, issue order is ring order);
- the frozen volume equals exactly the writes issued before the cut (rules 4-6): the
  daemon counts each LUN's commands (``issued``, ``issued_at_cut``), so the test knows
  which write was the first after T, and no other prefix passes;
- the cut lands in the middle of the burst, with several commands in flight.

Like tests/integration/test_preserve_live.py for iSCSI, both clone strategies run.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pytest
from helpers.qemu_load import Write, apply, overlapping_writes
from helpers.scsi_testlib import read16, write16
from helpers.tcmu_sim import GOOD, SimCmd, SimDoorbell, SimKernel

from targetcli_preserve.daemon import Daemon
from targetcli_preserve.options import Config, LunSpec
from targetcli_preserve.tcmu import RingServer, TcmuRing

pytestmark = pytest.mark.timeout(300)

BS = 512
LUN_SIZE = 16 << 20
REGION = 4 << 20  # the writes crowd into this much, so they overlap a lot
COUNT = 220
WARMUP = 20  # writes acknowledged before the burst
BURST = 160  # writes queued in one go; the cut lands in the middle of them
MIN_INFLIGHT = 4  # commands the LUN must have in flight at the cut
READ_CHUNK = 256 << 10


class Device:
    """One simulated TCMU device in front of one of the daemon's LUNs."""

    def __init__(self, daemon: Daemon, lun_name: str) -> None:
        services = daemon.services
        # A 16 KiB ring (about fifteen entries of the largest writes) and a 4 MiB data
        # area: it wraps, and the kernel queues most of a burst until earlier commands
        # are answered.
        self.sim = SimKernel(cmdr_size=16384 - 128, data_blocks=1024, block_size=4096)
        self.bell = SimDoorbell(self.sim)
        self.lost: list[BaseException] = []
        number = services.lun_numbers[lun_name]
        self.server = RingServer(
            TcmuRing(self.sim.buffer),
            self.bell,
            partial(services.target.execute, number),
            name=lun_name,
            on_lost=self.lost.append,
        )
        self.server.start()
        self.max_waiting = 0

    def write(self, w: Write) -> SimCmd:
        cmd = self.sim.submit(
            write16(w.offset // BS, w.length // BS), bytes([w.pattern]) * w.length
        )
        self.max_waiting = max(self.max_waiting, len(self.sim.qfull))
        return cmd

    async def read_all(self) -> bytes:
        cmds = [
            self.sim.submit(read16(off // BS, READ_CHUNK // BS), data_in_len=READ_CHUNK)
            for off in range(0, LUN_SIZE, READ_CHUNK)
        ]
        await settle(cmds)
        assert all(c.response.status == GOOD for c in cmds)
        return b"".join(c.response.data_in for c in cmds)

    async def close(self) -> None:
        await asyncio.wait_for(self.server.close(), 30)
        assert self.lost == [] and self.bell.violations == []
        self.sim.check_idle()
        self.bell.close()


async def settle(cmds: list[SimCmd], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(c.response is not None for c in cmds):
        assert loop.time() < deadline, "commands did not complete in time"
        await asyncio.sleep(0.001)


def acknowledged(cmds: list[SimCmd]) -> int:
    return sum(c.response is not None for c in cmds)


async def run_load_with_cut(daemon: Daemon, names: list[str], seed: int):
    """One device per LUN, ``COUNT`` overlapping writes each; preserve every LUN together
    once the burst flows. Returns the devices, the writes per LUN, the preserve's
    reply and per LUN ``k``: how many of its writes were issued before the cut."""
    services = daemon.services
    devices = [Device(daemon, name) for name in names]
    loads = [overlapping_writes(seed + n, COUNT, REGION) for n in range(len(names))]
    for dev, writes in zip(devices, loads):
        await settle([dev.write(w) for w in writes[:WARMUP]])
    status = await services.commands.status()
    issued = {lun["name"]: lun["issued"] for lun in status["luns"]}
    before_load = [issued[name] - WARMUP for name in names]
    bursts = [
        [dev.write(w) for w in writes[WARMUP : WARMUP + BURST]]
        for dev, writes in zip(devices, loads)
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not all(acknowledged(b) >= 10 for b in bursts):  # the burst is flowing
        assert loop.time() < deadline
        await asyncio.sleep(0.0005)
    cut = await services.commands.preserve(names, wait=True)
    rest = [[dev.write(w) for w in writes[WARMUP + BURST :]] for dev, writes in zip(devices, loads)]
    for cmds in bursts + rest:
        await settle(cmds)
        assert all(c.response.status == GOOD for c in cmds)
    ks = [entry["issued_at_cut"] - base for entry, base in zip(cut["luns"], before_load)]
    return devices, loads, cut, ks


async def check_lun(dev: Device, entry: dict, writes: list[Write], k: int) -> None:
    """Live: every write in ring order; frozen: exactly the first ``k`` (rules 1-6)."""
    assert WARMUP + 10 <= k < WARMUP + BURST, f"the cut at write {k} is outside the burst"
    assert entry["inflight_at_cut"] >= MIN_INFLIGHT, (
        f"only {entry['inflight_at_cut']} commands in flight at the cut: no real concurrency"
    )
    assert dev.max_waiting > 0, "the kernel never had to queue a command: the ring is too big"
    live = await dev.read_all()
    assert live == apply(bytearray(LUN_SIZE), writes), "live LUN is not all writes in ring order"
    assert entry["preserved"]["state"] == "frozen"
    frozen = Path(entry["preserved"]["path"]).read_bytes()
    assert frozen == apply(bytearray(LUN_SIZE), writes[:k]), (
        f"the frozen volume is not exactly the {k} writes issued before the cut"
    )


@pytest.fixture
async def daemon(state_dir):
    daemon = Daemon(
        Config(state_dir, "127.0.0.1", 0, [LunSpec("lun0", LUN_SIZE), LunSpec("lun1", LUN_SIZE)])
    )
    await daemon.start()
    yield daemon
    await daemon.stop()


async def test_preserve_under_writes_through_the_ring(daemon, clone_strategy) -> None:
    devices, (writes,), cut, (k,) = await run_load_with_cut(daemon, ["lun0"], seed=3)
    (dev,) = devices
    await check_lun(dev, cut["luns"][0], writes, k)
    vols = await daemon.services.commands.volumes("lun0")
    assert [v["state"] for v in vols] == ["frozen", "live"]
    assert vols[1]["clone"] == clone_strategy
    await dev.close()
    print(
        f"{clone_strategy}: cut after {k} of {len(writes)} writes, "
        f"{cut['luns'][0]['inflight_at_cut']} in flight at the cut, "
        f"up to {dev.max_waiting} queued by the kernel"
    )


async def test_one_cut_over_two_tcmu_devices(daemon) -> None:
    devices, loads, cut, ks = await run_load_with_cut(daemon, ["lun0", "lun1"], seed=11)
    assert [e["name"] for e in cut["luns"]] == ["lun0", "lun1"]
    for dev, writes, entry, k in zip(devices, loads, cut["luns"], ks):
        await check_lun(dev, entry, writes, k)
    seqs = {
        (await daemon.services.commands.volumes(n))[-1]["preserve"]["seq"] for n in ("lun0", "lun1")
    }
    assert seqs == {cut["seq"]}  # one T for the consistency group (rule 2)
    for dev in devices:
        await dev.close()
