"""driving.py: runs a command's awaitable to its end like a Task would, without one."""

from __future__ import annotations

import asyncio
import types

import pytest

from targetcli_preserve.driving import Driver, drive


class Other:
    """A nested awaitable that suspends with a bare yield."""

    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return "other"


class Odd:
    """An awaitable that yields something that is neither a future nor None: a Task
    turns that into a RuntimeError (the Driver hands it to one)."""

    def __await__(self):
        yield "not a future"
        return "never"


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


async def immediate(fail: bool = False):
    if fail:
        raise ValueError("at once")
    return "now"


class Recorder:
    def __init__(self) -> None:
        self.finished: list = []
        self.running: set[Driver] = set()

    def __call__(self, result, exc) -> None:
        self.finished.append((result, exc))


async def test_a_command_that_never_suspends_finishes_inside_drive():
    rec = Recorder()
    assert drive(asyncio.get_running_loop(), immediate(), rec, rec.running) is None
    assert rec.finished == [("now", None)] and rec.running == set()
    assert drive(asyncio.get_running_loop(), immediate(fail=True), rec, rec.running) is None
    assert isinstance(rec.finished[1][1], ValueError)


async def test_something_not_awaitable_is_reported_not_raised():
    rec = Recorder()
    assert drive(asyncio.get_running_loop(), 42, rec) is None  # type: ignore[arg-type]
    ((result, exc),) = rec.finished
    assert result is None and isinstance(exc, AttributeError)


async def test_driver_follows_futures_bare_yields_and_nested_awaitables():
    loop = asyncio.get_running_loop()
    rec = Recorder()
    fut = loop.create_future()
    driver = drive(loop, command(fut), rec, rec.running)
    assert driver is not None and rec.running == {driver}
    assert rec.finished == []
    fut.set_result("x-")
    await asyncio.wait_for(driver.done, 5)
    assert rec.finished == [("x-other", None)]
    assert rec.running == set()


async def test_driver_reports_exceptions_of_the_command_and_of_its_futures():
    loop = asyncio.get_running_loop()
    rec = Recorder()
    fut = loop.create_future()
    driver = drive(loop, command(fut, fail=True), rec, rec.running)
    fut.set_result("x-")
    await asyncio.wait_for(driver.done, 5)
    ((result, exc),) = rec.finished
    assert result is None and isinstance(exc, RuntimeError)

    rec = Recorder()
    fut = loop.create_future()
    driver = drive(loop, command(fut), rec, rec.running)
    fut.set_exception(ValueError("lost"))
    await asyncio.wait_for(driver.done, 5)
    assert isinstance(rec.finished[0][1], ValueError)
    assert rec.running == set()


async def test_driver_reports_cancellation_of_a_future():
    loop = asyncio.get_running_loop()
    rec = Recorder()
    fut = loop.create_future()
    driver = drive(loop, command(fut), rec, rec.running)
    fut.cancel()
    await asyncio.wait_for(driver.done, 5)
    assert isinstance(rec.finished[0][1], asyncio.CancelledError)


async def test_an_unknown_yield_goes_to_a_task_and_is_reported():
    rec = Recorder()
    driver = drive(asyncio.get_running_loop(), Odd(), rec, rec.running)
    assert driver is not None
    await asyncio.wait_for(driver.done, 5)
    ((result, exc),) = rec.finished
    assert result is None and isinstance(exc, RuntimeError)
    assert rec.running == set()


@pytest.mark.parametrize("steps", [1, 3])
async def test_no_task_is_made_for_futures_and_bare_yields(steps, monkeypatch):
    made = []
    real = asyncio.ensure_future
    monkeypatch.setattr(asyncio, "ensure_future", lambda *a, **k: made.append(a) or real(*a, **k))
    loop = asyncio.get_running_loop()

    async def cmd(futs):
        for f in futs:
            await f
            await bare_yield()
        return len(futs)

    futs = [loop.create_future() for _ in range(steps)]
    rec = Recorder()
    driver = drive(loop, cmd(futs), rec)
    for f in futs:
        f.set_result(None)
        await asyncio.sleep(0)
    await asyncio.wait_for(driver.done, 5)
    assert rec.finished == [(steps, None)] and made == []
