"""The preserve engine, rule by rule (docs/design.md section 2), with hand-written event
sequences. The exhaustive check is tests/property/test_engine_model.py."""

from __future__ import annotations

import pytest

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

R, W, F = Op.READ, Op.WRITE, Op.FLUSH
LIVE, CLONING = VolumeState.LIVE, VolumeState.CLONING
DRAINING, FROZEN = VolumeState.DRAINING, VolumeState.FROZEN


def starts(actions: list) -> list[tuple[int, tuple[int, ...]]]:
    return [(a.cmd.seq, a.generations) for a in actions if isinstance(a, Start)]


def completes(actions: list) -> list[int]:
    return [a.cmd.seq for a in actions if isinstance(a, Complete)]


def freezes(actions: list) -> list[tuple[str, int]]:
    return [(a.lun_name, a.generation) for a in actions if isinstance(a, Freeze)]


def states(e: Engine, lun: str = "a") -> list[tuple[int, VolumeState]]:
    return [(g.index, g.state) for g in e.generations(lun)]


def make(*luns: str) -> Engine:
    e = Engine()
    for lun in luns or ("a",):
        e.add_lun(lun)
    return e


def preserve(e: Engine, luns: list[str]) -> tuple[Cut, list]:
    """Cut, make every clone, commit: return the cut and the commit's actions."""
    cut, actions = e.cut(luns)
    out: list = []
    for a in actions:
        out += e.clone_done(cut, a.lun_name)
    assert out == [Commit(cut)]
    return cut, e.commit(cut)


# ---- intake and issue order (rule 1) ------------------------------------------------


def test_seq_is_one_counter_for_all_luns() -> None:
    e = make("a", "b")
    seqs = [e.submit(lun, R, 0, 1)[0].seq for lun in ("a", "b", "a", "b")]
    assert seqs == [0, 1, 2, 3]
    assert e.next_seq == 4
    assert Engine(first_seq=100).next_seq == 100


def test_command_that_waits_for_nothing_starts_at_once() -> None:
    e = make()
    _w, actions = e.submit("a", W, 0, 8)
    assert starts(actions) == [(0, (0,))]
    _r, actions = e.submit("a", R, 8, 16)
    assert starts(actions) == [(1, (0,))]
    _f, actions = e.submit("a", F)
    assert starts(actions) == [(2, (0,))]


def test_overlapping_writes_in_issue_order() -> None:
    e = make()
    w1, _ = e.submit("a", W, 0, 8)
    w2, actions = e.submit("a", W, 4, 12)
    assert actions == [] and w2.blockers == 1
    # Other LUNs have their own lock table.
    e.add_lun("b")
    _, actions = e.submit("b", W, 0, 8)
    assert starts(actions) == [(2, (0,))]
    actions = e.io_done(w1, [0])
    assert completes(actions) == [0]
    assert starts(actions) == [(1, (0,))]
    assert completes(e.io_done(w2, [0])) == [1]
    assert e.inflight("a") == 0


def test_read_waits_for_earlier_write_and_later_write_never_waits_for_read() -> None:
    e = make()
    w1, _ = e.submit("a", W, 0, 8)
    r, actions = e.submit("a", R, 0, 8)
    assert actions == [] and r.blockers == 1
    w2, actions = e.submit("a", W, 0, 8)
    assert w2.blockers == 1, "w2 waits for w1 only, not for the read"
    actions = e.io_done(w1, [0])
    assert starts(actions) == [(1, (0,)), (2, (0,))]


def test_complete_once_after_all_io() -> None:
    e = make()
    _cut, _ = preserve(e, ["a"])
    w, _ = e.submit("a", W, 0, 4)
    actions = e.io_done(w, [1])
    assert completes(actions) == [w.seq] and w.finished
    assert e.inflight("a") == 0
    # A stray duplicate report does not complete it again.
    assert completes(e.io_done(w, [1])) == []


# ---- the cut (rule 2) and the clone (rule 3) -----------------------------------------


def test_cut_takes_t_without_waiting() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)  # in flight, not even started by the driver
    r, _ = e.submit("a", R, 10, 12)
    cut, actions = e.cut(["a"])
    assert cut.seq == 2 == e.next_seq
    assert cut.state is CutState.CLONING and cut.luns == ("a",)
    assert actions == [Clone(cut, "a", 0, 1)], "the cut only asks for a clone"
    assert cut.inflight_at_cut == {"a": 2}
    assert states(e) == [(0, LIVE), (1, CLONING)]
    assert e.generations("a")[1].cut_seq == 2
    nxt, _ = e.submit("a", R, 20, 22)
    assert nxt.seq == 2 and nxt.home == 1
    assert w.home == 0 and r.home == 0
    # Pre-cut commands carry on: the read completes during the clone.
    assert completes(e.io_done(r, [0])) == [1]


