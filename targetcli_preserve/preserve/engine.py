"""The preserve engine: issue order, the cut, routing, replication and drain.

I/O-free in the style of h11: a driver feeds it events (a command issued, an I/O done,
a preserve asked for, a clone made) and carries out the actions it returns (do this
I/O on these volumes, make this clone, freeze that volume, complete that command).
It never touches a file, a socket or a clock, so it can be checked exhaustively.

Vocabulary. Each LUN has a list of *generations*: generation 0 is the volume it was
created with; a cut makes generation k+1 as a clone of generation k. A generation g
was cut at ``seq`` T_g and, once the next cut exists, must end up holding exactly the
effect of every command with seq < T_{g+1} (docs/design.md rule 6).

The rules, where they are enforced:

- Rule 1, issue order: :meth:`Engine.submit` gives every command the next value of one
  counter shared by all LUNs, and registers it in the LUN's lock table in that order.
- Rule 2, the cut: :meth:`Engine.cut` takes T = the next seq between two intakes (the
  caller is single-threaded, so that is atomic with intake) and waits for nothing.
- Rule 3, clone: the cut returns :class:`Clone` actions; generation k+1 is CLONING until
  every clone of the consistency group is made and the driver has journalled it
  (:meth:`Engine.commit`). Post-cut commands wait for that, nothing else does.
- Rules 4-5, routing: a command's *home* is the newest generation when it is issued.
  Reads go to the home only. A write goes to its home and to every generation cut while
  it is in flight (so pre-cut writes are replicated into the clone), holding its range
  lock until all are written; post-cut commands go to the clone only and wait only on
  overlapping locks (see :mod:`.locks`).
- Rule 6, drain: generation g is frozen once no command with seq < T_{g+1} is in flight.
- Rule 10, failure: a failed clone aborts the whole cut (post-cut commands are moved
  back home, nothing else notices); a failed replication fails that command and marks
  the cut damaged.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .._errors import UserError
from .locks import LockTable


class Op(enum.Enum):
    READ = "read"
    WRITE = "write"  # anything that changes blocks: WRITE, WRITE SAME, UNMAP, ...
    FLUSH = "flush"  # SYNCHRONIZE CACHE: no range; flushes its home generation


class VolumeState(enum.Enum):
    CLONING = "cloning"  # cut, clone not yet committed: post-cut commands wait
    LIVE = "live"  # the newest generation: where new commands go
    DRAINING = "draining"  # superseded, pre-cut commands still in flight
    FROZEN = "frozen"  # read-only: holds exactly the pre-cut image


class CutState(enum.Enum):
    CLONING = "cloning"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(eq=False)
class Command:
    """One SCSI command as the engine sees it: an op over blocks [start, end)."""

    seq: int
    lun_name: str
    op: Op
    start: int
    end: int
    home: int  # the generation it was issued against
    blockers: int = 0  # earlier overlapping in-flight writes still running
    waiters: list[Command] = field(default_factory=list)
    outstanding: set[int] = field(default_factory=set)  # generations with I/O running
    done: set[int] = field(default_factory=set)
    error: str | None = None
    finished: bool = False

    @property
    def is_write(self) -> bool:
        return self.op is Op.WRITE


@dataclass(eq=False)
class Generation:
    index: int
    cut_seq: int  # T of the cut that made it (0 for the original volume)
    state: VolumeState
    cut_id: int | None = None  # the cut that made it
    damaged: bool = False  # a pre-cut write failed to replicate into it


@dataclass(eq=False)
class Cut:
    id: int
    seq: int  # T: commands with seq < T are pre-cut
    luns: tuple[str, ...]
    new_generations: dict[str, int]
    state: CutState = CutState.CLONING
    pending_clones: set[str] = field(default_factory=set)
    error: str | None = None
    inflight_at_cut: dict[str, int] = field(default_factory=dict)  # pre-cut, per LUN
    issued_at_cut: dict[str, int] = field(default_factory=dict)  # commands before T, per LUN


# ---- actions: what the driver must do -------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Do ``cmd``'s I/O on these generations (a read: one; a write/flush: any)."""

    cmd: Command
    generations: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Complete:
    """``cmd`` is finished (``cmd.error`` says whether it failed): answer the initiator."""

    cmd: Command


