"""Whole PDUs on the wire (RFC 7143 section 11.2): BHS, AHS, HeaderDigest, data segment
with its padding, DataDigest; and the stream decoder that cuts received bytes into PDUs.

Owns ``encode_pdu`` and :class:`PduDecoder`, which enforces the negotiated
MaxRecvDataSegmentLength (13.12) and the optional CRC32C digests (11.2.1, 13.1) and
reports what it cannot decode as a :class:`BadPdu` instead of raising. The BHS of each
PDU is ``pdus.py``'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c as _crc32c

from targetcli_preserve.iscsi.codes import BHS_LEN, RejectReason
from targetcli_preserve.iscsi.pdus import DECODERS, Pdu, PduError

_crc = _crc32c.crc32c

_DIGEST = struct.Struct("<I")  # CRC32C travels least significant byte first (RFC 7143 13.1)
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class DigestError(PduError):
    """A HeaderDigest or DataDigest mismatch (RFC 7143 7.8)."""


@dataclass(slots=True)
class BadPdu:
    """A decoder result standing for a PDU that could not be decoded.

    ``fatal`` means framing is lost (header digest error, oversized or garbled lengths):
    the connection must be dropped. Otherwise the PDU was skipped whole and can be
    answered with a Reject carrying ``header`` and ``reason``."""

    header: bytes
    reason: int
    message: str
    fatal: bool


# --------------------------------------------------------------------------- encode


def encode_bhs(pdu: Pdu, ahs_len: int | None = None, dsl: int | None = None) -> bytes:
    """The 48-byte BHS of ``pdu`` (lengths taken from its ahs/data unless given)."""
    if ahs_len is None:
        ahs_len = len(pdu.ahs)
    if dsl is None:
        dsl = len(pdu.data)
    if ahs_len & 3:
        raise ValueError("AHS length must be a multiple of 4")
    if dsl > 0xFFFFFF:
        raise ValueError("data segment too long")
    return pdu._pack_bhs((ahs_len >> 2) << 24 | dsl)


def encode_pdu(pdu: Pdu, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """Wire bytes of one PDU: BHS, AHS, HeaderDigest, data + padding, DataDigest."""
    ahs = pdu.ahs
    data = pdu.data
    dsl = len(data)
    if len(ahs) & 3 or dsl > 0xFFFFFF:
        encode_bhs(pdu)  # raises the ValueError saying which length is wrong
    bhs = pdu._pack_bhs((len(ahs) >> 2) << 24 | dsl)  # encode_bhs, without a call per PDU
    parts: list[bytes | memoryview] = [bhs]
    if ahs:
        parts.append(ahs)
    if header_digest:
        parts.append(_DIGEST.pack(_crc(bhs + ahs if ahs else bhs)))
    if data:
        parts.append(data)
        pad = _PAD[len(data) & 3]
        if pad:
            parts.append(pad)
        if data_digest:
            parts.append(_DIGEST.pack(_crc(pad, _crc(data)) if pad else _crc(data)))
    return b"".join(parts)


# --------------------------------------------------------------------------- decode


def decode_pdu(raw: bytes, header_digest: bool = False, data_digest: bool = False) -> Pdu:
    """Decode exactly one whole PDU (convenience for tests and tools)."""
    dec = PduDecoder(
        max_data_segment_length=0xFFFFFF, header_digest=header_digest, data_digest=data_digest
    )
    pdus = dec.feed(raw)
    if len(pdus) != 1 or dec.buffered:
        raise PduError("not exactly one PDU")
    pdu = pdus[0]
    if isinstance(pdu, BadPdu):
        raise (DigestError if "digest" in pdu.message else PduError)(
            pdu.message, pdu.header, pdu.reason
        )
    return pdu


class PduDecoder:
    """Stream decoder: ``feed`` arbitrary chunks, get whole PDUs back, in order.

    Whatever cannot be decoded comes back in the list as a :class:`BadPdu`; after a
    fatal one the decoder is ``broken`` and yields nothing more (framing is lost, the
    connection must be dropped). A data segment longer than ``max_data_segment_length``
    (our declared MaxRecvDataSegmentLength) is fatal (RFC 7143 13.12); a header digest
    error is fatal, a data digest error is not (RFC 7143 7.8)."""

    __slots__ = ("_buf", "broken", "data_digest", "header_digest", "max_data_segment_length")

    def __init__(
        self,
        max_data_segment_length: int = 8192,
        header_digest: bool = False,
        data_digest: bool = False,
    ) -> None:
        self._buf = bytearray()
        self.max_data_segment_length = max_data_segment_length
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Pdu | BadPdu]:
        if self.broken:
            return []
        buf = self._buf
        src: bytes | bytearray = chunk  # decoded in place when nothing is buffered
        if buf:
            buf += chunk
            src = buf
        out: list[Pdu | BadPdu] = []
        pos = 0
        end = len(src)
        mv = memoryview(src)
        try:
            while end - pos >= BHS_LEN:
                lengths = int.from_bytes(mv[pos + 4 : pos + 8], "big")
                ahs_len = (lengths >> 24) << 2
                dsl = lengths & 0xFFFFFF
                hd = 4 if self.header_digest else 0
                padded = dsl + (-dsl & 3)
                dd = 4 if (self.data_digest and dsl) else 0
                total = BHS_LEN + ahs_len + hd + padded + dd
                if dsl > self.max_data_segment_length:
                    out.append(
                        BadPdu(
                            bytes(mv[pos : pos + BHS_LEN]),
                            RejectReason.PROTOCOL_ERROR,
                            f"DataSegmentLength {dsl} exceeds MaxRecvDataSegmentLength"
                            f" {self.max_data_segment_length}",
                            True,
                        )
                    )
                    self.broken = True
                    break
                if end - pos < total:
                    break
                hend = pos + BHS_LEN + ahs_len
                if hd:
                    (want,) = _DIGEST.unpack_from(mv, hend)
                    if _crc(mv[pos:hend]) != want:
                        out.append(
                            BadPdu(
                                bytes(mv[pos : pos + BHS_LEN]),
                                RejectReason.PROTOCOL_ERROR,
                                "header digest error",
                                True,
                            )
                        )
                        self.broken = True
                        break
                dstart = hend + hd
                if dd:
                    (want,) = _DIGEST.unpack_from(mv, dstart + padded)
                    if _crc(mv[dstart : dstart + padded]) != want:
                        out.append(
                            BadPdu(
                                bytes(mv[pos : pos + BHS_LEN]),
                                RejectReason.DATA_DIGEST_ERROR,
                                "data digest error",
                                False,
                            )
                        )
                        pos += total
                        continue
                ahs = bytes(mv[pos + BHS_LEN : hend]) if ahs_len else b""
                data = bytes(mv[dstart : dstart + dsl]) if dsl else b""
                try:
                    # decode_bhs, without a call per PDU
                    decode = DECODERS[mv[pos] & 0x3F]
                    out.append(decode(mv[pos : pos + BHS_LEN], ahs, data))
                except PduError as err:
                    out.append(BadPdu(err.header, err.reason, str(err), False))
                pos += total
        finally:
            if src is not buf and pos < end and not self.broken:
                buf += mv[pos:]  # the start of a PDU still to come
            mv.release()
            if self.broken:
                buf.clear()
            elif src is buf and pos:
                del buf[:pos]
        return out
