"""notify.py: sd_notify datagrams, received on a real AF_UNIX datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from targetcli_preserve import notify


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound at a path, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv(notify.ENV, str(path))
        yield sock


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(notify.ENV, raising=False)
    assert notify.notify("READY=1") is False
    monkeypatch.setenv(notify.ENV, "")
    assert notify.ready("serving") is False


def test_ready_sends_one_datagram_with_status(receiver: socket.socket) -> None:
    assert notify.ready("serving 2 LUNs") is True
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving 2 LUNs"


def test_stopping(receiver: socket.socket) -> None:
    assert notify.stopping() is True
    assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_a_newline_in_a_value_cannot_forge_an_assignment(receiver: socket.socket) -> None:
    notify.ready("line one\nREADY=0")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=line one READY=0"


def test_abstract_namespace_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"targetcli-preserve-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv(notify.ENV, "@" + name)
        assert notify.notify("READY=1", "STATUS=abstract") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=abstract"


def test_nobody_listening_is_a_warning_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(notify.ENV, str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger=notify.__name__):
        assert notify.ready("serving") is False
    assert "cannot notify the service manager" in caplog.text


def test_an_address_that_is_not_a_unix_socket_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(notify.ENV, "vsock:2:1234")
    with caplog.at_level(logging.WARNING, logger=notify.__name__):
        assert notify.notify("READY=1") is False
    assert "not a Unix socket address" in caplog.text
