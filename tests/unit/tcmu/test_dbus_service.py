"""The handler's D-Bus service (tcmu/dbus_service.py) against a private dbus-daemon that
behaves like the system bus, with our own policy file and tcmu-runner's (so the policy
is tested too), a fake tcmu-runner and targetcli's calls (helpers/dbus_peers.py).

The real tcmu-runner's side of the contract, from its main.c: RegisterHandler(s
subtype, s cfgstr_desc) -> (b, s) on /org/kernel/TCMUService1/HandlerManager1,
interface org.kernel.TCMUService1.HandlerManager1, answered once the handler's name
org.kernel.TCMUService1.HandlerManager1.SUBTYPE has an owner; CheckConfig(s) -> (b, s)
forwarded unchanged (the full SUBTYPE/CFGSTRING) to that name at
/org/kernel/TCMUService1/HandlerManager1/SUBTYPE; the handler forgotten when its name
vanishes; the service name owned with flags NONE (queued while taken).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.dbus_peers import (
    POLICY,
    SERVICE,
    TCMU_RUNNER_POLICY,
    BusDaemon,
    FakeTcmuRunner,
    bus_call,
    call,
    check_config,
    config_desc,
    connect,
    list_handlers,
    until,
)
from helpers.skips import need

from targetcli_preserve._errors import PreserveError
from targetcli_preserve.tcmu import dbus_service
from targetcli_preserve.tcmu.dbus_service import DBusUnavailable, HandlerService

DESCRIPTION = "preserve/LUN: a LUN of targetcli-preserved"


def check(config: str) -> str | None:
    if config == "preserve/good":
        return None
    return f"no such LUN: {config}"


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries and polls on a test's time scale (the waits below stay bounded)."""
    monkeypatch.setattr(dbus_service, "QUEUE_POLL", 0.2)
    monkeypatch.setattr(dbus_service, "BACKOFF_MIN", 0.05)
    monkeypatch.setattr(dbus_service, "BACKOFF_MAX", 0.5)
    monkeypatch.setattr(dbus_service, "CALL_TIMEOUT", 5.0)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[BusDaemon]:
    need("dbus-daemon")
    daemon = BusDaemon(
        tmp_path,
        {
            "targetcli-preserve-dbus.conf": POLICY.read_text(),
            "tcmu-runner.conf": TCMU_RUNNER_POLICY,
        },
    )
    daemon.start()
    yield daemon
    daemon.stop()


class Service:
    def __init__(self, address: str) -> None:
        self.runs = 0
        self.service = HandlerService("preserve", DESCRIPTION, check, self.on_runner, address)

    def on_runner(self) -> None:
        self.runs += 1


@pytest.fixture
async def service(bus: BusDaemon) -> AsyncIterator[Service]:
    s = Service(bus.address)
    yield s
    await asyncio.wait_for(s.service.close(), 10)


@pytest.fixture
async def runners(bus: BusDaemon) -> AsyncIterator[list[FakeTcmuRunner]]:
    started: list[FakeTcmuRunner] = []
    yield started
    for runner in started:
        if runner.bus.connected:
            await runner.stop()


async def start_runner(bus: BusDaemon, runners: list[FakeTcmuRunner]) -> FakeTcmuRunner:
    runner = await FakeTcmuRunner(bus.address).start()
    runners.append(runner)
    return runner


async def targetcli_sees(address: str) -> dict[str, dict[str, object]]:
    client = await connect(address)
    try:
        return await list_handlers(client)
    finally:
        client.disconnect()


async def assert_targetcli_works(address: str) -> None:
    """What `ls /backstores`, `help create` and `create` need from the bus."""
    client = await connect(address)
    try:
        handlers = await list_handlers(client)
        assert list(handlers) == ["preserve"]
        assert handlers["preserve"][SERVICE] == {"ConfigDesc": DESCRIPTION}
        assert await config_desc(client, "preserve") == DESCRIPTION
        assert await check_config(client, "preserve", "bad") == (
            False,
            "no such LUN: preserve/bad",
        )
        ok, _ = await check_config(client, "preserve", "good")
        assert ok is True
    finally:
        client.disconnect()


async def test_stand_in_lists_one_handler_and_checks_configs(service: Service, bus: BusDaemon):
    await service.service.start()
    assert service.service.mode == "stand-in"
    await assert_targetcli_works(bus.address)
    assert service.runs == 0
    # other handlers need the real tcmu-runner
    client = await connect(bus.address)
    try:
        ok, reason = await call(
            client, SERVICE, dbus_service.MANAGER_PATH, dbus_service.MANAGER_INTERFACE,
            "RegisterHandler", "ss", ["other", "x"],
        )  # fmt: skip
    finally:
        client.disconnect()
    assert ok is False
    assert reason == (
        "tcmu-runner is not running; targetcli-preserved only stands in for user:preserve"
    )


