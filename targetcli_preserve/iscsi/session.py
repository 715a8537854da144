"""One iSCSI connection as a sans-I/O state machine: login, then full feature phase.

:class:`Connection` takes received bytes (``receive_data``) and SCSI completions
(``command_completed``) and returns events for the I/O edge (execute a command, its
write data is ready, its write data will never come, close the connection); the PDUs
to send are collected and taken with ``data_to_send``. No sockets, no asyncio.

What it owns (RFC 7143): CmdSN ordering and the CmdSN window (3.2.2.1), StatSN (4.2.2.2),
immediate/unsolicited/solicited write data with R2T (4.2.5.2, 11.8), Data-In splitting
(11.7), residuals (11.4.5), NOP (11.18/11.19), Text/SendTargets (11.10, Appendix C),
task management (11.5/11.6), Logout (11.14/11.15), Reject (11.17). Session-level
features of ErrorRecoveryLevel > 0 and multiple connections are not offered.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from targetcli_preserve.iscsi.login import (
    LoginNegotiator,
    LoginOutcome,
    SessionParams,
    SessionType,
    TargetLimits,
)
from targetcli_preserve.iscsi.pdu import (
    R2T,
    RESERVED_TAG,
    BadPdu,
    DataIn,
    DataOut,
    LoginRequest,
    LogoutReason,
    LogoutRequest,
    LogoutResponse,
    LogoutResponseCode,
    NopIn,
    NopOut,
    PduDecoder,
    Reject,
    RejectReason,
    ScsiCommand,
    ScsiResponsePdu,
    Snack,
    TaskManagementRequest,
    TaskManagementResponse,
    TextRequest,
    TextResponse,
    TmfFunction,
    TmfResponse,
    encode_bhs,
    encode_pdu,
    field_to_lun,
)
from targetcli_preserve.iscsi.text import TextFormatError, encode_text, parse_text

_log = logging.getLogger(__name__)
_M = 0xFFFFFFFF
_HALF = 1 << 31
_DEFAULT_LIMITS = TargetLimits()
_GOOD = 0


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic for 32-bit sequence numbers (RFC 7143 4.2.2.1)."""
    return a != b and ((b - a) & _M) < _HALF


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class ExecuteCommand:
    """Deliver a SCSI command to the SCSI layer now (events come in CmdSN order).

    ``data`` is the whole Data-Out when it already arrived (or b"" for a write with no
    data), None for a command without Data-Out; ``data_pending`` means the data comes
    later in a :class:`DataOutReady` (or never: :class:`DataOutAborted`)."""

    initiator_task_tag: int
    lun: int
    cdb: bytes
    data_out_length: int
    data: bytes | None
    data_pending: bool


@dataclass(slots=True)
class DataOutReady:
    initiator_task_tag: int
    data: bytes


@dataclass(slots=True)
class DataOutAborted:
    """The write data of a delivered command will never arrive (task aborted)."""

    initiator_task_tag: int


@dataclass(slots=True)
class LoginComplete:
    params: SessionParams


@dataclass(slots=True)
class CloseConnection:
    reason: str


Event = ExecuteCommand | DataOutReady | DataOutAborted | LoginComplete | CloseConnection


class Phase(enum.Enum):
    LOGIN = enum.auto()
    FULL_FEATURE = enum.auto()
    CLOSED = enum.auto()


# --------------------------------------------------------------------------- tasks


class _Sequence:
    """One output data sequence: the unsolicited one or one R2T's (RFC 7143 11.7.2)."""

    __slots__ = ("data_sn", "end", "next_offset", "offset", "r2t_sn", "ttt")

    def __init__(self, ttt: int, offset: int, end: int, next_offset: int, r2t_sn: int):
        self.ttt = ttt
        self.offset = offset
        self.end = end
        self.next_offset = next_offset
        self.data_sn = 0
        self.r2t_sn = r2t_sn


