"""Full feature phase: CmdSN order, write data paths, Data-In, residuals, NOP, Text,
TMF, Logout and Reject, driven through the sans-I/O Connection."""

from __future__ import annotations

from helpers.iscsi_testlib import (
    TARGET,
    CloseConnection,
    DataOutAborted,
    DataOutReady,
    Harness,
    executes,
    of,
)

from targetcli_preserve.iscsi.login import SessionType
from targetcli_preserve.iscsi.pdu import (
    R2T,
    RESERVED_TAG,
    DataIn,
    DataOut,
    LoginRequest,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Reject,
    RejectReason,
    ScsiCommand,
    ScsiResponsePdu,
    Snack,
    TaskManagementRequest,
    TaskManagementResponse,
    TextRequest,
    TextResponse,
    TmfFunction,
    TmfResponse,
    encode_pdu,
    lun_to_field,
)
from targetcli_preserve.iscsi.text import parse_text

READ10 = bytes([0x28]) + bytes(15)
WRITE10 = bytes([0x2A]) + bytes(15)


def read_cmd(itt, cmd_sn, edtl=4096, **kw):
    return ScsiCommand(
        read=True,
        initiator_task_tag=itt,
        cmd_sn=cmd_sn,
        expected_data_transfer_length=edtl,
        cdb=READ10,
        **kw,
    )


def write_cmd(itt, cmd_sn, edtl, data=b"", final=True, **kw):
    return ScsiCommand(
        write=True,
        final=final,
        initiator_task_tag=itt,
        cmd_sn=cmd_sn,
        expected_data_transfer_length=edtl,
        cdb=WRITE10,
        data=data,
        **kw,
    )


# ------------------------------------------------------------------ reads and Data-In


def test_read_status_collapsed_into_last_data_in():
    h = Harness()
    (ex,) = executes(h.send(read_cmd(5, 1, lun=lun_to_field(3))))
    assert (ex.initiator_task_tag, ex.lun, ex.cdb, ex.data) == (5, 3, READ10, None)
    h.complete(5, 0, b"\x11" * 4096)
    (din,) = h.received()
    assert isinstance(din, DataIn)
    assert din.status_present and din.final and din.status == 0
    assert din.stat_sn == 100 and din.exp_cmd_sn == 2
    assert din.data == b"\x11" * 4096 and din.data_sn == 0 and din.buffer_offset == 0
    assert not din.underflow and not din.overflow


def test_data_in_split_by_mrdsl_and_burst():
    h = Harness(initiator_max_recv_data_segment_length=1024, max_burst_length=2048)
    h.send(read_cmd(1, 1, edtl=5000))
    payload = bytes(range(256)) * 19 + b"xyz" * 8  # 4888 bytes
    payload = payload[:5000]
    h.complete(1, 0, payload)
    pdus = h.received()
    assert all(isinstance(p, DataIn) for p in pdus)
    assert [len(p.data) for p in pdus] == [1024, 1024, 1024, 1024, len(payload) - 4096]
    assert [p.data_sn for p in pdus] == [0, 1, 2, 3, 4]
    assert [p.buffer_offset for p in pdus] == [0, 1024, 2048, 3072, 4096]
    assert [p.final for p in pdus] == [False, True, False, True, True]  # burst ends
    assert [p.status_present for p in pdus] == [False] * 4 + [True]
    assert b"".join(p.data for p in pdus) == payload
    assert pdus[-1].underflow and pdus[-1].residual_count == 5000 - len(payload)


def test_underflow_residual():
    h = Harness()
    h.send(read_cmd(1, 1, edtl=1024))
    h.complete(1, 0, b"a" * 512)
    (din,) = h.received()
    assert din.underflow and not din.overflow and din.residual_count == 512


def test_overflow_residual_truncates():
    h = Harness()
    h.send(read_cmd(1, 1, edtl=1024))
    h.complete(1, 0, b"a" * 2048)
    (din,) = h.received()
    assert din.overflow and din.residual_count == 1024 and len(din.data) == 1024


def test_zero_edtl_read_gives_response_with_overflow():
    h = Harness()
    h.send(read_cmd(1, 1, edtl=0))
    h.complete(1, 0, b"a" * 512)
    (rsp,) = h.received()
    assert isinstance(rsp, ScsiResponsePdu) and rsp.overflow and rsp.residual_count == 512


