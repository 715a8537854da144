"""ScsiTarget: the entry point transports use to run a CDB against a LUN.

INTERFACE CONTRACT (fixed; the iSCSI layer is written against it):

    target = ScsiTarget({0: LogicalUnit(store, LuIdentity(...)), 1: ...})
    awaitable = target.execute(lun, cdb, data_out, data_out_length)
    response = await awaitable          # -> CommandResult

``execute`` is a plain method: its synchronous part decodes the CDB and issues the
command to the BlockStore (fixing its sequence number), so a transport calling it in
CmdSN order issues commands in CmdSN order. ``data_out`` is None for commands without
Data-Out, else bytes or an awaitable of bytes (all Data-Out, ``data_out_length`` long).

``data_out_length`` is what the transport was told to expect (iSCSI's Expected Data
Transfer Length); the CDB says how much the command itself transfers. The two may
differ (SAM-5 5.4.3). ``CommandResult.data_out_expected`` reports the latter, so the
transport can report the difference as a residual (RFC 7143 11.4.5.1): more than
``data_out_length`` is an overflow, less is an underflow.

This module owns that contract and the dispatch: which command runs against which
logical unit, LUN-independent commands (INQUIRY, REPORT LUNS, REQUEST SENSE) on LUNs
with no logical unit (SPC-4 6.6.2, 6.33, 6.39), allocation-length truncation
(SPC-4 4.2.5.6), and turning every failure into CHECK CONDITION: nothing raises out
of ``execute`` or its awaitable except cancellation.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import dataclass
from typing import assert_never

from . import block
from .cdb import (
    ByteCheck,
    Command,
    Inquiry,
    ModeSense,
    Opcode,
    Read,
    ReadCapacity10,
    ReadCapacity16,
    ReportLuns,
    ReportSupportedOpcodes,
    RequestSense,
    SynchronizeCache,
    TestUnitReady,
    Verify,
    Write,
    decode,
)
from .inquiry import inquiry
from .lu import LogicalUnit, LuIdentity
from .mode import mode_sense
from .opcodes import report_supported_opcodes
from .reportluns import MAX_LUN, report_luns
from .sense import Asc, SenseError, SenseKey, descriptor_sense, fixed_sense, illegal

__all__ = ["CommandResult", "LogicalUnit", "LuIdentity", "ScsiStatus", "ScsiTarget"]

log = logging.getLogger(__name__)


class ScsiStatus(enum.IntEnum):
    """SAM-5 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


@dataclass(frozen=True, slots=True)
class CommandResult:
    status: ScsiStatus
    data: bytes = b""  # Data-In payload, already limited by the CDB's allocation length
    sense: bytes = b""  # fixed-format sense data (SPC-4 4.5.3) when CHECK CONDITION
    # Bytes of Data-Out the CDB asks for (its transfer length or parameter list length
    # in bytes; 0 for a command with no Data-Out), also when the command failed after
    # decoding. None: not known (the CDB could not be decoded); no write residual then.
    data_out_expected: int | None = None


# Commands a LUN with no logical unit still answers (SPC-4 6.6.2, 6.33, 6.39).
_LUN_INDEPENDENT = frozenset((Opcode.INQUIRY, Opcode.REPORT_LUNS, Opcode.REQUEST_SENSE))


class _Ready:
    """An awaitable that is already done: the response of a command that never waits."""

    __slots__ = ("response",)

    def __init__(self, response: CommandResult) -> None:
        self.response = response

    def __await__(self) -> Generator[None, None, CommandResult]:
        return self.response
        yield  # pragma: no cover - makes this a generator


def _check_condition(err: SenseError, expected: int | None) -> CommandResult:
    return CommandResult(ScsiStatus.CHECK_CONDITION, sense=err.fixed(), data_out_expected=expected)


