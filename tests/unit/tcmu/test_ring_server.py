"""RingServer: one TCMU device served on the loop, against the simulated kernel.

A real ``ScsiTarget`` over an in-memory store is fed by ``SimKernel`` through its
doorbell (an eventfd): round trips of every kind of data, small rings that wrap, PAD
and make the kernel queue commands, completion in any order with and without
``CAP_OOOC``, issue order = ring order, ``read_len`` residuals, sense data, TMRs, a
malformed ring, a removed device, and close. The simulator checks the ring's rules at
every doorbell write; every test also checks that nothing was raised into the loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import struct
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from helpers.memstore import MemoryStore
from helpers.scsi_testlib import (
    RecordingStore,
    inquiry,
    make_target,
    read10,
    write10,
)
from helpers.tcmu_sim import (
    ALL_CAPS,
    CAP_OOOC,
    CAP_READ_LEN,
    CHECK_CONDITION,
    CMDR_OFF,
    GOOD,
    POISON,
    REQ_CDB_OFF,
    SimCmd,
    SimDoorbell,
    SimKernel,
    _Placed,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve.scsi.target import CommandResult, ScsiStatus
from targetcli_preserve.tcmu import Command, RingError, RingServer, TcmuRing

pytestmark = pytest.mark.timeout(120)

BS = 512  # the store's logical block
ABORT_TASK_SET = 2
READ_CAPACITY10 = bytes([0x25]) + bytes(9)
ILLEGAL_REQUEST, HARDWARE_ERROR, MEDIUM_ERROR = 0x5, 0x4, 0x3


def pattern(n: int, seed: int) -> bytes:
    return bytes((seed * 37 + i * 11 + (i >> 9)) & 0xFF for i in range(n))


class Rig:
    """A simulated device, its ring and doorbell, a target over ``store``, a RingServer."""

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        execute: Callable[..., object] | None = None,
        flags: int = ALL_CAPS,
        in_order: bool = False,
        cmdr_size: int = 4096 - CMDR_OFF,
        data_blocks: int = 64,
        block_size: int = 4096,
    ) -> None:
        self.sim = SimKernel(
            cmdr_size=cmdr_size, data_blocks=data_blocks, block_size=block_size, flags=flags
        )
        self.ring = TcmuRing(self.sim.buffer, in_order=in_order)
        self.bell = SimDoorbell(self.sim)
        self.store = store if store is not None else RecordingStore()
        self.target = make_target(self.store)
        self.lost: list[BaseException] = []
        self.server = RingServer(
            self.ring,
            self.bell,
            execute or partial(self.target.execute, 0),  # type: ignore[arg-type]
            name="lun0",
            on_lost=self.lost.append,
        )
        self.loop_errors: list[dict] = []

    def start(self) -> Rig:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self.server.start()
        return self

    def read(self, lba: int, n: int) -> SimCmd:
        return self.sim.submit(read10(lba, n), data_in_len=n * BS)

    def write(self, lba: int, data: bytes) -> SimCmd:
        return self.sim.submit(write10(lba, len(data) // BS), data_out=data)

    async def settle(self, cmds: list[SimCmd], timeout: float = 10.0) -> None:
        await until(lambda: all(c.response is not None for c in cmds), timeout)

    async def finish(self) -> None:
        """Close the server; the ring must be idle and nothing raised anywhere."""
        await asyncio.wait_for(self.server.close(), 30)
        self.check()
        self.sim.check_idle()
        self.bell.close()

    def check(self) -> None:
        assert self.bell.violations == []
        assert self.loop_errors == []


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the loop run until ``cond()`` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.0005)


async def spin(iterations: int = 20) -> None:
    for _ in range(iterations):
        await asyncio.sleep(0)


def sense_key(resp) -> tuple[int, int, int]:
    s = resp.sense
    assert len(s) == 96 and s[0] == 0x70, s.hex()
    return s[2] & 0x0F, s[12], s[13]


class GateStore(MemoryStore):
    """Each write waits for its gate (``gates``, in issue order) before it lands."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Future[None]] = []

    async def _write(self, lba: int, nblocks: int, data) -> None:
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        await super()._write(lba, nblocks, data)


