"""The control socket (control.py): a real ControlServer in the test's event loop, the
blocking client in a thread, and malformed requests that must never stop the server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from targetcli_preserve import control
from targetcli_preserve._errors import BackendError, PreserveError, ProtocolError, UserError
from targetcli_preserve.control import ControlServer, DaemonUnreachable


@pytest.fixture
def sock_dir():
    # a short path: AF_UNIX addresses are limited to 107 bytes, pytest's tmp_path may not be
    path = Path(tempfile.mkdtemp(prefix="tcp-ctl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def echo(value, extra=None):
    return {"value": value, "extra": extra}


async def nothing():
    return None


async def user_error():
    raise UserError("no LUN named 'x' is served")


async def backend_error():
    raise BackendError("the disk is on fire")


async def protocol_error():
    raise ProtocolError("bad peer")


async def plain_error():
    raise RuntimeError("boom")


async def internal_type_error():
    return len(None)  # a bug inside the handler, called with the right arguments


HANDLERS = {
    "echo": echo,
    "nothing": nothing,
    "user": user_error,
    "backend": backend_error,
    "protocol": protocol_error,
    "crash": plain_error,
    "typeerror": internal_type_error,
}


@pytest.fixture
async def server(sock_dir: Path):
    srv = ControlServer(sock_dir / "control.sock", HANDLERS)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def _raw(path: Path, payload: bytes) -> bytes:
    """Send raw bytes, return everything the server sends before it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


async def raw_reply(path: Path, payload: bytes) -> dict:
    data = await asyncio.to_thread(_raw, path, payload)
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data  # exactly one line
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


async def call(path: Path, command: str, **args):
    return await asyncio.to_thread(control.call, path, command, **args)


async def assert_still_serving(path: Path) -> None:
    assert await call(path, "echo", value="still here") == {"value": "still here", "extra": None}


# ---- results and errors through the client ----------------------------------------------


async def test_call_returns_the_handler_result(server: ControlServer) -> None:
    assert await call(server.path, "echo", value=[1, "a", {"b": None}]) == {
        "value": [1, "a", {"b": None}],
        "extra": None,
    }
    assert await call(server.path, "echo", value=3, extra="x") == {"value": 3, "extra": "x"}
    assert await call(server.path, "nothing") is None


async def test_a_large_request_under_the_limit_is_served(server: ControlServer) -> None:
    big = "x" * 60000
    assert (await call(server.path, "echo", value=big))["value"] == big


async def test_user_error_comes_back_as_user_error(server: ControlServer) -> None:
    with pytest.raises(UserError, match="no LUN named 'x' is served") as info:
        await call(server.path, "user")
    assert not isinstance(info.value, DaemonUnreachable)


async def test_backend_error_comes_back_as_backend_error(server: ControlServer) -> None:
    with pytest.raises(BackendError, match="the disk is on fire"):
        await call(server.path, "backend")


async def test_plain_exception_is_an_internal_error(server: ControlServer) -> None:
    with pytest.raises(PreserveError, match="internal error: boom") as info:
        await call(server.path, "crash")
    assert not isinstance(info.value, (UserError, BackendError))
    await assert_still_serving(server.path)


async def test_error_kinds_on_the_wire(server: ControlServer) -> None:
    cases = {
        "user": "UserError",
        "backend": "BackendError",
        "protocol": "ProtocolError",
        "crash": "InternalError",
    }
    for command, kind in cases.items():
        reply = await raw_reply(server.path, json.dumps({"command": command}).encode() + b"\n")
        assert reply["ok"] is False and reply["kind"] == kind, reply
        assert reply["error"]
    ok = await raw_reply(server.path, b'{"command": "echo", "args": {"value": 1}}\n')
    assert ok == {"ok": True, "result": {"value": 1, "extra": None}}


async def test_other_kinds_become_a_generic_preserve_error(server: ControlServer) -> None:
    with pytest.raises(PreserveError, match="bad peer") as info:
        await call(server.path, "protocol")
    assert not isinstance(info.value, (UserError, BackendError))


async def test_a_type_error_inside_a_handler_is_not_blamed_on_the_caller(
    server: ControlServer,
) -> None:
    reply = await raw_reply(server.path, b'{"command": "typeerror"}\n')
    assert reply["ok"] is False
    assert reply["kind"] == "InternalError", reply


# ---- malformed requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload,kind,words",
    [
        (b"not json\n", "ProtocolError", "not JSON"),
        (b"\xff\xfe\x00\n", "ProtocolError", "not JSON"),
        (b"\n", "ProtocolError", "not JSON"),
        (b"[1, 2]\n", "ProtocolError", "'command'"),
        (b'"echo"\n', "ProtocolError", "'command'"),
        (b'{"args": {}}\n', "ProtocolError", "'command'"),
        (b'{"command": 5}\n', "ProtocolError", "'command'"),
        (b'{"command": "echo", "args": [1]}\n', "ProtocolError", "'args'"),
        (b'{"command": "echo", "args": null}\n', "ProtocolError", "'args'"),
        (b'{"command": "echo", "args": "value"}\n', "ProtocolError", "'args'"),
        (b'{"command": "nope"}\n', "UserError", "unknown command 'nope'"),
        (b'{"command": "echo"}\n', "UserError", "bad arguments"),
        (b'{"command": "echo", "args": {"value": 1, "bogus": 2}}\n', "UserError", "bad arguments"),
        (b'{"command": "nothing", "args": {"x": 1}}\n', "UserError", "bad arguments"),
        (b'{"command": "echo", "args": {"1": 2}}\n', "UserError", "bad arguments"),
    ],
)
async def test_malformed_request_gets_an_error_and_the_server_keeps_serving(
    server: ControlServer, payload: bytes, kind: str, words: str
) -> None:
    reply = await raw_reply(server.path, payload)
    assert reply["ok"] is False
    assert reply["kind"] == kind
    assert words in reply["error"]
    await assert_still_serving(server.path)


