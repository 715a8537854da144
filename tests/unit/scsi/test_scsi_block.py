"""The SBC-3 data path: READ/WRITE/VERIFY/SYNCHRONIZE CACHE/READ CAPACITY, issue order,
FUA pass-through, Data-Out length handling and error mapping."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from helpers.scsi_testlib import (
    be,
    field_pointer,
    read6,
    read10,
    read12,
    read16,
    read_capacity16,
    run,
    sense_of,
    write6,
    write10,
    write12,
    write16,
)

from targetcli_preserve._errors import ProtocolError
from targetcli_preserve.scsi.target import ScsiStatus

BS = 512
NB = 2048
LBA_OOB = (0x05, 0x21, 0x00)
INVALID_FIELD = (0x05, 0x24, 0x00)


def pattern(n_blocks: int, seed: int = 1) -> bytes:
    return bytes((seed + i) % 251 for i in range(n_blocks * BS))


async def later(data: bytes) -> bytes:
    await asyncio.sleep(0)
    return data


def verify10(lba: int, n: int, bytchk: int = 0) -> bytes:
    return bytes((0x2F, bytchk << 1)) + be(lba, 4) + b"\x00" + be(n, 2) + b"\x00"


def verify16(lba: int, n: int, bytchk: int = 0) -> bytes:
    return bytes((0x8F, bytchk << 1)) + be(lba, 8) + be(n, 4) + b"\x00\x00"


def sync10(lba: int = 0, n: int = 0, immed: bool = False) -> bytes:
    return bytes((0x35, 0x02 if immed else 0)) + be(lba, 4) + b"\x00" + be(n, 2) + b"\x00"


def sync16(lba: int = 0, n: int = 0) -> bytes:
    return bytes((0x91, 0)) + be(lba, 8) + be(n, 4) + b"\x00\x00"


# --- READ CAPACITY ------------------------------------------------------------------


async def test_read_capacity10(target):
    r = await run(target, bytes((0x25,)) + bytes(9))
    assert r.data == be(NB - 1, 4) + be(BS, 4)


async def test_read_capacity16(target):
    r = await run(target, read_capacity16(32))
    assert r.data == be(NB - 1, 8) + be(BS, 4) + bytes(20)


@pytest.mark.parametrize("alloc", range(0, 33, 4))
async def test_read_capacity16_allocation_length(target, alloc):
    r = await run(target, read_capacity16(alloc))
    assert r.status is ScsiStatus.GOOD
    assert r.data == (be(NB - 1, 8) + be(BS, 4) + bytes(20))[:alloc]


async def test_read_capacity10_saturates():
    from helpers.memstore import MemoryStore
    from helpers.scsi_testlib import make_target

    store = MemoryStore(num_blocks=1)
    store.num_blocks = 2**32 + 5
    t = make_target(store)
    r = await run(t, bytes((0x25,)) + bytes(9))
    assert r.data == b"\xff\xff\xff\xff" + be(BS, 4)
    r = await run(t, read_capacity16())
    assert r.data[:8] == be(2**32 + 4, 8)


# --- READ / WRITE round trips -------------------------------------------------------

WRITERS_READERS = [
    (write6, read6),
    (write10, read10),
    (write12, read12),
    (write16, read16),
]


@pytest.mark.parametrize("write,read", WRITERS_READERS)
async def test_write_then_read(target, store, write, read):
    data = pattern(3)
    r = await run(target, write(10, 3), data)
    assert r.status is ScsiStatus.GOOD and r.data == b""
    assert store.data[10 * BS : 13 * BS] == data
    r = await run(target, read(10, 3))
    assert r.status is ScsiStatus.GOOD and r.data == data


async def test_read6_zero_means_256_blocks(target, store):
    r = await run(target, read6(0, 0))
    assert len(r.data) == 256 * BS
    assert store.issued == [("read", 0, 256)]


async def test_write6_zero_means_256_blocks(target, store):
    r = await run(target, write6(0, 0), pattern(256))
    assert r.status is ScsiStatus.GOOD
    assert store.issued == [("write", 0, 256)]


@pytest.mark.parametrize("build", [read10, read12, read16, write10, write12, write16])
async def test_zero_transfer_length_is_not_an_error(target, store, build):
    r = await run(target, build(5, 0))
    assert r.status is ScsiStatus.GOOD and r.data == b""
    assert store.issued == []


# --- issue order: the store is called inside execute, not when awaited ---------------


async def test_execute_issues_synchronously_in_call_order(target, store):
    a = target.execute(0, write10(1, 1), later(pattern(1)), BS)
    b = target.execute(0, read10(1, 1), None, 0)
    c = target.execute(0, sync10(), None, 0)
    d = target.execute(0, write16(7, 2, 0x08), pattern(2), 2 * BS)
    assert store.issued == [("write", 1, 1), ("read", 1, 1), ("flush", 0, 0), ("write", 7, 2)]
    results = await asyncio.gather(a, b, c, d)
    assert [r.status for r in results] == [ScsiStatus.GOOD] * 4


async def test_data_out_awaitable_passed_straight_to_store(target, store):
    pending = later(pattern(2))
    aw = target.execute(0, write10(0, 2), pending, 2 * BS)
    assert store.data_args == [pending]  # the very object, not awaited first
    assert (await aw).status is ScsiStatus.GOOD
    assert store.data[: 2 * BS] == pattern(2)


async def test_longer_data_out_is_cut_to_transfer_length(target, store):
    r = await run(target, write10(0, 1), later(pattern(2)), length=2 * BS)
    assert r.status is ScsiStatus.GOOD
    assert store.data[:BS] == pattern(2)[:BS]
    assert store.data[BS : 2 * BS] == bytes(BS)
    r = await run(target, write10(4, 1), pattern(2))
    assert store.data[4 * BS : 5 * BS] == pattern(2)[:BS]


@pytest.mark.parametrize("data,length", [(b"x" * 200, 200), (b"x" * 700, 700)])
async def test_data_out_ending_inside_a_block_is_rejected_without_writing(
    target, store, data, length
):
    r = await run(target, write10(0, 2), data, length)
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r) == (0x05, 0x0E, 0x03)  # INVALID FIELD IN INFORMATION UNIT
    assert r.data_out_expected == 2 * BS  # the transport still reports the residual
    assert store.issued == []


@pytest.mark.parametrize("data,length", [(None, 0), (b"", 0)])
async def test_no_data_out_writes_nothing_and_is_good(target, store, data, length):
    # RFC 7143 11.4.5.1 / libiscsi's WRITE residual tests: GOOD, overflow residual.
    r = await run(target, write10(0, 1), data, length)
    assert r.status is ScsiStatus.GOOD
    assert r.data_out_expected == BS
    assert store.issued == []


async def test_fewer_whole_blocks_of_data_out_write_only_those(target, store):
    store.data[: 2 * BS] = b"a" * (2 * BS)
    r = await run(target, write10(0, 2), b"b" * BS)
    assert r.status is ScsiStatus.GOOD and r.data_out_expected == 2 * BS
    assert store.issued == [("write", 0, 1)]
    assert store.data[: 2 * BS] == b"b" * BS + b"a" * BS


async def test_fewer_whole_blocks_from_an_awaitable(target, store):
    r = await target.execute(0, write10(4, 3), later(pattern(2)), 2 * BS)
    assert r.status is ScsiStatus.GOOD
    assert store.issued == [("write", 4, 2)]
    assert store.data[4 * BS : 6 * BS] == pattern(2)
    assert store.data[6 * BS : 7 * BS] == bytes(BS)


async def test_short_awaitable_data_out_is_not_awaited(target, store):
    pending = later(pattern(1))
    r = await target.execute(0, write10(0, 2), pending, BS + 1)
    assert sense_of(r) == (0x05, 0x0E, 0x03)
    assert store.issued == []
    assert inspect.getcoroutinestate(pending) == inspect.CORO_CREATED  # never started
    pending.close()


async def test_out_of_range_is_checked_on_the_whole_cdb_range(target, store):
    # the CDB runs past the end even though the offered Data-Out would not
    r = await run(target, write10(NB - 1, 2), pattern(1))
    assert sense_of(r) == LBA_OOB
    assert r.data_out_expected == 2 * BS
    assert store.issued == []


@pytest.mark.parametrize(
    "cdb,data,expected",
    [
        (write10(0, 3), pattern(1), 3 * BS),
        (write10(0, 0), pattern(1), 0),
        (read10(0, 1), None, 0),
        (verify10(0, 2, bytchk=1), pattern(2), 2 * BS),
        (verify10(0, 2), None, 0),
    ],
)
async def test_data_out_expected_is_reported(target, cdb, data, expected):
    r = await run(target, cdb, data)
    assert r.data_out_expected == expected


@pytest.mark.parametrize("cdb", [b"\xff" + bytes(9), bytes((0x2A, 0xE0)) + bytes(8)])
async def test_undecodable_cdb_reports_no_data_out_expectation(target, cdb):
    r = await run(target, cdb, pattern(1))
    assert r.status is ScsiStatus.CHECK_CONDITION and r.data_out_expected is None


# --- FUA / DPO ------------------------------------------------------------------------


@pytest.mark.parametrize("build", [write10, write12, write16])
@pytest.mark.parametrize("flags,fua", [(0x00, False), (0x08, True), (0x10, False), (0x1A, True)])
async def test_fua_passed_to_store(target, store, build, flags, fua):
    r = await run(target, build(0, 1, flags), pattern(1))
    assert r.status is ScsiStatus.GOOD
    assert store.fua == [fua]


async def test_write6_has_no_fua(target, store):
    await run(target, write6(0, 1), pattern(1))
    assert store.fua == [False]


@pytest.mark.parametrize("build", [read10, read12, read16])
async def test_read_dpo_fua_accepted(target, build):
    r = await run(target, build(0, 1, 0x18))
    assert r.status is ScsiStatus.GOOD and len(r.data) == BS


# --- LBA range and transfer length limits --------------------------------------------


@pytest.mark.parametrize("build", [read10, read12, read16])
@pytest.mark.parametrize(
    "lba,n", [(NB, 1), (NB - 1, 2), (NB + 1, 0), (NB, 0), (0x80000000, 1), (0xFFFFFFFF, 1)]
)
async def test_read_out_of_range(target, store, build, lba, n):
    r = await run(target, build(lba, n))
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r) == LBA_OOB
    assert store.issued == []


async def test_read16_lba_wraparound(target):
    r = await run(target, read16(2**64 - 1, 1))
    assert sense_of(r) == LBA_OOB
    r = await run(target, read16(2**63, 1))
    assert sense_of(r) == LBA_OOB


@pytest.mark.parametrize("build", [write10, write12, write16])
async def test_write_out_of_range_does_not_touch_data_out(target, store, build):
    pending = later(pattern(2))
    r = await target.execute(0, build(NB - 1, 2), pending, 2 * BS)
    assert sense_of(r) == LBA_OOB
    assert store.issued == [] and store.data_args == []
    assert inspect.getcoroutinestate(pending) == inspect.CORO_CREATED
    pending.close()


async def test_last_block_is_in_range(target, store):
    r = await run(target, read10(NB - 1, 1))
    assert r.status is ScsiStatus.GOOD
    r = await run(target, write6(NB - 1, 1), pattern(1))
    assert r.status is ScsiStatus.GOOD


async def test_read6_out_of_range(target):
    assert sense_of(await run(target, read6(NB - 255, 0))) == LBA_OOB


async def test_transfer_length_above_maximum(store):
    from helpers.memstore import MemoryStore
    from helpers.scsi_testlib import make_target

    big = MemoryStore(num_blocks=40000)
    t = make_target(big)
    limit = 8 * 1024 * 1024 // BS
    r = await run(t, read10(0, limit + 1))
    assert sense_of(r) == INVALID_FIELD
    assert field_pointer(r) == (7, None)
    r = await run(t, read16(0, limit + 1))
    assert field_pointer(r) == (10, None)
    r = await run(t, write12(0, limit + 1), pattern(1))
    assert field_pointer(r) == (6, None)
    assert big.issued == []
    r = await run(t, read10(0, limit))
    assert r.status is ScsiStatus.GOOD and len(r.data) == limit * BS


# --- VERIFY -----------------------------------------------------------------------------


async def test_verify_without_compare(target, store):
    r = await run(target, verify10(3, 4))
    assert r.status is ScsiStatus.GOOD and r.data == b""
    assert store.issued == [("read", 3, 4)]


async def test_verify_zero_blocks(target, store):
    assert (await run(target, verify16(3, 0, bytchk=1))).status is ScsiStatus.GOOD
    assert store.issued == []


@pytest.mark.parametrize("build", [verify10, verify16])
async def test_verify_compare_match(target, store, build):
    store.data[2 * BS : 4 * BS] = pattern(2)
    r = await run(target, build(2, 2, bytchk=1), later(pattern(2)), 2 * BS)
    assert r.status is ScsiStatus.GOOD


async def test_verify_compare_miscompare_reports_offset(target, store):
    store.data[0 : 2 * BS] = pattern(2)
    data = bytearray(pattern(2))
    data[700] ^= 0x55
    r = await run(target, verify10(0, 2, bytchk=1), bytes(data))
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r) == (0x0E, 0x1D, 0x00)
    assert r.sense[0] == 0xF0  # INFORMATION valid
    assert int.from_bytes(r.sense[3:7], "big") == 700


async def test_verify_out_of_range(target):
    assert sense_of(await run(target, verify10(NB, 1))) == LBA_OOB


async def test_verify_compare_short_data_out(target):
    r = await run(target, verify10(0, 2, bytchk=1), pattern(1))
    assert sense_of(r) == (0x05, 0x0E, 0x03)


# --- SYNCHRONIZE CACHE --------------------------------------------------------------


@pytest.mark.parametrize("cdb", [sync10(), sync16(), sync10(10, 5), sync16(NB - 1, 1)])
async def test_synchronize_cache_flushes(target, store, cdb):
    r = await run(target, cdb)
    assert r.status is ScsiStatus.GOOD
    assert store.flushes == 1


@pytest.mark.parametrize("cdb", [sync10(NB, 0), sync10(NB - 1, 2), sync16(2**64 - 1, 1)])
async def test_synchronize_cache_out_of_range(target, store, cdb):
    assert sense_of(await run(target, cdb)) == LBA_OOB
    assert store.issued == []


async def test_synchronize_cache_immed_returns_before_flush_completes(target, store):
    r = await run(target, sync10(immed=True))
    assert r.status is ScsiStatus.GOOD
    assert store.issued == [("flush", 0, 0)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert store.flushes == 1


# --- error mapping (DESIGN rule 10) -------------------------------------------------


async def test_read_backend_error_is_medium_error(target, store):
    store.fail.add("read")
    r = await run(target, read10(0, 1))
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r) == (0x03, 0x11, 0x00)
    assert r.data == b""


async def test_write_backend_error_is_medium_error(target, store):
    store.fail.add("write")
    r = await run(target, write10(0, 1, 0x08), pattern(1))
    assert sense_of(r) == (0x03, 0x0C, 0x00)


async def test_flush_backend_error_is_medium_error(target, store):
    store.fail.add("flush")
    assert sense_of(await run(target, sync16())) == (0x03, 0x0C, 0x00)


async def test_verify_backend_error_is_medium_error(target, store):
    store.fail.add("read")
    assert sense_of(await run(target, verify10(0, 1))) == (0x03, 0x11, 0x00)


async def test_lost_data_out_is_aborted_command(target, store):
    async def broken() -> bytes:
        raise ProtocolError("connection dropped during Data-Out")

    r = await run(target, write10(0, 1), broken(), BS)
    assert sense_of(r) == (0x0B, 0x4B, 0x00)


async def test_unexpected_store_exception_is_internal_target_failure(target, store):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    store.read = boom  # type: ignore[method-assign]
    r = await run(target, read10(0, 1))
    assert sense_of(r) == (0x04, 0x44, 0x00)


async def test_short_read_from_store_is_medium_error(target, store):
    async def short() -> bytes:
        return b"\x00" * 100

    store.read = lambda lba, n: short()  # type: ignore[method-assign]
    r = await run(target, read10(0, 1))
    assert sense_of(r) == (0x03, 0x11, 0x00)
    assert r.data == b""
