"""Making the ``user:SUBTYPE`` handler known on the system D-Bus (dbus-fast), so that
stock targetcli lists ``/backstores/user:SUBTYPE`` and checks its config strings.

Stock targetcli-fb finds user backstore handlers only over D-Bus: it calls
``org.freedesktop.DBus.ObjectManager.GetManagedObjects`` on bus name
``org.kernel.TCMUService1``, path ``/org/kernel/TCMUService1``; every object there is a
handler (the last path component is its subtype) with interface
``org.kernel.TCMUService1``: property ``ConfigDesc`` (s, what ``help create`` prints)
and method ``CheckConfig(s) -> (b, s)``, called with the full ``SUBTYPE/CFGSTRING``
before ``create`` (a false answer makes targetcli refuse: ``cfgstring invalid: REASON``).

tcmu-runner normally owns that name (``g_bus_own_name``, flags NONE: when the name is
taken it waits in the queue). :class:`HandlerService` works in one of two modes, chosen
again whenever the name changes hands:

- **registered** (tcmu-runner owns the name): we own
  ``org.kernel.TCMUService1.HandlerManager1.SUBTYPE``, serve ``CheckConfig`` at
  ``/org/kernel/TCMUService1/HandlerManager1/SUBTYPE``, and call tcmu-runner's
  ``org.kernel.TCMUService1.HandlerManager1.RegisterHandler(subtype, cfgstr_desc) ->
  (b, s)`` on ``/org/kernel/TCMUService1/HandlerManager1``. tcmu-runner then lists
  ``/org/kernel/TCMUService1/SUBTYPE`` itself and forwards CheckConfig (the full config
  string) to our name. There is no UnregisterHandler: it forgets us when our name goes
  away, and a restarted tcmu-runner forgets everybody, so we register with every new
  owner of ``org.kernel.TCMUService1`` (NameOwnerChanged) and then call ``on_runner``.
- **stand-in** (no tcmu-runner): we own ``org.kernel.TCMUService1`` ourselves and answer
  GetManagedObjects on ``/org/kernel/TCMUService1`` with exactly one object,
  ``/org/kernel/TCMUService1/SUBTYPE`` (ConfigDesc and CheckConfig), plus
  ``/org/kernel/TCMUService1/HandlerManager1`` whose RegisterHandler says no (other
  handlers need the real tcmu-runner). A tcmu-runner that starts later queues for the
  name: while standing in we look at the queue (``ListQueuedOwners``) every
  :data:`QUEUE_POLL` seconds and, when someone waits, release the name to it and
  register with it.

Debian's tcmu-runner is also D-Bus activated (system-services/org.kernel.TCMUService1
.service, and its systemd unit is Type=dbus on that name): a call to the name while
nobody owns it starts tcmu-runner, and a tcmu-runner started while we stand in gets the
name from us within a poll or two, well inside systemd's start timeout.

The mode is reconciled from what the bus says now (who owns the name, who queues for
it), never from a remembered sequence of events, so a missed or reordered signal costs
at most one poll. Trouble with the bus (no bus, dbus-daemon restarted, a call that
times out, a refused registration) never reaches the caller after :meth:`start`: it is
logged and tried again after a bounded back-off, with mode ``off`` meanwhile. Every
D-Bus call has a timeout (:data:`CALL_TIMEOUT`).

The system bus lets a process own these names only if a policy allows it:
``targetcli_preserve/system/targetcli-preserve-dbus.conf`` (installed into
``/etc/dbus-1/system.d/``) lets root own both.
"""

# dbus-fast reads each D-Bus signature from the text of an annotation; PEP 563 keeps the
# annotations as text (dbus-fast 1.84 and 5.x both accept that). Do not remove.
from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType, NameFlag, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_property, method

from .._errors import PreserveError

log = logging.getLogger(__name__)

SERVICE = "org.kernel.TCMUService1"  # tcmu-runner's bus name, its path's and interface's
ROOT_PATH = "/org/kernel/TCMUService1"
MANAGER_INTERFACE = "org.kernel.TCMUService1.HandlerManager1"
MANAGER_PATH = ROOT_PATH + "/HandlerManager1"
_BUS = "org.freedesktop.DBus"
_BUS_PATH = "/org/freedesktop/DBus"
_OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

