"""Kernel LIO's configuration for the daemon's LUNs, through rtslib-fb (configfs).

The only module that imports rtslib-fb. It makes, finds again and removes what LIO needs
to export a LUN whose commands reach this daemon through TCMU:

- a ``user`` backstore per LUN, named after the LUN, ``dev_config`` ``preserve/NAME``
  (subtype ``preserve``: our handler; the rest names the LUN), its size, and the LUN's
  WWN as LIO's unit serial. ``nl_reply_supported=-1`` tells the kernel not to wait for
  a netlink reply to the device-add event, so a device is usable whether or not
  tcmu-runner (which answers -ENOENT for handlers it does not know) is running;
- an iSCSI target (``--iqn``), TPG 1, a portal (``--portal``) and one LUN per backstore
  at the LUN's number, in demo mode like the built-in target (any initiator, no CHAP,
  writable), with iSCSI parameters that let writes travel as immediate data;
- the TCMU ``block_dev``/``reset_ring`` actions a (re)attaching handler runs: commands
  an earlier daemon left on the ring are completed with BUSY, so initiators retry them.

Everything is found again when it exists (a restarted daemon reattaches without the
initiators noticing: the same WWN, serial and LUN number), and refused with a reason
when something of the same name exists but differs. A daemon that stops leaves the
configuration in place: commands wait in the kernel until a daemon serves the ring
again (or until the device's ``cmd_time_out``); :meth:`Lio.remove` takes it away.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import PreserveError

SUBTYPE = "preserve"
CONFIGFS = Path("/sys/kernel/config/target")
SYS_MODULE = Path("/sys/module")
TPG_TAG = 1
# No netlink reply: see the module docstring (target_core_user.c, nl_reply_supported).
_CONTROL = "nl_reply_supported=-1"
# Demo mode (RFC 7143 leaves access control to the target): what the built-in target does.
DEMO_MODE = {
    "generate_node_acls": "1",
    "cache_dynamic_acls": "1",
    "authentication": "0",
    "demo_mode_write_protect": "0",
}
# RFC 7143 13.12-13.14: up to 256 KiB of a write travels with its command (immediate
# data), so a write reaches the ring when it arrives, in CmdSN order, without an R2T.
_TPG_PARAMETERS = {
    "MaxRecvDataSegmentLength": "262144",
    "FirstBurstLength": "262144",
    "ImmediateData": "Yes",
}
_SIZE = re.compile(r"(?<![A-Za-z])Size: *(\d+)")  # "Size:", not "SectorSize:"


class LioError(PreserveError):
    """LIO cannot do what was asked here (exit status 1, like a portal in use); the
    message says what is missing or in the way."""


def unavailable() -> str | None:
    """Why LIO cannot serve here, or None when it can."""
    if not CONFIGFS.is_dir():
        return f"no LIO: {CONFIGFS} is missing (load target_core_mod and mount configfs)"
    for module in ("target_core_user", "iscsi_target_mod"):
        if not (SYS_MODULE / module).is_dir():
            return f"no LIO: kernel module {module} is not loaded (modprobe {module})"
    if os.geteuid() != 0:
        return "LIO mode needs root (it writes configfs and opens /dev/uio*)"
    return None


def fabric_modules() -> list[Any]:
    """LIO's fabric modules as stock targetcli lists them under ``/`` (those with
    targets, or that need none), for the shell to mount targetcli's own nodes on."""
    import rtslib_fb

    return [fm for fm in rtslib_fb.RTSRoot().fabric_modules if fm.wwns is None or any(fm.wwns)]


def config_string(lun_name: str) -> str:
    """The backstore's ``dev_config`` for a LUN (the uio device's name ends with it)."""
    return f"{SUBTYPE}/{lun_name}"


@dataclass(frozen=True)
class Backstore:
    """A ``user:preserve`` backstore in configfs."""

    name: str
    hba: int  # the N of core/user_N
    path: Path  # its configfs directory
    size: int
    wwn: str  # LIO's unit serial

    def action(self, name: str, value: str) -> None:
        """Write a TCMU action (``block_dev``, ``reset_ring``)."""
        (self.path / "action" / name).write_text(value)

    def nl_reply_supported(self) -> int:
        """The device's ``attrib/nl_reply_supported``: > 0 when the kernel may wait for
        a netlink reply about it (tcmu/netlink.py). OSError once the device is gone."""
        try:
            return int((self.path / "attrib" / "nl_reply_supported").read_text())
        except ValueError as err:
            raise OSError(f"{self.path}/attrib/nl_reply_supported: {err}") from err


