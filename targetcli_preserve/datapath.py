"""The data path: drives the I/O-free engine with real volumes, command by command.

This is the engine's one driver. It turns SCSI-level calls (a :class:`LunStore` is the
BlockStore of one LUN) into engine events, and carries out the engine's actions on
volumes: reads, writes (to every generation the engine names: rule 4's replication),
flushes. Everything runs on one asyncio loop, so an engine call is atomic with respect
to every other (that is what makes the cut atomic with command intake, docs/design.md
rule 2); blocking syscalls run on threads. What a preserve does around the engine
(clones, journal records, durability, freezing) is preserving.py's job; the standby
clones are clones.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from ._errors import BackendError, PreserveError
from .catalog import Catalog
from .clones import Clones, Volumes
from .driving import Resumed
from .journal import Journal
from .preserve import Action, Command, Complete, Cut, Engine, Freeze, Op, Start
from .preserving import Preserves
from .volumes import Bytes


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]  # a read's bytes; None for a write or a flush
    payload: Bytes | asyncio.Future[bytes] | None = None
    fua: bool = False
    result: bytes | None = None


def _now_or_later(payload: Awaitable[bytes]) -> Bytes | asyncio.Future[bytes]:
    """Data-Out that is already there (TCMU's, gathered from the ring's data area when
    awaited) is taken at once; only data still on its way gets a Task."""
    steps = payload.__await__()
    try:
        first = steps.send(None)
    except StopIteration as ready:
        data: bytes = ready.value
        return data
    return asyncio.ensure_future(Resumed(steps, first))


class Datapath:
    """Owns the engine and the open volumes of one daemon; ``preserves`` and ``clones``
    do the rest of a preserve's work."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        journal: Journal,
        volumes: Volumes,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.volumes = volumes  # (LUN name, generation) -> open volume
        self.clones = Clones(engine, catalog, volumes)
        self._pending: dict[Command, _Pending] = {}
        self._background: set[asyncio.Future[None]] = set()
        self.preserves = Preserves(
            engine, catalog, journal, volumes, self.clones, self._run, self._spawn
        )

    def store(self, lun_name: str) -> LunStore:
        record = self.catalog.luns[lun_name]
        return LunStore(self, lun_name, record.block_size, record.size // record.block_size)

    # ---- commands ----------------------------------------------------------------

    def submit(
        self,
        lun_name: str,
        op: Op,
        start: int,
        end: int,
        payload: Bytes | Awaitable[bytes] | None = None,
        fua: bool = False,
    ) -> asyncio.Future[Any]:
        """Intake (fixes the seq now) and return a future for the command's result."""
        loop = asyncio.get_running_loop()
        data: Bytes | asyncio.Future[bytes] | None
        if payload is None or isinstance(payload, (bytes, bytearray, memoryview)):
            data = payload
        elif isinstance(payload, asyncio.Future):
            data = payload  # awaited by every target volume
        else:
            data = _now_or_later(payload)
        cmd, actions = self.engine.submit(lun_name, op, start, end)
        pending = _Pending(loop.create_future(), data, fua)
        self._pending[cmd] = pending
        self._run(actions)
        return pending.future

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is Start:
                if action.cmd.op is Op.READ and self._read_now(action.cmd, action.generations[0]):
                    continue
                self._spawn(self._io(action.cmd, action.generations))
            elif type(action) is Complete:
                self._complete(action.cmd)
            elif type(action) is Freeze:
                self.preserves.drained(action.lun_name, action.generation)
            # Clone, Commit and Discard only come from cuts, which preserving.py drives.

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _read_now(self, cmd: Command, generation: int) -> bool:
        """Answer a read from memory at once if it can be (the hot path: no task)."""
        bs = self._block_size(cmd.lun_name)
        data = self.volumes[(cmd.lun_name, generation)].read_cached(
            cmd.start * bs, (cmd.end - cmd.start) * bs
        )
        if data is None:
            return False
        self._pending[cmd].result = data
        self._run(self.engine.io_done(cmd, (generation,)))
        return True

    async def _io(self, cmd: Command, generations: tuple[int, ...]) -> None:
        pending = self._pending[cmd]
        if cmd.op is Op.WRITE:
            try:
                data = pending.payload
                if isinstance(data, asyncio.Future):
                    data = await data  # Data-Out may still be arriving
                if data is None:
                    raise BackendError("a write without data")
            except (PreserveError, OSError, asyncio.CancelledError) as err:
                self._run(self.engine.io_done(cmd, generations, _describe(err)))
                return
            await _gather(self._write_generation(cmd, g, data, pending.fua) for g in generations)
            return
        error = None
        try:
            if cmd.op is Op.READ:
                bs = self._block_size(cmd.lun_name)
                vol = self.volumes[(cmd.lun_name, generations[0])]
                pending.result = await vol.read(cmd.start * bs, (cmd.end - cmd.start) * bs)
            else:
                await _gather(self.volumes[(cmd.lun_name, g)].flush() for g in generations)
                await self.preserves.wait_durable(cmd.lun_name)
        except (PreserveError, OSError) as err:
            error = _describe(err)
        self._run(self.engine.io_done(cmd, generations, error))

    async def _write_generation(
        self, cmd: Command, generation: int, data: Bytes, fua: bool
    ) -> None:
        error = None
        try:
            vol = self.volumes[(cmd.lun_name, generation)]
            await vol.write(cmd.start * self._block_size(cmd.lun_name), data)
            if fua:  # SBC-3 5.39 (WRITE(10) FUA): durable before the command completes
                await vol.flush()
                await self.preserves.wait_durable(cmd.lun_name)
        except (PreserveError, OSError) as err:
            error = _describe(err)
            if generation != cmd.home:  # rule 10: the preserve that made it is damaged
                self.preserves.damaged(cmd.lun_name, generation)
        self._run(self.engine.io_done(cmd, (generation,), error))

    def _complete(self, cmd: Command) -> None:
        pending = self._pending.pop(cmd)
        if pending.future.done():
            return
        if cmd.error is not None:
            pending.future.set_exception(BackendError(cmd.error))
        else:
            pending.future.set_result(pending.result)

    def _block_size(self, lun_name: str) -> int:
        return self.catalog.luns[lun_name].block_size

    # ---- preserves (preserving.py does the work) ---------------------------------------

    def preserve(self, luns: list[str]) -> asyncio.Future[Cut]:
        """Cut ``luns`` together now: see :meth:`Preserves.preserve`."""
        return self.preserves.preserve(luns)

    async def durable(self, cut: Cut) -> None:
        await self.preserves.durable(cut)

    async def wait_frozen(self, lun_name: str, generation: int) -> None:
        await self.preserves.wait_frozen(lun_name, generation)

    def prepare_standby(self, lun_name: str) -> None:
        self.clones.prepare_standby(lun_name)

    async def close(self) -> None:
        """Wait (bounded) for running I/O and background work, then close every volume."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        await self.clones.close()
        # Newest first: a lazy clone stops reading through its source before it closes.
        for key in sorted(self.volumes, key=lambda k: k[1], reverse=True):
            await self.volumes[key].close()
        self.volumes.clear()


class LunStore:
    """The BlockStore of one LUN (see scsi/store.py): SCSI calls become engine commands."""

    __slots__ = ("_datapath", "block_size", "lun_name", "num_blocks")

    def __init__(self, datapath: Datapath, lun_name: str, block_size: int, num_blocks: int) -> None:
        self._datapath = datapath
        self.lun_name = lun_name  # the SCSI layer knows the LUN by its number instead
        self.block_size = block_size
        self.num_blocks = num_blocks

    def read(self, lba: int, nblocks: int) -> Awaitable[bytes]:
        return self._datapath.submit(self.lun_name, Op.READ, lba, lba + nblocks)

    def write(
        self, lba: int, nblocks: int, data: Bytes | Awaitable[bytes], fua: bool = False
    ) -> Awaitable[None]:
        return self._datapath.submit(self.lun_name, Op.WRITE, lba, lba + nblocks, data, fua)

    def flush(self) -> Awaitable[None]:
        return self._datapath.submit(self.lun_name, Op.FLUSH, 0, 0)


async def _gather(coros: Iterable[Coroutine[object, object, None]]) -> None:
    todo = list(coros)
    if len(todo) == 1:
        await todo[0]  # the common case: no gather machinery
    else:
        await asyncio.gather(*todo)


def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, PreserveError) else f"{type(err).__name__}: {err}"