CALL_TIMEOUT = 10.0  # seconds any D-Bus call (or the connection) may take
QUEUE_POLL = 2.0  # seconds between looks at the name's queue while standing in
RECHECK = 30.0  # seconds between reconciliations when nothing happens (a safety net)
BACKOFF_MIN = 0.5  # seconds before the first retry after bus trouble
BACKOFF_MAX = 30.0  # ... doubling up to this

# The D-Bus signatures, as names mypy can check: dbus-fast reads the annotation's text
# ("s", "bs"), mypy the type it names. A (b, s) reply is a list for dbus-fast 1.84.
s = str
bs = list[bool | str]

Check = Callable[[str], str | None]  # full "subtype/cfg" -> None if OK, else the reason


class Mode(enum.StrEnum):
    """How the handler is known on the bus (the module docstring says what each means)."""

    REGISTERED = "registered"
    STAND_IN = "stand-in"
    OFF = "off"


class DBusUnavailable(PreserveError):
    """The handler cannot be made known on D-Bus: no bus, or its policy forbids it."""


class _CallFailed(Exception):
    """A D-Bus call answered with an error (name, text)."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name


def _denied(e: _CallFailed) -> bool:
    return e.name == "org.freedesktop.DBus.Error.AccessDenied"


def handler_bus_name(subtype: str) -> str:
    """The bus name an external handler owns for tcmu-runner to find it."""
    return f"{MANAGER_INTERFACE}.{subtype}"


def handler_path(subtype: str) -> str:
    """Where the external handler serves CheckConfig (tcmu-runner calls it there)."""
    return f"{MANAGER_PATH}/{subtype}"


class _Handler(ServiceInterface):
    """``org.kernel.TCMUService1`` of one handler: ConfigDesc and CheckConfig."""

    def __init__(self, description: str, check: Check) -> None:
        super().__init__(SERVICE)
        self._description = description
        self._check = check

    @method()
    def CheckConfig(self, config: s) -> bs:
        try:
            reason = self._check(config)
        except Exception as e:  # a bug in the check must not leave targetcli waiting
            log.exception("checking the config string %r failed", config)
            reason = f"internal error while checking the config string: {e}"
        if reason is None:
            return [True, "success"]  # what tcmu-runner answers for its own handlers
        return [False, reason]

    @dbus_property(access=PropertyAccess.READ)
    def ConfigDesc(self) -> s:
        return self._description


class _RefusingManager(ServiceInterface):
    """The stand-in's HandlerManager1: other handlers need the real tcmu-runner."""

    def __init__(self, subtype: str) -> None:
        super().__init__(MANAGER_INTERFACE)
        self._refusal = (
            f"tcmu-runner is not running; targetcli-preserved only stands in for user:{subtype}"
        )

    @method()
    def RegisterHandler(self, subtype: s, cfgstr_desc: s) -> bs:
        return [False, self._refusal]


