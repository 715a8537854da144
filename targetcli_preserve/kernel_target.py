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

**The TCM-USER netlink events** (tcmu/netlink.py says what the kernel sends and when it
waits for an answer). A preserve LUN's size and identity are the daemon's: READ
CAPACITY, INQUIRY and its VPD pages are answered from the catalog, whatever LIO's
``dev_size`` or ``dev_config`` say. For the devices of this daemon's LUNs (subtype
``preserve``, and the backstore, HBA and LUN name of one of them):

- ADDED and REMOVED: nothing beyond what the udev watcher does (logged at debug level);
  answered with status 0 when the kernel may wait;
- RECONFIG: a ``dev_size`` other than the LUN's size, or a ``dev_config`` other than the
  LUN's, is refused (-EINVAL) and logged as a warning naming the LUN; the same size or
  config, or a change of ``emulate_write_cache`` (the daemon reports its own caching
  mode page, rule 8), is accepted (0).

Events about other devices (another handler's subtype, another daemon's LUNs) are never
answered: tcmu-runner or their own daemon owns them.

An answer is sent only when the kernel may be waiting for it, and the kernel cannot be
asked whether it is: its reply mode has no sysfs file. What can be read is the device's
``nl_reply_supported`` (lio.py): <= 0 means the kernel never waits and nothing is sent;
> 0 means it waits if tcmu-runner (or any client) turned the reply mode on, so the
answer is sent; if the mode is off, the kernel refuses it with -ENODEV and logs a line,
which costs nothing else, while a missing answer would leave the writer asleep for good.
The value is read when the daemon starts and when it attaches the device, never while
handling an event: during a removal the device's configfs directory is locked by the
rmdir that waits for the answer, so a read then would wait for the rmdir, and the rmdir
for the daemon (the LIO guest showed it). A change of ``nl_reply_supported`` while the
daemon serves the device is therefore seen only at the next start or attach; if it
leaves a configfs write waiting for an answer that does not come, the module parameters
``block_netlink`` then ``reset_netlink`` end the wait.
With tcmu-runner running in reply mode it answers too (0 for a removal, -ENODEV for a
reconfiguration of a device it does not serve), and the first answer wins.

Our own backstores are made with ``nl_reply_supported=-1`` (lio.py), so for them the
kernel never waits: a ``dev_size`` written to one (now that a listener exists, the write
no longer fails with ESRCH) changes LIO's value at once; the daemon logs it as a
warning, initiators still see the daemon's size, and the next start refuses the
backstore until its ``dev_size`` is the LUN's again (the warning says how). The -1 also
keeps the daemon from waiting on itself: no configfs write of its own (creating a
backstore, the ring actions) can then block on an answer that only its own loop could
send.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from dataclasses import dataclass

from ._errors import PreserveError, UserError
from .lio import SUBTYPE, Backstore, Lio, config_string
from .scsi.lu import MAX_TRANSFER_BYTES
from .scsi.target import ScsiTarget
from .tcmu.handler import RingServer
from .tcmu.netlink import Event, Kind, NetlinkUnavailable, TcmuNetlink
from .tcmu.ring import TcmuRing
from .tcmu.uio import TcmuName, UioDevice, UioError
from .tcmu.watch import UioWatcher

