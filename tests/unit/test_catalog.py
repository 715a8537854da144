"""The catalog (catalog.py): journal records folded into LUNs, generations and cuts,
and what a restart must undo (docs/design.md rule 9, the policy in catalog.py)."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest

from targetcli_preserve._errors import UserError
from targetcli_preserve.catalog import (
    BLOCK_SIZE,
    Catalog,
    CutRecord,
    GenerationRecord,
    check_lun_name,
    replay,
)
from targetcli_preserve.preserve import VolumeState
from targetcli_preserve.records import decode

SIZE = 4 << 20
BOOT = "boot-now"
OTHER_BOOT = "boot-before"

LIVE, CLONING, DRAINING, FROZEN = (
    VolumeState.LIVE,
    VolumeState.CLONING,
    VolumeState.DRAINING,
    VolumeState.FROZEN,
)


def lun(name: str = "lun0", size: int = SIZE, time: str | None = "t0") -> dict:
    record = {
        "op": "lun",
        "name": name,
        "size": size,
        "block_size": BLOCK_SIZE,
        "wwn": str(uuid.uuid4()),
    }
    if time is not None:
        record["time"] = time
    return record


def cut(
    cut_id: int, seq: int, luns: dict[str, int], boot: str | None = BOOT, time: str = "t1"
) -> dict:
    record = {"op": "cut", "cut": cut_id, "seq": seq, "time": time, "luns": luns}
    if boot is not None:
        record["boot"] = boot
    return record


def commit(cut_id: int) -> dict:
    return {"op": "commit", "cut": cut_id}


def durable(cut_id: int) -> dict:
    return {"op": "durable", "cut": cut_id}


def abort(cut_id: int) -> dict:
    return {"op": "abort", "cut": cut_id, "error": "test"}


def freeze(name: str, gen: int) -> dict:
    return {"op": "freeze", "lun": name, "gen": gen}


def states(catalog: Catalog, name: str = "lun0") -> list[tuple[int, VolumeState]]:
    return [(g.index, g.state) for g in catalog.luns[name].generations]


def fold(tmp_path: Path, *records: dict) -> Catalog:
    return replay(tmp_path, [decode(r) for r in records])


# ---- single records ------------------------------------------------------------------


def test_lun_record_makes_generation_zero_live(tmp_path: Path) -> None:
    record = lun("lun0", SIZE)
    catalog = fold(tmp_path, record)
    lun0 = catalog.luns["lun0"]
    assert (lun0.name, lun0.size, lun0.block_size, lun0.wwn) == ("lun0", SIZE, 512, record["wwn"])
    assert lun0.generations == [GenerationRecord(0, 0, None, LIVE, "t0")]
    assert lun0.live is lun0.generations[0]
    assert catalog.cuts == {}


def test_lun_record_without_time(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun("lun0", time=None))
    assert catalog.luns["lun0"].live.time is None


def test_cut_adds_a_cloning_generation_to_every_lun_of_the_group(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun("a"), lun("b"), lun("c"), cut(1, 42, {"a": 1, "b": 1}, time="tc"))
    assert catalog.cuts[1] == CutRecord(1, 42, "tc", {"a": 1, "b": 1}, BOOT)
    for name in ("a", "b"):
        assert states(catalog, name) == [(0, LIVE), (1, CLONING)]
        new = catalog.luns[name].generations[-1]
        assert (new.cut_seq, new.cut_id, new.time, new.damaged) == (42, 1, "tc", False)
    assert states(catalog, "c") == [(0, LIVE)]  # not in the group: untouched


def test_cut_without_boot_field(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun(), cut(1, 5, {"lun0": 1}, boot=None))
    assert catalog.cuts[1].boot is None


def test_commit_makes_the_clone_live_and_the_source_draining(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun(), cut(1, 5, {"lun0": 1}), commit(1))
    assert catalog.cuts[1].committed and not catalog.cuts[1].durable
    assert states(catalog) == [(0, DRAINING), (1, LIVE)]
    assert catalog.luns["lun0"].live.index == 1


def test_commit_keeps_a_frozen_source_frozen(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun(),
        cut(1, 5, {"lun0": 1}),
        commit(1),
        freeze("lun0", 0),
        cut(2, 9, {"lun0": 2}),
        commit(2),
    )
    assert states(catalog) == [(0, FROZEN), (1, DRAINING), (2, LIVE)]


def test_durable_marks_only_its_cut(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun("a"),
        lun("b"),
        cut(1, 5, {"a": 1}),
        commit(1),
        cut(2, 6, {"b": 1}),
        commit(2),
        durable(1),
    )
    assert catalog.cuts[1].durable and not catalog.cuts[2].durable
    assert states(catalog, "a") == [(0, DRAINING), (1, LIVE)]  # durable changes no state


def test_abort_of_an_uncommitted_cut_makes_the_source_live_again(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun("a"), lun("b"), cut(1, 5, {"a": 1, "b": 1}), abort(1))
    assert catalog.cuts[1].aborted
    for name in ("a", "b"):
        assert states(catalog, name) == [(0, LIVE)]
        assert catalog.luns[name].live.index == 0


def test_abort_of_a_committed_cut_makes_the_draining_source_live_again(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun(), cut(1, 5, {"lun0": 1}), commit(1), abort(1))
    assert states(catalog) == [(0, LIVE)]
    assert catalog.generations_to_freeze() == []


def test_abort_after_the_source_froze_makes_it_live_again(tmp_path: Path) -> None:
    # committed, drained and frozen, then a reboot lost the non-durable clone
    catalog = fold(tmp_path, lun(), cut(1, 5, {"lun0": 1}), commit(1), freeze("lun0", 0), abort(1))
    assert states(catalog) == [(0, LIVE)]


def test_abort_on_top_of_an_earlier_cut(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun(),
        cut(1, 5, {"lun0": 1}),
        commit(1),
        durable(1),
        cut(2, 9, {"lun0": 2}),
        abort(2),
    )
    assert states(catalog) == [(0, DRAINING), (1, LIVE)]
    assert catalog.generations_to_freeze() == [("lun0", 0)]


def test_freeze_marks_one_generation_frozen(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun(), cut(1, 5, {"lun0": 1}), commit(1), freeze("lun0", 0))
    assert states(catalog) == [(0, FROZEN), (1, LIVE)]


def test_damaged_flags_one_generation(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun(),
        cut(1, 5, {"lun0": 1}),
        commit(1),
        {"op": "damaged", "lun": "lun0", "gen": 1},
    )
    assert [g.damaged for g in catalog.luns["lun0"].generations] == [False, True]
    assert states(catalog) == [(0, DRAINING), (1, LIVE)]  # damage changes no state


def test_generation_lookup_of_an_unknown_index(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun())
    assert catalog.generation("lun0", 0) is catalog.luns["lun0"].live
    with pytest.raises(KeyError):
        catalog.generation("lun0", 3)


def test_replay_equals_applying_in_order(tmp_path: Path) -> None:
    records = [lun(), cut(1, 5, {"lun0": 1}), commit(1), durable(1), freeze("lun0", 0)]
    replayed = replay(tmp_path, [decode(r) for r in records])
    by_hand = Catalog(tmp_path)
    for record in records:
        by_hand.apply(decode(record))
    assert replayed.state_dir == tmp_path
    assert replayed.luns == by_hand.luns and replayed.cuts == by_hand.cuts


# ---- derived numbers -------------------------------------------------------------------


def test_last_seq_and_next_cut_id_of_an_empty_catalog(tmp_path: Path) -> None:
    catalog = fold(tmp_path, lun())
    assert catalog.last_seq == 0
    assert catalog.next_cut_id == 1


def test_last_seq_and_next_cut_id_count_aborted_cuts(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun("a"),
        lun("b"),
        cut(1, 17, {"a": 1}),
        commit(1),
        cut(2, 40, {"b": 1}),
        abort(2),
    )
    # an aborted cut's T and id were handed out: a restart must not reuse them
    assert catalog.last_seq == 40
    assert catalog.next_cut_id == 3


def test_last_seq_is_the_highest_not_the_latest(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path, lun("a"), lun("b"), cut(1, 30, {"a": 1}), commit(1), cut(2, 25, {"b": 1})
    )
    assert catalog.last_seq == 30
    assert catalog.next_cut_id == 3


def test_volume_path_layout(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    assert catalog.lun_dir("lun0") == tmp_path / "luns" / "lun0"
    assert catalog.volume_path("lun0", 0) == tmp_path / "luns" / "lun0" / "vol-000000.img"
    assert catalog.volume_path("db.1", 12) == tmp_path / "luns" / "db.1" / "vol-000012.img"
    assert catalog.volume_path("x", 123456).name == "vol-123456.img"


@pytest.mark.parametrize("name", ["lun0", "a", "Z", "9", "A.b_c-d", "db-01.data", "x" * 64])
def test_check_lun_name_accepts(name: str) -> None:
    assert check_lun_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-lun",
        ".lun",
        "_lun",
        "..",
        "a/b",
        "../etc",
        "a b",
        "a:b",
        "lun0\n",
        "l\u00fcn",
        "x" * 65,
        "lun*",
        " lun0",
    ],
)
def test_check_lun_name_refuses_with_a_clear_message(name: str) -> None:
    with pytest.raises(UserError) as info:
        check_lun_name(name)
    message = str(info.value)
    assert repr(name) in message
    assert "1-64" in message and "letter" in message


# ---- what a restart undoes -------------------------------------------------------------


def _one_cut(tmp_path: Path, *, committed: bool, durable_: bool, boot: str | None) -> Catalog:
    records = [lun(), cut(1, 5, {"lun0": 1}, boot=boot)]
    if committed:
        records.append(commit(1))
    if durable_:
        records.append(durable(1))
    return fold(tmp_path, *records)


@pytest.mark.parametrize(
    "committed,durable_,same_boot", list(itertools.product([False, True], repeat=3))
)
def test_cuts_to_roll_back_every_combination(
    tmp_path: Path, committed: bool, durable_: bool, same_boot: bool
) -> None:
    catalog = _one_cut(
        tmp_path, committed=committed, durable_=durable_, boot=BOOT if same_boot else OTHER_BOOT
    )
    # a daemon crash (same boot) keeps a committed cut; a reboot keeps only durable ones;
    # an uncommitted cut never survives
    expected = (not committed) or (not durable_ and not same_boot)
    undo = catalog.cuts_to_roll_back(BOOT)
    assert [c.id for c in undo] == ([1] if expected else [])


@pytest.mark.parametrize(
    "committed,durable_,same_boot", list(itertools.product([False, True], repeat=3))
)
def test_an_aborted_cut_is_never_rolled_back_again(
    tmp_path: Path, committed: bool, durable_: bool, same_boot: bool
) -> None:
    catalog = _one_cut(
        tmp_path, committed=committed, durable_=durable_, boot=BOOT if same_boot else OTHER_BOOT
    )
    catalog.apply(decode(abort(1)))
    assert catalog.cuts_to_roll_back(BOOT) == []


def test_a_cut_of_unknown_boot_is_trusted_only_if_durable(tmp_path: Path) -> None:
    assert [
        c.id
        for c in _one_cut(tmp_path, committed=True, durable_=False, boot=None).cuts_to_roll_back(
            BOOT
        )
    ] == [1]
    assert (
        _one_cut(tmp_path, committed=True, durable_=True, boot=None).cuts_to_roll_back(BOOT) == []
    )


def test_cuts_to_roll_back_newest_first(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun("a"),
        lun("b"),
        lun("c"),
        lun("d"),
        cut(1, 5, {"a": 1}, boot=OTHER_BOOT),
        commit(1),  # reboot, not durable
        cut(2, 6, {"b": 1}, boot=OTHER_BOOT),
        commit(2),
        durable(2),  # kept
        cut(3, 7, {"c": 1}),  # never committed
        cut(4, 8, {"d": 1}),
        abort(4),  # already undone
        cut(5, 9, {"a": 2}, boot=OTHER_BOOT),  # never committed
    )
    assert [c.id for c in catalog.cuts_to_roll_back(BOOT)] == [5, 3, 1]


def test_rolling_back_stacked_cuts_newest_first_restores_the_first_volume(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun(),
        cut(1, 5, {"lun0": 1}, boot=OTHER_BOOT),
        commit(1),
        freeze("lun0", 0),
        cut(2, 9, {"lun0": 2}, boot=OTHER_BOOT),
        commit(2),
    )
    undo = catalog.cuts_to_roll_back(BOOT)
    assert [c.id for c in undo] == [2, 1]
    for c in undo:  # what the daemon's recovery does, in the order given
        catalog.apply(decode(abort(c.id)))
    assert states(catalog) == [(0, LIVE)]
    assert catalog.generations_to_freeze() == []
    assert catalog.cuts_to_roll_back(BOOT) == []


def test_generations_to_freeze(tmp_path: Path) -> None:
    catalog = fold(
        tmp_path,
        lun("a"),
        lun("b"),
        lun("c"),
        cut(1, 5, {"a": 1, "b": 1}),
        commit(1),
        cut(2, 7, {"a": 2}),
        commit(2),
        cut(3, 8, {"c": 1}),
    )  # cloning: its source is still live
    assert catalog.generations_to_freeze() == [("a", 0), ("a", 1), ("b", 0)]
    catalog.apply(decode(freeze("a", 0)))
    catalog.apply(decode(freeze("b", 0)))
    assert catalog.generations_to_freeze() == [("a", 1)]
    catalog.apply(decode(freeze("a", 1)))
    assert catalog.generations_to_freeze() == []


def test_nothing_to_freeze_without_cuts(tmp_path: Path) -> None:
    assert fold(tmp_path, lun("a"), lun("b")).generations_to_freeze() == []


# ---- LUN numbers ---------------------------------------------------------------------


def test_lun_numbers_come_from_the_journal() -> None:
    catalog = fold(Path("/s"), {**lun("a"), "number": 3}, {**lun("b"), "number": 0})
    assert {name: rec.number for name, rec in catalog.luns.items()} == {"a": 3, "b": 0}
    assert catalog.free_lun_number() == 1  # the lowest number nobody has


def test_lun_records_without_a_number_get_the_lowest_free_in_creation_order() -> None:
    # a journal written before LUN numbers were recorded, then one more LUN created
    catalog = fold(Path("/s"), lun("b"), lun("a"))
    assert {name: rec.number for name, rec in catalog.luns.items()} == {"b": 0, "a": 1}
    catalog.apply(decode({**lun("c"), "number": catalog.free_lun_number()}))
    assert catalog.luns["c"].number == 2


def test_free_lun_number_fills_gaps_first() -> None:
    catalog = fold(Path("/s"), *({**lun(n), "number": i} for n, i in [("a", 0), ("b", 2)]))
    assert catalog.free_lun_number() == 1
    catalog.apply(decode({**lun("c"), "number": catalog.free_lun_number()}))
    assert catalog.free_lun_number() == 3
    assert replay(Path("/s"), []).free_lun_number() == 0