def test_issued_counts_each_luns_commands_and_the_cut_records_them() -> None:
    e = make("a", "b")
    for lun in ("a", "b", "a"):
        e.submit(lun, R, 0, 1)
    assert (e.issued("a"), e.issued("b")) == (2, 1)
    cut, _ = e.cut(["a", "b"])
    assert cut.issued_at_cut == {"a": 2, "b": 1}  # the commands of each LUN before T
    e.submit("b", W, 0, 1)  # post-cut: counted from now on, not in the cut
    assert e.issued("b") == 2 and cut.issued_at_cut["b"] == 1


def test_cut_needs_a_known_lun() -> None:
    e = make()
    with pytest.raises(UserError):
        e.cut([])
    with pytest.raises(UserError):
        e.cut(["nope"])
    with pytest.raises(UserError):
        e.submit("nope", R, 0, 1)
    assert states(e) == [(0, LIVE)]


def test_second_cut_while_cloning_raises() -> None:
    e = make("a", "b")
    cut, _ = e.cut(["a"])
    with pytest.raises(UserError):
        e.cut(["a"])
    with pytest.raises(UserError):
        e.cut(["b", "a"])
    assert states(e, "b") == [(0, LIVE)], "a refused cut leaves no trace"
    assert states(e) == [(0, LIVE), (1, CLONING)]
    e.clone_done(cut, "a")
    e.commit(cut)
    cut2, actions = e.cut(["a"])
    assert actions == [Clone(cut2, "a", 1, 2)]
    assert cut2.id == cut.id + 1


def test_commit_only_when_every_clone_is_made() -> None:
    e = make("a", "b", "c")
    cut, actions = e.cut(["a", "b", "a"])
    assert cut.luns == ("a", "b")
    assert sorted((a.lun_name, a.source, a.new) for a in actions) == [("a", 0, 1), ("b", 0, 1)]
    assert e.clone_done(cut, "b") == []
    assert e.clone_done(cut, "a") == [Commit(cut)]
    e.commit(cut)
    assert cut.state is CutState.COMMITTED
    assert states(e, "c") == [(0, LIVE)]


def test_multi_lun_cut_shares_t() -> None:
    e = make("a", "b")
    wa, _ = e.submit("a", W, 0, 4)
    wb, _ = e.submit("b", W, 0, 4)
    cut, _ = e.cut(["a", "b"])
    assert cut.seq == 2
    assert e.generations("a")[1].cut_seq == e.generations("b")[1].cut_seq == 2
    pa, _ = e.submit("a", W, 8, 12)
    pb, _ = e.submit("b", W, 8, 12)
    assert (pa.home, pb.home) == (1, 1)
    assert (wa.home, wb.home) == (0, 0)
    assert cut.new_generations == {"a": 1, "b": 1}


# ---- routing: pre-cut and post-cut commands (rules 4, 5) ---------------------------


def test_pre_cut_write_is_replicated_into_the_clone() -> None:
    e = make()
    w, actions = e.submit("a", W, 0, 8)
    assert starts(actions) == [(0, (0,))]
    cut, _ = e.cut(["a"])
    actions = e.io_done(w, [0])
    assert actions == [], "not acknowledged before it reached the clone (rule 8)"
    assert not w.finished
    assert e.clone_done(cut, "a") == [Commit(cut)]
    actions = e.commit(cut)
    assert starts(actions) == [(0, (1,))]
    assert freezes(actions) == []
    assert states(e) == [(0, DRAINING), (1, LIVE)]
    actions = e.io_done(w, [1])
    assert completes(actions) == [0]
    assert freezes(actions) == [("a", 0)]
    assert states(e) == [(0, FROZEN), (1, LIVE)]


def test_pre_cut_write_not_yet_started_at_the_cut_goes_to_both() -> None:
    e = make()
    w1, _ = e.submit("a", W, 0, 8)
    w2, _ = e.submit("a", W, 4, 12)  # waits for w1
    _cut, actions = preserve(e, ["a"])
    assert starts(actions) == [(0, (1,))], "w1 replicates, w2 still waits"
    assert e.io_done(w1, [0]) == []
    actions = e.io_done(w1, [1])
    assert completes(actions) == [0]
    assert starts(actions) == [(1, (0, 1))]
    assert w2.home == 0
    actions = e.io_done(w2, [1, 0])
    assert completes(actions) == [1] and freezes(actions) == [("a", 0)]


