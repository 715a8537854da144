"""Names and contents of the files that sit next to a volume's data file.

For a volume at ``P``:

- ``P``             the data file (sparse);
- ``P.clone.json``  clone metadata (strategy, source path, chunk size, hydrated flag),
                    present only for clones; it is what lets ``open_volume`` rebuild a
                    lazy clone's source chain after a restart. Every clone has a chunk
                    size; a REFLINK one without (made by whole-file FICLONE before
                    reflink clones became lazy) opens as a plain file volume;
- ``P.bitmap``      the *durable* chunk bitmap of a lazy clone: written and fdatasynced
                    only by flush(), after the clone's data (``bitmap.py``);
- ``P.bitmap.volatile``  the *volatile* chunk bitmap: pwritten as soon as a chunk is
                    hydrated, never fsynced, stamped with the kernel boot id; trusted
                    only in the boot that wrote it (``bitmap.py``);
- ``P.partial``     a data file being made; it is published as ``P`` with link(2) only
                    once complete, so ``P`` never exists half-made.

``remove_volume`` deletes all of them. This module owns the names and the JSON format.

Durability: a clone's sidecars are written without fsync (the cut is on the latency
path); the clone's first flush() fsyncs them and the directory (``lazy.py``,
``file.py``). ``replace_meta`` (once per clone, when hydration ends) is durable at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from targetcli_preserve._errors import BackendError
from targetcli_preserve.files import fsync_dir
from targetcli_preserve.volumes.base import CloneStrategy

META_VERSION = 1


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".clone.json")


def bitmap_path(path: Path) -> Path:
    return path.with_name(path.name + ".bitmap")


def volatile_bitmap_path(path: Path) -> Path:
    return path.with_name(path.name + ".bitmap.volatile")


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def all_paths(path: Path) -> list[Path]:
    """Every file a volume at ``path`` may own, the data file last."""
    meta = meta_path(path)
    return [
        partial_path(path),
        volatile_bitmap_path(path),
        bitmap_path(path),
        meta.with_name(meta.name + ".tmp"),
        meta,
        path,
    ]


@dataclass(frozen=True, slots=True)
class CloneMeta:
    strategy: CloneStrategy
    source: Path
    size: int
    chunk_size: int | None = None  # None only for an old whole-file FICLONE clone
    hydrated: bool = False  # True once it no longer needs its source

    def to_json(self) -> bytes:
        doc = {
            "version": META_VERSION,
            "strategy": self.strategy.value,
            "source": str(self.source),
            "size": self.size,
            "chunk_size": self.chunk_size,
            "hydrated": self.hydrated,
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> CloneMeta:
        try:
            doc = json.loads(raw)
        except ValueError as err:
            raise BackendError(f"{where}: not valid JSON: {err}") from err
        if not isinstance(doc, dict):
            raise BackendError(f"{where}: expected a JSON object")
        if doc.get("version") != META_VERSION:
            raise BackendError(f"{where}: field 'version' must be {META_VERSION}")
        try:
            strategy = CloneStrategy(doc.get("strategy"))
        except ValueError as err:
            raise BackendError(f"{where}: bad field 'strategy': {doc.get('strategy')!r}") from err
        source = doc.get("source")
        if not isinstance(source, str) or not source:
            raise BackendError(f"{where}: field 'source' must be a non-empty string")
        size = doc.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise BackendError(f"{where}: field 'size' must be a positive integer")
        chunk_size = doc.get("chunk_size")
        if strategy is CloneStrategy.LAZY and (
            not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0
        ):
            raise BackendError(f"{where}: field 'chunk_size' must be a positive integer")
        hydrated = doc.get("hydrated", False)
        if not isinstance(hydrated, bool):
            raise BackendError(f"{where}: field 'hydrated' must be true or false")
        return cls(strategy, Path(source), size, chunk_size, hydrated)


def fsync_file(path: Path) -> None:
    """fsync an existing file by name. Blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_meta_new(volume_path: Path, meta: CloneMeta) -> None:
    """Create ``P.clone.json`` (must not exist), not synced: the volume's first flush()
    fsyncs it. Blocking."""
    fd = os.open(meta_path(volume_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        raw = meta.to_json()
        if os.write(fd, raw) != len(raw):
            raise OSError(5, f"short write of {meta_path(volume_path)}")
    finally:
        os.close(fd)


def replace_meta(volume_path: Path, meta: CloneMeta) -> None:
    """Atomically replace ``P.clone.json`` (write, fsync, rename, fsync dir). Blocking."""
    final = meta_path(volume_path)
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, meta.to_json())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def read_meta(volume_path: Path) -> CloneMeta | None:
    """The clone metadata of ``P``, or None for a plain volume. Blocking."""
    where = meta_path(volume_path)
    try:
        raw = where.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise BackendError(f"cannot read {where}: {err.strerror}") from err
    return CloneMeta.from_json(raw, where)
