"""The TCMU ring codec against the simulated kernel: every entry kind, the data area,
wrap-around with PAD, completion order with and without CAP_OOOC, sense data, read_len,
and what the caller is not allowed to do."""

from __future__ import annotations

import struct

import pytest
from helpers.tcmu_sim import (
    ALL_CAPS,
    CAP_OOOC,
    CAP_READ_LEN,
    CHECK_CONDITION,
    CMDR_OFF,
    GOOD,
    HDR_CMD_ID,
    HDR_UFLAGS,
    OP_PAD,
    POISON,
    TASK_ABORTED,
    SimCmd,
    SimKernel,
    SimResponse,
    make_cdb,
)

from targetcli_preserve.tcmu import (
    Command,
    IoVec,
    MailboxFlag,
    RingUsageError,
    TcmuRing,
    Tmr,
    TmrType,
    UFlag,
    UnknownEntry,
)

TUR, READ10, WRITE10, READ12, READ16, XDWRITEREAD10 = 0x00, 0x28, 0x2A, 0xA8, 0x88, 0x53
BUSY = 0x08


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((seed * 31 + i * 7 + (i >> 8)) & 0xFF for i in range(n))


def pair(**kw: int) -> tuple[SimKernel, TcmuRing]:
    sim = SimKernel(**kw)  # type: ignore[arg-type]
    return sim, TcmuRing(sim.buffer)


def commands(ring: TcmuRing) -> list[Command]:
    entries = ring.poll()
    assert all(isinstance(e, Command) for e in entries), entries
    return [e for e in entries if isinstance(e, Command)]


def one(ring: TcmuRing) -> Command:
    [cmd] = commands(ring)
    return cmd


def kick(sim: SimKernel, ring: TcmuRing) -> int:
    """What the edge does after completing: write to the uio fd if cmd_tail moved."""
    return sim.irq() if ring.take_notify() else 0


# --- mailbox and geometry --------------------------------------------------------------


def test_mailbox_as_the_kernel_sets_it_up() -> None:
    _, ring = pair(cmdr_size=4096 - 128, data_blocks=8)
    mb = ring.mailbox()
    assert (mb.version, mb.cmdr_off, mb.cmdr_size) == (2, 0x80, 4096 - 128)
    assert (mb.cmd_head, mb.cmd_tail) == (0, 0)
    assert mb.flags == MailboxFlag.CAP_OOOC | MailboxFlag.CAP_READ_LEN | (
        MailboxFlag.CAP_TMR | MailboxFlag.CAP_KEEP_BUF
    )
    assert mb.data_off == ring.data_off == 4096
    assert ring.out_of_order


def test_kernel_default_geometry() -> None:
    """8 MiB for mailbox and ring, 1 GiB of data: a 0x40800000-byte map."""
    sim = SimKernel.default_geometry()
    try:
        assert sim.map_size == 0x40800000
        ring = TcmuRing(sim.buffer)
        mb = ring.mailbox()
        assert (mb.cmdr_off, mb.cmdr_size, mb.data_off) == (0x80, (8 << 20) - 0x80, 8 << 20)
        data = pattern(256 * 1024)
        w = sim.submit(make_cdb(WRITE10), data_out=data)
        r = sim.submit(make_cdb(READ16), data_in_len=1 << 20)
        cw, cr = commands(ring)
        assert cw.data_out() == data
        assert cr.iovecs == (IoVec((8 << 20) + 64 * 4096, 1 << 20),)
        cr.write_data_in(pattern(1 << 20, 2))
        ring.complete(cr)
        ring.complete(cw)
        assert kick(sim, ring) == 2
        assert r.response == SimResponse(GOOD, b"", None, pattern(1 << 20, 2))
        assert w.response == SimResponse(GOOD, b"", None, None)
        sim.check_idle()
        del ring, cw, cr
    finally:
        sim.close()


# --- one command of each kind ----------------------------------------------------------


def test_command_without_data() -> None:
    sim, ring = pair()
    tur = sim.submit(make_cdb(TUR))
    cmd = one(ring)
    assert (cmd.cmd_id, cmd.cdb, cmd.iovecs, cmd.bidi_iovecs) == (1, make_cdb(TUR), (), ())
    assert cmd.data_out() == b"" and cmd.data_in_length == 0
    assert cmd.outstanding and ring.outstanding == {1: cmd}
    assert not ring.take_notify()
    ring.complete(cmd)
    assert not cmd.outstanding and ring.outstanding == {}
    assert ring.take_notify() and not ring.take_notify()
    assert sim.irq() == 1
    assert tur.response == SimResponse(GOOD, b"", None, None)
    sim.check_idle()


