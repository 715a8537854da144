"""The ``iscsi_server`` fixture: a built-in target on 127.0.0.1 (helpers.iscsi_server)."""

from __future__ import annotations

import pytest
from helpers.iscsi_server import ServerThread


@pytest.fixture
def iscsi_server():
    srv = ServerThread()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
