"""The I/O-free preserve engine: issue order, the cut, routing, the lock table, drain.

Events in, actions out; no sockets, no files, no clocks (docs/design.md section 3).
"""

from .engine import (
    Action,
    Clone,
    Command,
    Commit,
    Complete,
    Cut,
    CutState,
    Discard,
    Engine,
    Freeze,
    Generation,
    LockInfo,
    Op,
    Start,
    VolumeState,
)
from .locks import LockTable

__all__ = [
    "Action",
    "Clone",
    "Command",
    "Commit",
    "Complete",
    "Cut",
    "CutState",
    "Discard",
    "Engine",
    "Freeze",
    "Generation",
    "LockInfo",
    "LockTable",
    "Op",
    "Start",
    "VolumeState",
]
