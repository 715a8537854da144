"""INQUIRY: standard data and VPD pages, byte by byte (SPC-4 6.6, 7.8; SBC-3 6.6)."""

from __future__ import annotations

import pytest
from helpers.scsi_testlib import WWN, field_pointer, inquiry, run, sense_of

from targetcli_preserve.scsi.target import ScsiStatus


async def test_standard_inquiry_layout(target):
    r = await run(target, inquiry(alloc=255))
    assert r.status is ScsiStatus.GOOD
    d = r.data
    assert len(d) == 74
    assert d[0] == 0x00  # qualifier 000b, direct access block device
    assert d[1] == 0x00  # RMB=0
    assert d[2] == 0x06  # SPC-4
    assert d[3] == 0x12  # HISUP, RESPONSE DATA FORMAT 2, NORMACA=0, AERC/TRMTSK clear
    assert d[4] == len(d) - 5
    assert d[5] == 0x00 and d[6] == 0x00
    assert d[7] == 0x02  # CMDQUE
    assert d[8:16] == b"PRESERVE"
    assert d[16:32] == b"PRESERVE-LUN    "
    assert d[32:36] == b"0001"
    descriptors = [int.from_bytes(d[i : i + 2], "big") for i in range(58, 74, 2)]
    assert descriptors[:4] == [0x00A0, 0x0960, 0x0460, 0x04C0]  # SAM-5 iSCSI SPC-4 SBC-3
    assert descriptors[4:] == [0, 0, 0, 0]


@pytest.mark.parametrize("alloc", [0, 1, 5, 36, 73])
async def test_standard_inquiry_truncated_to_allocation_length(target, alloc):
    full = (await run(target, inquiry(alloc=255))).data
    r = await run(target, inquiry(alloc=alloc))
    assert r.status is ScsiStatus.GOOD
    assert r.data == full[:alloc]


async def test_sixteen_bit_allocation_length(target):
    a = (await run(target, inquiry(alloc=511))).data
    b = (await run(target, inquiry(alloc=512))).data
    assert a == b and len(a) == 74


async def test_evpd0_with_page_code_is_invalid(target):
    r = await run(target, inquiry(False, 0x80))
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r) == (0x05, 0x24, 0x00)
    assert field_pointer(r) == (2, None)


async def test_unsupported_vpd_page(target):
    r = await run(target, inquiry(True, 0x89))
    assert sense_of(r) == (0x05, 0x24, 0x00)
    assert field_pointer(r) == (2, None)


async def test_supported_vpd_pages(target):
    d = (await run(target, inquiry(True, 0x00))).data
    assert d == bytes((0x00, 0x00, 0x00, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2))


async def test_every_listed_vpd_page_is_served(target):
    d = (await run(target, inquiry(True, 0x00))).data
    for page in d[4:]:
        r = await run(target, inquiry(True, page))
        assert r.status is ScsiStatus.GOOD
        assert r.data[1] == page
        assert int.from_bytes(r.data[2:4], "big") == len(r.data) - 4


async def test_unit_serial_number(target):
    d = (await run(target, inquiry(True, 0x80))).data
    assert d[:4] == bytes((0x00, 0x80, 0x00, 32))
    assert d[4:] == WWN.hex.encode()


async def test_device_identification(target):
    d = (await run(target, inquiry(True, 0x83))).data
    assert d[0:2] == b"\x00\x83"
    assert int.from_bytes(d[2:4], "big") == len(d) - 4
    naa = d[4:24]
    # binary code set, LU association, NAA designator type, 16 bytes
    assert naa[:4] == bytes((0x01, 0x03, 0x00, 16))
    value = int.from_bytes(naa[4:], "big")
    assert value >> 124 == 6  # NAA IEEE Registered Extended
    assert (value >> 100) & 0xFFFFFF == 0x001405
    assert (value >> 64) & (2**36 - 1) == WWN.int >> 92
    assert value & (2**64 - 1) == WWN.int & (2**64 - 1)
    t10 = d[24:]
    assert t10[:4] == bytes((0x02, 0x01, 0x00, 40))  # ASCII, LU, T10 vendor ID
    assert t10[4:] == b"PRESERVE" + WWN.hex.encode()


async def test_block_limits(target, store):
    d = (await run(target, inquiry(True, 0xB0))).data
    assert len(d) == 64
    assert d[:4] == bytes((0x00, 0xB0, 0x00, 0x3C))
    assert int.from_bytes(d[6:8], "big") == 1  # OPTIMAL TRANSFER LENGTH GRANULARITY
    max_blocks = 8 * 1024 * 1024 // store.block_size
    assert int.from_bytes(d[8:12], "big") == max_blocks  # MAXIMUM TRANSFER LENGTH
    assert int.from_bytes(d[20:24], "big") == 0  # MAXIMUM UNMAP LBA COUNT
    assert int.from_bytes(d[24:28], "big") == 0  # MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    assert d[36:44] == bytes(8)  # MAXIMUM WRITE SAME LENGTH


async def test_block_device_characteristics(target):
    d = (await run(target, inquiry(True, 0xB1))).data
    assert len(d) == 64
    assert d[:4] == bytes((0x00, 0xB1, 0x00, 0x3C))
    assert d[4:6] == b"\x00\x01"  # non-rotating medium


async def test_logical_block_provisioning(target):
    d = (await run(target, inquiry(True, 0xB2))).data
    assert d == bytes((0x00, 0xB2, 0x00, 0x04, 0, 0, 0, 0))


async def test_vpd_allocation_length(target):
    d = (await run(target, inquiry(True, 0x83, alloc=6))).data
    assert d[:2] == b"\x00\x83" and len(d) == 6


async def test_inquiry_on_absent_lun(target):
    r = await run(target, inquiry(), lun=7)
    assert r.status is ScsiStatus.GOOD
    assert r.data[0] == 0x7F  # qualifier 011b, device type 1Fh
    r = await run(target, inquiry(True, 0x00), lun=7)
    assert r.data == bytes((0x7F, 0x00, 0x00, 0x01, 0x00))
    r = await run(target, inquiry(True, 0x83), lun=7)
    assert sense_of(r) == (0x05, 0x24, 0x00)