def _write_response(edtl, expected, status=0, sense=b""):
    h = Harness(immediate_data=True, first_burst_length=65536)
    h.send(write_cmd(1, 1, edtl, b"w" * edtl))
    h.complete(1, status, b"", sense, data_out_expected=expected)
    (rsp,) = h.received()
    assert isinstance(rsp, ScsiResponsePdu) and rsp.status == status
    return rsp


def test_write_cdb_wanting_more_than_edtl_is_overflow():
    rsp = _write_response(512, 1024)
    assert rsp.overflow and not rsp.underflow and rsp.residual_count == 512


def test_write_with_zero_edtl_is_overflow_of_the_whole_transfer():
    rsp = _write_response(0, 512)
    assert rsp.overflow and rsp.residual_count == 512


def test_write_cdb_using_less_than_edtl_is_underflow():
    rsp = _write_response(8000, 512)
    assert rsp.underflow and not rsp.overflow and rsp.residual_count == 8000 - 512


def test_write_residual_also_set_with_check_condition():
    sense = bytes([0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0E, 0x03, 0, 0, 0, 0])
    rsp = _write_response(200, 512, status=2, sense=sense)
    assert rsp.overflow and rsp.residual_count == 312


def test_write_exact_or_unknown_expectation_has_no_residual():
    for expected in (4096, None):
        rsp = _write_response(4096, expected)
        assert not rsp.overflow and not rsp.underflow and rsp.residual_count == 0


def test_check_condition_goes_in_scsi_response_with_sense():
    h = Harness()
    h.send(read_cmd(1, 1, edtl=4096))
    sense = bytes([0x70, 0, 5, 0, 0, 0, 0, 10]) + bytes(10)
    h.complete(1, 2, b"", sense)
    (rsp,) = h.received()
    assert isinstance(rsp, ScsiResponsePdu)
    assert rsp.status == 2 and rsp.response == 0
    assert rsp.data == len(sense).to_bytes(2, "big") + sense
    assert rsp.underflow and rsp.residual_count == 4096


def test_data_with_sense_sends_data_then_response():
    h = Harness()
    h.send(read_cmd(1, 1, edtl=1024))
    h.complete(1, 2, b"d" * 1024, b"\x70" + bytes(17))
    din, rsp = h.received()
    assert isinstance(din, DataIn) and not din.status_present and din.final
    assert isinstance(rsp, ScsiResponsePdu) and rsp.exp_data_sn == 1


def test_no_data_command_gets_scsi_response():
    h = Harness()
    h.send(ScsiCommand(initiator_task_tag=9, cmd_sn=1, cdb=bytes(16)))
    h.complete(9, 0)
    (rsp,) = h.received()
    assert isinstance(rsp, ScsiResponsePdu) and rsp.status == 0 and rsp.stat_sn == 100
    assert not rsp.underflow and not rsp.overflow


def test_stat_sn_increments_per_status():
    h = Harness()
    h.send(read_cmd(1, 1), read_cmd(2, 2))
    h.complete(2, 0, b"x" * 4096)
    h.complete(1, 0, b"y" * 4096)
    a, b = h.received()
    assert (a.initiator_task_tag, a.stat_sn) == (2, 100)
    assert (b.initiator_task_tag, b.stat_sn) == (1, 101)


# ------------------------------------------------------------------ CmdSN ordering


def test_out_of_order_commands_delivered_in_cmdsn_order():
    h = Harness(cmd_sn=10)
    assert executes(h.send(read_cmd(3, 12))) == []
    assert executes(h.send(read_cmd(2, 11))) == []
    ev = executes(h.send(read_cmd(1, 10)))
    assert [e.initiator_task_tag for e in ev] == [1, 2, 3]
    h.complete(1, 0, b"x" * 4096)
    assert h.received()[0].exp_cmd_sn == 13


def test_immediate_command_delivered_at_once():
    h = Harness(cmd_sn=10)
    h.send(read_cmd(3, 12))
    ev = executes(h.send(read_cmd(4, 10, immediate=True)))
    assert [e.initiator_task_tag for e in ev] == [4]
    assert [e.initiator_task_tag for e in executes(h.send(read_cmd(1, 10)))] == [1]


