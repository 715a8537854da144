"""The uio edge of a TCMU device: its name, its map, its doorbell.

The kernel's ``target_core_user`` registers one uio device per TCMU backstore, named
``tcm-user/HBA/NAME/SUBTYPE/CONFIG`` in ``/sys/class/uio/uioN/name`` (``HBA`` is the
``user_HBA`` directory in configfs, ``NAME`` the backstore, ``SUBTYPE/CONFIG`` its
``dev_config``). Its one map (``maps/map0``, size in ``maps/map0/size``) holds the
mailbox, the command ring and the data area; ``/dev/uioN`` is mmap'ed at offset 0.

The uio event protocol (``drivers/uio/uio.c``): the fd is readable when the kernel has
signalled since the last ``read``; ``read`` of 4 bytes consumes the signal (EAGAIN on a
non-blocking fd when there is none; EIO once the device is gone); ``write`` of 4 bytes
calls TCMU's ``irqcontrol``, which takes the completions up to ``cmd_tail``. This
module owns those system calls and nothing else: the ring's layout is ``ring.py``'s,
serving it ``handler.py``'s.
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from targetcli_preserve._errors import PreserveError

SYS_CLASS_UIO = Path("/sys/class/uio")
DEV = Path("/dev")
_PREFIX = "tcm-user"
_EVENT = 4  # the uio event counter is an s32: reads and writes are exactly 4 bytes


class UioError(PreserveError):
    """A TCMU uio device could not be opened or mapped (the reason names it)."""


@dataclass(frozen=True, slots=True)
class TcmuName:
    """What a TCMU uio device's sysfs ``name`` says: ``tcm-user/HBA/NAME/SUBTYPE/CONFIG``."""

    hba: int
    device: str  # the backstore's name in configfs
    subtype: str  # the handler it is meant for ("preserve" for ours)
    config: str  # the rest of dev_config, the handler's business

    @classmethod
    def parse(cls, name: str) -> TcmuName | None:
        """None for a uio device that is not TCMU's, or a name that does not parse."""
        parts = name.strip().split("/", 4)
        if len(parts) != 5 or parts[0] != _PREFIX or not parts[1].isdigit():
            return None
        _, hba, device, subtype, config = parts
        if not device or not subtype:
            return None
        return cls(int(hba), device, subtype, config)


def read_name(uio: str, sys_class: Path = SYS_CLASS_UIO) -> str | None:
    """The sysfs name of ``uio`` ("uio0"), or None when it is gone."""
    try:
        return (sys_class / uio / "name").read_text().strip()
    except OSError:
        return None


class UioDevice:
    """One open ``/dev/uioN``: the whole map as a writable buffer, and the doorbell
    (:class:`~targetcli_preserve.tcmu.handler.Doorbell`: ``fileno``, ``ack``, ``ring``).

    The open is exclusive in the kernel (a second opener gets EBUSY), so one process
    serves a device at a time; closing the fd (also by dying) frees it for the next."""

    def __init__(self, uio: str, sys_class: Path = SYS_CLASS_UIO, dev: Path = DEV) -> None:
        self.uio = uio
        size_file = sys_class / uio / "maps" / "map0" / "size"
        try:
            self.map_size = int(size_file.read_text().strip(), 0)
        except (OSError, ValueError) as err:
            raise UioError(f"{uio}: cannot read the map size from {size_file}: {err}") from err
        path = dev / uio
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            why = "another process serves it" if err.errno == errno.EBUSY else err.strerror
            raise UioError(f"cannot open {path}: {why}") from err
        try:
            self.map = mmap.mmap(
                self._fd, self.map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as err:
            os.close(self._fd)
            raise UioError(f"cannot map {self.map_size} bytes of {path}: {err}") from err

    def fileno(self) -> int:
        return self._fd

    def ack(self) -> None:
        """Consume the kernel's signal; a spurious wake-up (EAGAIN) is not an error."""
        try:
            os.read(self._fd, _EVENT)
        except BlockingIOError:
            pass

    def ring(self) -> None:
        """Tell the kernel that ``cmd_tail`` moved (any 4 bytes will do)."""
        os.write(self._fd, b"\0" * _EVENT)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.map.close()
        except BufferError:
            # A view of the map is still alive somewhere: the kernel unmaps it when the
            # process exits; the fd must still be closed so another daemon can attach.
            pass
        os.close(self._fd)
        self._fd = -1