class Lio:
    """rtslib-fb bound once; every method reads configfs afresh."""

    def __init__(self) -> None:
        reason = unavailable()
        if reason is not None:
            raise LioError(reason)
        import rtslib_fb  # imported here: loading it takes seconds and needs configfs

        self._rts: Any = rtslib_fb

    # -- backstores ------------------------------------------------------------------

    def backstore(self, lun_name: str, size: int, wwn: str, max_sectors: int) -> Backstore:
        """The LUN's backstore: found again, or made."""
        rts = self._rts
        so = self._find_config(config_string(lun_name)) or self._find(lun_name)
        if so is None:
            try:
                so = rts.UserBackedStorageObject(
                    lun_name,
                    config=config_string(lun_name),
                    size=size,
                    wwn=wwn,
                    hw_max_sectors=max_sectors,
                    control=_CONTROL,
                )
            except rts.RTSLibError as err:
                raise LioError(f"cannot create LIO backstore user/{lun_name}: {err}") from err
        found = self._describe(so)
        if so.config != config_string(lun_name):
            raise LioError(
                f"LIO backstore user/{lun_name} exists with config {so.config!r}, not "
                f"{config_string(lun_name)!r}: delete it (targetcli /backstores/user:"
                f"{so.config.split('/')[0] if so.config else '?'} delete {lun_name}) or "
                "rename the LUN"
            )
        if found.size != size:
            raise LioError(f"LIO backstore user/{lun_name} has size {found.size}, the LUN {size}")
        if so.wwn != wwn:
            raise LioError(f"LIO backstore user/{lun_name} has unit serial {so.wwn}, not {wwn}")
        return found

    def find(self, lun_name: str) -> Backstore | None:
        """The LUN's backstore as configfs has it now, whatever its name (this daemon
        names its own after the LUN; an administrator's, made in targetcli, may be
        named otherwise; one made again since has another HBA index), or None."""
        so = self._find_config(config_string(lun_name))
        return None if so is None else self._describe(so)

    def _find(self, name: str) -> Any:
        for so in self._rts.RTSRoot().storage_objects:
            if so.plugin == "user" and so.name == name:
                return so
        return None

    def _find_config(self, config: str) -> Any:
        for so in self._rts.RTSRoot().storage_objects:
            if so.plugin == "user" and so.config == config:
                return so
        return None

    @staticmethod
    def _describe(so: Any) -> Backstore:
        path = Path(so.path)
        info = (path / "info").read_text()
        match = _SIZE.search(info)
        size = int(match.group(1)) if match else -1
        hba = int(path.parent.name.rsplit("_", 1)[1])
        return Backstore(str(so.name), hba, path, size, str(so.wwn))

    # -- the iSCSI export ------------------------------------------------------------

    def export(self, iqn: str, host: str, port: int, luns: dict[int, str]) -> None:
        """Export backstores (LUN number -> backstore name) on ``iqn``'s TPG 1 at
        ``host:port``; what exists and matches is kept."""
        rts = self._rts
        try:
            target = rts.Target(rts.FabricModule("iscsi"), iqn, mode="any")
            tpg = rts.TPG(target, TPG_TAG, mode="any")
            for name, value in DEMO_MODE.items():
                tpg.set_attribute(name, value)
            for name, value in _TPG_PARAMETERS.items():
                tpg.set_parameter(name, value)
            rts.NetworkPortal(tpg, host, port, mode="any")
            mapped = {int(lun.lun): lun for lun in tpg.luns}
            for number, name in sorted(luns.items()):
                lun = mapped.get(number)
                if lun is not None:
                    if lun.storage_object.plugin == "user" and lun.storage_object.name == name:
                        continue
                    raise LioError(
                        f"LUN {number} of {iqn} is {lun.storage_object.plugin}/"
                        f"{lun.storage_object.name}, not user/{name}: unmap it first"
                    )
                rts.LUN(tpg, number, self._find(name))
            tpg.enable = True
        except rts.RTSLibError as err:
            raise LioError(f"cannot export on LIO target {iqn}: {err}") from err

    def remove(self, iqn: str, names: list[str]) -> None:
        """Take away the target ``iqn`` and the named backstores (what :meth:`export`
        and :meth:`backstore` made)."""
        rts = self._rts
        for target in list(rts.RTSRoot().targets):
            if target.wwn == iqn:
                target.delete()
        for name in names:
            so = self._find(name)
            if so is not None:
                so.delete()

    # -- TCMU actions ----------------------------------------------------------------

    @staticmethod
    def reset_ring(backstore: Backstore) -> None:
        """Before serving a ring: block new commands, complete those an earlier handler
        left on it with BUSY (``reset_ring`` 1: retryable), unblock (tcmu-runner does
        the same when it opens a device)."""
        backstore.action("block_dev", "1")
        try:
            backstore.action("reset_ring", "1")
        finally:
            backstore.action("block_dev", "0")
