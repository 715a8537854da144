"""The lock table: LBA range locks of in-flight writes, granted in issue order.

Owns one rule (docs/design.md rule 1, and rules 4-5 at a cut): a command may run only when
no earlier command that is still in flight *writes* a range overlapping its own. Every
write holds the lock on its range from intake until it has reached every volume it
must reach (its home volume and every clone cut while it was in flight), so

- overlapping writes take effect in issue order on every volume (rule 1);
- at a cut, the locks of all pre-cut writes still in flight already exist, so a
  post-cut command overlapping one waits for its replication to finish (rules 4, 5);
- a command that overlaps no in-flight write waits for nothing: reads never hold
  locks, so nothing ever waits on a read, and there is no global pause.

SCSI's SIMPLE task attribute (SAM-5 8.6) lets a target reorder commands freely; this
table is stricter only where the preserved image needs it. The table is volatile: it is
never written to a volume, a backup or the journal (rule 9).

Locks are per LUN and sized by what is in flight (a queue depth), so a linear scan of
the in-flight writes is the right structure: no tree to rebalance per command.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, Self, TypeVar


class Lockable(Protocol):
    """What the table needs of a command (see :class:`preserve.engine.Command`).

    ``waiters`` holds commands of the same type as the one they wait for: the table
    hands them back from :meth:`LockTable.release` as that type."""

    start: int
    end: int
    blockers: int  # earlier overlapping writes it still waits for
    waiters: list[Self]  # later commands waiting for this one, in issue order

    @property
    def is_write(self) -> bool: ...


C = TypeVar("C", bound=Lockable)


class LockTable(Generic[C]):
    """Range locks of one LUN over commands of type ``C``. Commands must be added in
    issue (seq) order."""

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        self._writes: list[C] = []  # in-flight writes, in issue order

    def add(self, cmd: C) -> int:
        """Register ``cmd`` at intake; return how many earlier writes it waits for."""
        if cmd.end <= cmd.start:
            return 0  # touches no block (a FLUSH, a zero-length transfer): waits for none
        for held in self._writes:
            if held.start < cmd.end and cmd.start < held.end:
                held.waiters.append(cmd)
                cmd.blockers += 1
        if cmd.is_write:
            self._writes.append(cmd)
        return cmd.blockers

    def release(self, cmd: C) -> list[C]:
        """Drop ``cmd``'s lock once it has finished everywhere; return the commands
        that no longer wait for anything, in issue order."""
        if cmd.is_write and cmd.end > cmd.start:
            self._writes.remove(cmd)
        freed: list[C] = []
        for waiter in cmd.waiters:
            waiter.blockers -= 1
            if waiter.blockers == 0:
                freed.append(waiter)
        cmd.waiters.clear()
        return freed

    def __iter__(self) -> Iterator[C]:
        return iter(self._writes)

    def __len__(self) -> int:
        return len(self._writes)
