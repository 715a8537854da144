"""Helpers for driving a sans-I/O iSCSI Connection in tests."""

from __future__ import annotations

from targetcli_preserve.iscsi.events import (
    CloseConnection,
    DataOutAborted,
    DataOutReady,
    ExecuteCommand,
)
from targetcli_preserve.iscsi.login import full_feature_params
from targetcli_preserve.iscsi.pdu import BadPdu, PduDecoder, encode_pdu
from targetcli_preserve.iscsi.session import Connection

TARGET = "iqn.2026-11.test:target"


class Harness:
    """A Connection in full feature phase plus a decoder for what it sends."""

    def __init__(
        self,
        targets=(TARGET,),
        cmd_sn: int = 1,
        stat_sn: int = 100,
        header_digest: bool = False,
        data_digest: bool = False,
        **params,
    ) -> None:
        self.conn = Connection(set(targets), portal=("127.0.0.1", 3260))
        p = full_feature_params(
            target_name=TARGET,
            initiator_name="iqn.test:init",
            header_digest=header_digest,
            data_digest=data_digest,
            **params,
        )
        self.conn.start_full_feature(p, cmd_sn=cmd_sn, stat_sn=stat_sn)
        self.hd = header_digest
        self.dd = data_digest
        self.out = PduDecoder(0xFFFFFF, header_digest, data_digest)
        self.events: list = []

    def send(self, *pdus) -> list:
        ev = []
        for pdu in pdus:
            ev += self.conn.receive_data(encode_pdu(pdu, self.hd, self.dd))
        self.events += ev
        return ev

    def raw(self, data: bytes) -> list:
        ev = self.conn.receive_data(data)
        self.events += ev
        return ev

    def complete(
        self,
        itt: int,
        status: int = 0,
        data: bytes = b"",
        sense: bytes = b"",
        data_out_expected: int | None = None,
    ):
        ev = self.conn.command_completed(itt, status, data, sense, data_out_expected)
        self.events += ev
        return ev

    def received(self) -> list:
        """PDUs the target sent since the last call."""
        out = []
        for buf in self.conn.data_to_send():
            out += self.out.feed(buf)
        assert not any(isinstance(p, BadPdu) for p in out), out
        return out


def executes(events) -> list[ExecuteCommand]:
    return [e for e in events if isinstance(e, ExecuteCommand)]


def of(events, cls) -> list:
    return [e for e in events if isinstance(e, cls)]


__all__ = [
    "TARGET",
    "CloseConnection",
    "DataOutAborted",
    "DataOutReady",
    "ExecuteCommand",
    "Harness",
    "executes",
    "of",
]
