"""The journal (journal.py): one fsync'd JSON record per line, torn tails skipped."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from targetcli_preserve._errors import BackendError
from targetcli_preserve.journal import Journal, JournalCorrupt, current_boot

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _records(n: int) -> list[dict]:
    return [{"op": "cut", "cut": i, "seq": 10 * i, "luns": {"lun0": i}} for i in range(1, n + 1)]


def test_append_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    try:
        for record in _records(3):
            journal.append(record)
    finally:
        journal.close()
    assert Journal.read(path) == _records(3)


def test_write_then_sync_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    try:
        journal.write({"op": "lun", "name": "lun0"})
        journal.write({"op": "commit", "cut": 1})
        # write() alone already reached the file (the page cache): a daemon crash keeps it
        assert Journal.read(path) == [{"op": "lun", "name": "lun0"}, {"op": "commit", "cut": 1}]
        journal.sync()
        journal.append({"op": "durable", "cut": 1})
    finally:
        journal.close()
    assert [r["op"] for r in Journal.read(path)] == ["lun", "commit", "durable"]


def test_reopen_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    first = Journal(path)
    first.append({"op": "a"})
    first.close()
    second = Journal(path)
    second.append({"op": "b"})
    second.close()
    assert Journal.read(path) == [{"op": "a"}, {"op": "b"}]
    assert b"\n\n" not in path.read_bytes()  # a clean tail gets no extra line break


def test_read_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert Journal.read(tmp_path / "no-such-journal") == []


def test_read_of_an_empty_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b"")
    assert Journal.read(path) == []


def test_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    tricky = {
        "op": "abort",
        "cut": 2,
        "error": 'line one\nline two\r\n{"op": "x"}\n',
        "name": "caf\u00e9 \u2603",
        "nested": {"a": [1, 2, {"b": None}]},
    }
    try:
        journal.append({"op": "lun", "name": "lun0"})
        journal.append(tricky)
        journal.append({"op": "commit", "cut": 2})
    finally:
        journal.close()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 3
    decoded = [json.loads(line) for line in lines]
    assert all(isinstance(obj, dict) for obj in decoded)
    assert decoded[1] == tricky
    assert Journal.read(path) == decoded


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    good = json.dumps({"op": "lun", "name": "lun0"}).encode() + b"\n"
    path.write_bytes(good + b'{"op":"cut","cut":1,"se')  # the daemon died mid-write
    assert Journal.read(path) == [{"op": "lun", "name": "lun0"}]


def test_append_after_a_torn_tail_cuts_it_off(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    torn = b'{"op":"cut","cut":1,"luns":{"lun0":1'
    path.write_bytes(json.dumps({"op": "lun", "name": "lun0"}).encode() + b"\n" + torn)
    journal = Journal(path)
    try:
        journal.append({"op": "abort", "cut": 1})
        journal.append({"op": "cut", "cut": 2, "seq": 7, "luns": {"lun0": 1}})
    finally:
        journal.close()
    assert Journal.read(path) == [
        {"op": "lun", "name": "lun0"},
        {"op": "abort", "cut": 1},
        {"op": "cut", "cut": 2, "seq": 7, "luns": {"lun0": 1}},
    ]
    assert torn not in path.read_bytes()  # cut off: a torn line is only ever the last one
    # a second reopen finds a clean tail and still reads the same
    again = Journal(path)
    again.append({"op": "commit", "cut": 2})
    again.close()
    assert [r["op"] for r in Journal.read(path)] == ["lun", "abort", "cut", "commit"]


def test_torn_tail_that_is_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b'{"op":"lu')
    assert Journal.read(path) == []
    journal = Journal(path)
    journal.append({"op": "lun", "name": "lun0"})
    journal.close()
    assert Journal.read(path) == [{"op": "lun", "name": "lun0"}]


@pytest.mark.parametrize(
    "bad,why",
    [
        (b"not json at all", "not JSON"),
        (b'{"op":"half', "not JSON"),
        (b"[1, 2, 3]", "not a record"),
        (b'"a string"', "not a record"),
        (b'{"no_op_field": 1}', "not a record"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"", "empty line"),
    ],
)
def test_a_bad_line_before_the_last_is_corruption_naming_the_line(
    tmp_path: Path, bad: bytes, why: str
) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b'{"op":"a"}\n' + bad + b'\n{"op":"b","n":2}\n')
    with pytest.raises(JournalCorrupt, match=f"{path} line 2: {why}"):
        Journal.read(path)


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b'{"op":"a"}\n{"op":"b"}')  # every byte but the newline arrived
    assert Journal.read(path) == [{"op": "a"}, {"op": "b"}]
    journal = Journal(path)
    journal.append({"op": "c"})
    journal.close()
    assert Journal.read(path) == [{"op": "a"}, {"op": "b"}, {"op": "c"}]


def test_a_short_write_is_undone(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "journal"
    journal = Journal(path)
    journal.append({"op": "a"})
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:5]))  # disk full
    with pytest.raises(BackendError, match="cannot write journal"):
        journal.write({"op": "b", "pad": "x" * 100})
    monkeypatch.setattr(os, "write", real_write)
    journal.append({"op": "c"})  # the disk has room again
    journal.close()
    assert Journal.read(path) == [{"op": "a"}, {"op": "c"}]


def test_journal_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    old = os.umask(0)  # even with a permissive umask
    try:
        journal = Journal(path)
    finally:
        os.umask(old)
    try:
        journal.append({"op": "lun", "name": "lun0"})
    finally:
        journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_failure_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot open journal"):
        Journal(tmp_path / "missing-dir" / "journal")


def test_write_failure_is_a_backend_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.close()  # its descriptor is gone: every write fails
    with pytest.raises(BackendError, match="cannot write journal"):
        journal.write({"op": "lun"})


@pytest.mark.skipif(not BOOT_ID.exists(), reason="no /proc/sys/kernel/random/boot_id here")
def test_current_boot_is_the_kernel_boot_id() -> None:
    boot = current_boot()
    assert boot == BOOT_ID.read_text().strip()
    assert str(uuid.UUID(boot)) == boot
    assert current_boot() == boot  # stable within one boot
