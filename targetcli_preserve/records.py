"""What the journal says: one frozen dataclass per kind of step, and one decoder.

The journal (journal.py) stores JSON objects, one per line; this module gives them
their meaning. Each record names its kind in ``op``:

    lun      LunCreated         a LUN was created (name, size, WWN, LUN number)
    cut      CutTaken           a preserve began: its id, T, time, boot, new generations
    commit   CutCommitted       every clone of the preserve was made
    durable  CutDurable         the clones and the records above are on stable storage
    abort    CutAborted         the preserve was rolled back
    freeze   GenerationFrozen   a superseded generation drained and was frozen
    damaged  GenerationDamaged  a pre-cut write could not be replicated into it

:func:`decode` checks every field's presence and type and refuses unknown ops and
fields with a :class:`JournalCorrupt` that names the line: the daemon never guesses
what a record it does not understand meant (docs/design.md rule 9).
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .journal import Journal, JournalCorrupt

__all__ = ["JournalCorrupt", "Record", "decode", "encode", "read_records", "timestamp"]


@dataclass(frozen=True, slots=True)
class LunCreated:
    op: ClassVar[str] = "lun"
    name: str
    size: int
    block_size: int
    wwn: str
    number: int | None = None  # absent in journals written before LUN numbers
    time: str | None = None


@dataclass(frozen=True, slots=True)
class CutTaken:
    op: ClassVar[str] = "cut"
    cut: int  # the preserve id
    seq: int  # T: commands with a lower seq are in the preserved image
    time: str
    luns: Mapping[str, int] = field(default_factory=dict)  # LUN name -> new generation
    boot: str | None = None


@dataclass(frozen=True, slots=True)
class CutCommitted:
    op: ClassVar[str] = "commit"
    cut: int


@dataclass(frozen=True, slots=True)
class CutDurable:
    op: ClassVar[str] = "durable"
    cut: int


@dataclass(frozen=True, slots=True)
class CutAborted:
    op: ClassVar[str] = "abort"
    cut: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class GenerationFrozen:
    op: ClassVar[str] = "freeze"
    lun: str
    gen: int


@dataclass(frozen=True, slots=True)
class GenerationDamaged:
    op: ClassVar[str] = "damaged"
    lun: str
    gen: int


Record = (
    LunCreated
    | CutTaken
    | CutCommitted
    | CutDurable
    | CutAborted
    | GenerationFrozen
    | GenerationDamaged
)
_KINDS: dict[str, type[Record]] = {
    kind.op: kind
    for kind in (
        LunCreated,
        CutTaken,
        CutCommitted,
        CutDurable,
        CutAborted,
        GenerationFrozen,
        GenerationDamaged,
    )
}


_HINTS = {kind: typing.get_type_hints(kind) for kind in _KINDS.values()}  # field -> type


def timestamp() -> str:
    """Now, as records and every output write a time: ISO 8601, UTC, microseconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def encode(record: Record) -> dict[str, Any]:
    """The JSON object of ``record`` (optional fields that are None are left out)."""
    obj: dict[str, Any] = {"op": record.op}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None:
            continue
        obj[f.name] = dict(value) if isinstance(value, Mapping) else value
    return obj


def decode(obj: Mapping[str, Any], where: str = "record") -> Record:
    """The record ``obj`` is, or JournalCorrupt naming ``where`` and the field."""
    op = obj.get("op")
    kind = _KINDS.get(op) if isinstance(op, str) else None
    if kind is None:
        raise JournalCorrupt(f"{where}: unknown record kind op={op!r}")
    hints = _HINTS[kind]
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(obj) - known - {"op"})
    if unknown:
        raise JournalCorrupt(f"{where}: {op!r} record has unknown field {unknown[0]!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        if f.name not in obj:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise JournalCorrupt(f"{where}: {op!r} record lacks field {f.name!r}")
            continue
        value = obj[f.name]
        if not _conforms(value, hints[f.name]):
            raise JournalCorrupt(f"{where}: {op!r} record has a bad {f.name!r}: {value!r}")
        values[f.name] = value
    return kind(**values)


def read_records(path: Path) -> list[Record]:
    """Every record of the journal at ``path``, decoded (see Journal.read for torn lines)."""
    return [decode(obj, f"{path} line {number}") for number, obj in Journal.read_lines(path)]


def _conforms(value: object, hint: Any) -> bool:
    """Whether a decoded JSON value has the type a record field declares."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is Mapping:
        key_type, value_type = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _conforms(k, key_type) and _conforms(v, value_type) for k, v in value.items()
        )
    raise TypeError(f"record field type {hint!r} has no JSON check")  # a bug here, not data
