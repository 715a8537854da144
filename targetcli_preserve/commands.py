"""The control socket's commands and their replies: what ``targetcli-preserve preserve``,
``status``, ``volumes``, ``locks`` and ``luns`` get from a running daemon.

Every reply is plain JSON data (targetcli-preserve(8) documents each field), built from
the catalog (what the journal says), the engine (what runs now) and the open volumes.
A preserve is named the same way in every reply: :func:`preserve_info`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import UserError
from .catalog import Catalog, CutRecord, check_lun_name
from .datapath import Datapath
from .options import Config, LunSpec, check_size
from .preserve import Engine, VolumeState
from .serving import LunSet
from .statedir import lun_list

if TYPE_CHECKING:
    from .kernel_target import KernelTarget


def preserve_info(cut: CutRecord) -> dict[str, Any]:
    """How every reply names a preserve: its id, the issue sequence number where it cut
    (commands with a lower ``seq`` are in the preserved image), and its time."""
    return {"id": cut.id, "seq": cut.seq, "time": cut.time}


@dataclass(frozen=True)
class ControlCommands:
    """The commands of one started daemon; ``luns_served`` are the LUNs it serves."""

    config: Config
    catalog: Catalog
    engine: Engine
    datapath: Datapath
    portal: str  # HOST:PORT initiators log in to
    luns_served: LunSet
    kernel: KernelTarget | None = None  # with --lio: the LUNs' TCMU devices

    @property
    def lun_numbers(self) -> dict[str, int]:
        """Served LUN name -> LUN number."""
        return self.luns_served.numbers

    def handlers(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "create": self.create,
            "preserve": self.preserve,
            "status": self.status,
            "volumes": self.volumes,
            "locks": self.locks,
            "luns": self.luns,
        }

    def _served(self, name: object) -> str:
        if not isinstance(name, str) or name not in self.lun_numbers:
            raise UserError(f"no LUN named {name!r} is served")
        return name

    async def preserve(self, names: list[str], wait: bool = False) -> dict[str, Any]:
        if not isinstance(names, list) or not names:
            raise UserError("preserve needs at least one LUN")
        names = [self._served(n) for n in names]
        cut = await self.datapath.preserve(names)
        await self.datapath.durable(cut)  # the admin's preserve survives a power loss
        if wait:
            await asyncio.gather(
                *(self.datapath.wait_frozen(n, cut.new_generations[n] - 1) for n in cut.luns)
            )
        return {
            **preserve_info(self.catalog.cuts[cut.id]),
            "luns": [
                {
                    "name": n,
                    "inflight_at_cut": cut.inflight_at_cut[n],
                    "issued_at_cut": cut.issued_at_cut[n],
                    "preserved": self._volume_info(n, cut.new_generations[n] - 1),
                    "live": self._volume_info(n, cut.new_generations[n]),
                }
                for n in cut.luns
            ],
        }

    async def status(self, name: str | None = None) -> dict[str, Any]:
        names = [self._served(name)] if name is not None else list(self.lun_numbers)
        return {
            "target": self.config.iqn,
            "portal": self.portal,
            "fabric": "lio" if self.kernel is not None else "builtin",
            # user:preserve on the system D-Bus, for stock targetcli (kernel_target.py)
            "dbus": self.kernel.dbus_mode if self.kernel is not None else None,
            "state_dir": str(self.config.state_dir),
            "next_seq": self.engine.next_seq,
            "luns": [self._lun_status(n) for n in names],
        }

    def _lun_status(self, name: str) -> dict[str, Any]:
        record = self.catalog.luns[name]
        gens = self.engine.generations(name)
        cuts = [self.catalog.cuts[g.cut_id] for g in gens if g.cut_id is not None]
        return {
            "name": name,
            "lun": self.lun_numbers[name],
            "size": record.size,
            "block_size": record.block_size,
            "wwn": record.wwn,
            "live": self._volume_info(name, gens[-1].index),
            "inflight": self.engine.inflight(name),
            "issued": self.engine.issued(name),
            "volumes": len(gens),
            "draining": sum(g.state is VolumeState.DRAINING for g in gens),
            "last_preserve": preserve_info(cuts[-1]) if cuts else None,
            "tcmu": self._tcmu(name),
        }

    def _tcmu(self, name: str) -> dict[str, Any] | None:
        """With --lio: the LUN's backstore and the uio device serving it (None while
        it is not served)."""
        if self.kernel is None:
            return None
        backstore = self.kernel.backstores.get(name)
        return {
            "backstore": f"user/{name}" if backstore else None,
            "uio": self.kernel.uio_of(name),
        }

    async def volumes(self, name: str) -> list[dict[str, Any]]:
        name = self._served(name)
        return [self._volume_info(name, g.index) for g in self.engine.generations(name)]

    def _volume_info(self, name: str, index: int) -> dict[str, Any]:
        gen = next(g for g in self.engine.generations(name) if g.index == index)
        vol = self.datapath.volumes.get((name, index))
        cut = self.catalog.cuts.get(gen.cut_id) if gen.cut_id is not None else None
        return {
            "generation": index,
            "path": str(self.catalog.volume_path(name, index)),
            "state": gen.state.value,
            "preserve": preserve_info(cut) if cut is not None else None,
            "damaged": gen.damaged,
            "clone": vol.strategy.value if vol is not None and vol.strategy else None,
            "hydrated": vol.hydration_progress() if vol is not None else None,
        }

    async def luns(self) -> list[dict[str, Any]]:
        return lun_list(self.catalog, served=set(self.lun_numbers))

    async def create(self, name: str, size: int) -> dict[str, Any]:
        """Serve a new LUN (or an existing one of the state directory that is not
        served, if ``size`` is its size) from now on; the reply is its ``luns`` entry.
        With ``--lio`` it is also made a backstore and exported like a ``--lun``."""
        if not isinstance(name, str):
            raise UserError(f"bad LUN name {name!r}")
        spec = LunSpec(check_lun_name(name), check_size(size))
        await self.luns_served.serve(spec)
        if self.kernel is not None:
            await self.kernel.add(spec.name)
        served = set(self.lun_numbers)
        return next(lun for lun in lun_list(self.catalog, served) if lun["name"] == spec.name)

    async def locks(self) -> list[dict[str, Any]]:
        return [
            {
                "name": lock.lun_name,
                "lun": self.lun_numbers[lock.lun_name],
                "seq": lock.seq,
                "lba": lock.start,
                "blocks": lock.end - lock.start,
                "state": "held" if lock.held else "waiting",
                "pre_cut": lock.pre_cut,
                "waiters": lock.waiter_count,
            }
            for lock in self.engine.locks()
        ]
