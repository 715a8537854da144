"""The simulated kernel itself: the byte offsets the codec writes (checked against the
facts verified on a 6.1 kernel), and that the simulator catches user space breaking the
ring's rules, so that the property test can trust it."""

from __future__ import annotations

import errno
import select
import struct

import pytest
from helpers.tcmu_sim import (
    ALL_CAPS,
    CAP_OOOC,
    CAP_READ_LEN,
    CHECK_CONDITION,
    CMDR_OFF,
    HDR_CMD_ID,
    HDR_LEN_OP,
    HDR_UFLAGS,
    MB_CMD_TAIL,
    MB_CMDR_SIZE,
    POISON,
    UFLAG_READ_LEN,
    SimDoorbell,
    SimKernel,
    SimViolation,
    make_cdb,
)

from targetcli_preserve.tcmu import Command, TcmuRing

READ10, WRITE10 = 0x28, 0x2A


def u(sim: SimKernel, at: int, fmt: str) -> int:
    return int(struct.unpack_from("=" + fmt, sim.buffer, at)[0])


def set_tail(sim: SimKernel, value: int) -> None:
    struct.pack_into("=I", sim.buffer, MB_CMD_TAIL, value)


# --- the ABI offsets -------------------------------------------------------------------


def test_offsets_verified_on_a_real_kernel() -> None:
    """cmdr_off 0x80; cdb_off (u64) at entry+24; iovecs at entry+48; scsi_status at
    entry+8; read_len at entry+12; sense at entry+16; cmd_tail at mailbox+64."""
    sim = SimKernel(block_size=512)
    sim.submit(make_cdb(READ10), data_in_len=700)
    ring = TcmuRing(sim.buffer)
    [cmd] = ring.poll()
    assert isinstance(cmd, Command)
    assert u(sim, 4, "I") == 0x80
    entry = CMDR_OFF + cmd.entry
    assert u(sim, entry + 24, "Q") == entry + 112  # CDB right after the 112-byte minimum
    assert bytes(sim.buffer[entry + 112 : entry + 122]) == cmd.cdb
    assert u(sim, entry + 48, "Q") == cmd.iovecs[0].offset == sim.data_off
    assert u(sim, entry + 56, "Q") == cmd.iovecs[0].length == 700
    cmd.write_data_in(bytes(700))
    ring.complete(cmd, CHECK_CONDITION, b"\x70\x00\x05\x00", read_len=300)
    assert sim.buffer[entry + 8] == CHECK_CONDITION
    assert u(sim, entry + 12, "I") == 300
    assert bytes(sim.buffer[entry + 16 : entry + 20]) == b"\x70\x00\x05\x00"
    assert bytes(sim.buffer[entry + 20 : entry + 112]) == bytes(92)
    assert sim.buffer[entry + 7] == UFLAG_READ_LEN
    assert u(sim, entry, "I") == 128 | 1  # len_op untouched
    assert u(sim, 64, "I") == 128 == sim.head


# --- what the simulator refuses --------------------------------------------------------


def _two(flags: int = ALL_CAPS) -> tuple[SimKernel, TcmuRing, list[Command]]:
    sim = SimKernel(flags=flags)
    sim.submit(make_cdb(READ10), data_in_len=100)
    sim.submit(make_cdb(WRITE10), data_out=bytes(100))
    ring = TcmuRing(sim.buffer)
    cmds = [e for e in ring.poll() if isinstance(e, Command)]
    return sim, ring, cmds


def test_tail_beyond_head() -> None:
    sim, _, _ = _two()
    set_tail(sim, sim.head + 8)
    with pytest.raises(SimViolation, match="beyond cmd_head"):
        sim.irq()


def test_tail_inside_an_entry() -> None:
    sim, _, _ = _two()
    set_tail(sim, 64)
    with pytest.raises(SimViolation, match="inside the entry"):
        sim.irq()


def test_response_in_another_commands_entry_without_oooc() -> None:
    sim, _, _ = _two(ALL_CAPS & ~CAP_OOOC)
    struct.pack_into("=H", sim.buffer, CMDR_OFF + HDR_CMD_ID, 2)
    set_tail(sim, 128)
    with pytest.raises(SimViolation, match="without CAP_OOOC"):
        sim.irq()


def test_second_completion_of_a_command() -> None:
    sim, ring, cmds = _two()
    ring.complete(cmds[0])
    assert sim.irq() == 1
    struct.pack_into("=H", sim.buffer, CMDR_OFF + 128 + HDR_CMD_ID, cmds[0].cmd_id)
    set_tail(sim, 256)
    with pytest.raises(SimViolation, match="not found"):
        sim.irq()


