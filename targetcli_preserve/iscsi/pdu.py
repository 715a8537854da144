"""iSCSI PDU codec (RFC 7143 section 11): Basic Header Segment, AHS, data segment, digests.

Owns the byte layout of every PDU and nothing else: no sockets, no session state.
``encode_pdu`` turns a PDU dataclass into wire bytes; ``PduDecoder`` takes arbitrary
byte chunks and returns whole PDUs, enforcing the negotiated MaxRecvDataSegmentLength
and the optional CRC32C HeaderDigest/DataDigest (RFC 7143 sections 11.2.1, 13.1).

Field names are the RFC's in snake_case. Each PDU class declares its BHS layout in one
table (``_BHS``) from which a precompiled ``struct.Struct`` and a straight-line pack and
unpack function are generated at import; decoding dispatches on the opcode, so the hot
path (SCSI Command, Data-Out in; Data-In, SCSI Response, R2T out) is one unpack/pack.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import crc32c as _crc32c

from targetcli_preserve._errors import ProtocolError

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF  # RFC 7143 11.2.1.8: the reserved Initiator/Target Transfer Tag

_crc = _crc32c.crc32c

_DIGEST = struct.Struct("<I")  # CRC32C travels least significant byte first (RFC 7143 13.1)
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class PduError(ProtocolError):
    """A PDU that cannot be decoded; ``header`` is its BHS when one was read."""

    def __init__(self, message: str, header: bytes = b"", reason: int = 0x04) -> None:
        super().__init__(message)
        self.header = header
        self.reason = reason  # RejectReason to answer with, if the connection survives


class DigestError(PduError):
    """A HeaderDigest or DataDigest mismatch (RFC 7143 7.8)."""


@dataclass(slots=True)
class BadPdu:
    """A decoder result standing for a PDU that could not be decoded.

    ``fatal`` means framing is lost (header digest error, oversized or garbled lengths):
    the connection must be dropped. Otherwise the PDU was skipped whole and can be
    answered with a Reject carrying ``header`` and ``reason``."""

    header: bytes
    reason: int
    message: str
    fatal: bool


class Opcode(enum.IntEnum):
    """RFC 7143 11.2.1.2."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    SCSI_DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    SCSI_DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


class RejectReason(enum.IntEnum):
    """RFC 7143 11.17.1."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OP_REJECT = 0x0A
    DEPRECATED = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


class ScsiServiceResponse(enum.IntEnum):
    """SCSI Response 'Response' field, RFC 7143 11.4.3."""

    COMMAND_COMPLETED = 0x00
    TARGET_FAILURE = 0x01


class TmfFunction(enum.IntEnum):
    """RFC 7143 11.5.1."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(enum.IntEnum):
    """RFC 7143 11.6.1."""

    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED = 4
    FUNCTION_NOT_SUPPORTED = 5
    FUNCTION_AUTHORIZATION_FAILED = 6
    FUNCTION_REJECTED = 255


class LoginStatus(enum.IntEnum):
    """Status-Class << 8 | Status-Detail, RFC 7143 11.13.5."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


class LogoutReason(enum.IntEnum):
    """RFC 7143 11.14.1."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


class LogoutResponseCode(enum.IntEnum):
    """RFC 7143 11.15.1."""

    CLOSED_SUCCESSFULLY = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class Stage(enum.IntEnum):
    """Login stages, CSG/NSG values (RFC 7143 11.12.3)."""

    SECURITY_NEGOTIATION = 0
    LOGIN_OPERATIONAL_NEGOTIATION = 1
    FULL_FEATURE_PHASE = 3


# --------------------------------------------------------------------------- helpers


def lun_to_field(lun: int) -> int:
    """A LUN number as the 8-byte LUN field (SAM-5 peripheral/flat addressing)."""
    if lun < 256:
        return lun << 48
    return (0x4000 | (lun & 0x3FFF)) << 48


def field_to_lun(field: int) -> int:
    """The 8-byte LUN field back to a LUN number; -1 for addressing we do not use."""
    top = field >> 48
    method = top >> 14
    if field & 0xFFFFFFFFFFFF:
        return -1
    if method == 0:
        return top if top < 256 else -1  # peripheral, bus 0 only
    if method == 1:
        return top & 0x3FFF  # flat space
    return -1


