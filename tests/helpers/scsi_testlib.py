"""Helpers shared by the SCSI unit tests: a recording/failing store, CDB builders."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

from helpers.memstore import MemoryStore
from targetcli_preserve._errors import BackendError
from targetcli_preserve.scsi.target import CommandResult, LogicalUnit, LuIdentity, ScsiTarget

WWN = uuid.UUID("6a1f0c2e-9b3d-4e5f-8a7b-1c2d3e4f5a6b")


class RecordingStore(MemoryStore):
    """MemoryStore that also records FUA and what kind of Data-Out it was handed, and
    can be told to fail."""

    def __init__(self, num_blocks: int = 2048, block_size: int = 512) -> None:
        super().__init__(num_blocks, block_size)
        self.fua: list[bool] = []
        self.data_args: list[object] = []
        self.fail: set[str] = set()  # ops ("read", "write", "flush") that raise

    def read(self, lba: int, nblocks: int) -> Awaitable[bytes]:
        aw = super().read(lba, nblocks)
        return self._maybe_fail("read", aw)

    def write(self, lba, nblocks, data, fua=False):
        self.fua.append(fua)
        self.data_args.append(data)
        return self._maybe_fail("write", super().write(lba, nblocks, data, fua))

    def flush(self):
        return self._maybe_fail("flush", super().flush())

    async def _maybe_fail(self, op: str, aw):
        if op in self.fail:
            aw.close()
            raise BackendError(f"injected {op} failure")
        return await aw


def make_target(store: MemoryStore | None = None, lun: int = 0) -> ScsiTarget:
    store = store if store is not None else RecordingStore()
    return ScsiTarget({lun: LogicalUnit(store, LuIdentity(name="lun0", wwn=WWN))})


async def run(
    target: ScsiTarget,
    cdb: bytes,
    data_out: bytes | Awaitable[bytes] | None = None,
    length: int | None = None,
    lun: int = 0,
) -> CommandResult:
    if length is None:
        length = len(data_out) if isinstance(data_out, bytes) else 0
    return await target.execute(lun, cdb, data_out, length)


def sense_of(resp: CommandResult) -> tuple[int, int, int]:
    """(sense key, ASC, ASCQ) of fixed-format sense."""
    s = resp.sense
    assert len(s) == 18 and s[0] & 0x7F == 0x70, s.hex()
    return s[2] & 0x0F, s[12], s[13]


def field_pointer(resp: CommandResult) -> tuple[int, int | None]:
    """(byte, bit or None) of the sense-key specific field pointer; asserts SKSV and C/D."""
    s = resp.sense
    assert s[15] & 0x80, "SKSV not set"
    assert s[15] & 0x40, "C/D not set"
    bit = s[15] & 0x07 if s[15] & 0x08 else None
    return int.from_bytes(s[16:18], "big"), bit


def be(value: int, n: int) -> bytes:
    return value.to_bytes(n, "big")


def read10(lba: int, n: int, flags: int = 0, control: int = 0) -> bytes:
    return bytes((0x28, flags)) + be(lba, 4) + b"\x00" + be(n, 2) + bytes((control,))


def write10(lba: int, n: int, flags: int = 0) -> bytes:
    return bytes((0x2A, flags)) + be(lba, 4) + b"\x00" + be(n, 2) + b"\x00"


def read12(lba: int, n: int, flags: int = 0) -> bytes:
    return bytes((0xA8, flags)) + be(lba, 4) + be(n, 4) + b"\x00\x00"


def write12(lba: int, n: int, flags: int = 0) -> bytes:
    return bytes((0xAA, flags)) + be(lba, 4) + be(n, 4) + b"\x00\x00"


def read16(lba: int, n: int, flags: int = 0) -> bytes:
    return bytes((0x88, flags)) + be(lba, 8) + be(n, 4) + b"\x00\x00"


def write16(lba: int, n: int, flags: int = 0) -> bytes:
    return bytes((0x8A, flags)) + be(lba, 8) + be(n, 4) + b"\x00\x00"


def read6(lba: int, n: int) -> bytes:
    return bytes((0x08,)) + be(lba, 3) + bytes((n, 0))


def write6(lba: int, n: int) -> bytes:
    return bytes((0x0A,)) + be(lba, 3) + bytes((n, 0))


def inquiry(evpd: bool = False, page: int = 0, alloc: int = 255) -> bytes:
    return bytes((0x12, int(evpd), page)) + be(alloc, 2) + b"\x00"


def mode_sense6(page: int, pc: int = 0, dbd: bool = False, sub: int = 0, alloc: int = 255):
    return bytes((0x1A, 0x08 if dbd else 0, (pc << 6) | page, sub, alloc, 0))


def mode_sense10(
    page: int, pc: int = 0, dbd: bool = False, llbaa: bool = False, sub: int = 0, alloc=4096
):
    flags = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return bytes((0x5A, flags, (pc << 6) | page, sub, 0, 0, 0)) + be(alloc, 2) + b"\x00"


def report_luns(select: int = 0, alloc: int = 4096) -> bytes:
    return bytes((0xA0, 0, select, 0, 0, 0)) + be(alloc, 4) + b"\x00\x00"


def read_capacity16(alloc: int = 32) -> bytes:
    return bytes((0x9E, 0x10)) + bytes(8) + be(alloc, 4) + b"\x00\x00"


def rsoc(options: int = 0, opcode: int = 0, sa: int = 0, rctd: bool = False, alloc=65535):
    byte2 = (0x80 if rctd else 0) | options
    return bytes((0xA3, 0x0C, byte2, opcode)) + be(sa, 2) + be(alloc, 4) + b"\x00\x00"
