"""The TCM-USER netlink codec and edge (tcmu/netlink.py) and the daemon's policy for
its events (kernel_target.py), without the kernel.

Events are pyroute2 messages built in-process and encoded the way target_core_user
sends them (tcmu_netlink_event_init: DEVICE, MINOR, DEVICE_ID, then the reconfigured
attribute; family version 2, no flags). The edge reads them from one end of a datagram
socketpair and answers on it, as it would on the netlink socket. The real kernel is in
the LIO guest (tests/lio/test_lio_serve.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.skips import not_applicable
from hypothesis import given, settings
from hypothesis import strategies as st

from targetcli_preserve.kernel_target import KernelTarget
from targetcli_preserve.lio import Backstore
from targetcli_preserve.tcmu import netlink
from targetcli_preserve.tcmu.netlink import (
    Cmd,
    Event,
    Kind,
    MalformedEvent,
    NetlinkUnavailable,
    TcmuNetlink,
    decode,
    encode,
    reply,
    set_features,
)
from targetcli_preserve.tcmu.uio import TcmuName

FAMILY_ID = 30  # what the kernel's controller hands out is dynamic; any id will do
DEVICE = "tcm-user/1/db0/preserve/db0"
LUN_SIZE = 16 << 20


def event_bytes(cmd: int, attrs: list[list], family_id: int = FAMILY_ID, version: int = 2):
    msg = netlink.message_class()()
    msg["cmd"] = cmd
    msg["version"] = version
    msg["attrs"] = attrs
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = 0  # genlmsg_put(skb, 0, 0, ...): a multicast, no flags
    msg.encode()
    return bytes(msg.data)


def base(device: str = DEVICE, minor: int = 0, device_id: int = 7) -> list[list]:
    return [
        ["TCMU_ATTR_DEVICE", device],
        ["TCMU_ATTR_MINOR", minor],
        ["TCMU_ATTR_DEVICE_ID", device_id],
    ]


def parse(data: bytes, family_id: int = FAMILY_ID) -> list:
    return list(netlink.parser(family_id).parse(data))


def decoded(data: bytes) -> Event:
    (msg,) = parse(data)
    return decode(msg)


# -- the codec ---------------------------------------------------------------------------


def test_added_and_removed_events():
    added = decoded(event_bytes(Cmd.ADDED_DEVICE, base(minor=3)))
    assert added == Event(Kind.ADDED, DEVICE, TcmuName(1, "db0", "preserve", "db0"), 3, 7)
    assert added.uio == "uio3"
    removed = decoded(event_bytes(Cmd.REMOVED_DEVICE, base()))
    assert removed.kind is Kind.REMOVED and removed.size is None and removed.config is None


@pytest.mark.parametrize(
    ("attr", "value", "field", "expected"),
    [
        ("TCMU_ATTR_DEV_SIZE", 1 << 40, "size", 1 << 40),
        ("TCMU_ATTR_DEV_CFG", "preserve/other\n", "config", "preserve/other\n"),
        ("TCMU_ATTR_WRITECACHE", 1, "writecache", True),
        ("TCMU_ATTR_WRITECACHE", 0, "writecache", False),
    ],
)
def test_reconfig_events(attr, value, field, expected):
    event = decoded(event_bytes(Cmd.RECONFIG_DEVICE, [*base(), [attr, value]]))
    assert event.kind is Kind.RECONFIG and getattr(event, field) == expected
    assert event.describe().startswith(f"RECONFIG of {DEVICE} (uio0, id 7): ")


def test_a_padded_size_decodes():
    """nla_put_u64_64bit adds TCMU_ATTR_PAD where 64-bit values need aligning."""
    attrs = [*base(), ["TCMU_ATTR_PAD", None], ["TCMU_ATTR_DEV_SIZE", 4096]]
    assert decoded(event_bytes(Cmd.RECONFIG_DEVICE, attrs)).size == 4096


def test_other_names_are_kept_unparsed():
    event = decoded(event_bytes(Cmd.ADDED_DEVICE, base(device="tcm-user/2/fb")))
    assert event.tcmu is None and event.device == "tcm-user/2/fb"


@pytest.mark.parametrize("kind", list(Kind))
def test_replies(kind):
    event = Event(kind, DEVICE, None, 0, 42)
    data = encode(reply(event, -errno.EINVAL), FAMILY_ID, seq=9)
    (msg,) = parse(data)
    assert msg["cmd"] == kind.done == kind.value + 3 and msg["version"] == 2
    assert msg.get_attr("TCMU_ATTR_CMD_STATUS") == -errno.EINVAL
    assert msg.get_attr("TCMU_ATTR_DEVICE_ID") == 42
    header = msg["header"]
    assert header["type"] == FAMILY_ID and header["sequence_number"] == 9
    assert header["flags"] == 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK


@pytest.mark.parametrize("mode", [True, False])
def test_set_features(mode):
    (msg,) = parse(encode(set_features(mode), FAMILY_ID, seq=1))
    assert msg["cmd"] == Cmd.SET_FEATURES == 7
    assert msg.get_attr("TCMU_ATTR_SUPP_KERN_CMD_REPLY") == int(mode)


@pytest.mark.parametrize(
    ("cmd", "attrs", "why"),
    [
        (Cmd.ADDED_DEVICE, base()[1:], "without DEVICE"),
        (Cmd.ADDED_DEVICE, [base()[0], base()[2]], "without MINOR"),
        (Cmd.REMOVED_DEVICE, base()[:2], "without DEVICE_ID"),
        (Cmd.RECONFIG_DEVICE, base(), "none of DEV_SIZE"),
        (Cmd.RECONFIG_DEVICE_DONE, base(), "not an event"),
        (Cmd.SET_FEATURES, base(), "not an event"),
        (0, base(), "not an event"),
    ],
)
def test_malformed_events(cmd, attrs, why):
    with pytest.raises(MalformedEvent, match=why):
        decoded(event_bytes(cmd, attrs))


def test_a_truncated_event_is_dropped_or_whole():
    data = event_bytes(Cmd.RECONFIG_DEVICE, [*base(), ["TCMU_ATTR_DEV_SIZE", 1]])
    for cut in range(len(data)):
        try:
            messages = parse(data[:cut])
        except Exception:  # noqa: BLE001, S112 - pyroute2 0.7 raises; the edge drops those
            continue
        for msg in messages:
            try:
                event = decode(msg)
            except MalformedEvent:
                continue
            assert event.kind is Kind.RECONFIG  # a cut that kept every attribute it reads


# -- the edge ----------------------------------------------------------------------------


class Kernel:
    """The far end of the edge's socket: sends events, reads replies."""

    def __init__(self) -> None:
        self.edge_sock, self.sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.received: list[bytes] = []  # the edge's datagrams, as sent

    def opener(self) -> tuple[socket.socket, int]:
        self.edge_sock.setblocking(False)
        return self.edge_sock, FAMILY_ID

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    async def replies(self, count: int = 1, settle: float = 0.05) -> list:
        """The replies the edge sent, after the loop had time to read and answer."""
        out: list = []
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(settle)
            while True:
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    break
                self.received.append(data)
                out += parse(data)
            if len(out) >= count:
                break
        return out

    def ack(self, request: bytes, code: int) -> None:
        """The kernel's answer to a request: NLMSG_ERROR with -code, the request
        enclosed (the whole of it on error, as netlink_ack does without CAP_ACK)."""
        from pyroute2.netlink import NLMSG_ERROR, nlmsgerr

        msg = nlmsgerr()
        msg["error"] = -code
        msg["header"]["type"] = NLMSG_ERROR
        msg["header"]["sequence_number"] = struct.unpack_from("I", request, 8)[0]
        msg.encode()
        enclosed = request if code else request[:16]
        data = bytearray(msg.data) + enclosed
        struct.pack_into("I", data, 0, len(data))
        self.send(bytes(data))

    def close(self) -> None:
        self.sock.close()
        self.edge_sock.close()