@dataclass(frozen=True, slots=True)
class Clone:
    """Make generation ``new`` of ``lun`` as a clone of generation ``source``."""

    cut: Cut
    lun_name: str
    source: int
    new: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Every clone of ``cut`` is made: journal it, then call :meth:`Engine.commit`."""

    cut: Cut


@dataclass(frozen=True, slots=True)
class Discard:
    """Remove generation ``generation`` of ``lun``: its cut was aborted."""

    lun_name: str
    generation: int


@dataclass(frozen=True, slots=True)
class Freeze:
    """Generation ``generation`` of ``lun`` is drained: make it read-only."""

    lun_name: str
    generation: int


Action = Start | Complete | Clone | Commit | Discard | Freeze


@dataclass(frozen=True, slots=True)
class LockInfo:
    lun_name: str
    seq: int
    start: int
    end: int
    held: bool  # False while it still waits for an earlier overlapping write
    pre_cut: bool  # issued before the LUN's newest cut: replicating into the clone
    waiter_count: int  # commands waiting for this one


class _Lun:
    __slots__ = ("commands", "generations", "inflight_by_home", "issued", "locks", "name")

    def __init__(self, name: str, generations: list[Generation]) -> None:
        self.name = name
        self.generations = generations
        self.locks: LockTable[Command] = LockTable()
        self.inflight_by_home: dict[int, int] = {}  # home generation -> commands in flight
        self.commands: dict[int, Command] = {}  # seq -> command in flight, issue order
        self.issued = 0  # commands taken in since the daemon started

    @property
    def newest(self) -> Generation:
        return self.generations[-1]

    def generation(self, index: int) -> Generation:
        return self.generations[index - self.generations[0].index]


class Engine:
    """The whole engine; one per daemon (one seq counter for all LUNs)."""

    def __init__(self, first_seq: int = 0, first_cut: int = 1) -> None:
        self._next_seq = first_seq
        self._next_cut = first_cut
        self._luns: dict[str, _Lun] = {}

    # ---- configuration -------------------------------------------------------

    def add_lun(
        self, name: str, generations: Sequence[tuple[int, int, int | None]] = ((0, 0, None),)
    ) -> None:
        """Serve ``name``; ``generations`` lists (index, cut_seq, cut_id) oldest first,
        all but the newest already frozen (a restart resolves drains before adding)."""
        if name in self._luns:
            raise UserError(f"LUN {name!r} already exists")
        gens = [
            Generation(index, cut_seq, VolumeState.FROZEN, cut_id)
            for index, cut_seq, cut_id in generations
        ]
        gens[-1].state = VolumeState.LIVE
        self._luns[name] = _Lun(name, gens)

    def remove_lun(self, name: str) -> None:
        lun = self._lun(name)
        if any(lun.inflight_by_home.values()) or lun.newest.state is VolumeState.CLONING:
            raise UserError(f"LUN {name!r} is busy")
        del self._luns[name]

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def luns(self) -> list[str]:
        return list(self._luns)

    def generations(self, name: str) -> list[Generation]:
        return list(self._lun(name).generations)

    def inflight(self, name: str) -> int:
        return sum(self._lun(name).inflight_by_home.values())

    def issued(self, name: str) -> int:
        """Commands LUN ``name`` has taken in since the engine started."""
        return self._lun(name).issued

    def locks(self) -> list[LockInfo]:
        out: list[LockInfo] = []
        for lun in self._luns.values():
            newest_cut = lun.newest.cut_seq
            for cmd in lun.locks:
                out.append(
                    LockInfo(
                        lun.name,
                        cmd.seq,
                        cmd.start,
                        cmd.end,
                        cmd.blockers == 0,
                        cmd.seq < newest_cut,
                        len(cmd.waiters),
                    )
                )
        return out

    def _lun(self, name: str) -> _Lun:
        try:
            return self._luns[name]
        except KeyError:
            raise UserError(f"no LUN named {name!r}") from None

    # ---- events --------------------------------------------------------------

    def submit(
        self, lun_name: str, op: Op, start: int = 0, end: int = 0
    ) -> tuple[Command, list[Action]]:
        """Command intake: fix the command's seq (rule 1) and start it if it may."""
        lun = self._lun(lun_name)
        newest = lun.newest
        cmd = Command(self._next_seq, lun_name, op, start, end, newest.index)
        self._next_seq += 1
        lun.issued += 1
        lun.inflight_by_home[cmd.home] = lun.inflight_by_home.get(cmd.home, 0) + 1
        lun.commands[cmd.seq] = cmd
        actions: list[Action] = []
        if lun.locks.add(cmd) == 0:
            self._step(lun, cmd, actions)
        return cmd, actions

    def io_done(
        self, cmd: Command, generations: Iterable[int], error: str | None = None
    ) -> list[Action]:
        """The driver finished ``cmd``'s I/O on ``generations`` (``error`` if it failed)."""
        lun = self._luns[cmd.lun_name]
        actions: list[Action] = []
        for index in generations:
            cmd.outstanding.discard(index)
            cmd.done.add(index)
            if error is not None:
                if cmd.error is None:
                    cmd.error = error
                if index != cmd.home:
                    # Rule 10: a pre-cut write missing from the clone damages that preserve.
                    self._mark_damaged(lun, index)
        self._step(lun, cmd, actions)
        return actions

    def cut(self, lun_names: Sequence[str]) -> tuple[Cut, list[Action]]:
        """Take a cut over ``lun_names`` (a consistency group): one T for all (rule 2)."""
        names = tuple({name: None for name in lun_names})  # each once, in order
        if not names:
            raise UserError("preserve needs at least one LUN")
        luns = [self._lun(n) for n in names]
        for lun in luns:
            if lun.newest.state is VolumeState.CLONING:
                raise UserError(f"LUN {lun.name!r} is already being cut; try again")
        cut = Cut(self._next_cut, self._next_seq, names, {})
        self._next_cut += 1
        actions: list[Action] = []
        for lun in luns:
            source = lun.newest
            new = Generation(source.index + 1, cut.seq, VolumeState.CLONING, cut.id)
            lun.generations.append(new)
            cut.new_generations[lun.name] = new.index
            cut.pending_clones.add(lun.name)
            cut.inflight_at_cut[lun.name] = sum(lun.inflight_by_home.values())
            cut.issued_at_cut[lun.name] = lun.issued
            actions.append(Clone(cut, lun.name, source.index, new.index))
        return cut, actions

    def clone_done(self, cut: Cut, lun_name: str) -> list[Action]:
        """One clone of ``cut`` is made; when all are, ask the driver to commit."""
        if cut.state is not CutState.CLONING:
            return []
        cut.pending_clones.discard(lun_name)
        return [] if cut.pending_clones else [Commit(cut)]

    def clone_failed(self, cut: Cut, lun_name: str, error: str) -> list[Action]:
        """A clone failed: abort the whole cut with no effect on I/O (rule 10)."""
        if cut.state is not CutState.CLONING:
            return []
        cut.state = CutState.ABORTED
        cut.error = f"{lun_name}: {error}"
        actions: list[Action] = []
        for name in cut.luns:
            lun = self._luns[name]
            gone = lun.generations.pop()
            actions.append(Discard(name, gone.index))
            # Post-cut commands have not run anywhere yet: they simply go home.
            moved = lun.inflight_by_home.pop(gone.index, 0)
            if moved:
                lun.inflight_by_home[lun.newest.index] = (
                    lun.inflight_by_home.get(lun.newest.index, 0) + moved
                )
            for cmd in lun.commands.values():
                if cmd.home == gone.index:
                    cmd.home = lun.newest.index
            for cmd in self._live_commands(lun):
                self._step(lun, cmd, actions)
        return actions

    def commit(self, cut: Cut) -> list[Action]:
        """The driver journalled the clones: post-cut commands may run, replication
        into the clone may start, and drained generations freeze."""
        if cut.state is not CutState.CLONING or cut.pending_clones:
            raise RuntimeError(
                f"cut {cut.id} cannot commit: it is {cut.state.value}"
                f"{' with clones pending' if cut.pending_clones else ''}"
            )
        cut.state = CutState.COMMITTED
        actions: list[Action] = []
        for name in cut.luns:
            lun = self._luns[name]
            lun.newest.state = VolumeState.LIVE
            lun.generations[-2].state = VolumeState.DRAINING
            for cmd in self._live_commands(lun):
                self._step(lun, cmd, actions)
            self._freeze_drained(lun, actions)
        return actions

    # ---- internals -----------------------------------------------------------

    @staticmethod
    def _live_commands(lun: _Lun) -> list[Command]:
        """Commands of ``lun`` in flight and not blocked (blocked ones are stepped
        when they are unblocked), in issue order."""
        return [c for c in lun.commands.values() if c.blockers == 0]

    def _needed(self, lun: _Lun, cmd: Command) -> tuple[int, ...]:
        if cmd.op is not Op.WRITE:
            # A read reads its home. A FLUSH flushes its home: every write acknowledged
            # before it is there (a pre-cut one also reached the clone, which the
            # preserve makes durable itself, and a frozen volume was flushed to freeze).
            return (cmd.home,)
        # Rules 4-5: home plus every generation cut while the write is in flight.
        return tuple(range(cmd.home, lun.newest.index + 1))

    def _step(self, lun: _Lun, cmd: Command, actions: list[Action]) -> None:
        """Start whatever I/O ``cmd`` may do now, or complete it."""
        if cmd.finished or cmd.blockers:
            return
        ready: list[int] = []
        waiting = False
        for index in self._needed(lun, cmd):
            if index in cmd.done or index in cmd.outstanding:
                continue
            if cmd.error is not None:
                continue  # a failed command starts nothing more; it ends when idle
            if lun.generation(index).state is VolumeState.CLONING:
                waiting = True
            else:
                ready.append(index)
        if ready:
            cmd.outstanding.update(ready)
            actions.append(Start(cmd, tuple(ready)))
        elif not cmd.outstanding and not waiting:
            self._finish(lun, cmd, actions)

    def _finish(self, lun: _Lun, cmd: Command, actions: list[Action]) -> None:
        cmd.finished = True
        actions.append(Complete(cmd))
        lun.inflight_by_home[cmd.home] -= 1
        del lun.commands[cmd.seq]
        for freed in lun.locks.release(cmd):
            self._step(lun, freed, actions)
        self._freeze_drained(lun, actions)

    def _freeze_drained(self, lun: _Lun, actions: list[Action]) -> None:
        """Rule 6: generation g freezes once nothing with seq < T_{g+1} is in flight,
        i.e. no command whose home is g or older."""
        older_inflight = 0
        for gen in lun.generations[:-1]:
            older_inflight += lun.inflight_by_home.get(gen.index, 0)
            if gen.state is not VolumeState.DRAINING:
                continue
            if older_inflight:
                return
            gen.state = VolumeState.FROZEN
            actions.append(Freeze(lun.name, gen.index))

    def _mark_damaged(self, lun: _Lun, index: int) -> None:
        gen = lun.generation(index)
        gen.damaged = True
