"""What a starting daemon does to its state directory before any I/O (docs/design.md
rule 9): roll back the cuts a restart must not keep, freeze the generations whose
pre-cut commands the previous run's end cut off, remove volume files no record accounts
for, and create the LUNs that ``--lun`` names for the first time (transactionally).
catalog.py says which cuts a restart keeps, and why.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from ._errors import PreserveError
from .catalog import BLOCK_SIZE, Catalog
from .journal import Journal
from .options import LunSpec
from .records import CutAborted, GenerationFrozen, LunCreated, Record, encode, timestamp
from .volumes import create_volume, remove_volume

log = logging.getLogger(__name__)

_VOLUME_FILE = re.compile(r"vol-(\d{6})\.img\Z")


async def recover(catalog: Catalog, journal: Journal, boot: str) -> None:
    """Make the state directory consistent with its journal, under boot id ``boot``."""
    for cut in catalog.cuts_to_roll_back(boot):  # V stays (or is again) live
        for name, index in cut.luns.items():
            await remove_volume(catalog.volume_path(name, index))
        missing = "durable" if cut.committed else "committed"
        aborted = CutAborted(cut.id, f"the daemon stopped before the preserve was {missing}")
        _record(catalog, journal, aborted)
        log.warning("rolled back preserve %d at seq %d: %s", cut.id, cut.seq, aborted.error)
    for name, index in catalog.generations_to_freeze():  # its pre-cut commands ended
        _record(catalog, journal, GenerationFrozen(name, index))
    for name, lun in catalog.luns.items():  # clones begun before their ``cut`` record
        for index, path in _volume_files(catalog.lun_dir(name)):
            if index > lun.live.index:
                await remove_volume(path)


async def create_lun(catalog: Catalog, journal: Journal, spec: LunSpec) -> None:
    """Make LUN ``spec`` with the lowest free LUN number (docs/design.md section 6:
    creation is transactional: a volume without its record is removed again)."""
    lun_dir = catalog.lun_dir(spec.name)
    lun_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _, path in _volume_files(lun_dir):  # a creation that crashed before its record
        await remove_volume(path)
    path = catalog.volume_path(spec.name, 0)
    vol = await create_volume(path, spec.size)
    await vol.close()
    created = LunCreated(
        spec.name,
        spec.size,
        BLOCK_SIZE,
        spec.wwn or str(uuid.uuid4()),
        number=catalog.free_lun_number(),
        time=timestamp(),
    )
    try:
        _record(catalog, journal, created)
    except PreserveError:
        await remove_volume(path)
        raise


def _record(catalog: Catalog, journal: Journal, record: Record) -> None:
    journal.append(encode(record))
    catalog.apply(record)


def _volume_files(lun_dir: Path) -> list[tuple[int, Path]]:
    """(generation, path) of every volume image in ``lun_dir``, oldest first."""
    if not lun_dir.is_dir():
        return []
    found = []
    for path in lun_dir.iterdir():
        match = _VOLUME_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)
