"""Hypothesis: any sequence of commands queued by the simulated kernel, read, answered in
any order, TMRs and kernel wake-ups, on small rings that wrap and fill up, with and
without CAP_OOOC, never corrupts the ring (the simulator checks every rule at every
step) and delivers each command's response to the kernel exactly once, unchanged."""

from __future__ import annotations

from helpers.tcmu_sim import (
    ALL_CAPS,
    CAP_OOOC,
    CAP_READ_LEN,
    CHECK_CONDITION,
    GOOD,
    SimCmd,
    SimKernel,
    SimResponse,
    make_cdb,
)
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from targetcli_preserve.tcmu import Command, TcmuRing, Tmr, TmrType

BUSY = 0x08
OPCODES = [0x00, 0x28, 0x2A, 0x88, 0xA8, 0x53, 0x7F]


class RingMachine(RuleBasedStateMachine):
    sim: SimKernel
    ring: TcmuRing

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, tuple[Command, SimCmd]] = {}  # read, not answered
        self.expected: dict[SimCmd, SimResponse] = {}
        self.checked: set[SimCmd] = set()
        self.tmrs_read = 0

    @initialize(
        oooc=st.booleans(),
        in_order=st.booleans(),
        read_len=st.booleans(),
        cmdr_size=st.sampled_from([512, 640, 1024, 2048 - 128]),
        data_blocks=st.integers(3, 12),
        block_size=st.sampled_from([512, 1024]),
    )
    def setup(
        self,
        oooc: bool,
        in_order: bool,
        read_len: bool,
        cmdr_size: int,
        data_blocks: int,
        block_size: int,
    ) -> None:
        flags = ALL_CAPS & ~(0 if oooc else CAP_OOOC) & ~(0 if read_len else CAP_READ_LEN)
        self.sim = SimKernel(
            cmdr_size=cmdr_size, data_blocks=data_blocks, block_size=block_size, flags=flags
        )
        self.ring = TcmuRing(self.sim.buffer, in_order=in_order)
        assert self.ring.out_of_order == (oooc and not in_order)

    # -- the kernel ----------------------------------------------------------------------

    @rule(
        opcode=st.sampled_from(OPCODES),
        extra=st.integers(0, 40),
        out=st.integers(0, 2000),
        into=st.integers(0, 2000),
        seed=st.integers(0, 255),
    )
    def submit(self, opcode: int, extra: int, out: int, into: int, seed: int) -> None:
        bs, blocks = self.sim.block_size, self.sim.max_blocks
        if opcode == 0x53:  # bidirectional
            out, into = max(out, 1), max(into, 1)
        elif opcode == 0x2A:
            into = 0
        elif opcode == 0x00:
            out = into = 0
        else:
            out = 0
        out = min(out, blocks // 2 * bs)
        into = min(into, blocks // 2 * bs)
        cdb = make_cdb(opcode, extra)
        iovecs = -(-out // bs) - (-into // bs)
        if max(48 + 16 * iovecs, 112) + -(-len(cdb) // 8) * 8 > self.sim.cmdr_size // 2:
            return  # the kernel would fail it (TCM_INVALID_CDB_FIELD) without queueing
        data = bytes((seed + 3 * i) & 0xFF for i in range(out))
        if self.sim.submit(cdb, data_out=data, data_in_len=into).state == "waiting":
            event("a command waits for ring or data space")

    @rule(data=st.data())
    def tmr(self, data: st.DataObject) -> None:
        live = [c for c in self.sim.commands if c.state != "done"]
        chosen = data.draw(st.lists(st.sampled_from(live), unique=True) if live else st.just([]))
        kind = data.draw(st.sampled_from(list(TmrType)))
        self.sim.tmr(kind, chosen)

    @rule()
    def spurious_wakeup(self) -> None:
        self.sim.irq()

    # -- user space ----------------------------------------------------------------------

    @rule()
    def poll(self) -> None:
        for entry in self.ring.poll():
            if isinstance(entry, Tmr):
                assert (entry.tmr_type, entry.cmd_ids) == self.sim.tmrs_sent[self.tmrs_read]
                self.tmrs_read += 1
                event("a TMR is read")
                continue
            assert isinstance(entry, Command)
            sim_cmd = self.sim.in_flight[entry.cmd_id]
            assert entry.cdb == sim_cmd.cdb
            if sim_cmd.data_out or not sim_cmd.data_in_len:
                assert entry.data_out() == sim_cmd.data_out
            # without a bidi list the Data-In buffer is the iovecs, whatever the CDB says
            assert entry.data_in_length == (sim_cmd.data_in_len or len(sim_cmd.data_out))
            assert entry.cmd_id not in self.held
            if entry.entry == 0 and self.sim.last_cleaned:
                event("a command wrapped to offset 0")
            self.held[entry.cmd_id] = (entry, sim_cmd)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        cmd_id = data.draw(st.sampled_from(sorted(self.held)))
        cmd, sim_cmd = self.held.pop(cmd_id)
        rank = self.sim.commands.index  # ring order is submission order
        if any(rank(other) < rank(sim_cmd) for _, other in self.held.values()):
            event("a command completes before an older one")
        status = data.draw(st.sampled_from([GOOD, GOOD, CHECK_CONDITION, BUSY]))
        sense = b""
        if status == CHECK_CONDITION:
            sense = data.draw(st.binary(min_size=0, max_size=96))
        payload = b""
        if cmd.data_in_length:
            seed = data.draw(st.integers(0, 255))
            payload = bytes((seed + 5 * i) & 0xFF for i in range(cmd.data_in_length))
            cmd.write_data_in(payload)
        read_len = None
        if sim_cmd.is_read and self.ring.flags & CAP_READ_LEN and data.draw(st.booleans()):
            read_len = data.draw(st.integers(1, cmd.data_in_length))
            event("a read answers with read_len")
        self.ring.complete(cmd, status, sense, read_len)
        self.expected[sim_cmd] = self._kernel_view(sim_cmd, status, sense, read_len, payload)

    @staticmethod
    def _kernel_view(
        sim_cmd: SimCmd, status: int, sense: bytes, read_len: int | None, payload: bytes
    ) -> SimResponse:
        """What the kernel should take from this answer (tcmu_handle_completion)."""
        sense96 = sense.ljust(96, b"\0") if status == CHECK_CONDITION else b""
        data_in = None
        if sim_cmd.data_in_len and (status != CHECK_CONDITION or read_len):
            data_in = payload[:read_len] if read_len else payload
        return SimResponse(status, sense96, read_len, data_in)

    @rule()
    def notify(self) -> None:
        if self.ring.take_notify():
            self.sim.irq()

    # -- checks --------------------------------------------------------------------------

    @invariant()
    def responses_reach_the_kernel_once_and_unchanged(self) -> None:
        if not hasattr(self, "sim"):
            return
        for c in self.sim.commands:
            if c.response is None or c in self.checked:
                continue
            self.checked.add(c)
            if c.aborted_in_queue:
                assert c.completions == 0 and c not in self.expected
                continue
            assert c.completions == 1
            assert c.response == self.expected[c]
        self.sim.check_free_space()
        assert set(self.ring.outstanding) == set(self.held)

    def teardown(self) -> None:
        if not hasattr(self, "sim"):
            return
        sim = self.sim
        for _ in range(10_000):
            if all(c.state == "done" for c in sim.commands) and sim.head == sim.last_cleaned:
                break
            self.poll()
            for cmd, sim_cmd in list(self.held.values()):
                self.held.pop(cmd.cmd_id)
                payload = bytes(cmd.data_in_length)
                cmd.write_data_in(payload)
                self.ring.complete(cmd)
                self.expected[sim_cmd] = self._kernel_view(sim_cmd, GOOD, b"", None, payload)
            self.notify()
        self.responses_reach_the_kernel_once_and_unchanged()
        self.sim.check_idle()
        assert self.tmrs_read == len(self.sim.tmrs_sent)


RingMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_ring_against_the_simulated_kernel = RingMachine.TestCase
