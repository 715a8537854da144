"""Which TCMU uio devices exist for a handler, now and as they come and go (pyudev).

:class:`UioWatcher` tells its owner about every uio device whose TCMU name has the
handler's subtype: first those that exist when it starts (a restarted daemon finds its
devices again), then each one the kernel adds or removes. It listens before it lists,
so a device added in between is reported (once: reports are de-duplicated by uio name).

udev's own events are used when udevd runs (they come after the rules, such as
``system/60-targetcli-preserve.rules``, have set the device node's mode); without udevd (a minimal system, the test guest) the
kernel's uevents are, and devtmpfs makes the node. A device can vanish between its
event and the owner's open: that is the owner's to handle (the open fails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .uio import SYS_CLASS_UIO, TcmuName, read_name

log = logging.getLogger(__name__)

UDEV_CONTROL = Path("/run/udev/control")  # exists while udevd runs

Added = Callable[[str, TcmuName], None]  # (uio name, e.g. "uio0"; what its name says)
Removed = Callable[[str], None]


class UioWatcher:
    def __init__(
        self,
        subtype: str,
        on_added: Added,
        on_removed: Removed,
        *,
        sys_class: Path = SYS_CLASS_UIO,
        context: Any = None,
    ) -> None:
        self.subtype = subtype
        self.on_added = on_added
        self.on_removed = on_removed
        self.sys_class = sys_class
        self._context = context
        self._monitor: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.present: dict[str, TcmuName] = {}  # uio name -> what it is, reported

    def start(self) -> None:
        """Listen (on the running loop), then report the devices that exist."""
        import pyudev  # only the LIO mode needs libudev

        context = self._context or pyudev.Context()
        source = "udev" if UDEV_CONTROL.exists() else "kernel"
        monitor = pyudev.Monitor.from_netlink(context, source=source)
        monitor.filter_by("uio")
        monitor.start()
        self._monitor = monitor
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(monitor.fileno(), self._drain)
        for device in context.list_devices(subsystem="uio"):
            self.handle("add", str(device.sys_name))

    def close(self) -> None:
        if self._monitor is not None and self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())
        self._monitor = None

    def _drain(self) -> None:
        monitor = self._monitor
        while monitor is not None:
            device = monitor.poll(timeout=0)
            if device is None:
                return
            self.handle(str(device.action), str(device.sys_name))

    def handle(self, action: str, uio: str) -> None:
        """One uevent (``action`` "add", "remove", ...) for uio device ``uio``."""
        try:
            if action == "add":
                self._added(uio)
            elif action == "remove" and self.present.pop(uio, None) is not None:
                self.on_removed(uio)
        except Exception:  # one device's trouble must not stop the watch
            log.exception("handling %s of %s failed", action, uio)

    def _added(self, uio: str) -> None:
        if uio in self.present:
            return
        name = read_name(uio, self.sys_class)
        tcmu = TcmuName.parse(name) if name is not None else None
        if tcmu is None or tcmu.subtype != self.subtype:
            return  # another handler's device, or not TCMU at all
        self.present[uio] = tcmu
        self.on_added(uio, tcmu)