# --------------------------------------------------------------------------- BHS layouts
# Each PDU class declares its BHS in ``_BHS``: {byte offset: slot}, the offsets being
# those of the RFC figures: 0-3 single bytes, 8 the 8-byte LUN (or ISID/TSIH), 16-44
# the 4-byte words. Byte 0 always carries OPCODE (and the I bit where a ``_flag`` says
# so); offset 4 (TotalAHSLength, DataSegmentLength) is filled by ``encode_bhs``. A slot
# is a field name (the whole slot), a constant, a ``_Bytes``, or a tuple OR-ing
# constants with sub-fields: ``_flag`` (one bit, a bool), ``_bits`` (masked to its
# width when encoded) and ``_part`` (a 8- to 48-bit part of a slot, such as ISID/TSIH or
# CID, encoded unmasked). Reserved bits and bytes are written as 0 and ignored when read. ``_compile`` turns each table into one struct.Struct per direction and a
# straight-line pack/unpack function, once, at import: a PDU is one pack or one unpack.


@dataclass(frozen=True, slots=True)
class _Bits:
    name: str
    shift: int
    width: int
    clip: bool  # mask the value to ``width`` bits when encoding


@dataclass(frozen=True, slots=True)
class _Bytes:
    name: str
    size: int


def _flag(name: str, bit: int) -> _Bits:
    return _Bits(name, bit, 1, False)


def _bits(name: str, shift: int, width: int) -> _Bits:
    return _Bits(name, shift, width, True)


def _part(name: str, shift: int, width: int) -> _Bits:
    return _Bits(name, shift, width, False)


# T, C, CSG, NSG: byte 1 of Login Request and Response (RFC 7143 11.12.1-11.12.3).
_LOGIN_FLAGS = (_flag("transit", 7), _flag("cont", 6), _bits("csg", 2, 2), _bits("nsg", 0, 2))


# --------------------------------------------------------------------------- PDUs
# Each class: OPCODE; fields in RFC order; ``ahs``/``data`` last; ``_BHS`` its layout.


@dataclass(slots=True)
class NopOut:
    OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
    _BHS: ClassVar[dict] = {  # RFC 7143 11.18
        0: _flag("immediate", 6),
        1: 0x80,
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        24: "cmd_sn",
        28: "exp_stat_sn",
    }
    immediate: bool = True
    lun: int = 0
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class NopIn:
    OPCODE: ClassVar[Opcode] = Opcode.NOP_IN
    _BHS: ClassVar[dict] = {  # RFC 7143 11.19
        1: 0x80,
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
    }
    lun: int = 0
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class ScsiCommand:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_COMMAND
    _BHS: ClassVar[dict] = {  # RFC 7143 11.3
        0: _flag("immediate", 6),
        1: (_flag("final", 7), _flag("read", 6), _flag("write", 5), _bits("attr", 0, 3)),
        8: "lun",
        16: "initiator_task_tag",
        20: "expected_data_transfer_length",
        24: "cmd_sn",
        28: "exp_stat_sn",
        32: _Bytes("cdb", 16),  # 11.3.5: shorter CDBs are zero-padded, longer cut
    }
    immediate: bool = False
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = 0  # task attributes (ATTR), 3 bits
    lun: int = 0
    initiator_task_tag: int = 0
    expected_data_transfer_length: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    cdb: bytes = bytes(16)
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class ScsiResponsePdu:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_RESPONSE
    _BHS: ClassVar[dict] = {  # RFC 7143 11.4
        1: (
            0x80,
            _flag("bidi_overflow", 4),
            _flag("bidi_underflow", 3),
            _flag("overflow", 2),
            _flag("underflow", 1),
        ),
        2: "response",
        3: "status",
        16: "initiator_task_tag",
        20: "snack_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: "exp_data_sn",
        40: "bidirectional_read_residual_count",
        44: "residual_count",
    }
    bidi_overflow: bool = False  # o
    bidi_underflow: bool = False  # u
    overflow: bool = False  # O
    underflow: bool = False  # U
    response: int = ScsiServiceResponse.COMMAND_COMPLETED
    status: int = 0
    initiator_task_tag: int = 0
    snack_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    exp_data_sn: int = 0
    bidirectional_read_residual_count: int = 0
    residual_count: int = 0
    ahs: bytes = b""
    data: bytes = b""  # SenseLength (2 bytes) + sense data, when there is sense


