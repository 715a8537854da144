"""CDB decoding: bytes in, one small frozen dataclass per command out.

Owns the operation codes we support, their CDB lengths (SPC-4 4.2.5.1 group codes),
the checks every CDB gets (length, CONTROL byte) and each command's field layout and
field checks. Anything rejected raises :class:`~.sense.SenseError` with ILLEGAL REQUEST
and, where the fault is in one field, a field pointer (SPC-4 4.5.2.4.2). Checks that
need the logical unit (capacity, block size) are left to the command handlers.

:data:`COMMANDS` also carries each command's CDB USAGE DATA for REPORT SUPPORTED
OPERATION CODES (SPC-4 6.35).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .sense import Asc, illegal, invalid_field


class Opcode(enum.IntEnum):
    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SENSE_6 = 0x1A
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    VERIFY_10 = 0x2F
    SYNCHRONIZE_CACHE_10 = 0x35
    MODE_SENSE_10 = 0x5A
    READ_16 = 0x88
    WRITE_16 = 0x8A
    VERIFY_16 = 0x8F
    SYNCHRONIZE_CACHE_16 = 0x91
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    READ_12 = 0xA8
    WRITE_12 = 0xAA


class ServiceAction(enum.IntEnum):
    """Service actions of the multiplexed opcodes we support."""

    READ_CAPACITY_16 = 0x10  # SERVICE ACTION IN(16), SBC-3 5.16
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C  # MAINTENANCE IN, SPC-4 6.35


class PageControl(enum.IntEnum):
    """MODE SENSE PC field (SPC-4 6.11, table 99)."""

    CURRENT = 0
    CHANGEABLE = 1
    DEFAULT = 2
    SAVED = 3


class SelectReport(enum.IntEnum):
    """REPORT LUNS SELECT REPORT field (SPC-4 6.33, table 166)."""

    ALL_EXCEPT_WELL_KNOWN = 0x00
    WELL_KNOWN_ONLY = 0x01
    ALL = 0x02


class ReportingOptions(enum.IntEnum):
    """REPORT SUPPORTED OPERATION CODES REPORTING OPTIONS (SPC-4 6.35, table 177)."""

    ALL = 0
    OPCODE = 1
    OPCODE_AND_SERVICE_ACTION = 2
    OPCODE_MAYBE_SERVICE_ACTION = 3


# SAM-5 5.2 CONTROL byte: NACA (normal ACA) and the obsolete LINK bit. We support
# neither ACA nor linked commands, so either set is INVALID FIELD IN CDB.
_CONTROL_NACA = 0x04
_CONTROL_LINK = 0x01

# SBC-3 byte 1 of READ/WRITE/VERIFY(10/12/16).
_PROTECT_MASK = 0xE0  # RDPROTECT / WRPROTECT / VRPROTECT
_DPO = 0x10
_FUA = 0x08
_BYTCHK_MASK = 0x06  # VERIFY, SBC-3 5.33
_BYTCHK_SHIFT = 1
_IMMED = 0x02  # SYNCHRONIZE CACHE, SBC-3 5.22


class ByteCheck(enum.IntEnum):
    """VERIFY BYTCHK field (SBC-3 5.33, table 65)."""

    NONE = 0  # medium verification only
    COMPARE = 1  # compare with Data-Out, one block per block
    RESERVED = 2
    COMPARE_ONE_BLOCK = 3  # compare each block with a single Data-Out block


def cdb_length(opcode: int) -> int:
    """CDB length from the GROUP CODE (SPC-4 4.2.5.1, table 3); -1 when not defined here."""
    return {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(opcode >> 5, -1)


def _u(cdb: bytes, start: int, end: int) -> int:
    return int.from_bytes(cdb[start:end], "big")


# --- decoded commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestUnitReady:
    __test__ = False  # not a pytest test class


@dataclass(frozen=True, slots=True)
class RequestSense:
    desc: bool
    allocation_length: int


@dataclass(frozen=True, slots=True)
class Inquiry:
    evpd: bool
    page_code: int
    allocation_length: int


@dataclass(frozen=True, slots=True)
class ModeSense:
    ten: bool  # MODE SENSE(10), else (6)
    dbd: bool
    llbaa: bool
    page_control: PageControl
    page_code: int
    subpage_code: int
    allocation_length: int


@dataclass(frozen=True, slots=True)
class ReadCapacity10:
    pass


@dataclass(frozen=True, slots=True)
class ReadCapacity16:
    allocation_length: int


@dataclass(frozen=True, slots=True)
class Read:
    lba: int
    blocks: int
    dpo: bool
    fua: bool
    length_byte: int  # where TRANSFER LENGTH sits, for a field pointer


@dataclass(frozen=True, slots=True)
class Write:
    lba: int
    blocks: int
    dpo: bool
    fua: bool
    length_byte: int


@dataclass(frozen=True, slots=True)
class Verify:
    lba: int
    blocks: int
    bytchk: ByteCheck
    length_byte: int


@dataclass(frozen=True, slots=True)
class SynchronizeCache:
    lba: int
    blocks: int  # 0: from lba to the end of the medium
    immed: bool


@dataclass(frozen=True, slots=True)
class ReportLuns:
    select_report: SelectReport
    allocation_length: int


@dataclass(frozen=True, slots=True)
class ReportSupportedOpcodes:
    rctd: bool
    reporting_options: ReportingOptions
    requested_opcode: int
    requested_service_action: int
    allocation_length: int


Command = (
    TestUnitReady
    | RequestSense
    | Inquiry
    | ModeSense
    | ReadCapacity10
    | ReadCapacity16
    | Read
    | Write
    | Verify
    | SynchronizeCache
    | ReportLuns
    | ReportSupportedOpcodes
)


# --- per-command decoders ---------------------------------------------------------------


def _test_unit_ready(cdb: bytes) -> TestUnitReady:
    return TestUnitReady()  # SPC-4 6.47: bytes 1-4 reserved


def _request_sense(cdb: bytes) -> RequestSense:
    # SPC-4 6.39: byte 1 bit 0 DESC, others reserved
    if cdb[1] & 0xFE:
        raise invalid_field(1, 7)
    return RequestSense(desc=bool(cdb[1] & 0x01), allocation_length=cdb[4])


def _inquiry(cdb: bytes) -> Inquiry:
    # SPC-4 6.6.1: byte 1 bit 0 EVPD; bit 1 was CMDDT (obsolete since SPC-3, so setting
    # it is an invalid field, as is any other reserved bit).
    if cdb[1] & 0xFE:
        raise invalid_field(1, 1 if cdb[1] & 0x02 else 7)
    evpd = bool(cdb[1] & 0x01)
    # "If the EVPD bit is set to zero and the PAGE CODE field is not set to zero, the
    # device server shall terminate the command ... INVALID FIELD IN CDB."
    if not evpd and cdb[2]:
        raise invalid_field(2)
    return Inquiry(evpd=evpd, page_code=cdb[2], allocation_length=_u(cdb, 3, 5))


def _mode_sense(cdb: bytes, ten: bool) -> ModeSense:
    # SPC-4 6.11 / 6.12: byte 1 DBD (bit 3); MODE SENSE(10) adds LLBAA (bit 4).
    allowed = 0x18 if ten else 0x08
    if cdb[1] & ~allowed & 0xFF:
        raise invalid_field(1, 7)
    pc = PageControl(cdb[2] >> 6)
    return ModeSense(
        ten=ten,
        dbd=bool(cdb[1] & 0x08),
        llbaa=ten and bool(cdb[1] & 0x10),
        page_control=pc,
        page_code=cdb[2] & 0x3F,
        subpage_code=cdb[3],
        allocation_length=_u(cdb, 7, 9) if ten else cdb[4],
    )


def _read_capacity_10(cdb: bytes) -> ReadCapacity10:
    # SBC-3 5.15: the LOGICAL BLOCK ADDRESS and PMI fields are obsolete; ignored.
    return ReadCapacity10()


def _read_capacity_16(cdb: bytes) -> ReadCapacity16:
    # SBC-3 5.16: LBA and PMI obsolete; an ALLOCATION LENGTH of 0 is not an error.
    return ReadCapacity16(allocation_length=_u(cdb, 10, 14))


def _check_protect(cdb: bytes) -> None:
    # SBC-3 5.9 (and 5.10-5.12, 5.32-5.36): we do not support protection information,
    # so a non-zero RDPROTECT/WRPROTECT/VRPROTECT is INVALID FIELD IN CDB.
    if cdb[1] & _PROTECT_MASK:
        raise invalid_field(1, 7)


def _rw6(cdb: bytes) -> tuple[int, int]:
    # SBC-3 5.10 / 5.31: 21-bit LBA; TRANSFER LENGTH 0 means 256 blocks.
    if cdb[1] & 0xE0:
        raise invalid_field(1, 7)
    lba = _u(cdb, 1, 4) & 0x1FFFFF
    return lba, cdb[4] or 256


_RW_LAYOUT = {10: (2, 6, 7, 9), 12: (2, 6, 6, 10), 16: (2, 10, 10, 14)}  # lba, len fields


def _rw_fields(cdb: bytes) -> tuple[int, int, int]:
    lba_start, lba_end, len_start, len_end = _RW_LAYOUT[len(cdb)]
    return _u(cdb, lba_start, lba_end), _u(cdb, len_start, len_end), len_start


def _read_6(cdb: bytes) -> Read:
    lba, blocks = _rw6(cdb)
    return Read(lba=lba, blocks=blocks, dpo=False, fua=False, length_byte=4)


def _write_6(cdb: bytes) -> Write:
    lba, blocks = _rw6(cdb)
    return Write(lba=lba, blocks=blocks, dpo=False, fua=False, length_byte=4)


def _read_n(cdb: bytes) -> Read:
    # SBC-3 5.11-5.13; FUA_NV (bit 1) is accepted and has no extra meaning here.
    _check_protect(cdb)
    lba, blocks, length_byte = _rw_fields(cdb)
    return Read(lba, blocks, bool(cdb[1] & _DPO), bool(cdb[1] & _FUA), length_byte)


def _write_n(cdb: bytes) -> Write:
    # SBC-3 5.32-5.34
    _check_protect(cdb)
    lba, blocks, length_byte = _rw_fields(cdb)
    return Write(lba, blocks, bool(cdb[1] & _DPO), bool(cdb[1] & _FUA), length_byte)


def _verify_n(cdb: bytes) -> Verify:
    # SBC-3 5.33 / 5.34: BYTCHK 10b is reserved; 11b (one block compared with every
    # block) is optional and not supported here.
    _check_protect(cdb)
    bytchk = ByteCheck((cdb[1] & _BYTCHK_MASK) >> _BYTCHK_SHIFT)
    if bytchk in (ByteCheck.RESERVED, ByteCheck.COMPARE_ONE_BLOCK):
        raise invalid_field(1, 2)
    lba, blocks, length_byte = _rw_fields(cdb)
    return Verify(lba=lba, blocks=blocks, bytchk=bytchk, length_byte=length_byte)


def _synchronize_cache(cdb: bytes) -> SynchronizeCache:
    # SBC-3 5.22 / 5.23: byte 1 IMMED (bit 1); SYNC_NV (bit 2) is obsolete and ignored.
    if len(cdb) == 10:
        lba, blocks = _u(cdb, 2, 6), _u(cdb, 7, 9)
    else:
        lba, blocks = _u(cdb, 2, 10), _u(cdb, 10, 14)
    return SynchronizeCache(lba=lba, blocks=blocks, immed=bool(cdb[1] & _IMMED))


def _report_luns(cdb: bytes) -> ReportLuns:
    # SPC-4 6.33: SELECT REPORT in byte 2; ALLOCATION LENGTH below 16 is an invalid field.
    try:
        select = SelectReport(cdb[2])
    except ValueError:
        raise invalid_field(2) from None
    allocation_length = _u(cdb, 6, 10)
    if allocation_length < 16:
        raise invalid_field(6)
    return ReportLuns(select_report=select, allocation_length=allocation_length)


def _report_supported_opcodes(cdb: bytes) -> ReportSupportedOpcodes:
    # SPC-4 6.35: byte 2 RCTD (bit 7) and REPORTING OPTIONS (bits 2-0).
    if cdb[2] & 0x78:
        raise invalid_field(2, 6)
    try:
        options = ReportingOptions(cdb[2] & 0x07)
    except ValueError:
        raise invalid_field(2, 2) from None
    return ReportSupportedOpcodes(
        rctd=bool(cdb[2] & 0x80),
        reporting_options=options,
        requested_opcode=cdb[3],
        requested_service_action=_u(cdb, 4, 6),
        allocation_length=_u(cdb, 6, 10),
    )


# --- the command table ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    opcode: Opcode
    service_action: ServiceAction | None
    usage: bytes  # CDB USAGE DATA (SPC-4 6.35.3); its length is the CDB length
    decode: Callable[[bytes], Command]

    @property
    def length(self) -> int:
        return len(self.usage)


def _usage(*parts: bytes | int) -> bytes:
    out = bytearray()
    for part in parts:
        out += part if isinstance(part, bytes) else bytes((part,))
    return bytes(out)


_CTL = 0x05  # the CONTROL byte bits we evaluate: NACA and LINK
_FF = 0xFF


def _ff(n: int) -> bytes:
    return b"\xff" * n


_SPECS = (
    CommandSpec(Opcode.TEST_UNIT_READY, None, _usage(0x00, 0, 0, 0, 0, _CTL), _test_unit_ready),
    CommandSpec(Opcode.REQUEST_SENSE, None, _usage(0x03, 0x01, 0, 0, _FF, _CTL), _request_sense),
    CommandSpec(Opcode.READ_6, None, _usage(0x08, 0x1F, _FF, _FF, _FF, _CTL), _read_6),
    CommandSpec(Opcode.WRITE_6, None, _usage(0x0A, 0x1F, _FF, _FF, _FF, _CTL), _write_6),
    CommandSpec(Opcode.INQUIRY, None, _usage(0x12, 0x01, _FF, _FF, _FF, _CTL), _inquiry),
    CommandSpec(
        Opcode.MODE_SENSE_6,
        None,
        _usage(0x1A, 0x08, _FF, _FF, _FF, _CTL),
        lambda cdb: _mode_sense(cdb, ten=False),
    ),
    CommandSpec(Opcode.READ_CAPACITY_10, None, _usage(0x25, bytes(8), _CTL), _read_capacity_10),
    CommandSpec(Opcode.READ_10, None, _usage(0x28, 0x1A, _ff(4), 0, _ff(2), _CTL), _read_n),
    CommandSpec(Opcode.WRITE_10, None, _usage(0x2A, 0x1A, _ff(4), 0, _ff(2), _CTL), _write_n),
    CommandSpec(Opcode.VERIFY_10, None, _usage(0x2F, 0x12, _ff(4), 0, _ff(2), _CTL), _verify_n),
    CommandSpec(
        Opcode.SYNCHRONIZE_CACHE_10,
        None,
        _usage(0x35, 0x02, _ff(4), 0, _ff(2), _CTL),
        _synchronize_cache,
    ),
    CommandSpec(
        Opcode.MODE_SENSE_10,
        None,
        _usage(0x5A, 0x18, _FF, _FF, 0, 0, 0, _ff(2), _CTL),
        lambda cdb: _mode_sense(cdb, ten=True),
    ),
    CommandSpec(Opcode.READ_16, None, _usage(0x88, 0x1A, _ff(8), _ff(4), 0, _CTL), _read_n),
    CommandSpec(Opcode.WRITE_16, None, _usage(0x8A, 0x1A, _ff(8), _ff(4), 0, _CTL), _write_n),
    CommandSpec(Opcode.VERIFY_16, None, _usage(0x8F, 0x12, _ff(8), _ff(4), 0, _CTL), _verify_n),
    CommandSpec(
        Opcode.SYNCHRONIZE_CACHE_16,
        None,
        _usage(0x91, 0x02, _ff(8), _ff(4), 0, _CTL),
        _synchronize_cache,
    ),
    CommandSpec(
        Opcode.SERVICE_ACTION_IN_16,
        ServiceAction.READ_CAPACITY_16,
        _usage(0x9E, 0x10, bytes(8), _ff(4), 0, _CTL),
        _read_capacity_16,
    ),
    CommandSpec(
        Opcode.REPORT_LUNS, None, _usage(0xA0, 0, _FF, 0, 0, 0, _ff(4), 0, _CTL), _report_luns
    ),
    CommandSpec(
        Opcode.MAINTENANCE_IN,
        ServiceAction.REPORT_SUPPORTED_OPERATION_CODES,
        _usage(0xA3, 0x0C, 0x87, _FF, _ff(2), _ff(4), 0, _CTL),
        _report_supported_opcodes,
    ),
    CommandSpec(Opcode.READ_12, None, _usage(0xA8, 0x1A, _ff(4), _ff(4), 0, _CTL), _read_n),
    CommandSpec(Opcode.WRITE_12, None, _usage(0xAA, 0x1A, _ff(4), _ff(4), 0, _CTL), _write_n),
)


def _ascending(spec: CommandSpec) -> tuple[int, int]:
    return spec.opcode, spec.service_action or 0


# (opcode, service action or None) -> spec, in ascending order
COMMANDS: dict[tuple[int, int | None], CommandSpec] = {
    (s.opcode, s.service_action): s for s in sorted(_SPECS, key=_ascending)
}
SERVICE_ACTION_OPCODES = frozenset(s.opcode for s in _SPECS if s.service_action is not None)


def decode(cdb: bytes) -> Command:
    """Decode one CDB. Raises SenseError (ILLEGAL REQUEST) for anything we reject."""
    if not cdb:
        raise invalid_field(0)
    opcode = cdb[0]
    length = cdb_length(opcode)
    service_action = None
    if opcode in SERVICE_ACTION_OPCODES:
        if len(cdb) < 2:
            raise invalid_field(1, 4)
        service_action = cdb[1] & 0x1F
    spec = COMMANDS.get((opcode, service_action))
    if spec is None or length < 0:
        if opcode in SERVICE_ACTION_OPCODES:
            # SPC-4 4.2.5.2: an unsupported service action is an invalid field
            raise invalid_field(1, 4)
        raise illegal(Asc.INVALID_COMMAND_OPERATION_CODE)
    if len(cdb) < length:
        # Shorter than its group code says: the transport lost bytes. Report the last
        # byte present as the offending field.
        raise invalid_field(len(cdb) - 1)
    cdb = bytes(cdb[:length])
    control = cdb[-1]
    if control & _CONTROL_NACA:  # SAM-5 5.2: ACA not supported
        raise invalid_field(length - 1, 2)
    if control & _CONTROL_LINK:  # SAM-4 5.2: linked commands not supported
        raise invalid_field(length - 1, 0)
    return spec.decode(cdb)
