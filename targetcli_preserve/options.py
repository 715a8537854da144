"""The options of ``serve`` (both programs take them) and what they parse into.

Light on imports: the one-shot CLI builds its parser from here without loading the
daemon.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import UserError
from .catalog import BLOCK_SIZE, check_lun_name
from .statedir import default_state_dir

DEFAULT_IQN = "iqn.2026-11.org.targetcli-preserve:default"
DEFAULT_PORTAL = ("127.0.0.1", 3260)
DEFAULT_LUN_SIZE = 1 << 30
MAX_LUN_SIZE = 1 << 63


@dataclass(frozen=True)
class LunSpec:
    name: str
    size: int
    wwn: str | None = None  # a new LUN's WWN (a UUID); None: a new random one


@dataclass
class Config:
    state_dir: Path
    host: str = DEFAULT_PORTAL[0]
    port: int = DEFAULT_PORTAL[1]
    luns: list[LunSpec] = field(default_factory=lambda: [LunSpec("lun0", DEFAULT_LUN_SIZE)])
    iqn: str = DEFAULT_IQN
    lio: bool = False  # serve through kernel LIO (TCMU) instead of the built-in target


def parse_size(text: str) -> int:
    """Bytes, or a number with a K/M/G/T suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"bad size {text!r}: use bytes or a K/M/G/T suffix, e.g. 1G")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[match.group(2).upper()]
    return check_size(int(match.group(1)) << shift, text)


def check_size(size: object, text: str | None = None) -> int:
    """A LUN size in bytes: a positive multiple of the block size, under 8 EiB."""
    shown = repr(text if text is not None else size)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % BLOCK_SIZE:
        raise UserError(f"bad size {shown}: must be a positive multiple of {BLOCK_SIZE} bytes")
    if size >= MAX_LUN_SIZE:
        raise UserError(f"bad size {shown}: must be under 8 EiB (a file's size is an off_t)")
    return size


def parse_lun(text: str) -> LunSpec:
    name, sep, size = text.rpartition(":")
    if not sep:
        raise UserError(f"bad --lun {text!r}: use NAME:SIZE, e.g. lun0:1G")
    return LunSpec(check_lun_name(name), parse_size(size))


def parse_portal(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise UserError(f"bad --portal {text!r}: use HOST:PORT, e.g. 127.0.0.1:3260")
    return host.strip("[]"), int(port)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--portal",
        default=f"{DEFAULT_PORTAL[0]}:{DEFAULT_PORTAL[1]}",
        help="address to listen on, HOST:PORT (default %(default)s)",
    )
    parser.add_argument(
        "--lun",
        action="append",
        default=[],
        metavar="NAME:SIZE",
        help="serve LUN NAME of SIZE bytes (K/M/G/T suffixes); repeatable; "
        "default lun0:1G (with --lio: none); an existing LUN is reused",
    )
    parser.add_argument("--iqn", default=DEFAULT_IQN, help="target name (default %(default)s)")
    parser.add_argument(
        "--lio",
        action="store_true",
        help="export the LUNs through kernel LIO (TCMU user:preserve backstores) instead "
        "of the built-in iSCSI target; needs root, configfs, target_core_user and "
        "iscsi_target_mod",
    )


def config_from(args: argparse.Namespace) -> Config:
    host, port = parse_portal(args.portal)
    luns = [parse_lun(text) for text in args.lun]
    if not luns and not args.lio:  # LIO mode serves the user:preserve backstores it finds
        luns = [LunSpec("lun0", DEFAULT_LUN_SIZE)]
    seen: set[str] = set()
    for spec in luns:
        if spec.name in seen:
            raise UserError(f"LUN name {spec.name!r} is given twice in --lun")
        seen.add(spec.name)
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    return Config(state_dir.resolve(), host, port, luns, args.iqn, args.lio)


def format_portal(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets (as ``--portal`` takes it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
