"""REPORT LUNS parameter data and the single-level LUN format (SPC-4 6.33, SAM-5 4.7).

LUNs 0-255 use peripheral device addressing (SAM-5 4.7.7.2), 256-16383 flat space
addressing (SAM-5 4.7.7.4). We have no well-known logical units.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from .cdb import ReportLuns, SelectReport

MAX_LUN = 0x3FFF  # largest LUN a single-level flat space address can carry


class AddressMethod(enum.IntEnum):
    """Bits 7-6 of byte 0 of a single-level LUN (SAM-5 4.7.7.1, table 11)."""

    PERIPHERAL_DEVICE = 0b00
    FLAT_SPACE = 0b01


def encode_lun(lun: int) -> bytes:
    """The eight-byte single-level LUN structure for ``lun``."""
    if not 0 <= lun <= MAX_LUN:
        raise ValueError(f"LUN {lun} is outside 0..{MAX_LUN}")
    if lun < 256:
        first = AddressMethod.PERIPHERAL_DEVICE << 6  # BUS IDENTIFIER 0
        return bytes((first, lun)) + bytes(6)
    first = (AddressMethod.FLAT_SPACE << 6) | (lun >> 8)
    return bytes((first, lun & 0xFF)) + bytes(6)


def decode_lun(raw: bytes) -> int:
    """The LUN number of a single-level LUN structure (the inverse of encode_lun)."""
    method = raw[0] >> 6
    if method == AddressMethod.PERIPHERAL_DEVICE:
        return raw[1]
    if method == AddressMethod.FLAT_SPACE:
        return ((raw[0] & 0x3F) << 8) | raw[1]
    raise ValueError(f"unsupported LUN address method {method}")


def report_luns(luns: Iterable[int], cmd: ReportLuns) -> bytes:
    """REPORT LUNS parameter data, not yet cut to the allocation length."""
    if cmd.select_report is SelectReport.WELL_KNOWN_ONLY:
        chosen: list[int] = []
    else:
        # SAM-5 4.6.2 (and SPC-4 6.33): LUN 0 is reported even with no LU configured
        chosen = sorted(set(luns)) or [0]
    body = b"".join(encode_lun(lun) for lun in chosen)
    return len(body).to_bytes(4, "big") + bytes(4) + body
