"""The built-in target against real initiators (libiscsi tools, qemu-io) on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from helpers.iscsi_server import IQN, make_target, run
from helpers.skips import need

from targetcli_preserve.iscsi.pdu import LoginRequest, PduDecoder, encode_pdu
from targetcli_preserve.iscsi.text import encode_text


def test_discovery_lists_target_and_portal(iscsi_server):
    out = run([need("iscsi-ls"), "-s", f"iscsi://127.0.0.1:{iscsi_server.port}"]).stdout
    assert f"Target:{IQN} Portal:127.0.0.1:{iscsi_server.port},1" in out
    assert "Lun:0" in out and "DIRECT_ACCESS" in out


def test_inquiry(iscsi_server):
    out = run([need("iscsi-inq"), iscsi_server.url()]).stdout
    assert "Peripheral Device Type:DIRECT_ACCESS" in out


def test_readcapacity16(iscsi_server):
    out = run([need("iscsi-readcapacity16"), iscsi_server.url()]).stdout
    assert f"RETURNED LOGICAL BLOCK ADDRESS:{iscsi_server.store.num_blocks - 1}" in out
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in out


def test_unknown_target_login_fails(iscsi_server):
    proc = run(
        [need("iscsi-inq"), iscsi_server.url(iqn="iqn.2026-11.nope:x")], check=False, timeout=30
    )
    assert proc.returncode != 0


def _qemu_io(url: str, *cmds: str, stdin: str | None = None, opts: str | None = None):
    args = [need("qemu-io")]
    if opts:
        args += ["--image-opts"]
    else:
        args += ["-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    args.append(opts or url)
    proc = run(args, stdin=stdin, timeout=180)
    out = proc.stdout + proc.stderr
    assert "Pattern verification failed" not in out, out
    assert "failed" not in out.lower(), out
    return out


def test_qemu_io_write_read_64k(iscsi_server):
    out = _qemu_io(iscsi_server.url(), "write -P 0xab 0 64k", "read -P 0xab 0 64k")
    assert "wrote 65536/65536" in out and "read 65536/65536" in out
    assert iscsi_server.store.data[:65536] == b"\xab" * 65536


@pytest.mark.slow
def test_qemu_io_large_writes_need_r2t(iscsi_server):
    out = _qemu_io(
        iscsi_server.url(),
        "write -P 0xcd 1M 1M",
        "read -P 0xcd 1M 1M",
        "write -P 0x11 3M 4M",
        "read -P 0x11 3M 4M",
        "read -P 0 8M 1M",
    )
    assert out.count("wrote") == 2 and out.count("read ") == 3
    d = iscsi_server.store.data
    assert d[1 << 20 : 2 << 20] == b"\xcd" * (1 << 20)
    assert d[3 << 20 : 7 << 20] == b"\x11" * (4 << 20)


@pytest.mark.slow
def test_qemu_io_many_aio_writes_in_flight(iscsi_server):
    lines = [f"aio_write -P {i % 250 + 1} {i * 65536} 64k" for i in range(128)]
    lines += ["aio_flush"]
    lines += [f"read -P {i % 250 + 1} {i * 65536} 64k" for i in range(128)]
    out = _qemu_io(iscsi_server.url(), stdin="\n".join(lines) + "\n")
    assert out.count("read 65536/65536") == 128
    for i in range(128):
        assert iscsi_server.store.data[i * 65536 : (i + 1) * 65536] == bytes([i % 250 + 1]) * 65536
    assert iscsi_server.store.flushes >= 1


@pytest.mark.slow
def test_qemu_io_with_header_digest_crc32c(iscsi_server):
    opts = (
        f"driver=iscsi,transport=tcp,portal=127.0.0.1:{iscsi_server.port},"
        f"target={IQN},lun=0,header-digest=crc32c"
    )
    _qemu_io("", "write -P 0x5a 0 1M", "read -P 0x5a 0 1M", opts=opts)
    assert any(p.header_digest for p in iscsi_server.logins)
    assert iscsi_server.store.data[: 1 << 20] == b"\x5a" * (1 << 20)


@pytest.mark.slow
def test_concurrent_sessions(iscsi_server):
    procs = []
    for i in range(4):
        cmds = [f"write -P {0x30 + i} {(i + 1) << 20} 1M", f"read -P {0x30 + i} {(i + 1) << 20} 1M"]
        args = [need("qemu-io"), "-f", "raw"]
        for c in cmds:
            args += ["-c", c]
        args.append(iscsi_server.url())
        procs.append(
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    for i, p in enumerate(procs):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and "failed" not in out.lower(), out
        region = iscsi_server.store.data[(i + 1) << 20 : (i + 2) << 20]
        assert region == bytes([0x30 + i]) * (1 << 20)


def test_targets_added_and_removed_while_running(iscsi_server):
    other = "iqn.2026-11.org.example.preserve:it2"
    target, _ = make_target(2048)
    iscsi_server.call(iscsi_server.targets.__setitem__, other, target)
    out = run([need("iscsi-ls"), "-s", f"iscsi://127.0.0.1:{iscsi_server.port}"]).stdout
    assert other in out and IQN in out
    run([need("iscsi-inq"), iscsi_server.url(iqn=other)])
    iscsi_server.call(iscsi_server.targets.pop, other)
    assert (
        run([need("iscsi-inq"), iscsi_server.url(iqn=other)], check=False, timeout=30).returncode
        != 0
    )


def _login(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        encode_pdu(
            LoginRequest(
                transit=True,
                csg=1,
                nsg=3,
                isid=0x400000000099,
                initiator_task_tag=1,
                cmd_sn=1,
                data=encode_text([("InitiatorName", "iqn.test:raw"), ("TargetName", IQN)]),
            )
        )
    )
    dec = PduDecoder(1 << 24)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = dec.feed(s.recv(65536))
        if got:
            assert got[0].status_class == 0
            return s
    raise AssertionError("no login response")


def test_garbage_after_login_does_not_hurt_the_server(iscsi_server):
    s = _login(iscsi_server.port)
    s.sendall(bytes(range(256)) * 8)  # a header claiming huge lengths, unknown opcodes
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    s.close()
    run([need("iscsi-inq"), iscsi_server.url()])


def _cu_summary(out: str) -> dict[str, int]:
    m = re.search(r"tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)
    assert m, out[-2000:]
    total, ran, passed, failed = map(int, m.groups())
    return {"total": total, "ran": ran, "passed": passed, "failed": failed}


@pytest.mark.slow
def test_iscsi_test_cu_scsi_subset(iscsi_server):
    out = run(
        [
            need("iscsi-test-cu"),
            "-d",
            "-n",
            "-t",
            "SCSI.Read10,SCSI.Write10,SCSI.Inquiry,SCSI.ReadCapacity16,SCSI.TestUnitReady",
            iscsi_server.url(),
        ],
        check=False,
        timeout=300,
    ).stdout
    s = _cu_summary(out)
    assert s["ran"] >= 20 and s["failed"] == 0, out[-4000:]


# Every test of the family passes (WRITE residuals come from CommandResult.data_out_expected).
KNOWN_ISCSI_FAILURES: set[str] = set()


@pytest.mark.slow
def test_iscsi_test_cu_iscsi_family(iscsi_server):
    out = run(
        [need("iscsi-test-cu"), "-d", "-n", "-t", "iSCSI", iscsi_server.url()],
        check=False,
        timeout=300,
    ).stdout
    s = _cu_summary(out)
    failed = set(re.findall(r"Test (\w+) had failures", out))
    assert failed <= KNOWN_ISCSI_FAILURES, out[-4000:]
    assert s["passed"] >= s["ran"] - len(KNOWN_ISCSI_FAILURES) and s["ran"] >= 10
