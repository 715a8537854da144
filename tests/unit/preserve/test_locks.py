"""The lock table (preserve/locks.py): range locks of in-flight writes, in issue order."""

from __future__ import annotations

import pytest

from targetcli_preserve.preserve import Command, LockTable, Op


class Seq:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, op: Op, start: int, end: int) -> Command:
        cmd = Command(self.n, "lun", op, start, end, 0)
        self.n += 1
        return cmd


@pytest.fixture
def mk() -> Seq:
    return Seq()


def test_empty_table_blocks_nothing(mk: Seq) -> None:
    t = LockTable()
    assert t.add(mk(Op.WRITE, 0, 10)) == 0
    assert len(t) == 1


def test_overlapping_write_waits(mk: Seq) -> None:
    t = LockTable()
    w1 = mk(Op.WRITE, 0, 10)
    w2 = mk(Op.WRITE, 9, 20)
    assert t.add(w1) == 0
    assert t.add(w2) == 1
    assert w2.blockers == 1 and w1.waiters == [w2]
    assert list(t) == [w1, w2], "a waiting write holds its lock from intake"


@pytest.mark.parametrize("start,end", [(0, 10), (2, 3), (5, 15), (0, 100)])
def test_overlap_cases(mk: Seq, start: int, end: int) -> None:
    t = LockTable()
    t.add(mk(Op.WRITE, 0, 10))
    assert t.add(mk(Op.READ, start, end)) == 1


@pytest.mark.parametrize("start,end", [(10, 20), (20, 30)])
def test_adjacent_ranges_do_not_overlap(mk: Seq, start: int, end: int) -> None:
    t = LockTable()
    t.add(mk(Op.WRITE, 0, 10))
    assert t.add(mk(Op.WRITE, start, end)) == 0
    # [end, end+n) touches [start, end) only at the boundary: no overlap either side.
    assert t.add(mk(Op.WRITE, 30, 40)) == 0
    assert t.add(mk(Op.READ, 40, 41)) == 0


def test_waits_for_every_earlier_overlapping_write(mk: Seq) -> None:
    t = LockTable()
    a, b, c = mk(Op.WRITE, 0, 4), mk(Op.WRITE, 4, 8), mk(Op.WRITE, 8, 12)
    for w in (a, b, c):
        assert t.add(w) == 0
    r = mk(Op.READ, 2, 10)
    assert t.add(r) == 3
    assert t.release(a) == []
    assert t.release(c) == []
    assert t.release(b) == [r]
    assert r.blockers == 0


def test_release_in_issue_order_chain(mk: Seq) -> None:
    """w3 overlaps w2 but not w1: it waits for w2 only, and w2 waits for w1."""
    t = LockTable()
    w1, w2, w3 = mk(Op.WRITE, 0, 10), mk(Op.WRITE, 5, 15), mk(Op.WRITE, 12, 20)
    assert [t.add(w) for w in (w1, w2, w3)] == [0, 1, 1]
    assert t.release(w1) == [w2]
    assert w3.blockers == 1
    assert t.release(w2) == [w3]
    assert t.release(w3) == []
    assert len(t) == 0


def test_release_returns_freed_in_issue_order(mk: Seq) -> None:
    t = LockTable()
    w = mk(Op.WRITE, 0, 32)
    t.add(w)
    waiters = [mk(Op.READ, 0, 5), mk(Op.WRITE, 10, 15), mk(Op.READ, 20, 25), mk(Op.WRITE, 30, 31)]
    for c in waiters:
        assert t.add(c) == 1
    assert t.release(w) == waiters
    assert w.waiters == []
    assert list(t) == [waiters[1], waiters[3]]


def test_reads_never_hold_locks(mk: Seq) -> None:
    t = LockTable()
    r = mk(Op.READ, 0, 10)
    assert t.add(r) == 0
    assert len(t) == 0
    # Nothing ever waits on a read: a later overlapping write proceeds at once.
    w = mk(Op.WRITE, 0, 10)
    assert t.add(w) == 0
    assert r.waiters == []
    assert t.release(r) == []
    assert list(t) == [w]


def test_flush_holds_no_lock_and_waits_for_none(mk: Seq) -> None:
    t = LockTable()
    t.add(mk(Op.WRITE, 0, 10))
    f = mk(Op.FLUSH, 0, 0)
    assert t.add(f) == 0
    assert len(t) == 1


def test_zero_length_write_holds_no_lock(mk: Seq) -> None:
    t = LockTable()
    assert t.add(mk(Op.WRITE, 5, 5)) == 0
    assert len(t) == 0
    assert t.add(mk(Op.WRITE, 0, 10)) == 0


def test_zero_length_command_waits_for_nothing(mk: Seq) -> None:
    """[5, 5) touches no block, though 0 < 5 < 10 (was a bug: it waited)."""
    t = LockTable()
    w = mk(Op.WRITE, 0, 10)
    t.add(w)
    assert t.add(mk(Op.READ, 5, 5)) == 0
    assert t.add(mk(Op.WRITE, 5, 5)) == 0
    assert w.waiters == [] and list(t) == [w]


def test_release_of_a_read_frees_nothing(mk: Seq) -> None:
    t = LockTable()
    w = mk(Op.WRITE, 0, 10)
    t.add(w)
    r = mk(Op.READ, 0, 10)
    t.add(r)
    w2 = mk(Op.WRITE, 0, 10)
    assert t.add(w2) == 1, "w2 waits for w, never for r"
    assert t.release(w) == [r, w2]
