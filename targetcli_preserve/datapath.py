"""The data path: drives the I/O-free engine with real volumes and the journal.

This is the engine's one driver. It turns SCSI-level calls (a :class:`LunStore` is the
BlockStore of one LUN) into engine events, and carries out the engine's actions: block
I/O on volumes, clones, journal records, freezes. Everything runs on one asyncio loop,
so an engine call is atomic with respect to every other (that is what makes the cut
atomic with command intake, DESIGN.md rule 2); blocking syscalls run on threads.

Order of a preserve (rules 3 and 9): the ``cut`` journal record and the clones are made
concurrently; only when both are done is ``commit`` journalled and the engine told, and
only then do post-cut commands run. A crash before ``commit`` rolls the cut back (a
clone file without a ``cut`` record is an orphan and is removed at start); a crash after
it keeps the clone live.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from ._errors import BackendError, PreserveError
from .catalog import Catalog
from .journal import Journal
from .preserve import (
    Action, Clone, Command, Complete, Cut, Discard, Engine, Freeze, Op,
    Start, VolumeState,
)
from .volumes import Volume, clone_volume, remove_volume

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future
    payload: bytes | asyncio.Future | None = None
    fua: bool = False
    result: bytes | None = None


class Datapath:
    """Owns the engine, the open volumes and the journal of one daemon."""

    def __init__(self, engine: Engine, catalog: Catalog, journal: Journal,
                 volumes: dict[tuple[str, int], Volume]) -> None:
        self.engine = engine
        self.catalog = catalog
        self.journal = journal
        self.volumes = volumes  # (lun, generation) -> open volume
        self._pending: dict[Command, _Pending] = {}
        self._background: set[asyncio.Task] = set()
        self._drained: dict[tuple[str, int], asyncio.Future] = {}

    def store(self, lun: str) -> LunStore:
        record = self.catalog.luns[lun]
        return LunStore(self, lun, record.block_size, record.size // record.block_size)

    # ---- commands ----------------------------------------------------------------

    def submit(self, lun: str, op: Op, start: int, end: int,
               payload: bytes | Awaitable[bytes] | None = None, fua: bool = False) -> asyncio.Future:
        """Intake (fixes the seq now) and return a future for the command's result."""
        loop = asyncio.get_running_loop()
        if payload is not None and not isinstance(payload, (bytes, bytearray, memoryview)):
            payload = asyncio.ensure_future(payload)  # awaited by every target volume
        cmd, actions = self.engine.submit(lun, op, start, end)
        pending = _Pending(loop.create_future(), payload, fua)
        self._pending[cmd] = pending
        self._run(actions)
        return pending.future

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is Start:
                self._spawn(self._io(action.cmd, action.generations))
            elif type(action) is Complete:
                self._complete(action.cmd)
            elif type(action) is Freeze:
                self._spawn(self._freeze(action.lun, action.generation))
            # Clone, Commit and Discard only come from cuts, which preserve() drives.

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _io(self, cmd: Command, generations: tuple[int, ...]) -> None:
        pending = self._pending[cmd]
        if cmd.op is Op.WRITE:
            try:
                data = pending.payload
                if isinstance(data, asyncio.Future):
                    data = await data  # Data-Out may still be arriving
            except (PreserveError, OSError, asyncio.CancelledError) as err:
                self._run(self.engine.io_done(cmd, generations, _describe(err)))
                return
            await _gather(self._write_generation(cmd, g, data, pending.fua) for g in generations)
            return
        error = None
        try:
            if cmd.op is Op.READ:
                bs = self._block_size(cmd.lun)
                vol = self.volumes[(cmd.lun, generations[0])]
                pending.result = await vol.read(cmd.start * bs, (cmd.end - cmd.start) * bs)
            else:
                await _gather(self.volumes[(cmd.lun, g)].flush() for g in generations)
        except (PreserveError, OSError) as err:
            error = _describe(err)
        self._run(self.engine.io_done(cmd, generations, error))

    async def _write_generation(self, cmd: Command, generation: int, data: bytes, fua: bool) -> None:
        error = None
        try:
            vol = self.volumes[(cmd.lun, generation)]
            await vol.write(cmd.start * self._block_size(cmd.lun), data)
            if fua:  # SBC-3 5.39 (WRITE(10) FUA): durable before the command completes
                await vol.flush()
        except (PreserveError, OSError) as err:
            error = _describe(err)
            if generation != cmd.home:  # rule 10: the preserve that made it is damaged
                self._spawn(self._journal({"op": "damaged", "lun": cmd.lun, "gen": generation}))
        self._run(self.engine.io_done(cmd, (generation,), error))

    def _complete(self, cmd: Command) -> None:
        pending = self._pending.pop(cmd)
        if pending.future.done():
            return
        if cmd.error is not None:
            pending.future.set_exception(BackendError(cmd.error))
        else:
            pending.future.set_result(pending.result)

    def _block_size(self, lun: str) -> int:
        return self.catalog.luns[lun].block_size

    # ---- preserve ------------------------------------------------------------------

    async def preserve(self, luns: list[str]) -> Cut:
        """Cut ``luns`` together; return once the clones are committed (post-cut I/O
        runs on them from then on). If a clone fails the cut has no effect (rule 10)."""
        cut, clones = self.engine.cut(luns)  # T is taken here, atomically with intake
        record = {
            "op": "cut", "cut": cut.id, "seq": cut.seq, "time": _now(),
            "luns": dict(cut.new_generation),
        }
        # The ``cut`` record and the clones go concurrently; ``commit`` follows both.
        begun, *made = await asyncio.gather(
            asyncio.to_thread(self.journal.append, record),
            *(self._clone(action) for action in clones if isinstance(action, Clone)),
            return_exceptions=True,
        )
        if not isinstance(begun, BaseException):
            self.catalog.apply(record)
        failure = next((r for r in (begun, *made) if isinstance(r, BaseException)), None)
        if failure is None:
            commit = {"op": "commit", "cut": cut.id}
            try:
                await asyncio.to_thread(self.journal.append, commit)
            except BackendError as err:
                failure = err
            else:
                self.catalog.apply(commit)
                for name in cut.luns:
                    self.engine.clone_done(cut, name)
                self._run(self.engine.commit(cut))
                return cut
        await self._abort(cut, failure, journalled=not isinstance(begun, BaseException))
        raise BackendError(f"preserve failed, nothing was changed: {cut.error}") from failure

    async def _clone(self, action: Clone) -> None:
        source = self.volumes[(action.lun, action.source)]
        path = self.catalog.volume_path(action.lun, action.new)
        try:
            vol = await clone_volume(source, path)
        except PreserveError as err:
            raise BackendError(f"{action.lun}: clone failed: {err}") from err
        self.volumes[(action.lun, action.new)] = vol

    async def _abort(self, cut: Cut, failure: BaseException, journalled: bool) -> None:
        """Roll back every clone of ``cut``; commands that waited for it go home."""
        actions = self.engine.clone_failed(cut, cut.luns[0], str(failure))
        self._run(actions)
        for action in actions:
            if isinstance(action, Discard):
                vol = self.volumes.pop((action.lun, action.generation), None)
                if vol is not None:
                    await vol.close()
                await remove_volume(self.catalog.volume_path(action.lun, action.generation))
        if journalled:
            await self._journal({"op": "abort", "cut": cut.id, "error": cut.error})

    async def _freeze(self, lun: str, generation: int) -> None:
        vol = self.volumes.get((lun, generation))
        if vol is not None:
            await vol.flush()
            await vol.freeze()
        await self._journal({"op": "freeze", "lun": lun, "gen": generation})
        waiter = self._drained.pop((lun, generation), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_frozen(self, lun: str, generation: int) -> None:
        """Wait until ``generation`` of ``lun`` is frozen (drained and journalled)."""
        if self.catalog.generation(lun, generation).state is VolumeState.FROZEN:
            return
        loop = asyncio.get_running_loop()
        waiter = self._drained.setdefault((lun, generation), loop.create_future())
        await asyncio.shield(waiter)

    async def _journal(self, record: dict) -> None:
        try:
            await asyncio.to_thread(self.journal.append, record)
        except BackendError:
            log.exception("journal write failed: %s", record)
            return
        self.catalog.apply(record)

    async def close(self) -> None:
        """Wait (bounded) for background work, then close every volume."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        for vol in self.volumes.values():
            await vol.close()
        self.volumes.clear()


class LunStore:
    """The BlockStore of one LUN (see scsi/store.py): SCSI calls become engine commands."""

    __slots__ = ("_path", "lun", "block_size", "num_blocks")

    def __init__(self, path: Datapath, lun: str, block_size: int, num_blocks: int) -> None:
        self._path = path
        self.lun = lun
        self.block_size = block_size
        self.num_blocks = num_blocks

    def read(self, lba: int, nblocks: int) -> Awaitable[bytes]:
        return self._path.submit(self.lun, Op.READ, lba, lba + nblocks)

    def write(self, lba: int, nblocks: int, data, fua: bool = False) -> Awaitable[None]:
        return self._path.submit(self.lun, Op.WRITE, lba, lba + nblocks, data, fua)

    def flush(self) -> Awaitable[None]:
        return self._path.submit(self.lun, Op.FLUSH, 0, 0)


async def _gather(coros) -> None:
    coros = list(coros)
    if len(coros) == 1:
        await coros[0]
    else:
        await asyncio.gather(*coros)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")



def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, PreserveError) else f"{type(err).__name__}: {err}"
