"""TCMU (target_core_user): LIO hands SCSI commands to user space through a shared ring.

``ring.py`` is the sans-I/O codec for that ring; the edge (mmap of ``/dev/uioN``, the uio
fd, netlink) is not built yet (docs/design.md, section 7).
"""

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
    "Entry",
    "IoVec",
    "Mailbox",
    "MailboxFlag",
    "Op",
    "RingError",
    "RingUsageError",
    "TcmuRing",
    "Tmr",
    "TmrType",
    "UFlag",
    "UnknownEntry",
    "read_mailbox",
]
