"""The PDUs of RFC 7143 section 11 as dataclasses, and the BHS decoder that picks one.

Owns one class per PDU: its fields, named as in the RFC in snake_case and in the RFC's
order, their defaults, and its BHS layout (``_BHS``, in the language of ``layout.py``),
which is compiled into the class's pack function and decoder at import.
:func:`decode_bhs` dispatches on the opcode to those decoders. Framing (lengths,
padding, digests, the stream decoder) is ``framing.py``'s.

Longer than most modules here on purpose: it is the table of all 18 PDUs, one class
each, and reads best as one piece, every layout next to the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, get_args

from targetcli_preserve._errors import ProtocolError
from targetcli_preserve.iscsi.codes import (
    BHS_LEN,
    RESERVED_TAG,
    LogoutReason,
    LogoutResponseCode,
    Opcode,
    RejectReason,
    ScsiServiceResponse,
    TmfFunction,
    TmfResponse,
)
from targetcli_preserve.iscsi.layout import (
    Bytes,
    Layout,
    PduBase,
    bits,
    compile_layout,
    flag,
    part,
)


class PduError(ProtocolError):
    """A PDU that cannot be decoded; ``header`` is its BHS when one was read."""

    def __init__(self, message: str, header: bytes = b"", reason: int = 0x04) -> None:
        super().__init__(message)
        self.header = header
        self.reason = reason  # RejectReason to answer with, if the connection survives


# T, C, CSG, NSG: byte 1 of Login Request and Response (RFC 7143 11.12.1-11.12.3).
_LOGIN_FLAGS = (flag("transit", 7), flag("cont", 6), bits("csg", 2, 2), bits("nsg", 0, 2))


# --------------------------------------------------------------------------- the PDUs
# Each class: OPCODE; fields in RFC order; ``ahs``/``data`` last; ``_BHS`` its layout.


@dataclass(slots=True)
class NopOut(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.18
        0: flag("immediate", 6),
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
class NopIn(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.NOP_IN
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.19
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
class ScsiCommand(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_COMMAND
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.3
        0: flag("immediate", 6),
        1: (flag("final", 7), flag("read", 6), flag("write", 5), bits("attr", 0, 3)),
        8: "lun",
        16: "initiator_task_tag",
        20: "expected_data_transfer_length",
        24: "cmd_sn",
        28: "exp_stat_sn",
        32: Bytes("cdb", 16),  # 11.3.5: shorter CDBs are zero-padded, longer cut
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
class ScsiResponsePdu(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_RESPONSE
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.4
        1: (
            0x80,
            flag("bidi_overflow", 4),
            flag("bidi_underflow", 3),
            flag("overflow", 2),
            flag("underflow", 1),
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
class TaskManagementRequest(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_REQUEST
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.5
        0: flag("immediate", 6),
        1: (0x80, bits("function", 0, 7)),
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
class TaskManagementResponse(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.TASK_MGMT_RESPONSE
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.6
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
class LoginRequest(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.12
        0: flag("immediate", 6),
        1: _LOGIN_FLAGS,
        2: "version_max",
        3: "version_min",
        8: (part("isid", 16, 48), part("tsih", 0, 16)),
        16: "initiator_task_tag",
        20: part("cid", 16, 16),
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
class LoginResponse(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.13
        1: _LOGIN_FLAGS,
        2: "version_max",
        3: "version_active",
        8: (part("isid", 16, 48), part("tsih", 0, 16)),
        16: "initiator_task_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: (part("status_class", 24, 8), part("status_detail", 16, 8)),
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
class TextRequest(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.TEXT_REQUEST
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.10
        0: flag("immediate", 6),
        1: (flag("final", 7), flag("cont", 6)),
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
class TextResponse(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.11
        1: (flag("final", 7), flag("cont", 6)),
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
class DataOut(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_OUT
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.7
        1: flag("final", 7),
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
class DataIn(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_IN
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.7
        1: (
            flag("final", 7),
            flag("acknowledge", 6),
            flag("overflow", 2),
            flag("underflow", 1),
            flag("status_present", 0),
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
    data: bytes | memoryview = b""  # may be a view into the read data: no copy


@dataclass(slots=True)
class LogoutRequest(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.14
        0: flag("immediate", 6),
        1: (0x80, bits("reason_code", 0, 7)),
        16: "initiator_task_tag",
        20: part("cid", 16, 16),
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
class LogoutResponse(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.15
        1: 0x80,
        2: "response",
        16: "initiator_task_tag",
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        40: (part("time2wait", 16, 16), part("time2retain", 0, 16)),
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
class R2T(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.R2T
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.8
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
class AsyncMessage(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.9
        1: 0x80,
        8: "lun",
        16: RESERVED_TAG,
        24: "stat_sn",
        28: "exp_cmd_sn",
        32: "max_cmd_sn",
        36: (part("async_event", 24, 8), part("async_vcode", 16, 8), part("parameter1", 0, 16)),
        40: (part("parameter2", 16, 16), part("parameter3", 0, 16)),
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
class Reject(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.REJECT
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.17
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
class Snack(PduBase):
    OPCODE: ClassVar[Opcode] = Opcode.SNACK_REQUEST
    _BHS: ClassVar[Layout] = {  # RFC 7143 11.16
        1: (0x80, bits("type", 0, 4)),
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

# What a target sends in full feature phase: each carries StatSN, ExpCmdSN and MaxCmdSN
# (RFC 7143 4.2.2), which the session fills in at one place.
TargetPdu = (
    NopIn
    | ScsiResponsePdu
    | TaskManagementResponse
    | TextResponse
    | DataIn
    | LogoutResponse
    | R2T
    | AsyncMessage
    | Reject
)


# --------------------------------------------------------------------------- decoding


def _unknown_opcode(bhs: bytes | memoryview, ahs: bytes, data: bytes) -> Pdu:
    raise PduError(
        f"unknown opcode 0x{bhs[0] & 0x3F:02x}",
        bytes(bhs[:BHS_LEN]),
        RejectReason.COMMAND_NOT_SUPPORTED,
    )


# 6-bit opcode -> decode(bhs, ahs, data) -> PDU: the decoders, by opcode (decode_bhs)
DECODERS: list[Callable[[bytes | memoryview, bytes, bytes], Pdu]] = [_unknown_opcode] * 64
for _cls in get_args(Pdu):
    _pdu_cls: type[Pdu] = _cls
    DECODERS[_pdu_cls.OPCODE] = compile_layout(_pdu_cls)
del _cls, _pdu_cls


def decode_bhs(bhs: bytes | memoryview, ahs: bytes = b"", data: bytes = b"") -> Pdu:
    """Decode one BHS (48 bytes) into its PDU dataclass, attaching ``ahs`` and ``data``.

    Raises PduError (reason COMMAND_NOT_SUPPORTED) for an unknown opcode."""
    return DECODERS[bhs[0] & 0x3F](bhs, ahs, data)