class HandlerService:
    """Keeps the handler ``user:SUBTYPE`` known on the system bus (see the module doc).

    ``check`` gets the full ``SUBTYPE/CFGSTRING`` and returns None when it is fine, else
    the reason; ``on_runner`` is called after each registration with a tcmu-runner.
    """

    def __init__(
        self,
        subtype: str,
        description: str,
        check: Check,
        on_runner: Callable[[], None] | None = None,
        bus_address: str | None = None,
    ) -> None:
        self.subtype = subtype
        self.description = description
        self._check = check
        self._on_runner = on_runner
        self._bus_address = bus_address
        self._bus: MessageBus | None = None
        self._mode = Mode.OFF
        self._registered_with: str | None = None  # the tcmu-runner's unique name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disconnect_watch: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def mode(self) -> Mode:
        """``registered``, ``stand-in`` or ``off``."""
        return self._mode

    @property
    def where(self) -> str:
        return self._bus_address or "the system bus"

    async def start(self) -> None:
        """Connect and settle into a mode; then keep it right in the background.

        Raises :class:`DBusUnavailable` when there is no bus or its policy does not let
        this process own the handler's names. Any other trouble (a tcmu-runner that
        refuses or does not answer) is logged and tried again in the background.
        """
        if self._task is not None:
            raise RuntimeError("HandlerService started twice")
        try:
            await self._connect()
        except _CallFailed as e:
            await self._drop()
            raise self._unavailable(e) from e
        except Exception as e:  # no bus, refused, unauthenticated, timed out
            await self._drop()
            raise DBusUnavailable(
                f"no D-Bus at {self.where}: {e or type(e).__name__}; stock targetcli "
                f"will not list user:{self.subtype}"
            ) from e
        except BaseException:  # cancelled
            await self._drop()
            raise
        try:
            await self._reconcile()
        except _CallFailed as e:
            if _denied(e):
                await self._drop()
                raise self._unavailable(e) from e
            log.warning("D-Bus (%s) for user:%s: %s; trying again", self.where, self.subtype, e)
        except Exception as e:  # noqa: BLE001 - logged; the background task tries again
            log.warning("D-Bus (%s) for user:%s: %r; trying again", self.where, self.subtype, e)
        except BaseException:  # cancelled
            await self._drop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"dbus user:{self.subtype}")

    def _unavailable(self, e: _CallFailed) -> DBusUnavailable:
        if _denied(e):
            return DBusUnavailable(
                f"D-Bus ({self.where}) does not let this process own the names of "
                f"user:{self.subtype} ({e}); install targetcli-preserve-dbus.conf "
                f"into /etc/dbus-1/system.d/ and run as root"
            )
        return DBusUnavailable(f"D-Bus ({self.where}): {e}")

    async def close(self) -> None:
        """Leave the bus: tcmu-runner forgets the handler, a stand-in name is freed."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop()

    # -- the connection ---------------------------------------------------------------

    async def _connect(self) -> None:
        bus = MessageBus(bus_address=self._bus_address, bus_type=BusType.SYSTEM)
        try:
            await asyncio.wait_for(bus.connect(), CALL_TIMEOUT)
        except BaseException:
            bus.disconnect()
            raise
        self._bus = bus
        self._registered_with = None
        bus.add_message_handler(self._message)
        bus.export(handler_path(self.subtype), _Handler(self.description, self._check))
        bus.export(self._standin_path, _Handler(self.description, self._check))
        bus.export(MANAGER_PATH, _RefusingManager(self.subtype))
        await self._call(
            _BUS,
            _BUS_PATH,
            _BUS,
            "AddMatch",
            "s",
            [
                (
                    f"type='signal',sender='{_BUS}',interface='{_BUS}',"
                    f"member='NameOwnerChanged',arg0='{SERVICE}'"
                )
            ],
        )
        reply = await self._call(
            _BUS,
            _BUS_PATH,
            _BUS,
            "RequestName",
            "su",
            [handler_bus_name(self.subtype), NameFlag.DO_NOT_QUEUE.value],
        )
        if reply[0] not in (1, 4):  # PRIMARY_OWNER, ALREADY_OWNER
            raise _CallFailed(
                "NameTaken",
                f"another process owns {handler_bus_name(self.subtype)} "
                f"(another daemon serving user:{self.subtype}?)",
            )
        self._disconnect_watch = asyncio.create_task(self._watch_disconnect(bus))

    async def _watch_disconnect(self, bus: MessageBus) -> None:
        # (dbus-fast leaves wait_for_disconnect unannotated: give it its type here)
        wait_for_disconnect: Callable[[], Awaitable[object]] = bus.wait_for_disconnect
        with contextlib.suppress(Exception):
            await wait_for_disconnect()
        if bus is self._bus and not self._closed:
            log.warning("D-Bus (%s): the connection was lost", self.where)
            self._wake.set()

    async def _drop(self) -> None:
        bus, self._bus = self._bus, None
        self._mode = Mode.OFF
        self._registered_with = None
        watch, self._disconnect_watch = self._disconnect_watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        if bus is not None and bus.connected:
            bus.disconnect()  # our names go with the connection

    @property
    def _standin_path(self) -> str:
        return f"{ROOT_PATH}/{self.subtype}"

    def _message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.body and msg.body[0] == SERVICE:
                self._wake.set()
            return None
        if (
            msg.message_type is MessageType.METHOD_CALL
            and msg.path == ROOT_PATH
            and msg.interface == _OBJECT_MANAGER
            and msg.member == "GetManagedObjects"
        ):
            # Only the stand-in object, like tcmu-runner's object manager: dbus-fast's
            # own answer would list the HandlerManager1 objects too (a second handler).
            objects = {
                self._standin_path: {SERVICE: {"ConfigDesc": Variant("s", self.description)}}
            }
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [objects])
        return None

    async def _call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> list[Any]:
        bus = self._bus
        if bus is None or not bus.connected:
            raise ConnectionError("not connected to D-Bus")
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        # The reply, the timeout or the connection's end, whichever comes first (dbus-fast
        # 1.84 can leave a call made as the connection drops waiting for ever).
        call = asyncio.ensure_future(bus.call(msg))
        ends = {call} if self._disconnect_watch is None else {call, self._disconnect_watch}
        await asyncio.wait(ends, timeout=CALL_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not call.done():
            call.cancel()
            if self._disconnect_watch is not None and self._disconnect_watch.done():
                raise ConnectionError(f"the connection was lost during {member}")
            raise TimeoutError(f"no answer to {member} within {CALL_TIMEOUT} s")
        reply = call.result()
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise _CallFailed(reply.error_name or "error", text)
        return list(reply.body)

    async def _owner(self) -> str | None:
        try:
            return str((await self._call(_BUS, _BUS_PATH, _BUS, "GetNameOwner", "s", [SERVICE]))[0])
        except _CallFailed as e:
            if e.name == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return None
            raise

    # -- the mode ---------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Bring the mode in line with who owns (and who waits for) the service name."""
        bus = self._bus
        assert bus is not None
        me = bus.unique_name
        owner = await self._owner()
        if owner == me:
            queued = await self._call(_BUS, _BUS_PATH, _BUS, "ListQueuedOwners", "s", [SERVICE])
            if all(name == me for name in queued[0]):
                self._mode = Mode.STAND_IN
                return
            log.info("tcmu-runner wants %s: handing it over", SERVICE)
            self._mode = Mode.OFF
            await self._call(_BUS, _BUS_PATH, _BUS, "ReleaseName", "s", [SERVICE])
            owner = await self._owner()
        if owner is None:
            reply = await self._call(
                _BUS, _BUS_PATH, _BUS, "RequestName", "su", [SERVICE, NameFlag.DO_NOT_QUEUE.value]
            )
            if reply[0] in (1, 4):  # PRIMARY_OWNER, ALREADY_OWNER
                if self._mode is not Mode.STAND_IN:
                    log.info("no tcmu-runner: standing in as %s for user:%s", SERVICE, self.subtype)
                self._mode = Mode.STAND_IN
                self._registered_with = None
                return
            owner = await self._owner()  # EXISTS: somebody was quicker
            if owner is None:
                raise ConnectionError(f"{SERVICE} has no owner, but could not be owned")
        if owner == me:
            self._mode = Mode.STAND_IN
            return
        if self._registered_with == owner:
            self._mode = Mode.REGISTERED
            return
        self._mode = Mode.OFF
        self._registered_with = None
        ok, reason = await self._call(
            owner,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "RegisterHandler",
            "ss",
            [self.subtype, self.description],
        )
        if not ok:
            raise _CallFailed("RegisterHandler", f"tcmu-runner ({owner}) refused: {reason}")
        log.info("registered user:%s with tcmu-runner (%s)", self.subtype, owner)
        self._registered_with = owner
        self._mode = Mode.REGISTERED
        if self._on_runner is not None:
            try:
                self._on_runner()
            except Exception:
                log.exception("on_runner failed after registering with tcmu-runner")

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._closed:
            try:
                if self._bus is None or not self._bus.connected:
                    await self._drop()
                    await self._connect()
                    log.info("D-Bus (%s): connected again", self.where)
                self._wake.clear()
                await self._reconcile()
                backoff = BACKOFF_MIN
                wait = QUEUE_POLL if self._mode is Mode.STAND_IN else RECHECK
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - every bus trouble: logged, tried again
                log.warning(
                    "D-Bus (%s) for user:%s: %s; trying again in %.1f s",
                    self.where,
                    self.subtype,
                    e or type(e).__name__,
                    backoff,
                )
                if self._bus is None or not self._bus.connected:
                    await self._drop()
                self._mode = Mode.OFF if self._bus is None else self._mode
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
