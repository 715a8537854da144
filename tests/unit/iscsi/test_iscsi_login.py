"""Login negotiation: stages, keys, bad values, unknown keys, targets, discovery."""

from __future__ import annotations

import pytest

from targetcli_preserve.iscsi.login import (
    LoginNegotiator,
    LoginOutcome,
    SessionType,
    TargetLimits,
)
from targetcli_preserve.iscsi.pdu import LoginRequest, LoginStatus, Stage
from targetcli_preserve.iscsi.text import TextFormatError, encode_text, parse_text

T = "iqn.2026-11.test:t"
INIT = "iqn.2026-11.test:init"


def req(
    pairs,
    csg=1,
    nsg=3,
    transit=True,
    cont=False,
    isid=0x400000000001,
    tsih=0,
    cmd_sn=10,
    itt=1,
    vmin=0,
):
    return LoginRequest(
        transit=transit,
        cont=cont,
        csg=csg,
        nsg=nsg,
        version_max=0,
        version_min=vmin,
        isid=isid,
        tsih=tsih,
        initiator_task_tag=itt,
        cmd_sn=cmd_sn,
        data=encode_text(pairs) if isinstance(pairs, list) else pairs,
    )


def first(extra=(), **kw):
    return req([("InitiatorName", INIT), ("TargetName", T), *extra], **kw)


def keys(rsp):
    return dict(parse_text(rsp.data))


def status(rsp):
    return rsp.status_class << 8 | rsp.status_detail


def neg(**limits):
    return LoginNegotiator(
        {T}, TargetLimits(**limits), portal_group_tag=7, allocate_tsih=lambda: 42
    )


def test_text_codec():
    assert parse_text(b"A=1\0B=x,y\0") == [("A", "1"), ("B", "x,y")]
    assert parse_text(b"") == []
    assert encode_text([("A", "1")]) == b"A=1\0"
    for bad in (b"A=1", b"noequals\0", b"=v\0", b"K" * 64 + b"=v\0"):
        with pytest.raises(TextFormatError):
            parse_text(bad)


def test_security_then_operational_then_ffp():
    n = neg()
    rsp, out = n.receive(first([("AuthMethod", "None")], csg=0, nsg=1))
    assert out is LoginOutcome.CONTINUE
    assert status(rsp) == 0 and rsp.transit and rsp.csg == 0 and rsp.nsg == 1
    k = keys(rsp)
    assert k["AuthMethod"] == "None" and k["TargetPortalGroupTag"] == "7"
    assert rsp.tsih == 0 and rsp.exp_cmd_sn == 10
    rsp2, out = n.receive(
        req([("HeaderDigest", "CRC32C,None"), ("DataDigest", "None")], csg=1, nsg=3)
    )
    assert out is LoginOutcome.SUCCESS
    assert rsp2.transit and rsp2.csg == 1 and rsp2.nsg == 3 and rsp2.tsih == 42
    assert rsp2.stat_sn == rsp.stat_sn + 1
    k = keys(rsp2)
    assert k["HeaderDigest"] == "CRC32C" and k["DataDigest"] == "None"
    assert k["MaxRecvDataSegmentLength"] == "262144"  # declared even if not asked
    assert n.params.header_digest and not n.params.data_digest
    assert n.params.target_name == T and n.params.initiator_name == INIT
    assert n.stage is Stage.FULL_FEATURE_PHASE