def test_commands_outside_window_and_duplicates_ignored():
    h = Harness(cmd_sn=10)
    assert executes(h.send(read_cmd(1, 9))) == []  # too low
    assert executes(h.send(read_cmd(2, 10 + 128))) == []  # beyond MaxCmdSN
    assert h.received() == []
    h.send(read_cmd(3, 11))
    assert executes(h.send(read_cmd(4, 11))) == []  # duplicate of a held CmdSN
    ev = executes(h.send(read_cmd(5, 10)))
    assert [e.initiator_task_tag for e in ev] == [5, 3]


def test_cmdsn_wraps_around():
    h = Harness(cmd_sn=0xFFFFFFFF)
    h.send(read_cmd(2, 0))
    ev = executes(h.send(read_cmd(1, 0xFFFFFFFF)))
    assert [e.initiator_task_tag for e in ev] == [1, 2]


def test_max_cmd_sn_window():
    h = Harness(cmd_sn=1)
    h.send(ScsiCommand(initiator_task_tag=1, cmd_sn=1))
    h.complete(1)
    (rsp,) = h.received()
    assert rsp.exp_cmd_sn == 2 and rsp.max_cmd_sn == 2 + 127


# ------------------------------------------------------------------ writes


def test_write_with_all_data_immediate():
    h = Harness(immediate_data=True, first_burst_length=65536)
    (ex,) = executes(h.send(write_cmd(1, 1, 4096, b"w" * 4096)))
    assert ex.data == b"w" * 4096 and not ex.data_pending and ex.data_out_length == 4096
    assert h.received() == []


def test_unsolicited_data_out_after_immediate():
    h = Harness(initial_r2t=False, first_burst_length=8192)
    (ex,) = executes(h.send(write_cmd(1, 1, 8192, b"a" * 4096, final=False)))
    assert ex.data_pending and ex.data is None
    assert h.received() == []  # everything is unsolicited: no R2T
    ev = h.send(
        DataOut(final=True, initiator_task_tag=1, data_sn=0, buffer_offset=4096, data=b"b" * 4096)
    )
    (ready,) = of(ev, DataOutReady)
    assert ready.data == b"a" * 4096 + b"b" * 4096


def test_r2t_sequence_honours_burst_and_outstanding():
    h = Harness(initial_r2t=True, max_burst_length=4096, max_outstanding_r2t=2)
    (ex,) = executes(h.send(write_cmd(1, 1, 4096 * 2 + 100)))
    assert ex.data_pending
    r1, r2 = h.received()
    assert isinstance(r1, R2T) and isinstance(r2, R2T)
    assert (r1.r2t_sn, r1.buffer_offset, r1.desired_data_transfer_length) == (0, 0, 4096)
    assert (r2.r2t_sn, r2.buffer_offset, r2.desired_data_transfer_length) == (1, 4096, 4096)
    assert r1.target_transfer_tag != r2.target_transfer_tag != RESERVED_TAG
    assert r1.stat_sn == 100 and r1.exp_cmd_sn == 2
    # Answer the first R2T in two PDUs.
    h.send(
        DataOut(
            final=False,
            initiator_task_tag=1,
            target_transfer_tag=r1.target_transfer_tag,
            data_sn=0,
            buffer_offset=0,
            data=b"1" * 2048,
        )
    )
    assert h.received() == []
    h.send(
        DataOut(
            final=True,
            initiator_task_tag=1,
            target_transfer_tag=r1.target_transfer_tag,
            data_sn=1,
            buffer_offset=2048,
            data=b"1" * 2048,
        )
    )
    (r3,) = h.received()
    assert (r3.r2t_sn, r3.buffer_offset, r3.desired_data_transfer_length) == (2, 8192, 100)
    h.send(
        DataOut(
            final=True,
            initiator_task_tag=1,
            target_transfer_tag=r2.target_transfer_tag,
            data_sn=0,
            buffer_offset=4096,
            data=b"2" * 4096,
        )
    )
    ev = h.send(
        DataOut(
            final=True,
            initiator_task_tag=1,
            target_transfer_tag=r3.target_transfer_tag,
            data_sn=0,
            buffer_offset=8192,
            data=b"3" * 100,
        )
    )
    (ready,) = of(ev, DataOutReady)
    assert ready.data == b"1" * 4096 + b"2" * 4096 + b"3" * 100
    h.complete(1)
    (rsp,) = h.received()
    assert isinstance(rsp, ScsiResponsePdu) and rsp.exp_data_sn == 3


