"""The journal: an append-only, fsync'd log of every preserve step (docs/design.md rule 9).

One JSON object per line in ``STATE/journal``. :meth:`Journal.append` returns only once
the record is on stable storage, so whatever the daemon did after an append survives a
crash together with the record that explains it. :meth:`Journal.write` is the cheap
half: the record survives a crash of the daemon (the kernel's page cache does) but not
yet a power loss; :func:`current_boot` lets a restart tell which of the two happened.
Every step is fsync'd, the preserve steps in the background (see catalog.py). A torn
last line (the daemon died in the middle of a write) is skipped on replay and cut off
before the next append: that step never happened. Any other line that is not a record
is corruption, reported with its line number. What each record means: records.py.

The lock table and in-flight commands are never journalled: they only ever protect
commands that a crash ends anyway.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from ._errors import BackendError
from .boot import current_boot
from .files import fsync_dir

__all__ = ["Journal", "JournalCorrupt", "current_boot"]

_MAX_TAIL = 1 << 20  # no record is this long: a longer last line is not a torn record


class JournalCorrupt(BackendError):
    """A journal line that is not a record this daemon understands (it names the line)."""


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise BackendError(f"cannot open journal {path}: {err.strerror}") from err
        self._new_file_synced = False
        self._tail_checked = False

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """Every record in order (see :meth:`read_lines`)."""
        return [record for _, record in Journal.read_lines(path)]

    @staticmethod
    def read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
        """(line number, record) of every record in order. Only the last line may be
        torn (the daemon died in the middle of writing it): it is skipped, that step
        never happened. Any other line that is not a JSON object with an ``op`` is
        corruption, a JournalCorrupt naming the line: the daemon does not guess."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise BackendError(f"cannot read journal {path}: {err.strerror}") from err
        lines = raw.split(b"\n")
        records = []
        for number, line in enumerate(lines, 1):
            last = number == len(lines)  # the bytes after the last newline
            if not line:
                if last:
                    continue
                raise JournalCorrupt(f"{path} line {number}: empty line")
            try:
                record = json.loads(line)
            except ValueError as err:
                if last:
                    continue  # a torn write: that step never completed
                raise JournalCorrupt(f"{path} line {number}: not JSON ({err})") from err
            if not isinstance(record, dict) or not isinstance(record.get("op"), str):
                raise JournalCorrupt(f"{path} line {number}: not a record with an 'op'")
            records.append((number, record))
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it (blocking: call it off the event loop when
        latency matters)."""
        self.write(record)
        self.sync()

    def write(self, record: dict[str, Any]) -> None:
        """Write one record without waiting for stable storage: it survives a crash of
        the daemon (the page cache does), not yet a power loss. Cheap: one write(2).
        A short write (a full disk) is undone, so no torn line is ever left behind."""
        line = json.dumps(record, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        try:
            self._drop_torn_tail()
            size = os.fstat(self._fd).st_size
            written = os.write(self._fd, line)
            if written != len(line):
                os.ftruncate(self._fd, size)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:
            raise BackendError(f"cannot write journal {self.path}: {err.strerror}") from err

    def sync(self) -> None:
        """Make every record written so far durable (blocking)."""
        try:
            os.fsync(self._fd)
            if not self._new_file_synced:
                fsync_dir(self.path.parent)  # the journal's own directory entry
                self._new_file_synced = True
        except OSError as err:
            raise BackendError(f"cannot sync journal {self.path}: {err.strerror}") from err

    def _drop_torn_tail(self) -> None:
        """If a crash left a partial last line, cut it off before appending, so that a
        torn line is only ever the last one (what :meth:`read_lines` tolerates)."""
        if self._tail_checked:
            return
        size = os.fstat(self._fd).st_size
        if size:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                tail = os.pread(fd, min(size, _MAX_TAIL), max(0, size - _MAX_TAIL))
            finally:
                os.close(fd)
            if not tail.endswith(b"\n"):
                end = tail.rfind(b"\n")
                if end < 0 and size > len(tail):
                    raise JournalCorrupt(f"{self.path}: its last line is over {_MAX_TAIL} bytes")
                complete = tail[end + 1 :]
                try:
                    whole = isinstance(json.loads(complete), dict)
                except ValueError:
                    whole = False
                if whole:  # every byte but the newline arrived: keep the record
                    os.write(self._fd, b"\n")
                else:
                    os.ftruncate(self._fd, size - len(complete))
        self._tail_checked = True

    def close(self) -> None:
        os.close(self._fd)