@pytest.fixture
def kernel():
    k = Kernel()
    yield k
    k.close()


async def test_the_edge_answers_what_the_handler_says(kernel):
    seen: list[Event] = []
    answers = {Kind.ADDED: 0, Kind.REMOVED: None, Kind.RECONFIG: -errno.EINVAL}

    def on_event(event: Event) -> int | None:
        seen.append(event)
        return answers[event.kind]

    edge = TcmuNetlink(on_event, opener=kernel.opener)
    edge.start()
    try:
        assert edge.listening
        kernel.send(event_bytes(Cmd.ADDED_DEVICE, base(device_id=1)))
        kernel.send(event_bytes(Cmd.REMOVED_DEVICE, base(device_id=2)))
        size = ["TCMU_ATTR_DEV_SIZE", 1 << 30]
        # two messages in one datagram are both handled
        kernel.send(
            event_bytes(Cmd.RECONFIG_DEVICE, [*base(device_id=3), size])
            + event_bytes(Cmd.RECONFIG_DEVICE, [*base(device_id=4), size])
        )
        replies = await kernel.replies(3)
    finally:
        edge.close()
    assert [e.device_id for e in seen] == [1, 2, 3, 4]
    assert [(m["cmd"], m.get_attr("TCMU_ATTR_DEVICE_ID")) for m in replies] == [
        (Cmd.ADDED_DEVICE_DONE, 1),
        (Cmd.RECONFIG_DEVICE_DONE, 3),
        (Cmd.RECONFIG_DEVICE_DONE, 4),
    ]
    assert [m.get_attr("TCMU_ATTR_CMD_STATUS") for m in replies] == [0, -22, -22]
    assert not edge.listening


