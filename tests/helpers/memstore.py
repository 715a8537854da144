"""A plain in-memory BlockStore for tests of the SCSI and iSCSI layers (not the product)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class MemoryStore:
    def __init__(self, num_blocks: int = 2048, block_size: int = 512) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.data = bytearray(num_blocks * block_size)
        self.flushes = 0
        self.issued: list[tuple[str, int, int]] = []  # (op, lba, nblocks) in issue order

    def read(self, lba: int, nblocks: int) -> Awaitable[bytes]:
        self.issued.append(("read", lba, nblocks))
        return self._read(lba, nblocks)

    async def _read(self, lba: int, nblocks: int) -> bytes:
        start = lba * self.block_size
        return bytes(self.data[start : start + nblocks * self.block_size])

    def write(self, lba: int, nblocks: int, data, fua: bool = False) -> Awaitable[None]:
        self.issued.append(("write", lba, nblocks))
        return self._write(lba, nblocks, data)

    async def _write(self, lba: int, nblocks: int, data) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = await data
        assert len(data) == nblocks * self.block_size
        start = lba * self.block_size
        self.data[start : start + len(data)] = data

    def flush(self) -> Awaitable[None]:
        self.issued.append(("flush", 0, 0))
        return self._flush()

    async def _flush(self) -> None:
        self.flushes += 1
        await asyncio.sleep(0)
