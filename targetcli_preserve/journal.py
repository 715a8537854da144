"""The journal: an append-only, fsync'd log of every preserve step (docs/design.md rule 9).

One JSON object per line in ``STATE/journal``. :meth:`Journal.append` returns only once
the record is on stable storage, so whatever the daemon did after an append survives a
crash together with the record that explains it. :meth:`Journal.write` is the cheap
half: the record survives a crash of the daemon (the kernel's page cache does) but not
yet a power loss; :func:`current_boot` lets a restart tell which of the two happened.
Every step is fsync'd, the preserve steps in the background (see catalog.py). A torn
line (the daemon died in the middle of a write) is skipped on replay: that step never
happened.

The lock table and in-flight commands are never journalled: they only ever protect
commands that a crash ends anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._errors import BackendError


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
        """Every complete record in order; a torn line (a crash mid-append, later
        terminated by :meth:`_terminate_torn_tail`) is skipped."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for line in raw.split(b"\n"):
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn write: that step never completed (later ones did)
            if isinstance(record, dict) and "op" in record:
                records.append(record)
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it (blocking: call it off the event loop when
        latency matters)."""
        self.write(record)
        self.sync()

    def write(self, record: dict[str, Any]) -> None:
        """Write one record without waiting for stable storage: it survives a crash of
        the daemon (the page cache does), not yet a power loss. Cheap: one write(2)."""
        line = json.dumps(record, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        try:
            self._terminate_torn_tail()
            os.write(self._fd, line)
        except OSError as err:
            raise BackendError(f"cannot write journal {self.path}: {err.strerror}") from err

    def sync(self) -> None:
        """Make every record written so far durable (blocking)."""
        try:
            os.fsync(self._fd)
            if not self._new_file_synced:
                _fsync_dir(self.path.parent)  # the journal's own directory entry
                self._new_file_synced = True
        except OSError as err:
            raise BackendError(f"cannot sync journal {self.path}: {err.strerror}") from err

    def _terminate_torn_tail(self) -> None:
        """If a crash left a partial last line, end it so the next record stands alone."""
        if self._tail_checked:
            return
        self._tail_checked = True
        size = os.fstat(self._fd).st_size
        if size:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                last = os.pread(fd, 1, size - 1)
            finally:
                os.close(fd)
            if last != b"\n":
                os.write(self._fd, b"\n")

    def close(self) -> None:
        os.close(self._fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_boot() -> str:
    """The kernel's boot id: it changes exactly when the page cache may have been lost."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