def test_r2t_after_immediate_data_when_initial_r2t():
    h = Harness(initial_r2t=True, max_burst_length=65536)
    h.send(write_cmd(1, 1, 8192, b"i" * 1000))
    (r,) = h.received()
    assert (r.buffer_offset, r.desired_data_transfer_length) == (1000, 7192)


def test_r2t_after_first_burst_when_unsolicited():
    h = Harness(initial_r2t=False, first_burst_length=4096, max_burst_length=65536)
    h.send(write_cmd(1, 1, 16384, b"i" * 1024, final=False))
    (r,) = h.received()
    assert (r.buffer_offset, r.desired_data_transfer_length) == (4096, 12288)


def test_held_write_buffers_unsolicited_data():
    h = Harness(cmd_sn=1, initial_r2t=False, first_burst_length=8192)
    h.send(write_cmd(2, 2, 8192, b"a" * 4096, final=False))
    h.send(
        DataOut(final=True, initiator_task_tag=2, data_sn=0, buffer_offset=4096, data=b"b" * 4096)
    )
    ev = executes(h.send(read_cmd(1, 1)))
    assert [e.initiator_task_tag for e in ev] == [1, 2]
    assert ev[1].data == b"a" * 4096 + b"b" * 4096


def test_data_out_errors_are_rejected():
    h = Harness(initial_r2t=True, max_burst_length=4096)
    h.send(write_cmd(1, 1, 4096))
    (r,) = h.received()
    ttt = r.target_transfer_tag
    for bad in (
        DataOut(initiator_task_tag=1, target_transfer_tag=ttt, data_sn=1, data=b"x" * 512),
        DataOut(initiator_task_tag=1, target_transfer_tag=ttt, buffer_offset=512, data=b"x" * 512),
        DataOut(initiator_task_tag=1, target_transfer_tag=ttt, data=b"x" * 8192),
        DataOut(initiator_task_tag=1, target_transfer_tag=ttt + 99, data=b"x"),
        DataOut(initiator_task_tag=1, data=b"x" * 512),  # unsolicited not allowed
        DataOut(initiator_task_tag=77, target_transfer_tag=ttt, data=b"x"),
    ):
        assert of(h.send(bad), DataOutReady) == []
        (rej,) = h.received()
        assert isinstance(rej, Reject), bad
        assert rej.reason in (RejectReason.PROTOCOL_ERROR, RejectReason.INVALID_PDU_FIELD)
        assert rej.data[:48] == encode_pdu(bad)[:48]
    ev = h.send(
        DataOut(final=True, initiator_task_tag=1, target_transfer_tag=ttt, data=b"ok" * 2048)
    )
    assert of(ev, DataOutReady)[0].data == b"ok" * 2048


def test_immediate_data_rules():
    h = Harness(immediate_data=False)
    h.send(write_cmd(1, 1, 4096, b"x" * 512))
    (rej,) = h.received()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.PROTOCOL_ERROR
    # The rejected command still used its CmdSN: the next one runs.
    assert executes(h.send(read_cmd(2, 2)))
    h2 = Harness(first_burst_length=1024)
    h2.send(write_cmd(1, 1, 4096, b"x" * 2048))  # more than FirstBurstLength
    assert isinstance(h2.received()[0], Reject)


def test_bidirectional_rejected_cleanly():
    h = Harness()
    h.send(
        ScsiCommand(
            read=True, write=True, initiator_task_tag=1, cmd_sn=1, expected_data_transfer_length=512
        )
    )
    (rej,) = h.received()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.COMMAND_NOT_SUPPORTED
    assert rej.exp_cmd_sn == 2
    assert executes(h.send(read_cmd(2, 2)))


def test_duplicate_itt_rejected():
    h = Harness()
    h.send(read_cmd(1, 1))
    h.send(read_cmd(1, 2))
    (rej,) = h.received()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.TASK_IN_PROGRESS


