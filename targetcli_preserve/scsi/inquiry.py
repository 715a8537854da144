"""INQUIRY data: the standard page (SPC-4 6.6.2) and the vital product data pages.

VPD pages served: 00h supported pages, 80h unit serial number, 83h device
identification (SPC-4 7.8), B0h block limits, B1h block device characteristics and
B2h logical block provisioning (SBC-3 6.6). Data here is built whole; the caller cuts
it to the ALLOCATION LENGTH (SPC-4 4.2.5.6).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .cdb import Inquiry
from .lu import LogicalUnit
from .sense import invalid_field

T10_VENDOR = b"PRESERVE"  # 8 bytes, SPC-4 6.6.2 T10 VENDOR IDENTIFICATION
PRODUCT = b"PRESERVE-LUN".ljust(16)
REVISION = b"0001"


class PeripheralDevice(enum.IntEnum):
    """Byte 0 of INQUIRY data: qualifier (bits 7-5) and device type (4-0), SPC-4 6.6.2."""

    DIRECT_ACCESS = 0x00  # qualifier 000b, type 00h (SBC-3)
    NOT_PRESENT = 0x7F  # qualifier 011b (no LU at this LUN), type 1Fh (unknown)


class VpdPage(enum.IntEnum):
    SUPPORTED_PAGES = 0x00
    UNIT_SERIAL_NUMBER = 0x80
    DEVICE_IDENTIFICATION = 0x83
    BLOCK_LIMITS = 0xB0
    BLOCK_DEVICE_CHARACTERISTICS = 0xB1
    LOGICAL_BLOCK_PROVISIONING = 0xB2


class VersionDescriptor(enum.IntEnum):
    """SPC-4 6.6.2, table 150 (version descriptor values, no particular revision)."""

    SAM_5 = 0x00A0
    ISCSI = 0x0960
    SPC_4 = 0x0460
    SBC_3 = 0x04C0


class CodeSet(enum.IntEnum):
    BINARY = 1
    ASCII = 2


class DesignatorType(enum.IntEnum):
    T10_VENDOR_ID = 1
    NAA = 3


_VERSION_SPC4 = 0x06
_RESPONSE_DATA_FORMAT = 0x02
_HISUP = 0x10
_CMDQUE = 0x02
_STANDARD_LENGTH = 74  # through the eighth version descriptor (bytes 58-73)
_ASSOCIATION_LU = 0x00
_BLOCK_LIMITS_LENGTH = 0x3C  # SBC-3 6.6.3: page length for SBC-3 devices
_BDC_LENGTH = 0x3C
_NON_ROTATING = 0x0001  # SBC-3 6.6.2 MEDIUM ROTATION RATE


def standard(device: PeripheralDevice = PeripheralDevice.DIRECT_ACCESS) -> bytes:
    """Standard INQUIRY data, 74 bytes (SPC-4 6.6.2, table 138)."""
    buf = bytearray(_STANDARD_LENGTH)
    buf[0] = device
    buf[2] = _VERSION_SPC4
    buf[3] = _HISUP | _RESPONSE_DATA_FORMAT  # NORMACA=0: we do not support ACA
    buf[4] = _STANDARD_LENGTH - 5  # ADDITIONAL LENGTH (n - 4)
    buf[7] = _CMDQUE
    buf[8:16] = T10_VENDOR
    buf[16:32] = PRODUCT
    buf[32:36] = REVISION
    for i, descriptor in enumerate(VersionDescriptor):
        buf[58 + 2 * i : 60 + 2 * i] = descriptor.to_bytes(2, "big")
    return bytes(buf)


def _page(code: VpdPage, body: bytes, device: int = PeripheralDevice.DIRECT_ACCESS) -> bytes:
    return bytes((device, code)) + len(body).to_bytes(2, "big") + body


def _designator(code_set: CodeSet, kind: DesignatorType, value: bytes) -> bytes:
    # SPC-4 7.8.6.1, table 459: PROTOCOL IDENTIFIER 0/CODE SET, PIV=0/ASSOCIATION/TYPE
    return bytes((code_set, _ASSOCIATION_LU | kind, 0, len(value))) + value


def supported_pages(device: int = PeripheralDevice.DIRECT_ACCESS) -> bytes:
    """VPD 00h (SPC-4 7.8.13): page codes in ascending order."""
    pages = [VpdPage.SUPPORTED_PAGES]
    if device == PeripheralDevice.DIRECT_ACCESS:
        pages = sorted(VpdPage)
    return _page(VpdPage.SUPPORTED_PAGES, bytes(pages), device)


def unit_serial(lu: LogicalUnit) -> bytes:
    """VPD 80h (SPC-4 7.8.15)."""
    return _page(VpdPage.UNIT_SERIAL_NUMBER, lu.identity.serial.encode("ascii"))


def device_identification(lu: LogicalUnit) -> bytes:
    """VPD 83h (SPC-4 7.8.6): an NAA 6 designator and a T10 vendor ID designator."""
    naa = _designator(CodeSet.BINARY, DesignatorType.NAA, lu.identity.naa())
    t10 = _designator(
        CodeSet.ASCII,
        DesignatorType.T10_VENDOR_ID,
        T10_VENDOR + lu.identity.serial.encode("ascii"),
    )
    return _page(VpdPage.DEVICE_IDENTIFICATION, naa + t10)


def block_limits(lu: LogicalUnit) -> bytes:
    """VPD B0h (SBC-3 6.6.3). No UNMAP, no WRITE SAME, no COMPARE AND WRITE."""
    body = bytearray(_BLOCK_LIMITS_LENGTH)
    # offsets below are page offsets minus the 4-byte header
    body[2:4] = (1).to_bytes(2, "big")  # OPTIMAL TRANSFER LENGTH GRANULARITY
    body[4:8] = lu.max_transfer_blocks.to_bytes(4, "big")  # MAXIMUM TRANSFER LENGTH
    body[8:12] = lu.max_transfer_blocks.to_bytes(4, "big")  # OPTIMAL TRANSFER LENGTH
    return _page(VpdPage.BLOCK_LIMITS, bytes(body))


def block_device_characteristics(lu: LogicalUnit) -> bytes:
    """VPD B1h (SBC-3 6.6.2): non-rotating medium, form factor not reported."""
    body = bytearray(_BDC_LENGTH)
    body[0:2] = _NON_ROTATING.to_bytes(2, "big")
    return _page(VpdPage.BLOCK_DEVICE_CHARACTERISTICS, bytes(body))


def logical_block_provisioning(lu: LogicalUnit) -> bytes:
    """VPD B2h (SBC-3 6.6.4): LBPU/LBPWS/LBPWS10 = 0 (no unmapping), type not reported."""
    return _page(VpdPage.LOGICAL_BLOCK_PROVISIONING, bytes(4))


# Keyed by the raw PAGE CODE of the CDB, which may name a page we do not have.
_VPD_BUILDERS: dict[int, Callable[[LogicalUnit], bytes]] = {
    VpdPage.UNIT_SERIAL_NUMBER: unit_serial,
    VpdPage.DEVICE_IDENTIFICATION: device_identification,
    VpdPage.BLOCK_LIMITS: block_limits,
    VpdPage.BLOCK_DEVICE_CHARACTERISTICS: block_device_characteristics,
    VpdPage.LOGICAL_BLOCK_PROVISIONING: logical_block_provisioning,
}


def inquiry(lu: LogicalUnit | None, cmd: Inquiry) -> bytes:
    """The INQUIRY data for ``cmd`` (not yet cut to the allocation length).

    ``lu`` is None when no logical unit is at this LUN: SPC-4 6.6.2 has the device
    server answer with peripheral qualifier 011b; only page 00h is served then."""
    device = PeripheralDevice.DIRECT_ACCESS if lu is not None else PeripheralDevice.NOT_PRESENT
    if not cmd.evpd:
        return standard(device)
    if cmd.page_code == VpdPage.SUPPORTED_PAGES:
        return supported_pages(device)
    builder = _VPD_BUILDERS.get(cmd.page_code)
    if builder is None or lu is None:
        # SPC-4 6.6.1: a page code we do not support is an invalid field in the CDB
        raise invalid_field(2)
    return builder(lu)