class ModelStore(MemoryStore):
    """Takes effect at issue (the first step of its awaitable, which the server runs
    before it issues the next command), then completes after ``delays`` loop
    iterations: so the image is exactly the writes in issue order, and each read's data
    is what the image held at its issue, whatever order commands complete in."""

    def __init__(self, delays: Iterator[int], num_blocks: int = 64) -> None:
        super().__init__(num_blocks)
        self.delays = delays
        self.data_out_kinds: set[type] = set()

    async def _read(self, lba: int, nblocks: int) -> bytes:
        snapshot = bytes(self.data[lba * BS : (lba + nblocks) * BS])
        for _ in range(next(self.delays)):
            await asyncio.sleep(0)
        return snapshot

    async def _write(self, lba: int, nblocks: int, data) -> None:
        self.data_out_kinds.add(type(data))
        data = await data  # the ring's Data-Out: gathered now, never suspends
        self.data[lba * BS : (lba + nblocks) * BS] = data
        for _ in range(next(self.delays)):
            await asyncio.sleep(0)


# --- round trips -----------------------------------------------------------------------


async def test_inquiry_read_capacity_write_and_read_round_trip() -> None:
    rig = Rig().start()
    inq = rig.sim.submit(inquiry(alloc=36), data_in_len=36)
    cap = rig.sim.submit(READ_CAPACITY10, data_in_len=8)
    data = pattern(16 * BS, 3)
    wr = rig.write(8, data)
    rd = rig.read(8, 16)
    await rig.settle([inq, cap, wr, rd])
    direct = await rig.target.execute(0, inquiry(alloc=36), None, 0)
    assert inq.response.status == GOOD and inq.response.data_in == direct.data
    assert cap.response.data_in == (2047).to_bytes(4, "big") + BS.to_bytes(4, "big")
    assert wr.response.status == GOOD and wr.response.data_in is None
    assert rd.response.status == GOOD and rd.response.data_in == data
    assert rig.store.data[8 * BS : 24 * BS] == data
    assert rig.store.issued == [("write", 8, 16), ("read", 8, 16)]
    await rig.finish()


async def test_entries_queued_before_start_are_served_at_start() -> None:
    rig = Rig()
    wr = rig.write(0, pattern(BS, 1))
    rig.start()
    await rig.settle([wr])
    assert wr.response.status == GOOD
    await rig.finish()


async def test_a_short_inquiry_reports_read_len_so_the_kernel_sees_a_residual() -> None:
    rig = Rig().start()
    inq = rig.sim.submit(inquiry(alloc=255), data_in_len=255)
    await rig.settle([inq])
    direct = await rig.target.execute(0, inquiry(alloc=255), None, 0)
    assert 0 < len(direct.data) < 255
    assert inq.response.read_len == len(direct.data)
    assert inq.response.data_in == direct.data
    await rig.finish()


async def test_without_read_len_the_rest_of_a_short_buffer_is_zeroed() -> None:
    rig = Rig(flags=ALL_CAPS & ~CAP_READ_LEN, data_blocks=2).start()
    warm = rig.read(0, 16)  # uses the data blocks, which the kernel then poisons
    await rig.settle([warm])
    inq = rig.sim.submit(inquiry(alloc=255), data_in_len=255)
    await rig.settle([inq])
    direct = await rig.target.execute(0, inquiry(alloc=255), None, 0)
    assert inq.response.read_len is None
    assert inq.response.data_in == direct.data + bytes(255 - len(direct.data))
    assert POISON not in inq.response.data_in[len(direct.data) :]
    await rig.finish()


async def test_a_read_never_gathers_its_buffer_a_write_gathers_it_once(monkeypatch) -> None:
    gathered: list[int] = []
    real = Command.data_out
    monkeypatch.setattr(Command, "data_out", lambda cmd: gathered.append(cmd.cmd_id) or real(cmd))
    rig = Rig().start()
    reads = [rig.read(i * 8, 8) for i in range(5)]
    await rig.settle(reads)
    assert gathered == []
    writes = [rig.write(i * 8, pattern(8 * BS, i)) for i in range(5)]
    await rig.settle(writes)
    assert len(gathered) == 5
    await rig.finish()


# --- failures become CHECK CONDITION ---------------------------------------------------


