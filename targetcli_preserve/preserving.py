"""A preserve carried through, step by step, around the I/O-free engine.

Order of a preserve (docs/design.md rules 2, 3 and 9), with no fsync on the way: take
T in the engine; write the ``cut`` record (page cache); make the clones (clones.py:
normally the standby made before the cut); write ``commit``; tell the engine, and
post-cut commands run. Then, in the background: flush the clones and fsync
``durable`` (SYNCHRONIZE CACHE and FUA writes wait for that), start the clones'
hydration and the next standby. When the engine says a superseded generation has
drained, it is flushed, frozen and journalled. A clone that fails rolls the whole cut
back with no effect on I/O (rule 10). catalog.py says what a restart keeps of each step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from ._errors import BackendError, PreserveError
from .boot import current_boot
from .catalog import Catalog
from .clones import Clones, Volumes
from .journal import Journal
from .preserve import Action, Clone, Cut, Discard, Engine, VolumeState
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
from .volumes import LazyVolume, remove_volume

log = logging.getLogger(__name__)

SETTLE_S = 0.005  # how long a cut's background work lets the first commands go first


class Preserves:
    """The preserves of one daemon; ``run`` carries out engine actions and ``spawn``
    starts background work that the data path waits for (bounded) when it closes."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        journal: Journal,
        volumes: Volumes,
        clones: Clones,
        run: Callable[[list[Action]], None],
        spawn: Callable[[Coroutine[object, object, None]], None],
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._journal = journal
        self._volumes = volumes
        self._clones = clones
        self._run = run
        self._spawn = spawn
        self._boot = current_boot()
        self._durable: dict[str, asyncio.Future[None]] = {}  # LUN -> newest cut's durability
        self._durable_cuts: dict[int, asyncio.Future[None]] = {}
        self._drained: dict[tuple[str, int], asyncio.Future[None]] = {}

    # ---- the cut -------------------------------------------------------------------

    def preserve(self, luns: list[str]) -> asyncio.Future[Cut]:
        """Cut ``luns`` together *now* (T is taken before this returns, atomically with
        command intake: rule 2); the future gives the cut once its clones are committed
        and post-cut I/O runs on them. If a clone fails the cut has no effect (rule 10).

        No fsync waits on this path: the ``cut`` and ``commit`` records are written to
        the page cache (a daemon crash keeps them), and :meth:`durable` follows in the
        background (see catalog.py for what a restart keeps)."""
        cut, clones = self._engine.cut(luns)
        record = CutTaken(cut.id, cut.seq, timestamp(), dict(cut.new_generations), self._boot)
        try:
            self._journal.write(encode(record))  # before any clone exists: no orphan needed
        except BackendError as err:
            self._run(self._engine.clone_failed(cut, cut.luns[0], str(err)))
            failed: asyncio.Future[Cut] = asyncio.get_running_loop().create_future()
            failed.set_exception(BackendError(f"preserve failed, nothing was changed: {err}"))
            return failed
        self._catalog.apply(record)
        return asyncio.ensure_future(self._make_clones(cut, clones))

    async def _make_clones(self, cut: Cut, clones: list[Action]) -> Cut:
        made = await asyncio.gather(
            *(self._clones.clone(action) for action in clones if isinstance(action, Clone)),
            return_exceptions=True,
        )
        failure = next((r for r in made if isinstance(r, BaseException)), None)
        if failure is None:
            commit = CutCommitted(cut.id)
            try:
                self._journal.write(encode(commit))
            except BackendError as err:
                failure = err
            else:
                self._catalog.apply(commit)
                for name in cut.luns:
                    self._engine.clone_done(cut, name)
                self._run(self._engine.commit(cut))  # post-cut commands run from here on
                self._start_durability(cut)
                # Background work of the cut (hydration, the next standby) waits a
                # moment, so the first post-cut commands do not queue behind it.
                asyncio.get_running_loop().call_later(SETTLE_S, self._after_cut, cut)
                return cut
        await self._abort(cut, failure)
        raise BackendError(f"preserve failed, nothing was changed: {cut.error}") from failure

    def _after_cut(self, cut: Cut) -> None:
        for name in cut.luns:
            vol = self._volumes.get((name, cut.new_generations[name]))
            if isinstance(vol, LazyVolume):
                vol.start_hydration()
            self._clones.prepare_standby(name)

    async def _abort(self, cut: Cut, failure: BaseException) -> None:
        """Roll back every clone of ``cut``; commands that waited for it go home."""
        actions = self._engine.clone_failed(cut, cut.luns[0], str(failure))
        self._run(actions)
        for action in actions:
            if isinstance(action, Discard):
                vol = self._volumes.pop((action.lun_name, action.generation), None)
                if vol is not None:
                    await vol.close()
                await remove_volume(self._catalog.volume_path(action.lun_name, action.generation))
        await self._record(CutAborted(cut.id, cut.error or ""))
        for name in cut.luns:
            self._clones.prepare_standby(name)

    # ---- durability ----------------------------------------------------------------

    def _start_durability(self, cut: Cut) -> None:
        earlier = {self._durable[n] for n in cut.luns if n in self._durable}
        task = asyncio.ensure_future(self._make_durable(cut, earlier))
        for name in cut.luns:
            self._durable[name] = task
        self._durable_cuts[cut.id] = task  # kept while it runs, or if it failed
        task.add_done_callback(
            lambda t: None if t.cancelled() or t.exception() else self._durable_cuts.pop(cut.id)
        )

    async def _make_durable(self, cut: Cut, earlier: set[asyncio.Future[None]]) -> None:
        """Clones, then ``cut``/``commit``/``durable`` on stable storage. In cut order per
        LUN, so a restart after a power loss never keeps a cut on top of a lost one."""
        await asyncio.sleep(SETTLE_S)  # let the first post-cut commands go first
        if earlier:
            await asyncio.gather(*earlier)
        await asyncio.gather(
            *(self._volumes[(n, cut.new_generations[n])].flush() for n in cut.luns)
        )
        record = CutDurable(cut.id)
        await asyncio.to_thread(self._journal.append, encode(record))
        self._catalog.apply(record)

    async def durable(self, cut: Cut) -> None:
        """Wait until ``cut`` survives a power loss."""
        task = self._durable_cuts.get(cut.id)
        if task is not None:
            await asyncio.shield(task)

    async def wait_durable(self, lun_name: str) -> None:
        """SYNCHRONIZE CACHE and FUA promise durability: that includes the newest cut."""
        task = self._durable.get(lun_name)
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except PreserveError as err:
            raise BackendError(f"the preserve of {lun_name} could not be made durable") from err

    # ---- after the cut: drain and damage ----------------------------------------------

    def drained(self, lun_name: str, generation: int) -> None:
        """The engine froze ``generation``: its last pre-cut command has completed."""
        self._spawn(self._freeze(lun_name, generation))

    def damaged(self, lun_name: str, generation: int) -> None:
        """A pre-cut write could not be replicated into ``generation`` (rule 10)."""
        self._spawn(self._record(GenerationDamaged(lun_name, generation)))

    async def _freeze(self, lun_name: str, generation: int) -> None:
        await asyncio.sleep(SETTLE_S)  # nothing reaches it any more: no hurry
        vol = self._volumes.get((lun_name, generation))
        if vol is not None:
            await vol.flush()
            await vol.freeze()
        await self._record(GenerationFrozen(lun_name, generation))
        waiter = self._drained.pop((lun_name, generation), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_frozen(self, lun_name: str, generation: int) -> None:
        """Wait until ``generation`` of ``lun_name`` is frozen (drained and journalled)."""
        if self._catalog.generation(lun_name, generation).state is VolumeState.FROZEN:
            return
        loop = asyncio.get_running_loop()
        waiter = self._drained.setdefault((lun_name, generation), loop.create_future())
        await asyncio.shield(waiter)

    async def _record(self, record: Record) -> None:
        try:
            await asyncio.to_thread(self._journal.append, encode(record))
        except BackendError:
            log.exception("journal write failed: %s", record)
            return
        self._catalog.apply(record)
