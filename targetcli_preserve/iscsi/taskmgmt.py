"""Task management functions and Logout requests: what each asks for, and its answer.

Owns the decisions of RFC 7143 11.5.1 (which tasks ABORT TASK, ABORT TASK SET, CLEAR
TASK SET, LOGICAL UNIT RESET and TARGET WARM/COLD RESET end, the response code, a task
not yet received whose RefCmdSN is in the window) and of 11.14.1 (which Logout reasons
are served at ErrorRecoveryLevel 0). The connection carries them out: it aborts the
tasks, waits for those already in the SCSI layer (``tasks.Waiter``) and answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from targetcli_preserve.iscsi.cmdsn import CmdSnWindow, serial_lt
from targetcli_preserve.iscsi.codes import (
    LogoutReason,
    LogoutResponseCode,
    RejectReason,
    TmfFunction,
    TmfResponse,
    field_to_lun,
)
from targetcli_preserve.iscsi.pdus import LogoutRequest, TaskManagementRequest
from targetcli_preserve.iscsi.tasks import Task

_TASK_SET = (
    TmfFunction.ABORT_TASK_SET,
    TmfFunction.CLEAR_TASK_SET,
    TmfFunction.LOGICAL_UNIT_RESET,
    TmfFunction.CLEAR_ACA,
)
_TARGET_RESET = (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET)


def plan_tmf(
    pdu: TaskManagementRequest,
    *,
    tasks: Mapping[int, Task],
    window: CmdSnWindow,
    lun_exists: Callable[[str, int], bool] | None,
    target_name: str,
) -> tuple[TmfResponse, list[Task] | None]:
    """The response to ``pdu``, and the tasks to abort before it is sent (None: send it
    at once). ``lun_exists(target_name, lun)`` answers "LUN does not exist" (None: every
    LUN exists). An ABORT TASK for a task not yet received counts its CmdSN as received
    in ``window``."""
    fn = pdu.function
    if fn == TmfFunction.ABORT_TASK:
        task = tasks.get(pdu.referenced_task_tag)
        if task is not None and task.lun_field == pdu.lun:
            return TmfResponse.FUNCTION_COMPLETE, [task]
        ref = pdu.ref_cmd_sn
        # RFC 7143 11.5.1: a task not yet received whose RefCmdSN is inside the window
        # and before this TMF counts as received (and aborted): function complete.
        # Otherwise the task does not exist (already answered).
        if (
            serial_lt(ref, pdu.cmd_sn)
            and not serial_lt(ref, window.exp_cmd_sn)
            and not window.holds(ref)
        ):
            window.consume(ref)
            return TmfResponse.FUNCTION_COMPLETE, None
        return TmfResponse.TASK_DOES_NOT_EXIST, None
    if fn in _TASK_SET:
        if lun_exists is not None and not lun_exists(target_name, field_to_lun(pdu.lun)):
            return TmfResponse.LUN_DOES_NOT_EXIST, None
        if fn == TmfFunction.CLEAR_ACA:
            return TmfResponse.FUNCTION_NOT_SUPPORTED, None  # NACA is not supported
        return TmfResponse.FUNCTION_COMPLETE, [t for t in tasks.values() if t.lun_field == pdu.lun]
    if fn in _TARGET_RESET:
        # TARGET COLD RESET also drops the connection once answered (RFC 7143 11.5.1).
        return TmfResponse.FUNCTION_COMPLETE, list(tasks.values())
    if fn == TmfFunction.TASK_REASSIGN:
        # ErrorRecoveryLevel 0 (RFC 7143 11.5.1).
        return TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED, None
    return TmfResponse.FUNCTION_REJECTED, None


def plan_logout(pdu: LogoutRequest, *, cid: int) -> LogoutResponseCode | RejectReason:
    """How to answer a Logout Request on the connection ``cid``: CLOSED_SUCCESSFULLY
    means close the session once the commands already running were answered (those
    that never started or still wait for write data are ended: ErrorRecoveryLevel 0
    session close, RFC 7143 6.3.6); another response code is sent at once and the
    connection stays; a RejectReason rejects the request (11.14.1)."""
    reason = pdu.reason_code
    if reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
        return LogoutResponseCode.RECOVERY_NOT_SUPPORTED
    if reason == LogoutReason.CLOSE_CONNECTION and pdu.cid != cid:
        return LogoutResponseCode.CID_NOT_FOUND
    if reason not in (LogoutReason.CLOSE_SESSION, LogoutReason.CLOSE_CONNECTION):
        return RejectReason.INVALID_PDU_FIELD
    return LogoutResponseCode.CLOSED_SUCCESSFULLY