class _Task:
    __slots__ = (
        "aborted",
        "cdb",
        "chunks",
        "cmd_sn",
        "data_done",
        "data_needed",
        "delivered",
        "edtl",
        "immediate",
        "itt",
        "lun",
        "lun_field",
        "outstanding",
        "r2t_next",
        "r2t_sn",
        "read",
        "received",
        "unsolicited",
        "waiters",
        "write",
    )

    def __init__(self, pdu: ScsiCommand, lun: int, cdb: bytes) -> None:
        self.itt = pdu.initiator_task_tag
        self.lun_field = pdu.lun
        self.lun = lun
        self.cdb = cdb
        self.edtl = pdu.expected_data_transfer_length
        self.read = pdu.read
        self.write = pdu.write
        self.cmd_sn = pdu.cmd_sn
        self.immediate = pdu.immediate
        self.delivered = False
        self.aborted = False
        self.data_needed = self.edtl if self.write else 0
        self.received = 0
        self.chunks: list[tuple[int, bytes]] = []
        self.unsolicited: _Sequence | None = None
        self.r2t_next = 0
        self.r2t_sn = 0
        self.outstanding: dict[int, _Sequence] = {}
        self.data_done = self.received >= self.data_needed
        self.waiters: list[_Waiter] = []

    def data(self) -> bytes:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0][1]
        chunks.sort(key=lambda c: c[0])
        return b"".join(c for _, c in chunks)


class _Waiter:
    """A TMF or Logout waiting for in-flight tasks to finish before it is answered."""

    __slots__ = ("done", "pending")

    def __init__(self, done: Callable[[], None]) -> None:
        self.pending: set[int] = set()
        self.done = done


# --------------------------------------------------------------------------- connection


