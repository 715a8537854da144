"""A malformed ring is a RingError naming the field, never an out-of-bounds access: each
field the kernel writes is broken in turn, starting from a valid ring the simulated
kernel laid out. Then hypothesis breaks random bytes."""

from __future__ import annotations

import struct

import pytest
from helpers.tcmu_sim import (
    CMDR_OFF,
    HDR_CMD_ID,
    HDR_LEN_OP,
    MB_CMD_HEAD,
    MB_CMD_TAIL,
    MB_CMDR_OFF,
    MB_CMDR_SIZE,
    MB_VERSION,
    REQ_CDB_OFF,
    REQ_IOV,
    REQ_IOV_BIDI_CNT,
    REQ_IOV_CNT,
    REQ_IOV_DIF_CNT,
    TMR_CMD_CNT,
    SimKernel,
    make_cdb,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve._errors import PreserveError, ProtocolError
from targetcli_preserve.tcmu import Command, RingError, TcmuRing, read_mailbox

READ10, WRITE10 = 0x28, 0x2A


def put(sim: SimKernel, at: int, fmt: str, value: int) -> None:
    struct.pack_into("=" + fmt, sim.buffer, at, value)


def get(sim: SimKernel, at: int, fmt: str) -> int:
    return int(struct.unpack_from("=" + fmt, sim.buffer, at)[0])


def entry_at(sim: SimKernel, n: int = 0) -> int:
    """Absolute offset of the n-th command's entry."""
    entry = sim.commands[n].entry
    assert entry is not None
    return CMDR_OFF + entry


def two_commands() -> SimKernel:
    sim = SimKernel(block_size=512)
    sim.submit(make_cdb(WRITE10), data_out=bytes(1500))
    sim.submit(make_cdb(READ10), data_in_len=700)
    return sim


def poll_error(sim: SimKernel, ring: TcmuRing | None = None) -> RingError:
    """Poll until the error: the entries before a bad one are delivered first."""
    ring = ring or TcmuRing(sim.buffer)
    with pytest.raises(RingError) as info:
        for _ in range(3):
            ring.poll()
    return info.value


# --- the mailbox -----------------------------------------------------------------------


def test_buffer_too_small_for_a_mailbox() -> None:
    with pytest.raises(RingError, match="mailbox"):
        read_mailbox(bytearray(67))


@pytest.mark.parametrize(
    ("at", "fmt", "value", "field"),
    [
        (MB_VERSION, "H", 1, "version"),
        (MB_VERSION, "H", 3, "version"),
        (MB_CMDR_OFF, "I", 0x10, "cmdr_off"),
        (MB_CMDR_OFF, "I", 0x84, "cmdr_off"),
        (MB_CMDR_OFF, "I", 0xFFFFFFF8, "cmdr_off"),
        (MB_CMDR_OFF, "I", 264992, "cmdr_size"),  # the ring would end past the map
        (MB_CMDR_SIZE, "I", 0, "cmdr_size"),
        (MB_CMDR_SIZE, "I", 4092, "cmdr_size"),
        (MB_CMDR_SIZE, "I", 1 << 20, "cmdr_size"),
        (MB_CMD_HEAD, "I", 3968, "cmd_head"),
        (MB_CMD_HEAD, "I", 4, "cmd_head"),
        (MB_CMD_TAIL, "I", 0xFFFFFFF0, "cmd_tail"),
        (MB_CMD_TAIL, "I", 12, "cmd_tail"),
    ],
)
def test_bad_mailbox_field(at: int, fmt: str, value: int, field: str) -> None:
    sim = SimKernel(cmdr_size=4096 - 128)
    put(sim, at, fmt, value)
    with pytest.raises(RingError) as info:
        TcmuRing(sim.buffer)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, PreserveError)


def test_cmd_head_out_of_the_ring_later() -> None:
    sim = two_commands()
    ring = TcmuRing(sim.buffer)
    put(sim, MB_CMD_HEAD, "I", 0x100000)
    assert poll_error(sim, ring).field == "cmd_head"
    put(sim, MB_CMD_HEAD, "I", 0x101)
    assert poll_error(sim, ring).field == "cmd_head"


def test_cmd_head_moving_back_over_read_entries() -> None:
    sim = two_commands()
    ring = TcmuRing(sim.buffer)
    assert len(ring.poll()) == 2
    put(sim, MB_CMD_HEAD, "I", entry_at(sim, 1) - CMDR_OFF)
    err = poll_error(sim, ring)
    assert err.field == "cmd_head" and "moved back" in str(err)


def test_cmd_tail_changed_behind_the_codecs_back() -> None:
    """E.g. the kernel's reset_ring: the codec's state no longer matches the ring."""
    sim = two_commands()
    ring = TcmuRing(sim.buffer)
    put(sim, MB_CMD_TAIL, "I", 8)
    err = poll_error(sim, ring)
    assert err.field == "cmd_tail" and "reset" in str(err)


# --- the entry header ------------------------------------------------------------------


