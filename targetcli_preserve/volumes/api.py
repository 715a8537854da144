"""The volume API: create, open, clone and remove file volumes.

Creation is transactional (docs/design.md section 6). A data file is built as ``P.partial``
and published as ``P`` with link(2), which fails if ``P`` exists; the sidecars are
written before that, so after a process crash ``P`` either does not exist or is
complete (the page cache keeps the order of the syscalls).

Durability. ``create_volume`` (not on a hot path) fsyncs the file and the directory
before it returns. ``clone_volume`` is on the cut's latency path (docs/design.md rule 3:
the first post-cut write waits for it), so it issues no fsync at all: the LUN has a
write-back cache, and the clone's first ``flush()`` (SYNCHRONIZE CACHE) makes the
file, its sidecars and its name durable. Until then a power loss may lose the clone
(or leave it unreadable: ``open_volume`` then fails with a clear error), never make
it read wrong data.
Whatever a failed call made is removed before the error is raised; ``remove_volume``
deletes ``P`` and every sidecar, and is what the engine's journal uses to roll back a
clone whose preserve never finished (rule 9).

Clone strategy (rule 3): every clone is a lazy clone (``lazy.py``), made in O(1): a
hole of the source's size, a bitmap of one bit per chunk (a hole too) and a small
JSON; no data is copied or shared at the cut. Automatic mode picks REFLINK when the
destination can share the source's blocks (``reflink.probe``: a zero-length
FICLONERANGE, ~15 us) and LAZY otherwise; the two differ only in how a chunk is
hydrated: FICLONERANGE (shared blocks, no data moved) or a copy. A whole-file FICLONE
at the cut is never used: its cost grows with the source's extents and dirty pages.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from targetcli_preserve._errors import BackendError, UserError
from targetcli_preserve.volumes import sidecar
from targetcli_preserve.volumes._executor import EXECUTOR
from targetcli_preserve.volumes.base import CloneStrategy, Volume
from targetcli_preserve.volumes.bitmap import ChunkBitmap
from targetcli_preserve.volumes.file import FileVolume
from targetcli_preserve.volumes.lazy import DEFAULT_CHUNK_SIZE, LazyVolume, readers_of
from targetcli_preserve.volumes.reflink import ReflinkUnsupported, probe

_OPEN_FLAGS = os.O_CLOEXEC
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def _run(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    return await asyncio.get_running_loop().run_in_executor(EXECUTOR, fn, *args)


def _os_error(what: str, path: Path, err: OSError) -> Exception:
    if err.errno == errno.EEXIST:
        return UserError(f"{what} {path}: it already exists")
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return UserError(f"{what} {path}: no such directory {path.parent}")
    return BackendError(f"{what} {path}: {err.strerror or err}")


def _remove_blocking(path: Path) -> None:
    removed = False
    for p in sidecar.all_paths(path):
        try:
            os.unlink(p)
            removed = True
        except FileNotFoundError:
            pass
    if removed:
        sidecar.fsync_dir(path.parent)


def _new_partial(path: Path, size: int) -> int:
    """Create ``P.partial`` (removing a stale one from a crash), sized as a hole."""
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "exists", str(path))
    _remove_blocking(path)  # leftovers of a half-made volume that was never published
    fd = os.open(
        sidecar.partial_path(path), os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600
    )
    if size:
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _publish(path: Path, fd: int, *, durable: bool) -> None:
    """Make the partial file appear as ``path`` (fails if it exists); with ``durable``,
    fsync it before and the directory after."""
    if durable:
        os.fsync(fd)
    partial = sidecar.partial_path(path)
    os.link(partial, path)
    os.unlink(partial)
    if durable:
        sidecar.fsync_dir(path.parent)


def _create_blocking(path: Path, size: int) -> int:
    fd = _new_partial(path, size)
    try:
        _publish(path, fd, durable=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def create_volume(path: Path, size: int) -> Volume:
    """Create a new sparse volume of ``size`` bytes at ``path`` (which must not exist)."""
    path = Path(path).absolute()
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise UserError(f"volume size must be a positive number of bytes, not {size!r}")
    try:
        fd = await _run(_create_blocking, path, size)
    except OSError as err:
        if err.errno != errno.EEXIST:
            await _run(_remove_blocking, path)
        else:
            await _run(_cleanup_unpublished, path)
        raise _os_error("create volume", path, err) from err
    return FileVolume(path, fd, size, fresh=False)


def _cleanup_unpublished(path: Path) -> None:
    """Remove our partial file and sidecars, but never an existing published volume."""
    if not os.path.lexists(path):
        _remove_blocking(path)
    else:
        try:
            os.unlink(sidecar.partial_path(path))
        except FileNotFoundError:
            pass


# ---- clone ----


@dataclass
class _Made:
    fd: int
    meta: sidecar.CloneMeta
    bitmap: ChunkBitmap


def _clone_blocking(
    source: FileVolume, dest: Path, strategy: CloneStrategy | None, chunk_size: int
) -> _Made:
    fd = _new_partial(dest, 0)
    try:
        kind = CloneStrategy.LAZY
        if strategy in (None, CloneStrategy.REFLINK):
            try:
                probe(fd, source._fd)  # O(1): shares nothing (reflink.py)
                kind = CloneStrategy.REFLINK
            except ReflinkUnsupported as err:
                if strategy is CloneStrategy.REFLINK:
                    raise BackendError(
                        f"reflink clone of {source.path} to {dest} is not possible: "
                        f"the filesystem does not support FICLONERANGE "
                        f"({os.strerror(err.errno or 0)}); use the lazy strategy"
                    ) from err
        # O(1): a hole of the right size, two hole-backed bitmaps, a small JSON. No
        # data is copied or shared yet (a REFLINK clone shares chunks as it hydrates).
        # No fsync: the first flush() makes them durable (module docstring).
        os.ftruncate(fd, source.size)
        nchunks = -(-source.size // chunk_size)
        bitmap = ChunkBitmap.create(
            sidecar.bitmap_path(dest), sidecar.volatile_bitmap_path(dest), nchunks
        )
        try:
            meta = sidecar.CloneMeta(kind, source.path, source.size, chunk_size)
            sidecar.write_meta_new(dest, meta)
            _publish(dest, fd, durable=False)
        except BaseException:
            bitmap.close()
            raise
        return _Made(fd, meta, bitmap)
    except BaseException:
        os.close(fd)
        raise


async def clone_volume(
    source: Volume,
    dest: Path,
    strategy: CloneStrategy | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    background: bool = True,
) -> Volume:
    """Clone ``source`` to a new volume at ``dest`` in O(1) time (docs/design.md rule 3).

    Returns a LazyVolume. ``strategy`` None picks REFLINK when the destination can
    share ``source``'s blocks (same reflink-capable filesystem), else LAZY; an explicit
    REFLINK where that is impossible is a BackendError. The clone reads through
    ``source``, which must stay open until the clone is hydrated (``wait_hydrated``)
    or closed; ``background=False`` leaves hydration to ``start_hydration``,
    ``hydrate_step`` or ``wait_hydrated`` (a standby clone made before the cut: until
    it hydrates anything it is exactly its source).

    Nothing is fsynced: the clone is durable after its first ``flush()``."""
    dest = Path(dest).absolute()
    if not isinstance(source, FileVolume):
        raise UserError(f"cannot clone {source!r}: only file volumes are supported")
    if strategy is not None and not isinstance(strategy, CloneStrategy):
        raise UserError(f"unknown clone strategy {strategy!r}")
    if not isinstance(chunk_size, int) or chunk_size <= 0 or chunk_size % 512:
        raise UserError(f"chunk size must be a positive multiple of 512, not {chunk_size!r}")
    if source._fd < 0:
        raise UserError(f"cannot clone {source.path}: the volume is closed")
    try:
        made = await _run(_clone_blocking, source, dest, strategy, chunk_size)
    except BackendError:
        await _run(_cleanup_unpublished, dest)
        raise
    except OSError as err:
        await _run(_cleanup_unpublished, dest)
        raise _os_error(f"clone {source.path} to", dest, err) from err
    vol = LazyVolume(dest, made.fd, source=source, bitmap=made.bitmap, meta=made.meta)
    if background:
        vol.start_hydration()
    return vol


# ---- open ----


def _open_blocking(path: Path, read_only: bool) -> tuple[int, int, sidecar.CloneMeta | None]:
    meta = sidecar.read_meta(path)
    if meta is None and os.path.lexists(path):
        for other in (sidecar.bitmap_path(path), sidecar.volatile_bitmap_path(path)):
            if os.path.lexists(other):
                raise BackendError(
                    f"{path} has a chunk bitmap ({other.name}) but no clone metadata "
                    f"({sidecar.meta_path(path).name}): an incomplete lazy clone"
                )
    lazy = meta is not None and meta.chunk_size is not None and not meta.hydrated
    # A lazy clone keeps a writable fd even when read-only: its hydrator writes it.
    flags = os.O_RDONLY if read_only and not lazy else os.O_RDWR
    fd = os.open(path, flags | _OPEN_FLAGS)
    try:
        size = os.fstat(fd).st_size
        if meta is not None and meta.size != size:
            raise BackendError(f"{path} has {size} bytes but its clone metadata says {meta.size}")
    except BaseException:
        os.close(fd)
        raise
    return fd, size, meta


async def _open(
    path: Path, *, source: Volume | None, read_only: bool, background: bool
) -> FileVolume:
    try:
        fd, size, meta = await _run(_open_blocking, path, read_only)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise UserError(f"open volume {path}: no such volume") from err
        raise _os_error("open volume", path, err) from err
    if meta is None or meta.chunk_size is None or meta.hydrated:
        strategy = meta.strategy if meta is not None else None
        return FileVolume(path, fd, size, read_only=read_only, strategy=strategy)
    owned: tuple[FileVolume, ...] = ()
    try:
        if source is None:
            # Rebuild the chain: the source is opened read-only and owned by the clone.
            src = await _open(meta.source, source=None, read_only=True, background=background)
            owned = (src,)
        elif not isinstance(source, FileVolume) or source.path != meta.source:
            raise UserError(
                f"{path} is a lazy clone of {meta.source}, not of {getattr(source, 'path', source)}"
            )
        else:
            src = source
        if src.size < size:
            raise BackendError(f"source {src.path} of {path} is smaller than the clone")
        assert meta.chunk_size is not None
        bitmap = await _run(
            ChunkBitmap.open,
            sidecar.bitmap_path(path),
            sidecar.volatile_bitmap_path(path),
            -(-size // meta.chunk_size),
        )
    except BaseException as err:
        os.close(fd)
        for s in owned:
            await s.close()
        if isinstance(err, OSError):
            raise BackendError(f"open lazy clone {path}: {err.strerror or err}") from err
        raise
    vol = LazyVolume(
        path, fd, source=src, bitmap=bitmap, meta=meta, read_only=read_only, owned_sources=owned
    )
    if background:
        vol.start_hydration()
    return vol


async def open_volume(
    path: Path, *, source: Volume | None = None, read_only: bool = False, background: bool = True
) -> Volume:
    """Reopen the volume at ``path`` (after a restart).

    A lazy clone that was not hydrated reloads its bitmap (the volatile one if this boot
    wrote it, else the durable one: ``bitmap.py``), reopens its source chain read-only
    (or uses ``source``, an already open volume at the recorded source path, which it
    does not own) and resumes background hydration. The first ``flush()`` of a reopened
    volume fsyncs everything, as for a new clone."""
    return await _open(
        Path(path).absolute(), source=source, read_only=read_only, background=background
    )


async def remove_volume(path: Path) -> None:
    """Delete the volume at ``path`` and all its sidecar files. Idempotent.

    Close any open Volume on it first; a lazy clone still reading through this volume
    must be hydrated (or closed) before: that is checked for clones open in this process."""
    path = Path(path).absolute()
    readers = readers_of(path)
    if readers:
        names = ", ".join(sorted(map(str, readers)))
        raise UserError(f"cannot remove {path}: lazy clone(s) {names} still read through it")
    try:
        await _run(_remove_blocking, path)
    except OSError as err:
        raise BackendError(f"remove volume {path}: {err.strerror or err}") from err
