"""The tasks of a session: one SCSI command each, from its arrival to its answer.

Owns what a SCSI Command PDU must be to become a task (:func:`refusal`: RFC 7143 4.3,
4.2.5.2, 13.13, 13.14), what a connection remembers of a command (:class:`Task`: its
tag, LUN, CDB with an Extended CDB AHS appended (:func:`extended_cdb`, 11.3.1.3),
Expected Data Transfer Length, whether it was delivered, aborted, has all its write
data), and the waits of task management and Logout for tasks in flight
(:class:`Waiter`: a TMF or Logout is answered only once the tasks it ended have
finished in the SCSI layer, 11.5.1, 11.14).
"""

from __future__ import annotations

from collections.abc import Callable, Container

from targetcli_preserve.iscsi.codes import RESERVED_TAG, RejectReason
from targetcli_preserve.iscsi.login import SessionParams, SessionType
from targetcli_preserve.iscsi.pdus import ScsiCommand
from targetcli_preserve.iscsi.transfer import WriteTransfer


class Waiter:
    """A TMF or Logout waiting for in-flight tasks to finish before it is answered."""

    __slots__ = ("done", "pending")

    def __init__(self, done: Callable[[], None]) -> None:
        self.pending: set[int] = set()
        self.done = done

    def wait_for(self, task: Task) -> None:
        self.pending.add(task.itt)
        task.waiters.append(self)


class Task:
    """One SCSI command. ``xfer`` is the Data-Out of a write (None otherwise);
    ``data_done`` means no more Data-Out is expected (all arrived, or dropped)."""

    __slots__ = (
        "aborted",
        "cdb",
        "data_done",
        "delivered",
        "edtl",
        "itt",
        "lun",
        "lun_field",
        "read",
        "waiters",
        "write",
        "xfer",
    )

    def __init__(self, pdu: ScsiCommand, lun: int, cdb: bytes, xfer: WriteTransfer | None) -> None:
        self.itt = pdu.initiator_task_tag
        self.lun_field = pdu.lun
        self.lun = lun
        self.cdb = cdb
        self.edtl = pdu.expected_data_transfer_length
        self.read = pdu.read
        self.write = pdu.write
        self.xfer = xfer
        self.delivered = False
        self.aborted = False
        self.data_done = xfer is None or xfer.complete
        self.waiters: list[Waiter] = []

    def release_waiters(self) -> None:
        """The task finished: answer each TMF or Logout that waited only for it."""
        if not self.waiters:
            return
        for waiter in self.waiters:
            waiter.pending.discard(self.itt)
            if not waiter.pending:
                waiter.done()
        self.waiters = []


def refusal(
    pdu: ScsiCommand, *, params: SessionParams, in_flight: Container[int]
) -> RejectReason | None:
    """Why a SCSI Command PDU the CmdSN window took is rejected, or None when it becomes
    a task. ``in_flight`` holds the ITTs of the session's tasks."""
    itt = pdu.initiator_task_tag
    imm = pdu.data
    if params.session_type is SessionType.DISCOVERY:
        return RejectReason.COMMAND_NOT_SUPPORTED  # RFC 7143 4.3: no SCSI in discovery
    if pdu.read and pdu.write:
        return RejectReason.COMMAND_NOT_SUPPORTED  # bidirectional commands: not offered
    if itt == RESERVED_TAG:
        return RejectReason.INVALID_PDU_FIELD
    if itt in in_flight:
        return RejectReason.TASK_IN_PROGRESS
    if imm and (
        not pdu.write
        or not params.immediate_data
        or len(imm) > params.first_burst_length
        or len(imm) > pdu.expected_data_transfer_length
    ):
        return RejectReason.PROTOCOL_ERROR  # RFC 7143 4.2.5.2, 13.13, 13.14
    if pdu.write and not pdu.final and params.initial_r2t:
        return RejectReason.PROTOCOL_ERROR  # unsolicited Data-Out not allowed
    return None


def extended_cdb(cdb: bytes, ahs: bytes) -> bytes | None:
    """The CDB with an Extended CDB AHS (type 1, RFC 7143 11.3.1.3) appended to the 16
    bytes of the BHS; None when there are AHSs but no Extended CDB."""
    pos = 0
    while pos + 3 <= len(ahs):
        length = int.from_bytes(ahs[pos : pos + 2], "big")
        ahs_type = ahs[pos + 2]
        body = ahs[pos + 4 : pos + 3 + length]
        if ahs_type == 1:
            return cdb + body
        pos += (3 + length + 3) & ~3
    return None if ahs else cdb
