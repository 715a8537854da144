"""The kernel's TCM-USER generic netlink family: device events and the replies to them.

``target_core_user`` (include/uapi/linux/target_core_user.h, drivers/target/
target_core_user.c) multicasts an event on the family's ``config`` group when a TCMU
device is added (``TCMU_CMD_ADDED_DEVICE``: at ``enable``), removed
(``REMOVED_DEVICE``: at the backstore's rmdir) or reconfigured (``RECONFIG_DEVICE``:
a write to the device's ``attrib/dev_size``, ``attrib/dev_config`` or
``attrib/emulate_write_cache`` once it is enabled; the ``control`` file's
``dev_size=`` only changes the value, without an event). Every event carries the uio
device's name (``DEVICE``, ``tcm-user/HBA/NAME/SUBTYPE/CONFIG``, the name before a
reconfiguration), its uio ``MINOR`` and LIO's ``DEVICE_ID``; a reconfiguration carries
exactly one of ``DEV_SIZE`` (u64), ``DEV_CFG`` (the string as written, newline
included) or ``WRITECACHE`` (u8). The family is version 2.

**When the kernel waits for an answer** (``tcmu_netlink_event_send``,
``tcmu_init_genl_cmd_reply``, ``tcmu_wait_genl_cmd_reply``, the same from 5.x through
6.1 and later): only when all of

1. the module-wide reply mode is on: some client sent ``SET_FEATURES`` with
   ``SUPP_KERN_CMD_REPLY=1`` (tcmu-runner does at start; the last sender wins, it is
   never reset, and nothing in sysfs shows it);
2. the device's ``nl_reply_supported`` is > 0. It is the backstore's
   ``attrib/nl_reply_supported`` (writable at any time). At ``enable`` a value >= 0 is
   replaced by the reply mode of that moment; -1 (what lio.py creates our backstores
   with) stays, and then the kernel never waits for that device;
3. the multicast reached a listener, or found none and the event is ``ADDED_DEVICE``
   ("the listener may not be up yet": an add then waits even with nobody listening).

It then sleeps, without a timeout and uninterruptibly, in the configfs write (or rmdir,
or ``enable``) until a ``*_DONE`` message (``CMD_STATUS`` s32, ``DEVICE_ID`` u32) for
that device and command arrives; a non-zero status fails that write with it. Only the
module parameters ``block_netlink=1`` then ``reset_netlink=1`` end such a wait
(-EINTR). A reply for a device nobody waits on is refused (-ENODEV, and a line in the
kernel log); one for the wrong command is refused too (-EINVAL), and it also drops the
waiting command from the kernel's list, so that wait never ends. One command per device
is in flight at a time (a second writer gets -EBUSY).

The other side of condition 3: when the kernel does *not* wait, a reconfiguration that
reached no listener fails with -ESRCH (no change); one that reached a listener succeeds
at once, answered or not. So once this daemon listens, a ``dev_size`` written to one of
its backstores (made with -1) changes LIO's value; what a daemon does about it is its
policy (kernel_target.py).

This module is the codec (:func:`decode` into an :class:`Event`, :func:`reply` and
:func:`set_features` messages, :func:`encode`), built on pyroute2's message classes,
and a small asyncio edge, :class:`TcmuNetlink`: a netlink socket joined to ``config``,
read with ``loop.add_reader`` and never blocking the loop. Messages that do not decode
are logged and dropped, and nothing the handler or the socket raises reaches the loop.

The socket is a plain ``AF_NETLINK`` socket rather than pyroute2's
``GenericNetlinkSocket``: since pyroute2 0.9 that class runs an event loop of its own
(constructing it inside a running loop raises "This event loop is already running")
and keeps its socket per thread, while 0.7 (Debian bookworm's) has no asyncio class.
The messages, the family lookup and the parsing of datagrams are pyroute2's in both
(``genlmsg``, ``ctrlmsg``, ``Marshal``); pyroute2 is imported on first use only, since
only ``serve --lio`` needs it.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import functools
import logging
import os
import select
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import PreserveError, ProtocolError
from .uio import TcmuName

__all__ = [
    "FAMILY",
    "GROUP",
    "Cmd",
    "Event",
    "Kind",
    "MalformedEvent",
    "NetlinkUnavailable",
    "TcmuNetlink",
    "decode",
    "encode",
    "reply",
    "set_features",
    "set_reply_mode",
]

_log = logging.getLogger(__name__)

FAMILY = "TCM-USER"
GROUP = "config"
VERSION = 2  # the family's version (tcmu_genl_family.version; tcmu-runner sends 2 too)
_RECV = 65536  # one datagram; the kernel's events are well under a page
_MAX_DATAGRAMS = 64  # per wake-up; more are read on the next one (bounded loop work)
_MAX_PENDING = 64  # replies whose acknowledgement is awaited, for the log only
_RESOLVE_TIMEOUT = 2.0  # the controller answers inside our send; this is a safety net


class Cmd(enum.IntEnum):
    """``enum tcmu_genl_cmd``."""

    ADDED_DEVICE = 1
    REMOVED_DEVICE = 2
    RECONFIG_DEVICE = 3
    ADDED_DEVICE_DONE = 4
    REMOVED_DEVICE_DONE = 5
    RECONFIG_DEVICE_DONE = 6
    SET_FEATURES = 7


class Kind(enum.Enum):
    """What an event says happened to a device (its value: the event's command)."""

    ADDED = Cmd.ADDED_DEVICE
    REMOVED = Cmd.REMOVED_DEVICE
    RECONFIG = Cmd.RECONFIG_DEVICE

    @property
    def done(self) -> Cmd:
        """The command that answers it."""
        return Cmd(self.value + 3)


# ``enum tcmu_genl_attr`` with pyroute2's types (index = attribute number).
_ATTRS = (
    ("TCMU_ATTR_UNSPEC", "none"),
    ("TCMU_ATTR_DEVICE", "asciiz"),
    ("TCMU_ATTR_MINOR", "uint32"),
    ("TCMU_ATTR_PAD", "none"),
    ("TCMU_ATTR_DEV_CFG", "asciiz"),
    ("TCMU_ATTR_DEV_SIZE", "uint64"),
    ("TCMU_ATTR_WRITECACHE", "uint8"),
    ("TCMU_ATTR_CMD_STATUS", "int32"),
    ("TCMU_ATTR_DEVICE_ID", "uint32"),
    ("TCMU_ATTR_SUPP_KERN_CMD_REPLY", "uint8"),
)


class NetlinkUnavailable(PreserveError):
    """The TCM-USER family cannot be used here (the reason says why)."""


class MalformedEvent(ProtocolError):
    """A message on the family's group that is not an event this module understands."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the kernel about one TCMU device."""

    kind: Kind
    device: str  # DEVICE: the uio name, tcm-user/HBA/NAME/SUBTYPE/CONFIG
    tcmu: TcmuName | None  # what that name says (None: not a TCMU name that parses)
    minor: int  # MINOR: /dev/uio<minor>
    device_id: int  # DEVICE_ID: LIO's dev_index, what a reply names
    size: int | None = None  # RECONFIG: the new dev_size in bytes
    config: str | None = None  # RECONFIG: the new dev_config, as written
    writecache: bool | None = None  # RECONFIG: the new emulate_write_cache

    @property
    def uio(self) -> str:
        return f"uio{self.minor}"

    def describe(self) -> str:
        """For logs: ``RECONFIG of tcm-user/1/db0/preserve/db0 (uio0, id 3): dev_size 1024``."""
        what = ""
        if self.size is not None:
            what = f": dev_size {self.size}"
        elif self.config is not None:
            what = f": dev_config {self.config.rstrip()!r}"
        elif self.writecache is not None:
            what = f": emulate_write_cache {int(self.writecache)}"
        return f"{self.kind.name} of {self.device} ({self.uio}, id {self.device_id}){what}"


# -- the codec ---------------------------------------------------------------------------


@functools.cache
def message_class() -> Any:
    """pyroute2's generic netlink message with the family's attributes."""
    from pyroute2.netlink import genlmsg

    class TcmuMessage(genlmsg):  # type: ignore[misc,unused-ignore]  # pyroute2 is untyped
        nla_map = _ATTRS

    return TcmuMessage


def decode(msg: Any) -> Event:
    """The event a decoded pyroute2 message carries; :class:`MalformedEvent` if none."""
    try:
        error = msg["header"].get("error")
        if error is not None:
            raise MalformedEvent(f"undecodable message: {error}")
        cmd = msg.get("cmd")
        try:
            kind = Kind(cmd)
        except ValueError:
            raise MalformedEvent(f"command {cmd} is not an event") from None
        device = _attr(msg, kind, "DEVICE", str)
        minor = _attr(msg, kind, "MINOR", int)
        device_id = _attr(msg, kind, "DEVICE_ID", int)
        size = config = writecache = None
        if kind is Kind.RECONFIG:
            size = _attr(msg, kind, "DEV_SIZE", int, required=False)
            config = _attr(msg, kind, "DEV_CFG", str, required=False)
            writecache = _attr(msg, kind, "WRITECACHE", int, required=False)
            if size is None and config is None and writecache is None:
                raise MalformedEvent(
                    f"RECONFIG of {device} carries none of DEV_SIZE, DEV_CFG, WRITECACHE"
                )
        return Event(
            kind,
            device,
            TcmuName.parse(device),
            minor,
            device_id,
            size,
            config,
            None if writecache is None else bool(writecache),
        )
    except MalformedEvent:
        raise
    except Exception as err:  # whatever pyroute2 left in a message it half decoded
        raise MalformedEvent(f"undecodable message: {err!r}") from err


def _attr(msg: Any, kind: Kind, name: str, kind_of: type, required: bool = True) -> Any:
    value = msg.get_attr(f"TCMU_ATTR_{name}")
    if value is None:
        if required:
            raise MalformedEvent(f"{kind.name} event without {name}")
        return None
    if kind_of is str and isinstance(value, (bytes, bytearray)):
        raise MalformedEvent(f"{kind.name} event: {name} is not a string")
    if not isinstance(value, kind_of) or isinstance(value, bool):
        raise MalformedEvent(f"{kind.name} event: {name} is {value!r}")
    return value


def reply(event: Event, status: int) -> Any:
    """The ``*_DONE`` message answering ``event`` with ``status`` (0 or -errno)."""
    msg = message_class()()
    msg["cmd"] = int(event.kind.done)
    msg["version"] = VERSION
    msg["attrs"] = [
        ["TCMU_ATTR_CMD_STATUS", status],
        ["TCMU_ATTR_DEVICE_ID", event.device_id],
    ]
    return msg


def set_features(reply_mode: bool) -> Any:
    """``SET_FEATURES``: turn the module-wide reply mode on or off (see the docstring)."""
    msg = message_class()()
    msg["cmd"] = int(Cmd.SET_FEATURES)
    msg["version"] = VERSION
    msg["attrs"] = [["TCMU_ATTR_SUPP_KERN_CMD_REPLY", int(reply_mode)]]
    return msg


def encode(msg: Any, family_id: int, seq: int, *, ack: bool = True) -> bytes:
    """``msg`` as one netlink request to the kernel."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST

    msg["header"]["type"] = family_id
    msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def parser(family_id: int) -> Any:
    """A pyroute2 ``Marshal`` that splits a datagram into the family's messages (and
    the kernel's acknowledgements)."""
    from pyroute2.netlink.nlsocket import Marshal

    marshal = Marshal()
    marshal.msg_map[family_id] = message_class()
    return marshal


# -- the socket --------------------------------------------------------------------------


def open_socket(join: bool) -> tuple[socket.socket, int]:
    """A generic netlink socket, the family's id, and (``join``) membership of
    ``config``. Raises :class:`NetlinkUnavailable` when the family does not exist."""
    from pyroute2.netlink import NETLINK_GENERIC

    try:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC
        )
    except OSError as err:
        raise NetlinkUnavailable(f"no generic netlink socket: {err.strerror}") from err
    try:
        sock.bind((0, 0))
        family_id, groups = _resolve(sock)
        if join:
            if GROUP not in groups:
                raise NetlinkUnavailable(f"the {FAMILY} family has no {GROUP!r} group")
            from pyroute2.netlink import NETLINK_ADD_MEMBERSHIP, SOL_NETLINK

            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, groups[GROUP])
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, family_id