@dataclass(slots=True)
class TaskManagementRequest:
    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_REQUEST
    _BHS: ClassVar[dict] = {  # RFC 7143 11.5
        0: _flag("immediate", 6),
        1: (0x80, _bits("function", 0, 7)),
        8: "lun",
        16: "initiator_task_tag",
        20: "referenced_task_tag",
        24: "cmd_sn",
        28: "exp_stat_sn",
        32: "ref_cmd_sn",
        36: "exp_data_sn",
    }
    immediate: bool = True
    function: int = TmfFunction.ABORT_TASK
    lun: int = 0
    initiator_task_tag: int = 0
    referenced_task_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ref_cmd_sn: int = 0
    exp_data_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class TaskManagementResponse:
    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_RESPONSE
    _BHS: ClassVar[dict] = {  # RFC 7143 11.6
        1: 0x80,
        2: "response",
        16: "initiator_task_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
    }
    response: int = TmfResponse.FUNCTION_COMPLETE
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class LoginRequest:
    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
    _BHS: ClassVar[dict] = {  # RFC 7143 11.12
        0: _flag("immediate", 6),
        1: _LOGIN_FLAGS,
        2: "version_max",
        3: "version_min",
        8: (_part("isid", 16, 48), _part("tsih", 0, 16)),
        16: "initiator_task_tag",
        20: _part("cid", 16, 16),
        24: "cmd_sn",
        28: "exp_stat_sn",
    }
    transit: bool = False  # T
    cont: bool = False  # C
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: int = 0  # 6 bytes
    tsih: int = 0
    initiator_task_tag: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""
    immediate: bool = True  # the I bit is always 1 on Login Requests (11.12)


@dataclass(slots=True)
class LoginResponse:
    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
    _BHS: ClassVar[dict] = {  # RFC 7143 11.13
        1: _LOGIN_FLAGS,
        2: "version_max",
        3: "version_active",
        8: (_part("isid", 16, 48), _part("tsih", 0, 16)),
        16: "initiator_task_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: (_part("status_class", 24, 8), _part("status_detail", 16, 8)),
    }
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: int = 0
    tsih: int = 0
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    status_class: int = 0
    status_detail: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class TextRequest:
    OPCODE: ClassVar[Opcode] = Opcode.TEXT_REQUEST
    _BHS: ClassVar[dict] = {  # RFC 7143 11.10
        0: _flag("immediate", 6),
        1: (_flag("final", 7), _flag("cont", 6)),
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        24: "cmd_sn",
        28: "exp_stat_sn",
    }
    immediate: bool = False
    final: bool = True
    cont: bool = False
    lun: int = 0
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class TextResponse:
    OPCODE: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
    _BHS: ClassVar[dict] = {  # RFC 7143 11.11
        1: (_flag("final", 7), _flag("cont", 6)),
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
    }
    final: bool = True
    cont: bool = False
    lun: int = 0
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class DataOut:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_OUT
    _BHS: ClassVar[dict] = {  # RFC 7143 11.7
        1: _flag("final", 7),
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        28: "exp_stat_sn",
        36: "data_sn",
        40: "buffer_offset",
    }
    final: bool = True
    lun: int = 0
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    exp_stat_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class DataIn:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_IN
    _BHS: ClassVar[dict] = {  # RFC 7143 11.7
        1: (
            _flag("final", 7),
            _flag("acknowledge", 6),
            _flag("overflow", 2),
            _flag("underflow", 1),
            _flag("status_present", 0),
        ),
        3: "status",
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: "data_sn",
        40: "buffer_offset",
        44: "residual_count",
    }
    final: bool = False  # F
    acknowledge: bool = False  # A
    overflow: bool = False  # O
    underflow: bool = False  # U
    status_present: bool = False  # S
    status: int = 0
    lun: int = 0
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0
    residual_count: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class LogoutRequest:
    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    _BHS: ClassVar[dict] = {  # RFC 7143 11.14
        0: _flag("immediate", 6),
        1: (0x80, _bits("reason_code", 0, 7)),
        16: "initiator_task_tag",
        20: _part("cid", 16, 16),
        24: "cmd_sn",
        28: "exp_stat_sn",
    }
    immediate: bool = False
    reason_code: int = LogoutReason.CLOSE_SESSION
    initiator_task_tag: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class LogoutResponse:
    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    _BHS: ClassVar[dict] = {  # RFC 7143 11.15
        1: 0x80,
        2: "response",
        16: "initiator_task_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        40: (_part("time2wait", 16, 16), _part("time2retain", 0, 16)),
    }
    response: int = LogoutResponseCode.CLOSED_SUCCESSFULLY
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    time2wait: int = 0
    time2retain: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class R2T:
    OPCODE: ClassVar[Opcode] = Opcode.R2T
    _BHS: ClassVar[dict] = {  # RFC 7143 11.8
        1: 0x80,
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: "r2t_sn",
        40: "buffer_offset",
        44: "desired_data_transfer_length",
    }
    lun: int = 0
    initiator_task_tag: int = 0
    target_transfer_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    r2t_sn: int = 0
    buffer_offset: int = 0
    desired_data_transfer_length: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class AsyncMessage:
    OPCODE: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
    _BHS: ClassVar[dict] = {  # RFC 7143 11.9
        1: 0x80,
        8: "lun",
        16: RESERVED_TAG,
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: (_part("async_event", 24, 8), _part("async_vcode", 16, 8), _part("parameter1", 0, 16)),
        40: (_part("parameter2", 16, 16), _part("parameter3", 0, 16)),
    }
    lun: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    async_event: int = 0
    async_vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0
    ahs: bytes = b""
    data: bytes = b""