async def test_check_condition_sense_reaches_the_kernel() -> None:
    rig = Rig().start()
    out_of_range = rig.read(2047, 2)
    bad_opcode = rig.sim.submit(bytes([0x8C]) + bytes(15))  # READ ATTRIBUTE: not served
    await rig.settle([out_of_range, bad_opcode])
    assert out_of_range.response.status == CHECK_CONDITION
    assert sense_key(out_of_range.response) == (ILLEGAL_REQUEST, 0x21, 0x00)
    assert out_of_range.response.sense[18:] == bytes(96 - 18)
    assert out_of_range.response.data_in is None  # no data with CHECK CONDITION
    assert bad_opcode.response.status == CHECK_CONDITION
    assert sense_key(bad_opcode.response) == (ILLEGAL_REQUEST, 0x20, 0x00)
    await rig.finish()


async def test_a_store_failure_is_medium_error() -> None:
    store = RecordingStore()
    store.fail = {"read"}
    rig = Rig(store).start()
    rd = rig.read(0, 8)
    await rig.settle([rd])
    assert sense_key(rd.response) == (MEDIUM_ERROR, 0x11, 0x00)
    await rig.finish()


class _Never:
    """An awaitable that finishes with no result."""

    def __await__(self):
        yield from asyncio.sleep(0).__await__()


async def test_a_result_that_raises_or_is_missing_is_internal_target_failure(caplog) -> None:
    calls: list[bytes] = []

    async def later_boom() -> CommandResult:
        await asyncio.sleep(0)
        raise RuntimeError("boom after a step")

    def execute(cdb: bytes, data_out, length: int):
        calls.append(cdb)
        kind = len(calls) % 4
        if kind == 1:
            raise RuntimeError("boom at once")
        if kind == 2:
            return later_boom()
        if kind == 3:
            return _Never()
        return CommandResult(ScsiStatus.GOOD, sense=b"x")  # not awaitable

    rig = Rig(execute=execute).start()
    cmds = [rig.read(0, 1) for _ in range(4)]
    with caplog.at_level(logging.ERROR):
        await rig.settle(cmds)
    for cmd in cmds:
        assert cmd.response.status == CHECK_CONDITION
        assert sense_key(cmd.response) == (HARDWARE_ERROR, 0x44, 0x00)
    assert "boom at once" in caplog.text and "boom after a step" in caplog.text
    assert "gave no result" in caplog.text
    await rig.finish()


async def test_a_result_the_ring_cannot_carry_is_internal_target_failure() -> None:
    def execute(cdb: bytes, data_out, length: int):
        return asyncio.sleep(0, CommandResult(ScsiStatus.GOOD, sense=b"\x70"))

    async def bad_status() -> CommandResult:
        return CommandResult(0x1FF)  # type: ignore[arg-type]

    rig = Rig(execute=lambda *a: bad_status()).start()
    cmd = rig.sim.submit(bytes(6))
    await rig.settle([cmd])
    assert sense_key(cmd.response) == (HARDWARE_ERROR, 0x44, 0x00)
    await rig.finish()
    # sense with GOOD is dropped, never handed to the kernel with a GOOD status
    rig = Rig(execute=execute).start()
    cmd = rig.sim.submit(bytes(6))
    await rig.settle([cmd])
    assert cmd.response.status == GOOD and cmd.response.sense == b""
    await rig.finish()


async def test_long_sense_is_cut_to_the_ring_buffer() -> None:
    async def execute(cdb: bytes, data_out, length: int) -> CommandResult:
        return CommandResult(ScsiStatus.CHECK_CONDITION, sense=bytes([0x70]) + bytes(range(130)))

    rig = Rig(execute=execute).start()
    cmd = rig.sim.submit(bytes(6))
    await rig.settle([cmd])
    assert cmd.response.sense == (bytes([0x70]) + bytes(range(130)))[:96]
    await rig.finish()


# --- many in flight, order ---------------------------------------------------------------


