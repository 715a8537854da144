"""Volumes: where LUN data lives. Storage only, no SCSI (docs/design.md section 3).

Public API (async, for one event loop; blocking syscalls run on a shared executor)::

    vol = await create_volume(path, size)
    vol = await open_volume(path)                   # resumes a lazy clone's hydration
    clone = await clone_volume(vol, dest, strategy=None)   # lazy; REFLINK if possible
    await remove_volume(path)                       # data file and sidecars; idempotent

Modules: ``base`` (Volume, CloneStrategy), ``file`` (plain file volumes), ``lazy`` (lazy
clones), ``bitmap`` (their chunk bitmap), ``reflink`` (FICLONERANGE), ``sidecar`` (file names
and clone metadata), ``api`` (the functions above), ``_executor`` (the thread pool).
"""

from targetcli_preserve.volumes.api import clone_volume, create_volume, open_volume, remove_volume
from targetcli_preserve.volumes.base import Bytes, CloneStrategy, Volume
from targetcli_preserve.volumes.file import FileVolume
from targetcli_preserve.volumes.lazy import DEFAULT_CHUNK_SIZE, LazyVolume

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Bytes",
    "CloneStrategy",
    "FileVolume",
    "LazyVolume",
    "Volume",
    "clone_volume",
    "create_volume",
    "open_volume",
    "remove_volume",
]