@dataclass(slots=True)
class Reject:
    OPCODE: ClassVar[Opcode] = Opcode.REJECT
    _BHS: ClassVar[dict] = {  # RFC 7143 11.17
        1: 0x80,
        2: "reason",
        16: RESERVED_TAG,
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: "data_sn",
    }
    reason: int = RejectReason.PROTOCOL_ERROR
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0  # DataSN/R2TSN
    ahs: bytes = b""
    data: bytes = b""  # the complete header of the rejected PDU (11.17.3)


@dataclass(slots=True)
class Snack:
    OPCODE: ClassVar[Opcode] = Opcode.SNACK_REQUEST
    _BHS: ClassVar[dict] = {  # RFC 7143 11.16
        1: (0x80, _bits("type", 0, 4)),
        8: "lun",
        16: "initiator_task_tag",
        20: "target_transfer_tag",
        28: "exp_stat_sn",
        40: "beg_run",
        44: "run_length",
    }
    type: int = 0
    lun: int = 0
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    exp_stat_sn: int = 0
    beg_run: int = 0
    run_length: int = 0
    ahs: bytes = b""
    data: bytes = b""


Pdu = (
    NopOut
    | NopIn
    | ScsiCommand
    | ScsiResponsePdu
    | TaskManagementRequest
    | TaskManagementResponse
    | LoginRequest
    | LoginResponse
    | TextRequest
    | TextResponse
    | DataOut
    | DataIn
    | LogoutRequest
    | LogoutResponse
    | R2T
    | AsyncMessage
    | Reject
    | Snack
)


# --------------------------------------------------------------------------- layout compiler

# Offset -> struct code of every BHS slot; 4 is the lengths word.
_SLOTS = {0: "B", 1: "B", 2: "B", 3: "B", 4: "I", 8: "Q", **{o: "I" for o in range(16, 48, 4)}}
_LENGTHS = object()  # the slot encode_bhs fills in


