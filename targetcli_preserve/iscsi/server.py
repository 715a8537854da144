"""The asyncio edge of the built-in iSCSI target: sockets in, sockets out.

Owns listening, one :class:`asyncio.Protocol` per TCP connection, and the hand-off to
the SCSI layer. All protocol logic lives in the sans-I/O :class:`Connection`; this
module only turns its events into ``execute`` calls on the SCSI target (the
:class:`~targetcli_preserve.iscsi.scsi_api.CommandTarget` protocol; in the order the
events come, which is CmdSN order) and Futures for write data, and writes what the
connection queued. Writes are coalesced: at most one transport write per loop
iteration per connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import MutableMapping
from functools import partial
from typing import Self

from targetcli_preserve._errors import PreserveError, ProtocolError
from targetcli_preserve.driving import Driver, drive
from targetcli_preserve.iscsi.events import (
    CloseConnection,
    DataOutAborted,
    DataOutReady,
    Event,
    ExecuteCommand,
    LoginComplete,
)
from targetcli_preserve.iscsi.login import SessionParams, SessionType, TargetLimits
from targetcli_preserve.iscsi.scsi_api import CommandResult, CommandTarget, HasLuns
from targetcli_preserve.iscsi.session import Connection

_log = logging.getLogger(__name__)

_CHECK_CONDITION = 0x02
# Fixed-format sense, HARDWARE ERROR / INTERNAL TARGET FAILURE (SPC-4 4.5.3): the last
# resort when the SCSI layer raised instead of answering.
_INTERNAL_FAILURE_SENSE = bytes([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0])

_SessionKey = tuple[str, int, str]  # InitiatorName, ISID, TargetName (RFC 7143 6.3.5)


class WriteDataAborted(ProtocolError):
    """The write data of a command will never arrive (task aborted or connection lost)."""


class _IscsiProtocol(asyncio.Protocol):
    __slots__ = (
        "_closing",
        "_flush_pending",
        "_futures",
        "_running",
        "conn",
        "loop",
        "server",
        "session_key",
        "transport",
    )

    def __init__(self, server: IscsiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        # The portal is filled in once the socket is known (connection_made).
        self.conn = Connection(
            server.targets,
            portal_group_tag=server.portal_group_tag,
            limits=server.limits,
            allocate_tsih=server._allocate_tsih,
            lun_exists=server._lun_exists,
        )
        self._futures: dict[int, asyncio.Future[bytes]] = {}
        self._running: set[Driver[CommandResult]] = set()  # suspended commands
        self._flush_pending = False
        self._closing = False
        self.session_key: _SessionKey | None = None

    # ------------------------------------------------------------------ transport side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError(f"an iSCSI connection needs a stream transport, not {transport!r}")
        self.transport = transport
        sock = transport.get_extra_info("sockname") or ("127.0.0.1", self.server.port)
        self.conn.portal = (sock[0], sock[1])
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._handle(self.conn.receive_data(data))
        self._schedule_flush()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.session_key is not None and self.server._sessions.get(self.session_key) is self:
            del self.server._sessions[self.session_key]
        self._closing = True
        self._handle(self.conn.connection_lost())
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(WriteDataAborted("connection lost"))
        self._futures.clear()

    def pause_writing(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()  # back-pressure: stop taking new commands

    def resume_writing(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ events

    def _handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, ExecuteCommand):
                self._execute(ev)
            elif isinstance(ev, DataOutReady):
                fut = self._futures.pop(ev.initiator_task_tag, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev.data)
            elif isinstance(ev, DataOutAborted):
                fut = self._futures.pop(ev.initiator_task_tag, None)
                if fut is not None and not fut.done():
                    fut.set_exception(WriteDataAborted("task aborted"))
                    fut.exception()  # mark retrieved: nobody may be awaiting it
            elif isinstance(ev, LoginComplete):
                self.server._session_started(self, ev.params)
            elif isinstance(ev, CloseConnection):
                _log.debug("closing iSCSI connection: %s", ev.reason)
                self._close_after_flush()

    def _execute(self, ev: ExecuteCommand) -> None:
        itt = ev.initiator_task_tag
        target = self.server.targets.get(self.conn.target_name)
        if target is None:
            # The target was removed under a live session: end the session.
            self._close_after_flush()
            return
        data_out: bytes | asyncio.Future[bytes] | None
        if ev.data_pending:
            data_out = self.loop.create_future()
            self._futures[itt] = data_out
        else:
            data_out = ev.data
        try:
            aw = target.execute(ev.lun, ev.cdb, data_out, ev.data_out_length)
        except Exception:  # noqa: BLE001 - the SCSI layer must not take the server down
            _log.exception("ScsiTarget.execute raised")
            self._complete_with(itt, _CHECK_CONDITION, b"", _INTERNAL_FAILURE_SENSE)
            return
        # Drive the awaitable one step here: most commands (anything served from memory,
        # every CDB error) finish without suspending. One that suspends is continued by
        # a Driver from where it stopped, without a Task (driving.py).
        drive(self.loop, aw, partial(self._finished, itt), self._running)

    def _finished(
        self, itt: int, response: CommandResult | None, exc: BaseException | None
    ) -> None:
        if exc is None and response is not None:
            self._complete_with(
                itt, response.status, response.data, response.sense, response.data_out_expected
            )
            return
        if exc is None:
            _log.error("SCSI command gave no result")
        elif not isinstance(exc, (WriteDataAborted, asyncio.CancelledError)):
            _log.error("SCSI command failed: %r", exc)
        self._complete_with(itt, _CHECK_CONDITION, b"", _INTERNAL_FAILURE_SENSE)

    def _complete_with(
        self, itt: int, status: int, data: bytes, sense: bytes, expected: int | None = None
    ) -> None:
        self._futures.pop(itt, None)
        if self.transport is None or self.transport.is_closing():
            return
        self._handle(self.conn.command_completed(itt, status, data, sense, expected))
        self._schedule_flush()

    # ------------------------------------------------------------------ output

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        bufs = self.conn.data_to_send()
        if bufs:
            tr.write(bufs[0] if len(bufs) == 1 else b"".join(bufs))
        if self._closing:
            tr.close()  # after the queued bytes (e.g. a Logout Response) are written

    def _close_after_flush(self) -> None:
        """Close once what the connection queued (a Reject, a Logout Response) is
        written: the one way this side ends a connection it still writes to."""
        self._closing = True
        self._schedule_flush()

    def abort(self) -> None:
        """Close now, dropping whatever is still queued (session reinstatement, server
        close)."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()