def test_write_completing_early_drops_data_state():
    h = Harness(initial_r2t=True, max_burst_length=4096)
    h.send(write_cmd(1, 1, 8192))
    h.received()
    ev = h.complete(1, 2, b"", b"\x70" + bytes(17))
    assert of(ev, DataOutAborted)
    assert isinstance(h.received()[0], ScsiResponsePdu)
    h.send(DataOut(initiator_task_tag=1, target_transfer_tag=1, data=b"x" * 512))
    assert h.received() == []  # late data of an answered task is dropped quietly


# ------------------------------------------------------------------ NOP, Text


def test_nop_ping():
    h = Harness()
    h.send(NopOut(immediate=True, initiator_task_tag=7, cmd_sn=1, data=b"hello"))
    (nop,) = h.received()
    assert isinstance(nop, NopIn)
    assert nop.initiator_task_tag == 7 and nop.target_transfer_tag == RESERVED_TAG
    assert nop.data == b"hello" and nop.stat_sn == 100
    h.send(NopOut(immediate=True, initiator_task_tag=RESERVED_TAG, cmd_sn=1))
    assert h.received() == []


def test_non_immediate_nop_takes_cmdsn():
    h = Harness(cmd_sn=1)
    h.send(NopOut(immediate=False, initiator_task_tag=7, cmd_sn=1))
    assert h.received()[0].exp_cmd_sn == 2


def test_send_targets_all():
    h = Harness(targets=(TARGET, "iqn.2026-11.test:other"))
    h.send(TextRequest(immediate=True, initiator_task_tag=3, cmd_sn=1, data=b"SendTargets=All\0"))
    (rsp,) = h.received()
    assert isinstance(rsp, TextResponse) and rsp.final and not rsp.cont
    assert parse_text(rsp.data) == [
        ("TargetName", "iqn.2026-11.test:other"),
        ("TargetAddress", "127.0.0.1:3260,1"),
        ("TargetName", TARGET),
        ("TargetAddress", "127.0.0.1:3260,1"),
    ]


def test_send_targets_long_response_continues():
    names = [f"iqn.2026-11.test:target-with-a-long-name-{i:04d}" for i in range(100)]
    h = Harness(targets=names, initiator_max_recv_data_segment_length=512)
    h.send(TextRequest(immediate=True, initiator_task_tag=3, data=b"SendTargets=All\0"))
    body = b""
    for _ in range(100):
        (rsp,) = h.received()
        body += rsp.data
        if rsp.final:
            break
        assert rsp.cont and len(rsp.data) == 512
        h.send(
            TextRequest(
                immediate=True, initiator_task_tag=3, target_transfer_tag=rsp.target_transfer_tag
            )
        )
    assert [v for k, v in parse_text(body) if k == "TargetName"] == sorted(names)


def test_text_unknown_key_not_understood():
    h = Harness()
    h.send(TextRequest(immediate=True, initiator_task_tag=3, data=b"Foo=1\0"))
    assert parse_text(h.received()[0].data) == [("Foo", "NotUnderstood")]


def test_discovery_session_rejects_scsi_commands():
    h = Harness()
    h.conn.params.session_type = SessionType.DISCOVERY
    h.send(read_cmd(1, 1))
    (rej,) = h.received()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.COMMAND_NOT_SUPPORTED


# ------------------------------------------------------------------ TMF


def tmf(fn, itt=50, ref=RESERVED_TAG, ref_cmd_sn=0, cmd_sn=1, lun=0):
    return TaskManagementRequest(
        immediate=True,
        function=fn,
        initiator_task_tag=itt,
        referenced_task_tag=ref,
        ref_cmd_sn=ref_cmd_sn,
        cmd_sn=cmd_sn,
        lun=lun,
    )


def test_abort_task_waits_for_running_task_and_suppresses_its_response():
    h = Harness()
    h.send(read_cmd(1, 1))
    h.send(tmf(TmfFunction.ABORT_TASK, ref=1, ref_cmd_sn=1, cmd_sn=2))
    assert h.received() == []  # waits for the in-flight command
    h.complete(1, 0, b"x" * 4096)
    (rsp,) = h.received()
    assert isinstance(rsp, TaskManagementResponse)
    assert rsp.response == TmfResponse.FUNCTION_COMPLETE and rsp.initiator_task_tag == 50