async def test_the_edge_survives_bad_input_and_a_failing_handler(kernel, caplog):
    seen: list[int] = []

    def on_event(event: Event) -> int | None:
        seen.append(event.device_id)
        if event.device_id == 1:
            raise RuntimeError("handler trouble")
        return 0

    edge = TcmuNetlink(on_event, opener=kernel.opener)
    edge.start()
    try:
        with caplog.at_level(logging.WARNING, logger="targetcli_preserve.tcmu.netlink"):
            kernel.send(event_bytes(Cmd.ADDED_DEVICE, base(device_id=1)))  # handler raises
            kernel.send(event_bytes(Cmd.ADDED_DEVICE, base()[:2]))  # no DEVICE_ID
            kernel.send(b"\x01\x02\x03")  # not even a header
            kernel.send(event_bytes(Cmd.ADDED_DEVICE, base(device_id=5))[:30])  # truncated
            kernel.send(event_bytes(Cmd.ADDED_DEVICE, base(), family_id=99))  # another family
            kernel.send(event_bytes(Cmd.ADDED_DEVICE, base(device_id=2)))
            replies = await kernel.replies(1)
    finally:
        edge.close()
    assert seen == [1, 2]
    assert [m.get_attr("TCMU_ATTR_DEVICE_ID") for m in replies] == [2]  # none for 1
    assert "handler trouble" in caplog.text
    assert "without DEVICE_ID" in caplog.text


async def test_the_kernels_acknowledgements_are_logged(kernel, caplog):
    edge = TcmuNetlink(lambda event: -errno.EINVAL, opener=kernel.opener)
    edge.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="targetcli_preserve.tcmu.netlink"):
            size = ["TCMU_ATTR_DEV_SIZE", 1]
            for device_id in (1, 2, 3):
                kernel.send(event_bytes(Cmd.RECONFIG_DEVICE, [*base(device_id=device_id), size]))
            assert len(await kernel.replies(3)) == 3
            for request, code in zip(kernel.received, (0, errno.ENODEV, errno.EINVAL)):
                kernel.ack(request, code)
            await asyncio.sleep(0.1)
    finally:
        edge.close()
    text = caplog.text
    assert "the kernel took RECONFIG_DEVICE_DONE -22 for RECONFIG of" in text
    assert "the kernel was not waiting for RECONFIG_DEVICE_DONE -22" in text
    refused = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refused) == 1 and "Invalid argument" in refused[0].getMessage()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=4))
