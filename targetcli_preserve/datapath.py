"""The data path: drives the I/O-free engine with real volumes and the journal.

This is the engine's one driver. It turns SCSI-level calls (a :class:`LunStore` is the
BlockStore of one LUN) into engine events, and carries out the engine's actions: block
I/O on volumes, clones, journal records, freezes. Everything runs on one asyncio loop,
so an engine call is atomic with respect to every other (that is what makes the cut
atomic with command intake, docs/design.md rule 2); blocking syscalls run on threads.

Order of a preserve (rules 2, 3 and 9), with no fsync on the way: take T in the engine;
write the ``cut`` record (page cache); make the clones (or take the standby lazy clone
prepared before the cut); write ``commit``; tell the engine, and post-cut commands run.
Then, in the background: flush the clones, fsync ``durable``; SYNCHRONIZE CACHE and FUA
writes wait for that. catalog.py says what a restart keeps of each state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from ._errors import BackendError, PreserveError
from .boot import current_boot
from .catalog import Catalog
from .journal import Journal
from .preserve import (
    Action,
    Clone,
    Command,
    Complete,
    Cut,
    Discard,
    Engine,
    Freeze,
    Op,
    Start,
    VolumeState,
)
from .records import (
    CutAborted,
    CutCommitted,
    CutDurable,
    CutTaken,
    GenerationDamaged,
    GenerationFrozen,
    Record,
    encode,
    timestamp,
)
from .volumes import LazyVolume, Volume, clone_volume, remove_volume

log = logging.getLogger(__name__)

SETTLE_S = 0.005  # how long a cut's background work lets the first commands go first


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future
    payload: bytes | asyncio.Future | None = None
    fua: bool = False
    result: bytes | None = None


class Datapath:
    """Owns the engine, the open volumes and the journal of one daemon."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        journal: Journal,
        volumes: dict[tuple[str, int], Volume],
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.journal = journal
        self.volumes = volumes  # (lun, generation) -> open volume
        self._pending: dict[Command, _Pending] = {}
        self._background: set[asyncio.Task] = set()
        self._drained: dict[tuple[str, int], asyncio.Future] = {}
        self._durable: dict[str, asyncio.Future] = {}  # LUN -> its newest cut's durability
        self._durable_cuts: dict[int, asyncio.Future] = {}
        self._boot = current_boot()
        self._standby: dict[str, asyncio.Future] = {}  # LUN -> its next lazy clone
        self._full_clone_luns: set[str] = set()  # LUNs whose clones are full copies

    def store(self, lun: str) -> LunStore:
        record = self.catalog.luns[lun]
        return LunStore(self, lun, record.block_size, record.size // record.block_size)

    # ---- commands ----------------------------------------------------------------

    def submit(
        self,
        lun: str,
        op: Op,
        start: int,
        end: int,
        payload: bytes | Awaitable[bytes] | None = None,
        fua: bool = False,
    ) -> asyncio.Future:
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
                if action.cmd.op is Op.READ and self._read_now(action.cmd, action.generations[0]):
                    continue
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

    def _read_now(self, cmd: Command, generation: int) -> bool:
        """Answer a read from memory at once if it can be (the hot path: no task)."""
        bs = self._block_size(cmd.lun)
        data = self.volumes[(cmd.lun, generation)].read_cached(
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
                await self._wait_durable(cmd.lun)
        except (PreserveError, OSError) as err:
            error = _describe(err)
        self._run(self.engine.io_done(cmd, generations, error))

    async def _write_generation(
        self, cmd: Command, generation: int, data: bytes, fua: bool
    ) -> None:
        error = None
        try:
            vol = self.volumes[(cmd.lun, generation)]
            await vol.write(cmd.start * self._block_size(cmd.lun), data)
            if fua:  # SBC-3 5.39 (WRITE(10) FUA): durable before the command completes
                await vol.flush()
                await self._wait_durable(cmd.lun)
        except (PreserveError, OSError) as err:
            error = _describe(err)
            if generation != cmd.home:  # rule 10: the preserve that made it is damaged
                self._spawn(self._journal(GenerationDamaged(cmd.lun, generation)))
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

    def preserve(self, luns: list[str]) -> asyncio.Future[Cut]:
        """Cut ``luns`` together *now* (T is taken before this returns, atomically with
        command intake: rule 2); the future gives the cut once its clones are committed
        and post-cut I/O runs on them. If a clone fails the cut has no effect (rule 10).

        No fsync waits on this path: the ``cut`` and ``commit`` records are written to
        the page cache (a daemon crash keeps them), and :meth:`durable` follows in the
        background (see catalog.py for what a restart keeps)."""
        cut, clones = self.engine.cut(luns)
        record = CutTaken(cut.id, cut.seq, timestamp(), dict(cut.new_generation), self._boot)
        try:
            self.journal.write(encode(record))  # before any clone exists: no orphan is ever needed
        except BackendError as err:
            self._run(self.engine.clone_failed(cut, cut.luns[0], str(err)))
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(BackendError(f"preserve failed, nothing was changed: {err}"))
            return failed
        self.catalog.apply(record)
        return asyncio.ensure_future(self._make_clones(cut, clones))

    async def _make_clones(self, cut: Cut, clones: list[Action]) -> Cut:
        made = await asyncio.gather(
            *(self._clone(action) for action in clones if isinstance(action, Clone)),
            return_exceptions=True,
        )
        failure = next((r for r in made if isinstance(r, BaseException)), None)
        if failure is None:
            commit = CutCommitted(cut.id)
            try:
                self.journal.write(encode(commit))
            except BackendError as err:
                failure = err
            else:
                self.catalog.apply(commit)
                for name in cut.luns:
                    self.engine.clone_done(cut, name)
                self._run(self.engine.commit(cut))  # post-cut commands run from here on
                self._start_durability(cut)
                # Background work of the cut (hydration, the next standby) waits a
                # moment, so the first post-cut commands do not queue behind it.
                asyncio.get_running_loop().call_later(SETTLE_S, self._after_cut, cut)
                return cut
        await self._abort(cut, failure)
        raise BackendError(f"preserve failed, nothing was changed: {cut.error}") from failure

    def _after_cut(self, cut: Cut) -> None:
        for name in cut.luns:
            vol = self.volumes.get((name, cut.new_generation[name]))
            if isinstance(vol, LazyVolume):
                vol.start_hydration()
            self.prepare_standby(name)

    def _start_durability(self, cut: Cut) -> None:
        earlier = {self._durable[n] for n in cut.luns if n in self._durable}
        task = asyncio.ensure_future(self._make_durable(cut, earlier))
        for name in cut.luns:
            self._durable[name] = task
        self._durable_cuts[cut.id] = task  # kept while it runs, or if it failed
        task.add_done_callback(
            lambda t: None if t.cancelled() or t.exception() else self._durable_cuts.pop(cut.id)
        )

    async def _make_durable(self, cut: Cut, earlier: set[asyncio.Future]) -> None:
        """Clones, then ``cut``/``commit``/``durable`` on stable storage. In cut order per
        LUN, so a restart after a power loss never keeps a cut on top of a lost one."""
        await asyncio.sleep(SETTLE_S)  # let the first post-cut commands go first
        if earlier:
            await asyncio.gather(*earlier)
        await asyncio.gather(*(self.volumes[(n, cut.new_generation[n])].flush() for n in cut.luns))
        record = CutDurable(cut.id)
        await asyncio.to_thread(self.journal.append, encode(record))
        self.catalog.apply(record)

    async def durable(self, cut: Cut) -> None:
        """Wait until ``cut`` survives a power loss."""
        task = self._durable_cuts.get(cut.id)
        if task is not None:
            await asyncio.shield(task)

    async def _wait_durable(self, lun: str) -> None:
        """SYNCHRONIZE CACHE and FUA promise durability: that includes the newest cut."""
        task = self._durable.get(lun)
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except PreserveError as err:
            raise BackendError(f"the preserve of {lun} could not be made durable") from err

    async def _clone(self, action: Clone) -> None:
        """Make generation ``action.new``: the standby lazy clone if one is ready."""
        vol = await self._take_standby(action.lun, action.source)
        if vol is None:
            source = self.volumes[(action.lun, action.source)]
            path = self.catalog.volume_path(action.lun, action.new)
            try:
                vol = await clone_volume(source, path, background=False)
            except PreserveError as err:
                raise BackendError(f"{action.lun}: clone failed: {err}") from err
            if not isinstance(vol, LazyVolume):
                self._full_clone_luns.add(action.lun)
        self.volumes[(action.lun, action.new)] = vol

    # ---- standby clones ------------------------------------------------------------
    #
    # A lazy clone (rule 3; its hydration copies or reflinks chunks) can be made
    # *before* the cut: while it has not started hydrating it holds nothing of its own
    # and reads everything through its source, so until the cut it is the source,
    # exactly. The cut then only starts its hydration. A standby is never written
    # before the cut; a crash leaves it as an orphan file that the next start removes.
    # A full clone, by contrast, is a copy of the moment it is taken: made at the cut.

    def prepare_standby(self, lun: str) -> None:
        """Make the next cut of ``lun`` cheap, in the background."""
        if lun in self._full_clone_luns or lun in self._standby:
            return
        self._standby[lun] = asyncio.ensure_future(self._make_standby(lun))

    async def _make_standby(self, lun: str) -> tuple[int, Volume] | None:
        newest = self.engine.generations(lun)[-1]
        source = self.volumes[(lun, newest.index)]
        path = self.catalog.volume_path(lun, newest.index + 1)
        try:
            vol = await clone_volume(source, path, background=False)
        except PreserveError as err:
            log.warning("no standby clone for %s: %s", lun, err)
            return None
        if not isinstance(vol, LazyVolume):  # a full copy of *now*: useless after a cut
            self._full_clone_luns.add(lun)
            await self._drop(vol)
            return None
        return newest.index, vol

    async def _take_standby(self, lun: str, source: int) -> Volume | None:
        task = self._standby.pop(lun, None)
        if task is None:
            return None
        standby = await task
        if standby is None:
            return None
        index, vol = standby
        if index != source:  # cannot happen while cuts take it, but never guess
            await self._drop(vol)
            return None
        return vol

    async def _drop(self, vol: Volume) -> None:
        await vol.close()
        await remove_volume(vol.path)

    async def _abort(self, cut: Cut, failure: BaseException) -> None:
        """Roll back every clone of ``cut``; commands that waited for it go home."""
        actions = self.engine.clone_failed(cut, cut.luns[0], str(failure))
        self._run(actions)
        for action in actions:
            if isinstance(action, Discard):
                vol = self.volumes.pop((action.lun, action.generation), None)
                if vol is not None:
                    await vol.close()
                await remove_volume(self.catalog.volume_path(action.lun, action.generation))
        await self._journal(CutAborted(cut.id, cut.error or ""))
        for name in cut.luns:
            self.prepare_standby(name)

    async def _freeze(self, lun: str, generation: int) -> None:
        await asyncio.sleep(SETTLE_S)  # nothing reaches it any more: no hurry
        vol = self.volumes.get((lun, generation))
        if vol is not None:
            await vol.flush()
            await vol.freeze()
        await self._journal(GenerationFrozen(lun, generation))
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

    async def _journal(self, record: Record) -> None:
        try:
            await asyncio.to_thread(self.journal.append, encode(record))
        except BackendError:
            log.exception("journal write failed: %s", record)
            return
        self.catalog.apply(record)

    async def close(self) -> None:
        """Wait (bounded) for background work, then close every volume."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        for lun in list(self._standby):
            await self._take_standby(lun, -1)  # drops it: no cut will use it
        # Newest first: a lazy clone stops reading through its source before it closes.
        for key in sorted(self.volumes, key=lambda k: k[1], reverse=True):
            await self.volumes[key].close()
        self.volumes.clear()


class LunStore:
    """The BlockStore of one LUN (see scsi/store.py): SCSI calls become engine commands."""

    __slots__ = ("_path", "block_size", "lun", "num_blocks")

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


def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, PreserveError) else f"{type(err).__name__}: {err}"