def _resolve(sock: socket.socket) -> tuple[int, dict[str, int]]:
    """The family's id and multicast groups (CTRL_CMD_GETFAMILY, as pyroute2's
    ``GenericNetlinkSocket.discovery`` asks it)."""
    from pyroute2.netlink import CTRL_CMD_GETFAMILY, GENL_ID_CTRL, NLM_F_REQUEST, ctrlmsg
    from pyroute2.netlink.nlsocket import Marshal

    request = ctrlmsg()
    request["cmd"] = CTRL_CMD_GETFAMILY
    request["version"] = 1
    request["attrs"].append(["CTRL_ATTR_FAMILY_NAME", FAMILY])
    request["header"]["type"] = GENL_ID_CTRL
    request["header"]["flags"] = NLM_F_REQUEST
    request["header"]["sequence_number"] = 1
    request.encode()
    sock.send(request.data)
    # The controller answers while our send runs (genl_rcv in the sender's context), so
    # the answer is queued by now; the wait only guards against the unexpected.
    if not select.select([sock], [], [], _RESOLVE_TIMEOUT)[0]:
        raise NetlinkUnavailable("the generic netlink controller did not answer")
    marshal = Marshal()
    marshal.msg_map[GENL_ID_CTRL] = ctrlmsg
    for msg in list(marshal.parse(sock.recv(_RECV))):
        error = msg["header"].get("error")
        if error is not None:
            if getattr(error, "code", None) == errno.ENOENT:
                raise NetlinkUnavailable(
                    f"the kernel has no {FAMILY} generic netlink family "
                    "(is target_core_user loaded?)"
                )
            raise NetlinkUnavailable(f"looking up {FAMILY} failed: {error}")
        family_id = msg.get_attr("CTRL_ATTR_FAMILY_ID")
        if family_id is not None:
            groups = {
                group.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): group.get_attr("CTRL_ATTR_MCAST_GRP_ID")
                for group in msg.get_attr("CTRL_ATTR_MCAST_GROUPS") or []
            }
            return int(family_id), groups
    raise NetlinkUnavailable(f"the controller's answer about {FAMILY} names no family id")


