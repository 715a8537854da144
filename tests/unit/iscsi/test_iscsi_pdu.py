"""PDU codec: byte-exact layouts, round trips, padding, digests, the stream decoder."""

from __future__ import annotations

import struct

import crc32c
import pytest
from helpers.pdu_strategies import any_pdu
from hypothesis import given, settings
from hypothesis import strategies as st

from targetcli_preserve.iscsi.pdu import (
    BHS_LEN,
    R2T,
    BadPdu,
    DataIn,
    DataOut,
    DigestError,
    LoginResponse,
    NopIn,
    NopOut,
    Opcode,
    PduDecoder,
    PduError,
    Reject,
    RejectReason,
    ScsiCommand,
    decode_pdu,
    encode_pdu,
    field_to_lun,
    lun_to_field,
)


@given(any_pdu, st.booleans(), st.booleans())
def test_round_trip_every_opcode(pdu, hd, dd):
    raw = encode_pdu(pdu, hd, dd)
    assert len(raw) % 4 == 0
    assert decode_pdu(raw, hd, dd) == pdu


def test_scsi_command_byte_layout():
    cdb = bytes([0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]) + bytes(6)
    pdu = ScsiCommand(
        immediate=True,
        final=True,
        read=True,
        write=False,
        attr=1,
        lun=lun_to_field(2),
        initiator_task_tag=0x01020304,
        expected_data_transfer_length=4096,
        cmd_sn=0x11223344,
        exp_stat_sn=0x55667788,
        cdb=cdb,
        data=b"abcde",
    )
    raw = encode_pdu(pdu)
    assert raw[0] == 0x41  # I bit + opcode 0x01
    assert raw[1] == 0x80 | 0x40 | 1  # F, R, ATTR
    assert raw[4] == 0  # TotalAHSLength
    assert raw[5:8] == b"\x00\x00\x05"  # DataSegmentLength
    assert raw[8:16] == b"\x00\x02" + bytes(6)
    assert raw[16:20] == b"\x01\x02\x03\x04"
    assert raw[20:24] == (4096).to_bytes(4, "big")
    assert raw[24:28] == b"\x11\x22\x33\x44"
    assert raw[28:32] == b"\x55\x66\x77\x88"
    assert raw[32:48] == cdb
    assert raw[48:] == b"abcde\0\0\0"  # padded to 4 bytes (RFC 7143 11.2.3)


def test_data_in_byte_layout():
    pdu = DataIn(
        final=True,
        status_present=True,
        underflow=True,
        status=0,
        lun=0,
        initiator_task_tag=7,
        stat_sn=9,
        exp_cmd_sn=10,
        max_cmd_sn=11,
        data_sn=3,
        buffer_offset=0x2000,
        residual_count=512,
        data=b"\xaa" * 4,
    )
    raw = encode_pdu(pdu)
    assert raw[0] == 0x25
    assert raw[1] == 0x80 | 0x02 | 0x01
    assert raw[3] == 0
    assert struct.unpack(">IIIIIIII", raw[16:48]) == (7, 0xFFFFFFFF, 9, 10, 11, 3, 0x2000, 512)


def test_r2t_and_login_response_layout():
    raw = encode_pdu(
        R2T(
            lun=0,
            initiator_task_tag=1,
            target_transfer_tag=2,
            stat_sn=3,
            exp_cmd_sn=4,
            max_cmd_sn=5,
            r2t_sn=6,
            buffer_offset=7,
            desired_data_transfer_length=8,
        )
    )
    assert raw[0] == 0x31 and raw[1] == 0x80
    assert struct.unpack(">8I", raw[16:48]) == (1, 2, 3, 4, 5, 6, 7, 8)
    raw = encode_pdu(
        LoginResponse(
            transit=True,
            csg=1,
            nsg=3,
            isid=0x800000000001,
            tsih=5,
            initiator_task_tag=9,
            stat_sn=1,
            exp_cmd_sn=2,
            max_cmd_sn=3,
            status_class=2,
            status_detail=3,
        )
    )
    assert raw[0] == 0x23
    assert raw[1] == 0x80 | (1 << 2) | 3
    assert raw[8:14] == bytes.fromhex("800000000001") and raw[14:16] == b"\x00\x05"
    assert raw[36] == 2 and raw[37] == 3


def test_reject_carries_header():
    hdr = bytes(range(48))
    raw = encode_pdu(Reject(reason=RejectReason.INVALID_PDU_FIELD, stat_sn=1, data=hdr))
    assert raw[0] == 0x3F and raw[2] == 0x09
    assert raw[16:20] == b"\xff\xff\xff\xff"
    assert raw[48:] == hdr


