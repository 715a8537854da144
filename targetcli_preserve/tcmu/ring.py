"""TCMU command ring codec (``include/uapi/linux/target_core_user.h``), sans-I/O.

The kernel's ``target_core_user`` hands SCSI commands to user space through one shared
region, mmap'ed from ``/dev/uioN``: ``struct tcmu_mailbox`` at offset 0, the command ring
at ``cmdr_off`` (``cmdr_size`` bytes), and the data area after it, up to the end of the
map. The kernel appends ``struct tcmu_cmd_entry`` (``TCMU_OP_CMD``: CDB and iovecs in
``req``), ``struct tcmu_tmr_entry`` (``TCMU_OP_TMR``: a task management notification)
and ``TCMU_OP_PAD`` entries (filling the ring's end when an entry would not fit, so that
no entry wraps) and moves ``cmd_head``. User space answers a command by writing ``rsp``
(``scsi_status``, ``read_len``, ``sense_buffer``) over the entry and moving ``cmd_tail``
past it; the kernel then reclaims the ring space and the command's data blocks.

This module owns that byte layout and the consumer's rules, and nothing else (like
``iscsi/``, it does no I/O): :class:`TcmuRing` wraps a writable buffer (a ``bytearray``,
``memoryview`` or ``mmap``), :meth:`TcmuRing.poll` decodes the entries from its read
position to ``cmd_head``, and :meth:`TcmuRing.complete` writes a response and moves
``cmd_tail`` over every entry it may release. The caller cannot release ring space the
kernel still needs: without ``TCMU_MAILBOX_FLAG_CAP_OOOC`` the response goes into the
command's own entry and the tail only moves over a completed prefix; with it, the
response goes into the oldest unreleased command slot (its ``cmd_id`` rewritten, as
tcmu-runner's ``tcmulib_command_complete`` does) and the tail moves at every completion.
CDB and iovecs are copied out when an entry is decoded, because a response overwrites
``req``. Everything the kernel wrote (mailbox, lengths, ids, counts, ``cdb_off``,
iovecs) is bounds-checked against the buffer first: a malformed ring raises
:class:`RingError` naming the field, never reads or writes out of bounds.

Left to the edge: opening ``/dev/uioN`` and mmap'ing the whole map (its size is in
``/sys/class/uio/uioN/maps/map0/size``), ``read(fd, 4)`` to wait for new entries,
``write(fd, 4)`` after :meth:`TcmuRing.take_notify` says ``cmd_tail`` moved, the netlink
device-added/removed handshake, and ``block_dev``/``reset_ring`` through configfs when a
restarted daemon finds ``cmd_tail != cmd_head``. Offsets are in host byte order and the
iovec layout is the 64-bit one (``struct iovec``: two 64-bit words).
"""

from __future__ import annotations

import enum
import mmap
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, TypeAlias

from targetcli_preserve._errors import PreserveError, ProtocolError

# --- the ABI (target_core_user.h) ------------------------------------------------------

MAILBOX_VERSION = 2  # TCMU_MAILBOX_VERSION
SENSE_BUFFERSIZE = 96  # TCMU_SENSE_BUFFERSIZE
ENTRY_ALIGN = 8  # TCMU_OP_ALIGN_SIZE: entry lengths are multiples of 8 ...
_OP_MASK = 0x7  # ... so the low three bits of len_op carry the opcode (TCMU_OP_MASK)


class Op(enum.IntEnum):
    """``enum tcmu_opcode``."""

    PAD = 0
    CMD = 1
    TMR = 2


class MailboxFlag(enum.IntFlag):
    """``TCMU_MAILBOX_FLAG_CAP_*``: what the kernel side supports."""

    CAP_OOOC = 1 << 0  # out-of-order completions
    CAP_READ_LEN = 1 << 1  # rsp.read_len honoured with TCMU_UFLAG_READ_LEN
    CAP_TMR = 1 << 2  # TCMU_OP_TMR notifications
    CAP_KEEP_BUF = 1 << 3  # data buffer kept after completion (not used here)


