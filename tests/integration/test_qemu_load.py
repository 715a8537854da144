"""The qemu-io driver of the load tests reports qemu-io's own words when it fails."""

from __future__ import annotations

import pytest
from helpers.qemu_load import QemuIo
from helpers.skips import need


def test_a_qemu_io_that_cannot_connect_is_reported_with_its_own_error() -> None:
    need("qemu-io")
    io = QemuIo("iscsi://127.0.0.1:1/iqn.2000-01.org.example:nobody/0")  # a closed port
    io.proc.wait(30)
    with pytest.raises(AssertionError) as caught:
        io.send("aio_write -P 1 0 4k\n")
    message = str(caught.value)
    assert "qemu-io exited with status 1" in message
    assert "can't open device iscsi://127.0.0.1:1/" in message
    assert "BrokenPipe" not in message
