"""Serving one TCMU device's command ring on the asyncio loop: the ring to SCSI and back.

:class:`RingServer` owns the loop side of one device: it waits for the uio fd (the
:class:`Doorbell`), reads the new entries off the ring (:class:`~.ring.TcmuRing`),
issues each command to the SCSI layer (an :data:`Execute`, e.g.
``functools.partial(scsi_target.execute, lun)``), answers it on the ring when it
finishes, and tells the kernel the tail moved. It does not open, mmap or close the
device, and does not read netlink: the edge does, and hands it a ring and a doorbell.

Its rules:

- **Issue order is ring order** (docs/design.md rule 1: with LIO, ``seq`` follows ring
  order). Per doorbell event: ``ack()`` first (so ``cmd_head`` is read after the event
  that announced it, ring.py), then ``poll()``, then ``execute`` for each command in
  the order the poll returned them, all in one synchronous stretch: the SCSI layer fixes
  each command's sequence number inside ``execute``, so nothing may run in between.
- **No Task per command.** Each command's awaitable is run one step at once (most
  finish there) and a suspended one is continued by a ``driving.Driver``. Commands
  finish in any order and each is answered as soon as it finishes; the codec decides
  where the response goes and how far ``cmd_tail`` moves (``CAP_OOOC`` or not).
- **Data.** A command's Data-Out is handed over as an awaitable that gathers the
  iovecs only when awaited (only writes await it; a read never copies its buffer).
  Data-In is scattered into the command's buffer; with ``CAP_READ_LEN`` a shorter
  result is reported as ``read_len`` (the kernel then reports a residual), without it
  the rest of the buffer is zeroed, so stale data-area bytes of an earlier command
  never reach an initiator.
- **One doorbell write per loop iteration.** A poll round or a completion schedules one
  flush, which writes the doorbell only if the codec says ``cmd_tail`` moved.
- **Failure is contained.** A command whose awaitable raises or gives no result is
  answered CHECK CONDITION, HARDWARE ERROR / INTERNAL TARGET FAILURE. A malformed ring
  (:class:`~.ring.RingError`) or a device that went away (``OSError`` from the
  doorbell) stops the reading, is logged once and reported to ``on_lost``; nothing is
  raised into the loop, and the commands still running are answered as they finish.
- **Bounded.** What it holds is one driver per command in flight, and commands in
  flight are bounded by the ring (the kernel queues the rest itself).

TMR entries (task management) are logged; the commands they name are still completed
normally, as the kernel waits for them. Entries of unknown kinds are logged as warnings
(the codec already flagged them ``UNKNOWN_OP`` for the kernel).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator
from functools import partial
from typing import Protocol, TypeAlias

from ..driving import Driver, drive
from ..scsi.block import DataOut
from ..scsi.sense import Asc, SenseKey, fixed_sense
from ..scsi.target import CommandResult, ScsiStatus
from .ring import SENSE_BUFFERSIZE, Command, MailboxFlag, RingError, TcmuRing, Tmr

__all__ = ["Doorbell", "Execute", "RingServer"]

_log = logging.getLogger(__name__)

# SPC-4 4.5.3: the answer for a command whose SCSI layer raised instead of answering.
_INTERNAL_FAILURE = fixed_sense(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
# Poll rounds per doorbell event: a second round surfaces at once a RingError the codec
# deferred behind good entries; entries the kernel adds meanwhile come with an event of
# their own, so the bound loses nothing.
_MAX_POLLS = 4


class Doorbell(Protocol):
    """The uio fd's event protocol of one TCMU device."""

    def fileno(self) -> int:
        """Readable when the kernel has put new entries on the ring."""
        ...

    def ack(self) -> None:
        """Consume the event (uio: read 4 bytes); raises OSError when the device is gone
        (BlockingIOError when no event was pending)."""
        ...

    def ring(self) -> None:
        """Tell the kernel ``cmd_tail`` moved (uio: write 4 bytes); may raise OSError."""
        ...


