"""The server's _Driver: runs a suspended SCSI awaitable to its end like a Task would."""

from __future__ import annotations

import asyncio
import types

from targetcli_preserve.iscsi.server import _Driver


class FakeProto:
    def __init__(self, loop) -> None:
        self.loop = loop
        self._running: set = set()
        self.finished: list = []

    def _finished(self, itt, response, exc) -> None:
        self.finished.append((itt, response, exc))


class Other:
    """A nested awaitable that suspends with a bare yield."""

    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return "other"


@types.coroutine
def bare_yield():
    yield


async def command(fut: asyncio.Future, fail: bool = False):
    value = await fut
    await bare_yield()
    value += await Other()
    if fail:
        raise RuntimeError("boom")
    return value


async def _drive(coro, proto):
    it = coro.__await__()
    driver = _Driver(proto, 7, it)
    proto._running.add(driver.done)
    driver.wait_on(it.send(None))
    return driver


async def test_driver_follows_futures_bare_yields_and_nested_awaitables():
    loop = asyncio.get_running_loop()
    proto = FakeProto(loop)
    fut = loop.create_future()
    driver = await _drive(command(fut), proto)
    assert proto.finished == []
    fut.set_result("x-")
    await asyncio.wait_for(driver.done, 5)
    assert proto.finished == [(7, "x-other", None)]
    assert proto._running == set()


async def test_driver_reports_exceptions_of_the_command_and_of_its_futures():
    loop = asyncio.get_running_loop()
    proto = FakeProto(loop)
    fut = loop.create_future()
    driver = await _drive(command(fut, fail=True), proto)
    fut.set_result("x-")
    await asyncio.wait_for(driver.done, 5)
    ((itt, response, exc),) = proto.finished
    assert itt == 7 and response is None and isinstance(exc, RuntimeError)

    proto = FakeProto(loop)
    fut = loop.create_future()
    driver = await _drive(command(fut), proto)
    fut.set_exception(ValueError("lost"))
    await asyncio.wait_for(driver.done, 5)
    assert isinstance(proto.finished[0][2], ValueError)
