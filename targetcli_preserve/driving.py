"""Running a command's awaitable to its end without an asyncio Task, for every transport.

A transport (the iSCSI server, the TCMU ring server) calls the SCSI layer once per
command and gets an awaitable back. A Task per command costs a Task object, a loop
callback for its first step (which only re-yields the future the command waits on) and
another for its done callbacks; on the 4 KiB I/O path that was a large share of the
loop's work. :func:`drive` instead runs the first step at once, in the caller's stack
(most commands, anything served from memory and every CDB error, finish there), and
hands a command that suspends to a :class:`Driver`, which continues it from where it
stopped as a Task would. Either way the transport hears the outcome through one
callback, ``on_done(result, None)`` or ``on_done(None, exc)``, and nothing else.

This module owns that stepping and nothing about any transport or the SCSI layer: it
is generic over the result type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import Generic, Protocol, TypeAlias, TypeGuard, TypeVar

T = TypeVar("T")

# What a command's awaitable steps through: the futures it waits on, then its result.
Steps: TypeAlias = Generator[object, None, T]
# How a driven awaitable ended: (result, None), or (None, the exception it raised).
OnDone: TypeAlias = Callable[[T | None, BaseException | None], None]


class Blocking(Protocol):
    """A future a coroutine yielded to wait on (asyncio's ``_asyncio_future_blocking``
    protocol, which Task follows too)."""

    _asyncio_future_blocking: bool

    def add_done_callback(self, fn: Callable[[object], object], /) -> None: ...


def is_blocking(yielded: object) -> TypeGuard[Blocking]:
    return bool(getattr(yielded, "_asyncio_future_blocking", False))


class Resumed(Generic[T]):
    """An awaitable continuing an ``__await__`` iterator that already yielded ``first``
    (a Task sends None into it after ``first`` completes, as it would have)."""

    __slots__ = ("first", "it")

    def __init__(self, it: Steps[T], first: object) -> None:
        self.it = it
        self.first = first

    def __await__(self) -> Steps[T]:
        yield self.first
        return (yield from self.it)


class Driver(Generic[T]):
    """Runs a suspended awaitable's iterator to its end without an asyncio Task.

    Like a Task, this waits on each asyncio Future the iterator yields
    (``_asyncio_future_blocking`` protocol) and sends None into it once the future is
    done; a bare ``yield`` runs it again on the next loop iteration. Anything else is
    handed to a real Task. When the iterator ends, ``done`` is set, the driver leaves
    ``running`` (the caller's set of drivers, if given: what a transport's close waits
    for) and ``on_done`` is called."""

    __slots__ = ("done", "it", "loop", "on_done", "running")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        it: Steps[T],
        on_done: OnDone[T],
        running: set[Driver[T]] | None = None,
    ) -> None:
        self.loop = loop
        self.it = it
        self.on_done = on_done
        self.running = running
        self.done: asyncio.Future[None] = loop.create_future()
        if running is not None:
            running.add(self)

    def wait_on(self, yielded: object) -> None:
        if is_blocking(yielded):
            yielded._asyncio_future_blocking = False
            yielded.add_done_callback(self.resume)
        elif yielded is None:
            self.loop.call_soon(self.resume, None)
        else:
            task = asyncio.ensure_future(Resumed(self.it, yielded))
            task.add_done_callback(self._task_done)

    def resume(self, _future: object) -> None:
        try:
            yielded = self.it.send(None)
        except StopIteration as stop:
            self._finish(stop.value, None)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - reported below
            self._finish(None, exc)
        else:
            self.wait_on(yielded)

    def _task_done(self, task: asyncio.Future[T]) -> None:
        if task.cancelled():
            self._finish(None, asyncio.CancelledError())
        elif task.exception() is not None:
            self._finish(None, task.exception())
        else:
            self._finish(task.result(), None)

    def _finish(self, result: T | None, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.running is not None:
            self.running.discard(self)
        self.on_done(result, exc)


def drive(
    loop: asyncio.AbstractEventLoop,
    aw: Awaitable[T],
    on_done: OnDone[T],
    running: set[Driver[T]] | None = None,
) -> Driver[T] | None:
    """Run ``aw`` one step now. If it finished, ``on_done`` has been called (before this
    returns) and the result is None; otherwise the :class:`Driver` continuing it, which
    is in ``running`` until it ends."""
    try:
        it: Steps[T] = aw.__await__()
        first = it.send(None)
    except StopIteration as stop:
        on_done(stop.value, None)
        return None
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - reported to on_done
        on_done(None, exc)
        return None
    driver = Driver(loop, it, on_done, running)
    driver.wait_on(first)
    return driver