# (cdb, data_out, data_out_length) -> the command's result; issues the command when
# called. E.g. functools.partial(scsi_target.execute, lun_number).
Execute: TypeAlias = Callable[[bytes, DataOut, int], Awaitable[CommandResult]]


class _DataOut:
    """A command's Data-Out, gathered from its iovecs only when awaited (never suspends)."""

    __slots__ = ("cmd",)

    def __init__(self, cmd: Command) -> None:
        self.cmd = cmd

    def __await__(self) -> Generator[None, None, bytes]:
        return self.cmd.data_out()
        yield  # pragma: no cover - makes this a generator


class RingServer:
    """Serves one TCMU device's ring on the running loop (see the module docstring).

    ``name`` names the device in log messages. ``on_lost`` is called once, with the
    RingError or OSError, when the ring can no longer be served."""

    def __init__(
        self,
        ring: TcmuRing,
        doorbell: Doorbell,
        execute: Execute,
        *,
        name: str,
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._ring = ring
        self._doorbell = doorbell
        self._execute = execute
        self.name = name
        self._on_lost = on_lost
        self._read_len = bool(ring.flags & MailboxFlag.CAP_READ_LEN)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None  # the fd being watched, while reading
        self._lost: BaseException | None = None
        self._closing: asyncio.Future[None] | None = None
        self._closed = False  # the ring is handed back: late completions are dropped
        self._flush_pending = False
        self._running: set[Driver[CommandResult]] = set()  # suspended commands
        self._dropped = 0

    @property
    def outstanding(self) -> int:
        """Commands issued and not yet answered."""
        return len(self._running)

    @property
    def lost(self) -> BaseException | None:
        """Why the ring can no longer be served, if it cannot."""
        return self._lost

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the doorbell on the running loop, then serve what is already on the ring
        (entries queued before the watch started have had their event)."""
        if self._loop is not None or self._closing is not None:
            raise RuntimeError(f"TCMU device {self.name}: already started or closed")
        loop = asyncio.get_running_loop()
        fd = self._doorbell.fileno()
        loop.add_reader(fd, self._on_doorbell)
        self._loop, self._fd = loop, fd
        self._serve()

    async def close(self, timeout: float = 30.0) -> None:
        """Stop taking entries, wait up to ``timeout`` seconds for the commands issued to
        finish, answer them on the ring and ring the doorbell. Commands still running
        after that are never answered on the ring (the edge may unmap it). Idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float) -> None:
        self._stop_reading()
        if self._running:
            _, late = await asyncio.wait({d.done for d in self._running}, timeout=timeout)
            if late:
                _log.warning(
                    "TCMU device %s: %d commands still running after %gs are not answered",
                    self.name,
                    len(late),
                    timeout,
                )
        self._flush()
        self._closed = True

    def _stop_reading(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._fd = None

    def _lose(self, exc: BaseException) -> None:
        """The device is gone or its ring is malformed: stop reading, say so once."""
        self._stop_reading()
        if self._lost is not None:
            return
        self._lost = exc
        _log.error("TCMU device %s: lost: %s", self.name, exc)
        if self._on_lost is not None:
            try:
                self._on_lost(exc)
            except Exception:  # noqa: BLE001 - never into the loop
                _log.exception("TCMU device %s: on_lost raised", self.name)

    # -- reading and issuing -------------------------------------------------------------

    def _on_doorbell(self) -> None:
        try:
            # Consume the event before reading cmd_head, so that an entry queued after
            # this read comes with an event of its own (ring.py: head after the read).
            self._doorbell.ack()
        except BlockingIOError:
            pass  # a spurious wake-up: no event to consume, polling is harmless
        except OSError as exc:
            self._lose(exc)
            return
        self._serve()

    def _serve(self) -> None:
        """Poll and issue in ring order, with nothing in between (rule 1)."""
        ring = self._ring
        try:
            for _ in range(_MAX_POLLS):
                entries = ring.poll()
                if not entries:
                    break
                for entry in entries:
                    if type(entry) is Command:
                        self._issue(entry)
                    elif isinstance(entry, Tmr):
                        # The kernel waits for the commands it names: they complete as
                        # they finish, like every other.
                        _log.info(
                            "TCMU device %s: task management %s for cmd_ids %s",
                            self.name,
                            entry.tmr_type.name,
                            list(entry.cmd_ids),
                        )
                    else:
                        _log.warning("TCMU device %s: unknown ring entry %s", self.name, entry)
        except RingError as exc:
            self._lose(exc)
        self._schedule_flush()  # poll may have released PAD, TMR and unknown entries

    def _issue(self, cmd: Command) -> None:
        length = cmd.data_out_length
        data_out = _DataOut(cmd) if length else None
        on_done = partial(self._answer, cmd)
        try:
            aw = self._execute(cmd.cdb, data_out, length)
        except Exception as exc:  # noqa: BLE001 - answered, never raised into the loop
            on_done(None, exc)
            return
        assert self._loop is not None
        # The first step runs here, before the next command is issued; a command that
        # suspends is continued by a Driver (driving.py), not a Task.
        drive(self._loop, aw, on_done, self._running)

    # -- answering -----------------------------------------------------------------------

    def _answer(
        self, cmd: Command, result: CommandResult | None, exc: BaseException | None
    ) -> None:
        if self._closed:
            self._dropped += 1
            _log.warning(
                "TCMU device %s: cmd_id %d finished after close, not answered (%d so far)",
                self.name,
                cmd.cmd_id,
                self._dropped,
            )
            return
        if result is None or exc is not None:
            if exc is None:
                _log.error("TCMU device %s: cmd_id %d gave no result", self.name, cmd.cmd_id)
            elif not isinstance(exc, asyncio.CancelledError):
                _log.error("TCMU device %s: cmd_id %d failed: %r", self.name, cmd.cmd_id, exc)
            self._fail(cmd)
        else:
            try:
                self._respond(cmd, result)
            except Exception:  # noqa: BLE001 - a result the ring cannot carry
                _log.exception(
                    "TCMU device %s: cannot answer cmd_id %d with %r", self.name, cmd.cmd_id, result
                )
                self._fail(cmd)
        self._schedule_flush()

    def _respond(self, cmd: Command, result: CommandResult) -> None:
        status = int(result.status)
        check = status == ScsiStatus.CHECK_CONDITION
        data = result.data
        room = cmd.data_in_length
        read_len = None
        n = min(len(data), room)
        if n:
            cmd.write_data_in(memoryview(data)[:n])
        if n < room and not check and not result.data_out_expected:
            # A short Data-In (allocation length, SPC-4 4.2.5.6). The kernel transfers
            # read_len bytes if it may (CAP_READ_LEN, at least 1) and reports the rest as
            # a residual; otherwise it transfers the whole buffer, so zero what we did
            # not fill. Not for a command with Data-Out: its buffer is the Data-Out.
            if n and self._read_len:
                read_len = n
            else:
                cmd.write_data_in(bytes(room - n), n)
        # Sense data only with CHECK CONDITION (the kernel copies it for no other
        # status), at most the ring's 96 bytes.
        sense = result.sense[:SENSE_BUFFERSIZE] if check else b""
        self._ring.complete(cmd, status, sense, read_len)

    def _fail(self, cmd: Command) -> None:
        try:
            self._ring.complete(cmd, ScsiStatus.CHECK_CONDITION, _INTERNAL_FAILURE)
        except Exception:  # noqa: BLE001 - nothing more can be done for it
            _log.exception("TCMU device %s: cannot answer cmd_id %d", self.name, cmd.cmd_id)

    # -- telling the kernel --------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_pending and self._loop is not None and not self._closed:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the doorbell once for everything answered since the last flush."""
        self._flush_pending = False
        if self._closed or not self._ring.take_notify():
            return
        try:
            self._doorbell.ring()
        except OSError as exc:
            self._lose(exc)
