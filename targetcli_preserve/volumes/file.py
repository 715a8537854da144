"""Plain file volumes: a sparse file read and written with pread/pwrite.

Every blocking syscall runs on the shared executor (``_executor.py``), with one
exception that is safe by construction: a read is first tried on the event loop with
``preadv(..., RWF_NOWAIT)``. With RWF_NOWAIT the kernel copies from the page cache and
returns EAGAIN (or a short count) instead of waiting for the disk, so the loop never
blocks on I/O; only a cache miss pays the executor round trip (about 100 us on a
2-core VM, against 1-2 us for the cached read; batched, see ``_executor.py``). Filesystems that do not support it
answer EOPNOTSUPP once and the volume stops trying. Writes always go to the executor:
a buffered write may allocate blocks or be throttled by dirty-page writeback.

Durability (the LUN has a write-back cache, SBC-3 WCE=1; docs/design.md rule 8): a write
returns once its data is in the page cache, which a process crash keeps; flush()
(SYNCHRONIZE CACHE) makes every write that returned durable. A counter of finished
writes lets flush() skip the fdatasync when nothing changed since the last one. A
volume that was not made durable when it was created (a clone: the cut never waits
for the disk) or was opened after a restart is *fresh*: its first flush() fsyncs the
data file, its clone metadata and the directory, so its name survives a power loss.

A frozen volume reopens its file read-only. The old read-write descriptor is kept
open until close(): a syscall already handed to a worker thread may still use it, and
closing it early could let the number be reused for another file.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from targetcli_preserve._errors import BackendError, UserError
from targetcli_preserve.volumes import sidecar
from targetcli_preserve.volumes._executor import EXECUTOR, submit
from targetcli_preserve.volumes.base import Bytes, CloneStrategy, Volume

_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
#: Larger cached reads still go to the executor so one memcpy never holds the loop long.
NOWAIT_MAX = 256 * 1024


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """pread that fails loudly on a short read (the file is shorter than the volume)."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(errno.EIO, f"short read ({len(data)} of {length} bytes)")
    return data


def pwrite_all(fd: int, data: Bytes, offset: int) -> None:
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return
    view = memoryview(data)
    while n < len(view):
        done = os.pwrite(fd, view[n:], offset + n)
        if done <= 0:
            raise OSError(errno.EIO, "pwrite made no progress")
        n += done


def next_data(fd: int, offset: int, size: int) -> int:
    """First offset >= ``offset`` that may hold data (SEEK_DATA), ``size`` if none."""
    try:
        return min(os.lseek(fd, offset, os.SEEK_DATA), size)
    except OSError as err:
        if err.errno == errno.ENXIO:
            return size
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return offset  # no hole information: assume data
        raise


#: data_extents() merges extents closer than this (a tiny hole is cheaper to read than
#: two more lseeks) and stops splitting after this many (the rest is one extent).
EXTENT_GAP = 16 * 1024
MAX_EXTENTS = 64


def data_extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """``(begin, end)`` ranges within ``[start, end)`` that may hold data; a superset.

    SEEK_DATA/SEEK_HOLE, so a copy reads only the data: reading a hole is not free
    (the kernel fills the page cache with zero pages: ~0.6 ms per MiB on ext4, against
    ~45 us for cached data). Holes outside the list read as zeros. Without hole
    information the whole range is one extent."""
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        try:
            begin = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                break
            if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                begin = pos
            else:
                raise
        if begin >= end:
            break
        if len(out) >= MAX_EXTENTS:
            stop = end
        else:
            try:
                stop = min(os.lseek(fd, begin, os.SEEK_HOLE), end)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENXIO):
                    raise
                stop = end
            if stop <= begin:  # never loop: treat the rest as data
                stop = end
        if out and begin - out[-1][1] < EXTENT_GAP:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((begin, stop))
        pos = stop
    return out