@pytest.mark.parametrize("flags", [ALL_CAPS, ALL_CAPS & ~CAP_OOOC])
async def test_hundreds_in_flight_on_a_tiny_ring_that_wraps_and_queues(flags) -> None:
    delays = iter([(i * 7) % 5 for i in range(10_000)])
    store = ModelStore(delays)
    rig = Rig(store, flags=flags, cmdr_size=560, data_blocks=6, block_size=1024)
    pads: list[int] = []
    insert = rig.sim._insert_padding

    def counting(size: int) -> int:
        if rig.sim.cmdr_size - rig.sim.head < size:
            pads.append(rig.sim.head)
        return insert(size)

    rig.sim._insert_padding = counting  # type: ignore[method-assign]
    rig.start()
    peak = 0

    def watch() -> bool:
        nonlocal peak
        peak = max(peak, rig.server.outstanding)
        return all(c.response is not None for c in cmds)

    image = bytearray(64 * BS)
    cmds: list[SimCmd] = []
    expected: dict[int, bytes] = {}
    for i in range(300):
        lba, n = (i * 5) % 60, 1 + i % 4
        if i % 3:
            data = pattern(n * BS, i)
            cmds.append(rig.write(lba, data))
            image[lba * BS : (lba + n) * BS] = data
        else:
            cmds.append(rig.read(lba, n))
            expected[i] = bytes(image[lba * BS : (lba + n) * BS])
    assert len(rig.sim.qfull) > 250  # the kernel holds most of them back
    await until(watch, 30)
    assert peak > 1, "commands never overlapped"
    assert pads, "the ring never wrapped with a PAD entry"
    for i, want in expected.items():
        assert cmds[i].response.data_in == want, f"read {i}"
    assert all(c.response.status == GOOD for c in cmds)
    assert bytes(store.data) == bytes(image)
    assert store.issued == [
        ("write" if i % 3 else "read", (i * 5) % 60, 1 + i % 4) for i in range(300)
    ]
    await rig.finish()


async def test_issue_order_is_ring_order_within_one_doorbell_event() -> None:
    rig = Rig(GateStore()).start()
    cmds = [rig.write(i * 3 % 50, pattern(BS, i)) for i in range(25)]  # one event's worth
    await until(lambda: len(rig.store.gates) == 25)
    assert rig.bell.acks == 1
    assert rig.store.issued == [("write", i * 3 % 50, 1) for i in range(25)]
    for gate in rig.store.gates:
        gate.set_result(None)
    await rig.settle(cmds)
    await rig.finish()


@pytest.mark.parametrize("oooc", [True, False])
async def test_out_of_order_completion(oooc) -> None:
    flags = ALL_CAPS if oooc else ALL_CAPS & ~CAP_OOOC
    rig = Rig(GateStore(), flags=flags).start()
    cmds = [rig.write(i * 8, pattern(8 * BS, i)) for i in range(6)]
    await until(lambda: len(rig.store.gates) == 6)
    assert rig.server.outstanding == 6
    gates = rig.store.gates
    gates[5].set_result(None)
    await until(lambda: rig.server.outstanding == 5)
    await spin()
    if oooc:  # answered at once: the kernel has it
        assert cmds[5].response is not None and cmds[5].response.status == GOOD
    else:  # answered, but the tail cannot move past the five before it
        assert all(c.response is None for c in cmds)
    for gate in reversed(gates[:5]):
        gate.set_result(None)
        await spin(3)
    await rig.settle(cmds)
    assert all(c.response.status == GOOD for c in cmds)
    for i in range(6):
        assert rig.store.data[i * 8 * BS : (i + 1) * 8 * BS] == pattern(8 * BS, i)
    await rig.finish()


async def test_doorbell_writes_are_batched() -> None:
    rig = Rig().start()
    cmds = [rig.read(i, 1) for i in range(20)]  # all answered in the first step
    await rig.settle(cmds)
    assert rig.bell.rings == 1
    await rig.finish()


# --- task management, unknown entries ---------------------------------------------------


async def test_a_tmr_is_logged_and_the_aborted_commands_still_complete(caplog) -> None:
    rig = Rig(GateStore()).start()
    cmds = [rig.write(i * 8, pattern(8 * BS, i)) for i in range(4)]
    await until(lambda: len(rig.store.gates) == 4)
    with caplog.at_level(logging.INFO, logger="targetcli_preserve.tcmu.handler"):
        rig.sim.tmr(ABORT_TASK_SET, cmds[1:3])
        await until(lambda: "ABORT_TASK_SET" in caplog.text)
    ids = [c.cmd_id for c in cmds[1:3]]
    assert str(ids) in caplog.text
    assert rig.server.outstanding == 4
    for gate in rig.store.gates:
        gate.set_result(None)
    await rig.settle(cmds)
    assert all(c.response.status == GOOD and c.completions == 1 for c in cmds)
    await rig.finish()