def test_digests_are_crc32c_little_endian():
    pdu = NopOut(initiator_task_tag=1, data=b"ping!")
    raw = encode_pdu(pdu, header_digest=True, data_digest=True)
    assert len(raw) == 48 + 4 + 8 + 4
    assert raw[48:52] == crc32c.crc32c(raw[:48]).to_bytes(4, "little")
    assert raw[60:64] == crc32c.crc32c(b"ping!\0\0\0").to_bytes(4, "little")
    # Known vector: CRC32C of 32 zero bytes (RFC 3720 B.4) is 0x8a9136aa.
    assert crc32c.crc32c(bytes(32)) == 0x8A9136AA


def test_header_digest_error_is_fatal():
    raw = bytearray(encode_pdu(NopOut(initiator_task_tag=1), header_digest=True))
    raw[49] ^= 1
    dec = PduDecoder(8192, header_digest=True)
    (bad,) = dec.feed(bytes(raw) + encode_pdu(NopOut(), header_digest=True))
    assert isinstance(bad, BadPdu) and bad.fatal
    assert dec.broken and dec.feed(b"x" * 100) == []
    with pytest.raises(DigestError):
        decode_pdu(bytes(raw), header_digest=True)


def test_data_digest_error_skips_one_pdu():
    good = encode_pdu(NopOut(initiator_task_tag=2, data=b"abc"), data_digest=True)
    bad = bytearray(encode_pdu(NopOut(initiator_task_tag=1, data=b"abc"), data_digest=True))
    bad[50] ^= 0xFF
    out = PduDecoder(8192, data_digest=True).feed(bytes(bad) + good)
    assert isinstance(out[0], BadPdu) and not out[0].fatal
    assert out[0].reason == RejectReason.DATA_DIGEST_ERROR
    assert out[1].initiator_task_tag == 2


def test_oversized_data_segment_is_fatal():
    raw = encode_pdu(DataOut(data=b"x" * 1024))
    dec = PduDecoder(max_data_segment_length=512)
    (bad,) = dec.feed(raw[:48])  # detected from the header alone
    assert isinstance(bad, BadPdu) and bad.fatal
    assert PduDecoder(1024).feed(raw)[0].data == b"x" * 1024


def test_unknown_opcode_is_skipped_whole():
    raw = bytearray(encode_pdu(NopOut(initiator_task_tag=1, data=b"1234")))
    raw[0] = 0x1C
    out = PduDecoder().feed(bytes(raw) + encode_pdu(NopOut(initiator_task_tag=5)))
    assert isinstance(out[0], BadPdu) and not out[0].fatal
    assert out[0].reason == RejectReason.COMMAND_NOT_SUPPORTED
    assert out[1] == NopOut(initiator_task_tag=5)
    with pytest.raises(PduError):
        decode_pdu(bytes(raw))


def test_ahs_is_kept():
    pdu = ScsiCommand(ahs=b"\x00\x05\x01\x00" + b"ABCDEFGH", data=b"")
    raw = encode_pdu(pdu, header_digest=True)
    assert raw[4] == 3
    assert decode_pdu(raw, header_digest=True).ahs == pdu.ahs


def test_lun_field():
    assert lun_to_field(0) == 0
    assert lun_to_field(5) == 5 << 48
    assert field_to_lun(lun_to_field(5)) == 5
    assert field_to_lun(lun_to_field(1000)) == 1000
    assert field_to_lun(1) == -1
    assert field_to_lun(0xC0 << 56) == -1


def test_opcode_values():
    assert Opcode.SCSI_DATA_IN == 0x25 and Opcode.REJECT == 0x3F and Opcode.SNACK_REQUEST == 0x10


@settings(max_examples=60)
@given(
    st.lists(any_pdu, min_size=1, max_size=8),
    st.booleans(),
    st.booleans(),
    st.lists(st.integers(1, 97), min_size=1, max_size=50),
)
def test_stream_decoder_random_chunking(pdus, hd, dd, cuts):
    stream = b"".join(encode_pdu(p, hd, dd) for p in pdus)
    dec = PduDecoder(0xFFFFFF, hd, dd)
    out = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        out += dec.feed(stream[pos : pos + n])
        pos += n
        i += 1
    assert out == pdus
    assert dec.buffered == 0


@given(st.binary(max_size=2000))
def test_decoder_never_raises_on_garbage(blob):
    dec = PduDecoder(8192, True, True)
    for i in range(0, len(blob), 37):
        for item in dec.feed(blob[i : i + 37]):
            assert isinstance(item, BadPdu) or hasattr(item, "OPCODE")


def test_bhs_len():
    assert len(encode_pdu(NopIn())) == BHS_LEN