def _internal_failure(expected: int | None = None) -> CommandResult:
    sense = fixed_sense(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
    return CommandResult(ScsiStatus.CHECK_CONDITION, sense=sense, data_out_expected=expected)


def _data_out_expected(unit: LogicalUnit | None, cmd: Command) -> int:
    """How many bytes of Data-Out ``cmd`` transfers according to its CDB (SBC-3 4.2.2:
    TRANSFER LENGTH counts logical blocks; SPC-4 4.2.5.5: PARAMETER LIST LENGTH)."""
    if unit is None:
        return 0
    match cmd:
        case Write():
            return cmd.blocks * unit.block_size
        case Verify() if cmd.bytchk is ByteCheck.COMPARE:
            return cmd.blocks * unit.block_size
    return 0


def _truncate(data: bytes, allocation_length: int) -> bytes:
    # SPC-4 4.2.5.6: return at most ALLOCATION LENGTH bytes; 0 is not an error
    return data[:allocation_length]


class ScsiTarget:
    """The logical units behind one SCSI target port, keyed by LUN."""

    def __init__(self, luns: Mapping[int, LogicalUnit] | None = None) -> None:
        self.luns: dict[int, LogicalUnit] = {}
        for lun, unit in (luns or {}).items():
            self.add_lun(lun, unit)

    def lun_numbers(self) -> list[int]:
        return sorted(self.luns)

    def add_lun(self, lun: int, unit: LogicalUnit) -> None:
        """Attach ``unit`` at ``lun`` (0..16383, what REPORT LUNS can address)."""
        if not 0 <= lun <= MAX_LUN:
            raise ValueError(f"LUN {lun} is outside 0..{MAX_LUN}")
        if lun in self.luns:
            raise ValueError(f"LUN {lun} is already in use")
        self.luns[lun] = unit

    def remove_lun(self, lun: int) -> LogicalUnit:
        return self.luns.pop(lun)

    def execute(
        self,
        lun: int,
        cdb: bytes,
        data_out: bytes | Awaitable[bytes] | None,
        data_out_length: int,
    ) -> Awaitable[CommandResult]:
        """Decode and issue ``cdb`` now; the awaitable gives its response.

        Never raises, and neither does the awaitable (except CancelledError): a bad CDB
        is CHECK CONDITION with ILLEGAL REQUEST, a bug is HARDWARE ERROR / INTERNAL
        TARGET FAILURE (logged)."""
        raw = b""
        expected: int | None = None
        try:
            if not isinstance(cdb, (bytes, bytearray, memoryview)):
                raise TypeError(f"CDB must be bytes, not {type(cdb).__name__}")
            raw = bytes(cdb)
            unit = self.luns.get(lun)
            if unit is None and (not raw or raw[0] not in _LUN_INDEPENDENT):
                # SPC-4 6.6.2 / SAM-5 5.8: no logical unit at this LUN
                raise illegal(Asc.LOGICAL_UNIT_NOT_SUPPORTED)
            cmd = decode(raw)
            expected = _data_out_expected(unit, cmd)
            result = self._dispatch(unit, cmd, data_out, data_out_length)
        except SenseError as err:
            return _Ready(_check_condition(err, expected))
        except Exception:
            log.exception("SCSI command %s on LUN %r failed", raw[:16].hex(), lun)
            return _Ready(_internal_failure(expected))
        if isinstance(result, bytes):
            return _Ready(CommandResult(ScsiStatus.GOOD, data=result, data_out_expected=expected))
        return self._complete(result, raw[:16], lun, expected)

    async def _complete(
        self, pending: Awaitable[bytes], cdb: bytes, lun: int, expected: int | None
    ) -> CommandResult:
        try:
            data = await pending
        except SenseError as err:
            return _check_condition(err, expected)
        except Exception:
            log.exception("SCSI command %s on LUN %r failed", cdb.hex(), lun)
            return _internal_failure(expected)
        return CommandResult(ScsiStatus.GOOD, data=data, data_out_expected=expected)

    def _dispatch(
        self,
        unit: LogicalUnit | None,
        cmd: Command,
        data_out: bytes | Awaitable[bytes] | None,
        data_out_length: int,
    ) -> bytes | Awaitable[bytes]:
        match cmd:
            case Inquiry():
                return _truncate(inquiry(unit, cmd), cmd.allocation_length)
            case ReportLuns():
                return _truncate(report_luns(self.luns, cmd), cmd.allocation_length)
            case RequestSense():
                return _truncate(_request_sense(unit, cmd), cmd.allocation_length)
        assert unit is not None  # only the LUN-independent commands above get here without
        match cmd:
            case Read():
                return block.read(unit, cmd)
            case Write():
                return block.write(unit, cmd, data_out, data_out_length)
            case Verify():
                return block.verify(unit, cmd, data_out, data_out_length)
            case SynchronizeCache():
                return block.synchronize_cache(unit, cmd)
            case TestUnitReady():
                return b""
            case ReadCapacity10():
                return block.read_capacity_10(unit)
            case ReadCapacity16():
                return _truncate(block.read_capacity_16(unit, cmd), cmd.allocation_length)
            case ModeSense():
                return _truncate(mode_sense(unit, cmd), cmd.allocation_length)
            case ReportSupportedOpcodes():
                return _truncate(report_supported_opcodes(cmd), cmd.allocation_length)
        assert_never(cmd)  # pragma: no cover - mypy proves every Command has a case


def _request_sense(unit: LogicalUnit | None, cmd: RequestSense) -> bytes:
    """SPC-4 6.39: sense is delivered with CHECK CONDITION (autosense), so none is ever
    pending: NO SENSE, or ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED with GOOD status
    when no logical unit is at this LUN."""
    key, asc = SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE_INFORMATION
    if unit is None:
        key, asc = SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED
    return descriptor_sense(key, asc) if cmd.desc else fixed_sense(key, asc)
