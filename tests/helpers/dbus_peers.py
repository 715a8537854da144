"""The D-Bus peers of targetcli_preserve/tcmu/dbus_service.py, for its tests.

- :class:`BusDaemon`: a private ``dbus-daemon`` that behaves like the system bus (it
  denies owning names and sending method calls unless a policy allows it; the policies
  come from an ``<includedir>``: our own policy file and tcmu-runner's);
- :class:`FakeTcmuRunner`: tcmu-runner's D-Bus side as its main.c has it: it owns
  ``org.kernel.TCMUService1`` with flags NONE (queued while the name is taken),
  ``HandlerManager1.RegisterHandler(s subtype, s cfgstr_desc) -> (b, s)`` succeeds once
  the handler's bus name ``org.kernel.TCMUService1.HandlerManager1.SUBTYPE`` has an
  owner (and fails naming it otherwise), lists each registered handler at
  ``/org/kernel/TCMUService1/SUBTYPE`` through its object manager, forwards
  ``CheckConfig`` with the full config string to the handler's name, and forgets the
  handler when that name goes away;
- :func:`list_handlers` and :func:`check_config`: what stock targetcli does
  (ui_backstore.py: ``_user_backstores`` and ``UIUserBackedBackstore``).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import select
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_property, method

from targetcli_preserve.tcmu import dbus_service as ds
from targetcli_preserve.tcmu.dbus_service import bs, s  # D-Bus signatures (see there)

SERVICE = ds.SERVICE
ROOT_PATH = ds.ROOT_PATH
POLICY = Path(ds.__file__).parent.parent / "system" / "targetcli-preserve-dbus.conf"
TIMEOUT = 10.0  # seconds any wait here may take

# tcmu-runner's own policy (its tcmu-runner.conf, installed by Debian as
# /etc/dbus-1/system.d/tcmu-runner.conf), which the fake runner needs to own the name.
TCMU_RUNNER_POLICY = """<?xml version="1.0"?>
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
<policy user="root">
  <allow own="org.kernel.TCMUService1"/>
</policy>
<policy context="default">
  <allow send_destination="org.kernel.TCMUService1"/>
  <allow own_prefix="org.kernel.TCMUService1.HandlerManager1"/>
  <allow send_interface="org.kernel.TCMUService1"/>
</policy>
</busconfig>
"""

# The system bus's defaults (Debian's /usr/share/dbus-1/system.conf), then the policies.
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <includedir>{includedir}</includedir>
</busconfig>
"""


