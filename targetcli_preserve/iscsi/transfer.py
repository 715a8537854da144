"""Write data transfer: the Data-Out of write commands and the R2Ts that ask for it.

Owns, per write command, where its data may come from and what arrived
(:class:`WriteTransfer`: immediate data, the unsolicited sequence bounded by
FirstBurstLength, RFC 7143 4.2.5.2, 13.14), and per connection the Target Transfer Tags
and the R2T sequences they name (:class:`Transfers`: at most MaxOutstandingR2T at a
time, each at most MaxBurstLength, R2TSN counting from 0, 11.8, 13.17, 13.19), and the
checks on each Data-Out PDU: DataPDUInOrder=Yes, DataSN per sequence (11.7.5, 13.18).
Sans-I/O: the R2Ts come back as PDUs for the connection to send.
"""

from __future__ import annotations

import enum

from targetcli_preserve.iscsi.codes import RESERVED_TAG
from targetcli_preserve.iscsi.layout import fast_constructor
from targetcli_preserve.iscsi.pdus import R2T, DataOut

_r2t = fast_constructor(R2T)  # built without type.__call__'s keyword dict (layout.py)


class DataSequence:
    """One output data sequence: the unsolicited one or one R2T's (RFC 7143 11.7.2)."""

    __slots__ = ("data_sn", "end", "next_offset", "offset", "r2t_sn", "ttt")

    def __init__(self, ttt: int, offset: int, end: int, next_offset: int, r2t_sn: int) -> None:
        self.ttt = ttt
        self.offset = offset
        self.end = end
        self.next_offset = next_offset
        self.data_sn = 0
        self.r2t_sn = r2t_sn


class WriteTransfer:
    """The Data-Out of one write command: what arrived, what is still to be asked for.

    ``final`` is the command's F bit: with F=0 the initiator sends unsolicited Data-Out
    up to min(FirstBurstLength, EDTL); with F=1 only the immediate data (if any) was
    unsolicited (RFC 7143 4.2.5.2). The rest is solicited with R2Ts from ``r2t_next``."""

    __slots__ = (
        "chunks",
        "complete",
        "edtl",
        "outstanding",
        "r2t_next",
        "r2t_sn",
        "received",
        "unsolicited",
    )

    def __init__(self, edtl: int, immediate: bytes, final: bool, first_burst_length: int) -> None:
        received = len(immediate)
        self.edtl = edtl
        self.chunks: list[tuple[int, bytes]] = [(0, immediate)] if received else []
        self.received = received
        self.complete = received >= edtl  # all the data arrived
        self.unsolicited: DataSequence | None = None
        self.r2t_sn = 0  # R2Ts sent so far (the next R2TSN)
        self.outstanding: dict[int, DataSequence] = {}  # TTT -> its R2T's sequence
        unsolicited_end = received
        if not final:
            unsolicited_end = min(first_burst_length, edtl)
            if unsolicited_end > received:
                self.unsolicited = DataSequence(RESERVED_TAG, 0, unsolicited_end, received, 0)
        self.r2t_next = unsolicited_end

    def take(self) -> bytes:
        """All the data, in offset order (once complete); the chunks are let go."""
        chunks = self.chunks
        self.chunks = []
        if len(chunks) == 1:
            return chunks[0][1]
        chunks.sort(key=lambda c: c[0])
        return b"".join(c for _, c in chunks)


class DataOutStep(enum.Enum):
    """What one Data-Out PDU did to its transfer."""

    REJECT = enum.auto()  # not the next PDU of an open sequence: a protocol error
    TAKEN = enum.auto()  # its data was taken
    R2T_DONE = enum.auto()  # taken, and it completed an R2T's sequence


class Transfers:
    """The Target Transfer Tags of one connection and the R2T sequences they name.

    TTTs are one space per connection, shared with long Text Responses (``new_ttt``);
    0xFFFFFFFF is reserved (RFC 7143 11.2.1.8) and so is 0 here."""

    __slots__ = ("_next_ttt", "_r2ts")

    def __init__(self) -> None:
        self._next_ttt = 1
        self._r2ts: dict[int, tuple[WriteTransfer, DataSequence]] = {}

    def new_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = ttt + 1 if ttt < 0xFFFFFFFE else 1
        return ttt

    def solicit(
        self,
        xfer: WriteTransfer,
        *,
        itt: int,
        lun_field: int,
        max_outstanding: int,
        max_burst: int,
    ) -> list[R2T]:
        """R2Ts for the solicited range, at most ``max_outstanding`` (MaxOutstandingR2T)
        at a time, each at most ``max_burst`` (MaxBurstLength), in increasing offset order
        (RFC 7143 11.8, 13.17, 13.19). Their StatSN, ExpCmdSN and MaxCmdSN are left for
        the connection to fill in."""
        r2ts = []
        while xfer.r2t_next < xfer.edtl and len(xfer.outstanding) < max_outstanding:
            offset = xfer.r2t_next
            length = min(max_burst, xfer.edtl - offset)
            ttt = self.new_ttt()
            seq = DataSequence(ttt, offset, offset + length, offset, xfer.r2t_sn)
            xfer.outstanding[ttt] = seq
            self._r2ts[ttt] = (xfer, seq)
            xfer.r2t_next = offset + length
            r2ts.append(
                _r2t(
                    lun=lun_field,
                    initiator_task_tag=itt,
                    target_transfer_tag=ttt,
                    r2t_sn=xfer.r2t_sn,
                    buffer_offset=offset,
                    desired_data_transfer_length=length,
                )
            )
            xfer.r2t_sn += 1
        return r2ts

    def receive(self, xfer: WriteTransfer, pdu: DataOut) -> DataOutStep:
        """Take one Data-Out PDU of ``xfer``'s command."""
        ttt = pdu.target_transfer_tag
        seq: DataSequence | None
        if ttt == RESERVED_TAG:
            seq = xfer.unsolicited
        else:
            entry = self._r2ts.get(ttt)
            seq = entry[1] if entry is not None and entry[0] is xfer else None
        data = pdu.data
        n = len(data)
        off = pdu.buffer_offset
        # DataPDUInOrder=Yes: each PDU continues its sequence exactly (RFC 7143 13.18);
        # DataSN counts PDUs within a sequence from 0 (11.7.5).
        if seq is None or off != seq.next_offset or off + n > seq.end or pdu.data_sn != seq.data_sn:
            return DataOutStep.REJECT
        seq.data_sn += 1
        seq.next_offset = off + n
        if n:
            xfer.chunks.append((off, data))
            xfer.received += n
            xfer.complete = xfer.received >= xfer.edtl
        if seq.next_offset == seq.end or pdu.final:
            if seq.next_offset != seq.end:
                return DataOutStep.REJECT  # F before the sequence is complete: never whole
            if seq is xfer.unsolicited:
                xfer.unsolicited = None
            else:
                del xfer.outstanding[seq.ttt]
                del self._r2ts[seq.ttt]
                return DataOutStep.R2T_DONE
        return DataOutStep.TAKEN

    def drop(self, xfer: WriteTransfer) -> None:
        """Forget ``xfer``'s sequences and data: no more of its Data-Out is taken."""
        for ttt in xfer.outstanding:
            self._r2ts.pop(ttt, None)
        xfer.outstanding.clear()
        xfer.unsolicited = None
        xfer.chunks = []

    def clear(self) -> None:
        self._r2ts.clear()
