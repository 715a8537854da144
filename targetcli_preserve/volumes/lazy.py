"""Lazy clones: every clone, made in O(1) at the cut (docs/design.md rule 3).

A lazy clone is a new sparse file of the source's size plus a chunk bitmap
(``bitmap.py``) and a JSON sidecar naming its source (``sidecar.py``). A set bit means
the chunk's content is in the clone's own file; a clear bit means "read the source",
which may itself be a lazy clone (chains are allowed). A background hydrator fills
the remaining chunks behind foreground I/O, skipping chunks that are holes in the
source (SEEK_DATA, recursively down the chain) so a sparse source gives a sparse
clone. Until it fills anything a clone is exactly its source, so the daemon makes the
next one before the cut ("standby") and the cut only starts its hydration.

How a chunk is filled depends on the strategy:

- LAZY (no reflink, e.g. ext4): copied. Only the source's data extents are read
  (SEEK_DATA/SEEK_HOLE, down the chain): reading a hole fills the page cache with zero
  pages, which made the first write to a mostly empty 1 MiB chunk cost ~0.6 ms.
- REFLINK (XFS, btrfs): shared, with FICLONERANGE (``reflink.py``) from the file that
  holds the chunk's content: the source if it is a plain file or has that chunk
  hydrated, else further down the chain (``_holders_blocking``). No data moves and no
  space is taken; copy-on-write separates the files later. Its result is exact (holes
  and stray bytes included, rule 4). What cannot be shared is copied as above: edges
  not aligned to the filesystem block (a file's unaligned tail), a holder on another
  filesystem, any FICLONERANGE failure, and -- for a write waiting on it only -- a
  range with dirty pages in the holder: the kernel would write those back to disk
  before sharing them, while a copy comes from the page cache. The hydrator instead
  writes them back first, holding no lock, then shares up to ``SHARE_BATCH_BYTES`` of
  consecutive chunks per FICLONERANGE. A first write shares its chunk, then writes
  whole blocks (its data plus the source's bytes around it): copy-on-write of a
  partly written shared block would read it back from the disk first. Durability is the same as for copied data: the
  fdatasync of the clone's file in flush() makes its shared extents durable (XFS logs
  the remap in the inode) before the bits reach the durable bitmap (rule 3 below).

Why the result is right while the source is still being written. The engine
replicates every pre-cut write to both the source and the clone (rule 4), so a source
write may be in flight while a chunk is hydrated, and a hydration may copy some of its
bytes. Correctness rests on these rules, enforced here:

1. A chunk is hydrated (by the hydrator, or by a write that covers it only partly)
   and a write to a not-yet-hydrated chunk is applied only while holding that
   chunk's asyncio lock, and always in the order "copy (or share) from the source,
   then write".
   So the clone-side copy of any replicated write lands *after* any hydration of its
   chunk and overwrites whatever half-written bytes that hydration copied; a
   hydration can never overwrite newer data.
2. Process crash (the page cache survives it). A chunk's bit is pwritten to the
   volatile bitmap in the same worker call, right after the chunk's data was
   pwritten, and only then set for the data path and the write acknowledged. So an
   acknowledged write survives: after a restart in the same boot the volatile bitmap
   is used and the chunk is not re-copied from the source over it. Writes to
   hydrated chunks take no lock at all. No fsync anywhere on this path.
3. Power loss (the LUN has a write-back cache: only flush() promises durability).
   flush() snapshots the set bits, fdatasyncs the clone's data, and only then writes
   those bits to the durable bitmap and fdatasyncs it, so the durable bitmap never
   holds a bit whose chunk data is not on disk. After a reboot only the durable
   bitmap is used (``bitmap.py``). The background hydrator does the same every
   ``HYDRATE_SYNC_BYTES`` of copied data and at the end, off the event loop and
   holding no chunk lock.
4. A chunk whose bit is clear reads from the source. After a lost bit (power loss,
   or a write that failed half-way) the clone's own file may still hold bytes in it;
   a hydration then copies the chunk *exactly* (zeros included) instead of skipping
   zero pieces or marking a source hole as hydrated, so the chunk never changes
   content without a write.

Once every bit is set the clone syncs, marks itself hydrated in its JSON sidecar and
never reads its source again: it behaves as a plain file volume from then on.

This module is long on purpose: rules 1-4 are kept jointly by the chunk locks, the
blocking fills (copy or share, then write) and the bitmap commits of one class; split
across modules, no single place would show any of those rules whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from targetcli_preserve._errors import BackendError
from targetcli_preserve.volumes import sidecar
from targetcli_preserve.volumes._executor import EXECUTOR
from targetcli_preserve.volumes.base import Bytes, CloneStrategy
from targetcli_preserve.volumes.bitmap import ChunkBitmap
from targetcli_preserve.volumes.file import (
    FileVolume,
    data_extents,
    next_data,
    pread_exact,
    pwrite_all,
)
from targetcli_preserve.volumes.reflink import (
    UNSUPPORTED,
    block_size,
    clone_range,
    has_dirty_pages,
    write_back,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: The first write to a chunk copies the rest of it (rule 1), on the latency path of the
#: first post-cut write. Measured on ext4 (page cache, 2-core VM), for a chunk full of
#: data: 1 MiB ~430 us, 256 KiB ~130 us, 64 KiB ~70 us; background hydration of dense
#: data ~900, ~550, ~210 MiB/s; bitmap of a 64 GiB volume 8, 32, 128 KiB. Sparse data
#: costs what its extents hold, whatever the chunk size (``_copy_sparse_blocking``).
DEFAULT_CHUNK_SIZE = 256 * 1024
#: The hydrator waits up to this long (in 0.5 ms steps) for foreground I/O to go idle
#: before copying its next chunk anyway: low priority, never starved.
_YIELD_STEPS = 20
_YIELD_STEP_S = 0.0005
#: The hydrator flushes (rule 3) after copying this much data, so a power loss does
#: not undo more than this much of its work.
HYDRATE_SYNC_BYTES = 64 << 20
#: A REFLINK clone's hydrator shares up to this much per step, in one FICLONERANGE
#: per holder: ~15 us for a clean range on XFS, whatever its size, but the ioctl holds
#: our file's I/O lock for a time that grows with the extents it remaps, stalling our
#: writers meanwhile; this bounds it (512 extents at worst).
SHARE_BATCH_BYTES = 2 << 20


#: Source path -> the open, not yet hydrated lazy clones reading through it (rule 3: a
#: volume stays as long as a lazy clone still reads through it; remove_volume checks).
_readers: dict[Path, set[Path]] = {}


def readers_of(path: Path) -> set[Path]:
    """Paths of open lazy clones in this process that still read through ``path``."""
    return set(_readers.get(path, ()))


_SPARSE_PIECE = 64 * 1024
_ZERO_PIECE = bytes(_SPARSE_PIECE)


def _write_nonzero(fd: int, data: bytes, offset: int) -> bool:
    """Write ``data`` at ``offset`` but skip all-zero 64 KiB pieces (keep the clone sparse)."""
    view = memoryview(data)
    wrote = False
    run_start = -1
    for pos in range(0, len(data), _SPARSE_PIECE):
        piece = data[pos : pos + _SPARSE_PIECE]
        zero = piece == _ZERO_PIECE[: len(piece)]
        if not zero and run_start < 0:
            run_start = pos
        elif zero and run_start >= 0:
            pwrite_all(fd, view[run_start:pos], offset + run_start)
            wrote, run_start = True, -1
    if run_start >= 0:
        pwrite_all(fd, view[run_start:], offset + run_start)
        wrote = True
    return wrote


class LazyVolume(FileVolume):
    """A lazy clone of ``source``; see the module docstring for the rules it keeps."""

    def __init__(
        self,
        path: Path,
        fd: int,
        *,
        source: FileVolume,
        bitmap: ChunkBitmap,
        meta: sidecar.CloneMeta,
        read_only: bool = False,
        owned_sources: tuple[FileVolume, ...] = (),
    ) -> None:
        super().__init__(path, fd, meta.size, read_only=read_only, strategy=meta.strategy)
        assert meta.chunk_size is not None
        self._source = source
        self._bitmap = bitmap
        self._meta = meta
        self._cs = meta.chunk_size
        self._nchunks = bitmap.nchunks
        self._owned_sources = owned_sources
        _readers.setdefault(source.path, set()).add(path)
        self._complete = False
        self._locks: dict[int, asyncio.Lock] = {}
        self._fg = 0  # foreground operations on the slow (not hydrated) path
        self._cursor = 0
        self._hydrator: asyncio.Task[None] | None = None
        self._stopping = False
        self._done = asyncio.Event()
        self._error: BaseException | None = None
        self._unsynced_bytes = 0  # copied by the hydrator since the last flush
        #: REFLINK: hydrate by sharing blocks (FICLONERANGE), copying only what cannot be.
        self._share = meta.strategy is CloneStrategy.REFLINK
        self._blk = 0  # FICLONERANGE alignment, found on first use (worker thread)
        self._unshareable: set[int] = set()  # st_dev of holders that cannot share

    def _release_source(self) -> None:
        readers = _readers.get(self._source.path)
        if readers is not None:
            readers.discard(self.path)
            if not readers:
                del _readers[self._source.path]

    @property
    def source(self) -> FileVolume | None:
        """The volume this clone still reads through (None once hydrated)."""
        return None if self._complete else self._source

    def start_hydration(self) -> None:
        """Start the background hydrator (needs a running loop)."""
        if self._hydrator is None or self._hydrator.done():
            self._hydrator = asyncio.get_running_loop().create_task(
                self._run_hydrator(), name=f"hydrate {self.path}"
            )

    # ---- helpers ----

    def _chunk_end(self, c: int) -> int:
        return min((c + 1) * self._cs, self.size)

    def _lock_for(self, c: int) -> asyncio.Lock:
        lock = self._locks.get(c)
        if lock is None:
            lock = self._locks[c] = asyncio.Lock()
        return lock

    def _runs(self, offset: int, length: int) -> Iterator[tuple[bool, int, int]]:
        """Split a range into (hydrated, start, length) runs of like chunks."""
        cs, bits = self._cs, self._bitmap.bits
        end = offset + length
        c = offset // cs
        last = (end - 1) // cs
        pos = offset
        while pos < end:
            hydrated = bool(bits[c >> 3] >> (c & 7) & 1)
            while c < last and bool(bits[(c + 1) >> 3] >> ((c + 1) & 7) & 1) == hydrated:
                c += 1
            run_end = min(end, (c + 1) * cs)
            yield hydrated, pos, run_end - pos
            pos = run_end
            c += 1

    async def _call(self, what: str, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(EXECUTOR, fn, *args)
        except OSError as err:
            raise BackendError(f"{what} {self.path}: {err.strerror or err}") from err

    # ---- blocking helpers for worker threads ----

    def _read_blocking(self, offset: int, length: int) -> bytes:
        if self._complete:
            return pread_exact(self._fd, length, offset)
        parts = [
            pread_exact(self._fd, n, start) if hydrated else self._source._read_blocking(start, n)
            for hydrated, start, n in self._runs(offset, length)
        ]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _next_data_blocking(self, offset: int) -> int:
        own = next_data(self._fd, offset, self.size)
        if self._complete:
            return own
        # Hydrated chunks hold data only where our file does; the others are the
        # source's. The minimum is conservative (it may name a chunk of zeros).
        return min(own, self._source._next_data_blocking(offset))

    def _data_extents_blocking(self, start: int, end: int) -> list[tuple[int, int]]:
        if self._complete:
            return data_extents(self._fd, start, end)
        # Hydrated chunks: our own file's extents; the others: the source's (their
        # content is the source's, whatever stray bytes our file may hold there).
        out: list[tuple[int, int]] = []
        for hydrated, s, n in self._runs(start, end - start):
            if hydrated:
                out += data_extents(self._fd, s, s + n)
            else:
                out += self._source._data_extents_blocking(s, s + n)
        return out

    def _source_has_data(self, start: int, end: int) -> bool:
        return self._source._next_data_blocking(start) < end

    def _own_has_data(self, start: int, end: int) -> bool:
        """Bytes in our file where the bit is clear: left by a lost bit (rule 4)."""
        return next_data(self._fd, start, self.size) < end

    def _copy_exact_blocking(self, start: int, end: int) -> int:
        """Copy source bytes over our file's stray bytes, zeros included (rule 4)."""
        if not self._source_has_data(start, end):
            pwrite_all(self._fd, bytes(end - start), start)
        else:
            pwrite_all(self._fd, self._source._read_blocking(start, end - start), start)
        return end - start

    def _copy_sparse_blocking(self, extents: list[tuple[int, int]], start: int, end: int) -> int:
        """Copy the source's data ``extents`` clipped to ``[start, end)`` into our file,
        which is a hole there; zero pieces are skipped. Returns the bytes written.

        Only the extents are read: a hole of the source is never read (module
        docstring of ``file.py``: reading a hole costs more than reading data)."""
        copied = 0
        for e_begin, e_end in extents:
            s, e = max(e_begin, start), min(e_end, end)
            if s >= e:
                continue
            data = self._source._read_blocking(s, e - s)
            if _write_nonzero(self._fd, data, s):
                copied += e - s
        return copied

    def _copy_chunk_parts_blocking(self, c: int, parts: list[tuple[int, int]]) -> int:
        """Copy the ``parts`` (ranges inside chunk ``c``) of the source into our file.

        If our file holds stray bytes in the chunk (rule 4) the parts are copied
        exactly; else only the source's data, skipping holes and zero pieces."""
        cstart, cend = c * self._cs, self._chunk_end(c)
        if self._own_has_data(cstart, cend):
            return sum(self._copy_exact_blocking(s, e) for s, e in parts)
        extents = self._source._data_extents_blocking(cstart, cend)
        if not extents:
            return 0  # old content is zeros and our file is a hole: nothing to copy
        return sum(self._copy_sparse_blocking(extents, s, e) for s, e in parts)

    # ---- reflink hydration (REFLINK clones): share the holder's blocks ----

    def _holders_blocking(self, start: int, end: int) -> list[tuple[FileVolume, int, int]]:
        if self._complete:
            return [(self, start, end)]
        # Hydrated chunks: our own file holds them; the others: whoever holds the
        # source's content there (never our file's stray bytes under a clear bit).
        out: list[tuple[FileVolume, int, int]] = []
        for hydrated, s, n in self._runs(start, end - start):
            if hydrated:
                out.append((self, s, s + n))
            else:
                out += self._source._holders_blocking(s, s + n)
        return out

    def _try_share(self, holder: FileVolume, start: int, end: int, foreground: bool) -> bool:
        """FICLONERANGE ``holder[start, end)`` (block aligned) over the same range of
        our file; False (nothing changed) if it cannot, and the caller copies.

        The kernel writes back the holder's dirty pages in the range before sharing
        them. A write waiting for this (``foreground``) copies dirty ranges instead:
        from the page cache, never waiting for the disk."""
        fd = holder._fd
        if fd < 0:
            return False  # closed: the copy reports it
        dev = holder._dev_blocking()
        if dev in self._unshareable:
            return False
        try:
            if foreground:
                if has_dirty_pages(fd, start, end - start):
                    return False
            else:
                # Write back first, without any inode lock: the ioctl would do it
                # holding our file's I/O lock, stalling our writers meanwhile.
                write_back(fd, start, end - start)
            clone_range(self._fd, fd, start, end - start, start)
        except OSError as err:
            if err.errno in UNSUPPORTED and err.errno != errno.EINVAL:
                self._unshareable.add(dev)
            log.warning(
                "%s: cannot share %s[%d, %d) (%s), copying instead",
                self.path,
                holder.path,
                start,
                end,
                err.strerror or err,
            )
            return False
        return True

    def _block_size(self) -> int:
        if not self._blk:
            self._blk = block_size(self._live_fd())
        return self._blk

    def _share_blocking(self, start: int, end: int, foreground: bool) -> list[tuple[int, int]]:
        """Make ``[start, end)`` of our file share the blocks that hold the source's
        content there; returns the ranges left to copy (edges not aligned to the
        filesystem block, holders that cannot share, failures)."""
        blk = self._block_size()
        a, b = -(-start // blk) * blk, end // blk * blk
        if a >= b:
            return [(start, end)]
        left = [(start, a)] if start < a else []
        for holder, s, e in self._source._holders_blocking(a, b):
            s2, e2 = -(-s // blk) * blk, e // blk * blk
            if s2 < e2 and self._try_share(holder, s2, e2, foreground):
                if s < s2:
                    left.append((s, s2))
                if e2 < e:
                    left.append((e2, e))
            else:
                left.append((s, e))
        if b < end:
            left.append((b, end))
        return left

    def _copy_piece_blocking(self, start: int, end: int) -> int:
        """Copy the source's ``[start, end)``: exactly if our file holds bytes there
        (stray, rule 4), else only its data."""
        if next_data(self._fd, start, self.size) < end:
            return self._copy_exact_blocking(start, end)
        extents = self._source._data_extents_blocking(start, end)
        return self._copy_sparse_blocking(extents, start, end) if extents else 0

    def _fill_blocking(
        self, start: int, end: int, parts: list[tuple[int, int]], foreground: bool
    ) -> int:
        """Give ``parts`` (within ``[start, end)``, whole not yet hydrated chunks) the
        source's content (rule 1: before any write to them). Returns the bytes done.

        REFLINK: share all of ``[start, end)`` (a FICLONERANGE result is exact, holes
        and stray bytes included), then copy, within ``parts``, what was not shared."""
        if start >= end:
            return 0
        done = end - start
        for s, e in self._share_blocking(start, end, foreground):
            done -= e - s
            for ps, pe in parts:
                lo, hi = max(s, ps), min(e, pe)
                if lo < hi:
                    done += self._copy_piece_blocking(lo, hi)
        return done

    def _hydrate_chunks_blocking(self, chunks: list[int]) -> int:
        """Fill ``chunks`` (ascending; REFLINK shares each contiguous run at once),
        then pwrite their bits to the volatile bitmap (rule 2)."""
        done = 0
        if not self._share:
            for c in chunks:
                done += self._copy_chunk_parts_blocking(c, [(c * self._cs, self._chunk_end(c))])
        else:
            i = 0
            while i < len(chunks):
                j = i
                while j + 1 < len(chunks) and chunks[j + 1] == chunks[j] + 1:
                    j += 1
                start, end = chunks[i] * self._cs, self._chunk_end(chunks[j])
                done += self._fill_blocking(start, end, [(start, end)], foreground=False)
                i = j + 1
        self._bitmap.mark(chunks)
        return done

    def _hydrate_and_write_blocking(self, chunks: list[int], offset: int, data: Bytes) -> None:
        """Fill the parts of ``chunks`` outside the write, write, then pwrite the bits
        to the volatile bitmap (rules 1 and 2). No fdatasync (rule 3)."""
        if self._share:
            return self._share_and_write_blocking(chunks, offset, data)
        end = offset + len(data)
        for c in chunks:
            cstart, cend = c * self._cs, self._chunk_end(c)
            parts = []
            if cstart < offset:
                parts.append((cstart, offset))
            if end < cend:
                parts.append((end, cend))
            if parts:
                self._copy_chunk_parts_blocking(c, parts)
        pwrite_all(self._fd, data, offset)
        self._bitmap.mark(chunks)

    def _share_and_write_blocking(self, chunks: list[int], offset: int, data: Bytes) -> None:
        """REFLINK: share each of ``chunks`` whole, then write, then pwrite the bits.

        The write is widened to whole filesystem blocks with the source's bytes: a
        partly written shared block would first be read back from the disk (measured
        on XFS: ~135 us against ~70 us in the worker for a 512-byte first write). It
        is widened only within ``chunks``: their locks are held, and their content is
        the source's (a hydrated chunk's is our own, and may be being written)."""
        end = offset + len(data)
        blk, cs, held = self._block_size(), self._cs, set(chunks)
        head, tail = offset // blk * blk, min(-(-end // blk) * blk, self.size)
        for c in range((offset - 1) // cs, head // cs - 1, -1) if head < offset else ():
            if c not in held:
                head = min((c + 1) * cs, offset)
                break
        for c in range(end // cs, (tail - 1) // cs + 1) if end < tail else ():
            if c not in held:
                tail = max(c * cs, end)
                break
        for c in chunks:
            cstart, cend = c * cs, self._chunk_end(c)
            parts = []
            if cstart < head:
                parts.append((cstart, min(head, cend)))
            if tail < cend:
                parts.append((max(tail, cstart), cend))
            if parts:
                self._fill_blocking(cstart, cend, parts, foreground=True)
        if head < offset or end < tail:
            src = self._source
            pieces: list[Bytes] = [src._read_blocking(head, offset - head)] if head < offset else []
            pieces.append(data)
            if end < tail:
                pieces.append(src._read_blocking(end, tail - end))
            data = b"".join(pieces)
        pwrite_all(self._fd, data, head)
        self._bitmap.mark(chunks)

    def _find_data_blocking(self, offset: int) -> tuple[int, int]:
        """(first data in the source, first byte in our own file) from ``offset``.

        REFLINK: also writes back the holders' dirty pages the next batch will share,
        while the hydrator holds no chunk lock (``_try_share``)."""
        nd = self._source._next_data_blocking(offset)
        if self._share and nd < self.size:
            end = min(nd + SHARE_BATCH_BYTES, self.size)
            for holder, s, e in self._source._holders_blocking(nd, end):
                if holder._fd >= 0:
                    with contextlib.suppress(OSError):
                        write_back(holder._fd, s, e - s)
        return nd, next_data(self._fd, offset, self.size)

    def _flush_blocking(self, snapshot: bytes, fresh: bool) -> None:
        """Rule 3: data first, then the snapshot's bits to the durable bitmap."""
        if fresh:
            os.fsync(self._live_fd())
        else:
            os.fdatasync(self._live_fd())
        self._bitmap.write_durable(snapshot, sync_file=fresh)
        if fresh:
            sidecar.fsync_file(sidecar.meta_path(self.path))
            sidecar.fsync_dir(self.path.parent)

    # ---- bitmap commits (event loop; the bits were marked by a worker) ----

    def _commit(self, chunks: list[int]) -> None:
        self._bitmap.commit(chunks)
        self._gen += 1
        for c in chunks:
            self._locks.pop(c, None)

    async def _mark_range(self, first: int, end: int) -> None:
        await self._call("update bitmap of", self._bitmap.mark_range, first, end)
        self._bitmap.commit_range(first, end)
        self._gen += 1

    # ---- the Volume API ----

    def read_cached(self, offset: int, length: int) -> bytes | None:
        if self._complete or not 0 <= offset < offset + length <= self.size:
            return super().read_cached(offset, length)
        first, last = offset // self._cs, (offset + length - 1) // self._cs
        if self._bitmap.all_set(first, last):
            return super().read_cached(offset, length)
        if self._bitmap.none_set(first, last):
            return self._source.read_cached(offset, length)
        return None  # part ours, part the source's: read() joins them

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset + length > self.size:
            if length == 0 and 0 <= offset <= self.size:
                return b""
            self._check_range(offset, length)
        if self._complete:
            return await self._read_file(offset, length)
        cs = self._cs
        if self._bitmap.all_set(offset // cs, (offset + length - 1) // cs):
            return await self._read_file(offset, length)
        self._fg += 1
        try:
            runs = list(self._runs(offset, length))
            if len(runs) == 1:
                return await self._source.read(offset, length)
            parts = await asyncio.gather(
                *(
                    self._read_file(start, n) if hydrated else self._source.read(start, n)
                    for hydrated, start, n in runs
                )
            )
            return b"".join(parts)
        finally:
            self._fg -= 1

    async def write(self, offset: int, data: Bytes) -> None:
        if self.read_only:
            raise BackendError(f"volume {self.path} is frozen (read-only)")
        length = len(data)
        if offset < 0 or offset + length > self.size:
            self._check_range(offset, length)
        if not length:
            return
        if self._complete:
            return await self._write_file(offset, data)
        cs = self._cs
        first, last = offset // cs, (offset + length - 1) // cs
        if self._bitmap.all_set(first, last):
            return await self._write_file(offset, data)  # hydrated: no lock (rule 2)
        self._fg += 1
        try:
            await self._write_hydrating(offset, data, first, last)
        finally:
            self._fg -= 1

    async def _write_hydrating(self, offset: int, data: Bytes, first: int, last: int) -> None:
        bm = self._bitmap
        # Take the lock objects synchronously (no await between the bit test and the
        # dict lookup), then acquire them in ascending chunk order: no deadlock.
        locks = [self._lock_for(c) for c in range(first, last + 1) if not bm.test(c)]
        held: list[asyncio.Lock] = []
        try:
            for lock in locks:
                await lock.acquire()
                held.append(lock)
            todo = [c for c in range(first, last + 1) if not bm.test(c)]
            if not todo:
                await self._write_file(offset, data)
                return
            await self._call(
                "hydrate and write", self._hydrate_and_write_blocking, todo, offset, data
            )
            self._commit(todo)
        finally:
            for lock in held:
                lock.release()

    async def flush(self) -> None:
        if self._complete:
            return await self._flush_file()
        gen, fresh = self._gen, self._fresh
        if not fresh and gen == self._synced_gen:
            return  # nothing finished since the last flush: no fsync
        # Snapshot before the data sync: every bit in it has its data pwritten.
        snapshot = bytes(self._bitmap.bits)
        self._unsynced_bytes = 0
        await self._call("flush", self._flush_blocking, snapshot, fresh)
        self._fresh = False
        self._synced_gen = max(self._synced_gen, gen)

    async def freeze(self) -> None:
        if self.read_only:
            return
        self.read_only = True
        await self.flush()
        if self._complete:
            await self._reopen_read_only()
        # else: the hydrator still writes our file; _finish() reopens it read-only.

    def hydration_progress(self) -> float:
        if self._complete:
            return 1.0
        return 1.0 - self._bitmap.remaining / self._nchunks

    async def wait_hydrated(self) -> None:
        if self._complete:
            return
        if self._stopping:
            raise BackendError(f"volume {self.path} is closed before it was hydrated")
        if self._error is None:
            self.start_hydration()
            await self._done.wait()
        if self._error is not None:
            raise BackendError(f"hydration of {self.path} failed: {self._error}") from self._error
        if not self._complete:
            raise BackendError(f"volume {self.path} was closed before it was hydrated")

    async def close(self) -> None:
        self._stopping = True
        task = self._hydrator
        if task is not None and not task.done():
            # It stops between chunks, so no copy is left running in a worker thread;
            # a failure is already recorded in self._error.
            with contextlib.suppress(Exception):
                await task
        self._done.set()
        self._release_source()
        self._bitmap.close()
        await super().close()
        for src in self._owned_sources:
            await src.close()

    # ---- background hydration ----

    async def hydrate_step(self) -> bool:
        """Hydrate the next chunk (or run of source-hole chunks); False when none is left.

        The background hydrator is a loop over this; tests call it directly."""
        bm = self._bitmap
        c = bm.next_clear(self._cursor)
        if c is None:
            return False
        nd, own = await self._call("find data for", self._find_data_blocking, c * self._cs)
        hole_end = self._nchunks if nd >= self.size else nd // self._cs
        if own < self.size:
            hole_end = min(hole_end, own // self._cs)  # stray bytes of ours: copy exactly
        if hole_end > c:
            # Chunks c..hole_end-1 are holes in the source: set their bits without
            # writing anything. Chunks someone is hydrating right now are left to them.
            busy = sorted(k for k in self._locks if c <= k < hole_end)
            start = c
            for k in [*busy, hole_end]:
                if k > start:
                    await self._mark_range(start, k)
                start = k + 1
            self._cursor = hole_end
            return True
        run = [c]
        if self._share:  # one FICLONERANGE for a run of chunks nobody else holds
            limit = max(1, SHARE_BATCH_BYTES // self._cs)
            k = c + 1
            while (
                len(run) < limit and k < self._nchunks and not bm.test(k) and k not in self._locks
            ):
                run.append(k)
                k += 1
        locks = [self._lock_for(k) for k in run]
        held: list[asyncio.Lock] = []
        try:
            for lock in locks:
                await lock.acquire()
                held.append(lock)
            todo = [k for k in run if not bm.test(k)]
            if todo:
                self._unsynced_bytes += await self._call(
                    "hydrate", self._hydrate_chunks_blocking, todo
                )
                self._commit(todo)
        finally:
            for lock in held:
                lock.release()
        self._cursor = run[-1] + 1
        return True

    async def _run_hydrator(self) -> None:
        try:
            while not self._stopping:
                for _ in range(_YIELD_STEPS):
                    if not self._fg or self._stopping:
                        break
                    await asyncio.sleep(_YIELD_STEP_S)
                if self._stopping:
                    return
                if not await self.hydrate_step():
                    await self._finish()
                    return
                if self._unsynced_bytes >= HYDRATE_SYNC_BYTES:
                    await self.flush()  # rule 3; no chunk lock is held here
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - reported through wait_hydrated()
            log.error("hydration of %s stopped: %s", self.path, err)
            self._error = err
            self._done.set()

    async def _finish(self) -> None:
        await self.flush()  # every chunk's data, then the full durable bitmap
        self._meta = dataclasses.replace(self._meta, hydrated=True)
        await self._call("mark hydrated", sidecar.replace_meta, self.path, self._meta)
        self._complete = True
        self._release_source()
        if self.read_only:
            await self._reopen_read_only()
        self._done.set()
        log.info("lazy clone %s is hydrated", self.path)