def test_abort_task_of_write_waiting_for_data():
    h = Harness(initial_r2t=True)
    h.send(write_cmd(1, 1, 8192))
    h.received()
    ev = h.send(tmf(TmfFunction.ABORT_TASK, ref=1, ref_cmd_sn=1, cmd_sn=2))
    assert of(ev, DataOutAborted)
    h.complete(1, 2, b"", b"\x70" + bytes(17))
    (rsp,) = h.received()
    assert isinstance(rsp, TaskManagementResponse) and rsp.response == 0


def test_abort_unknown_task():
    h = Harness(cmd_sn=5)
    h.send(tmf(TmfFunction.ABORT_TASK, ref=99, ref_cmd_sn=3, cmd_sn=5))
    assert h.received()[0].response == TmfResponse.TASK_DOES_NOT_EXIST


def test_abort_task_not_yet_arrived_in_window():
    h = Harness(cmd_sn=5)
    h.send(read_cmd(2, 6))  # held: CmdSN 5 missing
    h.send(tmf(TmfFunction.ABORT_TASK, ref=1, ref_cmd_sn=5, cmd_sn=7))
    (rsp,) = h.received()
    assert rsp.response == TmfResponse.FUNCTION_COMPLETE
    # CmdSN 5 now counts as received: the held command 6 was delivered.
    assert [e.initiator_task_tag for e in executes(h.events)] == [2]


def test_abort_held_task_is_never_delivered():
    h = Harness(cmd_sn=1)
    h.send(read_cmd(2, 2))
    h.send(tmf(TmfFunction.ABORT_TASK, ref=2, ref_cmd_sn=2, cmd_sn=1))
    assert h.received()[0].response == TmfResponse.FUNCTION_COMPLETE
    ev = executes(h.send(read_cmd(1, 1)))
    assert [e.initiator_task_tag for e in ev] == [1]


def test_lun_reset_aborts_tasks_on_that_lun_only():
    h = Harness()
    h.send(read_cmd(1, 1, lun=lun_to_field(0)), read_cmd(2, 2, lun=lun_to_field(1)))
    h.send(tmf(TmfFunction.LOGICAL_UNIT_RESET, cmd_sn=3, lun=lun_to_field(0)))
    assert h.received() == []
    h.complete(2, 0, b"y" * 4096)
    assert isinstance(h.received()[0], DataIn)
    h.complete(1, 0, b"x" * 4096)
    (rsp,) = h.received()
    assert isinstance(rsp, TaskManagementResponse) and rsp.response == 0


def test_lun_does_not_exist():
    h = Harness()
    h.conn.lun_exists = lambda target, lun: lun == 0
    h.send(tmf(TmfFunction.ABORT_TASK_SET, lun=lun_to_field(4)))
    assert h.received()[0].response == TmfResponse.LUN_DOES_NOT_EXIST


def test_other_tmfs():
    h = Harness()
    h.send(tmf(TmfFunction.TASK_REASSIGN))
    assert h.received()[0].response == TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED
    h.send(tmf(TmfFunction.CLEAR_ACA))
    assert h.received()[0].response == TmfResponse.FUNCTION_NOT_SUPPORTED
    h.send(tmf(TmfFunction.TARGET_WARM_RESET))
    assert h.received()[0].response == TmfResponse.FUNCTION_COMPLETE
    h.send(tmf(100))
    assert h.received()[0].response == TmfResponse.FUNCTION_REJECTED
    ev = h.send(tmf(TmfFunction.TARGET_COLD_RESET))
    assert h.received()[0].response == TmfResponse.FUNCTION_COMPLETE
    assert of(ev, CloseConnection)


# ------------------------------------------------------------------ Logout


def test_logout_closes_after_response():
    h = Harness()
    ev = h.send(LogoutRequest(immediate=True, reason_code=0, initiator_task_tag=9, cmd_sn=1))
    (rsp,) = h.received()
    assert isinstance(rsp, LogoutResponse) and rsp.response == 0 and rsp.initiator_task_tag == 9
    assert of(ev, CloseConnection) and h.conn.closed
    assert h.send(NopOut(initiator_task_tag=1)) == []


def test_logout_waits_for_running_commands():
    h = Harness()
    h.send(read_cmd(1, 1))
    ev = h.send(LogoutRequest(immediate=True, reason_code=0, initiator_task_tag=9, cmd_sn=2))
    assert not of(ev, CloseConnection) and h.received() == []
    ev = h.complete(1, 0, b"x" * 4096)
    din, rsp = h.received()
    assert isinstance(din, DataIn) and isinstance(rsp, LogoutResponse)
    assert of(ev, CloseConnection)