def test_write_gathers_data_out() -> None:
    sim, ring = pair()
    data = pattern(10_000)
    w = sim.submit(make_cdb(WRITE10), data_out=data)
    cmd = one(ring)
    assert cmd.iovecs == (IoVec(sim.data_off, 10_000),)  # 3 adjacent blocks, one iovec
    assert cmd.data_out() == data
    assert b"".join(cmd.data_out_views()) == data
    ring.complete(cmd)
    kick(sim, ring)
    assert w.response == SimResponse(GOOD, b"", None, None)
    sim.check_idle()


def test_read_scatters_data_in() -> None:
    sim, ring = pair()
    r = sim.submit(make_cdb(READ10), data_in_len=9000)
    cmd = one(ring)
    assert cmd.data_in_length == 9000 and cmd.data_in_iovecs == cmd.iovecs
    data = pattern(9000, 3)
    cmd.write_data_in(data)
    ring.complete(cmd)
    kick(sim, ring)
    assert r.response == SimResponse(GOOD, b"", None, data)


def test_data_in_in_pieces_across_fragmented_blocks() -> None:
    """Blocks freed out of order leave holes: the kernel's iovecs then skip them."""
    sim, ring = pair(block_size=512, data_blocks=8)
    fillers = [sim.submit(make_cdb(WRITE10), data_out=pattern(512, i)) for i in range(5)]
    cmds = commands(ring)
    for i in (1, 3):
        ring.complete(cmds[i])
    kick(sim, ring)
    r = sim.submit(make_cdb(READ10), data_in_len=1400)  # blocks 1, 3, 5
    cmd = one(ring)
    base = sim.data_off
    assert cmd.iovecs == (IoVec(base + 512, 512), IoVec(base + 1536, 512), IoVec(base + 2560, 376))
    data = pattern(1400, 4)
    for at in range(0, 1400, 300):  # pieces that straddle the iovecs
        cmd.write_data_in(data[at : at + 300], at)
    ring.complete(cmd)
    for i in (0, 2, 4):
        ring.complete(cmds[i])
    kick(sim, ring)
    assert r.response is not None and r.response.data_in == data
    assert all(f.response is not None for f in fillers)
    sim.check_idle()


def test_data_in_must_fit() -> None:
    sim, ring = pair()
    sim.submit(make_cdb(READ10), data_in_len=100)
    cmd = one(ring)
    with pytest.raises(RingUsageError, match="do not fit"):
        cmd.write_data_in(bytes(101))
    with pytest.raises(RingUsageError, match="do not fit"):
        cmd.write_data_in(bytes(10), 91)
    with pytest.raises(RingUsageError, match="do not fit"):
        cmd.write_data_in(b"x", -1)
    cmd.write_data_in(bytes(10), 90)


def test_bidirectional_command() -> None:
    sim, ring = pair()
    out, back = pattern(5000, 5), pattern(6000, 6)
    x = sim.submit(make_cdb(XDWRITEREAD10), data_out=out, data_in_len=6000)
    cmd = one(ring)
    assert cmd.iovecs == (IoVec(sim.data_off, 5000),)
    assert cmd.bidi_iovecs == (IoVec(sim.data_off + 2 * 4096, 6000),)
    assert cmd.data_out() == out and cmd.data_in_length == 6000
    cmd.write_data_in(back)
    ring.complete(cmd)
    kick(sim, ring)
    assert x.response == SimResponse(GOOD, b"", None, back)
    sim.check_idle()


@pytest.mark.parametrize(
    ("opcode", "length"),
    [(TUR, 6), (READ10, 10), (READ12, 12), (READ16, 16), (0xC1, 10), (0x7F, 32)],
)
def test_cdb_lengths(opcode: int, length: int) -> None:
    sim, ring = pair()
    cdb = make_cdb(opcode)
    assert len(cdb) == length
    sim.submit(cdb)
    assert one(ring).cdb == cdb