def test_post_cut_commands_wait_for_the_commit() -> None:
    e = make()
    cut, _ = e.cut(["a"])
    p, actions = e.submit("a", W, 0, 4)
    assert actions == [] and p.blockers == 0, "waits for the clone, holds no one up"
    _r, actions = e.submit("a", R, 10, 12)
    assert actions == []
    e.clone_done(cut, "a")
    actions = e.commit(cut)
    assert sorted(starts(actions)) == [(0, (1,)), (1, (1,))]
    assert freezes(actions) == [("a", 0)], "nothing pre-cut was in flight"


def test_post_cut_waits_only_on_overlapping_pre_cut_writes() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)
    _cut, actions = preserve(e, ["a"])
    assert starts(actions) == [(0, (1,))]
    p1, a1 = e.submit("a", W, 4, 12)  # overlaps w
    p2, a2 = e.submit("a", W, 8, 16)  # adjacent to w, overlaps p1
    p3, a3 = e.submit("a", R, 20, 24)  # overlaps nothing
    p4, a4 = e.submit("a", R, 0, 2)  # overlaps w
    assert (p1.blockers, p2.blockers, p3.blockers, p4.blockers) == (1, 1, 0, 1)
    assert a1 == [] and a2 == [] and a4 == []
    assert starts(a3) == [(3, (1,))]
    locks = {(i.seq, i.held, i.pre_cut, i.waiter_count) for i in e.locks()}
    assert locks == {(0, True, True, 2), (1, False, False, 1), (2, False, False, 0)}
    assert e.io_done(w, [1]) == [], "w still runs on its home"
    actions = e.io_done(w, [0])
    assert completes(actions) == [0]
    assert starts(actions) == [(1, (1,)), (4, (1,))]
    assert freezes(actions) == [("a", 0)]
    actions = e.io_done(p1, [1])
    assert starts(actions) == [(2, (1,))]
    assert p1.done == {1}, "post-cut writes never go back to the old generation"


def test_a_write_that_only_replicates_still_holds_its_lock() -> None:
    """Its home I/O is done, its copy into the clone is not: commands that come later
    and overlap it wait, as for any write in flight (rule 4). A lock table that let
    them through would let a post-cut write land under the replication."""
    e = make()
    w, _ = e.submit("a", W, 0, 8)
    _cut, actions = preserve(e, ["a"])
    assert starts(actions) == [(0, (1,))]
    assert e.io_done(w, [0]) == [], "still replicating: not complete"
    later_w, aw = e.submit("a", W, 6, 10)  # overlaps w's last blocks
    later_r, ar = e.submit("a", R, 0, 1)  # overlaps w's first block
    _beside, ab = e.submit("a", W, 8, 12)  # touches w's range but does not overlap it
    assert (aw, ar) == ([], []), "an overlapping command overtook a replicating write"
    assert (later_w.blockers, later_r.blockers) == (1, 1)
    assert starts(ab) == [], "it overlaps later_w, which waits: issue order"
    actions = e.io_done(w, [1])
    assert completes(actions) == [0]
    assert sorted(starts(actions)) == [(1, (1,)), (2, (1,))]


def test_reads_go_to_their_home_only() -> None:
    e = make()
    r0, a0 = e.submit("a", R, 0, 4)
    _cut, _ = preserve(e, ["a"])
    r1, a1 = e.submit("a", R, 0, 4)
    assert starts(a0) == [(0, (0,))]
    assert starts(a1) == [(r1.seq, (1,))]
    assert states(e) == [(0, DRAINING), (1, LIVE)], "the pre-cut read holds the drain"
    actions = e.io_done(r0, [0])
    assert completes(actions) == [0] and freezes(actions) == [("a", 0)]


# ---- drain and freeze (rule 6) -----------------------------------------------------


