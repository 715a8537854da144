"""sd_notify(3) without libsystemd: tell the service manager the daemon's state.

Under systemd with ``Type=notify`` (targetcli_preserve/system/targetcli-preserved.service)
``$NOTIFY_SOCKET`` names a Unix datagram socket: a path, or an abstract address
written with a leading ``@``. One datagram carries newline-separated assignments:
``READY=1`` once the daemon serves, ``STOPPING=1`` when it begins to stop,
``STATUS=...`` a line for ``systemctl status``. Without ``$NOTIFY_SOCKET`` (not started
by systemd) every call does nothing; a failure to send is logged, never raised: the
daemon serves the same whether or not anyone listens.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def notify(*assignments: str) -> bool:
    """Send ``assignments`` (``"READY=1"``, ``"STATUS=..."``) as one datagram to
    ``$NOTIFY_SOCKET``; True if it was sent, False when there is no socket to send to
    or sending failed."""
    address = os.environ.get(ENV, "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace: a leading NUL byte instead
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # vsock:... and the like: not for a local daemon
        log.warning("%s=%s is not a Unix socket address; not notifying", ENV, address)
        return False
    message = "\n".join(a.replace("\n", " ") for a in assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as err:
        log.warning("cannot notify the service manager at %s: %s", address.lstrip("\0"), err)
        return False
    return True


def ready(status: str) -> bool:
    """The daemon serves: ``READY=1`` with a status line."""
    return notify("READY=1", f"STATUS={status}")


def stopping(status: str = "stopping") -> bool:
    """The daemon begins to stop: ``STOPPING=1`` with a status line."""
    return notify("STOPPING=1", f"STATUS={status}")
