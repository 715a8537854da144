"""The catalog: what the state directory holds, rebuilt from the journal.

Layout of a state directory::

    STATE/journal                      the fsync'd step log (see journal.py)
    STATE/control.sock                 the daemon's control socket (0600)
    STATE/daemon.lock                  held by the running daemon
    STATE/luns/NAME/vol-000000.img     generation 0 of LUN NAME, then 000001, ...

The journal's records (records.py: a LUN created; a preserve's cut, commit, durable
or abort; a generation frozen or damaged) are folded by :func:`replay` into a
:class:`Catalog`.

What a restart keeps (rule 9, with the LUNs' write-back cache, rule 8): ``cut`` and
``commit`` are written without waiting for the disk, so a preserve costs no fsync on the
I/O path; ``durable`` follows in the background, and SYNCHRONIZE CACHE waits for it.
After a crash of the daemon alone (same boot id) the page cache kept everything: a
committed cut stays, an uncommitted one is rolled back. After a reboot only ``durable``
cuts are trusted; the others are rolled back, losing only post-cut writes that no
SYNCHRONIZE CACHE ever covered, which a write-back cache may lose. A superseded
generation that no command can reach any more is frozen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never

from ._errors import UserError
from .preserve import CutState, VolumeState
from .records import (
    CutAborted,
    CutCommitted,
    CutDurable,
    CutTaken,
    GenerationDamaged,
    GenerationFrozen,
    LunCreated,
    Record,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
BLOCK_SIZE = 512


def check_lun_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(
            f"bad LUN name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass
class GenerationRecord:
    index: int
    cut_seq: int
    cut_id: int | None
    state: VolumeState
    time: str | None = None
    damaged: bool = False


@dataclass
class LunRecord:
    name: str
    size: int
    block_size: int
    wwn: str
    number: int  # the SCSI LUN number: fixed at creation for as long as the LUN exists
    generations: list[GenerationRecord] = field(default_factory=list)

    @property
    def live(self) -> GenerationRecord:
        return self.generations[-1]


@dataclass
class CutRecord:
    id: int  # the preserve id
    seq: int  # T
    time: str
    luns: dict[str, int]
    boot: str | None = None
    state: CutState = CutState.CLONING
    durable: bool = False  # committed, and on stable storage with its clones

    @property
    def committed(self) -> bool:
        return self.state is CutState.COMMITTED

    @property
    def aborted(self) -> bool:
        return self.state is CutState.ABORTED


class Catalog:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.luns: dict[str, LunRecord] = {}
        self.cuts: dict[int, CutRecord] = {}

    # ---- paths -----------------------------------------------------------------

    def lun_dir(self, name: str) -> Path:
        return self.state_dir / "luns" / name

    def volume_path(self, name: str, index: int) -> Path:
        return self.lun_dir(name) / f"vol-{index:06d}.img"

    # ---- derived numbers -------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest cut T ever taken: a restarted daemon counts on from here."""
        return max((c.seq for c in self.cuts.values()), default=0)

    @property
    def next_cut_id(self) -> int:
        return max(self.cuts, default=0) + 1

    def free_lun_number(self) -> int:
        """The lowest LUN number no LUN of the state directory has (SAM-5 4.6: a LUN
        keeps its number, so an initiator never finds another LUN's data under it)."""
        taken = {lun.number for lun in self.luns.values()}
        return next(n for n in range(len(taken) + 1) if n not in taken)

    # ---- folding records -------------------------------------------------------

    def apply(self, record: Record) -> None:
        match record:
            case LunCreated():
                number = record.number
                self.luns[record.name] = LunRecord(
                    record.name,
                    record.size,
                    record.block_size,
                    record.wwn,
                    self.free_lun_number() if number is None else number,
                    [GenerationRecord(0, 0, None, VolumeState.LIVE, record.time)],
                )
            case CutTaken():
                cut = CutRecord(record.cut, record.seq, record.time, dict(record.luns), record.boot)
                self.cuts[cut.id] = cut
                for name, index in cut.luns.items():
                    self.luns[name].generations.append(
                        GenerationRecord(index, cut.seq, cut.id, VolumeState.CLONING, cut.time)
                    )
            case CutCommitted():
                cut = self.cuts[record.cut]
                cut.state = CutState.COMMITTED
                for name in cut.luns:
                    gens = self.luns[name].generations
                    gens[-1].state = VolumeState.LIVE
                    if gens[-2].state is VolumeState.LIVE:
                        gens[-2].state = VolumeState.DRAINING
            case CutDurable():
                self.cuts[record.cut].durable = True
            case CutAborted():
                cut = self.cuts[record.cut]
                cut.state = CutState.ABORTED
                for name, index in cut.luns.items():
                    gens = self.luns[name].generations
                    if gens and gens[-1].index == index:
                        gens.pop()
                        gens[-1].state = VolumeState.LIVE  # the source serves again
            case GenerationFrozen():
                self.generation(record.lun, record.gen).state = VolumeState.FROZEN
            case GenerationDamaged():
                self.generation(record.lun, record.gen).damaged = True
            case _:
                assert_never(record)

    def generation(self, name: str, index: int) -> GenerationRecord:
        for gen in self.luns[name].generations:
            if gen.index == index:
                return gen
        raise KeyError((name, index))

    def cuts_to_roll_back(self, boot: str) -> list[CutRecord]:
        """Cuts a restart must undo, newest first (see the module docstring)."""
        undo = []
        for cut in sorted(self.cuts.values(), key=lambda c: c.id, reverse=True):
            if cut.aborted:
                continue
            if not cut.committed or (not cut.durable and cut.boot != boot):
                undo.append(cut)
        return undo

    def generations_to_freeze(self) -> list[tuple[str, int]]:
        """Superseded generations whose pre-cut commands a stop has ended."""
        return [
            (lun.name, gen.index)
            for lun in self.luns.values()
            for gen in lun.generations
            if gen.state is VolumeState.DRAINING
        ]


def replay(state_dir: Path, records: Iterable[Record]) -> Catalog:
    catalog = Catalog(state_dir)
    for record in records:
        catalog.apply(record)
    return catalog
