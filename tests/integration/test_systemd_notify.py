"""The real daemon under a service manager's $NOTIFY_SOCKET: READY=1 once it serves,
STOPPING=1 when SIGTERM stops it (what Type=notify in targetcli-preserved.service
relies on)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers.served import IQN, Served


def _assignments(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_daemon_notifies_ready_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        served = Served(tmp_path / "state", ["a:1M", "b:1M"]).start()
        try:
            ready = _assignments(sock)
            assert ready["READY"] == "1"
            assert ready["STATUS"] == f"serving 2 LUNs: target {IQN} on 127.0.0.1:{served.port}"
        finally:
            code = served.stop()
        assert code == 0
        stopping = _assignments(sock)
        assert stopping["STOPPING"] == "1"
