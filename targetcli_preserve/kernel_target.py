"""Serving the daemon's LUNs through kernel LIO: ``serve --lio``.

LIO does iSCSI (logins, sessions, CmdSN ordering, its portal); each LUN is a
``user:preserve`` TCMU backstore (lio.py), and every SCSI command for it reaches this
process on the device's command ring. :class:`KernelTarget` ties the pieces together:
it configures LIO, watches for the LUNs' uio devices (tcmu/watch.py), and serves each
device's ring (tcmu/handler.py) into the same :class:`ScsiTarget`, data path and
engine as the built-in target, so a command's issue order is its ring order
(docs/design.md rule 1) and a preserve cuts exactly as it does there.

Attaching a device resets its ring first (lio.py): what an earlier daemon left there
is completed with BUSY and retried by the initiator, never run twice behind its back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from ._errors import PreserveError, UserError
from .lio import Backstore, Lio
from .scsi.lu import MAX_TRANSFER_BYTES
from .scsi.target import ScsiTarget
from .tcmu.handler import RingServer
from .tcmu.ring import TcmuRing
from .tcmu.uio import TcmuName, UioDevice, UioError
from .tcmu.watch import UioWatcher

log = logging.getLogger(__name__)

SUBTYPE = "preserve"
ATTACH_TIMEOUT = 30.0  # seconds start() waits for every LUN's uio device


@dataclass
class _Attached:
    uio: str
    device: UioDevice
    server: RingServer


class KernelTarget:
    def __init__(
        self,
        lio: Lio,
        target: ScsiTarget,
        iqn: str,
        portal: tuple[str, int],
        lun_numbers: dict[str, int],
    ) -> None:
        self.lio = lio
        self.target = target
        self.iqn = iqn
        self.portal = portal
        self.lun_numbers = lun_numbers
        self.backstores: dict[str, Backstore] = {}
        self.attached: dict[str, _Attached] = {}  # LUN name -> its device, while served
        self._watcher = UioWatcher(SUBTYPE, self._added, self._removed)
        self._closing: set[asyncio.Task[None]] = set()
        self._all_attached = asyncio.Event()

    def configure(self, luns: dict[str, tuple[int, str]]) -> None:
        """Make or find the LUNs' backstores (name -> (size, WWN)) and export them."""
        for name, (size, wwn) in luns.items():
            self.backstores[name] = self.lio.backstore(name, size, wwn, MAX_TRANSFER_BYTES // 512)
        host, port = self.portal
        self.lio.export(
            self.iqn, host, port, {self.lun_numbers[name]: name for name in self.backstores}
        )

    async def start(self, timeout: float = ATTACH_TIMEOUT) -> None:
        """Watch for the LUNs' uio devices and serve each; return once all are served."""
        self._watcher.start()
        self._check_all_attached()
        try:
            await asyncio.wait_for(self._all_attached.wait(), timeout)
        except TimeoutError:
            missing = sorted(set(self.backstores) - set(self.attached))
            raise UserError(
                f"no TCMU device appeared within {timeout:g} s for LUN(s) "
                f"{', '.join(missing)}: is target_core_user loaded, and does another "
                "process hold the /dev/uio device?"
            ) from None

    async def close(self) -> None:
        """Stop serving; LIO's configuration stays (see lio.py)."""
        self._watcher.close()
        for name in list(self.attached):
            await self._detach(name)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def uio_of(self, name: str) -> str | None:
        attached = self.attached.get(name)
        return attached.uio if attached else None

    # -- devices coming and going ----------------------------------------------------

    def _added(self, uio: str, tcmu: TcmuName) -> None:
        name = tcmu.config
        # Ours: named after a served LUN, config preserve/NAME. An administrator may have
        # deleted and made it again since start (another HBA): look it up afresh.
        backstore = self.lio.find(name) if name in self.backstores else None
        if backstore is None or tcmu.device != backstore.name or tcmu.hba != backstore.hba:
            log.warning(
                "%s: user:%s device %s/%s is not one of this daemon's LUNs; left alone",
                uio,
                SUBTYPE,
                tcmu.device,
                tcmu.config,
            )
            return
        if name in self.attached:
            log.warning("%s: LUN %s is already served by %s", uio, name, self.attached[name].uio)
            return
        try:
            device = UioDevice(uio)  # exclusive: nobody else serves it from here on
        except UioError as err:
            log.error("%s: cannot serve LUN %s: %s", uio, name, err)
            return
        try:
            self.lio.reset_ring(backstore)  # what an earlier handler left: BUSY, retried
            ring = TcmuRing(device.map)
            server = RingServer(
                ring,
                device,
                functools.partial(self.target.execute, self.lun_numbers[name]),
                name=f"{name} ({uio})",
                on_lost=functools.partial(self._lost, name),
            )
            server.start()
        except (OSError, PreserveError) as err:  # this ring cannot be served; the rest can
            device.close()
            log.error("%s: cannot serve LUN %s: %s", uio, name, err)
            return
        self.backstores[name] = backstore
        self.attached[name] = _Attached(uio, device, server)
        log.info("serving LUN %s through LIO: %s, %s", name, uio, backstore.path)
        self._check_all_attached()

    def _removed(self, uio: str) -> None:
        for name, attached in list(self.attached.items()):
            if attached.uio == uio:
                log.warning("%s: the TCMU device of LUN %s was removed", uio, name)
                self._detach_later(name)

    def _lost(self, name: str, err: BaseException) -> None:
        log.error("LUN %s: its TCMU ring cannot be served any more: %s", name, err)
        self._detach_later(name)

    def _detach_later(self, name: str) -> None:
        """Forget the LUN's device now (the kernel may hand out the same uio number to
        the next one at once); finish its commands and close it in the background."""
        attached = self.attached.pop(name, None)
        if attached is None:
            return
        self._all_attached.clear()
        task = asyncio.get_running_loop().create_task(self._close_device(attached))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _detach(self, name: str) -> None:
        attached = self.attached.pop(name, None)
        if attached is not None:
            self._all_attached.clear()
            await self._close_device(attached)

    @staticmethod
    async def _close_device(attached: _Attached) -> None:
        try:
            await attached.server.close()
        finally:
            attached.device.close()

    def _check_all_attached(self) -> None:
        if self.backstores and set(self.backstores) <= set(self.attached):
            self._all_attached.set()