def set_reply_mode(enabled: bool) -> None:
    """Send ``SET_FEATURES`` and wait for the kernel's acknowledgement.

    The mode is module-wide. On, the kernel waits for an answer about every TCMU device
    whose ``nl_reply_supported`` is > 0 (tcmu-runner's included, and an ``enable``
    nobody answers never returns). Off, it waits for none: tcmu-runner's answers are
    then refused with a kernel log line, and it works as on kernels without the mode
    (its "degraded mode"). The daemon only ever turns it off (kernel_target.py)."""
    sock, family_id = open_socket(join=False)
    try:
        sock.setblocking(True)
        sock.settimeout(_RESOLVE_TIMEOUT)
        sock.send(encode(set_features(enabled), family_id, seq=1))
        for msg in list(parser(family_id).parse(sock.recv(_RECV))):
            error = msg["header"].get("error")
            if error is not None:
                raise NetlinkUnavailable(f"SET_FEATURES refused: {error}")
    finally:
        sock.close()


# -- the edge ----------------------------------------------------------------------------

Handler = Callable[[Event], int | None]  # an event -> the status to answer, or None
Opener = Callable[[], tuple[socket.socket, int]]


class TcmuNetlink:
    """The family's events on the running loop, each handed to ``on_event``; when it
    returns a status, that status is sent back as the event's ``*_DONE`` reply.

    ``on_event`` decides whether to answer (the kernel cannot be asked whether it
    waits; see the module docstring). Whatever it raises is logged and the event is not
    answered. The kernel's acknowledgements of the replies are logged at debug level
    (-ENODEV: nobody waited), other refusals as warnings."""

    def __init__(self, on_event: Handler, opener: Opener | None = None) -> None:
        self.on_event = on_event
        self._opener: Opener = opener or functools.partial(open_socket, True)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._marshal: Any = None
        self._family_id = 0
        self._seq = 0
        self._pending: OrderedDict[int, str] = OrderedDict()  # seq -> what it answered

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Join ``config`` and read it on the running loop; :class:`NetlinkUnavailable`
        when the family does not exist (target_core_user not loaded)."""
        sock, family_id = self._opener()
        self._sock, self._family_id = sock, family_id
        self._marshal = parser(family_id)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def _readable(self) -> None:
        for _ in range(_MAX_DATAGRAMS):
            sock = self._sock
            if sock is None:
                return
            try:
                data = sock.recv(_RECV, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno == errno.ENOBUFS:  # the socket overflowed: events were lost
                    _log.error(
                        "TCMU netlink events were lost (receive buffer full); a reply the "
                        "kernel waits for may be missing (target_core_user's block_netlink "
                        "and reset_netlink parameters end such a wait)"
                    )
                    continue
                _log.error("reading TCMU netlink events failed: %s; no longer listening", err)
                self.close()
                return
            self.handle(data)

    def handle(self, data: bytes) -> None:
        """One datagram: its events handed on and answered, acknowledgements logged."""
        try:
            messages = list(self._marshal.parse(data))
        except Exception as err:  # noqa: BLE001 - pyroute2 0.7 raises on some truncations
            _log.warning("dropped an undecodable TCMU netlink datagram: %r", err)
            return
        for msg in messages:
            try:
                self._message(msg)
            except Exception:  # noqa: BLE001 - never into the loop
                _log.exception("handling a TCMU netlink message failed")

    def _message(self, msg: Any) -> None:
        from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR

        msg_type = msg["header"].get("type")
        if msg_type == NLMSG_ERROR:
            self._acknowledged(msg["header"].get("sequence_number"), msg["header"].get("error"))
            return
        if msg_type == NLMSG_DONE:
            return
        if msg_type != self._family_id:
            _log.debug("ignored a netlink message of type %s", msg_type)
            return
        try:
            event = decode(msg)
        except MalformedEvent as err:
            _log.warning("ignored a TCMU netlink message: %s", err)
            return
        status = self.on_event(event)
        if status is not None:
            self._answer(event, status)

    def _answer(self, event: Event, status: int) -> None:
        sock = self._sock
        if sock is None:
            return
        self._seq = self._seq % 0xFFFFFFFF + 1
        what = f"{event.kind.done.name} {status} for {event.describe()}"
        try:
            sock.send(encode(reply(event, status), self._family_id, self._seq), socket.MSG_DONTWAIT)
        except OSError as err:
            _log.error("could not send %s: %s", what, err)
            return
        _log.debug("sent %s", what)
        self._pending[self._seq] = what
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

    def _acknowledged(self, seq: int | None, error: BaseException | None) -> None:
        what = self._pending.pop(seq, None) if seq is not None else None
        if what is None:
            return
        code = getattr(error, "code", None)
        if error is None:
            _log.debug("the kernel took %s", what)
        elif code == errno.ENODEV:
            _log.debug("the kernel was not waiting for %s", what)
        else:
            _log.warning("the kernel refused %s: %s", what, os.strerror(code) if code else error)
