"""The one thread pool that runs every blocking volume syscall, and its batching front.

Volumes are used from a single asyncio event loop. pread/pwrite/fdatasync/FICLONE can
block on the disk, so they run here, never on the loop (the only exception is the
RWF_NOWAIT page-cache read in ``file.py``, which the kernel guarantees not to block on
I/O). One shared pool keeps the thread count bounded however many volumes are open.

Data-path calls (pread/pwrite) go through :func:`submit`, which batches: every call
made during one loop iteration is handed to a worker as one job (split every
``MAX_BATCH`` calls so a slow call delays few others), and the results come back in
one ``call_soon_threadsafe``. A thread handoff plus a loop wakeup costs about 100 us
on a 2-core VM; with 16 commands in flight, batching cuts it about 4x (measured:
37k -> 150k 4 KiB page-cache writes/s). Long calls (fdatasync, hydration copies) use
``run_in_executor`` directly so they never sit in front of a batch.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: I/O-bound work: more threads than cores so many commands can be in flight at once.
EXECUTOR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="volume-io")
MAX_BATCH = 16

_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]


class _Batcher:
    # No reference to the loop: it is this object's weak key in _batchers.
    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[_Call] = []

    def dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self.pending = self.pending, []
        for i in range(0, len(batch), MAX_BATCH):
            EXECUTOR.submit(_run_batch, loop, batch[i : i + MAX_BATCH])


def _run_batch(loop: asyncio.AbstractEventLoop, batch: list[_Call]) -> None:
    results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
    for fn, args, fut in batch:
        try:
            results.append((fut, fn(*args), None))
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
            results.append((fut, None, err))
    try:
        loop.call_soon_threadsafe(_complete, results)
    except RuntimeError:
        pass  # the loop was closed meanwhile: nobody is waiting any more


def _complete(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, err in results:
        if fut.cancelled():
            continue
        if err is None:
            fut.set_result(value)
        else:
            fut.set_exception(err)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
    weakref.WeakKeyDictionary()
)


def submit(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` on the pool, batched with this loop iteration's other calls."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher()
    fut = loop.create_future()
    if not batcher.pending:
        loop.call_soon(batcher.dispatch, loop)
    batcher.pending.append((fn, args, fut))
    return fut