def test_no_datagram_raises_into_the_loop(datagrams):
    seen: list[Event] = []
    edge = TcmuNetlink(lambda event: seen.append(event))  # type: ignore[func-returns-value]
    edge._marshal = netlink.parser(FAMILY_ID)
    edge._family_id = FAMILY_ID
    for data in datagrams:
        edge.handle(data)
        edge.handle(event_bytes(Cmd.RECONFIG_DEVICE, base())[:16] + data)
    assert all(isinstance(event, Event) for event in seen)


async def test_without_the_family_the_edge_says_so():
    try:
        sock, _ = netlink.open_socket(join=False)
    except NetlinkUnavailable as err:
        assert "TCM-USER" in str(err) or "generic netlink" in str(err)
    else:
        sock.close()
        not_applicable("target_core_user is loaded here: the family exists")
    edge = TcmuNetlink(lambda event: None)
    with pytest.raises(NetlinkUnavailable):
        edge.start()
    assert not edge.listening


# -- the daemon's policy (kernel_target.py) ----------------------------------------------


class FakeLio:
    """lio.py's backstores as directories with an ``attrib/nl_reply_supported``."""

    def __init__(self, root: Path, nl_reply: int | None) -> None:
        self.root = root
        self.nl_reply = nl_reply
        self.made: dict[str, Backstore] = {}

    def backstore(self, name: str, size: int, wwn: str, max_sectors: int) -> Backstore:
        path = self.root / "user_1" / name
        (path / "attrib").mkdir(parents=True)
        if self.nl_reply is not None:
            (path / "attrib" / "nl_reply_supported").write_text(f"{self.nl_reply}\n")
        self.made[name] = Backstore(name, 1, path, size, wwn)
        return self.made[name]

    def find(self, name: str) -> Backstore | None:
        return self.made.get(name)

    def export(self, iqn: str, host: str, port: int, luns: dict[int, str]) -> None:
        pass


class FakeLuns:
    """serving.LunSet as far as the policy reads it: two served LUNs, no target (no
    command reaches it here)."""

    def __init__(self) -> None:
        self.numbers = {"db0": 0, "db1": 1}
        self.target = None
        self.catalog = SimpleNamespace(
            luns={
                name: SimpleNamespace(size=LUN_SIZE, wwn=f"w{number}")
                for name, number in self.numbers.items()
            }
        )


def policy(tmp_path: Path, nl_reply: int | None) -> KernelTarget:
    kt = KernelTarget(
        FakeLio(tmp_path, nl_reply),  # type: ignore[arg-type]
        FakeLuns(),  # type: ignore[arg-type]
        "iqn.2026-11.org.targetcli-preserve:test",
        ("127.0.0.1", 3260),
    )
    kt.configure(["db0", "db1"])
    return kt


def ev(kind: Kind, device: str = DEVICE, **reconfig) -> Event:
    return Event(kind, device, TcmuName.parse(device), 0, 7, **reconfig)


WAITED = [
    (ev(Kind.ADDED), 0),
    (ev(Kind.REMOVED), 0),
    (ev(Kind.RECONFIG, size=LUN_SIZE), 0),
    (ev(Kind.RECONFIG, size=LUN_SIZE * 2), -errno.EINVAL),
    (ev(Kind.RECONFIG, size=0), -errno.EINVAL),
    (ev(Kind.RECONFIG, config="preserve/db0\n"), 0),
    (ev(Kind.RECONFIG, config="preserve/db1"), -errno.EINVAL),
    (ev(Kind.RECONFIG, config="fbo/file=/x"), -errno.EINVAL),
    (ev(Kind.RECONFIG, writecache=True), 0),
    (ev(Kind.RECONFIG, writecache=False), 0),
]


@pytest.mark.parametrize(("event", "status"), WAITED)
def test_our_devices_are_answered_when_the_kernel_may_wait(tmp_path, event, status):
    assert policy(tmp_path, 1).netlink_event(event) == status


