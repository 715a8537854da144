"""The backup commands: each returns a plain JSON-able dict (the CLI renders it).

Which volume is backed up: the frozen generation that holds a preserve's image. A
preserve N makes a new live generation (the one the ``volumes`` list shows as made by
preserve N); the image at N is the generation before it, the one that was live until
the cut and is frozen once its pre-cut commands drained (docs/design.md rule 6; the
``preserve`` reply calls it ``preserved``). Only frozen generations are read, through
the volume API, so the lock table, the journal and all engine state are outside the
backup by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import control
from .._errors import UserError
from ..files import fsync_dir, tmp_path
from ..statedir import check_state_dir, read_catalog
from ..volumes.api import open_volume
from .manifest import MANIFEST_FORMAT, Manifest
from .repository import CorruptChunk, Repository, RepositoryError, is_zero


@dataclass(frozen=True)
class FrozenImage:
    """A preserve's frozen image of one LUN: where to read it and what it is."""

    lun: str
    wwn: str
    size: int
    block_size: int
    generation: int
    path: Path
    preserve: int
    seq: int
    time: str


def _pick(
    lun: str, gens: list[dict[str, Any]], preserve_id: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the generation holding the image, the preserve that froze it) from a LUN's
    generations, oldest first, each ``{generation, state, damaged, path, preserve}``
    (``preserve``: the preserve that made the generation, or None)."""
    pairs = [(gens[i], gens[i + 1]["preserve"]) for i in range(len(gens) - 1)]
    if preserve_id is None:
        frozen = [(g, p) for g, p in pairs if g["state"] == "frozen" and p is not None]
        if not frozen:
            raise UserError(f"LUN {lun} has no frozen generation to back up: preserve it first")
        gen, made = frozen[-1]
    else:
        found = [(g, p) for g, p in pairs if p is not None and p["id"] == preserve_id]
        if not found:
            raise UserError(f"LUN {lun} has no image of preserve {preserve_id}")
        gen, made = found[0]
        if gen["state"] != "frozen":
            raise UserError(
                f"the image of preserve {preserve_id} of LUN {lun} (generation "
                f"{gen['generation']}) is {gen['state']}, not frozen yet: its pre-cut "
                "commands are still draining; try again in a moment"
            )
    if gen["damaged"]:
        raise UserError(f"generation {gen['generation']} of LUN {lun} is damaged")
    return gen, made


def find_frozen(state_dir: Path, lun: str, preserve_id: int | None = None) -> FrozenImage:
    """The frozen image to back up: asked of the running daemon, else read from the
    state directory's journal."""
    check_state_dir(state_dir)
    sock = state_dir / "control.sock"
    try:
        gens = control.call(sock, "volumes", name=lun)
        status = control.call(sock, "status", name=lun)["luns"][0]
        size, block_size, wwn = status["size"], status["block_size"], status["wwn"]
    except control.DaemonUnreachable:
        catalog = read_catalog(state_dir)
        record = catalog.luns.get(lun)
        if record is None:
            raise UserError(f"there is no LUN named {lun!r} in {state_dir}") from None
        gens = [
            {
                "generation": g.index,
                "state": g.state.value,
                "damaged": g.damaged,
                "path": str(catalog.volume_path(lun, g.index)),
                "preserve": None
                if g.cut_id is None
                else {
                    "id": g.cut_id,
                    "seq": catalog.cuts[g.cut_id].seq,
                    "time": catalog.cuts[g.cut_id].time,
                },
            }
            for g in record.generations
        ]
        size, block_size, wwn = record.size, record.block_size, record.wwn
    gen, made = _pick(lun, gens, preserve_id)
    return FrozenImage(
        lun, wwn, size, block_size, gen["generation"], Path(gen["path"]), *_preserve(made)
    )


def _preserve(made: dict[str, Any]) -> tuple[int, int, str]:
    return made["id"], made["seq"], made["time"]


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(repo: Repository, image: FrozenImage, now: datetime) -> str:
    base = f"{image.lun}-p{image.preserve}-{now:%Y%m%dT%H%M%SZ}"
    backup_id, n = base, 1
    while repo.manifest_path(backup_id).exists():
        n += 1
        backup_id = f"{base}-{n}"
    return backup_id