class BusDaemon:
    """A private dbus-daemon like the system bus; ``policies``: file name -> text."""

    def __init__(self, directory: Path, policies: dict[str, str]) -> None:
        self.directory = directory
        self.socket = directory / "system_bus_socket"
        self.address = f"unix:path={self.socket}"
        includedir = directory / "system.d"
        includedir.mkdir(exist_ok=True)
        for name, text in policies.items():
            (includedir / name).write_text(_as_this_user(text))
        self.config = directory / "bus.conf"
        self.config.write_text(_BUS_CONFIG.format(socket=self.socket, includedir=includedir))
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        dbus_daemon = shutil.which("dbus-daemon")
        assert dbus_daemon is not None
        self.socket.unlink(missing_ok=True)
        # it prints its address once it listens (the socket file comes before that)
        self.process = subprocess.Popen(
            [dbus_daemon, f"--config-file={self.config}", "--nofork", "--nopidfile",
             "--print-address"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stderr is not None
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("unix:"):
            self.stop()
            raise RuntimeError(f"dbus-daemon did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
            self.process = None


def _as_this_user(policy: str) -> str:
    """Root's rights for whoever runs the tests (root in CI: unchanged)."""
    if os.geteuid() == 0:
        return policy
    return policy.replace('user="root"', f'user="{pwd.getpwuid(os.geteuid()).pw_name}"')


async def connect(address: str) -> MessageBus:
    bus = MessageBus(bus_address=address, bus_type=BusType.SYSTEM)
    return await asyncio.wait_for(bus.connect(), TIMEOUT)


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
) -> list[Any]:
    """A method call's reply body; a D-Bus error is raised as RuntimeError(name, text)."""
    msg = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )
    reply = await asyncio.wait_for(bus.call(msg), TIMEOUT)
    if reply.message_type is MessageType.ERROR:
        raise RuntimeError(reply.error_name, *reply.body)
    return list(reply.body)


async def bus_call(bus: MessageBus, member: str, signature: str = "", *args: Any) -> Any:
    body = await call(
        bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        member, signature, list(args),
    )  # fmt: skip
    return body[0] if body else None


async def until(what: Callable[[], bool], timeout: float = TIMEOUT, why: str = "") -> None:
    """Wait (bounded) until ``what()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not what():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {why or what}")
        await asyncio.sleep(0.02)


# -- targetcli ---------------------------------------------------------------------------


async def list_handlers(bus: MessageBus) -> dict[str, dict[str, Any]]:
    """targetcli's ``_user_backstores``: subtype -> the object's interfaces and properties
    (from GetManagedObjects on org.kernel.TCMUService1)."""
    (objects,) = await call(
        bus, SERVICE, ROOT_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
    )
    handlers: dict[str, dict[str, Any]] = {}
    for path, interfaces in objects.items():
        subtype = path[path.rfind("/") + 1 :]
        assert subtype not in handlers, f"{subtype} is listed twice: {sorted(objects)}"
        handlers[subtype] = {
            name: {key: value.value for key, value in properties.items()}
            for name, properties in interfaces.items()
        }
    return handlers


async def config_desc(bus: MessageBus, subtype: str) -> str:
    """The ConfigDesc property, read from the object itself (a proxy's view)."""
    (value,) = await call(
        bus, SERVICE, f"{ROOT_PATH}/{subtype}", "org.freedesktop.DBus.Properties", "Get",
        "ss", [SERVICE, "ConfigDesc"],
    )  # fmt: skip
    return str(value.value)


async def check_config(bus: MessageBus, subtype: str, cfgstring: str) -> tuple[bool, str]:
    """``create``'s check: CheckConfig('SUBTYPE/CFGSTRING') on the handler's object."""
    ok, reason = await call(
        bus, SERVICE, f"{ROOT_PATH}/{subtype}", SERVICE, "CheckConfig", "s",
        [f"{subtype}/{cfgstring}"],
    )  # fmt: skip
    return ok, reason


# -- tcmu-runner -------------------------------------------------------------------------


class _Forwarding(ServiceInterface):
    """tcmu-runner's object for a D-Bus handler (main.c: on_dbus_check_config)."""

    def __init__(self, runner: FakeTcmuRunner, subtype: str, description: str) -> None:
        super().__init__(SERVICE)
        self.runner = runner
        self.subtype = subtype
        self.description = description

    @method()
    async def CheckConfig(self, configstr: s) -> bs:
        self.runner.forwarded.append(configstr)
        try:
            ok, reason = await call(
                self.runner.bus, ds.handler_bus_name(self.subtype),
                ds.handler_path(self.subtype), SERVICE, "CheckConfig", "s", [configstr],
            )  # fmt: skip
        except RuntimeError as e:
            return [False, str(e)]
        return [ok, reason]

    @dbus_property(access=PropertyAccess.READ)
    def ConfigDesc(self) -> s:
        return self.description


class _Manager(ServiceInterface):
    def __init__(self, runner: FakeTcmuRunner) -> None:
        super().__init__(ds.MANAGER_INTERFACE)
        self.runner = runner

    @method()
    async def RegisterHandler(self, subtype: s, cfgstr_desc: s) -> bs:
        return await self.runner.register(subtype, cfgstr_desc)


class FakeTcmuRunner:
    def __init__(self, address: str) -> None:
        self.address = address
        self.handlers: dict[str, str] = {}  # registered subtype -> its description
        self.registrations = 0
        self.forwarded: list[str] = []  # config strings forwarded to handlers
        self.bus: MessageBus
        self.owns = False
        self.refuse = 0  # refuse this many RegisterHandler calls first

    async def start(self) -> FakeTcmuRunner:
        self.bus = await connect(self.address)
        self.bus.add_message_handler(self._message)
        self.bus.export(ds.MANAGER_PATH, _Manager(self))
        await bus_call(
            self.bus, "AddMatch", "s",
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'",
        )  # fmt: skip
        reply = await bus_call(self.bus, "RequestName", "su", SERVICE, 0)  # flags NONE
        self.owns = reply == 1
        return self

    @property
    def unique_name(self) -> str:
        return str(self.bus.unique_name)

    async def stop(self) -> None:
        """Like tcmu-runner exiting: its connection (and so the name) goes."""
        self.bus.disconnect()
        await asyncio.wait_for(self.bus.wait_for_disconnect(), TIMEOUT)

    async def register(self, subtype: str, description: str) -> list[bool | str]:
        if self.refuse > 0:
            self.refuse -= 1
            return [False, "refused by the test"]
        owner = None
        try:
            owner = await bus_call(self.bus, "GetNameOwner", "s", ds.handler_bus_name(subtype))
        except RuntimeError:
            pass
        if owner is None:
            return [False, f"Cannot find handler bus name: {ds.handler_bus_name(subtype)}"]
        self.handlers[subtype] = description
        self.registrations += 1
        self.bus.export(f"{ROOT_PATH}/{subtype}", _Forwarding(self, subtype, description))
        return [True, "succeeded"]

    def _message(self, msg: Message) -> Message | None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            name, _old, new = msg.body
            if name == SERVICE:
                self.owns = new == self.bus.unique_name
            for subtype in list(self.handlers):
                if name == ds.handler_bus_name(subtype) and not new:  # on_handler_vanished
                    del self.handlers[subtype]
                    self.bus.unexport(f"{ROOT_PATH}/{subtype}")
            return None
        if (
            msg.message_type is MessageType.METHOD_CALL
            and msg.path == ROOT_PATH
            and msg.member == "GetManagedObjects"
        ):
            objects = {
                f"{ROOT_PATH}/{subtype}": {SERVICE: {"ConfigDesc": Variant("s", description)}}
                for subtype, description in self.handlers.items()
            }
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [objects])
        return None
