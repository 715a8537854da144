"""REPORT SUPPORTED OPERATION CODES parameter data (SPC-4 6.35), from cdb.COMMANDS.

The command table in :mod:`.cdb` is the single source: a command is reported exactly
when :func:`.cdb.decode` accepts it, with the CDB USAGE DATA kept next to its decoder.
"""

from __future__ import annotations

import enum

from .cdb import (
    COMMANDS,
    SERVICE_ACTION_OPCODES,
    CommandSpec,
    ReportingOptions,
    ReportSupportedOpcodes,
)
from .sense import invalid_field


class Support(enum.IntEnum):
    """SUPPORT field of the one-command parameter data (SPC-4 6.35.3, table 182)."""

    NOT_SUPPORTED = 0b001
    SUPPORTED = 0b011


_CTDP_ALL = 0x02  # all-commands descriptor byte 5
_SERVACTV = 0x01
_CTDP_ONE = 0x80  # one-command data byte 1
_TIMEOUTS_LENGTH = 0x0A
RECOMMENDED_TIMEOUT_SECONDS = 30


def _timeouts() -> bytes:
    """Command timeouts descriptor (SPC-4 6.35.4, table 183); nominal time not given."""
    return (
        _TIMEOUTS_LENGTH.to_bytes(2, "big")
        + bytes(2)
        + bytes(4)
        + RECOMMENDED_TIMEOUT_SECONDS.to_bytes(4, "big")
    )


def _descriptor(spec: CommandSpec, rctd: bool) -> bytes:
    """Command descriptor (SPC-4 6.35.2, table 180)."""
    flags = (_CTDP_ALL if rctd else 0) | (_SERVACTV if spec.service_action is not None else 0)
    out = bytes((spec.opcode, 0)) + (spec.service_action or 0).to_bytes(2, "big")
    out += bytes((0, flags)) + spec.length.to_bytes(2, "big")
    return out + (_timeouts() if rctd else b"")


def _one(spec: CommandSpec | None, rctd: bool) -> bytes:
    if spec is None:
        return bytes((0, Support.NOT_SUPPORTED, 0, 0))
    head = bytes((0, (_CTDP_ONE if rctd else 0) | Support.SUPPORTED))
    return head + spec.length.to_bytes(2, "big") + spec.usage + (_timeouts() if rctd else b"")


def report_supported_opcodes(cmd: ReportSupportedOpcodes) -> bytes:
    """The parameter data, not yet cut to the allocation length."""
    options = cmd.reporting_options
    if options is ReportingOptions.ALL:
        body = b"".join(_descriptor(spec, cmd.rctd) for spec in COMMANDS.values())
        return len(body).to_bytes(4, "big") + body
    opcode = cmd.requested_opcode
    has_sa = opcode in SERVICE_ACTION_OPCODES
    if options is ReportingOptions.OPCODE_MAYBE_SERVICE_ACTION:
        options = ReportingOptions.OPCODE_AND_SERVICE_ACTION if has_sa else ReportingOptions.OPCODE
    # SPC-4 6.35.1: asking for an opcode alone when it has service actions, or for a
    # service action of an opcode that has none, is INVALID FIELD IN CDB.
    if options is ReportingOptions.OPCODE:
        if has_sa:
            raise invalid_field(3)
        return _one(COMMANDS.get((opcode, None)), cmd.rctd)
    if not has_sa:
        if (opcode, None) in COMMANDS:
            raise invalid_field(3)
        return _one(None, cmd.rctd)
    return _one(COMMANDS.get((opcode, cmd.requested_service_action)), cmd.rctd)
