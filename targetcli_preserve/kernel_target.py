"""Serving the daemon's LUNs through kernel LIO: ``serve --lio``.

LIO does iSCSI (logins, sessions, CmdSN ordering, its portal); each LUN is a
``user:preserve`` TCMU backstore (lio.py), and every SCSI command for it reaches this
process on the device's command ring. :class:`KernelTarget` ties the pieces together:
it configures LIO, watches for uio devices (tcmu/watch.py), and serves each device's
ring (tcmu/handler.py) into the same :class:`ScsiTarget`, data path and engine as the
built-in target, so a command's issue order is its ring order (docs/design.md rule 1)
and a preserve cuts exactly as it does there.

**Where backstores come from.** A ``--lun`` (or the control command ``create``) gets a
backstore named after the LUN, exported on the daemon's own target (``--iqn``,
``--portal``). An administrator can also make one in stock targetcli,
``/backstores/user:preserve create name=db0 size=10G cfgstring=db0``, and export it
with targetcli: the config string names the LUN (:meth:`KernelTarget.check_config` is
what targetcli's ``create`` asks first, over D-Bus). When its device appears, a LUN the
state directory does not know is created with the backstore's size and unit serial;
a known one is served with its own size and data. Every ``user:preserve`` device found
at start is served the same way, so a restarted daemon picks up what targetcli made.
A deleted backstore leaves its LUN in the state directory (``luns`` shows it unserved).

Attaching a device resets its ring first (lio.py): what an earlier daemon left there
is completed with BUSY and retried by the initiator, never run twice behind its back.

**The netlink reply mode is turned off** at start and each time tcmu-runner comes
back (it turns the module-wide mode on when it starts): with it on, tcmu-runner
answers the device-add event of a handler it does not know (ours) with -ENOENT, and a
``create`` in targetcli fails. With it off the kernel waits for no handler's answer;
tcmu-runner's own handlers work as on kernels without the mode.

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
import uuid
from dataclasses import dataclass

from ._errors import PreserveError, UserError
from .catalog import check_lun_name
from .lio import SUBTYPE, Backstore, Lio, config_string
from .options import LunSpec
from .scsi.lu import MAX_TRANSFER_BYTES
from .serving import LunSet
from .tcmu.dbus_service import DBusUnavailable, HandlerService, Mode
from .tcmu.handler import RingServer
from .tcmu.netlink import Event, Kind, NetlinkUnavailable, TcmuNetlink, set_reply_mode
from .tcmu.ring import TcmuRing
from .tcmu.uio import TcmuName, UioDevice, UioError
from .tcmu.watch import UioWatcher

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 30.0  # seconds start() waits for every LUN's uio device
# What stock targetcli's `help create` prints under CFGSTRING FORMAT (over D-Bus).
CONFIG_DESCRIPTION = (
    "NAME: the targetcli-preserve LUN this backstore serves (1-64 letters, digits, "
    "'.', '_' or '-'). A LUN the daemon does not have yet is created with the "
    "backstore's size and unit serial; an existing one is served with its data. One "
    "backstore per LUN. Example: create name=db0 size=10G cfgstring=db0"
)


@dataclass
class _Attached:
    uio: str
    device: UioDevice
    server: RingServer


class KernelTarget:
    def __init__(self, lio: Lio, luns: LunSet, iqn: str, portal: tuple[str, int]) -> None:
        self.lio = lio
        self.luns = luns
        self.iqn = iqn
        self.portal = portal
        self.backstores: dict[str, Backstore] = {}  # LUN name -> its backstore, once known
        self.attached: dict[str, _Attached] = {}  # LUN name -> its device, while served
        self._watcher = UioWatcher(SUBTYPE, self._added, self._removed)
        self._netlink = TcmuNetlink(self.netlink_event)
        self._nl_reply: dict[str, int] = {}  # LUN name -> nl_reply_supported last read
        self._exported: set[str] = set()  # LUN names this daemon exports on its own target
        self._adopting: dict[str, asyncio.Task[None]] = {}  # LUN name -> coming into service
        self._closing: set[asyncio.Task[None]] = set()
        self._attached_changed = asyncio.Event()
        self._dbus = HandlerService(
            SUBTYPE, CONFIG_DESCRIPTION, self.check_config, on_runner=self.reply_mode_off
        )

    @property
    def dbus_mode(self) -> Mode:
        """How stock targetcli learns of ``user:preserve``: "registered" with
        tcmu-runner, "stand-in" for it, or "off" (no system bus)."""
        return self._dbus.mode

    @property
    def lun_numbers(self) -> dict[str, int]:
        return self.luns.numbers

    def configure(self, names: list[str]) -> None:
        """Make or find the backstores of served LUNs ``names`` and export them on the
        daemon's own target (``--iqn``, ``--portal``) at their LUN numbers. Without any
        (no ``--lun``), the daemon makes no target of its own."""
        if not names:
            return
        for name in names:
            record = self.luns.catalog.luns[name]
            backstore = self.lio.backstore(name, record.size, record.wwn, MAX_TRANSFER_BYTES // 512)
            self.backstores[name] = backstore
            self._read_nl_reply(name, backstore)
        self._exported.update(names)
        host, port = self.portal
        self.lio.export(
            self.iqn,
            host,
            port,
            {self.lun_numbers[name]: self.backstores[name].name for name in self._exported},
        )

    async def start(self, timeout: float = ATTACH_TIMEOUT) -> None:
        """Watch for uio devices and serve each of a ``user:preserve`` backstore; return
        once the configured LUNs' and those that exist already are served."""
        self.reply_mode_off()
        self._watcher.start()  # lists the devices that exist: adopting starts here
        try:
            self._netlink.start()
        except NetlinkUnavailable as err:
            log.warning("no TCMU netlink events (reconfigurations go unnoticed): %s", err)
        try:
            await self._dbus.start()
        except DBusUnavailable as err:
            log.warning("%s", err)  # it says what targetcli then misses
        await self._wait_attached(list(self.backstores), timeout)

    async def add(self, name: str, timeout: float = ATTACH_TIMEOUT) -> None:
        """Make served LUN ``name`` a backstore, export it, and wait until it is served."""
        self.configure([name])
        await self._wait_attached([name], timeout)

    async def _wait_attached(self, names: list[str], timeout: float) -> None:
        async def all_there() -> None:
            while True:
                adopting = [task for task in self._adopting.values() if not task.done()]
                if adopting:  # devices found at start or since: let them come in first
                    await asyncio.gather(*adopting, return_exceptions=True)
                    continue
                if set(names) <= set(self.attached):
                    return
                self._attached_changed.clear()
                await self._attached_changed.wait()

        try:
            await asyncio.wait_for(all_there(), timeout)
        except TimeoutError:
            missing = sorted(set(names) - set(self.attached))
            raise UserError(
                f"no TCMU device appeared within {timeout:g} s for LUN(s) "
                f"{', '.join(missing) or '(adopted)'}: is target_core_user loaded, and "
                "does another process hold the /dev/uio device?"
            ) from None

    async def close(self) -> None:
        """Stop serving; LIO's configuration stays (see lio.py)."""
        await self._dbus.close()
        self._netlink.close()
        self._watcher.close()
        for task in list(self._adopting.values()):
            task.cancel()
        if self._adopting:
            await asyncio.gather(*self._adopting.values(), return_exceptions=True)
        for name in list(self.attached):
            await self._detach(name)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def uio_of(self, name: str) -> str | None:
        attached = self.attached.get(name)
        return attached.uio if attached else None

    def reply_mode_off(self) -> None:
        """Turn the kernel's netlink reply mode off (see the module docstring): at start,
        and each time tcmu-runner, which turns it on when it starts, is back."""
        try:
            set_reply_mode(False)
        except (NetlinkUnavailable, OSError) as err:
            log.warning(
                "cannot turn TCMU's netlink reply mode off (%s): while tcmu-runner has it "
                "on, a user:%s backstore made in targetcli fails to enable",
                err,
                SUBTYPE,
            )

    # -- what stock targetcli asks (over D-Bus, tcmu/dbus_service.py) --------------------

    def check_config(self, config: str) -> str | None:
        """Why ``config`` (``preserve/CFGSTRING``, as targetcli's ``create`` sends it)
        cannot make a ``user:preserve`` backstore, or None when it can."""
        subtype, _, name = config.partition("/")
        if subtype != SUBTYPE:
            return f"{config!r} is not a user:{SUBTYPE} config"
        try:
            check_lun_name(name)
        except UserError as err:
            return f"cfgstring names the LUN the backstore serves: {err}"
        existing = self.lio.find(name)
        if existing is not None:
            return (
                f"LUN {name} already has backstore user:{SUBTYPE}/{existing.name}; "
                "a LUN is served through one backstore"
            )
        return None

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
        # The backstore whose config is preserve/NAME, as configfs has it now: an
        # administrator may have made it in targetcli, or deleted it and made it again.
        backstore = self._find(name)
        if backstore is None or tcmu.device != backstore.name or tcmu.hba != backstore.hba:
            log.warning(
                "%s: user:%s device %s/%s is not a backstore this daemon can serve; left alone",
                uio,
                SUBTYPE,
                tcmu.device,
                tcmu.config,
            )
            return
        if name in self.attached or name in self._adopting:
            log.warning("%s: LUN %s is already served through another device", uio, name)
            return
        if name in self.lun_numbers:
            self._attach(uio, name, backstore)
            return
        task = asyncio.get_running_loop().create_task(self._adopt(uio, name, backstore))
        self._adopting[name] = task
        task.add_done_callback(lambda _: self._adopting.pop(name, None))

    def _find(self, name: str) -> Backstore | None:
        try:
            check_lun_name(name)
            return self.lio.find(name)
        except (UserError, OSError):
            return None

    async def _adopt(self, uio: str, name: str, backstore: Backstore) -> None:
        """Serve the LUN of a backstore made outside this daemon (targetcli): a LUN the
        state directory does not know is created with the backstore's size and unit
        serial (as WWN, when it is a UUID); a known one keeps its own size and WWN."""
        record = self.luns.catalog.luns.get(name)
        size = record.size if record is not None else backstore.size
        if record is not None and record.size != backstore.size:
            log.warning(
                "LUN %s is %d bytes; its backstore %s says %d: initiators see the LUN's "
                "size (the daemon answers READ CAPACITY)",
                name,
                record.size,
                backstore.name,
                backstore.size,
            )
        try:
            await self.luns.serve(LunSpec(name, size, _uuid_or_none(backstore.wwn)))
        except PreserveError as err:
            log.error("%s: cannot serve LUN %s of backstore %s: %s", uio, name, backstore.name, err)
            return
        log.info(
            "LUN %s (number %d) made for backstore %s", name, self.lun_numbers[name], backstore.name
        )
        self._attach(uio, name, backstore)

    def _attach(self, uio: str, name: str, backstore: Backstore) -> None:
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
                functools.partial(self.luns.target.execute, self.lun_numbers[name]),
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
        self._attached_changed.set()

    def _removed(self, uio: str) -> None:
        for name, attached in list(self.attached.items()):
            if attached.uio == uio:
                log.warning("%s: the TCMU device of LUN %s was removed", uio, name)
                self._detach_later(name)

    def _lost(self, name: str, err: BaseException) -> None:
        # Most often an administrator deleted the backstore (targetcli delete or
        # clearconfig: the ring then fails with EIO before udev reports the removal);
        # configfs cannot be asked which while the removal runs (see above).
        log.warning(
            "LUN %s: its TCMU ring cannot be served any more (%s): its backstore was "
            "deleted, or the device failed; the LUN stays in the state directory",
            name,
            err,
        )
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
        return self.attached.pop(name, None)

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
        backstore, size = self.backstores[name], self.luns.catalog.luns[name].size
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


def _uuid_or_none(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None