def test_operational_keys_negotiated():
    n = neg()
    pairs = [
        ("MaxRecvDataSegmentLength", "65536"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "8192"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxOutstandingR2T", "8"),
        ("DataPDUInOrder", "No"),
        ("DataSequenceInOrder", "No"),
        ("DefaultTime2Wait", "5"),
        ("DefaultTime2Retain", "10"),
        ("ErrorRecoveryLevel", "2"),
        ("MaxConnections", "4"),
        ("IFMarker", "Yes"),
        ("OFMarker", "No"),
        ("InitiatorAlias", "host1"),
    ]
    rsp, out = n.receive(first(pairs))
    assert out is LoginOutcome.SUCCESS
    k = keys(rsp)
    assert k["MaxRecvDataSegmentLength"] == "262144"  # ours, declarative
    assert k["MaxBurstLength"] == "1048576"  # min
    assert k["FirstBurstLength"] == "8192"
    assert k["InitialR2T"] == "No"  # OR of No and No
    assert k["ImmediateData"] == "Yes"
    assert k["MaxOutstandingR2T"] == "4"
    assert k["DataPDUInOrder"] == "Yes" and k["DataSequenceInOrder"] == "Yes"  # OR
    assert k["DefaultTime2Wait"] == "5"  # max
    assert k["DefaultTime2Retain"] == "0"  # min
    assert k["ErrorRecoveryLevel"] == "0" and k["MaxConnections"] == "1"
    assert k["IFMarker"] == "No" and k["OFMarker"] == "No"
    assert "InitiatorAlias" not in k
    p = n.params
    assert p.initiator_max_recv_data_segment_length == 65536
    assert p.max_burst_length == 1048576 and p.first_burst_length == 8192
    assert not p.initial_r2t and p.immediate_data and p.max_outstanding_r2t == 4
    assert p.error_recovery_level == 0 and p.initiator_alias == "host1"


def test_initial_r2t_yes_wins_and_immediate_no_wins():
    n = neg()
    rsp, _ = n.receive(first([("InitialR2T", "Yes"), ("ImmediateData", "No")]))
    assert keys(rsp)["InitialR2T"] == "Yes" and keys(rsp)["ImmediateData"] == "No"
    assert n.params.initial_r2t and not n.params.immediate_data


def test_first_burst_clamped_to_max_burst():
    n = neg()
    n.receive(first([("MaxBurstLength", "4096"), ("FirstBurstLength", "65536")]))
    assert n.params.first_burst_length == 4096


@pytest.mark.parametrize(
    "key,value",
    [
        ("MaxBurstLength", "100"),
        ("MaxBurstLength", "abc"),
        ("FirstBurstLength", "16777216"),
        ("MaxOutstandingR2T", "0"),
        ("DefaultTime2Wait", "3601"),
        ("ErrorRecoveryLevel", "3"),
        ("MaxRecvDataSegmentLength", "511"),
        ("InitialR2T", "Maybe"),
        ("ImmediateData", "yes"),
        ("HeaderDigest", "MD5"),
        ("DataDigest", "SHA1,MD5"),
        ("MaxConnections", "0"),
    ],
)
def test_bad_values_get_reject(key, value):
    rsp, out = neg().receive(first([(key, value)]))
    assert keys(rsp)[key] == "Reject"
    assert out is LoginOutcome.SUCCESS


def test_hex_numbers_accepted():
    n = neg()
    rsp, _ = n.receive(first([("MaxBurstLength", "0x1000")]))
    assert keys(rsp)["MaxBurstLength"] == "4096"


def test_unknown_keys_not_understood():
    rsp, out = neg().receive(first([("X-com.example.foo", "1"), ("FancyKey", "2")]))
    assert keys(rsp)["X-com.example.foo"] == "NotUnderstood"
    assert keys(rsp)["FancyKey"] == "NotUnderstood"
    assert out is LoginOutcome.SUCCESS


def test_unknown_target_not_found():
    rsp, out = neg().receive(req([("InitiatorName", INIT), ("TargetName", "iqn.nope")]))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.NOT_FOUND == 0x0203


def test_missing_initiator_name():
    rsp, out = neg().receive(req([("TargetName", T)]))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.MISSING_PARAMETER


def test_missing_target_name_on_normal_session():
    rsp, out = neg().receive(req([("InitiatorName", INIT)]))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.MISSING_PARAMETER


def test_chap_alone_is_authentication_failure():
    rsp, out = neg().receive(first([("AuthMethod", "CHAP")], csg=0, nsg=1))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.AUTHENTICATION_FAILURE


def test_chap_or_none_picks_none():
    rsp, out = neg().receive(first([("AuthMethod", "CHAP,None")], csg=0, nsg=1))
    assert out is LoginOutcome.CONTINUE and keys(rsp)["AuthMethod"] == "None"


def test_authmethod_outside_security_stage_fails():
    rsp, out = neg().receive(first([("AuthMethod", "None")]))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.INITIATOR_ERROR


def test_discovery_session():
    n = neg()
    rsp, out = n.receive(req([("InitiatorName", INIT), ("SessionType", "Discovery")]))
    assert out is LoginOutcome.SUCCESS
    assert n.params.session_type is SessionType.DISCOVERY
    assert "TargetPortalGroupTag" not in keys(rsp)


def test_bad_session_type():
    rsp, out = neg().receive(req([("InitiatorName", INIT), ("SessionType", "Weird")]))
    assert out is LoginOutcome.FAILURE
    assert status(rsp) == LoginStatus.SESSION_TYPE_NOT_SUPPORTED


@pytest.mark.parametrize(
    "kw",
    [
        {"csg": 1, "nsg": 1},  # NSG must be after CSG
        {"csg": 1, "nsg": 2},  # reserved stage
        {"csg": 3, "nsg": 3},  # CSG FFP is not a login stage
        {"cont": True},  # T and C together
    ],
)
def test_bad_stage_transitions(kw):
    rsp, out = neg().receive(first(**kw))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.INITIATOR_ERROR


def test_csg_must_follow_stage():
    n = neg()
    n.receive(first([("AuthMethod", "None")], csg=0, nsg=1))
    _rsp, out = n.receive(req([], csg=0, nsg=1))  # went to operational already
    assert out is LoginOutcome.FAILURE


def test_no_transit_stays_in_stage():
    n = neg()
    rsp, out = n.receive(first([("AuthMethod", "None")], csg=0, nsg=1, transit=False))
    assert out is LoginOutcome.CONTINUE and not rsp.transit
    rsp, out = n.receive(req([], csg=0, nsg=3))
    assert out is LoginOutcome.SUCCESS


def test_unsupported_version():
    rsp, out = neg().receive(first(vmin=1))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.UNSUPPORTED_VERSION


def test_nonzero_tsih_session_does_not_exist():
    rsp, out = neg().receive(first(tsih=5))
    assert out is LoginOutcome.FAILURE
    assert status(rsp) == LoginStatus.SESSION_DOES_NOT_EXIST


def test_repeated_key_is_an_error():
    _rsp, out = neg().receive(first([("MaxBurstLength", "512"), ("MaxBurstLength", "1024")]))
    assert out is LoginOutcome.FAILURE


def test_renegotiating_key_in_later_request_is_an_error():
    n = neg()
    n.receive(first([("MaxBurstLength", "512")], transit=False))
    _rsp, out = n.receive(req([("MaxBurstLength", "1024")]))
    assert out is LoginOutcome.FAILURE


def test_text_continuation_across_requests():
    n = neg()
    text = encode_text([("InitiatorName", INIT), ("TargetName", T), ("MaxBurstLength", "4096")])
    rsp, out = n.receive(req(text[:10], transit=False, cont=True))
    assert out is LoginOutcome.CONTINUE and rsp.data == b"" and not rsp.transit
    rsp, out = n.receive(req(text[10:]))
    assert out is LoginOutcome.SUCCESS and keys(rsp)["MaxBurstLength"] == "4096"


def test_garbage_text_is_initiator_error():
    rsp, out = neg().receive(req(b"\xff\xfe=\x00garbage"))
    assert out is LoginOutcome.FAILURE and status(rsp) == LoginStatus.INITIATOR_ERROR


def test_isid_change_during_login():
    n = neg()
    n.receive(first(transit=False))
    _rsp, out = n.receive(req([], isid=0x999))
    assert out is LoginOutcome.FAILURE