def test_longest_variable_length_cdb() -> None:
    sim, ring = pair()
    cdb = make_cdb(0x7F, additional=255)
    sim.submit(cdb)
    assert one(ring).cdb == cdb


# --- TMR -------------------------------------------------------------------------------


def test_tmr_lists_the_aborted_commands_on_the_ring() -> None:
    sim, ring = pair()
    cs = [sim.submit(make_cdb(READ10), data_in_len=512) for _ in range(3)]
    cmds = commands(ring)
    sim.tmr(TmrType.ABORT_TASK, [cs[1]])
    sim.tmr(TmrType.LUN_RESET, cs)
    sim.tmr(TmrType.TARGET_COLD_RESET, [])
    sim.tmr(99, [])  # a value the header does not define
    entries = ring.poll()
    assert [(e.tmr_type, e.cmd_ids) for e in entries if isinstance(e, Tmr)] == [
        (TmrType.ABORT_TASK, (2,)),
        (TmrType.LUN_RESET, (1, 2, 3)),
        (TmrType.TARGET_COLD_RESET, ()),
        (TmrType.UNKNOWN, ()),
    ]
    assert not ring.take_notify()  # TMRs are released on read, but commands precede them
    for cmd in cmds:
        ring.complete(cmd, status=TASK_ABORTED)
    assert kick(sim, ring) == 3
    assert [c.response.status for c in cs if c.response] == [TASK_ABORTED] * 3
    sim.check_idle()


def test_tmr_alone_is_released_once_read() -> None:
    sim, ring = pair()
    sim.tmr(TmrType.ABORT_TASK_SET, [])
    [tmr] = ring.poll()
    assert isinstance(tmr, Tmr) and tmr.entry == 0
    assert ring.take_notify()
    assert sim.irq() == 0
    sim.check_idle()


def test_tmr_answers_waiting_commands_itself() -> None:
    sim, ring = pair(block_size=512, data_blocks=2)
    on_ring = sim.submit(make_cdb(WRITE10), data_out=bytes(1024))
    waiting = sim.submit(make_cdb(WRITE10), data_out=bytes(512))
    assert waiting.state == "waiting"
    cmd = one(ring)
    sim.tmr(TmrType.LUN_RESET, [on_ring, waiting])
    [tmr] = ring.poll()
    assert isinstance(tmr, Tmr) and tmr.cmd_ids == (cmd.cmd_id,)
    assert waiting.response == SimResponse(TASK_ABORTED, b"", None, None)
    ring.complete(cmd)
    kick(sim, ring)
    sim.check_idle()


# --- wrap-around -----------------------------------------------------------------------


def test_pad_at_the_end_of_the_ring() -> None:
    """An entry that does not fit before the end goes to offset 0 after a PAD entry."""
    sim, ring = pair(cmdr_size=1024)
    for _ in range(7):  # 7 * 128 bytes: TUR entries are 112 + 8 (CDB) = 120 bytes
        sim.submit(make_cdb(TUR))
    assert sim.head == 7 * 120
    for cmd in commands(ring):
        ring.complete(cmd)
    kick(sim, ring)
    w = sim.submit(make_cdb(WRITE10), data_out=b"abc")  # 112 + 16 bytes: 184 left
    r = sim.submit(make_cdb(READ16), data_in_len=3)  # 128 bytes: 56 left, so PAD 56
    pad_at = CMDR_OFF + 7 * 120 + 128
    assert struct.unpack_from("=I", sim.buffer, pad_at)[0] == 56 | OP_PAD
    cw, cr = commands(ring)  # the PAD is skipped, not returned
    assert (cw.entry, cr.entry) == (7 * 120, 0)
    assert sim.head == 128
    cr.write_data_in(b"xyz")
    ring.complete(cr)
    ring.complete(cw)
    assert ring.mailbox().cmd_tail == 128  # over the command, the PAD and the next one
    kick(sim, ring)
    assert w.response is not None and r.response is not None and r.response.data_in == b"xyz"
    sim.check_idle()


def test_entry_that_ends_exactly_at_the_end_needs_no_pad() -> None:
    sim, ring = pair(cmdr_size=960)
    for _ in range(8):
        sim.submit(make_cdb(TUR))  # 8 * 120 = 960: the eighth ends at the ring's end
    assert sim.head == 7 * 120 and len(sim.qfull) == 1  # one byte stays free: it waits
    cmds = commands(ring)
    assert len(cmds) == 7
    ring.complete(cmds[0])
    kick(sim, ring)
    [eighth] = commands(ring)
    assert eighth.entry == 7 * 120 and sim.head == 0
    for cmd in [*cmds[1:], eighth]:
        ring.complete(cmd)
    kick(sim, ring)
    assert ring.mailbox().cmd_tail == 0
    sim.check_idle()