def test_logout_for_recovery_not_supported():
    h = Harness()
    h.send(LogoutRequest(immediate=True, reason_code=2, initiator_task_tag=9))
    (rsp,) = h.received()
    assert rsp.response == 2 and not h.conn.closed


# ------------------------------------------------------------------ Reject


def test_snack_rejected():
    h = Harness()
    h.send(Snack(type=0, initiator_task_tag=1))
    (rej,) = h.received()
    assert isinstance(rej, Reject) and rej.reason == RejectReason.PROTOCOL_ERROR


def test_target_opcode_and_login_in_ffp_rejected():
    h = Harness()
    h.send(NopIn(initiator_task_tag=1))
    h.send(LoginRequest())
    a, b = h.received()
    assert isinstance(a, Reject) and isinstance(b, Reject)
    assert a.data[0] == 0x20 and b.data[0] & 0x3F == 0x03
    assert a.stat_sn == 100 and b.stat_sn == 101


def test_unknown_opcode_rejected_and_connection_survives():
    h = Harness()
    raw = bytearray(encode_pdu(NopOut(initiator_task_tag=1)))
    raw[0] = 0x1B
    h.raw(bytes(raw))
    (rej,) = h.received()
    assert rej.reason == RejectReason.COMMAND_NOT_SUPPORTED and not h.conn.closed
    h.send(NopOut(initiator_task_tag=2))
    assert isinstance(h.received()[0], NopIn)


def test_oversized_pdu_drops_connection():
    h = Harness(target_max_recv_data_segment_length=1024)
    ev = h.send(NopOut(initiator_task_tag=2, data=b"x" * 2048))
    assert of(ev, CloseConnection)
    assert isinstance(h.received()[0], Reject)


def test_data_digest_error_rejected_then_closed():
    h = Harness(header_digest=True, data_digest=True)
    raw = bytearray(encode_pdu(NopOut(initiator_task_tag=2, data=b"abcd"), True, True))
    raw[-5] ^= 1
    ev = h.raw(bytes(raw))
    (rej,) = h.received()
    assert rej.reason == RejectReason.DATA_DIGEST_ERROR and of(ev, CloseConnection)


def test_read_with_digests():
    h = Harness(header_digest=True, data_digest=True)
    h.send(read_cmd(1, 1, edtl=1000))
    h.complete(1, 0, b"z" * 1000)
    (din,) = h.received()
    assert din.data == b"z" * 1000 and din.status_present


# ------------------------------------------------------------------ login to FFP


def test_login_through_connection_enables_digests():
    from targetcli_preserve.iscsi.events import LoginComplete
    from targetcli_preserve.iscsi.pdu import LoginResponse, PduDecoder
    from targetcli_preserve.iscsi.session import Connection
    from targetcli_preserve.iscsi.text import encode_text

    conn = Connection({TARGET})
    ev = conn.receive_data(
        encode_pdu(
            LoginRequest(
                transit=True,
                csg=1,
                nsg=3,
                isid=1,
                initiator_task_tag=1,
                cmd_sn=5,
                data=encode_text(
                    [
                        ("InitiatorName", "iqn.x"),
                        ("TargetName", TARGET),
                        ("HeaderDigest", "CRC32C"),
                        ("DataDigest", "CRC32C"),
                    ]
                ),
            )
        )
    )
    assert of(ev, LoginComplete)
    (rsp,) = PduDecoder(0xFFFFFF).feed(b"".join(conn.data_to_send()))
    assert isinstance(rsp, LoginResponse) and rsp.transit and rsp.tsih != 0
    conn.receive_data(encode_pdu(NopOut(initiator_task_tag=4, cmd_sn=5), True, True))
    (nop,) = PduDecoder(0xFFFFFF, True, True).feed(b"".join(conn.data_to_send()))
    assert isinstance(nop, NopIn) and nop.exp_cmd_sn == 5


def test_non_login_pdu_during_login_closes():
    from targetcli_preserve.iscsi.session import Connection

    conn = Connection({TARGET})
    ev = conn.receive_data(encode_pdu(NopOut(initiator_task_tag=1)))
    assert of(ev, CloseConnection) and conn.closed
