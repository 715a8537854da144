"""ScsiTarget: LUN handling, REPORT LUNS, REQUEST SENSE, TEST UNIT READY and
REPORT SUPPORTED OPERATION CODES (SPC-4 6.33, 6.35, 6.39, 6.47)."""

from __future__ import annotations

import uuid

import pytest
from helpers.memstore import MemoryStore
from helpers.scsi_testlib import field_pointer, inquiry, read10, report_luns, rsoc, run, sense_of

from targetcli_preserve.scsi.cdb import COMMANDS
from targetcli_preserve.scsi.reportluns import decode_lun, encode_lun
from targetcli_preserve.scsi.target import LogicalUnit, LuIdentity, ScsiStatus, ScsiTarget

LU_NOT_SUPPORTED = (0x05, 0x25, 0x00)


def lu() -> LogicalUnit:
    return LogicalUnit(MemoryStore(num_blocks=16), LuIdentity("x", uuid.uuid4()))


async def test_test_unit_ready(target):
    r = await run(target, bytes(6))
    assert r == r.__class__(ScsiStatus.GOOD, data_out_expected=0)


@pytest.mark.parametrize(
    "cdb",
    [bytes(6), read10(0, 1), bytes((0x25,)) + bytes(9), bytes((0x1A, 0, 0x3F, 0, 255, 0))],
)
async def test_absent_lun_is_not_supported(target, cdb):
    r = await run(target, cdb, lun=3)
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r) == LU_NOT_SUPPORTED


async def test_absent_lun_unknown_opcode_is_not_supported(target):
    assert sense_of(await run(target, bytes((0xC1,)) + bytes(15), lun=3)) == LU_NOT_SUPPORTED


async def test_lun_numbers_add_remove():
    t = ScsiTarget({5: lu(), 0: lu()})
    assert t.lun_numbers() == [0, 5]
    t.add_lun(300, lu())
    assert t.lun_numbers() == [0, 5, 300]
    with pytest.raises(ValueError):
        t.add_lun(5, lu())
    t.remove_lun(0)
    assert t.lun_numbers() == [5, 300]
    assert (await run(t, bytes(6), lun=0)).status is ScsiStatus.CHECK_CONDITION
    t.luns[0] = lu()  # the mapping is live
    assert (await run(t, bytes(6), lun=0)).status is ScsiStatus.GOOD


# --- REPORT LUNS ------------------------------------------------------------------------


def test_single_level_lun_encoding():
    assert encode_lun(0) == bytes(8)
    assert encode_lun(255) == bytes((0x00, 0xFF)) + bytes(6)  # peripheral device
    assert encode_lun(256) == bytes((0x41, 0x00)) + bytes(6)  # flat space
    assert encode_lun(0x3FFF) == bytes((0x7F, 0xFF)) + bytes(6)
    for lun in (0, 1, 255, 256, 1000, 0x3FFF):
        assert decode_lun(encode_lun(lun)) == lun
    with pytest.raises(ValueError):
        encode_lun(0x4000)


async def test_report_luns_layout():
    t = ScsiTarget({7: lu(), 0: lu(), 256: lu()})
    for select in (0, 2):
        d = (await run(t, report_luns(select))).data
        assert d[:8] == be4(24) + bytes(4)
        assert d[8:] == encode_lun(0) + encode_lun(7) + encode_lun(256)


async def test_report_luns_well_known_only_is_empty(target):
    d = (await run(target, report_luns(1))).data
    assert d == bytes(8)


async def test_report_luns_works_on_any_lun(target):
    r = await run(target, report_luns(), lun=9)
    assert r.status is ScsiStatus.GOOD
    assert r.data == be4(8) + bytes(4) + encode_lun(0)


async def test_report_luns_empty_target_reports_lun0():
    d = (await run(ScsiTarget(), report_luns())).data
    assert d == be4(8) + bytes(4) + encode_lun(0)


async def test_report_luns_truncated():
    t = ScsiTarget({0: lu(), 1: lu(), 2: lu()})
    d = (await run(t, report_luns(alloc=16))).data
    assert d == be4(24) + bytes(4) + encode_lun(0)  # LUN LIST LENGTH stays the full size


async def test_report_luns_allocation_length_below_16(target):
    r = await run(target, report_luns(alloc=15))
    assert sense_of(r) == (0x05, 0x24, 0x00)
    assert field_pointer(r) == (6, None)


def be4(n: int) -> bytes:
    return n.to_bytes(4, "big")


# --- REQUEST SENSE ------------------------------------------------------------------


async def test_request_sense_no_sense(target):
    r = await run(target, bytes((0x03, 0, 0, 0, 252, 0)))
    assert r.status is ScsiStatus.GOOD
    assert r.data == bytes((0x70, 0, 0, 0, 0, 0, 0, 10)) + bytes(10)


async def test_request_sense_descriptor_format(target):
    r = await run(target, bytes((0x03, 0x01, 0, 0, 252, 0)))
    assert r.data == bytes((0x72, 0, 0, 0, 0, 0, 0, 0))


