"""Property: any bytes as a CDB, with any Data-Out, give a well-formed CommandResult and
never an exception, and never reach the store with an out-of-range request."""

from __future__ import annotations

import asyncio

import pytest
from helpers.memstore import MemoryStore
from helpers.scsi_testlib import make_target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve.scsi.cdb import COMMANDS, Opcode
from targetcli_preserve.scsi.target import CommandResult, ScsiStatus

NB, BS = 64, 512


class CheckedStore(MemoryStore):
    """A store that fails the test if the SCSI layer issues anything out of range."""

    def read(self, lba, nblocks):
        assert 0 <= lba and 0 < nblocks and lba + nblocks <= self.num_blocks
        return super().read(lba, nblocks)

    def write(self, lba, nblocks, data, fua=False):
        assert 0 <= lba and 0 < nblocks and lba + nblocks <= self.num_blocks
        if isinstance(data, (bytes, bytearray)):
            assert len(data) == nblocks * self.block_size
        return super().write(lba, nblocks, data, fua)


async def _later(data: bytes) -> bytes:
    return data


known_opcodes = st.sampled_from([int(op) for op in Opcode])
# CDBs that start with a supported opcode get far deeper than uniformly random bytes
cdbs = st.one_of(
    st.binary(max_size=32),
    st.tuples(known_opcodes, st.binary(min_size=0, max_size=17)).map(
        lambda t: bytes((t[0],)) + t[1]
    ),
    st.tuples(known_opcodes, st.integers(0, 31), st.binary(min_size=14, max_size=14)).map(
        lambda t: bytes((t[0], t[1])) + t[2]
    ),
)
data_lengths = st.sampled_from([0, 1, 200, BS, 2 * BS, 256 * BS])


def check(resp: object) -> None:
    assert isinstance(resp, CommandResult)
    assert resp.status in (ScsiStatus.GOOD, ScsiStatus.CHECK_CONDITION)
    assert isinstance(resp.data, bytes) and isinstance(resp.sense, bytes)
    if resp.status is ScsiStatus.CHECK_CONDITION:
        assert resp.data == b""
        assert len(resp.sense) == 18
        assert resp.sense[0] & 0x7F == 0x70
        assert resp.sense[7] == 10
        assert 1 <= resp.sense[2] <= 0x0E
        # HARDWARE ERROR / INTERNAL TARGET FAILURE is what an unexpected exception becomes
        assert (resp.sense[2], resp.sense[12]) != (0x04, 0x44), "a handler crashed"
    else:
        assert resp.sense == b""


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cdb=cdbs,
    lun=st.sampled_from([0, 0, 0, 1]),
    kind=st.sampled_from(["none", "bytes", "awaitable"]),
    length=data_lengths,
)
def test_random_cdbs_never_raise(loop, cdb, lun, kind, length):
    store = CheckedStore(num_blocks=NB, block_size=BS)
    target = make_target(store)
    data_out = None
    if kind == "bytes":
        data_out = b"\xa5" * length
    elif kind == "awaitable":
        data_out = _later(b"\xa5" * length)
    try:
        pending = target.execute(lun, cdb, data_out, length if data_out is not None else 0)
        resp = loop.run_until_complete(_await(pending))
    finally:
        if kind == "awaitable":
            data_out.close()  # type: ignore[union-attr]
    check(resp)


async def _await(aw):
    return await aw


@pytest.mark.parametrize("key", sorted(COMMANDS, key=lambda k: (k[0], k[1] or 0)))
def test_every_command_with_all_ones_fields(loop, key):
    """Every supported CDB with every non-opcode bit set still answers cleanly."""
    opcode, sa = key
    spec = COMMANDS[key]
    cdb = bytearray(b"\xff" * spec.length)
    cdb[0] = opcode
    if sa is not None:
        cdb[1] = sa | 0xE0
    resp = loop.run_until_complete(_await(make_target().execute(0, bytes(cdb), None, 0)))
    check(resp)
    assert resp.status is ScsiStatus.CHECK_CONDITION