log = logging.getLogger(__name__)

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
        self._netlink = TcmuNetlink(self.netlink_event)
        self._nl_reply: dict[str, int] = {}  # LUN name -> nl_reply_supported last read
        self._sizes: dict[str, int] = {}  # LUN name -> its size (the daemon's, not LIO's)
        self._closing: set[asyncio.Task[None]] = set()
        self._all_attached = asyncio.Event()

    def configure(self, luns: dict[str, tuple[int, str]]) -> None:
        """Make or find the LUNs' backstores (name -> (size, WWN)) and export them."""
        for name, (size, wwn) in luns.items():
            self.backstores[name] = self.lio.backstore(name, size, wwn, MAX_TRANSFER_BYTES // 512)
            self._sizes[name] = size
            self._read_nl_reply(name, self.backstores[name])
        host, port = self.portal
        self.lio.export(
            self.iqn, host, port, {self.lun_numbers[name]: name for name in self.backstores}
        )

    async def start(self, timeout: float = ATTACH_TIMEOUT) -> None:
        """Watch for the LUNs' uio devices and serve each; return once all are served."""
        self._watcher.start()
        try:
            self._netlink.start()
        except NetlinkUnavailable as err:
            log.warning("no TCMU netlink events (reconfigurations go unnoticed): %s", err)
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
        self._netlink.close()
        self._watcher.close()
        for name in list(self.attached):
            await self._detach(name)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def uio_of(self, name: str) -> str | None:
        attached = self.attached.get(name)
        return attached.uio if attached else None

    # -- devices coming and going ----------------------------------------------------

    def _lun_of(self, tcmu: TcmuName | None) -> str | None:
        """The LUN whose backstore a TCMU device is, or None when it is not ours."""
        if tcmu is None or tcmu.subtype != SUBTYPE:
            return None
        backstore = self.backstores.get(tcmu.config)
        if backstore is None or tcmu.device != backstore.name or tcmu.hba != backstore.hba:
            return None
        return tcmu.config

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
        self._read_nl_reply(name, backstore)
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
        attached = self._forget(name)
        if attached is None:
            return
        task = asyncio.get_running_loop().create_task(self._close_device(attached))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _detach(self, name: str) -> None:
        attached = self._forget(name)
        if attached is not None:
            await self._close_device(attached)

    def _forget(self, name: str) -> _Attached | None:
        attached = self.attached.pop(name, None)
        if attached is not None:
            self._all_attached.clear()
        return attached

    @staticmethod
    async def _close_device(attached: _Attached) -> None:
        try:
            await attached.server.close()
        finally:
            attached.device.close()

    # -- TCM-USER netlink events (see the module docstring) ----------------------------

    def netlink_event(self, event: Event) -> int | None:
        """The status to answer ``event`` with, or None: not ours, or nobody waits."""
        name = self._lun_of(event.tcmu)
        if name is None:
            return None  # tcmu-runner's, or another daemon's: never answered
        waits = self._kernel_waits(name)
        if event.kind is not Kind.RECONFIG:
            log.debug("LUN %s: %s", name, event.describe())
            return 0 if waits else None
        status = self._reconfigured(name, event, waits)
        return status if waits else None

    def _reconfigured(self, name: str, event: Event, waits: bool) -> int:
        backstore, size = self.backstores[name], self._sizes[name]
        if event.writecache is not None:
            log.info(
                "LUN %s: LIO's emulate_write_cache set to %d; the LUN reports its own "
                "caching mode page",
                name,
                event.writecache,
            )
            return 0
        if event.size is not None:
            if event.size == size:
                log.info("LUN %s: LIO's dev_size set to %d, the LUN's size", name, event.size)
                return 0
            what = f"LIO's dev_size {event.size}"
            keep = (
                f"a restart refuses the backstore until it is the LUN's again "
                f"(echo {size} > {backstore.path}/attrib/dev_size)"
            )
        else:
            config = (event.config or "").strip()
            if config == config_string(name):
                log.info("LUN %s: LIO's dev_config set to %r, the LUN's", name, config)
                return 0
            what = f"LIO's dev_config {config!r}"
            keep = f"a restart refuses the backstore until it is {config_string(name)!r} again"
        if waits:
            log.warning(
                "LUN %s (%s): refused %s; the LUN stays %d bytes, %r",
                name,
                event.uio,
                what,
                size,
                config_string(name),
            )
        else:
            log.warning(
                "LUN %s (%s): %s was set without waiting for the daemon "
                "(nl_reply_supported %d); initiators still see the LUN's %d bytes and "
                "identity (the daemon answers READ CAPACITY and INQUIRY); %s",
                name,
                event.uio,
                what,
                self._nl_reply.get(name, -1),
                size,
                keep,
            )
        return -errno.EINVAL

    def _kernel_waits(self, name: str) -> bool:
        """Whether the kernel may wait for an answer about LUN ``name``'s device (from
        the value read at start or attach: no configfs access here, see above)."""
        return self._nl_reply.get(name, 1) > 0  # unknown: answer (see the docstring)

    def _read_nl_reply(self, name: str, backstore: Backstore) -> None:
        try:
            self._nl_reply[name] = backstore.nl_reply_supported()
        except OSError as err:
            log.warning("LUN %s: cannot read nl_reply_supported: %s", name, err)

    def _check_all_attached(self) -> None:
        if self.backstores and set(self.backstores) <= set(self.attached):
            self._all_attached.set()