class Connection:
    """A target-side iSCSI connection (and its single-connection session).

    ``targets`` is the collection of target names served here (looked up at login and
    for SendTargets); ``portal`` is the (host, port) this connection came in on;
    ``lun_exists(target_name, lun)`` answers TMFs' "LUN does not exist"."""

    def __init__(
        self,
        targets: Collection[str],
        portal: tuple[str, int] = ("127.0.0.1", 3260),
        portal_group_tag: int = 1,
        limits: TargetLimits = _DEFAULT_LIMITS,
        allocate_tsih: Callable[[], int] | None = None,
        lun_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.targets = targets
        self.portal = portal
        self.portal_group_tag = portal_group_tag
        self.limits = limits
        self.lun_exists = lun_exists
        self.phase = Phase.LOGIN
        self.login = LoginNegotiator(targets, limits, portal_group_tag, allocate_tsih)
        self.params: SessionParams = self.login.params
        self.decoder = PduDecoder(max(8192, limits.max_recv_data_segment_length))
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self.stat_sn = 0
        self.exp_cmd_sn = 0
        self.max_cmd_sn = 0
        self.tasks: dict[int, _Task] = {}
        self._held: dict[int, Callable[[], None]] = {}
        self._r2ts: dict[int, tuple[_Task, _Sequence]] = {}
        self._next_ttt = 1
        self._tombstones: set[int] = set()
        self._text_pending: dict[int, bytes] = {}  # TTT -> rest of a long Text Response
        self._text_request = b""  # a Text Request continued with the C bit
        self._logout: _Waiter | None = None
        self._hd = False
        self._dd = False
        self._mrdsl = 8192
        self._depth = limits.queue_depth

    # ------------------------------------------------------------------ public API

    @property
    def target_name(self) -> str:
        return self.params.target_name

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def start_full_feature(self, params: SessionParams, cmd_sn: int = 0, stat_sn: int = 1) -> None:
        """Skip the login (tests and tools): enter full feature phase with ``params``."""
        self.params = params
        self._enter_ffp(cmd_sn, stat_sn)

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the socket; returns events in the order they must be acted on."""
        if self.phase is Phase.CLOSED:
            return []
        for pdu in self.decoder.feed(data):
            if self.phase is Phase.CLOSED:
                break
            try:
                self._dispatch(pdu)
            except Exception as err:  # noqa: BLE001 - never let a PDU take the server down
                _log.exception("internal error handling %s", type(pdu).__name__)
                self._close(f"internal error handling PDU: {err!r}")
        return self._take_events()

    def command_completed(
        self,
        itt: int,
        status: int,
        data: bytes = b"",
        sense: bytes = b"",
        data_out_expected: int | None = None,
    ) -> list[Event]:
        """A delivered SCSI command finished: queue its Data-In/SCSI Response.

        ``data_out_expected`` is how much Data-Out the command's CDB asked for (None:
        unknown); for a write it sets the residual against the Expected Data Transfer
        Length, as ``data`` does for a read (RFC 7143 11.4.5.1)."""
        task = self.tasks.get(itt)
        if task is None or not task.delivered or self.phase is Phase.CLOSED:
            return self._take_events()
        del self.tasks[itt]
        if not task.data_done:
            self._drop_data_state(task)
            self._events.append(DataOutAborted(itt))
            self._tombstone(itt)
        if task.aborted:
            self._tombstone(itt)
        else:
            self._send_response(task, status, data, sense, data_out_expected)
        self._release_waiters(task)
        return self._take_events()

    def connection_lost(self) -> list[Event]:
        """The transport is gone: every write still waiting for data gets none."""
        for task in list(self.tasks.values()):
            if task.delivered and not task.data_done:
                self._events.append(DataOutAborted(task.itt))
        self.tasks.clear()
        self._held.clear()
        self._r2ts.clear()
        self.phase = Phase.CLOSED
        return self._take_events()

    def data_to_send(self) -> list[bytes]:
        out = self._out
        self._out = []
        return out

    # ------------------------------------------------------------------ plumbing

    def _take_events(self) -> list[Event]:
        ev = self._events
        self._events = []
        return ev

    def _send(self, pdu) -> None:
        self._out.append(encode_pdu(pdu, self._hd, self._dd))

    def _next_stat_sn(self) -> int:
        sn = self.stat_sn
        self.stat_sn = (sn + 1) & _M
        return sn

    def _window(self) -> int:
        """Current MaxCmdSN: the queue depth minus commands not yet answered; never
        decreases (RFC 7143 4.2.2.1)."""
        busy = len(self.tasks)
        if busy >= self._depth:
            busy = self._depth - 1
        new = (self.exp_cmd_sn + self._depth - 1 - busy) & _M
        if serial_lt(self.max_cmd_sn, new):
            self.max_cmd_sn = new
        return self.max_cmd_sn

    def _close(self, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        for task in self.tasks.values():
            if task.delivered and not task.data_done:
                self._events.append(DataOutAborted(task.itt))
        self.tasks.clear()
        self._held.clear()
        self._r2ts.clear()
        self.phase = Phase.CLOSED
        self._events.append(CloseConnection(reason))

    def _reject(self, header: bytes, reason: int) -> None:
        # RFC 7143 11.17: the data segment carries the complete header of the bad PDU.
        self._send(
            Reject(
                reason=reason,
                stat_sn=self._next_stat_sn(),
                exp_cmd_sn=self.exp_cmd_sn,
                max_cmd_sn=self._window(),
                data=bytes(header[:48]),
            )
        )

    def _enter_ffp(self, cmd_sn: int, stat_sn: int) -> None:
        p = self.params
        self.phase = Phase.FULL_FEATURE
        self.exp_cmd_sn = cmd_sn & _M
        self.max_cmd_sn = (cmd_sn + self._depth - 1) & _M
        self.stat_sn = stat_sn & _M
        # Digests and MaxRecvDataSegmentLength apply from the first PDU after the final
        # Login Response (RFC 7143 13.1, 13.12).
        self._hd = p.header_digest
        self._dd = p.data_digest
        self._mrdsl = p.initiator_max_recv_data_segment_length
        self.decoder.header_digest = p.header_digest
        self.decoder.data_digest = p.data_digest
        self.decoder.max_data_segment_length = p.target_max_recv_data_segment_length

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, pdu) -> None:
        if type(pdu) is BadPdu:
            if self.phase is not Phase.FULL_FEATURE:
                self._close(pdu.message)
                return
            self._reject(pdu.header, pdu.reason)
            # ErrorRecoveryLevel 0: a digest error or broken framing ends the connection
            # (RFC 7143 7.8, 7.12) after the Reject; an unknown opcode does not.
            if pdu.fatal or pdu.reason == RejectReason.DATA_DIGEST_ERROR:
                self._close(pdu.message)
            return
        if self.phase is Phase.LOGIN:
            if type(pdu) is not LoginRequest:
                self._close("non-login PDU during login")  # RFC 7143 6.3
                return
            rsp, outcome = self.login.receive(pdu)
            self._out.append(encode_pdu(rsp))
            if outcome is LoginOutcome.FAILURE:
                self._close("login failed")
            elif outcome is LoginOutcome.SUCCESS:
                self.params = self.login.params
                self._enter_ffp(self.login.cmd_sn, self.login.stat_sn)
                self._events.append(LoginComplete(self.params))
            return
        handler = _HANDLERS.get(type(pdu))
        if handler is None:
            # Target-only opcodes, Login in FFP: protocol errors (RFC 7143 11.17.1).
            self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)
            return
        handler(self, pdu)

    def _ordered(self, pdu, deliver: Callable[[], None]) -> bool:
        """CmdSN ordering (RFC 7143 3.2.2.1): immediate PDUs now; non-immediate ones in
        CmdSN order, holding early arrivals; outside the window or duplicates are
        silently ignored. Returns False when the PDU was ignored."""
        if pdu.immediate:
            deliver()
            return True
        sn = pdu.cmd_sn
        exp = self.exp_cmd_sn
        if sn == exp:
            self.exp_cmd_sn = (exp + 1) & _M
            deliver()
            held = self._held
            while held and self.exp_cmd_sn in held:
                fn = held.pop(self.exp_cmd_sn)
                self.exp_cmd_sn = (self.exp_cmd_sn + 1) & _M
                fn()
            return True
        if serial_lt(exp, sn) and not serial_lt(self.max_cmd_sn, sn):
            if sn in self._held:
                return False
            self._held[sn] = deliver
            return True
        return False

    def _consume_cmd_sn(self, sn: int) -> None:
        """Count ``sn`` as received without delivering anything for it."""
        if sn == self.exp_cmd_sn:
            self._ordered(_Placeholder(sn), lambda: None)
        else:
            self._held.setdefault(sn, lambda: None)

    def _tombstone(self, itt: int) -> None:
        if len(self._tombstones) > 4096:
            self._tombstones.clear()
        self._tombstones.add(itt)

    # ------------------------------------------------------------------ SCSI Command

    def _on_command(self, pdu: ScsiCommand) -> None:
        if not pdu.immediate:
            sn = pdu.cmd_sn
            if sn != self.exp_cmd_sn and (
                not serial_lt(self.exp_cmd_sn, sn)
                or serial_lt(self.max_cmd_sn, sn)
                or sn in self._held
            ):
                return  # outside the window or a duplicate: ignore (RFC 7143 3.2.2.1)
        header = None
        reason = 0
        p = self.params
        itt = pdu.initiator_task_tag
        imm = pdu.data
        if p.session_type is SessionType.DISCOVERY:
            reason = RejectReason.COMMAND_NOT_SUPPORTED  # RFC 7143 4.3: no SCSI in discovery
        elif pdu.read and pdu.write:
            reason = RejectReason.COMMAND_NOT_SUPPORTED  # bidirectional commands: not offered
        elif itt == RESERVED_TAG:
            reason = RejectReason.INVALID_PDU_FIELD
        elif itt in self.tasks:
            reason = RejectReason.TASK_IN_PROGRESS
        elif imm and (
            not pdu.write
            or not p.immediate_data
            or len(imm) > p.first_burst_length
            or len(imm) > pdu.expected_data_transfer_length
        ):
            reason = RejectReason.PROTOCOL_ERROR  # RFC 7143 4.2.5.2, 13.13, 13.14
        elif pdu.write and not pdu.final and p.initial_r2t:
            reason = RejectReason.PROTOCOL_ERROR  # unsolicited Data-Out not allowed
        if reason:
            header = encode_bhs(pdu)
            self._ordered(pdu, lambda: self._reject(header, reason))
            return
        cdb = pdu.cdb
        if pdu.ahs:
            cdb = _extended_cdb(cdb, pdu.ahs)
            if cdb is None:
                header = encode_bhs(pdu)
                self._ordered(pdu, lambda: self._reject(header, RejectReason.INVALID_PDU_FIELD))
                return
        task = _Task(pdu, field_to_lun(pdu.lun), cdb)
        self._tombstones.discard(itt)
        if task.write:
            edtl = task.edtl
            if imm:
                task.chunks.append((0, imm))
                task.received = len(imm)
            # The unsolicited range (RFC 7143 4.2.5.2): with F=0 on the command the
            # initiator sends Data-Out up to min(FirstBurstLength, EDTL); with F=1 only
            # the immediate data (if any) was unsolicited.
            unsol_end = len(imm)
            if not pdu.final:
                unsol_end = min(p.first_burst_length, edtl)
                if unsol_end > task.received:
                    task.unsolicited = _Sequence(RESERVED_TAG, 0, unsol_end, task.received, 0)
            task.r2t_next = unsol_end
            task.data_done = task.received >= task.data_needed
        self.tasks[itt] = task
        self._ordered(pdu, lambda: self._deliver(task))

    def _deliver(self, task: _Task) -> None:
        if task.aborted:
            self.tasks.pop(task.itt, None)
            return
        task.delivered = True
        if not task.write:
            self._events.append(ExecuteCommand(task.itt, task.lun, task.cdb, 0, None, False))
            return
        if task.data_done:
            data = task.data() if task.chunks else b""
            task.chunks = []
            self._events.append(
                ExecuteCommand(task.itt, task.lun, task.cdb, task.edtl, data, False)
            )
            return
        self._events.append(ExecuteCommand(task.itt, task.lun, task.cdb, task.edtl, None, True))
        self._issue_r2ts(task)

    def _issue_r2ts(self, task: _Task) -> None:
        """R2Ts for the solicited range, at most MaxOutstandingR2T at a time, each at
        most MaxBurstLength, in increasing offset order (RFC 7143 11.8, 13.17, 13.19)."""
        p = self.params
        limit = p.max_outstanding_r2t
        burst = p.max_burst_length
        while task.r2t_next < task.edtl and len(task.outstanding) < limit:
            offset = task.r2t_next
            length = min(burst, task.edtl - offset)
            ttt = self._next_ttt
            self._next_ttt = ttt + 1 if ttt < 0xFFFFFFFE else 1
            seq = _Sequence(ttt, offset, offset + length, offset, task.r2t_sn)
            task.outstanding[ttt] = seq
            self._r2ts[ttt] = (task, seq)
            task.r2t_next = offset + length
            self._send(
                R2T(
                    lun=task.lun_field,
                    initiator_task_tag=task.itt,
                    target_transfer_tag=ttt,
                    stat_sn=self.stat_sn,
                    exp_cmd_sn=self.exp_cmd_sn,
                    max_cmd_sn=self._window(),
                    r2t_sn=task.r2t_sn,
                    buffer_offset=offset,
                    desired_data_transfer_length=length,
                )
            )
            task.r2t_sn += 1

    def _drop_data_state(self, task: _Task) -> None:
        for ttt in task.outstanding:
            self._r2ts.pop(ttt, None)
        task.outstanding.clear()
        task.unsolicited = None
        task.chunks = []
        task.data_done = True

    # ------------------------------------------------------------------ Data-Out

    def _on_data_out(self, pdu: DataOut) -> None:
        itt = pdu.initiator_task_tag
        ttt = pdu.target_transfer_tag
        task = self.tasks.get(itt)
        if task is None or task.data_done:
            if itt in self._tombstones or task is not None:
                return  # data of an aborted or already answered task: drop quietly
            self._reject(encode_bhs(pdu), RejectReason.INVALID_PDU_FIELD)
            return
        if ttt == RESERVED_TAG:
            seq = task.unsolicited
        else:
            entry = self._r2ts.get(ttt)
            seq = entry[1] if entry is not None and entry[0] is task else None
        data = pdu.data
        n = len(data)
        off = pdu.buffer_offset
        # DataPDUInOrder=Yes: each PDU continues its sequence exactly (RFC 7143 13.18);
        # DataSN counts PDUs within a sequence from 0 (11.7.5).
        if seq is None or off != seq.next_offset or off + n > seq.end or pdu.data_sn != seq.data_sn:
            self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)
            return
        seq.data_sn += 1
        seq.next_offset = off + n
        if n:
            task.chunks.append((off, data))
            task.received += n
        if seq.next_offset == seq.end or pdu.final:
            if seq.next_offset != seq.end:
                # F before the sequence is complete: the data can never be whole.
                self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)
                return
            if seq is task.unsolicited:
                task.unsolicited = None
            else:
                del task.outstanding[seq.ttt]
                del self._r2ts[seq.ttt]
                if task.delivered:
                    self._issue_r2ts(task)
        if task.received >= task.data_needed:
            task.data_done = True
            if task.delivered:
                data = task.data()
                task.chunks = []
                self._events.append(DataOutReady(itt, data))

    # ------------------------------------------------------------------ responses

    def _send_response(
        self,
        task: _Task,
        status: int,
        data: bytes,
        sense: bytes,
        data_out_expected: int | None = None,
    ) -> None:
        edtl = task.edtl if task.read else 0
        total = len(data)
        overflow = underflow = False
        residual = 0
        if task.read or total:
            if total > edtl:
                overflow = True
                residual = total - edtl
                total = edtl
            elif total < edtl:
                underflow = True
                residual = edtl - total
        elif task.write and data_out_expected is not None:
            # RFC 7143 11.4.5.1 for a write: O when the CDB wanted more Data-Out than
            # the Expected Data Transfer Length allowed (the residual was never sent),
            # U when it used less than the initiator expected to send. Also with a
            # status other than GOOD (the target "may set the residual count").
            if data_out_expected > task.edtl:
                overflow = True
                residual = data_out_expected - task.edtl
            elif data_out_expected < task.edtl:
                underflow = True
                residual = task.edtl - data_out_expected
        hd = self._hd
        dd = self._dd
        out = self._out
        data_sn = 0
        if total:
            mv = memoryview(data)
            mrdsl = self._mrdsl
            burst = self.params.max_burst_length
            collapse = not sense  # status rides on the last Data-In (RFC 7143 11.7.4)
            off = 0
            lun = task.lun_field
            itt = task.itt
            while off < total:
                n = min(mrdsl, burst - off % burst, total - off)
                end = off + n
                last = end == total
                if last and collapse:
                    pdu = DataIn(
                        True,
                        False,
                        overflow,
                        underflow,
                        True,
                        status,
                        lun,
                        itt,
                        RESERVED_TAG,
                        self._next_stat_sn(),
                        self.exp_cmd_sn,
                        self._window(),
                        data_sn,
                        off,
                        residual,
                        b"",
                        mv[off:end],
                    )
                else:
                    pdu = DataIn(
                        last or end % burst == 0,
                        False,
                        False,
                        False,
                        False,
                        0,
                        lun,
                        itt,
                        RESERVED_TAG,
                        0,
                        self.exp_cmd_sn,
                        self._window(),
                        data_sn,
                        off,
                        0,
                        b"",
                        mv[off:end],
                    )
                out.append(encode_pdu(pdu, hd, dd))
                data_sn += 1
                off = end
            if collapse:
                return
        seg = len(sense).to_bytes(2, "big") + sense if sense else b""
        out.append(
            encode_pdu(
                ScsiResponsePdu(
                    False,
                    False,
                    overflow,
                    underflow,
                    0,
                    status,
                    task.itt,
                    0,
                    self._next_stat_sn(),
                    self.exp_cmd_sn,
                    self._window(),
                    data_sn + task.r2t_sn,
                    0,
                    residual,
                    b"",
                    seg,
                ),
                hd,
                dd,
            )
        )

    # ------------------------------------------------------------------ NOP

    def _on_nop_out(self, pdu: NopOut) -> None:
        if pdu.initiator_task_tag == RESERVED_TAG:
            # A reply to a target NOP-In (or a bare CmdSN carrier): no answer (11.18).
            if not pdu.immediate:
                self._ordered(pdu, lambda: None)
            return
        if pdu.target_transfer_tag != RESERVED_TAG:
            self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)
            return

        def answer() -> None:
            self._send(
                NopIn(
                    lun=pdu.lun,
                    initiator_task_tag=pdu.initiator_task_tag,
                    target_transfer_tag=RESERVED_TAG,
                    stat_sn=self._next_stat_sn(),
                    exp_cmd_sn=self.exp_cmd_sn,
                    max_cmd_sn=self._window(),
                    data=pdu.data[: self._mrdsl],
                )
            )

        self._ordered(pdu, answer)

    # ------------------------------------------------------------------ Text

    def _on_text(self, pdu: TextRequest) -> None:
        self._ordered(pdu, lambda: self._text(pdu))

    def _text_response(self, pdu: TextRequest, body: bytes) -> None:
        mrdsl = self._mrdsl
        ttt = RESERVED_TAG
        cont = len(body) > mrdsl
        if cont:
            # RFC 7143 11.11.2: a long response goes out in pieces, each fetched with an
            # empty Text Request carrying our Target Transfer Tag.
            ttt = self._next_ttt
            self._next_ttt = ttt + 1 if ttt < 0xFFFFFFFE else 1
            self._text_pending = {ttt: body[mrdsl:]}
            body = body[:mrdsl]
        self._send(
            TextResponse(
                final=not cont,
                cont=cont,
                lun=pdu.lun,
                initiator_task_tag=pdu.initiator_task_tag,
                target_transfer_tag=ttt,
                stat_sn=self._next_stat_sn(),
                exp_cmd_sn=self.exp_cmd_sn,
                max_cmd_sn=self._window(),
                data=body,
            )
        )

    def _text(self, pdu: TextRequest) -> None:
        ttt = pdu.target_transfer_tag
        if ttt != RESERVED_TAG:
            rest = self._text_pending.pop(ttt, None)
            if rest is None:
                self._reject(encode_bhs(pdu), RejectReason.INVALID_PDU_FIELD)
                return
            self._text_response(pdu, rest)
            return
        self._text_pending.clear()
        if pdu.cont:
            self._text_request += pdu.data
            if len(self._text_request) > 65536:
                self._text_request = b""
                self._reject(encode_bhs(pdu), RejectReason.LONG_OP_REJECT)
                return
            self._send(
                TextResponse(
                    final=False,
                    cont=False,
                    lun=pdu.lun,
                    initiator_task_tag=pdu.initiator_task_tag,
                    target_transfer_tag=RESERVED_TAG,
                    stat_sn=self._next_stat_sn(),
                    exp_cmd_sn=self.exp_cmd_sn,
                    max_cmd_sn=self._window(),
                )
            )
            return
        raw = self._text_request + pdu.data
        self._text_request = b""
        try:
            pairs = parse_text(raw)
        except TextFormatError:
            self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)
            return
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "SendTargets":
                answers.extend(self._send_targets(value))
            else:
                # Operational keys cannot be renegotiated in FFP here: NotUnderstood.
                answers.append((key, "NotUnderstood"))
        self._text_response(pdu, encode_text(answers))

    def _send_targets(self, value: str) -> list[tuple[str, str]]:
        """RFC 7143 Appendix C: TargetName + TargetAddress (host:port,tpgt of the portal
        this connection came in on)."""
        if value == "All":
            names = sorted(self.targets)
        elif value == "":
            names = [self.target_name] if self.target_name in self.targets else []
        else:
            names = [value] if value in self.targets else []
        host, port = self.portal[0], self.portal[1]
        if ":" in host:
            host = f"[{host}]"
        addr = f"{host}:{port},{self.portal_group_tag}"
        out = []
        for name in names:
            out.append(("TargetName", name))
            out.append(("TargetAddress", addr))
        return out

    # ------------------------------------------------------------------ TMF

    def _on_tmf(self, pdu: TaskManagementRequest) -> None:
        # Non-immediate TMFs take their CmdSN turn like commands (RFC 7143 11.5).
        self._ordered(pdu, lambda: self._tmf(pdu))

    def _tmf(self, pdu: TaskManagementRequest) -> None:
        fn = pdu.function
        lun = field_to_lun(pdu.lun)

        def respond(code: int) -> None:
            self._send(
                TaskManagementResponse(
                    response=code,
                    initiator_task_tag=pdu.initiator_task_tag,
                    stat_sn=self._next_stat_sn(),
                    exp_cmd_sn=self.exp_cmd_sn,
                    max_cmd_sn=self._window(),
                )
            )
            if fn == TmfFunction.TARGET_COLD_RESET:
                self._close("target cold reset")  # RFC 7143 11.5.1: drop connections

        if fn == TmfFunction.ABORT_TASK:
            task = self.tasks.get(pdu.referenced_task_tag)
            if task is None or task.lun_field != pdu.lun:
                ref = pdu.ref_cmd_sn
                # RFC 7143 11.5.1: a task not yet received whose RefCmdSN is inside the
                # window and before this TMF counts as received (and aborted): function
                # complete. Otherwise the task does not exist (already answered).
                if (
                    serial_lt(ref, pdu.cmd_sn)
                    and not serial_lt(ref, self.exp_cmd_sn)
                    and ref not in self._held
                ):
                    self._consume_cmd_sn(ref)
                    respond(TmfResponse.FUNCTION_COMPLETE)
                else:
                    respond(TmfResponse.TASK_DOES_NOT_EXIST)
                return
            self._abort_and_wait([task], lambda: respond(TmfResponse.FUNCTION_COMPLETE))
            return
        if fn in (
            TmfFunction.ABORT_TASK_SET,
            TmfFunction.CLEAR_TASK_SET,
            TmfFunction.LOGICAL_UNIT_RESET,
            TmfFunction.CLEAR_ACA,
        ):
            if self.lun_exists is not None and not self.lun_exists(self.target_name, lun):
                respond(TmfResponse.LUN_DOES_NOT_EXIST)
                return
            if fn == TmfFunction.CLEAR_ACA:
                respond(TmfResponse.FUNCTION_NOT_SUPPORTED)  # NACA is not supported
                return
            victims = [t for t in self.tasks.values() if t.lun_field == pdu.lun]
            self._abort_and_wait(victims, lambda: respond(TmfResponse.FUNCTION_COMPLETE))
            return
        if fn in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            victims = list(self.tasks.values())
            self._abort_and_wait(victims, lambda: respond(TmfResponse.FUNCTION_COMPLETE))
            return
        if fn == TmfFunction.TASK_REASSIGN:
            # ErrorRecoveryLevel 0 (RFC 7143 11.5.1).
            respond(TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED)
            return
        respond(TmfResponse.FUNCTION_REJECTED)

    def _abort_and_wait(self, victims: list[_Task], done: Callable[[], None]) -> None:
        """Abort ``victims``: not-yet-delivered ones are dropped (their CmdSN still counts),
        delivered ones lose their write data and their response; ``done`` runs once
        every delivered one has finished in the SCSI layer."""
        waiter = _Waiter(done)
        for task in victims:
            if task.aborted and task.delivered:
                waiter.pending.add(task.itt)
                task.waiters.append(waiter)
                continue
            task.aborted = True
            if not task.delivered:
                self.tasks.pop(task.itt, None)
                self._tombstone(task.itt)
                self._drop_data_state(task)
                continue
            if not task.data_done:
                self._drop_data_state(task)
                self._events.append(DataOutAborted(task.itt))
            waiter.pending.add(task.itt)
            task.waiters.append(waiter)
        if not waiter.pending:
            done()

    def _release_waiters(self, task: _Task) -> None:
        for waiter in task.waiters:
            waiter.pending.discard(task.itt)
            if not waiter.pending:
                waiter.done()
        task.waiters = []

    # ------------------------------------------------------------------ Logout

    def _on_logout(self, pdu: LogoutRequest) -> None:
        self._ordered(pdu, lambda: self._logout_now(pdu))

    def _logout_now(self, pdu: LogoutRequest) -> None:
        def respond(code: int, close: bool) -> None:
            self._send(
                LogoutResponse(
                    response=code,
                    initiator_task_tag=pdu.initiator_task_tag,
                    stat_sn=self._next_stat_sn(),
                    exp_cmd_sn=self.exp_cmd_sn,
                    max_cmd_sn=self._window(),
                    time2wait=0,
                    time2retain=0,
                )
            )
            if close:
                self._close("logout")  # RFC 7143 11.15: response, then close

        reason = pdu.reason_code
        if reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            respond(LogoutResponseCode.RECOVERY_NOT_SUPPORTED, False)
            return
        if reason == LogoutReason.CLOSE_CONNECTION and pdu.cid != self.login.cid:
            respond(LogoutResponseCode.CID_NOT_FOUND, False)
            return
        if reason not in (LogoutReason.CLOSE_SESSION, LogoutReason.CLOSE_CONNECTION):
            self._reject(encode_bhs(pdu), RejectReason.INVALID_PDU_FIELD)
            return
        # Commands already running finish and are answered; those that never started or
        # still wait for write data are terminated (RFC 7143 6.? ERL 0 session close).
        waiter = _Waiter(lambda: respond(LogoutResponseCode.CLOSED_SUCCESSFULLY, True))
        for task in list(self.tasks.values()):
            if not task.delivered or not task.data_done:
                self._abort_and_wait([task], lambda: None)
            if task.delivered:
                waiter.pending.add(task.itt)
                task.waiters.append(waiter)
        self._held.clear()
        if not waiter.pending:
            waiter.done()

    # ------------------------------------------------------------------ SNACK & co

    def _on_snack(self, pdu: Snack) -> None:
        # ErrorRecoveryLevel 0: SNACK support is not negotiated (RFC 7143 11.16).
        self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)

    def _on_login_in_ffp(self, pdu: LoginRequest) -> None:
        self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)


@dataclass(slots=True)
class _Placeholder:
    cmd_sn: int
    immediate: bool = False


def _extended_cdb(cdb: bytes, ahs: bytes) -> bytes | None:
    """Append an Extended CDB AHS (type 1, RFC 7143 11.3.1.3) to the 16-byte CDB."""
    pos = 0
    while pos + 3 <= len(ahs):
        length = int.from_bytes(ahs[pos : pos + 2], "big")
        ahs_type = ahs[pos + 2]
        body = ahs[pos + 4 : pos + 3 + length]
        if ahs_type == 1:
            return cdb + body
        pos += (3 + length + 3) & ~3
    return None if ahs else cdb


_HANDLERS: dict[type, Callable[[Connection, object], None]] = {
    ScsiCommand: Connection._on_command,
    DataOut: Connection._on_data_out,
    NopOut: Connection._on_nop_out,
    TextRequest: Connection._on_text,
    TaskManagementRequest: Connection._on_tmf,
    LogoutRequest: Connection._on_logout,
    Snack: Connection._on_snack,
    LoginRequest: Connection._on_login_in_ffp,
}