def test_drain_freezes_only_after_the_last_pre_cut_command() -> None:
    e = make()
    w1, _ = e.submit("a", W, 0, 4)
    w2, _ = e.submit("a", W, 8, 12)
    r, _ = e.submit("a", R, 20, 24)
    _cut, actions = preserve(e, ["a"])
    post, _ = e.submit("a", W, 30, 31)
    assert freezes(e.io_done(w1, [0, 1])) == []
    assert freezes(e.io_done(r, [0])) == []
    assert freezes(e.io_done(post, [1])) == []
    assert states(e) == [(0, DRAINING), (1, LIVE)]
    actions = e.io_done(w2, [0, 1])
    assert completes(actions) == [1] and freezes(actions) == [("a", 0)]
    assert states(e) == [(0, FROZEN), (1, LIVE)]
    assert e.inflight("a") == 0 and e.locks() == []


def test_commit_with_nothing_in_flight_freezes_at_once() -> None:
    e = make("a", "b")
    _, actions = preserve(e, ["a", "b"])
    assert sorted(freezes(actions)) == [("a", 0), ("b", 0)]


# ---- chains ------------------------------------------------------------------------


def test_cut_while_previous_generation_is_draining() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)  # pre-cut of both cuts, in flight throughout
    _cut1, actions = preserve(e, ["a"])
    assert starts(actions) == [(0, (1,))]
    x, _ = e.submit("a", W, 16, 20)  # between the cuts: home 1
    assert starts(_) == [(1, (1,))]
    cut2, actions = e.cut(["a"])  # generation 0 still draining: allowed
    assert actions == [Clone(cut2, "a", 1, 2)]
    assert states(e) == [(0, DRAINING), (1, LIVE), (2, CLONING)]
    assert e.io_done(w, [0, 1]) == [], "w must also reach generation 2"
    assert e.io_done(x, [1]) == []
    e.clone_done(cut2, "a")
    actions = e.commit(cut2)
    assert sorted(starts(actions)) == [(0, (2,)), (1, (2,))]
    assert states(e) == [(0, DRAINING), (1, DRAINING), (2, LIVE)]
    actions = e.io_done(x, [2])
    assert completes(actions) == [1]
    assert freezes(actions) == [], "generation 1 waits for w, which is older"
    actions = e.io_done(w, [2])
    assert completes(actions) == [0]
    assert freezes(actions) == [("a", 0), ("a", 1)]
    assert w.done == {0, 1, 2}


def test_pre_cut_write_of_the_first_cut_reaches_every_later_generation() -> None:
    e = make()
    w, actions = e.submit("a", W, 0, 8)
    assert starts(actions) == [(0, (0,))]
    for n in range(1, 4):
        _cut, actions = preserve(e, ["a"])
        assert starts(actions) == [(0, (n,))]
        assert e.io_done(w, [n]) == []
        assert not w.finished
    actions = e.io_done(w, [0])
    assert completes(actions) == [0]
    assert w.done == {0, 1, 2, 3}
    assert freezes(actions) == [("a", 0), ("a", 1), ("a", 2)]
    assert states(e) == [(0, FROZEN), (1, FROZEN), (2, FROZEN), (3, LIVE)]


def test_post_cut_write_of_cut_one_is_pre_cut_of_cut_two() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)
    preserve(e, ["a"])
    x, actions = e.submit("a", W, 4, 12)  # waits for w
    assert actions == [] and x.home == 1
    cut2, actions = e.cut(["a"])
    e.io_done(w, [0])
    e.clone_done(cut2, "a")
    actions = e.commit(cut2)
    assert starts(actions) == [(0, (2,))], "w already runs on 1 since the first commit"
    actions = e.io_done(w, [2, 1])
    assert completes(actions) == [0]
    assert starts(actions) == [(1, (1, 2))], "x reaches its home and the new clone"
    assert freezes(actions) == [("a", 0)]
    actions = e.io_done(x, [2, 1])
    assert freezes(actions) == [("a", 1)]


# ---- failure (rule 10) -------------------------------------------------------------


