"""Login phase (RFC 7143 sections 6 and 13): text keys, stage transitions, negotiation.

Sans-I/O: :class:`LoginNegotiator` takes Login Request PDUs and returns Login Response
PDUs plus an outcome. It owns the CSG/NSG/T/C rules, ISID/TSIH,
the session type and the negotiated :class:`SessionParams`. Only AuthMethod=None is
offered; the target's MaxRecvDataSegmentLength and the other limits come from
:class:`TargetLimits`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Container
from dataclasses import dataclass, field, fields

from targetcli_preserve.iscsi.codes import LoginStatus, Stage
from targetcli_preserve.iscsi.pdus import LoginRequest, LoginResponse
from targetcli_preserve.iscsi.text import TextFormatError, encode_text, parse_text

_log = logging.getLogger(__name__)


class SessionType(enum.Enum):
    NORMAL = "Normal"
    DISCOVERY = "Discovery"


class LoginOutcome(enum.Enum):
    CONTINUE = enum.auto()  # more Login Requests expected
    SUCCESS = enum.auto()  # last response sent: full feature phase starts
    FAILURE = enum.auto()  # a failure status was sent: close the connection


@dataclass(frozen=True, slots=True)
class TargetLimits:
    """What this target offers; the negotiated values can only be at most these."""

    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 262144
    initial_r2t: bool = False
    immediate_data: bool = True
    max_outstanding_r2t: int = 4
    default_time2wait: int = 2
    default_time2retain: int = 0
    queue_depth: int = 128  # CmdSN window (MaxCmdSN - ExpCmdSN + 1)
    target_alias: str = ""


_DEFAULT_LIMITS = TargetLimits()


@dataclass(slots=True)
class SessionParams:
    """Negotiated operational parameters (RFC 7143 section 13), defaults per the RFC."""

    header_digest: bool = False
    data_digest: bool = False
    # Ours: the most we accept in one PDU. Theirs: the most we may send them.
    target_max_recv_data_segment_length: int = 8192
    initiator_max_recv_data_segment_length: int = 8192
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    initial_r2t: bool = True
    immediate_data: bool = True
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    default_time2wait: int = 2
    default_time2retain: int = 20
    error_recovery_level: int = 0
    max_connections: int = 1
    session_type: SessionType = SessionType.NORMAL
    initiator_name: str = ""
    initiator_alias: str = ""
    target_name: str = ""
    isid: int = 0
    tsih: int = 0
    extra: dict[str, str] = field(default_factory=dict)


_NUMERIC = {
    # key: (lo, hi, function)  -- RFC 7143 13.x; function "min"/"max"
    "MaxBurstLength": (512, 0xFFFFFF, "min"),
    "FirstBurstLength": (512, 0xFFFFFF, "min"),
    "MaxOutstandingR2T": (1, 65535, "min"),
    "DefaultTime2Wait": (0, 3600, "max"),
    "DefaultTime2Retain": (0, 3600, "min"),
    "ErrorRecoveryLevel": (0, 2, "min"),
    "MaxConnections": (1, 65535, "min"),
}
_BOOLEAN = {
    # key: "or" (result Yes if either says Yes) / "and"  (RFC 7143 6.2.2)
    "InitialR2T": "or",
    "ImmediateData": "and",
    "DataPDUInOrder": "or",
    "DataSequenceInOrder": "or",
    "IFMarker": "and",
    "OFMarker": "and",
}
_DIGESTS = ("HeaderDigest", "DataDigest")
_DECLARATIVE_IGNORED = ("InitiatorAlias",)
_SECURITY_ONLY = ("AuthMethod",)
_TARGET_ONLY = ("TargetAlias", "TargetAddress", "TargetPortalGroupTag")
_AUTH_METHODS = ("KRB5", "SPKM1", "SPKM2", "SRP", "CHAP", "None")
_ANSWERS = ("NotUnderstood", "Irrelevant", "Reject")


def _parse_number(value: str) -> int:
    if value.lower().startswith("0x"):
        return int(value, 0)
    if not value.isdigit():
        raise ValueError(value)
    return int(value)


class LoginFailed(Exception):
    def __init__(self, status: LoginStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoginNegotiator:
    """One connection's login phase, from the first Login Request to FFP or failure.

    ``targets`` answers whether a TargetName is served here. ``allocate_tsih`` gives a
    new session's TSIH (RFC 7143 11.13.4: set in the final response)."""

    def __init__(
        self,
        targets: Container[str],
        limits: TargetLimits = _DEFAULT_LIMITS,
        portal_group_tag: int = 1,
        allocate_tsih: Callable[[], int] | None = None,
    ) -> None:
        self.targets = targets
        self.limits = limits
        self.portal_group_tag = portal_group_tag
        self._allocate_tsih = allocate_tsih or (lambda: 1)
        self.params = SessionParams()
        self.stage: Stage | None = None  # current stage once the first request is seen
        self.stat_sn = 1
        self.cmd_sn = 0
        self.initiator_task_tag = 0
        self.isid = 0
        self.cid = 0
        self._first = True
        self._pending = b""  # text of a request continued with the C bit
        self._seen: set[str] = set()
        self._declared_mrdsl = False
        self._tpgt_sent = False

    # ------------------------------------------------------------------ API

    def receive(self, req: LoginRequest) -> tuple[LoginResponse, LoginOutcome]:
        try:
            return self._receive(req)
        except LoginFailed as err:
            return self._failure(req, err.status), LoginOutcome.FAILURE

    # ------------------------------------------------------------------ internals

    def _response(
        self,
        req: LoginRequest,
        *,
        transit: bool = False,
        nsg: int | None = None,
        data: bytes = b"",
        status: LoginStatus = LoginStatus.SUCCESS,
    ) -> LoginResponse:
        """The response to ``req``; StatSN advances with each (RFC 7143 11.13)."""
        rsp = LoginResponse(
            transit=transit,
            csg=req.csg,
            nsg=req.nsg if nsg is None else nsg,
            isid=req.isid,
            initiator_task_tag=req.initiator_task_tag,
            stat_sn=self.stat_sn,
            exp_cmd_sn=self.cmd_sn,
            max_cmd_sn=(self.cmd_sn + self.limits.queue_depth - 1) & 0xFFFFFFFF,
            status_class=status >> 8,
            status_detail=status & 0xFF,
            data=data,
        )
        self.stat_sn = (self.stat_sn + 1) & 0xFFFFFFFF
        return rsp

    def _failure(self, req: LoginRequest, status: LoginStatus) -> LoginResponse:
        # RFC 7143 11.13.5: on a non-zero status the other fields are reserved-ish; keep
        # the ISID/ITT so the initiator can match the response.
        return self._response(req, status=status)

    def _receive(self, req: LoginRequest) -> tuple[LoginResponse, LoginOutcome]:
        if self._first:
            # RFC 7143 11.12.4: Version-min must not exceed our version (0).
            if req.version_min > 0:
                raise LoginFailed(LoginStatus.UNSUPPORTED_VERSION, "unsupported version")
            self.isid = req.isid
            self.cid = req.cid
            self.cmd_sn = req.cmd_sn
            self.initiator_task_tag = req.initiator_task_tag
            if req.tsih != 0:
                # Adding a connection to an existing session (MaxConnections=1 here).
                raise LoginFailed(LoginStatus.SESSION_DOES_NOT_EXIST, "unknown TSIH")
        elif req.isid != self.isid or req.tsih != 0:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "ISID/TSIH changed during login")
        else:
            self.cmd_sn = req.cmd_sn
        if req.csg not in (Stage.SECURITY_NEGOTIATION, Stage.LOGIN_OPERATIONAL_NEGOTIATION):
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "invalid CSG")
        if self.stage is not None and req.csg != self.stage:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "CSG does not match the stage")
        self.stage = Stage(req.csg)
        # RFC 7143 11.12.2: T and C must not both be set.
        if req.transit and req.cont:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "T and C both set")
        if req.transit and (req.nsg <= req.csg or req.nsg == 2):
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "invalid NSG")

        if req.cont:
            # Text continuation (RFC 7143 6.2): collect, answer with an empty response.
            self._pending += req.data
            if len(self._pending) > 65536:
                raise LoginFailed(LoginStatus.OUT_OF_RESOURCES, "login text too long")
            return self._response(req, nsg=0), LoginOutcome.CONTINUE
        data = self._pending + req.data
        self._pending = b""
        try:
            pairs = parse_text(data)
        except TextFormatError as err:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, str(err)) from err

        answers = self._negotiate(pairs, first=self._first)
        _log.debug("login keys %s -> %s", pairs, answers)
        self._first = False

        transit = req.transit
        final = transit and req.nsg == Stage.FULL_FEATURE_PHASE
        if final:
            self._finish_checks()
            if not self._declared_mrdsl:
                answers.append(
                    ("MaxRecvDataSegmentLength", str(self.limits.max_recv_data_segment_length))
                )
                self._declared_mrdsl = True
        rsp = self._response(
            req, transit=transit, nsg=req.nsg if transit else 0, data=encode_text(answers)
        )
        if not final:
            if transit:
                self.stage = Stage(req.nsg)
            return rsp, LoginOutcome.CONTINUE
        tsih = self._allocate_tsih()
        rsp.tsih = tsih
        p = self.params
        p.isid = self.isid
        p.tsih = tsih
        p.target_max_recv_data_segment_length = self.limits.max_recv_data_segment_length
        p.first_burst_length = min(p.first_burst_length, p.max_burst_length)  # RFC 7143 13.14
        self.stage = Stage.FULL_FEATURE_PHASE
        return rsp, LoginOutcome.SUCCESS

    def _finish_checks(self) -> None:
        p = self.params
        if not p.initiator_name:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        if p.session_type is SessionType.NORMAL and not p.target_name:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "TargetName missing")

    def _negotiate(self, pairs: list[tuple[str, str]], first: bool) -> list[tuple[str, str]]:
        p = self.params
        lim = self.limits
        answers: list[tuple[str, str]] = []
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            # RFC 7143 6.2: a key may be offered once per negotiation.
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "key repeated")
        values = dict(pairs)
        # Leading keys (RFC 7143 13.5, 13.6, 13.4): only meaningful in the first request.
        if first:
            name = values.get("InitiatorName", "")
            if not name:
                raise LoginFailed(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
            p.initiator_name = name
            st = values.get("SessionType", "Normal")
            try:
                p.session_type = SessionType(st)
            except ValueError as err:
                raise LoginFailed(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, st) from err
            if p.session_type is SessionType.NORMAL:
                tn = values.get("TargetName", "")
                if not tn:
                    raise LoginFailed(LoginStatus.MISSING_PARAMETER, "TargetName missing")
                if tn not in self.targets:
                    raise LoginFailed(LoginStatus.NOT_FOUND, f"no target {tn}")
                p.target_name = tn
            elif "TargetName" in values:
                p.target_name = values["TargetName"]
        for key, value in pairs:
            if key in ("InitiatorName", "SessionType", "TargetName"):
                if not first and key != "InitiatorName":
                    raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"{key} after first request")
                continue
            if value in _ANSWERS:
                continue  # answers to keys we never offer: nothing to do
            if key in self._seen:
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"{key} renegotiated")
            self._seen.add(key)
            answers.extend(self._negotiate_key(key, value))
        if first and p.session_type is SessionType.NORMAL and not self._tpgt_sent:
            # RFC 7143 13.9: returned in the first Login Response of a normal session.
            answers.append(("TargetPortalGroupTag", str(self.portal_group_tag)))
            if lim.target_alias:
                answers.append(("TargetAlias", lim.target_alias))
            self._tpgt_sent = True
        return answers

    def _negotiate_key(self, key: str, value: str) -> list[tuple[str, str]]:
        p = self.params
        lim = self.limits
        if key == "AuthMethod":
            if self.stage is not Stage.SECURITY_NEGOTIATION:
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, "AuthMethod outside security")
            offered = value.split(",")
            if "None" in offered:
                return [(key, "None")]
            # Only None is offered by this target: a required method we do not run is
            # an authentication failure (RFC 7143 11.13.5, 0x0201).
            raise LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, f"AuthMethod {value}")
        if key.startswith("CHAP_"):
            raise LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, "CHAP not configured")
        if key in _DIGESTS:
            offered = value.split(",")
            for choice in offered:
                if choice in ("None", "CRC32C"):
                    setattr(
                        p,
                        "header_digest" if key == "HeaderDigest" else "data_digest",
                        choice == "CRC32C",
                    )
                    return [(key, choice)]
            return [(key, "Reject")]  # RFC 7143 6.2.1: no acceptable value
        if key == "MaxRecvDataSegmentLength":
            # Declarative, one per direction (RFC 7143 13.12).
            # An invalid value leaves the initiator at the default 8192 (RFC 7143 13.12).
            self._declared_mrdsl = True
            try:
                n = _parse_number(value)
            except ValueError:
                return [(key, "Reject")]
            if not 512 <= n <= 0xFFFFFF:
                return [(key, "Reject")]
            p.initiator_max_recv_data_segment_length = n
            return [(key, str(lim.max_recv_data_segment_length))]
        if key in _NUMERIC:
            lo, hi, fn = _NUMERIC[key]
            try:
                n = _parse_number(value)
            except ValueError:
                return [(key, "Reject")]
            if not lo <= n <= hi:
                return [(key, "Reject")]
            ours = {
                "MaxBurstLength": lim.max_burst_length,
                "FirstBurstLength": lim.first_burst_length,
                "MaxOutstandingR2T": lim.max_outstanding_r2t,
                "DefaultTime2Wait": lim.default_time2wait,
                "DefaultTime2Retain": lim.default_time2retain,
                "ErrorRecoveryLevel": 0,
                "MaxConnections": 1,
            }[key]
            result = min(n, ours) if fn == "min" else max(n, ours)
            attr = {
                "MaxBurstLength": "max_burst_length",
                "FirstBurstLength": "first_burst_length",
                "MaxOutstandingR2T": "max_outstanding_r2t",
                "DefaultTime2Wait": "default_time2wait",
                "DefaultTime2Retain": "default_time2retain",
                "ErrorRecoveryLevel": "error_recovery_level",
                "MaxConnections": "max_connections",
            }[key]
            setattr(p, attr, result)
            return [(key, str(result))]
        if key in _BOOLEAN:
            if value not in ("Yes", "No"):
                return [(key, "Reject")]
            theirs = value == "Yes"
            ours = {
                "InitialR2T": lim.initial_r2t,
                "ImmediateData": lim.immediate_data,
                "DataPDUInOrder": True,
                "DataSequenceInOrder": True,
                "IFMarker": False,
                "OFMarker": False,
            }[key]
            result = (theirs or ours) if _BOOLEAN[key] == "or" else (theirs and ours)
            if key == "InitialR2T":
                p.initial_r2t = result
            elif key == "ImmediateData":
                p.immediate_data = result
            return [(key, "Yes" if result else "No")]
        if key in ("OFMarkInt", "IFMarkInt"):
            return [(key, "Irrelevant")]  # markers are always No here (RFC 7143 13.25)
        if key in _DECLARATIVE_IGNORED:
            p.initiator_alias = value
            return []
        if key in _TARGET_ONLY:
            return [(key, "Irrelevant")]
        # RFC 7143 6.2: unknown keys (including X- and X# extensions) -> NotUnderstood.
        p.extra[key] = value
        return [(key, "NotUnderstood")]


def full_feature_params(**kw: object) -> SessionParams:
    """SessionParams as if a login had negotiated ``kw`` (for tests and tools)."""
    params = SessionParams()
    names = {f.name for f in fields(SessionParams)}
    for name, value in kw.items():
        if name not in names:
            raise TypeError(f"SessionParams has no field {name!r}")
        setattr(params, name, value)
    return params
