"""TCMU (target_core_user): LIO hands SCSI commands to user space through a shared ring.

``ring.py`` is the sans-I/O codec for that ring; ``handler.py`` serves one device's ring
on the asyncio loop (:class:`RingServer`: ring order is issue order, commands answered as
they finish). The edge (mmap of ``/dev/uioN``, the uio fd as a :class:`Doorbell`,
netlink) is not built yet (docs/design.md, section 7).
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