@pytest.mark.parametrize(("event", "status"), WAITED)
def test_nothing_is_sent_where_the_kernel_never_waits(tmp_path, event, status):
    for nl_reply in (-1, 0):
        assert policy(tmp_path / str(nl_reply), nl_reply).netlink_event(event) is None


@pytest.mark.parametrize(
    "device",
    [
        "tcm-user/2/fb/fbo/file=/x",  # another handler's device
        "tcm-user/1/other/preserve/other",  # another daemon's LUN
        "tcm-user/3/db0/preserve/db0",  # our LUN's name on another HBA
        "tcm-user/1/db1/preserve/db0",  # another backstore claiming db0
        "tcm-user/1/db0",  # no handler at all
    ],
)
def test_other_devices_are_never_answered(tmp_path, device):
    kt = policy(tmp_path, 1)
    for event in (
        ev(Kind.ADDED, device),
        ev(Kind.REMOVED, device),
        ev(Kind.RECONFIG, device, size=1),
    ):
        assert kt.netlink_event(event) is None


def test_a_refused_size_is_a_warning_naming_the_lun(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="targetcli_preserve.kernel_target"):
        policy(tmp_path / "a", 1).netlink_event(ev(Kind.RECONFIG, size=LUN_SIZE * 2))
        policy(tmp_path / "b", -1).netlink_event(ev(Kind.RECONFIG, size=LUN_SIZE * 2))
    refused, happened = (r.getMessage() for r in caplog.records)
    assert refused.startswith("LUN db0 (uio0): refused LIO's dev_size 33554432")
    assert happened.startswith("LUN db0 (uio0): LIO's dev_size 33554432 was set without waiting")
    assert f"initiators still see the LUN's {LUN_SIZE} bytes" in happened
    assert f"echo {LUN_SIZE} > {tmp_path}/b/user_1/db0/attrib/dev_size" in happened


def test_the_value_read_at_start_decides(tmp_path):
    """No configfs read while an event is handled: during a removal the rmdir that
    waits for the answer holds the device's directory (kernel_target.py)."""
    for nl_reply, answer in ((1, 0), (-1, None)):
        kt = policy(tmp_path / str(nl_reply), nl_reply)
        attrib = kt.backstores["db0"].path / "attrib"
        (attrib / "nl_reply_supported").write_text(f"{-nl_reply}\n")
        assert kt.netlink_event(ev(Kind.RECONFIG, writecache=True)) == answer
        (attrib / "nl_reply_supported").unlink()
        attrib.rmdir()  # configfs removes the directory before the kernel's REMOVED event
        assert kt.netlink_event(ev(Kind.REMOVED)) == answer


def test_attaching_the_device_reads_it_again(tmp_path, caplog):
    kt = policy(tmp_path, -1)
    (kt.backstores["db0"].path / "attrib" / "nl_reply_supported").write_text("1\n")
    assert kt.netlink_event(ev(Kind.REMOVED)) is None
    with caplog.at_level(logging.ERROR, logger="targetcli_preserve.kernel_target"):
        kt._added("uio99", TcmuName(1, "db0", "preserve", "db0"))  # no such uio here
    assert "cannot serve LUN db0" in caplog.text
    assert kt.netlink_event(ev(Kind.REMOVED)) == 0


def test_an_unknown_setting_is_answered(tmp_path):
    """Unreadable from the start: a needless answer costs a kernel log line, a missing
    one a writer asleep for good."""
    assert policy(tmp_path, None).netlink_event(ev(Kind.REMOVED)) == 0


def test_the_luns_size_is_the_daemons_not_lios(tmp_path):
    """A backstore found afresh (made again by an administrator) may say another size:
    the LUN's size is still the one the daemon serves."""
    kt = policy(tmp_path, 1)
    old = kt.backstores["db0"]
    kt.backstores["db0"] = Backstore(old.name, old.hba, old.path, 12345, old.wwn)
    assert kt.netlink_event(ev(Kind.RECONFIG, size=LUN_SIZE)) == 0
    assert kt.netlink_event(ev(Kind.RECONFIG, size=12345)) == -errno.EINVAL