def _compile(cls: type) -> Callable:
    """Give ``cls`` its ``_pack_bhs(pdu, lengths)``; return its ``decode(bhs, ahs, data)``.

    Both are generated source (the way ``dataclasses`` builds ``__init__``): a single
    ``Struct.pack`` of the fields' expressions, and a single ``unpack_from`` whose values
    feed the constructor positionally, in field order. Reserved and constant slots are
    pad bytes (``x``) in the decoding Struct, and so are all-zero slots when encoding."""
    layout = dict(cls._BHS)
    first = layout.get(0, ())
    layout[0] = (int(cls.OPCODE), *(first if isinstance(first, tuple) else (first,)))
    layout[4] = _LENGTHS
    enc_fmt, enc_args, dec_fmt, dec_vars = [">"], [], [">"], []
    decoded: list[tuple[str, str]] = []  # (field, expression of the unpacked v<offset>)
    end = 0
    for off, code in _SLOTS.items():
        if off < end:
            continue  # inside a _Bytes slot
        slot = layout.pop(off, 0)
        size = struct.calcsize(code)
        var = f"v{off}"
        if slot is _LENGTHS:
            enc_fmt.append(code)
            enc_args.append("lengths")
            dec_fmt.append(f"{size}x")
        elif isinstance(slot, _Bytes):
            size = slot.size
            enc_fmt.append(f"{size}s")
            enc_args.append(f"p.{slot.name}")
            dec_fmt.append(f"{size}s")
            dec_vars.append(var)
            decoded.append((slot.name, var))
        else:
            const, terms = 0, []
            for item in slot if isinstance(slot, tuple) else (slot,):
                if isinstance(item, int):
                    const |= item
                    continue
                if isinstance(item, str):
                    item = _Bits(item, 0, size * 8, False)
                mask = (1 << item.width) - 1
                term = f"(p.{item.name} & {mask:#x})" if item.clip else f"p.{item.name}"
                terms.append(f"{term} << {item.shift}" if item.shift else term)
                value = f"{var} >> {item.shift}" if item.shift else var
                if item.shift + item.width < size * 8:
                    value = f"{value} & {mask:#x}"
                if item.width == 1:
                    value = f"{var} & {1 << item.shift:#x} != 0"  # a bool
                decoded.append((item.name, value))
            dec_fmt.append(code if terms else f"{size}x")
            if terms:
                dec_vars.append(var)
            if const:
                terms.append(f"{const:#x}")
            enc_fmt.append(code if terms else f"{size}x")
            if terms:
                enc_args.append(" | ".join(terms))
        end = off + size
    names = [f.name for f in fields(cls) if f.name not in ("ahs", "data")]
    if layout or sorted(n for n, _ in decoded) != sorted(names) or end != BHS_LEN:
        raise TypeError(f"{cls.__name__}: BHS layout does not match its fields")
    exprs = dict(decoded)
    args = ", ".join(exprs.get(f.name, f.name) for f in fields(cls))
    src = (  # closures, so that the Structs' methods and cls are cell variables
        "def make(cls, pack, unpack):\n"
        f"    def _pack_bhs(p, lengths):\n        return pack({', '.join(enc_args)})\n"
        f"    def decode(b, ahs, data):\n        {', '.join(dec_vars)}, = unpack(b)\n"
        f"        return cls({args})\n"
        "    return _pack_bhs, decode\n"
    )
    ns: dict = {}
    exec(compile(src, f"<BHS of {cls.__name__}>", "exec"), ns)  # noqa: S102 - built from _BHS
    enc, dec = struct.Struct("".join(enc_fmt)), struct.Struct("".join(dec_fmt))
    cls._pack_bhs, decode = ns["make"](cls, enc.pack, dec.unpack_from)
    return decode


def _unknown_opcode(bhs: bytes | memoryview, ahs: bytes, data: bytes) -> Pdu:
    raise PduError(
        f"unknown opcode 0x{bhs[0] & 0x3F:02x}",
        bytes(bhs[:BHS_LEN]),
        RejectReason.COMMAND_NOT_SUPPORTED,
    )


# 6-bit opcode -> decode(bhs, ahs, data) -> PDU
_DECODERS: list[Callable] = [_unknown_opcode] * 64
for _cls in Pdu.__args__:
    _DECODERS[_cls.OPCODE] = _compile(_cls)
del _cls


# --------------------------------------------------------------------------- encode


def encode_bhs(pdu: Pdu, ahs_len: int | None = None, dsl: int | None = None) -> bytes:
    """The 48-byte BHS of ``pdu`` (lengths taken from its ahs/data unless given)."""
    if ahs_len is None:
        ahs_len = len(pdu.ahs)
    if dsl is None:
        dsl = len(pdu.data)
    if ahs_len & 3:
        raise ValueError("AHS length must be a multiple of 4")
    if dsl > 0xFFFFFF:
        raise ValueError("data segment too long")
    return pdu._pack_bhs((ahs_len >> 2) << 24 | dsl)


