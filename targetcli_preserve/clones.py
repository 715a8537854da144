"""Making the clone of a cut, ahead of the cut where that is possible.

A lazy clone (docs/design.md rule 3; its hydration copies or reflinks chunks) can be
made *before* the cut: while it has not started hydrating it holds nothing of its own
and reads everything through its source, so until the cut it is the source, exactly.
This module keeps one such *standby* per LUN, and the cut only starts its hydration. A
standby is never written before the cut; a crash leaves it as an orphan file that the
next start removes (recovery.py). A full clone, by contrast, is a copy of the moment
it is made: where the volumes only offer that, clones are made at the cut.
"""

from __future__ import annotations

import asyncio
import logging

from ._errors import BackendError, PreserveError
from .catalog import Catalog
from .preserve import Clone, Engine
from .volumes import LazyVolume, Volume, clone_volume, remove_volume

log = logging.getLogger(__name__)

Volumes = dict[tuple[str, int], Volume]  # (LUN name, generation) -> open volume


class Clones:
    def __init__(self, engine: Engine, catalog: Catalog, volumes: Volumes) -> None:
        self._engine = engine
        self._catalog = catalog
        self._volumes = volumes
        self._standby: dict[str, asyncio.Future[tuple[int, Volume] | None]] = {}
        self._full_clone_luns: set[str] = set()  # LUNs whose clones are full copies

    async def clone(self, action: Clone) -> None:
        """Make generation ``action.new`` of ``action.lun_name``: the standby if it is
        ready, otherwise a clone made now."""
        vol = await self._take_standby(action.lun_name, action.source)
        if vol is None:
            source = self._volumes[(action.lun_name, action.source)]
            path = self._catalog.volume_path(action.lun_name, action.new)
            try:
                vol = await clone_volume(source, path, background=False)
            except PreserveError as err:
                raise BackendError(f"{action.lun_name}: clone failed: {err}") from err
            if not isinstance(vol, LazyVolume):
                self._full_clone_luns.add(action.lun_name)
        self._volumes[(action.lun_name, action.new)] = vol

    def prepare_standby(self, lun_name: str) -> None:
        """Make the next cut of ``lun_name`` cheap, in the background."""
        if lun_name in self._full_clone_luns or lun_name in self._standby:
            return
        self._standby[lun_name] = asyncio.ensure_future(self._make_standby(lun_name))

    async def close(self) -> None:
        """Drop every standby: no cut will use it."""
        for lun_name in list(self._standby):
            await self._take_standby(lun_name, -1)

    async def _make_standby(self, lun_name: str) -> tuple[int, Volume] | None:
        newest = self._engine.generations(lun_name)[-1]
        source = self._volumes[(lun_name, newest.index)]
        path = self._catalog.volume_path(lun_name, newest.index + 1)
        try:
            vol = await clone_volume(source, path, background=False)
        except PreserveError as err:
            log.warning("no standby clone for %s: %s", lun_name, err)
            return None
        if not isinstance(vol, LazyVolume):  # a full copy of *now*: useless after a cut
            self._full_clone_luns.add(lun_name)
            await _drop(vol)
            return None
        return newest.index, vol

    async def _take_standby(self, lun_name: str, source: int) -> Volume | None:
        task = self._standby.pop(lun_name, None)
        if task is None:
            return None
        standby = await task
        if standby is None:
            return None
        index, vol = standby
        if index != source:  # cannot happen while cuts take it, but never guess
            await _drop(vol)
            return None
        return vol


async def _drop(vol: Volume) -> None:
    await vol.close()
    await remove_volume(vol.path)