async def test_unknown_command_through_the_client(server: ControlServer) -> None:
    with pytest.raises(UserError, match="unknown command 'status'"):
        await call(server.path, "status")
    with pytest.raises(UserError, match="bad arguments"):
        await call(server.path, "echo", bogus=1)


async def test_a_client_that_sends_nothing_does_not_stop_the_server(server: ControlServer) -> None:
    def connect_and_close() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(server.path))

    for _ in range(3):
        await asyncio.to_thread(connect_and_close)
    await assert_still_serving(server.path)


def _send_oversized(path: Path) -> bytes:
    request = json.dumps({"command": "echo", "args": {"value": "x" * (control.MAX_REQUEST + 10)}})
    try:
        return _raw(path, request.encode() + b"\n")
    except OSError:  # the server may reset the connection before reading it all
        return b""


async def test_an_oversized_line_does_not_stop_the_server(server: ControlServer) -> None:
    await asyncio.to_thread(_send_oversized, server.path)
    await assert_still_serving(server.path)


async def test_an_oversized_line_gets_an_error_answer(server: ControlServer) -> None:
    data = await asyncio.to_thread(_send_oversized, server.path)
    reply = json.loads(data)
    assert reply["ok"] is False and reply["kind"] == "ProtocolError"
    assert "too long" in reply["error"]


# ---- the socket ----------------------------------------------------------------------


async def test_socket_mode_is_0600_whatever_the_umask(sock_dir: Path) -> None:
    old = os.umask(0)
    try:
        srv = ControlServer(sock_dir / "control.sock", HANDLERS)
        await srv.start()
        try:
            assert os.umask(0) == 0  # start() restored the caller's umask
            assert stat.S_ISSOCK(srv.path.stat().st_mode)
            assert stat.S_IMODE(srv.path.stat().st_mode) == 0o600
        finally:
            await srv.close()
    finally:
        os.umask(old)


async def test_start_replaces_a_stale_socket(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a dead daemon's socket: the file stays, nobody listens
    dead.close()
    with pytest.raises(DaemonUnreachable):
        await call(path, "echo", value=1)
    srv = ControlServer(path, HANDLERS)
    await srv.start()
    try:
        assert await call(path, "echo", value=1) == {"value": 1, "extra": None}
    finally:
        await srv.close()


async def test_close_removes_the_socket(server: ControlServer) -> None:
    await server.close()
    assert not server.path.exists()
    with pytest.raises(DaemonUnreachable):
        await call(server.path, "echo", value=1)
    await server.close()  # twice is harmless


def test_daemon_unreachable_when_no_socket_exists(sock_dir: Path) -> None:
    with pytest.raises(DaemonUnreachable, match="no daemon is running") as info:
        control.call(sock_dir / "control.sock", "status")
    assert str(sock_dir) in str(info.value)
    assert isinstance(info.value, UserError)


# ---- a server that misbehaves -----------------------------------------------------------


async def _fake_server(path: Path, behave) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await behave(reader, writer)
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, path=str(path))


@pytest.mark.parametrize("read_first", [True, False])
async def test_a_server_that_closes_without_answering_is_a_backend_error(
    sock_dir: Path, read_first: bool
) -> None:
    async def close_silently(reader, writer):
        if read_first:
            await reader.readline()

    path = sock_dir / "control.sock"
    srv = await _fake_server(path, close_silently)
    try:
        with pytest.raises(BackendError, match="'status'"):
            await call(path, "status")
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_malformed_reply_is_a_protocol_error(sock_dir: Path) -> None:
    async def garbage(reader, writer):
        await reader.readline()
        writer.write(b"this is not json\n")
        await writer.drain()

    path = sock_dir / "control.sock"
    srv = await _fake_server(path, garbage)
    try:
        with pytest.raises(ProtocolError, match="malformed reply"):
            await call(path, "status")
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_server_that_never_answers_times_out_as_a_backend_error(sock_dir: Path) -> None:
    release = asyncio.Event()

    async def hang(reader, writer):
        await reader.readline()
        await release.wait()

    path = sock_dir / "control.sock"
    srv = await _fake_server(path, hang)
    try:
        with pytest.raises(BackendError, match="did not answer 'status'"):
            await asyncio.to_thread(control.call, path, "status", timeout=0.2)
    finally:
        release.set()
        srv.close()
        await srv.wait_closed()