def test_zero_length_entry() -> None:
    sim = two_commands()
    put(sim, entry_at(sim) + HDR_LEN_OP, "I", 0 | 1)
    err = poll_error(sim)
    assert (err.field, err.entry) == ("len_op", 0)
    assert "zero-length" in str(err) and "ring offset 0x0" in str(err)


def test_entry_longer_than_what_the_kernel_queued() -> None:
    sim = two_commands()
    head = sim.head
    put(sim, entry_at(sim, 1) + HDR_LEN_OP, "I", (head + 8) | 1)
    err = poll_error(sim)
    assert err.field == "len_op" and "past cmd_head" in str(err)


def test_entry_crossing_the_end_of_the_ring() -> None:
    sim = SimKernel(cmdr_size=1024)
    for _ in range(8):
        sim.submit(make_cdb(0x00))  # 8 * 120 bytes
    ring = TcmuRing(sim.buffer)
    for cmd in ring.poll():
        assert isinstance(cmd, Command)
        ring.complete(cmd)
    sim.irq()
    sim.submit(make_cdb(0x00))  # PAD of 64 at 960, then the entry at 0
    pad = CMDR_OFF + 960
    assert get(sim, pad, "I") == 64
    put(sim, pad + HDR_LEN_OP, "I", 128)
    err = poll_error(sim, ring)
    assert (err.field, err.entry) == ("len_op", 960) and "wraps" in str(err)


def test_command_entry_too_short_for_a_response() -> None:
    sim = two_commands()
    put(sim, entry_at(sim) + HDR_LEN_OP, "I", 104 | 1)
    err = poll_error(sim)
    assert err.field == "len_op" and "cannot hold a response" in str(err)


def test_command_id_zero() -> None:
    sim = two_commands()
    put(sim, entry_at(sim) + HDR_CMD_ID, "H", 0)
    assert poll_error(sim).field == "cmd_id"


def test_command_id_already_outstanding() -> None:
    sim = two_commands()
    put(sim, entry_at(sim, 1) + HDR_CMD_ID, "H", 1)
    ring = TcmuRing(sim.buffer)
    [first] = ring.poll()  # the good entry before the bad one is delivered
    assert isinstance(first, Command) and first.cmd_id == 1
    err = poll_error(sim, ring)
    assert err.field == "cmd_id" and "already outstanding" in str(err)
    assert poll_error(sim, ring).field == "cmd_id"  # and stays an error


# --- the request -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "value", "field"),
    [
        (REQ_IOV_DIF_CNT, 1, "iov_dif_cnt"),
        (REQ_IOV_CNT, 0xFFFFFFFF, "iov_cnt"),
        (REQ_IOV_CNT, 6, "iov_cnt"),  # 48 + 6 * 16 > 128
        (REQ_IOV_BIDI_CNT, 5, "iov_bidi_cnt"),
        (REQ_IOV_BIDI_CNT, 0xFFFFFFFF, "iov_bidi_cnt"),
    ],
)
def test_bad_iovec_counts(at: int, value: int, field: str) -> None:
    sim = two_commands()
    put(sim, entry_at(sim) + at, "I", value)
    assert poll_error(sim).field == field


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        ("base", 0, "iov[0].iov_base"),  # the mailbox
        ("base", CMDR_OFF, "iov[0].iov_base"),  # the command ring
        ("base", 4095, "iov[0].iov_base"),  # last byte of the ring
        ("base", 4096 + 64 * 4096 + 1, "iov[0].iov_base"),  # past the map
        ("base", 2**64 - 1, "iov[0].iov_base"),
        ("len", 64 * 4096 + 1, "iov[0].iov_len"),
        ("len", 2**64 - 1, "iov[0].iov_len"),
    ],
)
def test_bad_iovec(where: str, value: int, field: str) -> None:
    sim = SimKernel()
    sim.submit(make_cdb(WRITE10), data_out=bytes(100))
    iov = entry_at(sim) + REQ_IOV
    put(sim, iov + (0 if where == "base" else 8), "Q", value)
    err = poll_error(sim)
    assert err.field == field, err


def test_iovec_may_end_exactly_at_the_end_of_the_map() -> None:
    sim = SimKernel(data_blocks=4)
    sim.submit(make_cdb(WRITE10), data_out=bytes(100))
    iov = entry_at(sim) + REQ_IOV
    put(sim, iov, "Q", sim.map_size - 100)
    [cmd] = TcmuRing(sim.buffer).poll()
    assert isinstance(cmd, Command) and len(cmd.data_out()) == 100


def test_second_iovec_is_named() -> None:
    sim = SimKernel(block_size=512)
    sim.submit(make_cdb(0x53), data_out=bytes(100), data_in_len=100)  # bidi: 2 iovecs
    put(sim, entry_at(sim) + REQ_IOV + 16, "Q", 8)
    assert poll_error(sim).field == "iov[1].iov_base"