def test_changed_len_op() -> None:
    sim, _, _ = _two()
    struct.pack_into("=I", sim.buffer, CMDR_OFF + HDR_LEN_OP, 136 | 1)
    set_tail(sim, 128)
    with pytest.raises(SimViolation, match="len_op"):
        sim.irq()


def test_changed_mailbox() -> None:
    sim, _, _ = _two()
    struct.pack_into("=I", sim.buffer, MB_CMDR_SIZE, 1024)
    with pytest.raises(SimViolation, match="mailbox"):
        sim.irq()


def test_write_to_free_ring_space() -> None:
    sim, _, _ = _two()
    sim.buffer[CMDR_OFF + sim.head + 40] = 0
    with pytest.raises(SimViolation, match="free ring space"):
        sim.irq()
    sim.buffer[CMDR_OFF + sim.head + 40] = POISON
    sim.buffer[CMDR_OFF + sim.head + 100] = 0  # found when the kernel claims the space
    with pytest.raises(SimViolation, match="free ring space"):
        sim.submit(make_cdb(0x00))


def test_write_to_a_freed_data_block() -> None:
    sim, ring, cmds = _two()
    view = cmds[0].data_in_views()[0]
    ring.complete(cmds[0])
    sim.irq()
    view[0] = 1  # a stale view written after completion
    with pytest.raises(SimViolation, match="data block 0"):
        sim.submit(make_cdb(READ10), data_in_len=100)


def test_read_len_flag_without_the_capability() -> None:
    sim, _, _ = _two(ALL_CAPS & ~CAP_READ_LEN)
    sim.buffer[CMDR_OFF + HDR_UFLAGS] = UFLAG_READ_LEN
    set_tail(sim, 128)
    with pytest.raises(SimViolation, match="CAP_READ_LEN"):
        sim.irq()


def test_unanswered_command_is_not_idle() -> None:
    sim, _, _ = _two()
    with pytest.raises(SimViolation, match="never answered"):
        sim.check_idle()


def test_the_kernel_never_overwrites_what_user_space_holds() -> None:
    """With nothing released the ring fills up and commands wait; every entry on the ring
    is still intact when read."""
    sim = SimKernel(cmdr_size=2048)
    for i in range(40):
        sim.submit(make_cdb(0x7F, additional=i))
    ring = TcmuRing(sim.buffer)
    on_ring = [c for c in sim.commands if c.state == "ring"]
    assert len(sim.qfull) == 40 - len(on_ring) > 0
    cmds = [e for e in ring.poll() if isinstance(e, Command)]
    assert [c.cdb for c in cmds] == [c.cdb for c in on_ring]
    sim.irq()  # nothing released: nothing moves
    assert ring.poll() == []


# --- the doorbell (the uio fd) ---------------------------------------------------------


def readable(bell: SimDoorbell) -> bool:
    return bool(select.select([bell.fileno()], [], [], 0)[0])


def test_doorbell_is_readable_after_an_entry_and_ack_consumes_it() -> None:
    sim = SimKernel(cmdr_size=1024, data_blocks=2, block_size=512)
    bell = SimDoorbell(sim)
    assert not readable(bell)
    with pytest.raises(BlockingIOError):
        bell.ack()
    sim.submit(make_cdb(READ10), data_in_len=512)
    sim.submit(make_cdb(READ10), data_in_len=512)  # one event or two: one ack takes both
    assert readable(bell)
    bell.ack()
    assert not readable(bell)
    sim.submit(make_cdb(READ10), data_in_len=512)  # no data block left: waits, no event
    assert len(sim.qfull) == 1 and not readable(bell)
    ring = TcmuRing(sim.buffer)
    first = ring.poll()[0]
    assert isinstance(first, Command)
    ring.complete(first)
    assert ring.take_notify()
    bell.ring()  # the kernel takes the completion and queues the waiting command
    assert bell.rings == 1 and not sim.qfull and readable(bell)
    bell.close()


def test_doorbell_records_a_violation_and_raises_it() -> None:
    sim = SimKernel()
    bell = SimDoorbell(sim)
    set_tail(sim, 8)  # beyond cmd_head 0
    with pytest.raises(SimViolation):
        bell.ring()
    assert len(bell.violations) == 1
    bell.close()


def test_a_removed_device_is_readable_and_fails_both_ways() -> None:
    bell = SimDoorbell(SimKernel())
    bell.remove()
    assert readable(bell)
    for call in (bell.ack, bell.ring):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.EIO
    bell.close()
