"""One backup's manifest: what was backed up (LUN, WWN, size, block size, the preserve
and its cut sequence number and time), when, and the image as a list of chunks.

Stored as ``REPO/backups/<id>.json``. Decoding is strict: a missing field, an unknown
field or a field of the wrong type is an error naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from .repository import RepositoryError

MANIFEST_FORMAT = 1
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


class BadManifest(RepositoryError):
    """A manifest that does not decode (exit status 1)."""


@dataclass(frozen=True)
class Manifest:
    format: int
    id: str
    lun: str
    wwn: str
    size: int  # bytes
    block_size: int
    generation: int  # the frozen generation that was read
    preserve: int  # the preserve id whose image this is
    seq: int  # the preserve's cut sequence number T
    preserve_time: str  # the preserve's time (UTC)
    created: str  # when the backup was taken (UTC)
    chunk_size: int
    chunks: tuple[str | None, ...]  # SHA-256 hex of each chunk; None: all zero
    image_sha256: str  # of the whole image

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["chunks"] = list(self.chunks)
        return body

    @classmethod
    def from_json(cls, body: object, where: str = "manifest") -> Manifest:
        if not isinstance(body, dict):
            raise BadManifest(f"{where}: not a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in body:
            if key not in names:
                raise BadManifest(f"{where}: unknown field {key!r}")
        for name in names:
            if name not in body:
                raise BadManifest(f"{where}: missing field {name!r}")
        ints = ("format", "size", "block_size", "generation", "preserve", "seq", "chunk_size")
        for name in ints:
            value = body[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadManifest(f"{where}: field {name!r} is not a count: {value!r}")
        for name in ("id", "lun", "wwn", "preserve_time", "created", "image_sha256"):
            if not isinstance(body[name], str):
                raise BadManifest(f"{where}: field {name!r} is not a string: {body[name]!r}")
        if body["format"] != MANIFEST_FORMAT:
            raise BadManifest(f"{where}: field 'format' is {body['format']}, not {MANIFEST_FORMAT}")
        if body["chunk_size"] <= 0:
            raise BadManifest(f"{where}: field 'chunk_size' is 0")
        if not _DIGEST.match(body["image_sha256"]):
            raise BadManifest(f"{where}: field 'image_sha256' is not a SHA-256 hex digest")
        chunks = body["chunks"]
        if not isinstance(chunks, list) or not all(
            c is None or (isinstance(c, str) and _DIGEST.match(c)) for c in chunks
        ):
            raise BadManifest(f"{where}: field 'chunks' is not a list of SHA-256 digests or null")
        if len(chunks) != -(-body["size"] // body["chunk_size"]):
            raise BadManifest(f"{where}: field 'chunks' has {len(chunks)} entries for the size")
        return cls(**{**body, "chunks": tuple(chunks)})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def loads(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            body = json.loads(text)
        except ValueError as err:
            raise BadManifest(f"{where}: not JSON: {err}") from err
        return cls.from_json(body, where)
