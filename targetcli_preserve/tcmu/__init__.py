"""TCMU (target_core_user): LIO hands SCSI commands to user space through a shared ring.

``ring.py`` is the sans-I/O codec for that ring; ``handler.py`` serves one device's ring
on the asyncio loop (:class:`RingServer`: ring order is issue order, commands answered as
they finish); ``uio.py`` is the edge (``/dev/uioN``, its map, the fd as a
:class:`Doorbell`), ``watch.py`` finds the devices, and ``netlink.py`` reads the kernel's
TCM-USER generic netlink events and answers them (pyroute2, imported only there).
``dbus_service.py`` makes the handler known on the system D-Bus for stock targetcli
(dbus-fast, imported only there; not imported here).
"""

from targetcli_preserve.tcmu.handler import Doorbell, Execute, RingServer
from targetcli_preserve.tcmu.ring import (
    Command,
    Entry,
    IoVec,
    Mailbox,
    MailboxFlag,
    Op,
    RingError,
    RingUsageError,
    TcmuRing,
    Tmr,
    TmrType,
    UFlag,
    UnknownEntry,
    read_mailbox,
)

__all__ = [
    "Command",
    "Doorbell",
    "Entry",
    "Execute",
    "IoVec",
    "Mailbox",
    "MailboxFlag",
    "Op",
    "RingError",
    "RingServer",
    "RingUsageError",
    "TcmuRing",
    "Tmr",
    "TmrType",
    "UFlag",
    "UnknownEntry",
    "read_mailbox",
]