class IscsiServer:
    """The built-in iSCSI target: ``targets`` maps IQN -> SCSI target and may change while
    running (targets added or removed take effect for new logins; removing one ends
    its sessions at their next command)."""

    def __init__(
        self,
        host: str,
        port: int,
        targets: MutableMapping[str, CommandTarget],
        portal_group_tag: int = 1,
        limits: TargetLimits | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.targets = targets
        self.portal_group_tag = portal_group_tag
        self.limits = limits or TargetLimits()
        self._server: asyncio.Server | None = None
        self._connections: set[_IscsiProtocol] = set()
        self._sessions: dict[_SessionKey, _IscsiProtocol] = {}
        self._tsih = 0
        self.port = port

    async def listen(self) -> None:
        """Bind the portal without accepting connections yet, so that a caller learns
        early that the address is taken (PreserveError naming the portal)."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _IscsiProtocol(self, loop),
                self.host,
                self._requested_port,
                reuse_address=True,
                start_serving=False,
            )
        except OSError as err:
            raise PreserveError(
                f"cannot listen on {self.host}:{self._requested_port}: "
                f"{os.strerror(err.errno) if err.errno else err}"
            ) from err
        self.port = self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Listen (if :meth:`listen` was not called) and accept connections."""
        await self.listen()
        assert self._server is not None
        await self._server.start_serving()

    async def close(self) -> None:
        """Stop listening, close every connection, wait (bounded) for running commands."""
        if self._server is not None:
            self._server.close()
        running: set[asyncio.Future[None]] = set()
        for proto in list(self._connections):
            running |= {driver.done for driver in proto._running}
            proto.abort()
        if running:
            await asyncio.wait(running, timeout=10)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # ------------------------------------------------------------------ sessions

    def _allocate_tsih(self) -> int:
        self._tsih = self._tsih % 0xFFFF + 1  # TSIH 0 is reserved (RFC 7143 11.12.6)
        return self._tsih

    def _lun_exists(self, target_name: str, lun: int) -> bool:
        target = self.targets.get(target_name)
        if not isinstance(target, HasLuns):
            return True
        try:
            return lun in target.luns
        except TypeError:
            return True

    def _session_started(self, proto: _IscsiProtocol, params: SessionParams) -> None:
        _log.debug("login complete: %s", params)
        if params.session_type is not SessionType.NORMAL:
            return
        # Session reinstatement (RFC 7143 6.3.5): the same initiator port (InitiatorName
        # + ISID) logging in again to the same target replaces the old session.
        key = (params.initiator_name, params.isid, params.target_name)
        old = self._sessions.get(key)
        if old is not None and old is not proto:
            old.abort()
        self._sessions[key] = proto
        proto.session_key = key