class UFlag(enum.IntFlag):
    """``TCMU_UFLAG_*``: set by user space in ``hdr.uflags``."""

    UNKNOWN_OP = 0x1
    READ_LEN = 0x2
    KEEP_BUF = 0x4


class TmrType(enum.IntEnum):
    """``TCMU_TMR_*`` in ``struct tcmu_tmr_entry``."""

    UNKNOWN = 0
    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LUN_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    LUN_RESET_PRO = 128  # pseudo reset due to a PR OUT


# struct tcmu_mailbox is __packed, but cmd_tail is __aligned__(64) "on its own cacheline":
# version u16 @0, flags u16 @2, cmdr_off u32 @4, cmdr_size u32 @8, cmd_head u32 @12,
# cmd_tail u32 @64; sizeof is 128, which the kernel uses as cmdr_off (CMDR_OFF).
_MAILBOX = struct.Struct("=HHIII")
_MB_HEAD = 12
_MB_TAIL = 64
_MB_END = _MB_TAIL + 4
MAILBOX_SIZE = 128

# struct tcmu_cmd_entry_hdr (8 bytes): len_op u32 @0, cmd_id u16 @4, kflags u8 @6,
# uflags u8 @7.
_HDR = struct.Struct("=IHBB")
_HDR_CMD_ID = 4
_HDR_UFLAGS = 7
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")

# struct tcmu_cmd_entry is __packed, but the anonymous structs inside its union are not:
# req.cdb_off (u64) is naturally aligned inside req, so it sits at +24, not +20.
# req: iov_cnt u32 @8, iov_bidi_cnt u32 @12, iov_dif_cnt u32 @16, cdb_off u64 @24,
# __pad1 @32, __pad2 @40, iov[] @48 (struct iovec: iov_base u64, iov_len u64).
# rsp: scsi_status u8 @8, __pad1 u8 @9, __pad2 u16 @10, read_len u32 @12,
# sense_buffer[96] @16. sizeof(struct tcmu_cmd_entry) = 8 + 96 + 8 = 112, and the kernel
# never makes a command entry smaller, so every command slot can hold a response.
_REQ_COUNTS = struct.Struct("=III")
_REQ_COUNTS_OFF = 8
_REQ_CDB_OFF = 24
_REQ_IOV = 48
_IOV = struct.Struct("=QQ")
_RSP = struct.Struct("=BBHI")
_RSP_OFF = 8
_RSP_SENSE = 16
CMD_ENTRY_SIZE = 112

# struct tcmu_tmr_entry (__packed): hdr @0, tmr_type u8 @8, __pad1 u8 @9, __pad2 u16 @10,
# cmd_cnt u32 @12, __pad3 u64 @16, __pad4 u64 @24, cmd_ids[] u16 @32.
_TMR = struct.Struct("=BBHI")
_TMR_OFF = 8
_TMR_IDS = 32
TMR_ENTRY_SIZE = 32

_CHECK_CONDITION = 0x02  # SAM-5 status: the only one the kernel copies sense data for

# scsi_command_size() (include/scsi/scsi_common.h): the CDB length the kernel copies, from
# the opcode's group code, or 8 + additional CDB length for VARIABLE LENGTH (0x7f).
_CDB_GROUP_LEN = (6, 10, 10, 12, 16, 12, 10, 10)
_VARIABLE_LENGTH_CMD = 0x7F

WritableBuffer: TypeAlias = bytearray | memoryview | mmap.mmap


# --- errors ----------------------------------------------------------------------------


class RingError(ProtocolError):
    """The kernel's side of the ring is malformed. ``field`` names the header field at
    fault (``"cmd_head"``, ``"len_op"``, ``"iov[2].iov_base"``, ...) and ``entry`` the ring
    offset of the entry, when there is one. The codec's state is left as it was, so the
    same error comes back until the ring is reset."""

    def __init__(self, field: str, message: str, entry: int | None = None) -> None:
        where = "" if entry is None else f" (entry at ring offset {entry:#x})"
        super().__init__(f"malformed TCMU ring: {field}: {message}{where}")
        self.field = field
        self.entry = entry


