"""A simulated kernel side of a TCMU ring, for the tests of ``targetcli_preserve.tcmu``.

:class:`SimKernel` lays out a mailbox, command ring and data area in one buffer the way
``drivers/target/target_core_user.c`` does, and plays the kernel's parts:

- ``queue_cmd_ring``: data blocks first (lowest free block first, adjacent blocks merged
  into one iovec, Data-Out copied in), then an entry of
  ``max(offsetof(req.iov[n]), sizeof(struct tcmu_cmd_entry)) + round_up(cdb_len, 8)``
  bytes with the CDB after the iovecs, a PAD entry first when the entry would not fit
  before the ring's end, one byte of the ring always left free, ``cmd_id`` the lowest free
  id from 1; a command that does not fit waits in a queue (``qfull_queue``);
- ``tcmu_tmr_notify``/``queue_tmr_ring``: a TMR entry listing the affected ids on the
  ring; waiting commands are answered TASK ABORTED at once;
- ``tcmu_handle_completions`` (the user's write to the uio fd, :meth:`SimKernel.irq`):
  walks from the last cleaned entry to ``cmd_tail``, finds each command by ``hdr.cmd_id``,
  honours ``read_len`` and sense data as the kernel does, frees the data blocks, then
  runs the TMR and command queues;
- ``uio_event_notify`` after each entry it queues: :attr:`SimKernel.on_queue`, which
  :class:`SimDoorbell` turns into a readable fd, the uio fd's event protocol.

It is stricter than the kernel, and raises :class:`SimViolation` when user space breaks a
rule the kernel relies on: ``cmd_tail`` beyond ``cmd_head`` or inside an entry, a changed
``len_op`` or mailbox field, a response in another command's entry without
``CAP_OOOC``, an id that is not in flight (a second completion), a write into ring space
or data blocks the kernel owns (free space is filled with a poison byte and checked).

The layout constants below are written out again from the header rather than imported
from the codec, so that a mistake in one is caught by the other.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

PAGE_SIZE = 4096
CMDR_OFF = 128  # sizeof(struct tcmu_mailbox)
MB_CMDR_SIZE_DEF = 8 << 20  # mailbox plus command ring, by default
CMDR_SIZE_DEF = MB_CMDR_SIZE_DEF - CMDR_OFF
DATA_AREA_PAGES_DEF = 256 * 1024
POISON = 0xA5

CAP_OOOC, CAP_READ_LEN, CAP_TMR, CAP_KEEP_BUF = 1, 2, 4, 8
ALL_CAPS = CAP_OOOC | CAP_READ_LEN | CAP_TMR | CAP_KEEP_BUF  # what tcmu_configure_device sets
OP_PAD, OP_CMD, OP_TMR = 0, 1, 2
UFLAG_UNKNOWN_OP, UFLAG_READ_LEN, UFLAG_KEEP_BUF = 1, 2, 4
GOOD, CHECK_CONDITION, TASK_ABORTED = 0x00, 0x02, 0x40

# struct tcmu_mailbox
MB_VERSION, MB_FLAGS, MB_CMDR_OFF, MB_CMDR_SIZE, MB_CMD_HEAD, MB_CMD_TAIL = 0, 2, 4, 8, 12, 64
# struct tcmu_cmd_entry_hdr
HDR_LEN_OP, HDR_CMD_ID, HDR_KFLAGS, HDR_UFLAGS = 0, 4, 6, 7
# struct tcmu_cmd_entry: req
REQ_IOV_CNT, REQ_IOV_BIDI_CNT, REQ_IOV_DIF_CNT, REQ_CDB_OFF, REQ_IOV = 8, 12, 16, 24, 48
IOVEC_SIZE = 16
# struct tcmu_cmd_entry: rsp
RSP_SCSI_STATUS, RSP_READ_LEN, RSP_SENSE = 8, 12, 16
SENSE_SIZE = 96
SIZEOF_CMD_ENTRY = 112
# struct tcmu_tmr_entry
TMR_TYPE, TMR_CMD_CNT, TMR_CMD_IDS = 8, 12, 32
SIZEOF_TMR_ENTRY = 32


class SimViolation(AssertionError):
    """User space broke a rule of the ring (the kernel would misbehave or mark the ring
    broken)."""


def scsi_command_size(cdb: bytes) -> int:
    """The kernel's ``scsi_command_size``."""
    if cdb[0] == 0x7F:
        return 8 + cdb[7]
    return (6, 10, 10, 12, 16, 12, 10, 10)[cdb[0] >> 5]