def test_clone_failure_aborts_the_whole_group() -> None:
    e = make("a", "b")
    wa, _ = e.submit("a", W, 0, 8)
    cut, _ = e.cut(["a", "b"])
    pa, actions = e.submit("a", W, 4, 12)  # overlaps wa: waits for it
    pb, actions = e.submit("b", W, 0, 4)  # waits for the clone only
    ra, _ = e.submit("a", R, 20, 24)  # waits for the clone only
    assert e.io_done(wa, [0]) == [], "wa waits for the clone of a"
    assert e.clone_done(cut, "a") == []
    actions = e.clone_failed(cut, "b", "ENOSPC")
    assert cut.state is CutState.ABORTED and "ENOSPC" in (cut.error or "")
    assert sorted((d.lun_name, d.generation) for d in actions if isinstance(d, Discard)) == [
        ("a", 1),
        ("b", 1),
    ]
    assert states(e) == [(0, LIVE)] and states(e, "b") == [(0, LIVE)]
    assert completes(actions) == [0], "wa no longer has a clone to reach"
    assert sorted(starts(actions)) == [(1, (0,)), (2, (0,)), (3, (0,))]
    assert (pa.home, pb.home, ra.home) == (0, 0, 0), "post-cut commands moved home"
    assert freezes(actions) == []
    # Late clone reports about an aborted cut are ignored.
    assert e.clone_done(cut, "b") == []
    assert e.clone_failed(cut, "a", "late") == []
    for cmd in (pa, pb, ra):
        assert completes(e.io_done(cmd, [0])) == [cmd.seq]
    assert e.inflight("a") == e.inflight("b") == 0
    # A new cut takes the place of the aborted one.
    cut2, actions = e.cut(["a", "b"])
    assert sorted((a.lun_name, a.source, a.new) for a in actions) == [("a", 0, 1), ("b", 0, 1)]
    assert cut2.seq == 4


def test_failed_replication_fails_the_command_and_damages_the_generation() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)
    _cut, actions = preserve(e, ["a"])
    assert starts(actions) == [(0, (1,))]
    assert e.io_done(w, [1], error="EIO") == []
    assert w.error == "EIO"
    assert [g.damaged for g in e.generations("a")] == [False, True]
    actions = e.io_done(w, [0])
    assert completes(actions) == [0] and w.error == "EIO"
    assert freezes(actions) == [("a", 0)]


def test_failed_home_write_fails_the_command_and_starts_nothing_more() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)
    _nxt, _ = e.submit("a", W, 0, 8)
    _cut, _ = e.cut(["a"])
    actions = e.io_done(w, [0], error="EIO")
    assert completes(actions) == [0], "a failed write does not wait for the clone"
    assert w.error == "EIO" and w.done == {0}
    assert starts(actions) == [(1, (0,))], "the next write gets the lock"
    assert not any(g.damaged for g in e.generations("a"))


def test_read_error_fails_the_read() -> None:
    e = make()
    r, _ = e.submit("a", R, 0, 8)
    actions = e.io_done(r, [0], error="EIO")
    assert completes(actions) == [0] and r.error == "EIO"
    assert not e.generations("a")[0].damaged


def test_partial_io_done_in_any_order() -> None:
    e = make()
    w, _ = e.submit("a", W, 0, 8)
    preserve(e, ["a"])
    preserve(e, ["a"])
    # Started on 0 at intake, on 1 and then 2 at the commits.
    assert w.outstanding == {0, 1, 2}
    assert e.io_done(w, [2]) == []
    assert e.io_done(w, []) == []
    assert e.io_done(w, [0]) == []
    actions = e.io_done(w, [1])
    assert completes(actions) == [0]


# ---- FLUSH -------------------------------------------------------------------------


def test_flush_flushes_its_home_at_once() -> None:
    e = make()
    _w, _ = e.submit("a", W, 0, 8)
    preserve(e, ["a"])
    f, actions = e.submit("a", F)
    assert f.blockers == 0, "a FLUSH waits for no write"
    assert starts(actions) == [(1, (1,))]
    assert completes(e.io_done(f, [1])) == [1]
    assert states(e) == [(0, DRAINING), (1, LIVE)]


def test_pre_cut_flush_holds_the_drain_like_any_pre_cut_command() -> None:
    e = make()
    f, actions = e.submit("a", F)
    assert starts(actions) == [(0, (0,))]
    _cut, actions = preserve(e, ["a"])
    assert starts(actions) == [] and freezes(actions) == []
    actions = e.io_done(f, [0])
    assert completes(actions) == [0] and freezes(actions) == [("a", 0)]


def test_post_cut_flush_waits_for_the_clone() -> None:
    e = make()
    cut, _ = e.cut(["a"])
    f, actions = e.submit("a", F)
    assert actions == [] and f.home == 1, "post-cut: the clone only (rule 5)"
    e.clone_done(cut, "a")
    actions = e.commit(cut)
    assert starts(actions) == [(0, (1,))]
    assert freezes(actions) == [("a", 0)]
    assert completes(e.io_done(f, [1])) == [0]