def backup(
    repo_dir: Path,
    image: FrozenImage,
    *,
    after_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Back ``image`` up into the repository at ``repo_dir`` (made if needed).

    Chunks the repository holds already are not written again, so a run cut short
    continues where it stopped. ``after_chunk(index)`` is called after each chunk (a
    test hook)."""
    repo = Repository.open(repo_dir, create=True)
    repo.remove_temporaries()
    return asyncio.run(_backup(repo, image, after_chunk))


async def _backup(
    repo: Repository, image: FrozenImage, after_chunk: Callable[[int], None] | None
) -> dict[str, Any]:
    vol = await open_volume(image.path, read_only=True, background=False)
    try:
        if vol.size != image.size:
            raise RepositoryError(
                f"{image.path} has {vol.size} bytes, LUN {image.lun} {image.size}"
            )
        whole = hashlib.sha256()
        chunks: list[str | None] = []
        new_chunks = new_bytes = zero_chunks = 0
        for index, offset in enumerate(range(0, image.size, repo.chunk_size)):
            data = await vol.read(offset, min(repo.chunk_size, image.size - offset))
            whole.update(data)
            if is_zero(data):
                chunks.append(None)
                zero_chunks += 1
            else:
                digest, written = await asyncio.to_thread(repo.put_chunk, data)
                chunks.append(digest)
                if written:
                    new_chunks += 1
                    new_bytes += written
            if after_chunk is not None:
                after_chunk(index)
    finally:
        await vol.close()
    now = _now()
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        id=_new_id(repo, image, now),
        lun=image.lun,
        wwn=image.wwn,
        size=image.size,
        block_size=image.block_size,
        generation=image.generation,
        preserve=image.preserve,
        seq=image.seq,
        preserve_time=image.time,
        created=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        chunk_size=repo.chunk_size,
        chunks=tuple(chunks),
        image_sha256=whole.hexdigest(),
    )
    repo.write_manifest(manifest.id, manifest.to_json())
    return {
        "id": manifest.id,
        "lun": image.lun,
        "preserve": {"id": image.preserve, "seq": image.seq, "time": image.time},
        "generation": image.generation,
        "size": image.size,
        "bytes_read": image.size,
        "chunks": len(chunks),
        "zero_chunks": zero_chunks,
        "new_chunks": new_chunks,
        "new_bytes_stored": new_bytes,
        "dedup_ratio": _ratio(image.size, new_bytes),
        "repository": str(repo.root),
    }


def _ratio(logical: int, stored: int) -> float | None:
    return None if stored == 0 else round(logical / stored, 2)


def load_manifest(repo: Repository, backup_id: str) -> Manifest:
    path = repo.manifest_path(backup_id)
    if "/" in backup_id or not path.exists():
        raise UserError(f"there is no backup {backup_id!r} in {repo.root}")
    manifest = Manifest.loads(path.read_text(), str(path))
    if manifest.id != backup_id:
        raise RepositoryError(f"{path}: its id field says {manifest.id!r}")
    return manifest


def verify(repo_dir: Path, backup_id: str | None = None) -> dict[str, Any]:
    """Check every chunk and the image digest of one backup (default: all of them).
    ``ok`` False names the bad chunks; the CLI exits non-zero then."""
    repo = Repository.open(repo_dir)
    ids = [backup_id] if backup_id is not None else repo.backup_ids()
    results = []
    checked: dict[str, str | None] = {}  # digest -> why it is bad (None: good)
    for bid in ids:
        manifest = load_manifest(repo, bid)
        bad: list[dict[str, Any]] = []
        whole = hashlib.sha256()
        for index, digest in enumerate(manifest.chunks):
            length = manifest.chunk_length(index)
            if digest is None:
                whole.update(bytes(length))
                continue
            try:
                whole.update(repo.get_chunk(digest, length))
                checked[digest] = None
            except CorruptChunk as err:
                checked[digest] = err.why
                bad.append({"index": index, "digest": digest, "why": err.why})
        image_ok = not bad and whole.hexdigest() == manifest.image_sha256
        results.append(
            {"id": bid, "ok": image_ok, "chunks": len(manifest.chunks), "bad_chunks": bad}
        )
    return {"ok": all(r["ok"] for r in results), "backups": results}


def restore(repo_dir: Path, backup_id: str, to: Path) -> dict[str, Any]:
    """Write the image of a backup to ``to`` (which must not exist), sparse: holes stay
    holes. Every chunk is checked as it is written, and the whole image at the end; a
    corrupt backup is refused and nothing is left at ``to``."""
    repo = Repository.open(repo_dir)
    manifest = load_manifest(repo, backup_id)
    to = Path(to).absolute()
    if os.path.lexists(to):
        raise UserError(f"--to {to}: it exists already; restore writes a new file")
    if not to.parent.is_dir():
        raise UserError(f"--to {to}: no such directory {to.parent}")
    tmp = tmp_path(to)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    written = 0
    try:
        try:
            os.ftruncate(fd, manifest.size)
            whole = hashlib.sha256()
            for index, digest in enumerate(manifest.chunks):
                length = manifest.chunk_length(index)
                if digest is None:
                    whole.update(bytes(length))
                    continue
                data = repo.get_chunk(digest, length)
                whole.update(data)
                os.pwrite(fd, data, index * manifest.chunk_size)
                written += length
            if whole.hexdigest() != manifest.image_sha256:
                raise RepositoryError(f"backup {backup_id}: the image does not match its digest")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, to)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, CorruptChunk):
            raise RepositoryError(
                f"backup {backup_id} is corrupt, nothing restored: {err}"
            ) from err
        raise
    fsync_dir(to.parent)
    return {
        "id": backup_id,
        "to": str(to),
        "size": manifest.size,
        "bytes_written": written,
        "holes": manifest.size - written,
    }


def list_backups(repo_dir: Path) -> dict[str, Any]:
    """Every backup (oldest id first) with its size, and the repository's
    deduplicated size."""
    repo = Repository.open(repo_dir)
    backups: list[dict[str, Any]] = []
    for bid in repo.backup_ids():
        m = load_manifest(repo, bid)
        backups.append(
            {
                "id": m.id,
                "lun": m.lun,
                "wwn": m.wwn,
                "preserve": {"id": m.preserve, "seq": m.seq, "time": m.preserve_time},
                "created": m.created,
                "size": m.size,
                "chunks": len(m.chunks),
                "zero_chunks": sum(c is None for c in m.chunks),
            }
        )
    stored = repo.stored_bytes()
    logical = sum(b["size"] for b in backups)
    return {
        "repository": str(repo.root),
        "backups": backups,
        "logical_bytes": logical,
        "stored_bytes": stored,
        "dedup_ratio": _ratio(logical, stored),
    }
