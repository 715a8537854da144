"""The BHS layout language of the PDU classes, and the compiler that turns a layout into code.

Owns :class:`PduBase` (what every PDU class has: ``OPCODE``, its ``_BHS`` table and the
generated ``_pack_bhs``) and :func:`compile_layout`, which reads a class's table once,
at import, and generates a straight-line pack function and decode function around one
precompiled ``struct.Struct`` per direction: encoding or decoding a BHS is one
``pack`` or one ``unpack_from`` (RFC 7143 section 11 gives the layouts). Also
:func:`fast_constructor`, for the PDUs built on every command (Data-In, SCSI Response,
R2T): keyword calls that cost what positional ones do.

The functions are generated source run with ``exec`` (the way ``dataclasses`` builds
``__init__``). The source is registered with :mod:`linecache` under the name
``<BHS of Cls>`` (``<fast Cls>``), so a traceback through a generated function shows its line. A
checked-in generated module was the alternative; it was not taken because the table
next to each class's fields would then no longer be the one source of its layout, and
every layout change would need a regeneration step and a test that it was done.
"""

from __future__ import annotations

import linecache
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, ParamSpec, TypeVar

from targetcli_preserve.iscsi.codes import BHS_LEN, Opcode

# --------------------------------------------------------------------------- the language
# Each PDU class declares its BHS in ``_BHS``: {byte offset: slot}, the offsets being
# those of the RFC figures: 0-3 single bytes, 8 the 8-byte LUN (or ISID/TSIH), 16-44
# the 4-byte words. Byte 0 always carries OPCODE (and the I bit where a ``flag`` says
# so); offset 4 (TotalAHSLength, DataSegmentLength) is filled by ``_pack_bhs``'s
# ``lengths`` argument and never appears in a table. A slot is a field name (the whole
# slot), a constant, a ``Bytes``, or a tuple OR-ing constants with sub-fields: ``flag``
# (one bit, a bool), ``bits`` (masked to its width when encoded) and ``part`` (a 8- to
# 48-bit part of a slot, such as ISID/TSIH or CID, encoded unmasked). Reserved bits and
# bytes are written as 0 and ignored when read.


@dataclass(frozen=True, slots=True)
class Bits:
    """A field stored in some bits of a slot."""

    name: str
    shift: int
    width: int
    clip: bool  # mask the value to ``width`` bits when encoding


@dataclass(frozen=True, slots=True)
class Bytes:
    """A field stored as ``size`` raw bytes (the CDB)."""

    name: str
    size: int


def flag(name: str, bit: int) -> Bits:
    return Bits(name, bit, 1, False)


def bits(name: str, shift: int, width: int) -> Bits:
    return Bits(name, shift, width, True)


def part(name: str, shift: int, width: int) -> Bits:
    return Bits(name, shift, width, False)


Part = int | str | Bits
Slot = Part | Bytes | tuple[Part, ...]
Layout = Mapping[int, Slot]


class PduBase:
    """What every PDU class has. Subclasses are slotted dataclasses with the RFC's fields
    in order, then ``ahs`` and ``data``; each declares ``OPCODE`` and its ``_BHS`` layout,
    and :func:`compile_layout` replaces ``_pack_bhs`` with the generated function."""

    __slots__ = ()
    OPCODE: ClassVar[Opcode]
    _BHS: ClassVar[Layout]

    def _pack_bhs(self, lengths: int) -> bytes:
        """The 48-byte BHS, with ``lengths`` (TotalAHSLength << 24 | DataSegmentLength)
        at offset 4. Generated per class; this one only runs for a class that was never
        compiled."""
        raise NotImplementedError(f"{type(self).__name__} has no compiled BHS layout")


P = TypeVar("P", bound=PduBase)
Params = ParamSpec("Params")

# decode(bhs, ahs, data) -> PDU: the generated decoder of one class.
Decoder = Callable[[bytes | memoryview, bytes, bytes], P]

# --------------------------------------------------------------------------- the compiler

# Offset -> struct code of every BHS slot; 4 is the lengths word.
_SLOTS = {0: "B", 1: "B", 2: "B", 3: "B", 4: "I", 8: "Q", **{o: "I" for o in range(16, 48, 4)}}
_LENGTHS = 4


