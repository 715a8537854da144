"""The preserve engine against a naive model (docs/design.md sections 2-3).

A hypothesis state machine drives the real :class:`Engine` with a simulated driver: a
few LUNs of ``BLOCKS`` blocks, each block a ``bytes`` value that names the write that
put it there, so every value read or found in a volume tells which write it came from.
The driver does what a real one may do: carry out the I/O of any pending ``Start`` at
any later time and in any order, report ``io_done`` for any subset of what it did, make
a clone at any time after the cut (so pre-cut writes may land on the source first),
fail a clone, commit. The model is the naive one: apply the writes of each LUN in issue
(seq) order.

Checked, against the model or the engine's own contract:

- rule 1: every write lands only after every earlier overlapping write has finished;
  after everything drains the live generation is all writes in seq order;
- rule 6: a generation, when it freezes, holds exactly the initial content plus every
  write with seq < T of the next cut, in seq order (aborted cuts have no effect);
- rules 4-5: no write ever reaches a generation older than its home; no command I/O
  ever reaches a CLONING, FROZEN or discarded generation; a command's ``blockers`` is
  at all times the number of earlier overlapping writes still in flight (so nothing
  waits on a range no earlier in-flight write holds) and a command that waits for
  nothing and for no clone is started at once (no global pause);
- reads: a read returns, block by block, the last earlier overlapping write (the model
  at its issue point) or a *later* write (writes never wait for reads; SCSI SIMPLE
  allows it), never anything older;
- rule 8: one ``Complete`` per command, only when all its started I/O is reported, and
  a successful write only after it reached its home and every generation cut while it
  was in flight;
- FLUSH flushes its home generation (every write acknowledged before it is there): at
  once, or, issued while its home is still being cloned, once the clone is committed;
- rule 10: an I/O error fails the command; an error on a replication target marks that
  generation damaged; a failed clone aborts the whole group (``Discard`` for each LUN)
  and the post-cut commands run at home instead;
- liveness: with no driver work outstanding every command has completed and every
  superseded generation has frozen.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from targetcli_preserve._errors import UserError
from targetcli_preserve.preserve import (
    Clone,
    Command,
    Commit,
    Complete,
    Cut,
    CutState,
    Discard,
    Engine,
    Freeze,
    Op,
    Start,
    VolumeState,
)

BLOCKS = 32
MAX_LEN = 10
LUN_NAMES = ("a", "b", "c")


def initial(lun: str, block: int) -> bytes:
    return b"init:%s:%d" % (lun.encode(), block)


def pattern(seq: int, block: int) -> bytes:
    """The data a write puts in ``block``: unique per write and per block."""
    return b"w%d:%d" % (seq, block)


def writer_of(lun: str, block: int, value: bytes) -> int:
    """The seq of the write that left ``value`` in ``block`` (-1: initial content)."""
    if value == initial(lun, block):
        return -1
    assert value.startswith(b"w"), f"garbage {value!r} in {lun}[{block}]"
    seq_s, block_s = value[1:].split(b":")
    assert int(block_s) == block, f"{value!r} landed in block {block} of {lun}"
    return int(seq_s)


@dataclass(eq=False)
class Rec:
    """What the simulated driver and the model know about one command."""

    cmd: Command
    seq: int
    lun_name: str
    op: Op
    start: int
    end: int
    completed: bool = False
    started: set[int] = field(default_factory=set)  # generations a Start named
    ok: set[int] = field(default_factory=set)  # generations its I/O reached
    failed: set[int] = field(default_factory=set)  # generations its I/O failed on

    @property
    def is_write(self) -> bool:
        return self.op is Op.WRITE and self.end > self.start

    def overlaps(self, other: Rec) -> bool:
        return self.start < other.end and other.start < self.end


class EngineModel(RuleBasedStateMachine):
    """See the module docstring. ``ERRORS`` turns I/O error injection on."""

    ERRORS = False

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.luns: list[str] = []
        self.vols: dict[tuple[str, int], list[bytes]] = {}
        self.frozen: set[tuple[str, int]] = set()
        self.recs: list[Rec] = []  # in seq order
        self.by_cmd: dict[int, Rec] = {}  # id(cmd) -> rec
        self.pending_io: list[tuple[Rec, int]] = []  # started, not yet carried out
        self.performed: list[tuple[Rec, int, bool]] = []  # carried out, not reported
        self.pending_clones: list[Clone] = []
        self.cloned: dict[int, set[str]] = {}  # cut id -> LUNs whose clone is done
        self.pending_commits: list[Cut] = []
        self.cuts: list[Cut] = []
        self.damaged: set[tuple[str, int]] = set()  # replication errors of writes

    # ---- the model ---------------------------------------------------------------

    def allowed(self, lun: str, block: int, below: int) -> set[int]:
        """Writers block ``block`` of ``lun`` may hold once every write with
        seq < ``below`` took effect in seq order: exactly one, unless a failed write
        (undefined content in its range) is involved."""
        out = {-1}
        for rec in self.recs:
            if rec.seq >= below:
                break
            if rec.lun_name != lun or not rec.is_write or not rec.start <= block < rec.end:
                continue
            if rec.cmd.error is not None:
                out.add(rec.seq)  # failed: may or may not have landed
            else:
                out = {rec.seq}
        return out

    def check_image(self, lun: str, gen: int, below: int, what: str) -> None:
        vol = self.vols[(lun, gen)]
        for block in range(BLOCKS):
            got = writer_of(lun, block, vol[block])
            want = self.allowed(lun, block, below)
            assert got in want, (
                f"{what}: {lun} generation {gen} block {block} holds write {got}, "
                f"model (writes with seq < {below} in seq order) says {sorted(want)}"
            )

    def gen_state(self, lun: str, index: int) -> VolumeState | None:
        for gen in self.engine.generations(lun):
            if gen.index == index:
                return gen.state
        return None

    def earlier_inflight_writes(self, rec: Rec) -> list[Rec]:
        return [
            o
            for o in self.recs
            if o.seq < rec.seq
            and o.lun_name == rec.lun_name
            and o.is_write
            and not o.completed
            and rec.end > rec.start
            and o.overlaps(rec)
        ]

    def outstanding(self, rec: Rec) -> bool:
        return any(r is rec for r, _ in self.pending_io) or any(
            r is rec for r, _, _ in self.performed
        )

    # ---- carrying out actions ----------------------------------------------------

    def apply(self, actions: list, *, event: str, cut: Cut | None = None) -> None:
        for action in actions:
            if isinstance(action, Start):
                self.on_start(action)
            elif isinstance(action, Complete):
                self.on_complete(action)
            elif isinstance(action, Freeze):
                self.on_freeze(action)
            elif isinstance(action, Clone):
                assert event == "cut" and action.cut is cut, f"Clone out of a {event}"
                self.pending_clones.append(action)
            elif isinstance(action, Commit):
                assert event == "clone_done", f"Commit out of a {event}"
                c = action.cut
                assert self.cloned[c.id] == set(c.luns), "Commit before every clone is made"
                assert c not in self.pending_commits
                self.pending_commits.append(c)
            elif isinstance(action, Discard):
                assert event == "clone_failed", f"Discard out of a {event}"
                self.on_discard(action)
            else:  # pragma: no cover
                raise TypeError(f"unknown action {action!r}")

    def on_start(self, action: Start) -> None:
        rec = self.by_cmd[id(action.cmd)]
        cmd = action.cmd
        assert not rec.completed, f"Start after Complete of seq {rec.seq}"
        assert cmd.blockers == 0, f"Start of seq {rec.seq} while it still waits"
        assert action.generations, "Start with no generation"
        assert len(set(action.generations)) == len(action.generations)
        for gen in action.generations:
            state = self.gen_state(rec.lun_name, gen)
            assert state in (VolumeState.LIVE, VolumeState.DRAINING), (
                f"seq {rec.seq} ({rec.op.name}) started on {rec.lun_name} generation {gen} "
                f"in state {state}"
            )
            assert gen not in rec.started, f"seq {rec.seq} started twice on generation {gen}"
            rec.started.add(gen)
            self.pending_io.append((rec, gen))
        if rec.op is Op.WRITE:
            for gen in action.generations:
                assert gen >= cmd.home, (
                    f"write seq {rec.seq} (home {cmd.home}) reaches older generation {gen}"
                )
        else:
            assert action.generations == (cmd.home,), f"a {rec.op.name} goes to its home only"
        if rec.op is not Op.FLUSH:
            # Rule 1: locks are granted in issue order.
            for other in self.earlier_inflight_writes(rec):
                raise AssertionError(
                    f"seq {rec.seq} started while earlier overlapping write "
                    f"seq {other.seq} is still in flight"
                )

    def on_complete(self, action: Complete) -> None:
        rec = self.by_cmd[id(action.cmd)]
        cmd = action.cmd
        assert not rec.completed, f"second Complete for seq {rec.seq}"
        assert not self.outstanding(rec), f"Complete of seq {rec.seq} with I/O outstanding"
        assert rec.started, f"Complete of seq {rec.seq} that never did any I/O"
        rec.completed = True
        if rec.failed:
            assert cmd.error is not None, f"seq {rec.seq} had an I/O error, completed fine"
            return
        assert cmd.error is None, f"seq {rec.seq} failed ({cmd.error}) without an I/O error"
        if rec.op is not Op.WRITE:
            assert rec.ok == {cmd.home}, f"{rec.op.name} seq {rec.seq} did {sorted(rec.ok)}"
        else:
            # Rule 8: home and every generation cut while it was in flight.
            need = {g.index for g in self.engine.generations(rec.lun_name) if g.index >= cmd.home}
            assert need <= rec.ok, (
                f"write seq {rec.seq} acknowledged having reached {sorted(rec.ok)}, "
                f"needs {sorted(need)}"
            )

    def on_freeze(self, action: Freeze) -> None:
        key = (action.lun_name, action.generation)
        assert key not in self.frozen, f"second Freeze of {key}"
        gens = self.engine.generations(action.lun_name)
        indexes = [g.index for g in gens]
        assert action.generation in indexes and action.generation != indexes[-1]
        nxt = gens[indexes.index(action.generation) + 1]
        assert nxt.state is not VolumeState.CLONING, "Freeze before the next cut committed"
        for rec, gen in self.pending_io:
            assert (rec.lun_name, gen) != key, f"Freeze of {key} while seq {rec.seq} has I/O on it"
        for rec, gen, _ in self.performed:
            assert (rec.lun_name, gen) != key, f"Freeze of {key} while seq {rec.seq} has I/O on it"
        for rec in self.recs:
            if rec.lun_name == action.lun_name and not rec.completed:
                assert rec.seq >= nxt.cut_seq, (
                    f"Freeze of {key} while pre-cut seq {rec.seq} is in flight"
                )
        # Rule 6: exactly every write with seq < T of the next cut, in seq order.
        self.check_image(action.lun_name, action.generation, nxt.cut_seq, "at Freeze")
        self.frozen.add(key)

    def on_discard(self, action: Discard) -> None:
        key = (action.lun_name, action.generation)
        for rec, gen in self.pending_io:
            assert (rec.lun_name, gen) != key, "I/O started on a generation being discarded"
        for rec in self.recs:
            assert action.generation not in rec.ok | rec.failed or rec.lun_name != action.lun_name
        self.vols.pop(key, None)

    # ---- rules -------------------------------------------------------------------

    @initialize(n=st.integers(1, 3))
    def add_luns(self, n: int) -> None:
        for name in LUN_NAMES[:n]:
            self.engine.add_lun(name)
            self.luns.append(name)
            self.vols[(name, 0)] = [initial(name, b) for b in range(BLOCKS)]

    @rule(data=st.data())
    def submit(self, data: st.DataObject) -> None:
        lun = data.draw(st.sampled_from(self.luns), label="lun")
        op = data.draw(st.sampled_from([Op.READ, Op.WRITE, Op.WRITE, Op.WRITE, Op.FLUSH]))
        if op is Op.FLUSH:
            start = end = 0
        else:
            start = data.draw(st.integers(0, BLOCKS - 1), label="start")
            # Length 0 sometimes: a zero-length transfer touches no block, waits for none.
            end = min(BLOCKS, start + data.draw(st.integers(0, MAX_LEN), label="len"))
        seq = self.engine.next_seq
        assert seq == len(self.recs)
        gens_before = self.engine.generations(lun)
        newest = gens_before[-1]
        cmd, actions = self.engine.submit(lun, op, start, end)
        assert cmd.seq == seq and self.engine.next_seq == seq + 1
        assert cmd.home == newest.index, "a command's home is the newest generation"
        rec = Rec(cmd, seq, lun, op, start, end)
        waits_for = self.earlier_inflight_writes(rec)
        self.recs.append(rec)
        self.by_cmd[id(cmd)] = rec
        assert cmd.blockers == len(waits_for), (
            f"seq {seq} {op.name} [{start},{end}) waits for {cmd.blockers}, "
            f"earlier overlapping writes in flight: {[w.seq for w in waits_for]}"
        )
        self.apply(actions, event="submit")
        if not waits_for and newest.state is not VolumeState.CLONING:
            assert rec.started == {cmd.home}, f"seq {seq} waits for nothing, yet not started"
        else:
            assert not rec.started, f"seq {seq} started before its lock or its clone"

    @precondition(lambda self: self.pending_io)
    @rule(data=st.data())
    def perform_io(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.pending_io) - 1), label="io")
        rec, gen = self.pending_io.pop(i)
        key = (rec.lun_name, gen)
        assert key in self.vols, f"I/O of seq {rec.seq} on missing volume {key}"
        assert key not in self.frozen, f"{rec.op.name} seq {rec.seq} carried out on frozen {key}"
        # Errors on replication targets are rarer events, so inject them more often.
        odds = 3 if rec.op is Op.WRITE and gen != rec.cmd.home else 10
        fail = self.ERRORS and data.draw(st.integers(1, odds), label="fail") == 1
        if not fail:
            vol = self.vols[key]
            if rec.op is Op.WRITE:
                for b in range(rec.start, rec.end):
                    vol[b] = pattern(rec.seq, b)
            elif rec.op is Op.READ:
                # Not older than the model at issue; a later write may have landed.
                for b in range(rec.start, rec.end):
                    got = writer_of(rec.lun_name, b, vol[b])
                    want = self.allowed(rec.lun_name, b, rec.seq)
                    later = got > rec.seq and self.recs[got].cmd.home <= gen
                    assert got in want or later, (
                        f"read seq {rec.seq} of {rec.lun_name} generation {gen} block {b} saw "
                        f"write {got}; model at issue says {sorted(want)} (or a later "
                        f"write whose home is not newer than {gen})"
                    )
        self.performed.append((rec, gen, fail))

    @precondition(lambda self: self.performed)
    @rule(data=st.data())
    def report_io(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.performed) - 1), label="done")
        rec, _gen, fail = self.performed[i]
        # The driver may report several generations of one command at once.
        same = [j for j, (r, _, f) in enumerate(self.performed) if r is rec and f == fail]
        extra = data.draw(st.sets(st.sampled_from(same)), label="with") if len(same) > 1 else set()
        chosen = sorted({i} | extra)
        gens = [self.performed[j][1] for j in chosen]
        for j in reversed(chosen):
            del self.performed[j]
        gens = data.draw(st.permutations(gens), label="order")
        home = rec.cmd.home
        for g in gens:
            (rec.failed if fail else rec.ok).add(g)
            if fail and g != home:
                self.damaged.add((rec.lun_name, g))
        actions = self.engine.io_done(rec.cmd, gens, error="EIO" if fail else None)
        if fail:
            assert rec.cmd.error is not None
        self.apply(actions, event="io_done")

    @rule(data=st.data())
    def cut(self, data: st.DataObject) -> None:
        luns = data.draw(
            st.lists(st.sampled_from(self.luns), min_size=1, max_size=4), label="group"
        )
        group = list(dict.fromkeys(luns))
        busy = [n for n in group if self.engine.generations(n)[-1].state is VolumeState.CLONING]
        before = {n: self.engine.generations(n)[-1].index for n in group}
        t = self.engine.next_seq
        if busy:
            with pytest.raises(UserError):
                self.engine.cut(luns)
            for n in group:
                assert self.engine.generations(n)[-1].index == before[n], "failed cut left a mark"
            return
        c, actions = self.engine.cut(luns)
        assert c.seq == t and self.engine.next_seq == t, "the cut takes T = next seq"
        assert c.state is CutState.CLONING and c.luns == tuple(group)
        assert [type(a) for a in actions] == [Clone] * len(group), "a cut only clones"
        for n in group:
            newest = self.engine.generations(n)[-1]
            assert newest.index == before[n] + 1 and newest.cut_seq == t
            assert newest.state is VolumeState.CLONING
            assert (n, newest.index) not in self.vols
        assert {(a.lun_name, a.source, a.new) for a in actions} == {
            (n, before[n], before[n] + 1) for n in group
        }
        self.cuts.append(c)
        self.cloned[c.id] = set()
        self.apply(actions, event="cut", cut=c)

    @precondition(lambda self: self.pending_clones)
    @rule(data=st.data())
    def clone(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.pending_clones) - 1), label="clone")
        action = self.pending_clones.pop(i)
        fail = data.draw(st.integers(0, 4), label="clone_fails") == 0
        if fail:
            self.abort(action)
            return
        source = (action.lun_name, action.source)
        assert self.gen_state(action.lun_name, action.source) is VolumeState.LIVE
        assert self.gen_state(action.lun_name, action.new) is VolumeState.CLONING
        # The copy is taken now, not at the cut.
        self.vols[(action.lun_name, action.new)] = list(self.vols[source])
        self.cloned[action.cut.id].add(action.lun_name)
        self.apply(self.engine.clone_done(action.cut, action.lun_name), event="clone_done")

    def abort(self, action: Clone) -> None:
        c = action.cut
        homes = {
            id(r.cmd): r.cmd.home
            for r in self.recs
            if not r.completed
            and r.lun_name in c.luns
            and r.cmd.home == c.new_generations[r.lun_name]
        }
        actions = self.engine.clone_failed(c, action.lun_name, "no space")
        assert c.state is CutState.ABORTED and c.error
        discards = {(a.lun_name, a.generation) for a in actions if isinstance(a, Discard)}
        assert discards == {(n, c.new_generations[n]) for n in c.luns}, "abort the whole group"
        self.pending_clones = [p for p in self.pending_clones if p.cut is not c]
        self.apply(actions, event="clone_failed")
        for n in c.luns:
            newest = self.engine.generations(n)[-1]
            assert newest.index == c.new_generations[n] - 1
            assert newest.state is VolumeState.LIVE
        for r in self.recs:
            if id(r.cmd) in homes and not r.completed:
                assert r.cmd.home == homes[id(r.cmd)] - 1, "post-cut command not moved home"

    @precondition(lambda self: self.pending_commits)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.pending_commits) - 1), label="commit")
        c = self.pending_commits.pop(i)
        self.apply(self.engine.commit(c), event="commit")
        assert c.state is CutState.COMMITTED
        for n in c.luns:
            gens = self.engine.generations(n)
            assert gens[-1].index == c.new_generations[n]
            assert gens[-1].state is VolumeState.LIVE
            assert gens[-2].state in (VolumeState.DRAINING, VolumeState.FROZEN)

    @rule(data=st.data())
    def quiesce(self, data: st.DataObject) -> None:
        # Not too often: the interesting states have much in flight.
        if data.draw(st.integers(0, 2), label="quiesce") == 0:
            self.drain()

    # ---- draining everything -----------------------------------------------------

    def drain(self) -> None:
        """Do all outstanding driver work (no new failures), oldest first."""
        for _ in range(10_000):
            if self.pending_commits:
                c = self.pending_commits.pop(0)
                self.apply(self.engine.commit(c), event="commit")
            elif self.pending_clones:
                a = self.pending_clones.pop(0)
                self.vols[(a.lun_name, a.new)] = list(self.vols[(a.lun_name, a.source)])
                self.cloned[a.cut.id].add(a.lun_name)
                self.apply(self.engine.clone_done(a.cut, a.lun_name), event="clone_done")
            elif self.pending_io:
                rec, gen = self.pending_io[0]
                key = (rec.lun_name, gen)
                assert key not in self.frozen
                if rec.op is Op.WRITE:
                    for b in range(rec.start, rec.end):
                        self.vols[key][b] = pattern(rec.seq, b)
                self.pending_io.pop(0)
                self.performed.append((rec, gen, False))
            elif self.performed:
                rec, gen, fail = self.performed.pop()
                (rec.failed if fail else rec.ok).add(gen)
                if fail and gen != rec.cmd.home:
                    self.damaged.add((rec.lun_name, gen))
                self.apply(
                    self.engine.io_done(rec.cmd, [gen], "EIO" if fail else None),
                    event="io_done",
                )
            else:
                break
        self.check_quiet()

    def check_quiet(self) -> None:
        for rec in self.recs:
            assert rec.completed, f"seq {rec.seq} never completed (engine stuck)"
        assert self.engine.locks() == []
        for lun in self.luns:
            assert self.engine.inflight(lun) == 0
            gens = self.engine.generations(lun)
            assert gens[-1].state is VolumeState.LIVE
            for g in gens[:-1]:
                assert g.state is VolumeState.FROZEN, f"{lun} generation {g.index} never froze"
                assert (lun, g.index) in self.frozen
            # Rule 1: the live generation is every write, in issue order.
            self.check_image(lun, gens[-1].index, self.engine.next_seq, "drained, live")

    def teardown(self) -> None:
        # Hypothesis runs this in a ``finally``: drain only after a clean run, so a
        # failing step is reported as itself and not as a stuck drain.
        if self.luns and sys.exc_info()[0] is None:
            self.drain()

    # ---- invariants --------------------------------------------------------------

    @invariant()
    def structure(self) -> None:
        if not self.luns:
            return
        assert self.engine.next_seq == len(self.recs)
        for lun in self.luns:
            gens = self.engine.generations(lun)
            states = [g.state for g in gens]
            assert [g.index for g in gens] == list(range(gens[0].index, gens[-1].index + 1))
            assert [g.cut_seq for g in gens] == sorted(g.cut_seq for g in gens)
            tail = states[-2:] if states[-1] is VolumeState.CLONING else states[-1:]
            assert tail in ([VolumeState.LIVE], [VolumeState.LIVE, VolumeState.CLONING]), states
            older = states[: len(states) - len(tail)]
            assert all(s in (VolumeState.FROZEN, VolumeState.DRAINING) for s in older), states
            assert older == sorted(older, key=lambda s: s is VolumeState.DRAINING), (
                f"a frozen generation after a draining one: {states}"
            )
            for g in gens:
                assert g.state is VolumeState.FROZEN or (lun, g.index) not in self.frozen
                if g.state is VolumeState.DRAINING:
                    # Freeze promptly: something pre-cut must still be in flight.
                    assert any(
                        r.lun_name == lun and not r.completed and r.cmd.home <= g.index
                        for r in self.recs
                    ), f"{lun} generation {g.index} drained but not frozen"
                assert g.damaged == ((lun, g.index) in self.damaged), (
                    f"{lun} generation {g.index} damaged={g.damaged}"
                )
            inflight = [r for r in self.recs if r.lun_name == lun and not r.completed]
            assert self.engine.inflight(lun) == len(inflight)
            locks = [
                (info.seq, info.start, info.end)
                for info in self.engine.locks()
                if info.lun_name == lun
            ]
            assert locks == [(r.seq, r.start, r.end) for r in inflight if r.is_write]
        newest_cloning = {
            lun: self.engine.generations(lun)[-1].state is VolumeState.CLONING for lun in self.luns
        }
        for rec in self.recs:
            if rec.completed:
                assert rec.cmd.finished
                continue
            waits_for = self.earlier_inflight_writes(rec)
            assert rec.cmd.blockers == len(waits_for), (
                f"seq {rec.seq} blockers={rec.cmd.blockers}, "
                f"earlier overlapping writes in flight: {[w.seq for w in waits_for]}"
            )
            if waits_for or self.outstanding(rec):
                continue
            # Liveness: waiting for nothing and doing nothing is only allowed while the
            # clone it needs is still being made.
            newest = self.engine.generations(rec.lun_name)[-1].index
            assert (
                newest_cloning[rec.lun_name]
                and (rec.op is Op.WRITE or rec.cmd.home == newest)
                and rec.cmd.error is None
            ), f"seq {rec.seq} ({rec.op.name}) is stuck"


EngineModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineModel = EngineModel.TestCase


class EngineModelWithErrors(EngineModel):
    ERRORS = True


EngineModelWithErrors.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineModelWithErrors = EngineModelWithErrors.TestCase
