"""The kernel's boot id: it changes exactly when the page cache may have been lost.

A restart compares it with the one a record or a bitmap was written under to tell a
crash of the daemon alone (same boot: the page cache kept every write) from a reboot or
power loss (only what was fsync'd is there). The one reader of it in the product.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

from ._errors import BackendError

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def current_boot() -> str:
    """The boot id as the kernel writes it (a UUID string)."""
    try:
        return str(uuid.UUID(BOOT_ID_PATH.read_text().strip()))
    except (OSError, ValueError) as err:
        raise BackendError(f"cannot read the kernel boot id from {BOOT_ID_PATH}: {err}") from err


def current_boot_bytes() -> bytes:
    """The boot id as 16 raw bytes (for binary headers)."""
    return uuid.UUID(current_boot()).bytes
