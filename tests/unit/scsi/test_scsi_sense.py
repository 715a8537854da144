"""Sense data encoding, byte by byte against SPC-4 4.5."""

from __future__ import annotations

from targetcli_preserve.scsi.sense import (
    Asc,
    FieldPointer,
    SenseError,
    SenseKey,
    descriptor_sense,
    fixed_sense,
    invalid_field,
)


def test_fixed_sense_layout():
    s = fixed_sense(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    assert len(s) == 18
    assert s[0] == 0x70  # current, fixed, VALID=0
    assert s[2] == 0x05
    assert s[7] == 10  # additional sense length
    assert (s[12], s[13]) == (0x21, 0x00)
    assert s[15:18] == b"\x00\x00\x00"  # SKSV=0
    assert s[3:7] == bytes(4)


def test_fixed_sense_information_sets_valid():
    s = fixed_sense(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY_OPERATION, information=513)
    assert s[0] == 0xF0
    assert s[3:7] == (513).to_bytes(4, "big")
    assert (s[2], s[12], s[13]) == (0x0E, 0x1D, 0x00)


def test_field_pointer_with_bit():
    s = fixed_sense(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, FieldPointer(1, 7))
    # SKSV | C/D | BPV | bit 7, field pointer 0001h (SPC-4 4.5.2.4.2, table 31)
    assert s[15:18] == bytes((0x80 | 0x40 | 0x08 | 0x07, 0x00, 0x01))
    assert (s[12], s[13]) == (0x24, 0x00)


def test_field_pointer_without_bit():
    assert FieldPointer(258).encode() == bytes((0xC0, 0x01, 0x02))
    assert FieldPointer(3, in_cdb=False).encode() == bytes((0x80, 0x00, 0x03))


def test_descriptor_sense_plain():
    s = descriptor_sense(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE_INFORMATION)
    assert s == bytes((0x72, 0, 0, 0, 0, 0, 0, 0))


def test_descriptor_sense_with_sense_key_specific_descriptor():
    s = descriptor_sense(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, FieldPointer(2))
    assert s[:4] == bytes((0x72, 0x05, 0x24, 0x00))
    assert s[7] == 8
    assert s[8:] == bytes((0x02, 0x06, 0, 0, 0xC0, 0x00, 0x02, 0))


def test_sense_error_carries_fields():
    err = invalid_field(4, 3)
    assert isinstance(err, SenseError)
    assert err.key is SenseKey.ILLEGAL_REQUEST
    assert err.asc is Asc.INVALID_FIELD_IN_CDB
    assert err.field == FieldPointer(4, 3)
    assert err.fixed()[15:18] == bytes((0xCB, 0, 4))
    assert err.descriptor()[0] == 0x72


def test_asc_values():
    assert Asc.WRITE_ERROR.value == (0x0C, 0x00)
    assert Asc.UNRECOVERED_READ_ERROR.value == (0x11, 0x00)
    assert Asc.INVALID_COMMAND_OPERATION_CODE.value == (0x20, 0x00)
    assert Asc.LOGICAL_UNIT_NOT_SUPPORTED.value == (0x25, 0x00)
    assert Asc.SAVING_PARAMETERS_NOT_SUPPORTED.value == (0x39, 0x00)
    assert Asc.INVALID_FIELD_IN_INFORMATION_UNIT.value == (0x0E, 0x03)
