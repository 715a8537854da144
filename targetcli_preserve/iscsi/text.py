"""Text: the key=value data of Login and Text PDUs, and the full-feature Text exchange.

Owns the text codec (RFC 7143 6.1: null-terminated ``key=value`` pairs, their length
limits), which login negotiation uses too, and :class:`TextExchange`: Text Requests
continued with the C bit, long Text Responses handed out piece by piece (11.10, 11.11),
and the one key a full-feature Text Request may use here, SendTargets (Appendix C).
Sans-I/O: it returns the Text Response to send, or the reason to reject the request.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from targetcli_preserve.iscsi.codes import RESERVED_TAG, RejectReason
from targetcli_preserve.iscsi.pdus import TextRequest, TextResponse

MAX_KEY_LEN = 63  # RFC 7143 6.1
MAX_VALUE_LEN = 8192
MAX_REQUEST_TEXT = 65536  # a Text Request continued with the C bit, at most (our bound)


class TextFormatError(ValueError):
    """Text data that is not a sequence of null-terminated key=value pairs."""


def parse_text(data: bytes) -> list[tuple[str, str]]:
    """Null-separated ``key=value`` pairs (RFC 7143 6.1), in order."""
    if not data:
        return []
    if data[-1] != 0:
        raise TextFormatError("text data not null-terminated")
    pairs = []
    for item in data[:-1].split(b"\0"):
        if not item:
            continue  # tolerate padding-like empty items
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            raise TextFormatError(f"malformed text item {item[:64]!r}")
        if len(key) > MAX_KEY_LEN or len(value) > MAX_VALUE_LEN:
            raise TextFormatError("text key or value too long")
        try:
            pairs.append((key.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise TextFormatError("text key or value not valid UTF-8") from err
    return pairs


def encode_text(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def send_targets(
    value: str,
    *,
    targets: Collection[str],
    session_target: str,
    portal: tuple[str, int],
    portal_group_tag: int,
) -> list[tuple[str, str]]:
    """RFC 7143 Appendix C: TargetName + TargetAddress (host:port,tpgt of the portal the
    request came in on) for ``All``, the session's own target (empty value), or one."""
    if value == "All":
        names = sorted(targets)
    elif value == "":
        names = [session_target] if session_target in targets else []
    else:
        names = [value] if value in targets else []
    host, port = portal[0], portal[1]
    if ":" in host:
        host = f"[{host}]"
    addr = f"{host}:{port},{portal_group_tag}"
    out = []
    for name in names:
        out.append(("TargetName", name))
        out.append(("TargetAddress", addr))
    return out


class TextExchange:
    """The full-feature Text Requests of one connection, one exchange at a time.

    :meth:`receive` gives the Text Response to send (its StatSN, ExpCmdSN and MaxCmdSN
    left for the connection to fill in) or the RejectReason to reject the request with.
    """

    __slots__ = ("_pending", "_request")

    def __init__(self) -> None:
        self._pending: dict[int, bytes] = {}  # TTT -> rest of a long Text Response
        self._request = b""  # a Text Request continued with the C bit

    def receive(
        self,
        pdu: TextRequest,
        *,
        max_segment: int,
        new_ttt: Callable[[], int],
        targets: Collection[str],
        session_target: str,
        portal: tuple[str, int],
        portal_group_tag: int,
    ) -> TextResponse | RejectReason:
        """``max_segment`` is the initiator's MaxRecvDataSegmentLength; ``new_ttt`` gives
        a Target Transfer Tag; the rest is what :func:`send_targets` needs."""
        ttt = pdu.target_transfer_tag
        if ttt != RESERVED_TAG:
            rest = self._pending.pop(ttt, None)
            if rest is None:
                return RejectReason.INVALID_PDU_FIELD
            return self._response(pdu, rest, max_segment, new_ttt)
        self._pending.clear()
        if pdu.cont:
            self._request += pdu.data
            if len(self._request) > MAX_REQUEST_TEXT:
                self._request = b""
                return RejectReason.LONG_OP_REJECT
            return TextResponse(
                final=False,
                cont=False,
                lun=pdu.lun,
                initiator_task_tag=pdu.initiator_task_tag,
                target_transfer_tag=RESERVED_TAG,
            )
        raw = self._request + pdu.data
        self._request = b""
        try:
            pairs = parse_text(raw)
        except TextFormatError:
            return RejectReason.PROTOCOL_ERROR
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "SendTargets":
                answers.extend(
                    send_targets(
                        value,
                        targets=targets,
                        session_target=session_target,
                        portal=portal,
                        portal_group_tag=portal_group_tag,
                    )
                )
            else:
                # Operational keys cannot be renegotiated in FFP here: NotUnderstood.
                answers.append((key, "NotUnderstood"))
        return self._response(pdu, encode_text(answers), max_segment, new_ttt)

    def _response(
        self, pdu: TextRequest, body: bytes, max_segment: int, new_ttt: Callable[[], int]
    ) -> TextResponse:
        ttt = RESERVED_TAG
        cont = len(body) > max_segment
        if cont:
            # RFC 7143 11.11.2: a long response goes out in pieces, each fetched with an
            # empty Text Request carrying our Target Transfer Tag.
            ttt = new_ttt()
            self._pending = {ttt: body[max_segment:]}
            body = body[:max_segment]
        return TextResponse(
            final=not cont,
            cont=cont,
            lun=pdu.lun,
            initiator_task_tag=pdu.initiator_task_tag,
            target_transfer_tag=ttt,
            data=body,
        )
