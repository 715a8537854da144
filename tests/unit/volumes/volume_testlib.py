"""Helpers for the volume tests: syscall byte counters and allocated space."""

from __future__ import annotations

import os
from pathlib import Path


def io_counters() -> dict[str, int]:
    """This process's I/O syscall byte counters (all threads), from /proc/self/io."""
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, value = line.split(":")
        out[key] = int(value)
    return out


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512
