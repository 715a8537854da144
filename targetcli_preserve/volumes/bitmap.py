"""The persisted chunk bitmap of a lazy clone (DESIGN.md rule 3).

Bit ``c`` (byte ``c >> 3``, bit ``c & 7``, LSB first) set means chunk ``c`` of the clone
is *hydrated*: the clone's own file holds its content and the source is no longer read
for it. Padding bits past the last chunk are kept set.

Two images are kept. ``staged`` is what has been (or is being) written to the sidecar;
``bits`` is what the data path routes on and is set only after the staged bytes were
written. So a reader or a lock-free writer never acts on a bit that a crash could
lose, and a chunk is never marked on disk before its data is in the clone's file
(the caller's job: it stages only after writing the data, see ``lazy.py``).

Persisting copies the current staged bytes under a thread lock, so two concurrent
persists of the same byte cannot reorder into a lost bit. Creation is O(1) in the
volume size: the sidecar is made with ftruncate (a hole) plus its last byte.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_NOT_FULL = re.compile(rb"[^\xff]")


def nbytes_for(nchunks: int) -> int:
    return (nchunks + 7) // 8


def _padding_byte(nchunks: int) -> int:
    used = nchunks & 7
    return 0 if used == 0 else (0xFF << used) & 0xFF


class ChunkBitmap:
    def __init__(self, path: Path, fd: int, nchunks: int, image: bytes) -> None:
        self.path = path
        self.nchunks = nchunks
        self.bits = bytearray(image)
        self.staged = bytearray(image)
        self._fd = fd
        self._lock = threading.Lock()
        total = int.from_bytes(self.bits, "little").bit_count()
        self.remaining = nchunks - (total - (8 * len(self.bits) - nchunks))

    # ---- blocking constructors (run them on the executor) ----

    @classmethod
    def create(cls, path: Path, nchunks: int) -> ChunkBitmap:
        n = nbytes_for(nchunks)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, n)
            pad = _padding_byte(nchunks)
            if pad:
                os.pwrite(fd, bytes([pad]), n - 1)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        image = bytearray(n)
        if pad:
            image[-1] = pad
        return cls(path, fd, nchunks, bytes(image))

    @classmethod
    def load(cls, path: Path, nchunks: int) -> ChunkBitmap:
        n = nbytes_for(nchunks)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            image = os.pread(fd, n, 0)
            if len(image) != n:
                raise OSError(0, f"bitmap {path} has {len(image)} bytes, expected {n}")
        except BaseException:
            os.close(fd)
            raise
        image = bytearray(image)
        image[-1] |= _padding_byte(nchunks)
        return cls(path, fd, nchunks, bytes(image))

    # ---- queries (event loop or worker threads; bits only ever go 0 -> 1) ----

    def test(self, chunk: int) -> bool:
        return bool(self.bits[chunk >> 3] >> (chunk & 7) & 1)

    def all_set(self, first: int, last: int) -> bool:
        bits = self.bits
        for c in range(first, last + 1):
            if not bits[c >> 3] >> (c & 7) & 1:
                return False
        return True

    def next_clear(self, start: int) -> int | None:
        """The first unhydrated chunk >= ``start``, wrapping around; None if all set."""
        if self.remaining == 0:
            return None
        for begin in (start, 0):
            pos = begin >> 3
            while True:
                m = _NOT_FULL.search(self.bits, pos)
                if m is None:
                    break
                byte_index = m.start()
                value = self.bits[byte_index]
                for bit in range(8):
                    c = byte_index * 8 + bit
                    if not value >> bit & 1 and c >= begin:
                        return c
                pos = byte_index + 1
        return None

    # ---- updates: stage, persist, then commit the same chunks ----

    @staticmethod
    def _set_list(image: bytearray, chunks: list[int]) -> tuple[int, int]:
        for c in chunks:
            image[c >> 3] |= 1 << (c & 7)
        return min(chunks) >> 3, (max(chunks) >> 3) + 1

    @staticmethod
    def _set_range(image: bytearray, first: int, end: int) -> tuple[int, int]:
        c = first
        while c < end and c & 7:
            image[c >> 3] |= 1 << (c & 7)
            c += 1
        full_end = end & ~7
        if c < full_end:
            image[c >> 3 : full_end >> 3] = b"\xff" * ((full_end - c) >> 3)
            c = full_end
        while c < end:
            image[c >> 3] |= 1 << (c & 7)
            c += 1
        return first >> 3, ((end - 1) >> 3) + 1

    def stage(self, chunks: list[int]) -> tuple[int, int]:
        """Set ``chunks`` in the staged image; returns the byte range to persist."""
        return self._set_list(self.staged, chunks)

    def stage_range(self, first: int, end: int) -> tuple[int, int]:
        """Set chunks ``first <= c < end`` in the staged image (whole bytes at once)."""
        return self._set_range(self.staged, first, end)

    def commit(self, chunks: list[int]) -> None:
        """Make ``chunks`` visible to the data path (after their bytes were persisted)."""
        lo, hi = min(chunks) >> 3, (max(chunks) >> 3) + 1
        before = int.from_bytes(self.bits[lo:hi], "little").bit_count()
        self._set_list(self.bits, chunks)
        self.remaining -= int.from_bytes(self.bits[lo:hi], "little").bit_count() - before

    def commit_range(self, first: int, end: int) -> None:
        lo, hi = first >> 3, ((end - 1) >> 3) + 1
        before = int.from_bytes(self.bits[lo:hi], "little").bit_count()
        self._set_range(self.bits, first, end)
        self.remaining -= int.from_bytes(self.bits[lo:hi], "little").bit_count() - before

    def persist(self, lo: int, hi: int) -> None:
        """Write staged bytes ``lo:hi`` to the sidecar (page cache). Blocking."""
        with self._lock:
            os.pwrite(self._fd, bytes(self.staged[lo:hi]), lo)

    def sync(self) -> None:
        """fdatasync the sidecar. Blocking."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