def test_post_cut_flush_goes_home_when_the_clone_fails() -> None:
    e = make()
    cut, _ = e.cut(["a"])
    f, _ = e.submit("a", F)
    actions = e.clone_failed(cut, "a", "EIO")
    assert starts(actions) == [(0, (0,))] and f.home == 0


def test_flush_error_fails_it_and_damages_nothing() -> None:
    e = make()
    preserve(e, ["a"])
    f, _ = e.submit("a", F)
    actions = e.io_done(f, [1], error="EIO")
    assert completes(actions) == [0] and f.error == "EIO"
    assert not any(g.damaged for g in e.generations("a"))


@pytest.mark.parametrize("while_cloning", [True, False])
def test_freeze_never_comes_with_io_in_flight_on_it(while_cloning: bool) -> None:
    """Was a bug: a FLUSH issued after a cut started on the older generation(s) but did
    not hold off their Freeze (inflight counts by home), so Freeze came while the FLUSH
    still ran there; an error on it then marked the frozen image damaged."""
    e = make()
    outstanding: set[tuple[int, int]] = set()

    def run(actions: list) -> None:
        for a in actions:
            if isinstance(a, Start):
                outstanding.update((a.cmd.seq, g) for g in a.generations)
            elif isinstance(a, Complete):
                assert not {(s, g) for s, g in outstanding if s == a.cmd.seq}
            elif isinstance(a, Freeze):
                busy = sorted(s for s, g in outstanding if g == a.generation)
                assert not busy, f"Freeze of generation {a.generation} while {busy} run on it"

    def done(cmd: Command, gens: list[int]) -> None:
        outstanding.difference_update((cmd.seq, g) for g in gens)
        run(e.io_done(cmd, gens))

    if while_cloning:
        cut, actions = e.cut(["a"])
        f, actions = e.submit("a", F)
        run(actions)
        run(e.clone_done(cut, "a"))
        run(e.commit(cut))
    else:
        w, actions = e.submit("a", W, 0, 8)
        run(actions)
        _, actions = preserve(e, ["a"])
        run(actions)
        f, actions = e.submit("a", F)
        run(actions)
        done(w, [0, 1])
    done(f, sorted(f.outstanding))
    assert f.finished and states(e) == [(0, FROZEN), (1, LIVE)]


def test_zero_length_commands_wait_for_nothing() -> None:
    e = make()
    _w, _ = e.submit("a", W, 0, 10)
    r, actions = e.submit("a", R, 5, 5)
    assert r.blockers == 0 and starts(actions) == [(1, (0,))]
    z, actions = e.submit("a", W, 5, 5)
    assert z.blockers == 0 and starts(actions) == [(2, (0,))]
    assert [i.seq for i in e.locks()] == [0], "a zero-length write holds no lock"


# ---- queries and configuration -----------------------------------------------------


def test_add_and_remove_lun() -> None:
    e = Engine(first_seq=7, first_cut=3)
    e.add_lun("a", generations=((0, 0, None), (1, 5, 2)))
    assert states(e) == [(0, FROZEN), (1, LIVE)]
    assert e.generations("a")[1].cut_seq == 5
    with pytest.raises(UserError):
        e.add_lun("a")
    cut, actions = e.cut(["a"])
    assert cut.id == 3 and cut.seq == 7
    assert actions == [Clone(cut, "a", 1, 2)]
    with pytest.raises(UserError):
        e.remove_lun("a")  # being cut
    e.clone_done(cut, "a")
    e.commit(cut)
    w, _ = e.submit("a", W, 0, 1)
    with pytest.raises(UserError):
        e.remove_lun("a")  # busy
    e.io_done(w, [2])
    e.remove_lun("a")
    assert e.luns() == []


def test_commands_are_plain_objects() -> None:
    e = make()
    cmd, _ = e.submit("a", R, 3, 9)
    assert isinstance(cmd, Command)
    assert (cmd.lun_name, cmd.op, cmd.start, cmd.end, cmd.home) == ("a", R, 3, 9, 0)


def test_commit_refuses_an_aborted_or_repeated_cut() -> None:
    e = make()
    cut1, _ = e.cut(["a"])
    e.clone_done(cut1, "a")
    e.commit(cut1)
    with pytest.raises(RuntimeError):
        e.commit(cut1)
    cut2, _ = e.cut(["a"])
    e.clone_failed(cut2, "a", "boom")
    with pytest.raises(RuntimeError):
        e.commit(cut2)
    assert [g.state for g in e.generations("a")] == [FROZEN, LIVE]