async def test_an_unknown_entry_is_a_warning_and_is_released(caplog) -> None:
    rig = Rig().start()
    sim = rig.sim
    with caplog.at_level(logging.WARNING, logger="targetcli_preserve.tcmu.handler"):
        off = sim._insert_padding(16)
        at = sim._claim(off, 16)
        struct.pack_into("=IHBB", sim.buffer, at, 16 | 5, 0, 0, 0)
        sim._advance_head(off, _Placed(5, 16, 0))
        sim._notify()
        await until(lambda: "unknown ring entry" in caplog.text)
    after = rig.read(0, 1)
    await rig.settle([after])
    await until(lambda: sim.last_cleaned == sim.head)
    await rig.finish()


# --- losing the device ------------------------------------------------------------------


async def test_a_malformed_ring_is_lost_not_raised() -> None:
    rig = Rig().start()
    good = rig.read(0, 1)
    bad = rig.read(1, 1)
    at = CMDR_OFF + bad.entry
    struct.pack_into("=Q", rig.sim.buffer, at + REQ_CDB_OFF, 0)  # cdb_off outside it
    await until(lambda: rig.lost)
    assert good.response is not None and good.response.status == GOOD
    assert len(rig.lost) == 1 and isinstance(rig.lost[0], RingError)
    assert rig.lost[0].field == "cdb_off"
    assert rig.server.lost is rig.lost[0]
    acks = rig.bell.acks
    rig.read(2, 1)  # its event is not read any more
    await spin()
    assert rig.bell.acks == acks
    await asyncio.wait_for(rig.server.close(), 5)
    rig.check()
    rig.bell.close()


async def test_a_removed_device_is_lost_once(caplog) -> None:
    rig = Rig().start()
    with caplog.at_level(logging.ERROR, logger="targetcli_preserve.tcmu.handler"):
        rig.bell.remove()
        await until(lambda: rig.lost)
        await spin()
    assert rig.bell.acks == 1, "the reader was not removed"
    assert isinstance(rig.lost[0], OSError) and rig.lost[0].errno == errno.EIO
    assert caplog.text.count("lost") == 1
    await asyncio.wait_for(rig.server.close(), 5)
    await asyncio.wait_for(rig.server.close(), 5)
    rig.check()
    rig.bell.close()


async def test_a_failing_doorbell_write_is_lost_and_running_commands_still_finish() -> None:
    rig = Rig(GateStore()).start()
    cmds = [rig.write(i * 8, pattern(8 * BS, i)) for i in range(3)]
    await until(lambda: len(rig.store.gates) == 3)
    rig.bell.fail_ring = True
    rig.store.gates[0].set_result(None)
    await until(lambda: rig.lost)
    assert isinstance(rig.lost[0], OSError)
    for gate in rig.store.gates[1:]:
        gate.set_result(None)
    await until(lambda: rig.server.outstanding == 0)
    await asyncio.wait_for(rig.server.close(), 5)
    assert len(rig.lost) == 1
    assert all(c.response is None for c in cmds)  # the kernel never heard
    rig.check()
    rig.bell.close()


async def test_on_lost_raising_is_contained(caplog) -> None:
    rig = Rig()

    def on_lost(exc: BaseException) -> None:
        raise ValueError("callback bug")

    rig.server = RingServer(
        rig.ring, rig.bell, partial(rig.target.execute, 0), name="x", on_lost=on_lost
    )
    rig.start()
    rig.bell.remove()
    await until(lambda: rig.server.lost is not None)
    await spin()
    assert "on_lost raised" in caplog.text
    await rig.server.close()
    rig.check()
    rig.bell.close()


# --- close --------------------------------------------------------------------------------