def test_many_wraps_one_command_at_a_time() -> None:
    sim, ring = pair(cmdr_size=1024, block_size=512, data_blocks=8)
    for i in range(300):
        size = 1 + (i * 397) % 2048
        if i % 2:
            c = sim.submit(make_cdb(WRITE10), data_out=pattern(size, i))
            cmd = one(ring)
            assert cmd.data_out() == pattern(size, i)
            ring.complete(cmd)
            kick(sim, ring)
            assert c.response == SimResponse(GOOD, b"", None, None)
        else:
            c = sim.submit(make_cdb(0x7F, additional=i % 40), data_in_len=size)
            cmd = one(ring)
            assert cmd.cdb == make_cdb(0x7F, additional=i % 40)
            cmd.write_data_in(pattern(size, i))
            ring.complete(cmd)
            kick(sim, ring)
            assert c.response == SimResponse(GOOD, b"", None, pattern(size, i))
    sim.check_idle()


def test_full_ring_queues_in_the_kernel_until_space_is_released() -> None:
    sim, ring = pair(cmdr_size=1024)
    cs = [sim.submit(make_cdb(TUR)) for _ in range(20)]
    assert len(sim.qfull) == 12
    seen = 0
    while seen < 20:
        cmds = commands(ring)
        seen += len(cmds)
        for cmd in cmds:
            ring.complete(cmd, status=BUSY)
        kick(sim, ring)
    assert all(c.response == SimResponse(BUSY, b"", None, None) for c in cs)
    sim.check_idle()


def test_codec_attached_to_a_ring_already_in_use() -> None:
    """A new codec starts at the mailbox's cmd_tail: earlier entries stay released, queued
    ones are delivered."""
    sim, first = pair(cmdr_size=1024)
    for _ in range(5):
        sim.submit(make_cdb(TUR))
    for cmd in commands(first):
        first.complete(cmd)
    kick(sim, first)
    pending = [sim.submit(make_cdb(READ10), data_in_len=8) for _ in range(10)]
    second = TcmuRing(sim.buffer)
    cmds = commands(second)
    assert [c.cmd_id for c in cmds] == [p.cmd_id for p in pending if p.state == "ring"]
    while cmds:
        for cmd in cmds:
            cmd.write_data_in(b"12345678")
            second.complete(cmd)
        kick(sim, second)
        cmds = commands(second)
    assert all(p.response and p.response.data_in == b"12345678" for p in pending)
    sim.check_idle()


# --- completion order ------------------------------------------------------------------


def _eight_in_flight(sim: SimKernel, ring: TcmuRing) -> tuple[list[SimCmd], list[Command]]:
    cs = [sim.submit(make_cdb(READ10), data_in_len=100 + i) for i in range(8)]
    cmds = commands(ring)
    assert [c.cmd_id for c in cmds] == list(range(1, 9))
    return cs, cmds


def _answer(cmd: Command) -> None:
    cmd.write_data_in(pattern(cmd.data_in_length, cmd.cmd_id))


def _expected(sim_cmd: SimCmd) -> SimResponse:
    assert sim_cmd.cmd_id is not None
    status = CHECK_CONDITION if sim_cmd.cmd_id % 2 else GOOD
    sense = bytes([0x70, 0, 3, sim_cmd.cmd_id]).ljust(96, b"\0") if status else b""
    data = None if status else pattern(sim_cmd.data_in_len, sim_cmd.cmd_id)
    return SimResponse(status, sense, None, data)


def _complete(ring: TcmuRing, cmd: Command) -> None:
    _answer(cmd)
    if cmd.cmd_id % 2:
        ring.complete(cmd, CHECK_CONDITION, bytes([0x70, 0, 3, cmd.cmd_id]))
    else:
        ring.complete(cmd)