def make_cdb(opcode: int, additional: int = 24) -> bytes:
    """A CDB of the length the kernel copies for ``opcode``, with recognisable bytes after
    the opcode (``additional`` is the extra length of a VARIABLE LENGTH CDB)."""
    if opcode == 0x7F:
        return bytes([0x7F, 1, 2, 3, 4, 5, 6, additional]) + bytes(
            (9 * i) & 0xFF for i in range(additional)
        )
    n = scsi_command_size(bytes([opcode]) + bytes(7))
    return bytes([opcode]) + bytes((opcode + 7 * i) & 0xFF for i in range(1, n))


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class SimResponse:
    """What the kernel took from a completion."""

    status: int
    sense: bytes  # the 96-byte sense buffer for CHECK CONDITION, else b""
    read_len: int | None  # honoured read_len (TCMU_UFLAG_READ_LEN, non-zero, a read)
    data_in: bytes | None  # the Data-In the kernel gathered; None if it gathered none


@dataclass(eq=False)
class SimCmd:
    """One command the simulated kernel was asked to pass to user space."""

    cdb: bytes
    data_out: bytes
    data_in_len: int
    cmd_id: int | None = None  # None while it waits for ring space
    entry: int | None = None  # ring offset of its entry
    blocks: list[int] = field(default_factory=list)
    response: SimResponse | None = None
    completions: int = 0  # responses user space delivered for it
    aborted_in_queue: bool = False

    @property
    def bidi(self) -> bool:
        return bool(self.data_out) and self.data_in_len > 0

    @property
    def is_read(self) -> bool:
        """DMA_FROM_DEVICE: the only direction ``read_len`` applies to."""
        return self.data_in_len > 0 and not self.data_out

    @property
    def state(self) -> Literal["waiting", "ring", "done"]:
        if self.response is not None:
            return "done"
        return "waiting" if self.cmd_id is None else "ring"


class _Placed(NamedTuple):
    op: int
    length: int
    cmd_id: int


