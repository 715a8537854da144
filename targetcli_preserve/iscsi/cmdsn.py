"""The CmdSN window of a session: which commands are taken, and in which order.

Owns ExpCmdSN and MaxCmdSN (RFC 7143 4.2.2.1), the ordering of non-immediate PDUs by
CmdSN (3.2.2.1: a PDU arriving early is held until the ones before it came; one outside
the window or already held is ignored), and the serial number arithmetic they use
(RFC 1982, 32-bit). Sans-I/O: what "delivering" a PDU means is a callable the session
passes in.
"""

from __future__ import annotations

from collections.abc import Callable

SN_MASK = 0xFFFFFFFF
_HALF = 1 << 31


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic for 32-bit sequence numbers (RFC 7143 4.2.2.1)."""
    return a != b and ((b - a) & SN_MASK) < _HALF


def _nothing() -> None:
    pass


class CmdSnWindow:
    """ExpCmdSN/MaxCmdSN of one session and the PDUs that arrived before their turn.

    ``depth`` is the queue depth: the window is MaxCmdSN - ExpCmdSN + 1 commands wide
    when nothing is in flight (TargetLimits.queue_depth)."""

    __slots__ = ("_held", "depth", "exp_cmd_sn", "max_cmd_sn")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.exp_cmd_sn = 0
        self.max_cmd_sn = 0
        self._held: dict[int, Callable[[], None]] = {}

    def open(self, cmd_sn: int) -> None:
        """Start the window at the CmdSN the login ended with (full feature phase)."""
        self.exp_cmd_sn = cmd_sn & SN_MASK
        self.max_cmd_sn = (cmd_sn + self.depth - 1) & SN_MASK

    def admits(self, sn: int) -> bool:
        """Whether a non-immediate PDU with CmdSN ``sn`` is taken: it is ExpCmdSN, or
        inside the window and not a duplicate of one held (RFC 7143 3.2.2.1)."""
        exp = self.exp_cmd_sn
        return sn == exp or (
            serial_lt(exp, sn) and not serial_lt(self.max_cmd_sn, sn) and sn not in self._held
        )

    def order(self, immediate: bool, sn: int, deliver: Callable[[], None]) -> None:
        """Run ``deliver`` in CmdSN order: an immediate PDU now; a non-immediate one now
        if it is ExpCmdSN (then every held one that follows), later if it is early, and
        never if the window does not admit it (silently ignored, RFC 7143 3.2.2.1)."""
        if immediate:
            deliver()
            return
        if sn != self.exp_cmd_sn:
            if self.admits(sn):
                self._held[sn] = deliver
            return
        self.exp_cmd_sn = (sn + 1) & SN_MASK
        deliver()
        held = self._held
        while held and self.exp_cmd_sn in held:
            fn = held.pop(self.exp_cmd_sn)
            self.exp_cmd_sn = (self.exp_cmd_sn + 1) & SN_MASK
            fn()

    def consume(self, sn: int) -> None:
        """Count ``sn`` as received without delivering anything for it."""
        if sn == self.exp_cmd_sn:
            self.order(False, sn, _nothing)
        else:
            self._held.setdefault(sn, _nothing)

    def holds(self, sn: int) -> bool:
        """Whether a PDU with CmdSN ``sn`` arrived early and waits for its turn."""
        return sn in self._held

    def drop_held(self) -> None:
        """Forget every PDU waiting for its turn (they will never be delivered)."""
        self._held.clear()

    def update_max(self, busy: int) -> int:
        """Current MaxCmdSN: the queue depth minus the ``busy`` commands not yet
        answered; it never decreases (RFC 7143 4.2.2.1)."""
        depth = self.depth
        if busy >= depth:
            busy = depth - 1
        new = (self.exp_cmd_sn + depth - 1 - busy) & SN_MASK
        if serial_lt(self.max_cmd_sn, new):
            self.max_cmd_sn = new
        return self.max_cmd_sn
