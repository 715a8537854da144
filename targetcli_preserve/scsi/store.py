"""The contract between the SCSI layer and whatever stores blocks (BlockStore).

The SCSI command set in this package talks only to this protocol. The product's
implementation is the preserve-aware LUN data path (``targetcli_preserve.datapath``),
which drives the engine and the volumes; tests may use a plain in-memory store.

Issue order (docs/design.md rule 1): ``read``, ``write`` and ``flush`` are plain methods, not
coroutines. Their synchronous part registers the command with the engine and so fixes
its sequence number *at the call*; they return an awaitable that completes the command.
A transport that calls them in CmdSN order therefore issues commands in CmdSN order,
even when a write's data arrives later (pass an awaitable as ``data``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol


class BlockStore(Protocol):
    # Read-only to the SCSI layer: a plain attribute or a property satisfies them.
    @property
    def block_size(self) -> int:
        """Bytes per logical block (512 or 4096)."""

    @property
    def num_blocks(self) -> int:
        """Capacity in logical blocks."""

    def read(self, lba: int, nblocks: int) -> Awaitable[bytes]:
        """Issue a read now; the awaitable gives ``nblocks * block_size`` bytes.

        Raises BackendError (through the awaitable) when the storage fails."""

    def write(
        self, lba: int, nblocks: int, data: bytes | Awaitable[bytes], fua: bool = False
    ) -> Awaitable[None]:
        """Issue a write now; ``data`` may still be arriving (an awaitable of bytes).

        The awaitable completes once the data reached every volume it must reach
        (DESIGN rule 8), durably if ``fua``. Raises BackendError through the awaitable."""

    def flush(self) -> Awaitable[None]:
        """Issue SYNCHRONIZE CACHE: make every acknowledged write durable."""
