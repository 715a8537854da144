"""What the iSCSI target needs of the SCSI layer, as typing Protocols.

Owns the contract between ``server.py`` and whatever executes SCSI commands: a target
that runs a CDB against a LUN and gives back, later, a result with a status, Data-In,
sense data and the Data-Out length the CDB asked for. ``targetcli_preserve.scsi``'s
``ScsiTarget`` is one (its module states the same contract from its side); ``iscsi/``
never imports it, so the transport knows nothing of SCSI semantics beyond these names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Container
from typing import Protocol, runtime_checkable


class CommandResult(Protocol):
    """How a SCSI command ended (SAM-5 status; SPC-4 fixed-format sense data)."""

    @property
    def status(self) -> int: ...

    @property
    def data(self) -> bytes:
        """Data-In, already cut to the CDB's allocation length."""
        ...

    @property
    def sense(self) -> bytes: ...

    @property
    def data_out_expected(self) -> int | None:
        """Bytes of Data-Out the CDB asked for (None: not known); the transport reports
        the difference to the Expected Data Transfer Length as a residual."""
        ...


class CommandTarget(Protocol):
    """A SCSI target as the iSCSI server drives it."""

    def execute(
        self,
        lun: int,
        cdb: bytes,
        data_out: bytes | Awaitable[bytes] | None,
        data_out_length: int,
    ) -> Awaitable[CommandResult]:
        """Decode and issue ``cdb`` now (the server calls this in CmdSN order, so the
        order of the calls is the order of issue); the awaitable gives the result and
        raises nothing but cancellation. ``data_out`` is None for a command without
        Data-Out, else the bytes or an awaitable of them, ``data_out_length`` long."""
        ...


@runtime_checkable
class HasLuns(Protocol):
    """A target that can say which LUNs it has (for "LUN does not exist" answers to
    task management); one that cannot is taken to have every LUN."""

    @property
    def luns(self) -> Container[int]: ...
