"""The backup repository with real volumes (volume API) and no daemon."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from targetcli_preserve._errors import UserError
from targetcli_preserve.backup import operations
from targetcli_preserve.backup.manifest import BadManifest, Manifest
from targetcli_preserve.backup.operations import FrozenImage, _pick
from targetcli_preserve.backup.repository import (
    CHUNK_SIZE,
    TMP_PREFIX,
    Repository,
    RepositoryError,
    atomic_write,
)
from targetcli_preserve.exits import ExitCode, exit_code
from targetcli_preserve.volumes.api import create_volume

C = CHUNK_SIZE


def make_volume(path: Path, chunks: list[bytes | None], tail: int = 0) -> bytes:
    """A volume of len(chunks) chunks (+ tail bytes), each chunk filled with a pattern
    (None: a hole); returns its content."""
    size = len(chunks) * C + tail

    async def build() -> None:
        vol = await create_volume(path, size)
        for i, fill in enumerate(chunks):
            if fill is not None:
                await vol.write(i * C, (fill * (C // len(fill) + 1))[:C])
        if tail:
            await vol.write(len(chunks) * C, b"T" * tail)
        await vol.close()

    asyncio.run(build())
    return path.read_bytes()


def image(path: Path, preserve: int = 1, lun: str = "lun0") -> FrozenImage:
    return FrozenImage(
        lun, "wwn", path.stat().st_size, 512, preserve - 1, path, preserve, 10 * preserve, "t"
    )


def test_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    atomic_write(tmp_path / "f", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    assert (tmp_path / "f").read_bytes() == b"data"


def test_backup_restore_round_trip_sparse(tmp_path: Path) -> None:
    content = make_volume(tmp_path / "v.img", [b"a", None, os.urandom(C)], tail=4096)
    result = operations.backup(tmp_path / "repo", image(tmp_path / "v.img"))
    assert result["chunks"] == 4 and result["zero_chunks"] == 1 and result["new_chunks"] == 3
    assert operations.verify(tmp_path / "repo")["ok"]
    out = tmp_path / "out.img"
    restored = operations.restore(tmp_path / "repo", result["id"], out)
    assert out.read_bytes() == content
    assert restored["holes"] == C
    assert out.stat().st_blocks * 512 < len(content)  # the hole stayed a hole


def test_zero_chunks_are_stored_as_nothing(tmp_path: Path) -> None:
    make_volume(tmp_path / "v.img", [None, None])
    result = operations.backup(tmp_path / "repo", image(tmp_path / "v.img"))
    assert result["new_chunks"] == 0
    assert list(Repository.open(tmp_path / "repo").chunk_files()) == []
    manifest = json.loads(next((tmp_path / "repo/backups").iterdir()).read_text())
    assert manifest["chunks"] == [None, None]


def test_compressed_only_when_smaller(tmp_path: Path) -> None:
    noise = os.urandom(C)
    make_volume(tmp_path / "v.img", [b"x", noise])
    operations.backup(tmp_path / "repo", image(tmp_path / "v.img"))
    repo = Repository.open(tmp_path / "repo")
    kinds = {p.read_bytes()[0]: p.stat().st_size for p in repo.chunk_files()}
    assert kinds[1] < 1000  # the pattern chunk: zstd
    assert kinds[0] == C + 1  # random data does not compress: stored raw


def test_dedup_across_backups_and_luns(tmp_path: Path) -> None:
    make_volume(tmp_path / "a.img", [b"a", b"b"])
    make_volume(tmp_path / "b.img", [b"a", b"c"])
    first = operations.backup(tmp_path / "repo", image(tmp_path / "a.img"))
    again = operations.backup(tmp_path / "repo", image(tmp_path / "a.img", preserve=2))
    other = operations.backup(tmp_path / "repo", image(tmp_path / "b.img", lun="lun1"))
    assert first["new_chunks"] == 2 and again["new_chunks"] == 0 and other["new_chunks"] == 1
    listing = operations.list_backups(tmp_path / "repo")
    assert len(listing["backups"]) == 3
    assert listing["logical_bytes"] == 6 * C
    assert listing["stored_bytes"] == Repository.open(tmp_path / "repo").stored_bytes()
    assert len(list(Repository.open(tmp_path / "repo").chunk_files())) == 3


def test_corrupt_chunk_found_by_verify_and_refused_by_restore(tmp_path: Path) -> None:
    make_volume(tmp_path / "v.img", [b"a", os.urandom(C)])
    result = operations.backup(tmp_path / "repo", image(tmp_path / "v.img"))
    manifest = Manifest.loads((tmp_path / "repo/backups" / f"{result['id']}.json").read_text())
    bad = manifest.chunks[1]
    assert bad is not None
    path = Repository.open(tmp_path / "repo").chunk_path(bad)
    body = bytearray(path.read_bytes())
    body[100] ^= 0xFF
    path.write_bytes(bytes(body))
    checked = operations.verify(tmp_path / "repo", result["id"])
    assert not checked["ok"]
    assert [b["digest"] for b in checked["backups"][0]["bad_chunks"]] == [bad]
    with pytest.raises(RepositoryError, match="corrupt"):
        operations.restore(tmp_path / "repo", result["id"], tmp_path / "out.img")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "v.img"]


def test_a_manifest_with_a_bad_field_is_refused(tmp_path: Path) -> None:
    make_volume(tmp_path / "v.img", [b"a"])
    result = operations.backup(tmp_path / "repo", image(tmp_path / "v.img"))
    path = tmp_path / "repo/backups" / f"{result['id']}.json"
    good = json.loads(path.read_text())
    for change, field in [
        ({**good, "extra": 1}, "extra"),
        ({k: v for k, v in good.items() if k != "wwn"}, "wwn"),
        ({**good, "size": "big"}, "size"),
        ({**good, "chunks": ["zz"]}, "chunks"),
    ]:
        path.write_text(json.dumps(change))
        with pytest.raises(BadManifest, match=repr(field)):
            operations.restore(tmp_path / "repo", result["id"], tmp_path / "out.img")
    assert exit_code(BadManifest("x")) == ExitCode.FAILED


def test_interrupted_backup_continues_where_it_stopped(tmp_path: Path) -> None:
    content = make_volume(tmp_path / "v.img", [b"a", b"b", b"c", b"d"])

    def stop_after_two(index: int) -> None:
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        operations.backup(tmp_path / "repo", image(tmp_path / "v.img"), after_chunk=stop_after_two)
    repo = Repository.open(tmp_path / "repo")
    assert repo.backup_ids() == []  # no manifest: no half-made backup
    assert len(list(repo.chunk_files())) == 2
    assert not [p for p in (tmp_path / "repo").rglob(f"{TMP_PREFIX}*")]
    result = operations.backup(tmp_path / "repo", image(tmp_path / "v.img"))
    assert result["new_chunks"] == 2  # the first two were not written again
    assert operations.verify(tmp_path / "repo")["ok"]
    operations.restore(tmp_path / "repo", result["id"], tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == content


def test_a_repository_of_another_version_is_refused(tmp_path: Path) -> None:
    Repository.open(tmp_path / "repo", create=True)
    (tmp_path / "repo/config.json").write_text(json.dumps({"format": 2, "chunk_size": C}))
    with pytest.raises(RepositoryError, match="format 2"):
        operations.list_backups(tmp_path / "repo")
    with pytest.raises(UserError, match="not a backup repository"):
        operations.list_backups(tmp_path / "nothing")


def gen(index: int, state: str, made_by: int | None) -> dict[str, object]:
    made = None if made_by is None else {"id": made_by, "seq": made_by * 10, "time": "t"}
    return {"generation": index, "state": state, "damaged": False, "path": "p", "preserve": made}


def test_the_image_of_preserve_n_is_the_generation_before_the_one_it_made() -> None:
    gens = [gen(0, "frozen", None), gen(1, "frozen", 1), gen(2, "draining", 2), gen(3, "live", 3)]
    assert _pick("l", gens, 1)[0]["generation"] == 0
    assert _pick("l", gens, 2)[0]["generation"] == 1
    assert _pick("l", gens, None)[0]["generation"] == 1  # the newest frozen one
    with pytest.raises(UserError, match="not frozen yet"):
        _pick("l", gens, 3)
    with pytest.raises(UserError, match="no image of preserve 9"):
        _pick("l", gens, 9)
    with pytest.raises(UserError, match="no frozen generation"):
        _pick("l", [gen(0, "live", None)], None)