def test_out_of_order_with_oooc_releases_a_slot_at_every_completion() -> None:
    sim, ring = pair()
    cs, cmds = _eight_in_flight(sim, ring)
    entries = [cmd.entry for cmd in cmds]
    for n, cmd in enumerate(reversed(cmds), 1):
        _complete(ring, cmd)
        # the response went into the oldest unanswered slot, whoever owned it
        slot = CMDR_OFF + entries[n - 1]
        assert struct.unpack_from("=H", sim.buffer, slot + HDR_CMD_ID)[0] == cmd.cmd_id
        assert ring.mailbox().cmd_tail == (entries[n] if n < 8 else sim.head)
        assert kick(sim, ring) == 1
        assert cs[cmd.cmd_id - 1].response == _expected(cs[cmd.cmd_id - 1])
    sim.check_idle()


@pytest.mark.parametrize("in_order", [False, True], ids=["no-oooc", "oooc-declined"])
def test_out_of_order_without_oooc_waits_for_the_oldest(in_order: bool) -> None:
    sim = SimKernel(flags=ALL_CAPS & ~CAP_OOOC if not in_order else ALL_CAPS)
    ring = TcmuRing(sim.buffer, in_order=in_order)
    assert not ring.out_of_order
    cs, cmds = _eight_in_flight(sim, ring)
    for cmd in reversed(cmds[1:]):
        _complete(ring, cmd)
        assert not ring.take_notify()  # the first command still holds the tail
        assert ring.mailbox().cmd_tail == 0
    _complete(ring, cmds[0])
    assert ring.mailbox().cmd_tail == sim.head
    assert kick(sim, ring) == 8
    for c in cs:
        assert c.response == _expected(c)
    sim.check_idle()


def test_without_oooc_the_tail_moves_over_each_completed_prefix() -> None:
    sim = SimKernel(flags=ALL_CAPS & ~CAP_OOOC)
    ring = TcmuRing(sim.buffer)
    cs, cmds = _eight_in_flight(sim, ring)
    order = [2, 1, 0, 5, 3, 7, 4, 6]
    released = []
    for i in order:
        _complete(ring, cmds[i])
        released.append(kick(sim, ring))
    assert released == [0, 0, 3, 0, 1, 0, 2, 2]
    for c in cs:
        assert c.response == _expected(c)
    sim.check_idle()


def test_ids_are_reused_and_responses_still_reach_the_right_command() -> None:
    sim, ring = pair()
    cs, cmds = _eight_in_flight(sim, ring)
    _complete(ring, cmds[4])
    kick(sim, ring)
    again = sim.submit(make_cdb(READ10), data_in_len=50)
    cmd = one(ring)
    assert cmd.cmd_id == 5  # the lowest free id, as xa_alloc hands out
    _complete(ring, cmd)
    for other in cmds[:4] + cmds[5:]:
        _complete(ring, other)
    kick(sim, ring)
    assert again.response == _expected(again)
    for c in cs:
        assert c.response == _expected(c)
    sim.check_idle()


# --- responses -------------------------------------------------------------------------


def test_sense_data_reaches_the_kernel_whole() -> None:
    sim, ring = pair()
    short, full = bytes([0x70, 0, 5, 0, 0, 0, 0, 10]) + bytes(10), pattern(96, 9)
    a = sim.submit(make_cdb(TUR))
    b = sim.submit(make_cdb(TUR))
    ca, cb = commands(ring)
    ring.complete(ca, CHECK_CONDITION, short)
    ring.complete(cb, CHECK_CONDITION, full)
    kick(sim, ring)
    assert a.response == SimResponse(CHECK_CONDITION, short + bytes(78), None, None)
    assert b.response == SimResponse(CHECK_CONDITION, full, None, None)


def test_sense_in_a_reused_slot_carries_no_stale_bytes() -> None:
    """With CAP_OOOC a response can land on another command's iovecs: the codec clears
    the rest of the sense buffer."""
    sim, ring = pair(block_size=512)
    first = sim.submit(make_cdb(READ10), data_in_len=4096)  # cdb_off, iovecs in its entry
    second = sim.submit(make_cdb(TUR))
    c1, c2 = commands(ring)
    ring.complete(c2, CHECK_CONDITION, b"\x70\x00\x06")
    kick(sim, ring)
    assert second.response == SimResponse(CHECK_CONDITION, b"\x70\x00\x06" + bytes(93), None, None)
    ring.complete(c1)
    kick(sim, ring)
    assert first.response is not None


