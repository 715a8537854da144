"""The CDB decoder: every opcode's fields, the checks it makes, the errors it raises."""

from __future__ import annotations

import pytest
from helpers.scsi_testlib import (
    be,
    inquiry,
    mode_sense6,
    mode_sense10,
    read6,
    read10,
    read12,
    read16,
    read_capacity16,
    report_luns,
    rsoc,
    write6,
    write10,
    write12,
    write16,
)

from targetcli_preserve.scsi import cdb as C
from targetcli_preserve.scsi.sense import Asc, FieldPointer, SenseError, SenseKey


def rejects(raw: bytes) -> SenseError:
    with pytest.raises(SenseError) as info:
        C.decode(raw)
    assert info.value.key is SenseKey.ILLEGAL_REQUEST
    return info.value


def invalid_at(raw: bytes, byte: int, bit: int | None = None) -> None:
    err = rejects(raw)
    assert err.asc is Asc.INVALID_FIELD_IN_CDB
    assert err.field == FieldPointer(byte, bit)


@pytest.mark.parametrize(
    "opcode,length",
    [(0x00, 6), (0x1F, 6), (0x20, 10), (0x5F, 10), (0x80, 16), (0x9F, 16), (0xA0, 12), (0xBF, 12)],
)
def test_group_code_lengths(opcode, length):
    assert C.cdb_length(opcode) == length


@pytest.mark.parametrize("opcode", [0x60, 0x7F, 0xC0, 0xFF])
def test_undefined_groups(opcode):
    assert C.cdb_length(opcode) == -1
    assert rejects(bytes((opcode,)) + bytes(15)).asc is Asc.INVALID_COMMAND_OPERATION_CODE


@pytest.mark.parametrize("opcode", [0x01, 0x04, 0x15, 0x55, 0x41, 0x93, 0xA2, 0xAF])
def test_unknown_opcode(opcode):
    err = rejects(bytes((opcode,)) + bytes(15))
    assert err.asc is Asc.INVALID_COMMAND_OPERATION_CODE
    assert err.field is None


def test_empty_and_short_cdbs():
    assert rejects(b"").asc is Asc.INVALID_FIELD_IN_CDB
    invalid_at(b"\x28\x00\x00", 2)
    invalid_at(b"\x9e", 1, 4)


def test_padding_beyond_cdb_length_is_ignored():
    # iSCSI carries 16 bytes; a READ(10) ignores bytes 10-15
    assert C.decode(read10(5, 1) + b"\xff" * 6) == C.Read(5, 1, False, False, 7)


@pytest.mark.parametrize("control,bit", [(0x04, 2), (0x01, 0)])
def test_control_byte_naca_and_link(control, bit):
    invalid_at(read10(0, 1, control=control), 9, bit)


def test_control_byte_vendor_bits_ignored():
    assert isinstance(C.decode(read10(0, 1, control=0xC0)), C.Read)


def test_test_unit_ready():
    assert C.decode(bytes(6)) == C.TestUnitReady()


def test_request_sense():
    assert C.decode(bytes((0x03, 0x01, 0, 0, 252, 0))) == C.RequestSense(True, 252)
    assert C.decode(bytes((0x03, 0, 0, 0, 18, 0))) == C.RequestSense(False, 18)
    invalid_at(bytes((0x03, 0x02, 0, 0, 18, 0)), 1, 7)


def test_inquiry_fields():
    assert C.decode(inquiry(alloc=0x1234)) == C.Inquiry(False, 0, 0x1234)
    assert C.decode(inquiry(True, 0x83, 255)) == C.Inquiry(True, 0x83, 255)


def test_inquiry_page_code_without_evpd():
    invalid_at(inquiry(False, 0x83), 2)


def test_inquiry_cmddt():
    invalid_at(bytes((0x12, 0x02, 0, 0, 255, 0)), 1, 1)
    invalid_at(bytes((0x12, 0x10, 0, 0, 255, 0)), 1, 7)


def test_mode_sense_6_fields():
    got = C.decode(mode_sense6(0x08, pc=2, dbd=True, sub=0, alloc=200))
    assert got == C.ModeSense(False, True, False, C.PageControl.DEFAULT, 0x08, 0, 200)


def test_mode_sense_10_fields():
    got = C.decode(mode_sense10(0x3F, pc=1, llbaa=True, sub=0xFF, alloc=0x1000))
    assert got == C.ModeSense(True, False, True, C.PageControl.CHANGEABLE, 0x3F, 0xFF, 0x1000)


def test_mode_sense_reserved_bits():
    invalid_at(bytes((0x1A, 0x10, 0x3F, 0, 255, 0)), 1, 7)  # LLBAA is not in MODE SENSE(6)
    invalid_at(bytes((0x5A, 0x01, 0x3F, 0, 0, 0, 0, 0, 255, 0)), 1, 7)