def compile_layout(cls: type[P]) -> Decoder[P]:
    """Give ``cls`` its generated ``_pack_bhs(pdu, lengths)``; return its decoder.

    The pack function is a single ``Struct.pack`` of the fields' expressions; the
    decoder a single ``unpack_from`` whose values feed the constructor positionally, in
    field order. Reserved and constant slots are pad bytes (``x``) in the decoding
    Struct, and so are all-zero slots when encoding. Raises TypeError when the table
    does not cover exactly the class's fields."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    field_names = [f.name for f in fields(cls)]
    layout = dict(cls._BHS)
    if _LENGTHS in layout:
        raise TypeError(f"{cls.__name__}: offset 4 (the lengths) is not a field")
    first = layout.get(0, ())
    if isinstance(first, Bytes):
        raise TypeError(f"{cls.__name__}: byte 0 cannot hold bytes")
    layout[0] = (int(cls.OPCODE), *(first if isinstance(first, tuple) else (first,)))
    enc_fmt, enc_args, dec_fmt, dec_vars = [">"], [], [">"], []
    decoded: list[tuple[str, str]] = []  # (field, expression of the unpacked v<offset>)
    end = 0
    for off, code in _SLOTS.items():
        if off < end:
            continue  # inside a Bytes slot
        size = struct.calcsize(code)
        var = f"v{off}"
        if off == _LENGTHS:
            enc_fmt.append(code)
            enc_args.append("lengths")
            dec_fmt.append(f"{size}x")
            end = off + size
            continue
        slot = layout.pop(off, 0)
        if isinstance(slot, Bytes):
            size = slot.size
            enc_fmt.append(f"{size}s")
            enc_args.append(f"p.{slot.name}")
            dec_fmt.append(f"{size}s")
            dec_vars.append(var)
            decoded.append((slot.name, var))
            end = off + size
            continue
        const = 0
        terms: list[str] = []
        for item in slot if isinstance(slot, tuple) else (slot,):
            if isinstance(item, int):
                const |= item
                continue
            if isinstance(item, str):
                item = Bits(item, 0, size * 8, False)
            mask = (1 << item.width) - 1
            term = f"(p.{item.name} & {mask:#x})" if item.clip else f"p.{item.name}"
            terms.append(f"{term} << {item.shift}" if item.shift else term)
            value = f"{var} >> {item.shift}" if item.shift else var
            if item.shift + item.width < size * 8:
                value = f"{value} & {mask:#x}"
            if item.width == 1:
                value = f"{var} & {1 << item.shift:#x} != 0"  # a bool
            decoded.append((item.name, value))
        dec_fmt.append(code if terms else f"{size}x")
        if terms:
            dec_vars.append(var)
        if const:
            terms.append(f"{const:#x}")
        enc_fmt.append(code if terms else f"{size}x")
        if terms:
            enc_args.append(" | ".join(terms))
        end = off + size
    names = [n for n in field_names if n not in ("ahs", "data")]
    if layout or sorted(n for n, _ in decoded) != sorted(names) or end != BHS_LEN:
        raise TypeError(f"{cls.__name__}: BHS layout does not match its fields")
    exprs = dict(decoded)
    args = ", ".join(exprs.get(n, n) for n in field_names)
    filename = f"<BHS of {cls.__name__}>"
    src = (  # closures, so that the Structs' methods and cls are cell variables
        "def make(cls, pack, unpack):\n"
        f"    def _pack_bhs(p, lengths):\n        return pack({', '.join(enc_args)})\n"
        f"    def decode(b, ahs, data):\n        {', '.join(dec_vars)}, = unpack(b)\n"
        f"        return cls({args})\n"
        "    return _pack_bhs, decode\n"
    )
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {}  # what exec defines is untyped by nature
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 - built from _BHS
    enc, dec = struct.Struct("".join(enc_fmt)), struct.Struct("".join(dec_fmt))
    pack_bhs, decode = namespace["make"](cls, enc.pack, dec.unpack_from)
    setattr(cls, "_pack_bhs", pack_bhs)  # noqa: B010 - replaces the base class's method
    decoder: Decoder[P] = decode
    return decoder


def fast_constructor(cls: Callable[Params, P]) -> Callable[Params, P]:
    """A function that builds a ``cls`` exactly as calling ``cls`` does, only faster
    when called with keyword arguments: for the PDUs built for every command.

    Calling a class with keyword arguments goes through ``type.__call__``, which packs
    them into a dict for ``__init__`` (CPython 3.11): for a PDU that is about twice the
    cost of positional arguments. The generated function has the dataclass ``__init__``'s
    parameters and defaults, is called directly (no dict), and fills the slots itself;
    so it is only made for slotted dataclasses whose fields all have plain defaults."""
    if not (isinstance(cls, type) and is_dataclass(cls)) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls!r} is not a dataclass without __post_init__")
    names = [f.name for f in fields(cls)]
    defaults = tuple(f.default for f in fields(cls))
    if any(not isinstance(d, (int, bytes)) for d in defaults):
        raise TypeError(f"{cls.__name__}: every field needs a plain default")
    filename = f"<fast {cls.__name__}>"
    body = "".join(f"        p.{n} = {n}\n" for n in names)
    src = (
        "def make(cls, new):\n"
        f"    def new_{cls.__name__}({', '.join(names)}):\n"
        "        p = new(cls)\n"
        f"{body}"
        "        return p\n"
        f"    return new_{cls.__name__}\n"
    )
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {}  # what exec defines is untyped by nature
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 - built from the fields
    build = namespace["make"](cls, object.__new__)
    build.__defaults__ = defaults
    constructor: Callable[Params, P] = build
    return constructor
