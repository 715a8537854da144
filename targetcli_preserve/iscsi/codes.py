"""The numbers of RFC 7143 that are not sequence numbers: opcodes, reason and status
codes, login stages, reserved values, and the 8-byte LUN field.

Owns the vocabulary the codec (``pdus.py``), the login (``login.py``) and the session
(``session.py``) share; nothing here packs bytes. Each enum cites the section of
RFC 7143 that defines its values.
"""

from __future__ import annotations

import enum

BHS_LEN = 48  # RFC 7143 11.2: the Basic Header Segment is 48 bytes
RESERVED_TAG = 0xFFFFFFFF  # RFC 7143 11.2.1.8: the reserved Initiator/Target Transfer Tag


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


# --------------------------------------------------------------------------- LUN field (SAM-5 4.6)


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
