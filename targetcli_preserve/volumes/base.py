"""What every volume is: the abstract :class:`Volume` and :class:`CloneStrategy`.

A volume is a byte-addressed store of fixed size. It knows storage, not SCSI: the
caller (the preserve engine, via the LUN data path) turns LBAs into byte offsets and
decides which volumes a command goes to (docs/design.md section 3). Volumes do not track
live/draining/frozen; they only offer :meth:`Volume.freeze`.
"""

from __future__ import annotations

import abc
import enum
from pathlib import Path

Bytes = bytes | bytearray | memoryview  # what a write takes: any contiguous bytes


class CloneStrategy(enum.Enum):
    """How a clone was made (docs/design.md rule 3)."""

    # Both: empty sparse file + chunk bitmap, reads through its source, hydrates behind.
    REFLINK = "reflink"  # hydrates by sharing blocks (FICLONERANGE): no copy, no space
    LAZY = "lazy"  # hydrates by copying (no reflink on this filesystem)


class Volume(abc.ABC):
    """A fixed-size volume. Use from one asyncio event loop."""

    path: Path
    size: int
    #: None for a plain volume, else how this volume was cloned.
    strategy: CloneStrategy | None
    read_only: bool

    @abc.abstractmethod
    async def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset``. Raises BackendError on failure."""

    def read_cached(self, offset: int, length: int) -> bytes | None:
        """The bytes ``read`` would give, if memory has them all right now: never
        blocks, never raises; None means "await read() instead"."""
        return None

    @abc.abstractmethod
    async def write(self, offset: int, data: Bytes) -> None:
        """Write ``data`` at ``offset``. Raises BackendError on failure or if frozen."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Make every write that returned durable (data and the metadata it needs)."""

    @abc.abstractmethod
    async def freeze(self) -> None:
        """Flush, then reopen read-only; later writes raise BackendError."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop background work and close file descriptors. Idempotent."""

    def hydration_progress(self) -> float:
        """Fraction of the volume that no longer depends on a source (1.0 if none)."""
        return 1.0

    async def wait_hydrated(self) -> None:
        """Return once the volume no longer reads through a source."""

    def __repr__(self) -> str:
        strategy = self.strategy.value if self.strategy else "plain"
        ro = " ro" if self.read_only else ""
        return f"<{type(self).__name__} {self.path} {self.size}B {strategy}{ro}>"
