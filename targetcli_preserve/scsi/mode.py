"""MODE SENSE(6)/(10): the mode parameter header, block descriptor and mode pages.

Pages served (current = default values; nothing is changeable, since MODE SELECT is
not supported; saved values are not implemented):
  08h caching (SBC-3 6.4.5): WCE=1, a write-back cache: writes are durable after
      SYNCHRONIZE CACHE or when written with FUA=1 (DESIGN rule 8).
  0Ah control (SPC-4 7.5.8): D_SENSE=0, so sense data is fixed format.
  1Ch informational exceptions control (SPC-4 7.5.11): DEXCPT=1, no reporting.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .cdb import ModeSense, PageControl
from .lu import LogicalUnit
from .sense import Asc, illegal, invalid_field


class ModePage(enum.IntEnum):
    CACHING = 0x08
    CONTROL = 0x0A
    INFORMATIONAL_EXCEPTIONS = 0x1C
    ALL = 0x3F


ALL_SUBPAGES = 0xFF
_WCE = 0x04  # caching page byte 2
_DEXCPT = 0x08  # informational exceptions page byte 2
_BUSY_TIMEOUT_UNLIMITED = 0xFFFF  # control page bytes 8-9
# SBC-3 6.4.1 DEVICE-SPECIFIC PARAMETER: WP (bit 7) = 0, DPOFUA (bit 4) = 1: we accept
# DPO and FUA in READ/WRITE CDBs.
_DEVICE_SPECIFIC_DPOFUA = 0x10
_LONGLBA = 0x01


def _caching(changeable: bool) -> bytes:
    body = bytearray(0x12)
    if not changeable:
        body[0] = _WCE
    return bytes((ModePage.CACHING, len(body))) + bytes(body)


def _control(changeable: bool) -> bytes:
    # TST=0, QUEUE ALGORITHM MODIFIER=0 (restricted reordering), QERR=0, SWP=0, TAS=0
    body = bytearray(0x0A)
    if not changeable:
        body[6:8] = _BUSY_TIMEOUT_UNLIMITED.to_bytes(2, "big")
    return bytes((ModePage.CONTROL, len(body))) + bytes(body)


def _informational_exceptions(changeable: bool) -> bytes:
    body = bytearray(0x0A)
    if not changeable:
        body[0] = _DEXCPT
    return bytes((ModePage.INFORMATIONAL_EXCEPTIONS, len(body))) + bytes(body)


# Keyed by the raw PAGE CODE of the CDB, which may name a page we do not have.
_PAGES: dict[int, Callable[[bool], bytes]] = {
    ModePage.CACHING: _caching,
    ModePage.CONTROL: _control,
    ModePage.INFORMATIONAL_EXCEPTIONS: _informational_exceptions,
}


def _pages(cmd: ModeSense) -> bytes:
    # SPC-4 6.11: PC=11b asks for saved values, which we do not implement.
    if cmd.page_control is PageControl.SAVED:
        raise illegal(Asc.SAVING_PARAMETERS_NOT_SUPPORTED)
    changeable = cmd.page_control is PageControl.CHANGEABLE
    if cmd.page_code == ModePage.ALL:
        # SPC-4 table 96: 3Fh/00h all pages, 3Fh/FFh all pages and subpages (we have none)
        if cmd.subpage_code not in (0x00, ALL_SUBPAGES):
            raise invalid_field(3)
        return b"".join(build(changeable) for _, build in sorted(_PAGES.items()))
    builder = _PAGES.get(cmd.page_code)
    if builder is None:
        raise invalid_field(2, 5)
    if cmd.subpage_code not in (0x00, ALL_SUBPAGES):
        raise invalid_field(3)
    return builder(changeable)


def _block_descriptor(lu: LogicalUnit, long_lba: bool) -> bytes:
    if long_lba:  # SBC-3 6.4.2.3, 16 bytes
        return lu.num_blocks.to_bytes(8, "big") + bytes(4) + lu.block_size.to_bytes(4, "big")
    # SBC-3 6.4.2.2: NUMBER OF LOGICAL BLOCKS saturates at FFFFFFFFh
    count = min(lu.num_blocks, 0xFFFFFFFF)
    return count.to_bytes(4, "big") + b"\x00" + lu.block_size.to_bytes(3, "big")


def mode_sense(lu: LogicalUnit, cmd: ModeSense) -> bytes:
    """Mode parameter data for ``cmd`` (SPC-4 7.5.4/7.5.5), not yet cut to length."""
    pages = _pages(cmd)
    long_lba = cmd.ten and cmd.llbaa
    descriptor = b"" if cmd.dbd else _block_descriptor(lu, long_lba)
    if cmd.ten:
        # SPC-4 7.5.5: MODE DATA LENGTH (2) excludes itself; header is 8 bytes
        rest = bytes((0, _DEVICE_SPECIFIC_DPOFUA, _LONGLBA if long_lba and descriptor else 0, 0))
        rest += len(descriptor).to_bytes(2, "big") + descriptor + pages
        return (len(rest)).to_bytes(2, "big") + rest
    rest = bytes((0, _DEVICE_SPECIFIC_DPOFUA, len(descriptor))) + descriptor + pages
    return bytes((len(rest),)) + rest
