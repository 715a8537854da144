"""The daemon's served LUNs, and bringing one more into service while it runs.

A LUN is served from the moment it has a LUN number in :attr:`LunSet.numbers`: its live
volume is open, the engine orders its commands, its standby clone is being prepared,
and the SCSI target answers for it. The same steps run for every way a LUN comes into
service: ``--lun`` at start, the control command ``create``, and (with ``--lio``) a
``user:preserve`` backstore an administrator made in targetcli. A LUN the state
directory does not know yet is created first (recovery.py: a volume without its
journal record is removed again), with the size, and the WWN if one is given, of the
request.
"""

from __future__ import annotations

import asyncio
import uuid

from ._errors import UserError
from .catalog import Catalog, LunRecord
from .datapath import Datapath
from .journal import Journal
from .options import LunSpec
from .preserve import Engine
from .recovery import create_lun
from .scsi.target import LogicalUnit, LuIdentity, ScsiTarget
from .volumes import open_volume


class LunSet:
    def __init__(
        self,
        catalog: Catalog,
        journal: Journal,
        engine: Engine,
        datapath: Datapath,
        target: ScsiTarget,
    ) -> None:
        self.catalog = catalog
        self.journal = journal
        self.engine = engine
        self.datapath = datapath
        self.target = target
        self.numbers: dict[str, int] = {}  # served LUN name -> LUN number
        self._lock = asyncio.Lock()  # one LUN at a time comes into service

    async def serve(self, spec: LunSpec) -> LunRecord:
        """Serve LUN ``spec.name``, creating it when the state directory has no such
        LUN; an existing LUN must have ``spec.size``. UserError when it is served
        already or differs."""
        async with self._lock:
            if spec.name in self.numbers:
                raise UserError(f"LUN {spec.name!r} is served already")
            record = self.catalog.luns.get(spec.name)
            if record is None:
                await create_lun(self.catalog, self.journal, spec)
                record = self.catalog.luns[spec.name]
            elif record.size != spec.size:
                raise UserError(
                    f"LUN {spec.name!r} exists with size {record.size}, not {spec.size}"
                )
            key = (spec.name, record.live.index)
            volume = await open_volume(self.catalog.volume_path(*key))
            try:
                self.engine.add_lun(
                    spec.name, [(g.index, g.cut_seq, g.cut_id) for g in record.generations]
                )
            except BaseException:
                await volume.close()
                raise
            self.datapath.volumes[key] = volume  # the data path closes it from here on
            self.datapath.prepare_standby(spec.name)
            identity = LuIdentity(name=spec.name, wwn=uuid.UUID(record.wwn))
            self.target.add_lun(
                record.number, LogicalUnit(self.datapath.store(spec.name), identity)
            )
            self.numbers[spec.name] = record.number
            return record