@pytest.mark.parametrize(
    ("delta", "why"),
    [
        (None, "mailbox"),
        (0, "the entry's header"),
        (REQ_IOV + 15, "inside the iovecs"),
        (128, "the next entry"),
        (2**64 - 1, "nowhere"),
    ],
)
def test_cdb_off_outside_its_place(delta: int | None, why: str) -> None:
    sim = two_commands()
    at = entry_at(sim)
    put(sim, at + REQ_CDB_OFF, "Q", 0 if delta is None else (at + delta) % 2**64)
    err = poll_error(sim)
    assert err.field == "cdb_off", why


def test_cdb_running_past_the_entry() -> None:
    sim = two_commands()
    at = entry_at(sim)
    cdb_off = get(sim, at + REQ_CDB_OFF, "Q")
    assert cdb_off == at + 112
    sim.buffer[cdb_off] = 0x88  # now a 16-byte CDB in 16 bytes: still fits
    [c, _] = TcmuRing(sim.buffer).poll()
    assert isinstance(c, Command) and len(c.cdb) == 16
    put(sim, at + REQ_CDB_OFF, "Q", cdb_off + 8)  # 16 bytes from 8 before the end
    sim.buffer[cdb_off + 8] = 0x88
    assert poll_error(sim).field == "cdb_off"


def test_variable_length_cdb_running_past_the_entry() -> None:
    sim = two_commands()
    at = entry_at(sim)
    cdb_off = get(sim, at + REQ_CDB_OFF, "Q")
    sim.buffer[cdb_off] = 0x7F
    sim.buffer[cdb_off + 7] = 9  # 17 bytes in 16
    err = poll_error(sim)
    assert err.field == "cdb_off" and "17-byte CDB" in str(err)
    put(sim, at + REQ_CDB_OFF, "Q", cdb_off + 12)  # header itself cut off
    sim.buffer[cdb_off + 12] = 0x7F
    err = poll_error(sim)
    assert err.field == "cdb_off" and "header" in str(err)


def test_vendor_cdb_of_six_bytes_is_accepted() -> None:
    """Groups 6 and 7 are vendor specific; a kernel that copies 6 bytes leaves room for 8."""
    sim = two_commands()
    at = entry_at(sim)
    cdb_off = get(sim, at + REQ_CDB_OFF, "Q")
    put(sim, at + REQ_CDB_OFF, "Q", cdb_off + 8)
    sim.buffer[cdb_off + 8 : cdb_off + 16] = bytes([0xC5, 1, 2, 3, 4, 5, 0, 0])
    [c, _] = TcmuRing(sim.buffer).poll()
    assert isinstance(c, Command) and c.cdb == bytes([0xC5, 1, 2, 3, 4, 5])


# --- TMR -------------------------------------------------------------------------------


def test_tmr_entry_too_short() -> None:
    sim = SimKernel()
    sim.tmr(1, [])
    put(sim, CMDR_OFF + HDR_LEN_OP, "I", 24 | 2)
    err = poll_error(sim)
    assert err.field == "len_op" and "TMR" in str(err)


def test_tmr_with_more_ids_than_its_entry_holds() -> None:
    sim = SimKernel()
    sim.tmr(5, [])
    put(sim, CMDR_OFF + TMR_CMD_CNT, "I", 1)
    assert poll_error(sim).field == "cmd_cnt"
    put(sim, CMDR_OFF + TMR_CMD_CNT, "I", 0xFFFFFFFF)
    assert poll_error(sim).field == "cmd_cnt"


# --- whatever the bytes ----------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pokes=st.lists(
        st.tuples(st.integers(0, 128 + 1024 - 1), st.integers(0, 255)), min_size=1, max_size=12
    ),
    completed=st.integers(0, 6),
)
def test_random_corruption_is_a_ring_error_or_stays_in_bounds(
    pokes: list[tuple[int, int]], completed: int
) -> None:
    """Commands decoded from any bytes only point into the data area."""
    sim = SimKernel(cmdr_size=1024, block_size=512, data_blocks=16)
    ring = TcmuRing(sim.buffer)
    for i in range(6):  # some traffic first, so that entries wrap
        sim.submit(make_cdb(0x7F if i % 2 else WRITE10, 3 * i), data_out=bytes(300 * i + 1))
    for entry in ring.poll()[:completed]:
        assert isinstance(entry, Command)
        ring.complete(entry)
    if ring.take_notify():
        sim.irq()
    for _ in range(4):
        sim.submit(make_cdb(READ10), data_in_len=700)
    for at, value in pokes:
        sim.buffer[at] = value
    try:
        ring = TcmuRing(sim.buffer) if pokes[0][0] % 2 else ring
        for _ in range(3):
            for entry in ring.poll():
                if isinstance(entry, Command):
                    for iov in entry.iovecs + entry.bidi_iovecs:
                        assert sim.data_off <= iov.offset
                        assert iov.offset + iov.length <= sim.map_size
                    assert entry.cdb and len(entry.cdb) <= 263
                    entry.data_out()
                    entry.write_data_in(bytes(entry.data_in_length))
                    ring.complete(entry)
    except RingError as err:
        assert err.field in str(err)