class FileVolume(Volume):
    """A volume backed by one regular file."""

    def __init__(
        self,
        path: Path,
        fd: int,
        size: int,
        *,
        read_only: bool = False,
        strategy: CloneStrategy | None = None,
        fresh: bool = True,
    ) -> None:
        self.path = path
        self.size = size
        self.strategy = strategy
        self.read_only = read_only
        self._fd = fd
        self._retired_fds: list[int] = []
        self._nowait = bool(_RWF_NOWAIT)
        #: Bumped when a write (or a hydration) has finished; flush() records the value
        #: it made durable. Bumped *after* the pwrite, so a write still running when a
        #: flush starts is never counted as flushed.
        self._gen = 0
        self._synced_gen = 0
        #: True until a flush() made the file, its sidecars and its name durable.
        self._fresh = fresh
        self._dev: int | None = None

    # ---- raw file access (no bounds or frozen checks; used by subclasses too) ----

    def _read_cached(self, offset: int, length: int) -> bytes | None:
        buf = bytearray(length)
        try:
            n = os.preadv(self._fd, (buf,), offset, _RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False
                return None
            raise BackendError(f"read {self.path} at {offset}: {err.strerror}") from err
        if n != length:
            return None  # partly cached: the executor reads it all
        return bytes(buf)

    def read_cached(self, offset: int, length: int) -> bytes | None:
        if not self._nowait or not 0 < length <= NOWAIT_MAX or offset < 0:
            return None
        if offset + length > self.size:
            return None
        try:
            return self._read_cached(offset, length)
        except BackendError:
            return None  # read() reports it

    async def _read_file(self, offset: int, length: int) -> bytes:
        if self._nowait and length <= NOWAIT_MAX:
            data = self._read_cached(offset, length)
            if data is not None:
                return data
        try:
            return await submit(pread_exact, self._fd, length, offset)
        except OSError as err:
            raise BackendError(f"read {self.path} at {offset}+{length}: {err.strerror}") from err

    async def _write_file(self, offset: int, data: Bytes) -> None:
        try:
            await submit(pwrite_all, self._fd, data, offset)
        except OSError as err:
            raise BackendError(
                f"write {self.path} at {offset}+{len(data)}: {err.strerror}"
            ) from err
        self._gen += 1

    def _live_fd(self) -> int:
        """Our descriptor, for a worker thread; EBADF (not ValueError) once closed."""
        fd = self._fd
        if fd < 0:
            raise OSError(errno.EBADF, "the volume is closed")
        return fd

    def _sync_fresh_blocking(self) -> None:
        """First flush of a fresh volume: the file, its clone metadata, its name."""
        os.fsync(self._live_fd())
        if self.strategy is not None:
            sidecar.fsync_file(sidecar.meta_path(self.path))
        sidecar.fsync_dir(self.path.parent)

    def _sync_blocking(self, fresh: bool) -> None:
        if fresh:
            self._sync_fresh_blocking()
        else:
            os.fdatasync(self._live_fd())

    def dirty(self) -> bool:
        """True if a flush() would have anything to make durable."""
        return self._fresh or self._gen != self._synced_gen

    async def _flush_file(self) -> None:
        gen, fresh = self._gen, self._fresh
        if not fresh and gen == self._synced_gen:
            return  # nothing finished since the last flush: no fsync
        try:
            await asyncio.get_running_loop().run_in_executor(EXECUTOR, self._sync_blocking, fresh)
        except OSError as err:
            raise BackendError(f"flush {self.path}: {err.strerror or err}") from err
        self._fresh = False
        self._synced_gen = max(self._synced_gen, gen)

    def _read_blocking(self, offset: int, length: int) -> bytes:
        """Content at offset, for worker threads (a lazy clone hydrating from us)."""
        return pread_exact(self._fd, length, offset)

    def _next_data_blocking(self, offset: int) -> int:
        """First offset >= ``offset`` whose content may be non-zero, for worker threads."""
        return next_data(self._fd, offset, self.size)

    def _data_extents_blocking(self, start: int, end: int) -> list[tuple[int, int]]:
        """Ranges in ``[start, end)`` whose content may be non-zero (a superset), for
        worker threads; everything else reads as zeros."""
        return data_extents(self._fd, start, end)

    def _holders_blocking(self, start: int, end: int) -> list[tuple[FileVolume, int, int]]:
        """``(volume, begin, end)`` pieces of ``[start, end)`` with the volume whose own
        file holds that content (a lazy clone's reflink hydration shares its blocks),
        for worker threads. A plain file holds all of its content."""
        return [(self, start, end)]

    def _dev_blocking(self) -> int:
        """st_dev of our file (cached), for worker threads."""
        dev = self._dev
        if dev is None:
            dev = self._dev = os.fstat(self._live_fd()).st_dev
        return dev

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise UserError(
                f"range {offset}+{length} is outside volume {self.path} of {self.size} bytes"
            )

    # ---- the Volume API ----

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset + length > self.size:
            if length == 0 and 0 <= offset <= self.size:
                return b""
            self._check_range(offset, length)
        return await self._read_file(offset, length)

    async def write(self, offset: int, data: Bytes) -> None:
        if self.read_only:
            raise BackendError(f"volume {self.path} is frozen (read-only)")
        if offset < 0 or offset + len(data) > self.size:
            self._check_range(offset, len(data))
        if data:
            await self._write_file(offset, data)

    async def flush(self) -> None:
        await self._flush_file()

    async def freeze(self) -> None:
        if self.read_only:
            return
        self.read_only = True
        await self.flush()
        await self._reopen_read_only()

    async def _reopen_read_only(self) -> None:
        try:
            fd = await asyncio.get_running_loop().run_in_executor(
                EXECUTOR, os.open, self.path, os.O_RDONLY | os.O_CLOEXEC
            )
        except OSError as err:
            raise BackendError(f"reopen {self.path} read-only: {err.strerror}") from err
        self._retired_fds.append(self._fd)
        self._fd = fd

    async def close(self) -> None:
        fds, self._retired_fds = [self._fd, *self._retired_fds], []
        self._fd = -1  # later calls fail with EBADF, never touch a reused number
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
