"""Sense data: sense keys, ASC/ASCQ codes, SenseError and the two sense data formats.

Owns how a failed command is described to the initiator (SPC-4 4.5). Command handlers
raise :class:`SenseError`; the target turns it into CHECK CONDITION with
:func:`fixed_sense` (the format we report, since the control mode page has D_SENSE=0)
or, for REQUEST SENSE with DESC=1, :func:`descriptor_sense`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SenseKey(enum.IntEnum):
    """SPC-4 4.5.6, table 27."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


class Asc(enum.Enum):
    """Additional sense code and qualifier pairs (SPC-4 4.5.6, table 28) we report."""

    NO_ADDITIONAL_SENSE_INFORMATION = (0x00, 0x00)
    WRITE_ERROR = (0x0C, 0x00)
    INVALID_FIELD_IN_INFORMATION_UNIT = (0x0E, 0x03)
    UNRECOVERED_READ_ERROR = (0x11, 0x00)
    MISCOMPARE_DURING_VERIFY_OPERATION = (0x1D, 0x00)
    PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
    INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE = (0x21, 0x00)
    INVALID_FIELD_IN_CDB = (0x24, 0x00)
    LOGICAL_UNIT_NOT_SUPPORTED = (0x25, 0x00)
    SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00)
    INTERNAL_TARGET_FAILURE = (0x44, 0x00)
    DATA_PHASE_ERROR = (0x4B, 0x00)

    @property
    def asc(self) -> int:
        return self.value[0]

    @property
    def ascq(self) -> int:
        return self.value[1]


class ResponseCode(enum.IntEnum):
    """Byte 0 of sense data (SPC-4 4.5.1, table 12)."""

    FIXED_CURRENT = 0x70
    FIXED_DEFERRED = 0x71
    DESCRIPTOR_CURRENT = 0x72
    DESCRIPTOR_DEFERRED = 0x73


FIXED_SENSE_LENGTH = 18  # SPC-4 4.5.3: additional sense length 10
_VALID = 0x80  # fixed format byte 0: INFORMATION field is valid
_SKSV = 0x80  # sense-key specific byte 15: the field is valid
_CD = 0x40  # field pointer: error is in the CDB (not the parameter list)
_BPV = 0x08  # field pointer: BIT POINTER is valid
_SKS_DESCRIPTOR_TYPE = 0x02  # SPC-4 4.5.2.4: sense key specific sense data descriptor


@dataclass(frozen=True, slots=True)
class FieldPointer:
    """Which byte (and bit) of the CDB or parameter list is in error (SPC-4 4.5.2.4.2)."""

    byte: int
    bit: int | None = None  # the most significant bit of the field, if known
    in_cdb: bool = True

    def encode(self) -> bytes:
        """The three SENSE KEY SPECIFIC bytes (byte 15-17 of fixed sense)."""
        first = _SKSV | (_CD if self.in_cdb else 0)
        if self.bit is not None:
            first |= _BPV | (self.bit & 0x07)
        return bytes((first,)) + (self.byte & 0xFFFF).to_bytes(2, "big")


class SenseError(Exception):
    """A command ends in CHECK CONDITION with this sense. Raised by handlers."""

    def __init__(
        self,
        key: SenseKey,
        asc: Asc,
        field: FieldPointer | None = None,
        information: int | None = None,
    ) -> None:
        super().__init__(f"{key.name}: {asc.name}")
        self.key = key
        self.asc = asc
        self.field = field
        self.information = information

    def fixed(self) -> bytes:
        return fixed_sense(self.key, self.asc, self.field, self.information)

    def descriptor(self) -> bytes:
        return descriptor_sense(self.key, self.asc, self.field)


def invalid_field(byte: int, bit: int | None = None) -> SenseError:
    """ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at ``byte`` (and ``bit``)."""
    return SenseError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, FieldPointer(byte, bit))


def illegal(asc: Asc) -> SenseError:
    """ILLEGAL REQUEST with ``asc`` and no field pointer."""
    return SenseError(SenseKey.ILLEGAL_REQUEST, asc)


def fixed_sense(
    key: SenseKey,
    asc: Asc,
    field: FieldPointer | None = None,
    information: int | None = None,
) -> bytes:
    """Fixed-format current sense data, 18 bytes (SPC-4 4.5.3, table 26)."""
    buf = bytearray(FIXED_SENSE_LENGTH)
    buf[0] = ResponseCode.FIXED_CURRENT
    if information is not None:
        buf[0] |= _VALID
        buf[3:7] = (information & 0xFFFFFFFF).to_bytes(4, "big")
    buf[2] = key
    buf[7] = FIXED_SENSE_LENGTH - 8
    buf[12] = asc.asc
    buf[13] = asc.ascq
    if field is not None:
        buf[15:18] = field.encode()
    return bytes(buf)


def descriptor_sense(key: SenseKey, asc: Asc, field: FieldPointer | None = None) -> bytes:
    """Descriptor-format current sense data (SPC-4 4.5.2), with a sense key specific
    descriptor (4.5.2.4) when a field pointer is given."""
    descriptors = b""
    if field is not None:
        descriptors = bytes((_SKS_DESCRIPTOR_TYPE, 0x06, 0, 0)) + field.encode() + b"\x00"
    head = bytes((ResponseCode.DESCRIPTOR_CURRENT, key, asc.asc, asc.ascq, 0, 0, 0))
    return head + bytes((len(descriptors),)) + descriptors