def test_read_capacity():
    assert C.decode(bytes(10).replace(b"\x00", b"\x25", 1)) == C.ReadCapacity10()
    assert C.decode(read_capacity16(32)) == C.ReadCapacity16(32)
    assert C.decode(read_capacity16(0)) == C.ReadCapacity16(0)


def test_service_action_in_unknown_service_action():
    invalid_at(bytes((0x9E, 0x11)) + bytes(14), 1, 4)


def test_read_write_6():
    assert C.decode(read6(0x1FFFFF, 7)) == C.Read(0x1FFFFF, 7, False, False, 4)
    assert C.decode(write6(3, 1)) == C.Write(3, 1, False, False, 4)


def test_read_write_6_zero_length_means_256():
    assert C.decode(read6(0, 0)).blocks == 256
    assert C.decode(write6(0, 0)).blocks == 256


def test_read6_reserved_bits():
    invalid_at(bytes((0x08, 0x20, 0, 0, 1, 0)), 1, 7)


@pytest.mark.parametrize(
    "build,kind,length_byte",
    [
        (read10, C.Read, 7),
        (read12, C.Read, 6),
        (read16, C.Read, 10),
        (write10, C.Write, 7),
        (write12, C.Write, 6),
        (write16, C.Write, 10),
    ],
)
def test_read_write_n_fields(build, kind, length_byte):
    lba = 0x01020304
    assert C.decode(build(lba, 0x0506)) == kind(lba, 0x0506, False, False, length_byte)
    assert C.decode(build(lba, 1, 0x08)) == kind(lba, 1, False, True, length_byte)  # FUA
    assert C.decode(build(lba, 1, 0x10)) == kind(lba, 1, True, False, length_byte)  # DPO
    assert C.decode(build(lba, 1, 0x1A)) == kind(lba, 1, True, True, length_byte)  # +FUA_NV
    assert C.decode(build(lba, 0)).blocks == 0  # zero is not 256 here


def test_read16_full_width_lba():
    assert C.decode(read16(2**64 - 1, 2**32 - 1)).lba == 2**64 - 1


@pytest.mark.parametrize("build", [read10, read12, read16, write10, write12, write16])
@pytest.mark.parametrize("protect", [0x20, 0x40, 0x80, 0xE0])
def test_rd_wr_protect_rejected(build, protect):
    invalid_at(build(0, 1, protect), 1, 7)


def test_verify():
    raw = bytes((0x2F, 0x02)) + be(9, 4) + b"\x00" + be(3, 2) + b"\x00"
    assert C.decode(raw) == C.Verify(9, 3, C.ByteCheck.COMPARE, 7)
    raw16 = bytes((0x8F, 0x00)) + be(9, 8) + be(3, 4) + b"\x00\x00"
    assert C.decode(raw16) == C.Verify(9, 3, C.ByteCheck.NONE, 10)


@pytest.mark.parametrize("bytchk", [0x04, 0x06])
def test_verify_unsupported_bytchk(bytchk):
    invalid_at(bytes((0x2F, bytchk)) + bytes(8), 1, 2)


def test_verify_vrprotect():
    invalid_at(bytes((0x2F, 0x20)) + bytes(8), 1, 7)


def test_synchronize_cache():
    raw = bytes((0x35, 0x02)) + be(100, 4) + b"\x00" + be(8, 2) + b"\x00"
    assert C.decode(raw) == C.SynchronizeCache(100, 8, True)
    raw16 = bytes((0x91, 0x00)) + be(100, 8) + be(0, 4) + b"\x00\x00"
    assert C.decode(raw16) == C.SynchronizeCache(100, 0, False)


def test_report_luns():
    assert C.decode(report_luns(2, 16)) == C.ReportLuns(C.SelectReport.ALL, 16)
    invalid_at(report_luns(3), 2)
    invalid_at(report_luns(0, 15), 6)


def test_report_supported_opcodes():
    got = C.decode(rsoc(2, 0x9E, 0x10, rctd=True, alloc=100))
    assert got == C.ReportSupportedOpcodes(True, C.ReportingOptions(2), 0x9E, 0x10, 100)
    invalid_at(rsoc(4), 2, 2)
    invalid_at(bytes((0xA3, 0x0C, 0x08)) + bytes(9), 2, 6)


def test_maintenance_in_other_service_action():
    invalid_at(bytes((0xA3, 0x0A)) + bytes(10), 1, 4)


def test_usage_data_lengths_match_group_codes():
    for (opcode, _), spec in C.COMMANDS.items():
        assert spec.length == C.cdb_length(opcode)
        assert spec.usage[0] == opcode
