"""The BHS layout compiler: generated code shows in tracebacks, bad tables are refused,
fast constructors build what the classes build."""

from __future__ import annotations

import struct
import traceback
from dataclasses import dataclass
from typing import ClassVar, get_args

import pytest

from targetcli_preserve.iscsi.codes import Opcode
from targetcli_preserve.iscsi.layout import Layout, PduBase, compile_layout, fast_constructor
from targetcli_preserve.iscsi.pdu import DataIn, NopIn, Pdu, ScsiCommand, decode_bhs, encode_pdu


def test_a_traceback_through_a_generated_pack_shows_its_source_line():
    with pytest.raises(struct.error) as info:
        encode_pdu(NopIn(lun="not a number"))
    text = "".join(traceback.format_exception(info.value))
    assert 'File "<BHS of NopIn>", line 3, in _pack_bhs' in text
    assert "return pack(" in text


def test_a_traceback_through_a_generated_decoder_shows_its_source_line():
    bhs = encode_pdu(ScsiCommand())[:47]  # one byte short
    with pytest.raises(struct.error) as info:
        decode_bhs(bhs)
    text = "".join(traceback.format_exception(info.value))
    assert 'File "<BHS of ScsiCommand>", line 5, in decode' in text
    assert "= unpack(b)" in text


def test_a_table_that_misses_a_field_is_refused():
    @dataclass(slots=True)
    class Bogus(PduBase):
        OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
        _BHS: ClassVar[Layout] = {16: "initiator_task_tag"}
        initiator_task_tag: int = 0
        forgotten: int = 0
        ahs: bytes = b""
        data: bytes = b""

    with pytest.raises(TypeError, match="does not match its fields"):
        compile_layout(Bogus)


def test_a_table_cannot_claim_the_lengths_word():
    @dataclass(slots=True)
    class Bogus(PduBase):
        OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
        _BHS: ClassVar[Layout] = {4: "length"}
        length: int = 0
        ahs: bytes = b""
        data: bytes = b""

    with pytest.raises(TypeError, match="offset 4"):
        compile_layout(Bogus)


def test_a_fast_constructor_builds_what_the_class_builds():
    for cls in get_args(Pdu):
        assert fast_constructor(cls)() == cls()
    build = fast_constructor(DataIn)
    kw = {"final": True, "status_present": True, "status": 2, "data_sn": 3, "data": b"xy"}
    assert build(**kw) == DataIn(**kw)
    with pytest.raises(TypeError):
        build(no_such_field=1)