async def test_close_waits_for_commands_in_flight_and_answers_them() -> None:
    rig = Rig(GateStore()).start()
    cmds = [rig.write(i * 8, pattern(8 * BS, i)) for i in range(5)]
    await until(lambda: len(rig.store.gates) == 5)
    closing = asyncio.ensure_future(rig.server.close())
    await spin()
    assert not closing.done()
    late = rig.read(0, 1)  # after close began: not taken
    for gate in rig.store.gates:
        gate.set_result(None)
    await asyncio.wait_for(closing, 5)
    assert rig.server.outstanding == 0
    assert all(c.response is not None and c.response.status == GOOD for c in cmds)
    assert late.state == "ring" and rig.store.issued.count(("read", 0, 1)) == 0
    rig.check()
    # what was not taken is the next owner's (the edge resets the ring)
    assert rig.ring.outstanding == {}
    rig.bell.close()


async def test_close_is_bounded_and_a_late_completion_never_touches_the_ring(caplog) -> None:
    rig = Rig(GateStore()).start()
    cmd = rig.write(0, pattern(BS, 1))
    await until(lambda: len(rig.store.gates) == 1)
    await asyncio.wait_for(rig.server.close(timeout=0.05), 5)
    assert rig.server.outstanding == 1
    assert "not answered" in caplog.text
    tail = rig.sim.tail
    rig.store.gates[0].set_result(None)
    await until(lambda: rig.server.outstanding == 0)
    await spin()
    assert cmd.response is None and rig.sim.tail == tail
    assert "after close" in caplog.text
    rig.check()
    rig.bell.close()


async def test_close_is_idempotent_and_concurrent_closes_share_it() -> None:
    rig = Rig(GateStore()).start()
    cmd = rig.write(0, pattern(BS, 1))
    await until(lambda: len(rig.store.gates) == 1)
    a = asyncio.ensure_future(rig.server.close())
    b = asyncio.ensure_future(rig.server.close())
    await spin()
    rig.store.gates[0].set_result(None)
    await asyncio.wait_for(asyncio.gather(a, b), 5)
    await rig.server.close()
    assert cmd.response.status == GOOD
    with pytest.raises(RuntimeError):
        rig.server.start()
    rig.check()
    rig.bell.close()


async def test_close_before_start() -> None:
    rig = Rig()
    await rig.server.close()
    rig.bell.close()


# --- the property --------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["read", "write", "pause"]),
        st.integers(0, 31),  # lba: a 32-block region, so commands overlap a lot
        st.integers(1, 8),  # blocks
        st.integers(0, 6),  # loop iterations before it completes (pause: before the next)
    ),
    min_size=1,
    max_size=60,
)


async def _scenario(ops, flags: int, in_order: bool, cmdr_size: int, data_blocks: int) -> None:
    delays = iter([d for _, _, _, d in ops])
    store = ModelStore(delays)
    rig = Rig(
        store,
        flags=flags,
        in_order=in_order,
        cmdr_size=cmdr_size,
        data_blocks=data_blocks,
        block_size=1024,
    ).start()
    image = bytearray(store.num_blocks * BS)
    cmds: list[tuple[SimCmd, bytes | None]] = []
    order: list[tuple[str, int, int]] = []
    for i, (op, lba, n, delay) in enumerate(ops):
        if op == "pause":
            for _ in range(delay):
                await asyncio.sleep(0)
            continue
        if op == "write":
            data = pattern(n * BS, i)
            cmds.append((rig.write(lba, data), None))
            image[lba * BS : (lba + n) * BS] = data
        else:
            cmds.append((rig.read(lba, n), bytes(image[lba * BS : (lba + n) * BS])))
        order.append((op, lba, n))
    await rig.settle([c for c, _ in cmds], timeout=20)
    for cmd, want in cmds:
        assert cmd.response.status == GOOD
        if want is not None:
            assert cmd.response.data_in == want
    assert store.issued == order  # issue order is ring order (the sim's FIFO)
    assert bytes(store.data) == bytes(image)
    await rig.finish()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=OPS,
    oooc=st.booleans(),
    read_len=st.booleans(),
    in_order=st.booleans(),
    cmdr_size=st.sampled_from([512, 640, 1024]),
    data_blocks=st.integers(8, 16),
)
def test_any_mix_completing_in_any_order_matches_the_model(
    ops, oooc, read_len, in_order, cmdr_size, data_blocks
) -> None:
    flags = ALL_CAPS & ~(0 if oooc else CAP_OOOC) & ~(0 if read_len else CAP_READ_LEN)
    asyncio.run(asyncio.wait_for(_scenario(ops, flags, in_order, cmdr_size, data_blocks), 60))