async def test_registered_with_a_running_tcmu_runner(
    service: Service, bus: BusDaemon, runners: list[FakeTcmuRunner]
):
    runner = await start_runner(bus, runners)
    assert runner.owns
    await service.service.start()
    assert service.service.mode == "registered"
    assert runner.handlers == {"preserve": DESCRIPTION}
    assert service.runs == 1
    await assert_targetcli_works(bus.address)  # through the runner, forwarded to us
    assert runner.forwarded == ["preserve/bad", "preserve/good"]


async def test_runner_restart_registers_again(
    service: Service, bus: BusDaemon, runners: list[FakeTcmuRunner]
):
    first = await start_runner(bus, runners)
    await service.service.start()
    assert service.runs == 1
    await first.stop()
    second = await start_runner(bus, runners)
    # either at once or after a short stand-in that the queued runner ends
    await until(lambda: "preserve" in second.handlers, why="registered with the new runner")
    await until(lambda: service.runs == 2 and service.service.mode == "registered")
    assert second.owns and second.registrations == 1
    await assert_targetcli_works(bus.address)


async def test_runner_starting_while_we_stand_in_gets_the_name(
    service: Service, bus: BusDaemon, runners: list[FakeTcmuRunner]
):
    await service.service.start()
    assert service.service.mode == "stand-in"
    runner = await start_runner(bus, runners)
    assert not runner.owns  # queued behind us (flags NONE)
    await until(lambda: runner.owns, why="we hand the name over")
    await until(lambda: service.service.mode == "registered" and service.runs == 1)
    assert runner.handlers == {"preserve": DESCRIPTION}
    await assert_targetcli_works(bus.address)


async def test_runner_stopping_we_stand_in_again(
    service: Service, bus: BusDaemon, runners: list[FakeTcmuRunner]
):
    runner = await start_runner(bus, runners)
    await service.service.start()
    assert service.service.mode == "registered"
    await runner.stop()
    await until(lambda: service.service.mode == "stand-in", why="standing in again")
    await assert_targetcli_works(bus.address)
    assert service.runs == 1


async def test_a_refused_registration_is_tried_again(
    service: Service, bus: BusDaemon, runners: list[FakeTcmuRunner], caplog
):
    runner = await start_runner(bus, runners)
    runner.refuse = 2
    await service.service.start()  # no error: the background task tries again
    await until(lambda: service.service.mode == "registered", why="registered after retries")
    assert runner.refuse == 0 and runner.registrations == 1 and service.runs == 1
    assert "refused by the test" in caplog.text
    await assert_targetcli_works(bus.address)


async def test_a_second_service_for_the_subtype_is_refused(service: Service, bus: BusDaemon):
    await service.service.start()
    second = HandlerService("preserve", DESCRIPTION, check, None, bus.address)
    with pytest.raises(DBusUnavailable, match="another process owns"):
        await second.start()
    assert second.mode == "off" and service.service.mode == "stand-in"


async def test_bus_restart_is_survived(service: Service, bus: BusDaemon, caplog):
    await service.service.start()
    assert service.service.mode == "stand-in"
    bus.stop()
    await until(lambda: service.service.mode == "off", why="the lost connection is noticed")
    bus.start()
    await until(lambda: service.service.mode == "stand-in", why="back on the new bus")
    await assert_targetcli_works(bus.address)
    assert "the connection was lost" in caplog.text


async def test_closing_frees_the_names(service: Service, bus: BusDaemon):
    await service.service.start()
    await service.service.close()
    assert service.service.mode == "off"
    client = await connect(bus.address)
    try:
        names = (SERVICE, "org.kernel.TCMUService1.HandlerManager1.preserve")
        for _ in range(250):  # the bus sees the closed connection soon (bounded: 5 s)
            owned = [name for name in names if await bus_call(client, "NameHasOwner", "s", name)]
            if not owned:
                break
            await asyncio.sleep(0.02)
        assert owned == []
    finally:
        client.disconnect()


async def test_no_bus_is_a_clear_error(tmp_path: Path):
    service = HandlerService("preserve", DESCRIPTION, check, None, f"unix:path={tmp_path}/none")
    with pytest.raises(DBusUnavailable, match="no D-Bus at unix:path=") as raised:
        await service.start()
    assert isinstance(raised.value, PreserveError)
    assert service.mode == "off"


async def test_a_bus_without_our_policy_refuses_clearly(tmp_path: Path):
    need("dbus-daemon")
    daemon = BusDaemon(tmp_path, {})
    daemon.start()
    try:
        service = HandlerService("preserve", DESCRIPTION, check, None, daemon.address)
        with pytest.raises(DBusUnavailable, match="does not let this process own"):
            await service.start()
        assert service.mode == "off"
    finally:
        daemon.stop()
