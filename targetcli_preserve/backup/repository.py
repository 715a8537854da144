"""The backup repository on disk.

Layout::

    REPO/config.json              {"format": 1, "chunk_size": 4194304}, written at init
    REPO/chunks/ab/abcd...        one chunk, named by the SHA-256 (hex) of its data
    REPO/backups/<id>.json        one manifest per backup (manifest.py)

A chunk file is a 1-byte header and the payload: ``0`` the data as is, ``1`` the data
compressed with zstandard (used only when that is smaller). An all-zero chunk (a hole)
is never stored: the manifest says ``null`` for it.

Every file is written atomically: a temporary name in the same directory, fsync, rename,
fsync of the directory. An interrupted write leaves at most a temporary file (named
``.tmp-*``, ignored and removed by the next run), never a half-made chunk or manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from .._errors import PreserveError, UserError
from ..files import TMP_PREFIX, atomic_write, fsync_dir

FORMAT_VERSION = 1
CHUNK_SIZE = 4 << 20  # bytes; fixed for a repository, recorded in config.json and manifests
RAW = 0
ZSTD = 1
_ZSTD_LEVEL = 3


class RepositoryError(PreserveError):
    """The backup repository is unusable or corrupt (exit status 1)."""


class CorruptChunk(RepositoryError):
    """A chunk is missing, unreadable, or its data does not have its digest."""

    def __init__(self, digest: str, why: str) -> None:
        super().__init__(f"chunk {digest}: {why}")
        self.digest = digest
        self.why = why


def is_zero(data: bytes) -> bool:
    return not data.strip(b"\0")


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Repository:
    """An opened repository: its root and chunk size."""

    def __init__(self, root: Path, chunk_size: int) -> None:
        self.root = root
        self.chunk_size = chunk_size

    # ---- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, create: bool = False) -> Repository:
        """Open the repository at ``root``; with ``create``, make it when it does not
        exist (an empty directory counts as not existing)."""
        root = Path(root).absolute()
        config = root / "config.json"
        if not config.exists():
            if not create:
                raise UserError(f"{root} is not a backup repository (no config.json)")
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                raise UserError(f"{root} exists and is not an empty directory or a repository")
            return cls._init(root)
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError) as err:
            raise RepositoryError(f"{config}: unreadable repository config: {err}") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            found = data.get("format") if isinstance(data, dict) else data
            raise RepositoryError(
                f"{root} is a backup repository of format {found!r}; "
                f"this version of targetcli-preserve reads format {FORMAT_VERSION} only"
            )
        chunk_size = data.get("chunk_size")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise RepositoryError(f"{config}: bad chunk_size {chunk_size!r}")
        return cls(root, chunk_size)

    @classmethod
    def _init(cls, root: Path) -> Repository:
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("chunks", "backups"):
            (root / sub).mkdir(exist_ok=True)
        fsync_dir(root)
        body = json.dumps({"format": FORMAT_VERSION, "chunk_size": CHUNK_SIZE}, indent=2) + "\n"
        atomic_write(root / "config.json", body.encode())
        return cls(root, CHUNK_SIZE)

    # ---- chunks ----------------------------------------------------------------

    @property
    def chunks_dir(self) -> Path:
        return self.root / "chunks"

    @property
    def backups_dir(self) -> Path:
        return self.root / "backups"

    def chunk_path(self, digest: str) -> Path:
        return self.chunks_dir / digest[:2] / digest

    def has_chunk(self, digest: str) -> bool:
        return self.chunk_path(digest).exists()

    def put_chunk(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` (not all zero) once: ``(digest, bytes written)``; 0 bytes
        written when the repository already held it."""
        digest = digest_of(data)
        path = self.chunk_path(digest)
        if path.exists():
            return digest, 0
        compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)
        body = bytes([ZSTD]) + compressed if len(compressed) < len(data) else bytes([RAW]) + data
        fan = path.parent
        if not fan.exists():
            fan.mkdir(exist_ok=True)
            fsync_dir(self.chunks_dir)
        atomic_write(path, body)
        return digest, len(body)

    def get_chunk(self, digest: str, length: int) -> bytes:
        """The data of chunk ``digest``, checked against its digest and ``length``."""
        path = self.chunk_path(digest)
        try:
            body = path.read_bytes()
        except FileNotFoundError as err:
            raise CorruptChunk(digest, "missing") from err
        except OSError as err:
            raise CorruptChunk(digest, f"unreadable: {err.strerror or err}") from err
        if not body:
            raise CorruptChunk(digest, "empty chunk file")
        kind, payload = body[0], body[1:]
        if kind == RAW:
            data = payload
        elif kind == ZSTD:
            try:
                data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=length)
            except zstandard.ZstdError as err:
                raise CorruptChunk(digest, f"cannot decompress: {err}") from err
        else:
            raise CorruptChunk(digest, f"unknown chunk kind {kind}")
        if len(data) != length or digest_of(data) != digest:
            raise CorruptChunk(digest, "its data does not match its digest")
        return data

    def chunk_files(self) -> Iterator[Path]:
        for fan in sorted(self.chunks_dir.iterdir()):
            if fan.is_dir():
                for path in sorted(fan.iterdir()):
                    if not path.name.startswith(TMP_PREFIX):
                        yield path

    def stored_bytes(self) -> int:
        """The repository's deduplicated size: the bytes of every chunk file."""
        return sum(p.stat().st_size for p in self.chunk_files())

    def remove_temporaries(self) -> None:
        """Temporary files an interrupted run left behind."""
        for parent in (self.root, self.backups_dir, *self.chunks_dir.iterdir()):
            if parent.is_dir():
                for path in parent.iterdir():
                    if path.name.startswith(TMP_PREFIX):
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()

    # ---- manifests -------------------------------------------------------------

    def manifest_path(self, backup_id: str) -> Path:
        return self.backups_dir / f"{backup_id}.json"

    def backup_ids(self) -> list[str]:
        return sorted(
            p.name.removesuffix(".json")
            for p in self.backups_dir.iterdir()
            if p.name.endswith(".json") and not p.name.startswith(TMP_PREFIX)
        )

    def write_manifest(self, backup_id: str, body: dict[str, Any]) -> None:
        atomic_write(self.manifest_path(backup_id), (json.dumps(body, indent=2) + "\n").encode())