def test_read_len_limits_the_data_in() -> None:
    sim, ring = pair()
    a = sim.submit(make_cdb(READ10), data_in_len=8192)
    b = sim.submit(make_cdb(READ10), data_in_len=512)
    ca, cb = commands(ring)
    ca.write_data_in(pattern(100, 7))
    ring.complete(ca, read_len=100)
    assert struct.unpack_from("=B", sim.buffer, CMDR_OFF + ca.entry + HDR_UFLAGS)[0] == (
        UFlag.READ_LEN
    )
    cb.write_data_in(pattern(512, 8))
    ring.complete(cb, CHECK_CONDITION, b"\x70\x00\x03", read_len=200)  # data and sense
    kick(sim, ring)
    assert a.response == SimResponse(GOOD, b"", 100, pattern(100, 7))
    assert b.response == SimResponse(
        CHECK_CONDITION, b"\x70\x00\x03" + bytes(93), 200, pattern(200, 8)
    )


def test_read_len_is_checked() -> None:
    sim, ring = pair()
    sim.submit(make_cdb(READ10), data_in_len=512)
    cmd = one(ring)
    for bad in (0, 513, -1):
        with pytest.raises(RingUsageError, match="read_len"):
            ring.complete(cmd, read_len=bad)
    without = SimKernel(flags=ALL_CAPS & ~CAP_READ_LEN)
    ring2 = TcmuRing(without.buffer)
    without.submit(make_cdb(READ10), data_in_len=512)
    with pytest.raises(RingUsageError, match="CAP_READ_LEN"):
        ring2.complete(one(ring2), read_len=10)


@pytest.mark.parametrize(
    ("status", "sense", "match"),
    [
        (256, b"", "does not fit a byte"),
        (-1, b"", "does not fit a byte"),
        (CHECK_CONDITION, bytes(97), "97 bytes of sense"),
        (GOOD, b"\x70", "only delivers sense data with CHECK CONDITION"),
    ],
)
def test_bad_responses_are_refused_and_nothing_is_written(
    status: int, sense: bytes, match: str
) -> None:
    sim, ring = pair()
    sim.submit(make_cdb(TUR))
    cmd = one(ring)
    before = bytes(sim.buffer[: sim.data_off])
    with pytest.raises(RingUsageError, match=match):
        ring.complete(cmd, status, sense)
    assert bytes(sim.buffer[: sim.data_off]) == before
    assert cmd.outstanding


def test_a_command_is_completed_once_by_the_ring_that_read_it() -> None:
    sim, ring = pair()
    sim.submit(make_cdb(READ10), data_in_len=10)
    cmd = one(ring)
    ring.complete(cmd)
    with pytest.raises(RingUsageError, match="not outstanding"):
        ring.complete(cmd)
    with pytest.raises(RingUsageError, match="belong to the kernel"):
        cmd.write_data_in(b"late")
    with pytest.raises(RingUsageError, match="belong to the kernel"):
        cmd.data_out()
    other_sim, other = pair()
    other_sim.submit(make_cdb(TUR))
    foreign = one(other)
    with pytest.raises(RingUsageError, match="not outstanding"):
        ring.complete(foreign)
    kick(sim, ring)
    sim.check_idle()


def test_read_only_buffer_is_refused() -> None:
    sim = SimKernel()
    with pytest.raises(RingUsageError, match="writable"):
        TcmuRing(bytes(sim.buffer))  # type: ignore[arg-type]


def test_unknown_opcode_is_flagged_and_skipped() -> None:
    sim, ring = pair()
    sim.submit(make_cdb(TUR))
    at = CMDR_OFF
    len_op = struct.unpack_from("=I", sim.buffer, at)[0]
    struct.pack_into("=I", sim.buffer, at, (len_op & ~7) | 5)
    [entry] = ring.poll()
    assert entry == UnknownEntry(0, 5, 120)
    assert sim.buffer[at + HDR_UFLAGS] & UFlag.UNKNOWN_OP
    assert ring.mailbox().cmd_tail == 120 and ring.take_notify()


def test_poison_is_never_decoded() -> None:
    """Sanity check of the simulator: free ring space holds the poison byte."""
    sim, _ = pair(cmdr_size=256)
    assert bytes(sim.buffer[CMDR_OFF : sim.data_off]) == bytes([POISON]) * 256