async def test_request_sense_truncated(target):
    assert (await run(target, bytes((0x03, 0, 0, 0, 4, 0)))).data == bytes((0x70, 0, 0, 0))


async def test_request_sense_absent_lun(target):
    r = await run(target, bytes((0x03, 0, 0, 0, 18, 0)), lun=4)
    assert r.status is ScsiStatus.GOOD
    assert (r.data[2], r.data[12], r.data[13]) == LU_NOT_SUPPORTED


# --- REPORT SUPPORTED OPERATION CODES ---------------------------------------------------


async def test_rsoc_all(target):
    d = (await run(target, rsoc(0))).data
    length = int.from_bytes(d[:4], "big")
    assert length == len(d) - 4 == 8 * len(COMMANDS)
    descriptors = [d[4 + 8 * i : 12 + 8 * i] for i in range(len(COMMANDS))]
    opcodes = [x[0] for x in descriptors]
    assert opcodes == sorted(opcodes)
    rc16 = next(x for x in descriptors if x[0] == 0x9E)
    assert rc16 == bytes((0x9E, 0, 0x00, 0x10, 0, 0x01, 0, 16))  # SERVACTV, CDB length 16
    read10_desc = next(x for x in descriptors if x[0] == 0x28)
    assert read10_desc == bytes((0x28, 0, 0, 0, 0, 0x00, 0, 10))


async def test_rsoc_all_with_timeouts(target):
    d = (await run(target, rsoc(0, rctd=True))).data
    assert int.from_bytes(d[:4], "big") == 20 * len(COMMANDS)
    first = d[4:24]
    assert first[5] & 0x02  # CTDP
    assert first[8:10] == b"\x00\x0a"  # timeouts descriptor length


async def test_rsoc_one_command(target):
    d = (await run(target, rsoc(1, 0x28))).data
    assert d[:4] == bytes((0, 0x03, 0, 10))  # SUPPORT 011b, CDB SIZE 10
    usage = d[4:]
    assert usage[0] == 0x28 and usage[1] & 0x18 == 0x18  # DPO and FUA honoured
    assert len(usage) == 10


async def test_rsoc_one_command_with_service_action(target):
    d = (await run(target, rsoc(2, 0x9E, 0x10))).data
    assert d[:4] == bytes((0, 0x03, 0, 16))
    assert d[4:6] == bytes((0x9E, 0x10))


async def test_rsoc_unsupported_command(target):
    assert (await run(target, rsoc(1, 0x41))).data == bytes((0, 0x01, 0, 0))
    assert (await run(target, rsoc(2, 0x9E, 0x11))).data == bytes((0, 0x01, 0, 0))


async def test_rsoc_servactv_mismatch(target):
    assert sense_of(await run(target, rsoc(1, 0x9E, 0x10))) == (0x05, 0x24, 0x00)
    assert sense_of(await run(target, rsoc(2, 0x28, 0))) == (0x05, 0x24, 0x00)


async def test_rsoc_every_listed_command_is_decodable(target):
    """What REPORT SUPPORTED OPERATION CODES lists, execute must not call unknown."""
    for (opcode, sa), spec in COMMANDS.items():
        cdb = bytearray(spec.length)
        cdb[0] = opcode
        if sa is not None:
            cdb[1] = sa
        r = await run(target, bytes(cdb))
        if r.status is ScsiStatus.CHECK_CONDITION:
            assert sense_of(r)[1] != 0x20, hex(opcode)


async def test_rsoc_one_command_with_timeouts(target):
    d = (await run(target, rsoc(1, 0x2A, rctd=True))).data
    assert d[1] == 0x83  # CTDP | supported
    assert d[4 + 10 : 4 + 12] == b"\x00\x0a"


# --- robustness -----------------------------------------------------------------------


@pytest.mark.parametrize("cdb", [b"", b"\x12", b"\x28\x00", b"\x9e", b"\xa3\x0c"])
async def test_malformed_cdbs_give_check_condition(target, cdb):
    r = await target.execute(0, cdb, None, 0)
    assert r.status is ScsiStatus.CHECK_CONDITION
    assert sense_of(r)[:2] == (0x05, 0x24)


async def test_cdb_may_be_a_bytearray_or_memoryview(target):
    assert (await target.execute(0, bytearray(6), None, 0)).status is ScsiStatus.GOOD
    assert (await target.execute(0, memoryview(bytes(6)), None, 0)).status is ScsiStatus.GOOD


async def test_inquiry_ignores_data_out(target):
    r = await run(target, inquiry(), b"junk")
    assert r.status is ScsiStatus.GOOD


@pytest.mark.parametrize("cdb", [None, 42, "INQUIRY"])
async def test_cdb_of_the_wrong_type_never_raises(target, cdb):
    r = await target.execute(0, cdb, None, 0)  # type: ignore[arg-type]
    assert r.status is ScsiStatus.CHECK_CONDITION


def test_lun_range_enforced():
    with pytest.raises(ValueError):
        ScsiTarget({0x4000: lu()})
    with pytest.raises(ValueError):
        ScsiTarget().add_lun(-1, lu())
