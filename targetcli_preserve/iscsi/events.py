"""The events between a :class:`~targetcli_preserve.iscsi.session.Connection` and its I/O
edge (``server.py``), in the manner of h11's events.

The connection hands the edge, from ``receive_data``, ``command_completed`` and
``connection_lost``, a list of the events below, in the order they must be acted on:
commands to execute come in CmdSN order (RFC 7143 3.2.2.1). The edge hands the
connection back received bytes and, for each :class:`ExecuteCommand`, one
``command_completed(itt, status, data, sense, data_out_expected)``. Plain slotted
dataclasses, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from targetcli_preserve.iscsi.login import SessionParams


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
    """All the write data of a delivered command arrived."""

    initiator_task_tag: int
    data: bytes


@dataclass(slots=True)
class DataOutAborted:
    """The write data of a delivered command will never arrive (task aborted)."""

    initiator_task_tag: int


@dataclass(slots=True)
class LoginComplete:
    """The login succeeded; full feature phase starts with ``params``."""

    params: SessionParams


@dataclass(slots=True)
class CloseConnection:
    """Close the connection once what was queued to send is sent."""

    reason: str


Event = ExecuteCommand | DataOutReady | DataOutAborted | LoginComplete | CloseConnection
