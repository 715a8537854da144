"""iSCSI PDU codec (RFC 7143 section 11): Basic Header Segment, AHS, data segment, digests.

Owns the byte layout of every PDU and nothing else: no sockets, no session state.
``encode_pdu`` turns a PDU dataclass into wire bytes; ``PduDecoder`` takes arbitrary
byte chunks and returns whole PDUs, enforcing the negotiated MaxRecvDataSegmentLength
and the optional CRC32C HeaderDigest/DataDigest (RFC 7143 sections 11.2.1, 13.1).

Field names are the RFC's in snake_case. Every BHS is read with one precompiled
``struct.Struct`` (the "word" layout below) and dispatched on the opcode: the hot path
(SCSI Command, Data-Out in; Data-In, SCSI Response, R2T out) stays one unpack/pack.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

import crc32c as _crc32c

from targetcli_preserve._errors import ProtocolError

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF  # RFC 7143 11.2.1.8: the reserved Initiator/Target Transfer Tag

_crc = _crc32c.crc32c

# The generic BHS layout: opcode byte, three flag/opcode-specific bytes, TotalAHSLength
# plus DataSegmentLength as one word, the 8-byte LUN (or ISID/TSIH), then eight words.
_WORDS = struct.Struct(">BBBBIQIIIIIIII")
# SCSI Command (11.3): same start, then EDTL, CmdSN, ExpStatSN and the 16-byte CDB.
_CMD = struct.Struct(">BBBBIQIIII16s")
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


# --------------------------------------------------------------------------- PDUs
# Each class: OPCODE; fields in RFC order; ``ahs``/``data`` last. ``_words`` gives the
# generic-layout tuple without byte 0's opcode and without the length word.


@dataclass(slots=True)
class NopOut:
    OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
    immediate: bool = True
    lun: int = 0
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            0x80,
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            self.cmd_sn,
            self.exp_stat_sn,
            0,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(i, w[5], w[6], w[7], w[8], w[9])


@dataclass(slots=True)
class NopIn:
    OPCODE: ClassVar[Opcode] = Opcode.NOP_IN
    lun: int = 0
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            0x80,
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(w[5], w[6], w[7], w[8], w[9], w[10])


@dataclass(slots=True)
class ScsiCommand:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_COMMAND
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

    def _words(self):
        b1 = (
            0x80
            | self.bidi_overflow << 4
            | self.bidi_underflow << 3
            | self.overflow << 2
            | self.underflow << 1
        )
        return (
            b1,
            self.response,
            self.status,
            0,
            self.initiator_task_tag,
            self.snack_tag,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            self.exp_data_sn,
            self.bidirectional_read_residual_count,
            self.residual_count,
        )

    @classmethod
    def _from(cls, w, i):
        b1 = w[1]
        return cls(
            bool(b1 & 0x10),
            bool(b1 & 0x08),
            bool(b1 & 0x04),
            bool(b1 & 0x02),
            w[2],
            w[3],
            w[6],
            w[7],
            w[8],
            w[9],
            w[10],
            w[11],
            w[12],
            w[13],
        )


@dataclass(slots=True)
class TaskManagementRequest:
    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_REQUEST
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

    def _words(self):
        return (
            0x80 | (self.function & 0x7F),
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.referenced_task_tag,
            self.cmd_sn,
            self.exp_stat_sn,
            self.ref_cmd_sn,
            self.exp_data_sn,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(i, w[1] & 0x7F, w[5], w[6], w[7], w[8], w[9], w[10], w[11])


@dataclass(slots=True)
class TaskManagementResponse:
    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_RESPONSE
    response: int = TmfResponse.FUNCTION_COMPLETE
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            0x80,
            self.response,
            0,
            0,
            self.initiator_task_tag,
            0,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(w[2], w[6], w[8], w[9], w[10])


def _login_flags(transit: bool, cont: bool, csg: int, nsg: int) -> int:
    return transit << 7 | cont << 6 | (csg & 3) << 2 | (nsg & 3)


@dataclass(slots=True)
class LoginRequest:
    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
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

    def _words(self):
        return (
            _login_flags(self.transit, self.cont, self.csg, self.nsg),
            self.version_max,
            self.version_min,
            self.isid << 16 | self.tsih,
            self.initiator_task_tag,
            self.cid << 16,
            self.cmd_sn,
            self.exp_stat_sn,
            0,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        b1 = w[1]
        return cls(
            bool(b1 & 0x80),
            bool(b1 & 0x40),
            b1 >> 2 & 3,
            b1 & 3,
            w[2],
            w[3],
            w[5] >> 16,
            w[5] & 0xFFFF,
            w[6],
            w[7] >> 16,
            w[8],
            w[9],
            immediate=i,
        )


@dataclass(slots=True)
class LoginResponse:
    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
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

    def _words(self):
        return (
            _login_flags(self.transit, self.cont, self.csg, self.nsg),
            self.version_max,
            self.version_active,
            self.isid << 16 | self.tsih,
            self.initiator_task_tag,
            0,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            self.status_class << 24 | self.status_detail << 16,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        b1 = w[1]
        return cls(
            bool(b1 & 0x80),
            bool(b1 & 0x40),
            b1 >> 2 & 3,
            b1 & 3,
            w[2],
            w[3],
            w[5] >> 16,
            w[5] & 0xFFFF,
            w[6],
            w[8],
            w[9],
            w[10],
            w[11] >> 24,
            w[11] >> 16 & 0xFF,
        )


@dataclass(slots=True)
class TextRequest:
    OPCODE: ClassVar[Opcode] = Opcode.TEXT_REQUEST
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

    def _words(self):
        return (
            self.final << 7 | self.cont << 6,
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            self.cmd_sn,
            self.exp_stat_sn,
            0,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(i, bool(w[1] & 0x80), bool(w[1] & 0x40), w[5], w[6], w[7], w[8], w[9])


@dataclass(slots=True)
class TextResponse:
    OPCODE: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
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

    def _words(self):
        return (
            self.final << 7 | self.cont << 6,
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(bool(w[1] & 0x80), bool(w[1] & 0x40), w[5], w[6], w[7], w[8], w[9], w[10])


@dataclass(slots=True)
class DataOut:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_OUT
    final: bool = True
    lun: int = 0
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    exp_stat_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            self.final << 7,
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            0,
            self.exp_stat_sn,
            0,
            self.data_sn,
            self.buffer_offset,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(bool(w[1] & 0x80), w[5], w[6], w[7], w[9], w[11], w[12])


@dataclass(slots=True)
class DataIn:
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_IN
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

    def _words(self):
        b1 = (
            self.final << 7
            | self.acknowledge << 6
            | self.overflow << 2
            | self.underflow << 1
            | self.status_present
        )
        return (
            b1,
            0,
            self.status,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            self.data_sn,
            self.buffer_offset,
            self.residual_count,
        )

    @classmethod
    def _from(cls, w, i):
        b1 = w[1]
        return cls(
            bool(b1 & 0x80),
            bool(b1 & 0x40),
            bool(b1 & 0x04),
            bool(b1 & 0x02),
            bool(b1 & 0x01),
            w[3],
            w[5],
            w[6],
            w[7],
            w[8],
            w[9],
            w[10],
            w[11],
            w[12],
            w[13],
        )


@dataclass(slots=True)
class LogoutRequest:
    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    immediate: bool = False
    reason_code: int = LogoutReason.CLOSE_SESSION
    initiator_task_tag: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            0x80 | (self.reason_code & 0x7F),
            0,
            0,
            0,
            self.initiator_task_tag,
            self.cid << 16,
            self.cmd_sn,
            self.exp_stat_sn,
            0,
            0,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(i, w[1] & 0x7F, w[6], w[7] >> 16, w[8], w[9])


@dataclass(slots=True)
class LogoutResponse:
    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    response: int = LogoutResponseCode.CLOSED_SUCCESSFULLY
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    time2wait: int = 0
    time2retain: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            0x80,
            self.response,
            0,
            0,
            self.initiator_task_tag,
            0,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            0,
            self.time2wait << 16 | self.time2retain,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(w[2], w[6], w[8], w[9], w[10], w[12] >> 16, w[12] & 0xFFFF)


@dataclass(slots=True)
class R2T:
    OPCODE: ClassVar[Opcode] = Opcode.R2T
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

    def _words(self):
        return (
            0x80,
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            self.r2t_sn,
            self.buffer_offset,
            self.desired_data_transfer_length,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(w[5], w[6], w[7], w[8], w[9], w[10], w[11], w[12], w[13])


@dataclass(slots=True)
class AsyncMessage:
    OPCODE: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
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

    def _words(self):
        return (
            0x80,
            0,
            0,
            self.lun,
            RESERVED_TAG,
            0,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            self.async_event << 24 | self.async_vcode << 16 | self.parameter1,
            self.parameter2 << 16 | self.parameter3,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(
            w[5],
            w[8],
            w[9],
            w[10],
            w[11] >> 24,
            w[11] >> 16 & 0xFF,
            w[11] & 0xFFFF,
            w[12] >> 16,
            w[12] & 0xFFFF,
        )


@dataclass(slots=True)
class Reject:
    OPCODE: ClassVar[Opcode] = Opcode.REJECT
    reason: int = RejectReason.PROTOCOL_ERROR
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0  # DataSN/R2TSN
    ahs: bytes = b""
    data: bytes = b""  # the complete header of the rejected PDU (11.17.3)

    def _words(self):
        return (
            0x80,
            self.reason,
            0,
            0,
            RESERVED_TAG,
            0,
            self.stat_sn,
            self.exp_cmd_sn,
            self.max_cmd_sn,
            self.data_sn,
            0,
            0,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(w[2], w[8], w[9], w[10], w[11])


@dataclass(slots=True)
class Snack:
    OPCODE: ClassVar[Opcode] = Opcode.SNACK_REQUEST
    type: int = 0
    lun: int = 0
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    exp_stat_sn: int = 0
    beg_run: int = 0
    run_length: int = 0
    ahs: bytes = b""
    data: bytes = b""

    def _words(self):
        return (
            0x80 | (self.type & 0x0F),
            0,
            0,
            self.lun,
            self.initiator_task_tag,
            self.target_transfer_tag,
            0,
            self.exp_stat_sn,
            0,
            0,
            self.beg_run,
            self.run_length,
        )

    @classmethod
    def _from(cls, w, i):
        return cls(w[1] & 0x0F, w[5], w[6], w[7], w[9], w[12], w[13])


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

_INITIATOR_OPCODES = frozenset(
    {
        Opcode.NOP_OUT,
        Opcode.SCSI_COMMAND,
        Opcode.TASK_MGMT_REQUEST,
        Opcode.LOGIN_REQUEST,
        Opcode.TEXT_REQUEST,
        Opcode.SCSI_DATA_OUT,
        Opcode.LOGOUT_REQUEST,
        Opcode.SNACK_REQUEST,
    }
)

_BY_OPCODE = {
    cls.OPCODE.value: cls
    for cls in (
        NopOut,
        NopIn,
        TaskManagementRequest,
        TaskManagementResponse,
        LoginRequest,
        LoginResponse,
        TextRequest,
        TextResponse,
        DataOut,
        DataIn,
        LogoutRequest,
        LogoutResponse,
        R2T,
        AsyncMessage,
        Reject,
        Snack,
        ScsiResponsePdu,
    )
}


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
    lengths = (ahs_len >> 2) << 24 | dsl
    if type(pdu) is ScsiCommand:
        b1 = pdu.final << 7 | pdu.read << 6 | pdu.write << 5 | (pdu.attr & 7)
        cdb = pdu.cdb[:16].ljust(16, b"\0")
        return _CMD.pack(
            pdu.immediate << 6 | 0x01,
            b1,
            0,
            0,
            lengths,
            pdu.lun,
            pdu.initiator_task_tag,
            pdu.expected_data_transfer_length,
            pdu.cmd_sn,
            pdu.exp_stat_sn,
            cdb,
        )
    w = pdu._words()
    op = pdu.OPCODE
    if op in _INITIATOR_OPCODES and getattr(pdu, "immediate", False):
        op |= 0x40
    return _WORDS.pack(op, w[0], w[1], w[2], lengths, *w[3:])


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
    opbyte = bhs[0]
    op = opbyte & 0x3F
    immediate = bool(opbyte & 0x40)
    if op == 0x01:
        f = _CMD.unpack_from(bhs)
        b1 = f[1]
        return ScsiCommand(
            immediate,
            bool(b1 & 0x80),
            bool(b1 & 0x40),
            bool(b1 & 0x20),
            b1 & 7,
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            f[10],
            ahs,
            data,
        )
    cls = _BY_OPCODE.get(op)
    if cls is None:
        raise PduError(
            f"unknown opcode 0x{op:02x}", bytes(bhs[:BHS_LEN]), RejectReason.COMMAND_NOT_SUPPORTED
        )
    pdu = cls._from(_WORDS.unpack_from(bhs), immediate)
    pdu.ahs = ahs
    pdu.data = data
    return pdu


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