class RingUsageError(PreserveError):
    """The codec's caller broke a rule: completed a command twice or one this ring did not
    deliver, gave a response the kernel cannot take, or touched a completed command's
    data buffers. Nothing was written."""


# --- decoded entries -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mailbox:
    """``struct tcmu_mailbox`` as read, after validation against the buffer."""

    version: int
    flags: MailboxFlag
    cmdr_off: int
    cmdr_size: int
    cmd_head: int
    cmd_tail: int

    @property
    def data_off(self) -> int:
        """Start of the data area: everything after the command ring."""
        return self.cmdr_off + self.cmdr_size


class IoVec(NamedTuple):
    """One ``struct iovec`` of a command: ``offset`` from the start of the map (the
    kernel's ``iov_base``) and ``length``; always inside the data area."""

    offset: int
    length: int


class Command:
    """A ``TCMU_OP_CMD`` entry: a SCSI command to execute and answer with
    :meth:`TcmuRing.complete`. ``cdb`` and the iovecs were copied out of the ring; the data
    they point to stays in the data area and is reachable only until completion.

    ``iovecs`` hold the Data-Out of a write or the buffer for the Data-In of a read; for a
    bidirectional command (``bidi_iovecs`` not empty) they hold the Data-Out and
    ``bidi_iovecs`` the Data-In buffer. Which one applies is the CDB's business, not the
    codec's."""

    __slots__ = ("_ring", "_slot", "bidi_iovecs", "cdb", "cmd_id", "entry", "iovecs", "kflags")

    def __init__(
        self,
        ring: TcmuRing,
        slot: _Slot,
        cmd_id: int,
        cdb: bytes,
        iovecs: tuple[IoVec, ...],
        bidi_iovecs: tuple[IoVec, ...],
        kflags: int,
    ) -> None:
        self.cmd_id = cmd_id
        self.cdb = cdb
        self.iovecs = iovecs
        self.bidi_iovecs = bidi_iovecs
        self.kflags = kflags
        self.entry = slot.offset  # ring offset the request was read from
        self._ring = ring
        self._slot = slot

    def __repr__(self) -> str:
        return (
            f"Command(cmd_id={self.cmd_id}, cdb={self.cdb.hex()}, iovecs={list(self.iovecs)}, "
            f"bidi_iovecs={list(self.bidi_iovecs)})"
        )

    @property
    def outstanding(self) -> bool:
        """True until :meth:`TcmuRing.complete` answered it."""
        return self._ring._outstanding.get(self.cmd_id) is self

    @property
    def data_out_length(self) -> int:
        return sum(iov.length for iov in self.iovecs)

    @property
    def data_in_iovecs(self) -> tuple[IoVec, ...]:
        """Where Data-In goes: the bidi iovecs of a bidirectional command, else ``iovecs``."""
        return self.bidi_iovecs or self.iovecs

    @property
    def data_in_length(self) -> int:
        return sum(iov.length for iov in self.data_in_iovecs)

    def data_out(self) -> bytes:
        """The Data-Out bytes, gathered from ``iovecs``."""
        return b"".join(self.data_out_views())

    def data_out_views(self) -> list[memoryview]:
        """``iovecs`` as views into the data area (for ``pwritev``); invalid after
        completion, when the kernel may hand the blocks to another command."""
        return self._views(self.iovecs)

    def data_in_views(self) -> list[memoryview]:
        """``data_in_iovecs`` as views into the data area (for ``preadv``); invalid after
        completion."""
        return self._views(self.data_in_iovecs)

    def write_data_in(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Scatter ``data`` into the Data-In buffer, starting ``offset`` bytes into it."""
        size = len(data)
        room = self.data_in_length
        if offset < 0 or offset + size > room:
            raise RingUsageError(
                f"cmd_id {self.cmd_id}: {size} bytes of Data-In at offset {offset} do not fit "
                f"its {room}-byte buffer"
            )
        src = memoryview(data).cast("B")
        done = 0
        for view in self._views(self.data_in_iovecs):
            if done == size:
                break
            if offset >= len(view):
                offset -= len(view)
                continue
            n = min(len(view) - offset, size - done)
            view[offset : offset + n] = src[done : done + n]
            done += n
            offset = 0

    def _views(self, iovecs: tuple[IoVec, ...]) -> list[memoryview]:
        if not self.outstanding:
            raise RingUsageError(
                f"cmd_id {self.cmd_id} was completed: its data buffers belong to the kernel"
            )
        buf = self._ring._buf
        return [buf[iov.offset : iov.offset + iov.length] for iov in iovecs]


@dataclass(frozen=True, slots=True)
class Tmr:
    """A ``TCMU_OP_TMR`` entry: the kernel received a task management function.
    ``cmd_ids`` are the commands it aborts that were already on the ring; each of them
    must still be completed (an early completion lets the TMF finish sooner). Released
    as soon as it is read."""

    entry: int
    tmr_type: TmrType
    cmd_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnknownEntry:
    """An entry with an opcode this codec does not know. Like tcmu-runner, the codec
    sets ``TCMU_UFLAG_UNKNOWN_OP`` in it and releases it; it is returned for logging."""

    entry: int
    op: int
    length: int


Entry: TypeAlias = Command | Tmr | UnknownEntry


class _Slot:
    """One entry between ``cmd_tail`` and the read position, in ring order."""

    __slots__ = ("done", "is_cmd", "length", "offset")

    def __init__(self, offset: int, length: int, is_cmd: bool) -> None:
        self.offset = offset
        self.length = length
        self.is_cmd = is_cmd
        self.done = not is_cmd  # PAD, TMR and unknown entries are released once read


# --- the codec -------------------------------------------------------------------------


def read_mailbox(buf: WritableBuffer) -> Mailbox:
    """Read and validate ``struct tcmu_mailbox`` at the start of ``buf``."""
    view = memoryview(buf).cast("B")
    if len(view) < _MB_END:
        raise RingError("mailbox", f"a {len(view)}-byte map cannot hold the mailbox")
    version, flags, cmdr_off, cmdr_size, cmd_head = _MAILBOX.unpack_from(view, 0)
    (cmd_tail,) = _U32.unpack_from(view, _MB_TAIL)
    if version != MAILBOX_VERSION:
        raise RingError("version", f"{version}, this codec speaks {MAILBOX_VERSION}")
    if cmdr_off < _MB_END or cmdr_off % ENTRY_ALIGN or cmdr_off >= len(view):
        raise RingError(
            "cmdr_off", f"{cmdr_off:#x} overlaps the mailbox, is not 8-aligned or is past the map"
        )
    if cmdr_size == 0 or cmdr_size % ENTRY_ALIGN:
        raise RingError("cmdr_size", f"{cmdr_size:#x} is not a positive multiple of 8")
    if cmdr_off + cmdr_size > len(view):
        raise RingError(
            "cmdr_size", f"ring [{cmdr_off:#x}, {cmdr_off + cmdr_size:#x}) exceeds the map"
        )
    for name, value in (("cmd_head", cmd_head), ("cmd_tail", cmd_tail)):
        if value >= cmdr_size or value % ENTRY_ALIGN:
            raise RingError(name, f"{value:#x} is not an 8-aligned offset in the ring")
    return Mailbox(version, MailboxFlag(flags), cmdr_off, cmdr_size, cmd_head, cmd_tail)


def cdb_length(opcode: int) -> int:
    """The CDB length the kernel copies for ``opcode`` (``COMMAND_SIZE``), except for
    VARIABLE LENGTH CDBs, whose length is in their byte 7."""
    return _CDB_GROUP_LEN[(opcode >> 5) & 7]


class TcmuRing:
    """The user-space side of one TCMU command ring, over the whole mmap'ed region.

    Decoding starts at the mailbox's ``cmd_tail`` (entries the kernel queued before are
    delivered). ``in_order=True`` completes in ring order even when the kernel offers
    ``CAP_OOOC``. One thread, one ring: the codec is not thread-safe."""

    def __init__(self, buf: WritableBuffer, *, in_order: bool = False) -> None:
        view = memoryview(buf).cast("B")
        if view.readonly:
            raise RingUsageError("the TCMU ring must be mapped writable")
        mailbox = read_mailbox(view)
        self._buf = view
        self._flags = mailbox.flags
        self._cmdr_off = mailbox.cmdr_off
        self._size = mailbox.cmdr_size
        self._data_off = mailbox.data_off
        self._ooo = bool(mailbox.flags & MailboxFlag.CAP_OOOC) and not in_order
        self._tail = mailbox.cmd_tail  # what we last wrote to the mailbox
        self._read = mailbox.cmd_tail  # next entry to decode
        self._slots: deque[_Slot] = deque()  # unreleased entries, tail to read position
        self._outstanding: dict[int, Command] = {}
        self._notify = False

    # -- state ---------------------------------------------------------------------------

    @property
    def flags(self) -> MailboxFlag:
        return self._flags

    @property
    def out_of_order(self) -> bool:
        """Whether completions reuse the oldest slot (``CAP_OOOC``) or go in ring order."""
        return self._ooo

    @property
    def data_off(self) -> int:
        return self._data_off

    @property
    def outstanding(self) -> Mapping[int, Command]:
        """Commands delivered by :meth:`poll` and not completed yet, by ``cmd_id``."""
        return MappingProxyType(self._outstanding)

    def mailbox(self) -> Mailbox:
        """The mailbox as it is now."""
        return read_mailbox(self._buf)

    def take_notify(self) -> bool:
        """True once after ``cmd_tail`` moved: the edge must then write 4 bytes to the uio
        fd, which makes the kernel reclaim the released entries and read responses."""
        notify, self._notify = self._notify, False
        return notify

    # -- reading -------------------------------------------------------------------------

    def poll(self) -> list[Entry]:
        """Decode every entry from the read position to ``cmd_head``; PAD entries are
        consumed silently. If an entry is malformed, the entries before it are returned
        and the :class:`RingError` is raised by the next call (at once if none were)."""
        head = self._head()
        entries: list[Entry] = []
        try:
            while self._read != head:
                entry = self._decode(self._read, head)
                if entry is not None:
                    entries.append(entry)
        except RingError:
            if not entries:
                raise
        self._release()
        return entries

    def _head(self) -> int:
        buf = self._buf
        (tail,) = _U32.unpack_from(buf, _MB_TAIL)
        if tail != self._tail:
            raise RingError(
                "cmd_tail", f"{tail:#x}, but this ring last wrote {self._tail:#x} (ring reset?)"
            )
        head: int = _U32.unpack_from(buf, _MB_HEAD)[0]
        if head >= self._size or head % ENTRY_ALIGN:
            raise RingError("cmd_head", f"{head:#x} is not an 8-aligned offset in the ring")
        size = self._size
        if (head - tail) % size < (self._read - tail) % size:
            raise RingError("cmd_head", f"{head:#x} moved back over entries already read")
        return head

    def _decode(self, off: int, head: int) -> Entry | None:
        buf, size = self._buf, self._size
        base = self._cmdr_off + off
        len_op, cmd_id, kflags, uflags = _HDR.unpack_from(buf, base)
        length = len_op & ~_OP_MASK
        op = len_op & _OP_MASK
        if length == 0:
            raise RingError("len_op", "zero-length entry", off)
        if length > (head - off) % size:
            raise RingError("len_op", f"{length}-byte entry runs past cmd_head {head:#x}", off)
        if off + length > size:
            raise RingError("len_op", f"{length}-byte entry wraps the ring's end", off)
        entry: Entry | None
        if op == Op.CMD:
            entry = self._decode_cmd(off, length, cmd_id, kflags)
        elif op == Op.TMR:
            entry = self._decode_tmr(off, length)
            self._slots.append(_Slot(off, length, is_cmd=False))
        elif op == Op.PAD:
            entry = None
            self._slots.append(_Slot(off, length, is_cmd=False))
        else:
            buf[base + _HDR_UFLAGS] = uflags | UFlag.UNKNOWN_OP
            entry = UnknownEntry(off, op, length)
            self._slots.append(_Slot(off, length, is_cmd=False))
        self._read = (off + length) % size
        return entry

    def _decode_cmd(self, off: int, length: int, cmd_id: int, kflags: int) -> Command:
        buf = self._buf
        base = self._cmdr_off + off
        if length < CMD_ENTRY_SIZE:
            raise RingError("len_op", f"{length}-byte command entry cannot hold a response", off)
        if cmd_id == 0:
            raise RingError("cmd_id", "0 (the kernel numbers commands from 1)", off)
        if cmd_id in self._outstanding:
            raise RingError("cmd_id", f"{cmd_id} is already outstanding", off)
        iov_cnt, bidi_cnt, dif_cnt = _REQ_COUNTS.unpack_from(buf, base + _REQ_COUNTS_OFF)
        if dif_cnt:
            raise RingError(
                "iov_dif_cnt", f"{dif_cnt}: protection information is not supported", off
            )
        for name, count in (("iov_cnt", iov_cnt), ("iov_bidi_cnt", iov_cnt + bidi_cnt)):
            if _REQ_IOV + _IOV.size * count > length:
                raise RingError(
                    name, f"{iov_cnt} + {bidi_cnt} iovecs do not fit the {length}-byte entry", off
                )
        end = len(buf)
        iovs: list[IoVec] = []
        for i in range(iov_cnt + bidi_cnt):
            iov_base, iov_len = _IOV.unpack_from(buf, base + _REQ_IOV + _IOV.size * i)
            if not self._data_off <= iov_base <= end:
                raise RingError(
                    f"iov[{i}].iov_base",
                    f"{iov_base:#x} is outside the data area [{self._data_off:#x}, {end:#x})",
                    off,
                )
            if iov_len > end - iov_base:
                raise RingError(
                    f"iov[{i}].iov_len",
                    f"{iov_len:#x} bytes at {iov_base:#x} run past the map",
                    off,
                )
            iovs.append(IoVec(iov_base, iov_len))
        cdb = self._cdb(off, length, iov_cnt + bidi_cnt)
        slot = _Slot(off, length, is_cmd=True)
        cmd = Command(self, slot, cmd_id, cdb, tuple(iovs[:iov_cnt]), tuple(iovs[iov_cnt:]), kflags)
        self._slots.append(slot)
        self._outstanding[cmd_id] = cmd
        return cmd

    def _cdb(self, off: int, length: int, iov_total: int) -> bytes:
        """The CDB, which the kernel writes inside the entry, after the iovec array."""
        buf = self._buf
        base = self._cmdr_off + off
        lo, hi = base + _REQ_IOV + _IOV.size * iov_total, base + length
        (cdb_off,) = _U64.unpack_from(buf, base + _REQ_CDB_OFF)
        if not lo <= cdb_off < hi:
            raise RingError(
                "cdb_off", f"{cdb_off:#x} is not inside the entry after its iovecs", off
            )
        opcode = buf[cdb_off]
        if opcode == _VARIABLE_LENGTH_CMD:
            if cdb_off + 8 > hi:
                raise RingError("cdb_off", "variable-length CDB header runs past the entry", off)
            cdb_len = 8 + buf[cdb_off + 7]
        else:
            cdb_len = cdb_length(opcode)
            if cdb_len == 10 and opcode >= 0xC0 and cdb_off + cdb_len > hi:
                cdb_len = 6  # vendor-specific groups 6 and 7: some kernels copy only 6 bytes
        if cdb_off + cdb_len > hi:
            raise RingError("cdb_off", f"{cdb_len}-byte CDB runs past the entry", off)
        return bytes(buf[cdb_off : cdb_off + cdb_len])

    def _decode_tmr(self, off: int, length: int) -> Tmr:
        buf = self._buf
        base = self._cmdr_off + off
        if length < TMR_ENTRY_SIZE:
            raise RingError("len_op", f"{length}-byte TMR entry is too short", off)
        tmr_type, _, _, cmd_cnt = _TMR.unpack_from(buf, base + _TMR_OFF)
        if TMR_ENTRY_SIZE + 2 * cmd_cnt > length:
            raise RingError("cmd_cnt", f"{cmd_cnt} ids do not fit the {length}-byte entry", off)
        ids = struct.unpack_from(f"={cmd_cnt}H", buf, base + _TMR_IDS)
        try:
            kind = TmrType(tmr_type)
        except ValueError:
            kind = TmrType.UNKNOWN  # the kernel itself maps what it does not know to 0
        return Tmr(off, kind, ids)

    # -- completing ----------------------------------------------------------------------

    def complete(
        self,
        cmd: Command,
        status: int = 0,
        sense: bytes = b"",
        read_len: int | None = None,
    ) -> None:
        """Answer ``cmd`` with SCSI ``status`` (GOOD by default), ``sense`` data (with
        CHECK CONDITION only, up to 96 bytes) and, if the kernel offers ``CAP_READ_LEN``,
        ``read_len``: how many bytes of the Data-In buffer are valid (1 or more; the
        kernel ignores 0). Then move ``cmd_tail`` as far as the rules allow."""
        if self._outstanding.get(cmd.cmd_id) is not cmd:
            raise RingUsageError(f"cmd_id {cmd.cmd_id} is not outstanding on this ring")
        if not 0 <= status <= 0xFF:
            raise RingUsageError(f"SCSI status {status} does not fit a byte")
        if len(sense) > SENSE_BUFFERSIZE:
            raise RingUsageError(f"{len(sense)} bytes of sense data, the ring holds 96")
        if sense and status != _CHECK_CONDITION:
            raise RingUsageError("the kernel only delivers sense data with CHECK CONDITION")
        uflags = 0
        if read_len is not None:
            if not self._flags & MailboxFlag.CAP_READ_LEN:
                raise RingUsageError("read_len needs TCMU_MAILBOX_FLAG_CAP_READ_LEN")
            if not 1 <= read_len <= cmd.data_in_length:
                raise RingUsageError(
                    f"read_len {read_len} is not in 1..{cmd.data_in_length} (Data-In buffer)"
                )
            uflags = UFlag.READ_LEN
        slot = self._response_slot(cmd)
        base = self._cmdr_off + slot.offset
        buf = self._buf
        _U16.pack_into(buf, base + _HDR_CMD_ID, cmd.cmd_id)  # may differ in OOOC mode
        buf[base + _HDR_UFLAGS] = uflags
        _RSP.pack_into(buf, base + _RSP_OFF, status, 0, 0, read_len or 0)
        sense_at = base + _RSP_SENSE
        buf[sense_at : sense_at + SENSE_BUFFERSIZE] = sense.ljust(SENSE_BUFFERSIZE, b"\0")
        slot.done = True
        del self._outstanding[cmd.cmd_id]
        self._release()

    def _response_slot(self, cmd: Command) -> _Slot:
        if not self._ooo:
            return cmd._slot
        # CAP_OOOC: the kernel finds the command by hdr.cmd_id, so the response goes to
        # the oldest command slot not answered yet; the number of such slots equals the
        # number of outstanding commands, so there is always one.
        for slot in self._slots:
            if slot.is_cmd and not slot.done:
                return slot
        raise AssertionError("no free command slot for an outstanding command")

    def _release(self) -> None:
        """Move ``cmd_tail`` over the released prefix of the ring."""
        slots = self._slots
        tail = self._tail
        while slots and slots[0].done:
            slot = slots.popleft()
            tail = (slot.offset + slot.length) % self._size
        if tail != self._tail:
            _U32.pack_into(self._buf, _MB_TAIL, tail)
            self._tail = tail
            self._notify = True
