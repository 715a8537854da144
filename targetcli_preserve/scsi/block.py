"""The SBC-3 data path: READ, WRITE, VERIFY, SYNCHRONIZE CACHE and READ CAPACITY.

Each handler checks its CDB against the logical unit (transfer length limit, LBA
range, Data-Out length), then *issues* the command to the BlockStore synchronously
(DESIGN rule 1: the caller's order is the issue order) and returns an awaitable that
completes it. Storage failures (BackendError) become MEDIUM ERROR (DESIGN rule 10).
Handlers answer with Data-In bytes or raise :class:`~.sense.SenseError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine

from .._errors import BackendError, ProtocolError
from .cdb import ByteCheck, Read, ReadCapacity16, SynchronizeCache, Verify, Write
from .lu import LogicalUnit
from .sense import Asc, SenseError, SenseKey, illegal, invalid_field

log = logging.getLogger(__name__)

DataOut = bytes | bytearray | memoryview | Awaitable[bytes] | None

_RC10_SATURATED = 0xFFFFFFFF  # SBC-3 5.15: "use READ CAPACITY(16)"
_READ_CAPACITY_16_LENGTH = 32
# Background tasks for SYNCHRONIZE CACHE with IMMED=1 (kept referenced until done).
_immediate_flushes: set[asyncio.Future[None]] = set()


def _check_transfer(lu: LogicalUnit, lba: int, blocks: int, length_byte: int) -> None:
    # SBC-3 5.x (READ/WRITE/VERIFY): a TRANSFER LENGTH above the MAXIMUM TRANSFER LENGTH
    # of the Block Limits VPD page is INVALID FIELD IN CDB.
    if blocks > lu.max_transfer_blocks:
        raise invalid_field(length_byte)
    _check_range(lu, lba, blocks)


def _check_range(lu: LogicalUnit, lba: int, blocks: int) -> None:
    # SBC-3 4.5: an LBA past the last one, or a range running past it, is
    # LOGICAL BLOCK ADDRESS OUT OF RANGE (even for a transfer length of 0).
    if lba >= lu.num_blocks or lba + blocks > lu.num_blocks:
        raise illegal(Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)


def _available(data_out: DataOut, data_out_length: int) -> int:
    if data_out is None:
        return 0
    if isinstance(data_out, (bytes, bytearray, memoryview)):
        return len(data_out)
    return data_out_length


def _take(data_out: DataOut, data_out_length: int, n: int) -> bytes | Awaitable[bytes]:
    """The first ``n`` bytes of Data-Out (``n`` <= what is available). An awaitable of
    exactly the right length goes to the store untouched."""
    if isinstance(data_out, (bytes, bytearray, memoryview)):
        return bytes(data_out[:n])
    assert data_out is not None
    if data_out_length == n:
        return data_out
    return _first_bytes(data_out, n)


def _short_data_out() -> SenseError:
    # Raised before the Data-Out is touched: an awaitable stays un-awaited (the caller's).
    return SenseError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_INFORMATION_UNIT)


def _data_out_bytes(
    lu: LogicalUnit, blocks: int, data_out: DataOut, data_out_length: int
) -> bytes | Awaitable[bytes]:
    """Exactly ``blocks`` blocks of Data-Out, or SenseError if fewer were sent (for
    commands that cannot do with less, e.g. VERIFY with BYTCHK=01b: comparing fewer
    blocks than asked and answering GOOD would claim a check that never happened)."""
    need = blocks * lu.block_size
    if _available(data_out, data_out_length) < need:
        raise _short_data_out()
    return _take(data_out, data_out_length, need)


async def _first_bytes(data: Awaitable[bytes], n: int) -> bytes:
    return bytes((await data)[:n])


def read(lu: LogicalUnit, cmd: Read) -> bytes | Awaitable[bytes]:
    """READ(6/10/12/16), SBC-3 5.8-5.11. A transfer length of 0 reads nothing."""
    _check_transfer(lu, cmd.lba, cmd.blocks, cmd.length_byte)
    if cmd.blocks == 0:
        return b""
    return _finish_read(lu.store.read(cmd.lba, cmd.blocks), cmd.blocks * lu.block_size)


async def _finish_read(pending: Awaitable[bytes], expected_length: int) -> bytes:
    try:
        data = bytes(await pending)
    except BackendError as err:
        log.warning("read failed: %s", err)
        raise SenseError(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR) from err
    if len(data) != expected_length:
        # never hand the initiator a short or padded buffer as if it were the blocks
        log.error("store returned %d bytes for a %d-byte read", len(data), expected_length)
        raise SenseError(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR)
    return data


def write(
    lu: LogicalUnit, cmd: Write, data_out: DataOut, data_out_length: int
) -> bytes | Awaitable[bytes]:
    """WRITE(6/10/12/16), SBC-3 5.31-5.34. FUA=1 asks the store for a durable write.

    The Data-Out the initiator offers (``data_out_length``, iSCSI's Expected Data
    Transfer Length) may differ from the CDB's TRANSFER LENGTH (SAM-5 5.4.3). The
    device server transfers the smaller of the two and the transport reports the rest
    as a residual (RFC 7143 11.4.5.1, from ``CommandResult.data_out_expected``):

    * more Data-Out than the CDB needs: the first TRANSFER LENGTH blocks are written,
      the excess is ignored (underflow residual);
    * less, in whole blocks: those blocks are written, from the CDB's LBA on, and the
      command completes with GOOD (overflow residual: the initiator learns that the
      rest was never transferred). Zero bytes write nothing. This is what libiscsi's
      residual tests and tgtd do;
    * less, ending inside a block: nothing is written (a part of a logical block can
      not be written) and the command fails with ILLEGAL REQUEST / INVALID FIELD IN
      INFORMATION UNIT, the other outcome libiscsi accepts (and LIO's answer).

    The CDB itself (LBA range, TRANSFER LENGTH limit) is checked in full first."""
    _check_transfer(lu, cmd.lba, cmd.blocks, cmd.length_byte)
    blocks = cmd.blocks
    if blocks == 0:
        return b""  # SBC-3: not an error, no data transferred
    have = _available(data_out, data_out_length)
    if have < blocks * lu.block_size:
        if have % lu.block_size:
            raise _short_data_out()
        blocks = have // lu.block_size
        if blocks == 0:
            return b""
    data = _take(data_out, data_out_length, blocks * lu.block_size)
    return _finish_write(lu.store.write(cmd.lba, blocks, data, fua=cmd.fua))


async def _finish_write(pending: Awaitable[None]) -> bytes:
    try:
        await pending
    except BackendError as err:
        log.warning("write failed: %s", err)
        raise SenseError(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from err
    except ProtocolError as err:  # the transport lost the Data-Out on the way
        raise SenseError(SenseKey.ABORTED_COMMAND, Asc.DATA_PHASE_ERROR) from err
    return b""


def verify(
    lu: LogicalUnit, cmd: Verify, data_out: DataOut, data_out_length: int
) -> bytes | Awaitable[bytes]:
    """VERIFY(10/16), SBC-3 5.33-5.34: read the range back; with BYTCHK=01b also
    compare it with the Data-Out buffer (MISCOMPARE on a difference)."""
    _check_transfer(lu, cmd.lba, cmd.blocks, cmd.length_byte)
    if cmd.blocks == 0:
        return b""
    expected = None
    if cmd.bytchk is ByteCheck.COMPARE:
        expected = _data_out_bytes(lu, cmd.blocks, data_out, data_out_length)
    pending = lu.store.read(cmd.lba, cmd.blocks)
    return _finish_verify(pending, cmd.blocks * lu.block_size, expected)


async def _finish_verify(
    pending: Awaitable[bytes], length: int, expected: bytes | Awaitable[bytes] | None
) -> bytes:
    try:
        actual = await _finish_read(pending, length)
    except SenseError:
        if isinstance(expected, Coroutine):  # an un-awaited Data-Out coroutine
            expected.close()
        raise
    if expected is None:
        return b""
    if not isinstance(expected, bytes):
        try:
            expected = bytes(await expected)
        except ProtocolError as err:
            raise SenseError(SenseKey.ABORTED_COMMAND, Asc.DATA_PHASE_ERROR) from err
    if actual != expected:
        # SBC-3 5.33: INFORMATION = offset of the first byte that differs
        offset = next(i for i, (a, b) in enumerate(zip(actual, expected)) if a != b)
        raise SenseError(
            SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY_OPERATION, information=offset
        )
    return b""


def synchronize_cache(lu: LogicalUnit, cmd: SynchronizeCache) -> Awaitable[bytes]:
    """SYNCHRONIZE CACHE(10/16), SBC-3 5.22-5.23: the store flushes everything, which
    covers any range. NUMBER OF LOGICAL BLOCKS 0 means "to the end of the medium"."""
    _check_range(lu, cmd.lba, cmd.blocks)
    return _finish_flush(lu.store.flush(), cmd.immed)


async def _finish_flush(pending: Awaitable[None], immed: bool) -> bytes:
    if immed:
        # SBC-3 5.22: IMMED=1 returns status once the CDB is validated; the flush goes
        # on in the background and a failure is only logged.
        task = asyncio.ensure_future(pending)
        _immediate_flushes.add(task)
        task.add_done_callback(_flush_done)
        return b""
    try:
        await pending
    except BackendError as err:
        log.warning("flush failed: %s", err)
        raise SenseError(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from err
    return b""


def _flush_done(task: asyncio.Future[None]) -> None:
    _immediate_flushes.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("immediate SYNCHRONIZE CACHE failed: %s", task.exception())


def read_capacity_10(lu: LogicalUnit) -> bytes:
    """READ CAPACITY(10) data, SBC-3 5.15.2: last LBA (FFFFFFFFh if it does not fit)
    and the block length."""
    last = max(lu.num_blocks - 1, 0)
    if last > 0xFFFFFFFE:
        last = _RC10_SATURATED
    return last.to_bytes(4, "big") + lu.block_size.to_bytes(4, "big")


def read_capacity_16(lu: LogicalUnit, cmd: ReadCapacity16) -> bytes:
    """READ CAPACITY(16) data, SBC-3 5.16.2, 32 bytes: no protection, one logical block
    per physical block, LBPME=0 (fully provisioned)."""
    last = max(lu.num_blocks - 1, 0)
    head = last.to_bytes(8, "big") + lu.block_size.to_bytes(4, "big")
    return head + bytes(_READ_CAPACITY_16_LENGTH - len(head))
