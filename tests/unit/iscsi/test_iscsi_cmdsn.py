"""The CmdSN window on its own: order, holding, the window's bounds, wrap-around."""

from __future__ import annotations

from targetcli_preserve.iscsi.cmdsn import CmdSnWindow, serial_lt


def test_serial_arithmetic_wraps():
    assert serial_lt(1, 2) and not serial_lt(2, 1) and not serial_lt(5, 5)
    assert serial_lt(0xFFFFFFFF, 0) and not serial_lt(0, 0xFFFFFFFF)


def test_early_pdus_wait_for_their_turn_and_duplicates_are_ignored():
    w = CmdSnWindow(depth=8)
    w.open(10)
    seen: list[int] = []
    w.order(False, 12, lambda: seen.append(12))
    w.order(False, 12, lambda: seen.append(-12))  # a duplicate of one held
    w.order(False, 11, lambda: seen.append(11))
    assert seen == [] and w.holds(11) and w.holds(12)
    w.order(False, 10, lambda: seen.append(10))
    assert seen == [10, 11, 12] and w.exp_cmd_sn == 13
    w.order(True, 99, lambda: seen.append(99))  # immediate: now, whatever its CmdSN
    assert seen[-1] == 99 and w.exp_cmd_sn == 13


def test_outside_the_window_is_ignored():
    w = CmdSnWindow(depth=4)
    w.open(0xFFFFFFFE)
    assert w.max_cmd_sn == 1  # wrapped
    assert w.admits(0xFFFFFFFE) and w.admits(1) and not w.admits(2)
    assert not w.admits(0xFFFFFFFD)  # already taken
    seen: list[int] = []
    w.order(False, 2, lambda: seen.append(2))
    assert seen == [] and not w.holds(2)


def test_consume_counts_a_cmd_sn_without_delivering():
    w = CmdSnWindow(depth=8)
    w.open(1)
    seen: list[int] = []
    w.order(False, 3, lambda: seen.append(3))
    w.consume(2)
    w.consume(1)
    assert seen == [3] and w.exp_cmd_sn == 4


def test_max_cmd_sn_follows_busy_commands_and_never_decreases():
    w = CmdSnWindow(depth=4)
    w.open(1)
    assert w.update_max(busy=0) == 4
    w.order(False, 1, lambda: None)
    assert w.update_max(busy=1) == 4  # one taken, one busy: the window stays
    assert w.update_max(busy=0) == 5  # answered: it slides
    assert w.update_max(busy=3) == 5  # more busy never takes it back
