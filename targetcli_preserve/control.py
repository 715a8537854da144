"""The control socket: how every front end talks to the daemon.

A Unix stream socket ``STATE/control.sock``, mode 0600 (root only). One request per
connection, one JSON object per line each way::

    -> {"command": "preserve", "args": {"luns": ["lun0"]}}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "error": "no LUN named 'x'", "kind": "UserError"}

The server maps each command name to a coroutine of the daemon; a
:class:`~targetcli_preserve._errors.PreserveError` becomes ``ok: false`` with its class
name as ``kind``. A malformed request never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import BackendError, DaemonUnreachable, PreserveError, ProtocolError, UserError

__all__ = ["ControlServer", "DaemonUnreachable", "call"]

log = logging.getLogger(__name__)


Handler = Callable[..., Awaitable[Any]]
MAX_REQUEST = 1 << 16


class ControlServer:
    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()  # a stale socket of a dead daemon (the state lock is ours)
        old_umask = os.umask(0o177)  # created 0600: root only (docs/design.md section 3)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await reader.readline()
            except ValueError:  # longer than the reader's limit (MAX_REQUEST)
                reply = _error(ProtocolError("control request too long"))
            else:
                reply = await self._answer(line)
            try:
                encoded = json.dumps(reply).encode()
            except (TypeError, ValueError) as err:
                log.exception("control reply cannot be encoded")
                encoded = json.dumps(_internal(err)).encode()
            writer.write(encoded + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = _parse_request(line)
            handler = self._handlers.get(request["command"])
            if handler is None:
                raise UserError(f"unknown command {request['command']!r}")
            args = request.get("args", {})
            try:
                inspect.signature(handler).bind(**args)
            except TypeError as err:  # the caller's mistake, not the daemon's
                raise UserError(f"bad arguments for {request['command']!r}: {err}") from err
            result = await handler(**args)
        except PreserveError as err:
            return _error(err)
        except Exception as err:  # the boundary: report, keep serving
            log.exception("control request failed")
            return _internal(err)
        return {"ok": True, "result": result}


def _error(err: PreserveError) -> dict[str, Any]:
    return {"ok": False, "error": str(err), "kind": type(err).__name__}


def _internal(err: Exception) -> dict[str, Any]:
    return {"ok": False, "error": f"internal error: {err}", "kind": "InternalError"}


def _parse_request(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST:
        raise ProtocolError("control request too long")
    try:
        request = json.loads(line)
    except ValueError as err:
        raise ProtocolError(f"control request is not JSON: {err}") from err
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise ProtocolError("control request needs a string field 'command'")
    if not isinstance(request.get("args", {}), dict):
        raise ProtocolError("control request field 'args' must be an object")
    return request


def _permission_error(path: Path) -> UserError:
    """Say what a refused connect means: the directory cannot even be looked into
    (so whether a daemon runs is unknown), or a daemon's socket is root's."""
    if not os.access(path.parent, os.X_OK):
        return UserError(
            f"cannot look into state directory {path.parent} (permission denied): "
            "run as the user that owns it (root)"
        )
    return UserError(f"only the daemon's user (root) may use its control socket {path}")


def call(path: Path, command: str, timeout: float | None = 60.0, **args: Any) -> Any:
    """Send one request to the daemon at ``path`` and return its result (blocking).

    Raises the error the daemon reported (UserError, BackendError, ...), or UserError
    when no daemon listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise DaemonUnreachable(
                f"no daemon is running for {path.parent} ({err.strerror})"
            ) from err
        except NotADirectoryError as err:
            raise UserError(f"state directory {path.parent} is not a directory") from err
        except PermissionError as err:
            raise _permission_error(path) from err
        sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError as err:
        raise BackendError(f"the daemon did not answer {command!r} within {timeout} s") from err
    except OSError as err:  # it died or closed on us mid-request
        raise BackendError(f"lost the daemon during {command!r}: {err.strerror or err}") from err
    finally:
        sock.close()
    if not data:
        raise BackendError(f"the daemon closed the connection during {command!r}")
    try:
        reply = json.loads(data)
    except ValueError as err:
        raise ProtocolError("the daemon sent a malformed reply") from err
    if reply.get("ok"):
        return reply.get("result")
    kind = {"UserError": UserError, "BackendError": BackendError}.get(
        reply.get("kind"), PreserveError
    )
    raise kind(reply.get("error", "unknown error"))
