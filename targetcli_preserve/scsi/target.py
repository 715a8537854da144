"""ScsiTarget: the entry point transports use to run a CDB against a LUN.

INTERFACE CONTRACT (fixed; the iSCSI layer is written against it):

    target = ScsiTarget({0: LogicalUnit(store, LuIdentity(...)), 1: ...})
    awaitable = target.execute(lun, cdb, data_out, data_out_length)
    response = await awaitable          # -> ScsiResponse

``execute`` is a plain method: its synchronous part decodes the CDB and issues the
command to the BlockStore (fixing its sequence number), so a transport calling it in
CmdSN order issues commands in CmdSN order. ``data_out`` is None for commands without
Data-Out, else bytes or an awaitable of bytes (all Data-Out, ``data_out_length`` long).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ScsiStatus(enum.IntEnum):
    """SAM-5 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


@dataclass(frozen=True, slots=True)
class ScsiResponse:
    status: ScsiStatus
    data: bytes = b""  # Data-In payload, already limited by the CDB's allocation length
    sense: bytes = b""  # fixed-format sense data (SPC-4 4.5.3) when CHECK CONDITION
