"""The persisted chunk bitmaps of a lazy clone (docs/design.md rules 3 and 8).

Bit ``c`` (byte ``c >> 3``, bit ``c & 7``, LSB first) set means chunk ``c`` of the clone
is *hydrated*: the clone's own file holds its content and the source is no longer read
for it. Padding bits past the last chunk are kept set in memory.

Two sidecars, so neither the write path nor the cut ever waits for a disk flush:

- the **volatile** bitmap (``P.bitmap.volatile``) gets a chunk's bit by pwrite as soon
  as the chunk's data was pwritten to the clone, before the write that hydrated it
  returns. It is never fsynced. Its header holds the kernel boot id of the boot that
  wrote it. A process crash keeps the page cache, so the data and the bit are both
  there, in that order, and an acknowledged write is never re-copied over.
- the **durable** bitmap (``P.bitmap``) is written only by flush(): snapshot the set
  bits, fdatasync the clone's data file, then write those bits and fdatasync the
  bitmap. So after a power loss it never holds a bit whose chunk data is not on disk
  (that chunk would read zeros instead of the source's data).

:meth:`ChunkBitmap.open` trusts the volatile bitmap only if its boot id is the current
one: the machine has not restarted since it was written, so the page cache it relies
on was never lost. Otherwise (reboot, power loss) it uses the durable bitmap alone and
rewrites the volatile one from it, bits first and the header with the new boot id
last, so a crash during the rewrite leaves a header that is still not trusted.

In memory: ``staged`` is what was (or is being) written to the volatile sidecar; it
changes only under a thread lock in worker threads, right after the data pwrite.
``bits`` is what the data path routes on, set on the event loop after the volatile
write returned: a reader or a lock-free writer never acts on a bit a crash could lose.

Both files have a 64-byte header (magic, version, kind, chunk count, boot id), then
one bit per chunk. Creation is O(1) in the volume size (ftruncate: a hole).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
import threading
from pathlib import Path

from targetcli_preserve._errors import BackendError
from targetcli_preserve.boot import current_boot_bytes

log = logging.getLogger(__name__)

MAGIC = b"TPCBMAP\0"
VERSION = 1
KIND_DURABLE = 1
KIND_VOLATILE = 2
_KIND_NAMES = {KIND_DURABLE: "durable", KIND_VOLATILE: "volatile"}
#: magic, version, kind, chunk count, boot id (16 raw bytes; zeros in the durable one)
_HEADER = struct.Struct("<8sHHQ16s")
HEADER_SIZE = 64  # the bits start here
_NOT_FULL = re.compile(rb"[^\xff]")


def current_boot_id() -> bytes:
    """16 bytes that differ for every boot of the kernel (so after any power loss)."""
    return current_boot_bytes()


def nbytes_for(nchunks: int) -> int:
    return (nchunks + 7) // 8


def _padding_byte(nchunks: int) -> int:
    used = nchunks & 7
    return 0 if used == 0 else (0xFF << used) & 0xFF


def _header(kind: int, nchunks: int, boot_id: bytes) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, kind, nchunks, boot_id).ljust(HEADER_SIZE, b"\0")


def _empty_image(nchunks: int) -> bytearray:
    image = bytearray(nbytes_for(nchunks))
    if image:
        image[-1] |= _padding_byte(nchunks)
    return image


def _or(a: bytes, b: bytes | bytearray) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(n, "little")


def _new_file(path: Path, kind: int, nchunks: int, boot_id: bytes) -> int:
    """Create a bitmap sidecar (must not exist): a hole plus its header. Not synced."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, HEADER_SIZE + nbytes_for(nchunks))
        os.pwrite(fd, _header(kind, nchunks, boot_id), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parse(path: Path, raw: bytes, kind: int, nchunks: int) -> bytes:
    """Check a header; returns its boot id. Errors name the field."""
    magic, version, got_kind, got_n, boot_id = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise BackendError(f"{path}: field 'magic' is {magic!r}, not a chunk bitmap")
    if version != VERSION:
        raise BackendError(f"{path}: field 'version' is {version}, expected {VERSION}")
    if got_kind != kind:
        raise BackendError(
            f"{path}: field 'kind' is {got_kind}, expected {kind} ({_KIND_NAMES[kind]})"
        )
    if got_n != nchunks:
        raise BackendError(f"{path}: field 'nchunks' is {got_n}, expected {nchunks}")
    return boot_id


def _read_durable(path: Path, nchunks: int) -> tuple[int, bytearray]:
    """Open the durable bitmap, creating an empty one where none ever reached the disk.

    Missing, empty, or a header of zeros: the clone lost power before its first flush()
    made the sidecar durable, so no chunk was durably hydrated. Anything else that does
    not parse is an error (never silently fewer bits)."""
    n = nbytes_for(nchunks)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        log.warning("%s is missing: no chunk of this lazy clone was flushed", path)
        fd = _new_file(path, KIND_DURABLE, nchunks, bytes(16))
        return fd, _empty_image(nchunks)
    try:
        raw = os.pread(fd, HEADER_SIZE + n, 0)
        if len(raw) < HEADER_SIZE or raw[:HEADER_SIZE] == bytes(HEADER_SIZE):
            log.warning("%s was never flushed: no chunk of this lazy clone was", path)
            os.ftruncate(fd, 0)  # any bits past a header of zeros are not trusted
            os.ftruncate(fd, HEADER_SIZE + n)
            os.pwrite(fd, _header(KIND_DURABLE, nchunks, bytes(16)), 0)
            return fd, _empty_image(nchunks)
        _parse(path, raw, KIND_DURABLE, nchunks)
        if len(raw) != HEADER_SIZE + n:
            raise BackendError(f"{path}: has {len(raw) - HEADER_SIZE} bytes of bits, expected {n}")
    except BaseException:
        os.close(fd)
        raise
    image = bytearray(raw[HEADER_SIZE:])
    if image:
        image[-1] |= _padding_byte(nchunks)
    return fd, image


def _read_volatile(path: Path, nchunks: int, boot_id: bytes) -> tuple[int, bytes | None]:
    """Open (or create) the volatile bitmap; its bits if written in this boot, else None."""
    n = nbytes_for(nchunks)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return fd, None
    try:
        raw = os.pread(fd, HEADER_SIZE + n, 0)
        if len(raw) != HEADER_SIZE + n or raw[:HEADER_SIZE] == bytes(HEADER_SIZE):
            return fd, None
        if _parse(path, raw, KIND_VOLATILE, nchunks) != boot_id:
            return fd, None  # written before a restart: its page cache may be lost
    except BaseException:
        os.close(fd)
        raise
    return fd, raw[HEADER_SIZE:]


class ChunkBitmap:
    def __init__(
        self,
        path: Path,
        volatile_path: Path,
        fd: int,
        vfd: int,
        nchunks: int,
        image: bytes,
        durable: bytes | bytearray,
    ) -> None:
        self.path = path
        self.volatile_path = volatile_path
        self.nchunks = nchunks
        self.bits = bytearray(image)
        self.staged = bytearray(image)
        #: What the durable sidecar holds (page cache; on disk once synced).
        self._durable = bytes(durable)
        self._fd = fd  # durable
        self._vfd = vfd  # volatile
        self._lock = threading.Lock()  # staged + volatile writes
        self._dlock = threading.Lock()  # durable writes
        #: Bumped by every commit: flush() has nothing to do for the bitmap while equal.
        self.generation = 0
        total = int.from_bytes(self.bits, "little").bit_count()
        self.remaining = nchunks - (total - (8 * len(self.bits) - nchunks))

    # ---- blocking constructors (run them on the executor) ----

    @classmethod
    def create(cls, path: Path, volatile_path: Path, nchunks: int) -> ChunkBitmap:
        """Make both sidecars (they must not exist). O(1), nothing synced."""
        boot_id = current_boot_id()
        fd = _new_file(path, KIND_DURABLE, nchunks, bytes(16))
        try:
            vfd = _new_file(volatile_path, KIND_VOLATILE, nchunks, boot_id)
        except BaseException:
            os.close(fd)
            raise
        image = bytes(_empty_image(nchunks))
        return cls(path, volatile_path, fd, vfd, nchunks, image, image)

    @classmethod
    def open(cls, path: Path, volatile_path: Path, nchunks: int) -> ChunkBitmap:
        """Load after a restart: the volatile bits if this boot wrote them, else the
        durable ones (and the volatile sidecar is rewritten from them)."""
        boot_id = current_boot_id()
        fd, durable = _read_durable(path, nchunks)
        vfd = -1
        try:
            vfd, volatile = _read_volatile(volatile_path, nchunks, boot_id)
            if volatile is not None:
                # Same boot: the page cache (data and volatile bits) is intact. Durable
                # bits are always a subset; OR them in anyway.
                image = _or(volatile, durable)
            else:
                image = bytes(durable)
                # Bits first, the header naming this boot last: a crash in between
                # leaves a header that is still not trusted.
                os.ftruncate(vfd, HEADER_SIZE + len(image))
                if image:
                    os.pwrite(vfd, image, HEADER_SIZE)
                os.pwrite(vfd, _header(KIND_VOLATILE, nchunks, boot_id), 0)
        except BaseException:
            os.close(fd)
            if vfd >= 0:
                os.close(vfd)
            raise
        return cls(path, volatile_path, fd, vfd, nchunks, image, durable)

    # ---- queries (event loop or worker threads; bits only ever go 0 -> 1) ----

    def test(self, chunk: int) -> bool:
        return bool(self.bits[chunk >> 3] >> (chunk & 7) & 1)

    def all_set(self, first: int, last: int) -> bool:
        bits = self.bits
        for c in range(first, last + 1):
            if not bits[c >> 3] >> (c & 7) & 1:
                return False
        return True

    def none_set(self, first: int, last: int) -> bool:
        bits = self.bits
        for c in range(first, last + 1):
            if bits[c >> 3] >> (c & 7) & 1:
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

    # ---- updates: mark (worker, after the data pwrite), then commit (event loop) ----

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

    def mark(self, chunks: list[int]) -> None:
        """Stage ``chunks`` and pwrite them to the volatile sidecar. Blocking; call it
        only after the chunks' data was pwritten to the clone (same thread)."""
        with self._lock:
            if self._vfd < 0:
                raise OSError(errno.EBADF, f"bitmap {self.volatile_path} is closed")
            lo, hi = self._set_list(self.staged, chunks)
            os.pwrite(self._vfd, bytes(self.staged[lo:hi]), HEADER_SIZE + lo)

    def mark_range(self, first: int, end: int) -> None:
        """Stage chunks ``first <= c < end`` (whole bytes at once) and pwrite them."""
        with self._lock:
            if self._vfd < 0:
                raise OSError(errno.EBADF, f"bitmap {self.volatile_path} is closed")
            lo, hi = self._set_range(self.staged, first, end)
            os.pwrite(self._vfd, bytes(self.staged[lo:hi]), HEADER_SIZE + lo)

    def commit(self, chunks: list[int]) -> None:
        """Make ``chunks`` visible to the data path (after :meth:`mark` returned)."""
        lo, hi = min(chunks) >> 3, (max(chunks) >> 3) + 1
        before = int.from_bytes(self.bits[lo:hi], "little").bit_count()
        self._set_list(self.bits, chunks)
        self.remaining -= int.from_bytes(self.bits[lo:hi], "little").bit_count() - before
        self.generation += 1

    def commit_range(self, first: int, end: int) -> None:
        lo, hi = first >> 3, ((end - 1) >> 3) + 1
        before = int.from_bytes(self.bits[lo:hi], "little").bit_count()
        self._set_range(self.bits, first, end)
        self.remaining -= int.from_bytes(self.bits[lo:hi], "little").bit_count() - before
        self.generation += 1

    # ---- the durable sidecar (flush only) ----

    def write_durable(self, snapshot: bytes, *, sync_file: bool = False) -> None:
        """Add ``snapshot``'s bits to the durable sidecar and fdatasync it. Blocking.

        The caller took ``snapshot`` from :attr:`bits` *before* it fdatasynced the
        clone's data file, so every bit written here has its data on disk. Bits only
        ever go 0 -> 1 (OR), so concurrent flushes cannot lose one. ``sync_file``: fsync
        even if no bit changed (the first flush of a new sidecar: its header)."""
        with self._dlock:
            if self._fd < 0:
                raise OSError(errno.EBADF, f"bitmap {self.path} is closed")
            new = _or(self._durable, snapshot)
            diff = int.from_bytes(new, "little") ^ int.from_bytes(self._durable, "little")
            if diff:
                lo = ((diff & -diff).bit_length() - 1) >> 3
                hi = (diff.bit_length() + 7) >> 3
                os.pwrite(self._fd, new[lo:hi], HEADER_SIZE + lo)
            if sync_file:
                os.fsync(self._fd)
            elif diff:
                os.fdatasync(self._fd)
            self._durable = new

    @property
    def durable_bits(self) -> bytes:
        return self._durable

    def close(self) -> None:
        for name in ("_fd", "_vfd"):
            fd = getattr(self, name)
            setattr(self, name, -1)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError as err:
                    if err.errno != errno.EBADF:
                        raise