class SimKernel:
    """The kernel's side of one TCMU device (see the module docstring).

    ``cmdr_size`` and the data area (``data_blocks`` of ``block_size`` bytes) default to a
    small ring, so that tests wrap it often; ``SimKernel.default_geometry()`` builds the
    kernel's defaults (8 MiB ring with the mailbox, 1 GiB data area) in an anonymous
    mmap."""

    def __init__(
        self,
        *,
        cmdr_size: int = 4096 - CMDR_OFF,
        data_blocks: int = 64,
        block_size: int = PAGE_SIZE,
        flags: int = ALL_CAPS,
        tmr_notify: bool = True,
        backing: Literal["bytearray", "mmap"] = "bytearray",
    ) -> None:
        if cmdr_size <= 0 or cmdr_size % 8 or block_size <= 0 or data_blocks <= 0:
            raise ValueError("bad geometry")
        self.cmdr_size = cmdr_size
        self.data_off = CMDR_OFF + cmdr_size
        self.block_size = block_size
        self.max_blocks = data_blocks
        self.map_size = self.data_off + data_blocks * block_size
        self.flags = flags
        self.tmr_notify = tmr_notify
        self._mmap: mmap.mmap | None = None
        if backing == "mmap":
            self._mmap = mmap.mmap(-1, self.map_size)
            self.buffer = memoryview(self._mmap)
        else:
            self.buffer = memoryview(bytearray(self.map_size))
        buf = self.buffer
        struct.pack_into("=HHIII", buf, 0, 2, flags, CMDR_OFF, cmdr_size, 0)
        struct.pack_into("=I", buf, MB_CMD_TAIL, 0)
        self._mailbox = bytes(buf[:MB_CMD_TAIL])
        buf[CMDR_OFF : self.data_off] = bytes([POISON]) * cmdr_size
        self.head = 0
        self.last_cleaned = 0
        self._placed: dict[int, _Placed] = {}
        self._in_use = [False] * data_blocks
        self._used_once: set[int] = set()
        self.in_flight: dict[int, SimCmd] = {}
        self.qfull: deque[SimCmd] = deque()
        self.tmr_queue: deque[tuple[int, tuple[int, ...]]] = deque()
        self.commands: list[SimCmd] = []
        self.tmrs_sent: list[tuple[int, tuple[int, ...]]] = []
        # uio_event_notify: called after every entry put on the ring (None: nobody listens)
        self.on_queue: Callable[[], None] | None = None

    @classmethod
    def default_geometry(cls, *, flags: int = ALL_CAPS) -> SimKernel:
        return cls(
            cmdr_size=CMDR_SIZE_DEF,
            data_blocks=DATA_AREA_PAGES_DEF,
            block_size=PAGE_SIZE,
            flags=flags,
            backing="mmap",
        )

    def close(self) -> None:
        self.buffer.release()
        if self._mmap is not None:
            self._mmap.close()

    # -- ring arithmetic (spc_used, spc_free, head_to_end) -------------------------------

    def _dist(self, start: int, end: int) -> int:
        return (end - start) % self.cmdr_size

    def _space_for(self, size: int) -> bool:
        to_end = self.cmdr_size - self.head
        needed = size if to_end >= size else size + to_end
        free = self.cmdr_size - self._dist(self.last_cleaned, self.head) - 1
        return free >= needed

    @property
    def tail(self) -> int:
        return int(struct.unpack_from("=I", self.buffer, MB_CMD_TAIL)[0])

    # -- queueing ------------------------------------------------------------------------

    def submit(self, cdb: bytes, data_out: bytes = b"", data_in_len: int = 0) -> SimCmd:
        """A SCSI command arrives for the device: put it on the ring, or in the queue."""
        if len(cdb) != scsi_command_size(cdb):
            raise ValueError(f"the kernel copies {scsi_command_size(cdb)} CDB bytes")
        nblocks = self._blocks_for(len(data_out)) + self._blocks_for(data_in_len)
        if nblocks > self.max_blocks:
            raise ValueError("larger than the data area")  # TCM_INVALID_CDB_FIELD
        worst = max(REQ_IOV + IOVEC_SIZE * nblocks, SIZEOF_CMD_ENTRY) + round_up(len(cdb), 8)
        if worst > self.cmdr_size // 2:
            raise ValueError("the entry could exceed half the ring")  # TCM_INVALID_CDB_FIELD
        cmd = SimCmd(cdb, data_out, data_in_len)
        self.commands.append(cmd)
        if self.qfull or not self._queue_cmd(cmd):
            self.qfull.append(cmd)
        return cmd

    def _blocks_for(self, length: int) -> int:
        return -(-length // self.block_size)

    def _queue_cmd(self, cmd: SimCmd) -> bool:
        first = len(cmd.data_out) if cmd.data_out else cmd.data_in_len
        second = cmd.data_in_len if cmd.bidi else 0
        n1, n2 = self._blocks_for(first), self._blocks_for(second)
        if self._in_use.count(False) < n1 + n2:
            return False
        blocks = [self._alloc_block() for _ in range(n1 + n2)]
        iovs1 = self._iovecs(blocks[:n1], first)
        iovs2 = self._iovecs(blocks[n1:], second)
        base_size = max(REQ_IOV + IOVEC_SIZE * (len(iovs1) + len(iovs2)), SIZEOF_CMD_ENTRY)
        size = base_size + round_up(len(cmd.cdb), 8)
        if not self._space_for(size):
            for b in blocks:
                self._in_use[b] = False
            return False
        cmd_id = next(i for i in range(1, 0x10000) if i not in self.in_flight)
        off = self._insert_padding(size)
        at = self._claim(off, size)
        buf = self.buffer
        struct.pack_into("=IHBB", buf, at, size | OP_CMD, cmd_id, 0, 0)
        struct.pack_into("=III", buf, at + REQ_IOV_CNT, len(iovs1), len(iovs2), 0)
        for i, (base, length) in enumerate(iovs1 + iovs2):
            struct.pack_into("=QQ", buf, at + REQ_IOV + IOVEC_SIZE * i, base, length)
        cdb_off = CMDR_OFF + off + base_size  # "All offsets relative to mb_addr"
        struct.pack_into("=Q", buf, at + REQ_CDB_OFF, cdb_off)
        buf[cdb_off : cdb_off + len(cmd.cdb)] = cmd.cdb
        self._scatter(blocks[:n1], cmd.data_out)
        cmd.cmd_id, cmd.entry, cmd.blocks = cmd_id, off, blocks
        self.in_flight[cmd_id] = cmd
        self._advance_head(off, _Placed(OP_CMD, size, cmd_id))
        self._notify()
        return True

    def _notify(self) -> None:
        if self.on_queue is not None:
            self.on_queue()

    def _alloc_block(self) -> int:
        b = self._in_use.index(False)
        want = POISON if b in self._used_once else 0
        if self._block(b).count(want) != self.block_size:
            raise SimViolation(f"user space wrote to data block {b} while the kernel owned it")
        self._in_use[b] = True
        return b

    def _block(self, b: int) -> bytes:
        start = self.data_off + b * self.block_size
        return bytes(self.buffer[start : start + self.block_size])

    def _iovecs(self, blocks: list[int], length: int) -> list[tuple[int, int]]:
        iovs: list[tuple[int, int]] = []
        prev = -2
        for b in blocks:
            n = min(length, self.block_size)
            length -= n
            if b == prev + 1:
                iovs[-1] = (iovs[-1][0], iovs[-1][1] + n)
            else:
                iovs.append((self.data_off + b * self.block_size, n))
            prev = b
        return iovs

    def _scatter(self, blocks: list[int], data: bytes) -> None:
        for i, b in enumerate(blocks):
            chunk = data[i * self.block_size : (i + 1) * self.block_size]
            start = self.data_off + b * self.block_size
            self.buffer[start : start + len(chunk)] = chunk

    def _gather(self, blocks: list[int], length: int) -> bytes:
        return b"".join(self._block(b) for b in blocks)[:length]

    def _insert_padding(self, size: int) -> int:
        to_end = self.cmdr_size - self.head
        if to_end < size:
            at = self._claim(self.head, to_end)
            struct.pack_into("=IHBB", self.buffer, at, to_end | OP_PAD, 0, 0, 0)
            self._advance_head(self.head, _Placed(OP_PAD, to_end, 0))
            assert self.head == 0
        return self.head

    def _claim(self, off: int, size: int) -> int:
        """Take free ring space for a new entry: it must still hold the poison."""
        assert off == self.head and off + size <= self.cmdr_size
        at = CMDR_OFF + off
        if bytes(self.buffer[at : at + size]).count(POISON) != size:
            raise SimViolation(f"user space wrote to free ring space at {off:#x}")
        self.buffer[at : at + size] = bytes(size)
        return at

    def _advance_head(self, off: int, placed: _Placed) -> None:
        self._placed[off] = placed
        self.head = (off + placed.length) % self.cmdr_size
        struct.pack_into("=I", self.buffer, MB_CMD_HEAD, self.head)
        self._mailbox = bytes(self.buffer[:MB_CMD_TAIL])

    def tmr(self, tmr_type: int, cmds: list[SimCmd]) -> None:
        """A task management function affects ``cmds`` (``tcmu_tmr_notify``)."""
        ids: list[int] = []
        for cmd in cmds:
            if cmd.state == "waiting":
                self.qfull.remove(cmd)
                cmd.aborted_in_queue = True
                cmd.response = SimResponse(TASK_ABORTED, b"", None, None)
            elif cmd.state == "ring" and cmd.cmd_id is not None:
                ids.append(cmd.cmd_id)
        if not self.tmr_notify:
            return
        tmr = (tmr_type, tuple(ids))
        if self.tmr_queue or not self._space_for(self._tmr_size(tmr)):
            self.tmr_queue.append(tmr)
        else:
            self._queue_tmr(tmr)

    @staticmethod
    def _tmr_size(tmr: tuple[int, tuple[int, ...]]) -> int:
        return round_up(SIZEOF_TMR_ENTRY + 2 * len(tmr[1]), 8)

    def _queue_tmr(self, tmr: tuple[int, tuple[int, ...]]) -> None:
        size = self._tmr_size(tmr)
        off = self._insert_padding(size)
        at = self._claim(off, size)
        tmr_type, ids = tmr
        struct.pack_into("=IHBB", self.buffer, at, size | OP_TMR, 0, 0, 0)
        struct.pack_into("=BBHI", self.buffer, at + TMR_TYPE, tmr_type, 0, 0, len(ids))
        struct.pack_into(f"={len(ids)}H", self.buffer, at + TMR_CMD_IDS, *ids)
        self.tmrs_sent.append(tmr)
        self._advance_head(off, _Placed(OP_TMR, size, 0))
        self._notify()

    # -- completions ---------------------------------------------------------------------

    def irq(self) -> int:
        """User space wrote to the uio fd: take every completion up to ``cmd_tail``, then
        queue what waited for space. Returns the number of commands completed."""
        if bytes(self.buffer[:MB_CMD_TAIL]) != self._mailbox:
            raise SimViolation("user space changed a mailbox field other than cmd_tail")
        tail = self.tail
        if tail >= self.cmdr_size or tail % 8:
            raise SimViolation(f"cmd_tail {tail:#x} is not an aligned ring offset")
        if self._dist(self.last_cleaned, tail) > self._dist(self.last_cleaned, self.head):
            raise SimViolation(f"cmd_tail {tail:#x} is beyond cmd_head {self.head:#x}")
        done = 0
        freed = False
        while self.last_cleaned != tail:
            off = self.last_cleaned
            placed = self._placed[off]
            at = CMDR_OFF + off
            len_op, cmd_id, _, uflags = struct.unpack_from("=IHBB", self.buffer, at)
            if len_op != placed.length | placed.op:
                raise SimViolation(f"user space changed len_op of the entry at {off:#x}")
            if placed.length > self._dist(off, tail):
                raise SimViolation(f"cmd_tail {tail:#x} points inside the entry at {off:#x}")
            if placed.op == OP_CMD:
                if not self.flags & CAP_OOOC and cmd_id != placed.cmd_id:
                    raise SimViolation(
                        f"entry of cmd_id {placed.cmd_id} holds the response of {cmd_id}: "
                        "out of ring order without CAP_OOOC"
                    )
                cmd = self.in_flight.pop(cmd_id, None)
                if cmd is None:
                    raise SimViolation(f"cmd_id {cmd_id} not found, ring is broken")
                self._complete(cmd, at, uflags)
                done += 1
            at_end = at + placed.length
            self.buffer[at:at_end] = bytes([POISON]) * placed.length
            del self._placed[off]
            self.last_cleaned = (off + placed.length) % self.cmdr_size
            freed = True
        if freed and self._run_tmr_queue():
            self._run_qfull_queue()
        self.check_free_space()
        return done

    def _complete(self, cmd: SimCmd, at: int, uflags: int) -> None:
        if uflags & UFLAG_KEEP_BUF:
            raise SimViolation("TCMU_UFLAG_KEEP_BUF is not simulated")
        if uflags & UFLAG_READ_LEN and not self.flags & CAP_READ_LEN:
            raise SimViolation("TCMU_UFLAG_READ_LEN without CAP_READ_LEN")
        status, _, _, read_len = struct.unpack_from("=BBHI", self.buffer, at + RSP_SCSI_STATUS)
        if uflags & UFLAG_UNKNOWN_OP:
            cmd.response = SimResponse(CHECK_CONDITION, b"", None, None)
        else:
            sense = b""
            if status == CHECK_CONDITION:
                sense = bytes(self.buffer[at + RSP_SENSE : at + RSP_SENSE + SENSE_SIZE])
            valid = cmd.is_read and bool(uflags & UFLAG_READ_LEN) and read_len != 0
            length = min(read_len, cmd.data_in_len) if valid else cmd.data_in_len
            data_in = None
            if cmd.data_in_len and (status != CHECK_CONDITION or valid):
                first = len(cmd.data_out) if cmd.bidi else 0
                data_in = self._gather(cmd.blocks[self._blocks_for(first) :], length)
            cmd.response = SimResponse(status, sense, read_len if valid else None, data_in)
        cmd.completions += 1
        for b in cmd.blocks:
            self._in_use[b] = False
            self._used_once.add(b)
            start = self.data_off + b * self.block_size
            self.buffer[start : start + self.block_size] = bytes([POISON]) * self.block_size

    def _run_tmr_queue(self) -> bool:
        while self.tmr_queue:
            if not self._space_for(self._tmr_size(self.tmr_queue[0])):
                return False
            self._queue_tmr(self.tmr_queue.popleft())
        return True

    def _run_qfull_queue(self) -> None:
        while self.qfull and self._queue_cmd(self.qfull[0]):
            self.qfull.popleft()

    # -- checks --------------------------------------------------------------------------

    def check_free_space(self) -> None:
        """Free ring space (from cmd_head to the last cleaned entry) still holds the poison."""
        start, end = CMDR_OFF + self.head, CMDR_OFF + self.last_cleaned
        if self.head < self.last_cleaned:
            spans = [(start, end)]
        else:
            spans = [(start, self.data_off), (CMDR_OFF, end)]
        for a, b in spans:
            if bytes(self.buffer[a:b]).count(POISON) != b - a:
                raise SimViolation("user space wrote to free ring space")

    def check_idle(self) -> None:
        """Every command answered exactly once, the ring empty, every block free and
        untouched since it was freed."""
        for cmd in self.commands:
            if cmd.response is None:
                raise SimViolation(f"a command was never answered: {cmd}")
            if cmd.completions != (0 if cmd.aborted_in_queue else 1):
                raise SimViolation(f"answered {cmd.completions} times: {cmd}")
        assert not self.in_flight and not self.qfull and not self.tmr_queue
        if not self.head == self.last_cleaned == self.tail:
            raise SimViolation("the ring is not empty")
        assert not any(self._in_use)
        for b in self._used_once:
            if self._block(b).count(POISON) != self.block_size:
                raise SimViolation(f"user space wrote to freed data block {b}")
        self.check_free_space()


class SimDoorbell:
    """The uio fd of a :class:`SimKernel` (``/dev/uioN`` as the edge uses it), over an
    eventfd: readable once the kernel queued an entry; :meth:`ack` consumes the events
    (the edge's 4-byte read), :meth:`ring` is the edge's 4-byte write, which runs the
    kernel's completion handling (:meth:`SimKernel.irq`; a :class:`SimViolation` is
    recorded in ``violations`` and raised). :meth:`remove` plays a device removal: the
    fd stays readable and both calls fail with EIO, as uio's do once the device is gone.
    """

    def __init__(self, sim: SimKernel) -> None:
        self.sim = sim
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        sim.on_queue = self._event
        self.acks = 0  # ack() calls, failed ones included
        self.rings = 0  # ring() calls that reached the kernel
        self.gone = False
        self.fail_ring = False  # ring() fails with EIO, the device still there otherwise
        self.violations: list[SimViolation] = []

    def _event(self) -> None:
        os.eventfd_write(self.fd, 1)

    def fileno(self) -> int:
        return self.fd

    def ack(self) -> None:
        self.acks += 1
        if self.gone:
            raise OSError(errno.EIO, "uio device removed")
        os.eventfd_read(self.fd)  # BlockingIOError when no event is pending

    def ring(self) -> None:
        if self.gone or self.fail_ring:
            raise OSError(errno.EIO, "uio device removed")
        self.rings += 1
        try:
            self.sim.irq()
        except SimViolation as exc:
            self.violations.append(exc)
            raise

    def remove(self) -> None:
        self.gone = True
        os.eventfd_write(self.fd, 1)  # uio_poll reports a removed device as ready

    def close(self) -> None:
        self.sim.on_queue = None
        os.close(self.fd)
