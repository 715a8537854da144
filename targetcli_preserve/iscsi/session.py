"""One iSCSI connection as a sans-I/O state machine: login, then full feature phase.

:class:`Connection` takes received bytes (``receive_data``) and SCSI completions
(``command_completed``) and returns the events of ``events.py`` for the I/O edge; the
PDUs to send are collected and taken with ``data_to_send``. No sockets, no asyncio.

It orchestrates the pieces that do the work, in the manner of h11's connection: the
login (``login.py``), the CmdSN window (``cmdsn.py``), write data and R2Ts
(``transfer.py``), the Data-In and SCSI Response builders (``responses.py``) and the
Text exchange (``text.py``). What it owns itself (RFC 7143): the phases, dispatch by
PDU, StatSN and the StatSN/ExpCmdSN/MaxCmdSN every target PDU carries (4.2.2.2,
``_stamp``), command intake and checks (11.3), NOP (11.18/11.19), task management
(11.5/11.6), Logout (11.14/11.15), Reject (11.17) and the close of the connection.
Session-level features of ErrorRecoveryLevel > 0 and multiple connections are not
offered.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection

from targetcli_preserve.iscsi.cmdsn import SN_MASK, CmdSnWindow
from targetcli_preserve.iscsi.codes import (
    RESERVED_TAG,
    LogoutResponseCode,
    RejectReason,
    TmfFunction,
    field_to_lun,
)
from targetcli_preserve.iscsi.events import (
    CloseConnection,
    DataOutAborted,
    DataOutReady,
    Event,
    ExecuteCommand,
    LoginComplete,
)
from targetcli_preserve.iscsi.framing import BadPdu, PduDecoder, encode_bhs, encode_pdu
from targetcli_preserve.iscsi.login import (
    LoginNegotiator,
    LoginOutcome,
    SessionParams,
    TargetLimits,
)
from targetcli_preserve.iscsi.pdus import (
    DataOut,
    LoginRequest,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    ScsiCommand,
    TargetPdu,
    TaskManagementRequest,
    TaskManagementResponse,
    TextRequest,
    TextResponse,
)
from targetcli_preserve.iscsi.responses import answer_pdus
from targetcli_preserve.iscsi.taskmgmt import plan_logout, plan_tmf
from targetcli_preserve.iscsi.tasks import Task, Waiter, extended_cdb, refusal
from targetcli_preserve.iscsi.text import TextExchange
from targetcli_preserve.iscsi.transfer import DataOutStep, Transfers, WriteTransfer

_log = logging.getLogger(__name__)
_DEFAULT_LIMITS = TargetLimits()
_MAX_TOMBSTONES = 4096


class Phase(enum.Enum):
    LOGIN = enum.auto()
    FULL_FEATURE = enum.auto()
    CLOSED = enum.auto()


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
        self.window = CmdSnWindow(limits.queue_depth)
        self.tasks: dict[int, Task] = {}
        self.transfers = Transfers()
        self.text = TextExchange()
        self._tombstones: set[int] = set()  # ITTs of tasks that ended without an answer
        self._hd = False
        self._dd = False
        self._mrdsl = 8192

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
        """Feed bytes from the socket; returns events in the order they must be acted on.
        A closed connection takes nothing (no PDU is dispatched; no event comes)."""
        for pdu in self.decoder.feed(data):
            if self.phase is Phase.CLOSED:  # closed before, or by a PDU before this one
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
            self._drop_data(task)
            self._events.append(DataOutAborted(itt))
            self._tombstone(itt)
        if task.aborted:
            self._tombstone(itt)
        else:
            # Data-In and/or SCSI Response (RFC 7143 11.4, 11.7). Only the last PDU has
            # the status and takes a StatSN; a Data-In before it has StatSN 0.
            xfer = task.xfer
            pdus = answer_pdus(
                lun_field=task.lun_field,
                itt=itt,
                read=task.read,
                write=task.write,
                edtl=task.edtl,
                r2t_count=0 if xfer is None else xfer.r2t_sn,
                status=status,
                data=data,
                sense=sense,
                data_out_expected=data_out_expected,
                max_segment=self._mrdsl,
                max_burst=self.params.max_burst_length,
            )
            out = self._out
            last = pdus[-1]
            for pdu in pdus:
                out.append(self._stamp(pdu, self._next_stat_sn() if pdu is last else 0))
        task.release_waiters()
        return self._take_events()

    def connection_lost(self) -> list[Event]:
        """The transport is gone: every write still waiting for data gets none."""
        self._close(None)
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

    def _next_stat_sn(self) -> int:
        sn = self.stat_sn
        self.stat_sn = (sn + 1) & SN_MASK
        return sn

    def _stamp(self, pdu: TargetPdu, stat_sn: int) -> bytes:
        """``pdu`` on the wire with the StatSN, ExpCmdSN and MaxCmdSN every target PDU
        carries: the one place they are filled in. ``stat_sn`` is ``_next_stat_sn()``
        for a PDU with status (RFC 7143 4.2.2.2), ``self.stat_sn`` (not advanced) for an
        R2T (11.8.3), 0 for a Data-In without status."""
        pdu.stat_sn = stat_sn
        window = self.window
        pdu.exp_cmd_sn = window.exp_cmd_sn
        pdu.max_cmd_sn = window.update_max(len(self.tasks))
        return encode_pdu(pdu, self._hd, self._dd)

    def _send(self, pdu: TargetPdu) -> None:
        """Queue a PDU with status (StatSN advances)."""
        self._out.append(self._stamp(pdu, self._next_stat_sn()))

    def _close(self, reason: str | None) -> None:
        """The one way a connection ends: every delivered write still waiting for data
        gets a DataOutAborted, everything in flight is forgotten, and with a ``reason``
        (we close, not the transport) the edge gets a CloseConnection."""
        if self.phase is Phase.CLOSED:
            return
        for task in self.tasks.values():
            if task.delivered and not task.data_done:
                self._events.append(DataOutAborted(task.itt))
        self.tasks.clear()
        self.window.drop_held()
        self.transfers.clear()
        self.phase = Phase.CLOSED
        if reason is not None:
            self._events.append(CloseConnection(reason))

    def _reject(self, header: bytes, reason: int) -> None:
        # RFC 7143 11.17: the data segment carries the complete header of the bad PDU.
        self._send(Reject(reason=reason, data=bytes(header[:48])))

    def _enter_ffp(self, cmd_sn: int, stat_sn: int) -> None:
        p = self.params
        self.phase = Phase.FULL_FEATURE
        self.window.open(cmd_sn)
        self.stat_sn = stat_sn & SN_MASK
        # Digests and MaxRecvDataSegmentLength apply from the first PDU after the final
        # Login Response (RFC 7143 13.1, 13.12).
        self._hd = p.header_digest
        self._dd = p.data_digest
        self._mrdsl = p.initiator_max_recv_data_segment_length
        self.decoder.header_digest = p.header_digest
        self.decoder.data_digest = p.data_digest
        self.decoder.max_data_segment_length = p.target_max_recv_data_segment_length

    def _tombstone(self, itt: int) -> None:
        if len(self._tombstones) > _MAX_TOMBSTONES:
            self._tombstones.clear()
        self._tombstones.add(itt)

    def _drop_data(self, task: Task) -> None:
        if task.xfer is not None:
            self.transfers.drop(task.xfer)
        task.data_done = True

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, pdu: Pdu | BadPdu) -> None:
        if isinstance(pdu, BadPdu):
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
            if not isinstance(pdu, LoginRequest):
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
        if isinstance(pdu, ScsiCommand):
            self._on_command(pdu)
        elif isinstance(pdu, DataOut):
            self._on_data_out(pdu)
        elif isinstance(pdu, NopOut):
            self._on_nop_out(pdu)
        elif isinstance(pdu, TextRequest):
            self.window.order(pdu.immediate, pdu.cmd_sn, lambda: self._text(pdu))
        elif isinstance(pdu, TaskManagementRequest):
            # Non-immediate TMFs take their CmdSN turn like commands (RFC 7143 11.5).
            self.window.order(pdu.immediate, pdu.cmd_sn, lambda: self._tmf(pdu))
        elif isinstance(pdu, LogoutRequest):
            self.window.order(pdu.immediate, pdu.cmd_sn, lambda: self._logout(pdu))
        else:
            # SNACK (ErrorRecoveryLevel 0: not negotiated, RFC 7143 11.16), Login in
            # full feature phase, target-only opcodes: protocol errors (11.17.1).
            self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)

    # ------------------------------------------------------------------ SCSI Command

    def _on_command(self, pdu: ScsiCommand) -> None:
        window = self.window
        if not pdu.immediate and not window.admits(pdu.cmd_sn):
            return  # outside the window or a duplicate: ignore (RFC 7143 3.2.2.1)
        p = self.params
        itt = pdu.initiator_task_tag
        reason = refusal(pdu, params=p, in_flight=self.tasks)
        cdb: bytes | None = pdu.cdb
        if reason is None and pdu.ahs:
            cdb = extended_cdb(pdu.cdb, pdu.ahs)
            if cdb is None:
                reason = RejectReason.INVALID_PDU_FIELD
        if reason is not None or cdb is None:
            header = encode_bhs(pdu)
            why = reason or RejectReason.INVALID_PDU_FIELD
            window.order(pdu.immediate, pdu.cmd_sn, lambda: self._reject(header, why))
            return
        xfer = None
        if pdu.write:
            xfer = WriteTransfer(
                pdu.expected_data_transfer_length, pdu.data, pdu.final, p.first_burst_length
            )
        task = Task(pdu, field_to_lun(pdu.lun), cdb, xfer)
        self._tombstones.discard(itt)
        self.tasks[itt] = task
        window.order(pdu.immediate, pdu.cmd_sn, lambda: self._deliver(task))

    def _deliver(self, task: Task) -> None:
        if task.aborted:
            self.tasks.pop(task.itt, None)
            return
        task.delivered = True
        xfer = task.xfer
        if xfer is None:
            self._events.append(ExecuteCommand(task.itt, task.lun, task.cdb, 0, None, False))
        elif task.data_done:
            self._events.append(
                ExecuteCommand(task.itt, task.lun, task.cdb, task.edtl, xfer.take(), False)
            )
        else:
            self._events.append(ExecuteCommand(task.itt, task.lun, task.cdb, task.edtl, None, True))
            self._solicit(task, xfer)

    def _solicit(self, task: Task, xfer: WriteTransfer) -> None:
        p = self.params
        for r2t in self.transfers.solicit(
            xfer,
            itt=task.itt,
            lun_field=task.lun_field,
            max_outstanding=p.max_outstanding_r2t,
            max_burst=p.max_burst_length,
        ):
            self._out.append(self._stamp(r2t, self.stat_sn))

    # ------------------------------------------------------------------ Data-Out

    def _on_data_out(self, pdu: DataOut) -> None:
        itt = pdu.initiator_task_tag
        task = self.tasks.get(itt)
        xfer = None if task is None or task.data_done else task.xfer
        if task is None or xfer is None:
            if itt in self._tombstones or task is not None:
                return  # data of an aborted or already answered task: drop quietly
            self._reject(encode_bhs(pdu), RejectReason.INVALID_PDU_FIELD)
            return
        step = self.transfers.receive(xfer, pdu)
        if step is DataOutStep.REJECT:
            self._reject(encode_bhs(pdu), RejectReason.PROTOCOL_ERROR)
            return
        if step is DataOutStep.R2T_DONE and task.delivered:
            self._solicit(task, xfer)
        if xfer.complete:
            task.data_done = True
            if task.delivered:
                self._events.append(DataOutReady(itt, xfer.take()))

    # ------------------------------------------------------------------ NOP, Text

    def _on_nop_out(self, pdu: NopOut) -> None:
        if pdu.initiator_task_tag == RESERVED_TAG:
            # A reply to a target NOP-In (or a bare CmdSN carrier): no answer (11.18).
            if not pdu.immediate:
                self.window.order(False, pdu.cmd_sn, _nothing)
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
                    data=pdu.data[: self._mrdsl],
                )
            )

        self.window.order(pdu.immediate, pdu.cmd_sn, answer)

    def _text(self, pdu: TextRequest) -> None:
        answer = self.text.receive(
            pdu,
            max_segment=self._mrdsl,
            new_ttt=self.transfers.new_ttt,
            targets=self.targets,
            session_target=self.target_name,
            portal=self.portal,
            portal_group_tag=self.portal_group_tag,
        )
        if isinstance(answer, TextResponse):
            self._send(answer)
        else:
            self._reject(encode_bhs(pdu), answer)

    # ------------------------------------------------------------------ TMF

    def _tmf(self, pdu: TaskManagementRequest) -> None:
        code, victims = plan_tmf(
            pdu,
            tasks=self.tasks,
            window=self.window,
            lun_exists=self.lun_exists,
            target_name=self.target_name,
        )

        def respond() -> None:
            self._send(
                TaskManagementResponse(response=code, initiator_task_tag=pdu.initiator_task_tag)
            )
            if pdu.function == TmfFunction.TARGET_COLD_RESET:
                self._close("target cold reset")  # RFC 7143 11.5.1: drop connections

        if victims is None:
            respond()
        else:
            self._abort_and_wait(victims, respond)

    def _abort_and_wait(self, victims: list[Task], done: Callable[[], None]) -> None:
        """Abort ``victims``: not-yet-delivered ones are dropped (their CmdSN still counts),
        delivered ones lose their write data and their response; ``done`` runs once
        every delivered one has finished in the SCSI layer."""
        waiter = Waiter(done)
        for task in victims:
            if task.aborted and task.delivered:
                waiter.wait_for(task)
                continue
            task.aborted = True
            if not task.delivered:
                self.tasks.pop(task.itt, None)
                self._tombstone(task.itt)
                self._drop_data(task)
                continue
            if not task.data_done:
                self._drop_data(task)
                self._events.append(DataOutAborted(task.itt))
            waiter.wait_for(task)
        if not waiter.pending:
            done()

    # ------------------------------------------------------------------ Logout

    def _logout(self, pdu: LogoutRequest) -> None:
        outcome = plan_logout(pdu, cid=self.login.cid)
        if isinstance(outcome, RejectReason):
            self._reject(encode_bhs(pdu), outcome)
            return

        def respond() -> None:
            self._send(
                LogoutResponse(
                    response=outcome,
                    initiator_task_tag=pdu.initiator_task_tag,
                    time2wait=0,
                    time2retain=0,
                )
            )
            if outcome is LogoutResponseCode.CLOSED_SUCCESSFULLY:
                self._close("logout")  # RFC 7143 11.15: response, then close

        if outcome is not LogoutResponseCode.CLOSED_SUCCESSFULLY:
            respond()
            return
        # Commands already running finish and are answered; the others are ended.
        waiter = Waiter(respond)
        for task in list(self.tasks.values()):
            if not task.delivered or not task.data_done:
                self._abort_and_wait([task], _nothing)
            if task.delivered:
                waiter.wait_for(task)
        self.window.drop_held()
        if not waiter.pending:
            waiter.done()


def _nothing() -> None:
    pass