def encode_pdu(pdu: Pdu, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """Wire bytes of one PDU: BHS, AHS, HeaderDigest, data + padding, DataDigest."""
    ahs = pdu.ahs
    data = pdu.data
    bhs = encode_bhs(pdu, len(ahs), len(data))
    parts = [bhs]
    if ahs:
        parts.append(ahs)
    if header_digest:
        parts.append(_DIGEST.pack(_crc(bhs + ahs if ahs else bhs)))
    if data:
        parts.append(data)
        pad = _PAD[len(data) & 3]
        if pad:
            parts.append(pad)
        if data_digest:
            parts.append(_DIGEST.pack(_crc(pad, _crc(data)) if pad else _crc(data)))
    return b"".join(parts)


# --------------------------------------------------------------------------- decode


def decode_bhs(bhs: bytes | memoryview, ahs: bytes = b"", data: bytes = b"") -> Pdu:
    """Decode one BHS (48 bytes) into its PDU dataclass, attaching ``ahs`` and ``data``.

    Raises PduError (reason COMMAND_NOT_SUPPORTED) for an unknown opcode."""
    return _DECODERS[bhs[0] & 0x3F](bhs, ahs, data)


def decode_pdu(raw: bytes, header_digest: bool = False, data_digest: bool = False) -> Pdu:
    """Decode exactly one whole PDU (convenience for tests and tools)."""
    dec = PduDecoder(
        max_data_segment_length=0xFFFFFF, header_digest=header_digest, data_digest=data_digest
    )
    pdus = dec.feed(raw)
    if len(pdus) != 1 or dec.buffered:
        raise PduError("not exactly one PDU")
    pdu = pdus[0]
    if isinstance(pdu, BadPdu):
        raise (DigestError if "digest" in pdu.message else PduError)(
            pdu.message, pdu.header, pdu.reason
        )
    return pdu


class PduDecoder:
    """Stream decoder: ``feed`` arbitrary chunks, get whole PDUs back, in order.

    Whatever cannot be decoded comes back in the list as a :class:`BadPdu`; after a
    fatal one the decoder is ``broken`` and yields nothing more (framing is lost, the
    connection must be dropped). A data segment longer than ``max_data_segment_length``
    (our declared MaxRecvDataSegmentLength) is fatal (RFC 7143 13.12); a header digest
    error is fatal, a data digest error is not (RFC 7143 7.8)."""

    __slots__ = ("_buf", "broken", "data_digest", "header_digest", "max_data_segment_length")

    def __init__(
        self,
        max_data_segment_length: int = 8192,
        header_digest: bool = False,
        data_digest: bool = False,
    ) -> None:
        self._buf = bytearray()
        self.max_data_segment_length = max_data_segment_length
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Pdu | BadPdu]:
        if self.broken:
            return []
        buf = self._buf
        buf += chunk
        out: list[Pdu | BadPdu] = []
        pos = 0
        end = len(buf)
        mv = memoryview(buf)
        try:
            while end - pos >= BHS_LEN:
                lengths = int.from_bytes(mv[pos + 4 : pos + 8], "big")
                ahs_len = (lengths >> 24) << 2
                dsl = lengths & 0xFFFFFF
                hd = 4 if self.header_digest else 0
                padded = dsl + (-dsl & 3)
                dd = 4 if (self.data_digest and dsl) else 0
                total = BHS_LEN + ahs_len + hd + padded + dd
                if dsl > self.max_data_segment_length:
                    out.append(
                        BadPdu(
                            bytes(mv[pos : pos + BHS_LEN]),
                            RejectReason.PROTOCOL_ERROR,
                            f"DataSegmentLength {dsl} exceeds MaxRecvDataSegmentLength"
                            f" {self.max_data_segment_length}",
                            True,
                        )
                    )
                    self.broken = True
                    break
                if end - pos < total:
                    break
                hend = pos + BHS_LEN + ahs_len
                if hd:
                    (want,) = _DIGEST.unpack_from(mv, hend)
                    if _crc(mv[pos:hend]) != want:
                        out.append(
                            BadPdu(
                                bytes(mv[pos : pos + BHS_LEN]),
                                RejectReason.PROTOCOL_ERROR,
                                "header digest error",
                                True,
                            )
                        )
                        self.broken = True
                        break
                dstart = hend + hd
                if dd:
                    (want,) = _DIGEST.unpack_from(mv, dstart + padded)
                    if _crc(mv[dstart : dstart + padded]) != want:
                        out.append(
                            BadPdu(
                                bytes(mv[pos : pos + BHS_LEN]),
                                RejectReason.DATA_DIGEST_ERROR,
                                "data digest error",
                                False,
                            )
                        )
                        pos += total
                        continue
                ahs = bytes(mv[pos + BHS_LEN : hend]) if ahs_len else b""
                data = bytes(mv[dstart : dstart + dsl]) if dsl else b""
                try:
                    out.append(decode_bhs(mv[pos : pos + BHS_LEN], ahs, data))
                except PduError as err:
                    out.append(BadPdu(err.header, err.reason, str(err), False))
                pos += total
        finally:
            mv.release()
            if self.broken:
                buf.clear()
            elif pos:
                del buf[:pos]
        return out
