"""The iSCSI PDU codec (RFC 7143 section 11), as the rest of the product imports it.

Everything here is defined in one of four modules, each with one job; this module only
gathers their public names:

* ``codes.py``: opcodes, reason and status codes, stages, the LUN field;
* ``layout.py``: the BHS layout language and the compiler that generates each PDU
  class's pack function and decoder from its table (``PduBase``);
* ``pdus.py``: the 18 PDU dataclasses, ``TargetPdu`` (those carrying StatSN, ExpCmdSN
  and MaxCmdSN) and ``decode_bhs``;
* ``framing.py``: whole PDUs on the wire, digests, and the stream decoder ``PduDecoder``.

``encode_pdu`` turns a PDU dataclass into wire bytes; ``PduDecoder`` takes arbitrary
byte chunks and returns whole PDUs. Field names are the RFC's in snake_case. No
sockets and no session state anywhere in the codec.
"""

from __future__ import annotations

from targetcli_preserve.iscsi.codes import (
    BHS_LEN,
    RESERVED_TAG,
    LoginStatus,
    LogoutReason,
    LogoutResponseCode,
    Opcode,
    RejectReason,
    ScsiServiceResponse,
    Stage,
    TmfFunction,
    TmfResponse,
    field_to_lun,
    lun_to_field,
)
from targetcli_preserve.iscsi.framing import (
    BadPdu,
    DigestError,
    PduDecoder,
    decode_pdu,
    encode_bhs,
    encode_pdu,
)
from targetcli_preserve.iscsi.layout import PduBase
from targetcli_preserve.iscsi.pdus import (
    R2T,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    PduError,
    Reject,
    ScsiCommand,
    ScsiResponsePdu,
    Snack,
    TargetPdu,
    TaskManagementRequest,
    TaskManagementResponse,
    TextRequest,
    TextResponse,
    decode_bhs,
)

__all__ = [
    "BHS_LEN",
    "R2T",
    "RESERVED_TAG",
    "AsyncMessage",
    "BadPdu",
    "DataIn",
    "DataOut",
    "DigestError",
    "LoginRequest",
    "LoginResponse",
    "LoginStatus",
    "LogoutReason",
    "LogoutRequest",
    "LogoutResponse",
    "LogoutResponseCode",
    "NopIn",
    "NopOut",
    "Opcode",
    "Pdu",
    "PduBase",
    "PduDecoder",
    "PduError",
    "Reject",
    "RejectReason",
    "ScsiCommand",
    "ScsiResponsePdu",
    "ScsiServiceResponse",
    "Snack",
    "Stage",
    "TargetPdu",
    "TaskManagementRequest",
    "TaskManagementResponse",
    "TextRequest",
    "TextResponse",
    "TmfFunction",
    "TmfResponse",
    "decode_bhs",
    "decode_pdu",
    "encode_bhs",
    "encode_pdu",
    "field_to_lun",
    "lun_to_field",
]
