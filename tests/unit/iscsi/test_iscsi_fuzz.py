"""Hypothesis: whatever bytes or PDUs arrive, a connection never raises and never hits
its internal-error guard."""

from __future__ import annotations

from helpers.iscsi_testlib import CloseConnection, ExecuteCommand, Harness
from helpers.pdu_strategies import any_pdu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve.iscsi.pdu import (
    DataOut,
    LogoutRequest,
    NopOut,
    ScsiCommand,
    TaskManagementRequest,
    encode_pdu,
)

small = st.integers(0, 8192)
plausible = st.one_of(
    st.builds(
        ScsiCommand,
        immediate=st.booleans(),
        final=st.booleans(),
        read=st.booleans(),
        write=st.booleans(),
        expected_data_transfer_length=small,
        data=st.sampled_from([b"", b"x" * 512, b"y" * 2048, b"z" * 5000]),
    ),
    st.builds(
        DataOut,
        final=st.booleans(),
        data_sn=st.integers(0, 3),
        buffer_offset=st.sampled_from([0, 512, 2048, 4096]),
        data=st.sampled_from([b"", b"d" * 512, b"e" * 2048]),
    ),
    st.builds(
        TaskManagementRequest,
        immediate=st.booleans(),
        function=st.integers(1, 9),
        referenced_task_tag=st.integers(0, 4),
        ref_cmd_sn=st.integers(0, 6),
    ),
    st.builds(NopOut, immediate=st.booleans()),
    st.builds(LogoutRequest, immediate=st.booleans(), reason_code=st.integers(0, 3)),
)


STATS = {"exec": 0}


def _no_internal_error(events):
    for e in events:
        if isinstance(e, CloseConnection):
            assert not e.reason.startswith("internal error"), e.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=20), st.booleans())
def test_random_bytes_in_full_feature_phase(chunks, digests):
    h = Harness(header_digest=digests, data_digest=digests)
    for c in chunks:
        _no_internal_error(h.raw(c))
        h.received()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(plausible, plausible, plausible, any_pdu),
            st.booleans(),
            st.integers(0, 3),
            st.integers(0, 6),
            st.integers(0, 4),
            st.integers(0, 4),
        ),
        max_size=25,
    ),
    st.booleans(),
)
def test_random_pdus_and_completions(steps, initial_r2t):
    """PDUs with small CmdSN/ITT/TTT values, so they hit live state (windows, tasks, R2Ts)."""
    h = Harness(cmd_sn=0, initial_r2t=initial_r2t, max_burst_length=4096, first_burst_length=2048)
    running = []
    for pdu, complete, status, sn, itt, ttt in steps:
        if hasattr(pdu, "cmd_sn"):
            pdu.cmd_sn = (h.conn.window.exp_cmd_sn + sn - 1) & 0xFFFFFFFF
        if hasattr(pdu, "initiator_task_tag"):
            pdu.initiator_task_tag = itt
        if hasattr(pdu, "target_transfer_tag") and ttt < 4:
            pdu.target_transfer_tag = ttt
        ev = h.raw(encode_pdu(pdu))
        _no_internal_error(ev)
        running += [e.initiator_task_tag for e in ev if isinstance(e, ExecuteCommand)]
        STATS["exec"] += sum(isinstance(e, ExecuteCommand) for e in ev)
        if complete and running:
            itt = running.pop(0)
            _no_internal_error(
                h.complete(
                    itt,
                    status,
                    b"\x00" * (status * 300),
                    b"\x70" + bytes(17) if status == 2 else b"",
                )
            )
        h.received()  # every output decodes (Harness asserts no BadPdu)
    for itt in running:
        _no_internal_error(h.complete(itt))
        h.received()
    _no_internal_error(h.conn.connection_lost())
