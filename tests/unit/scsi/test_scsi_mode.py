"""MODE SENSE(6)/(10): header, block descriptors and pages (SPC-4 6.11, 6.12, 7.5)."""

from __future__ import annotations

import pytest
from helpers.scsi_testlib import field_pointer, mode_sense6, mode_sense10, run, sense_of

from targetcli_preserve.scsi.target import ScsiStatus

CACHING = bytes((0x08, 0x12, 0x04)) + bytes(17)  # WCE=1
CONTROL = bytes((0x0A, 0x0A, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0))  # D_SENSE=0, SWP=0
IEC = bytes((0x1C, 0x0A, 0x08)) + bytes(9)  # DEXCPT=1
SHORT_DESCRIPTOR = (2048).to_bytes(4, "big") + b"\x00" + (512).to_bytes(3, "big")


async def test_mode_sense6_caching_page(target):
    r = await run(target, mode_sense6(0x08))
    assert r.status is ScsiStatus.GOOD
    d = r.data
    # header: MODE DATA LENGTH, MEDIUM TYPE, DEVICE-SPECIFIC (DPOFUA), BLOCK DESC LENGTH
    assert d[:4] == bytes((len(d) - 1, 0x00, 0x10, 8))
    assert d[4:12] == SHORT_DESCRIPTOR
    assert d[12:] == CACHING


async def test_mode_sense6_dbd(target):
    d = (await run(target, mode_sense6(0x0A, dbd=True))).data
    assert d == bytes((3 + len(CONTROL), 0, 0x10, 0)) + CONTROL


async def test_mode_sense6_all_pages_in_order(target):
    d = (await run(target, mode_sense6(0x3F))).data
    assert d[0] == len(d) - 1
    assert d[4:12] == SHORT_DESCRIPTOR
    assert d[12:] == CACHING + CONTROL + IEC


async def test_all_pages_and_subpages(target):
    a = (await run(target, mode_sense6(0x3F, sub=0xFF))).data
    b = (await run(target, mode_sense6(0x3F))).data
    assert a == b


async def test_informational_exceptions_page(target):
    d = (await run(target, mode_sense6(0x1C, dbd=True))).data
    assert d[4:] == IEC


async def test_changeable_values_are_all_zero(target):
    d = (await run(target, mode_sense6(0x3F, pc=1, dbd=True))).data
    pages = d[4:]
    assert pages[0:2] == b"\x08\x12" and pages[2:20] == bytes(18)
    assert pages[20:22] == b"\x0a\x0a" and pages[22:32] == bytes(10)
    assert pages[32:34] == b"\x1c\x0a" and pages[34:44] == bytes(10)
    assert len(pages) == 44


async def test_default_equals_current(target):
    assert (await run(target, mode_sense6(0x3F, pc=2))).data == (
        await run(target, mode_sense6(0x3F, pc=0))
    ).data


async def test_saved_values_not_supported(target):
    r = await run(target, mode_sense6(0x08, pc=3))
    assert sense_of(r) == (0x05, 0x39, 0x00)


async def test_unsupported_page(target):
    r = await run(target, mode_sense6(0x19))
    assert sense_of(r) == (0x05, 0x24, 0x00)
    assert field_pointer(r) == (2, 5)


async def test_unsupported_subpage(target):
    r = await run(target, mode_sense6(0x0A, sub=0x01))
    assert sense_of(r) == (0x05, 0x24, 0x00)
    assert field_pointer(r) == (3, None)


@pytest.mark.parametrize("alloc", [0, 1, 4, 13])
async def test_mode_sense6_truncation(target, alloc):
    full = (await run(target, mode_sense6(0x3F))).data
    d = (await run(target, mode_sense6(0x3F, alloc=alloc))).data
    assert d == full[:alloc]


async def test_mode_sense10_header_and_descriptor(target):
    d = (await run(target, mode_sense10(0x08))).data
    assert int.from_bytes(d[0:2], "big") == len(d) - 2
    assert d[2:8] == bytes((0, 0x10, 0, 0, 0, 8))
    assert d[8:16] == SHORT_DESCRIPTOR
    assert d[16:] == CACHING


async def test_mode_sense10_long_lba_descriptor(target):
    d = (await run(target, mode_sense10(0x08, llbaa=True))).data
    assert d[2:8] == bytes((0, 0x10, 0x01, 0, 0, 16))  # LONGLBA=1
    assert d[8:24] == (2048).to_bytes(8, "big") + bytes(4) + (512).to_bytes(4, "big")
    assert d[24:] == CACHING


async def test_mode_sense10_dbd_clears_longlba(target):
    d = (await run(target, mode_sense10(0x3F, dbd=True, llbaa=True))).data
    assert d[2:8] == bytes((0, 0x10, 0, 0, 0, 0))
    assert d[8:] == CACHING + CONTROL + IEC


async def test_huge_lun_saturates_short_descriptor():
    from helpers.memstore import MemoryStore

    from targetcli_preserve.scsi.target import LogicalUnit, LuIdentity, ScsiTarget

    class Huge(MemoryStore):
        def __init__(self):
            super().__init__(num_blocks=1)
            self.num_blocks = 2**33

    import uuid

    t = ScsiTarget({0: LogicalUnit(Huge(), LuIdentity("big", uuid.uuid4()))})
    d = (await run(t, mode_sense6(0x08))).data
    assert d[4:8] == b"\xff\xff\xff\xff"


async def test_mode_select_unsupported(target):
    r = await run(target, bytes((0x15, 0x10, 0, 0, 0, 0)))
    assert sense_of(r) == (0x05, 0x20, 0x00)
