"""The journal's records (records.py): each kind round-trips, and anything else is a
clear JournalCorrupt naming the line and the field, never a KeyError or a guess."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from targetcli_preserve.journal import Journal
from targetcli_preserve.records import (
    CutAborted,
    CutCommitted,
    CutDurable,
    CutTaken,
    GenerationDamaged,
    GenerationFrozen,
    JournalCorrupt,
    LunCreated,
    decode,
    encode,
    read_records,
)

EVERY_KIND = [
    LunCreated("lun0", 4 << 20, 512, "6f1c2e0a-4b7d-4c1e-9a53-2d8f0b6e7c41", 0, "t0"),
    LunCreated("old", 512, 512, "w"),  # before LUN numbers and times were recorded
    CutTaken(3, 81920, "t1", {"lun0": 2, "db": 5}, "boot-a"),
    CutTaken(4, 90000, "t2", {"lun0": 3}),
    CutCommitted(3),
    CutDurable(3),
    CutAborted(4, "the daemon stopped"),
    GenerationFrozen("lun0", 1),
    GenerationDamaged("db", 4),
]


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: type(r).__name__)
def test_every_kind_round_trips(record) -> None:
    assert decode(encode(record)) == record


def test_the_journal_format_of_each_kind() -> None:
    assert encode(EVERY_KIND[0]) == {
        "op": "lun", "name": "lun0", "size": 4 << 20, "block_size": 512,
        "wwn": "6f1c2e0a-4b7d-4c1e-9a53-2d8f0b6e7c41", "number": 0, "time": "t0",
    }  # fmt: skip
    assert encode(EVERY_KIND[1]) == {
        "op": "lun",
        "name": "old",
        "size": 512,
        "block_size": 512,
        "wwn": "w",
    }
    assert encode(EVERY_KIND[2]) == {
        "op": "cut", "cut": 3, "seq": 81920, "time": "t1",
        "luns": {"lun0": 2, "db": 5}, "boot": "boot-a",
    }  # fmt: skip
    assert encode(CutCommitted(3)) == {"op": "commit", "cut": 3}
    assert encode(GenerationFrozen("lun0", 1)) == {"op": "freeze", "lun": "lun0", "gen": 1}


@pytest.mark.parametrize(
    "obj,words",
    [
        ({"op": "explode"}, "unknown record kind op='explode'"),
        ({"op": "commit"}, "'commit' record lacks field 'cut'"),
        ({"op": "commit", "cut": "1"}, "'commit' record has a bad 'cut': '1'"),
        ({"op": "commit", "cut": True}, "'commit' record has a bad 'cut': True"),
        ({"op": "commit", "cut": 1, "extra": 2}, "'commit' record has unknown field 'extra'"),
        ({"op": "cut", "cut": 1, "seq": 2, "time": "t", "luns": {"a": "1"}}, "bad 'luns'"),
        ({"op": "cut", "cut": 1, "seq": 2, "time": "t", "luns": [1]}, "bad 'luns'"),
        ({"op": "lun", "name": "a", "size": 1, "block_size": 512, "wwn": "w", "number": 1.5},
         "bad 'number'"),
        ({"op": "freeze", "lun": None, "gen": 1}, "bad 'lun'"),
    ],
)  # fmt: skip
def test_a_bad_record_names_what_is_wrong(obj: dict, words: str) -> None:
    with pytest.raises(JournalCorrupt, match="journal line 7: ") as info:
        decode(obj, "journal line 7")
    assert words in str(info.value)


def test_read_records_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    journal.append(encode(CutCommitted(1)))
    journal.append({"op": "freeze", "lun": "a"})
    journal.close()
    with pytest.raises(JournalCorrupt, match=f"{path} line 2: 'freeze' record lacks field 'gen'"):
        read_records(path)


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none()))
def test_anything_decodes_to_a_record_or_a_journal_corrupt(obj: dict) -> None:
    try:
        record = decode(obj)
    except JournalCorrupt:
        return
    assert decode(encode(record)) == record
