"""Stock targetcli (Debian's targetcli-fb) makes, explains, refuses and exports
``user:preserve`` backstores; the daemon serves them; a preserve taken from our shell in
the middle of a burst of writes is exact.

targetcli finds ``user:`` handlers over D-Bus only (``org.kernel.TCMUService1``): with
tcmu-runner running the daemon registers with it, without it the daemon stands in for
it. Both are tested. The D-Bus policy comes from ``targetcli-preserve install-system``,
as on an appliance.

Runs in the guest of scripts/test-lio (or on any machine with LIO, as root); elsewhere
"not applicable".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.lio_testlib import (
    require_lio,
    run,
    start_tcmu_runner,
    stop_tcmu_runner,
    uio_of,
    until,
)
from helpers.preserve_load import LUN_SIZE, check_lun_data, enough_concurrency, run_load_with_cut
from helpers.served import IQN, Served, qemu_img_read
from helpers.shell_session import ShellSession

PORT = 3260
# initiator names the ACLs admit: qemu's (qemu-io, qemu-img) and iscsi-inq's defaults
QEMU_INITIATOR = "iqn.2008-11.org.linux-kvm"
INQ_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq"
CLI = [sys.executable, "-m", "targetcli_preserve.cli"]
DAEMON = Path("/usr/local/bin/targetcli-preserved")


@pytest.fixture(scope="module", autouse=True)
def _lio_here() -> None:
    require_lio("targetcli", "qemu-io", "qemu-img", "iscsi-inq", "dbus-send")
    if shutil.which("targetcli-preserved") is None:  # the guest runs the checkout: a
        DAEMON.write_text(  # stand-in for the entry point a package would install
            f"#!/bin/sh\nPYTHONPATH={Path.cwd()} exec {sys.executable} "
            '-m targetcli_preserve.daemon "$@"\n'
        )
        DAEMON.chmod(0o755)
    # what an appliance's package does: the D-Bus policy (and unit, udev rule) in /etc
    print(run(*CLI, "install-system"))


def targetcli(*command: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """One stock targetcli command, as an administrator types it."""
    return subprocess.run(
        ["targetcli", *command], capture_output=True, text=True, timeout=timeout, check=False
    )


def targetcli_ok(*command: str) -> str:
    done = targetcli(*command)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "rror" not in out, f"targetcli {' '.join(command)}: {out}"
    return out


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Served]:
    """``serve --lio`` with no LUN of its own: it serves what targetcli makes. LIO's
    configuration is cleared afterwards (stock targetcli: clearconfig)."""
    served = Served(tmp_path / "state", [], PORT, lio=True).start(timeout=120)
    try:
        yield served
    finally:
        targetcli("clearconfig", "confirm=True")
        served.stop()


def _make_and_export(name: str, lun: int) -> None:
    """One more targetcli-made LUN on the target export_with_targetcli made (LUN lun)."""
    targetcli_ok(
        "/backstores/user:preserve",
        "create",
        f"name={name}",
        f"size={LUN_SIZE}",
        f"cfgstring={name}",
    )
    targetcli_ok(
        f"/iscsi/{IQN}/tpg1/luns", "create", f"/backstores/user:preserve/{name}", f"lun={lun}"
    )


def handler_mode(served: Served) -> str:
    return served.call("status")["dbus"]


def export_with_targetcli(backstore: str) -> None:
    """Stock targetcli: a target on the daemon's default IQN (so Served.url reaches it),
    the backstore as LUN 0, ACLs for the initiators the test uses (no demo mode)."""
    targetcli_ok("/iscsi", "create", IQN)
    tpg = f"/iscsi/{IQN}/tpg1"
    targetcli_ok(f"{tpg}/luns", "create", f"/backstores/user:preserve/{backstore}")
    for initiator in (QEMU_INITIATOR, INQ_INITIATOR):
        targetcli_ok(f"{tpg}/acls", "create", initiator)
    # writes up to 256 KiB travel with their command (immediate data), so they reach
    # the ring in CmdSN order, which the byte-for-byte check assumes (a write that waits
    # for an R2T reaches it later); the daemon's own export sets the same (lio.py)
    targetcli_ok(
        tpg,
        "set",
        "parameter",
        "MaxRecvDataSegmentLength=262144",
        "FirstBurstLength=262144",
        "ImmediateData=Yes",
    )
    portals = targetcli_ok(f"{tpg}/portals", "ls")
    if "0.0.0.0:3260" not in portals:  # targetcli adds it unless its prefs say otherwise
        targetcli_ok(f"{tpg}/portals", "create", "0.0.0.0", str(PORT))


def test_targetcli_lists_explains_and_refuses(daemon):
    """Without tcmu-runner the daemon owns org.kernel.TCMUService1 itself."""
    assert handler_mode(daemon) == "stand-in"
    listing = targetcli_ok("ls", "/backstores")
    assert "user:preserve" in listing, listing
    helped = targetcli_ok("/backstores/user:preserve", "help", "create")
    assert "CFGSTRING FORMAT" in helped and "cfgstring=db0" in helped, helped
    # a wrong config string: targetcli says our reason, and no backstore is made
    done = targetcli("/backstores/user:preserve", "create", "name=bad", "size=16M", "cfgstring=a/b")
    out = done.stdout + done.stderr
    assert "cfgstring invalid" in out and "bad LUN name 'a/b'" in out, out
    assert "bad" not in targetcli_ok("ls", "/backstores/user:preserve").split("user:preserve")[1]


def test_targetcli_create_export_and_an_exact_preserve_from_our_shell(daemon, tmp_path):
    made = targetcli_ok(
        "/backstores/user:preserve", "create", "name=db0", f"size={LUN_SIZE}", "cfgstring=db0"
    )
    assert "Created user-backed storage object db0" in made, made
    until("the daemon to serve db0", lambda: uio_of(daemon, "db0"))
    lun = daemon.json("luns")[0]
    assert (lun["name"], lun["size"], lun["served"]) == ("db0", LUN_SIZE, True)
    # the same backstore again for the same LUN is refused: one backstore per LUN
    done = targetcli(
        "/backstores/user:preserve", "create", "name=db0b", "size=16M", "cfgstring=db0"
    )
    assert "already has backstore user:preserve/db0" in done.stdout + done.stderr

    export_with_targetcli("db0")
    inq = run("iscsi-inq", daemon.url(0))
    assert "Vendor:PRESERVE" in inq, inq
    serial = run("iscsi-inq", "-e", "1", "-c", "128", daemon.url(0))
    assert lun["wwn"].replace("-", "") in serial, serial
    # the ACL admits only the initiators it names
    refused = subprocess.run(
        ["iscsi-inq", "-i", "iqn.2026-12.org.example:not-listed", daemon.url(0)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0, refused.stdout

    # the preserve typed into our shell, kept open as an administrator has it, in the
    # middle of the burst; checked byte for byte as the other preserve tests do, and
    # tried again on a fresh LUN (at most 3 times) while it found too few commands in
    # flight (the guest runs under emulation)
    session = ShellSession(daemon.state_dir, tmp_path / "home")
    try:
        for attempt in range(1, 4):
            name = "db0" if attempt == 1 else f"db0x{attempt}"
            if attempt > 1:
                _make_and_export(name, lun=attempt - 1)
                until(f"the daemon to serve {name}", lambda name=name: uio_of(daemon, name))
            loads, cut, ks = run_load_with_cut(
                daemon,
                [attempt - 1],
                [name],
                seed=23 + attempt,
                cut=lambda names: session.reply(f"/preserve/{names[0]} preserve wait=true"),
            )
            entry = cut["luns"][0]
            check_lun_data(daemon, tmp_path, attempt - 1, entry, loads[0], ks[0])
            print(
                f"targetcli-made LUN {name} through {uio_of(daemon, name)}, attempt {attempt}: cut after "
                f"{ks[0]} writes, {entry['inflight_at_cut']} in flight"
            )
            if enough_concurrency(entry):
                break
        else:
            raise AssertionError("3 attempts, never enough commands in flight at the cut")
    finally:
        assert session.close() == 0, session.output()

    # a restarted daemon serves the backstores targetcli made, with their data
    live = qemu_img_read(daemon.url(attempt - 1), tmp_path / "before.raw")
    daemon.stop()
    daemon.start(timeout=120)
    until(f"the restarted daemon to serve {name}", lambda: uio_of(daemon, name))
    assert qemu_img_read(daemon.url(attempt - 1), tmp_path / "after.raw") == live


def test_beside_tcmu_runner_a_stock_create_works(tmp_path):
    """tcmu-runner running: the daemon registers with it, turns the netlink reply mode
    off (else tcmu-runner fails the device-add of our handler), and registers again
    when tcmu-runner restarts."""
    runner = start_tcmu_runner()
    served = Served(tmp_path / "state", [], PORT, lio=True).start(timeout=120)
    try:
        until("the daemon to register", lambda: handler_mode(served) == "registered", 60)
        helped = targetcli_ok("/backstores/user:preserve", "help", "create")
        assert "cfgstring=db0" in helped, helped
        done = targetcli(
            "/backstores/user:preserve", "create", "name=x", "size=16M", "cfgstring=a/b"
        )
        assert "bad LUN name 'a/b'" in done.stdout + done.stderr  # forwarded by tcmu-runner
        targetcli_ok("/backstores/user:preserve", "create", "name=db0", "size=16M", "cfgstring=db0")
        until("the daemon to serve db0", lambda: uio_of(served, "db0"))

        stop_tcmu_runner(runner)
        until("the daemon to stand in", lambda: handler_mode(served) == "stand-in", 60)
        runner = start_tcmu_runner()  # it turns the reply mode on again; the daemon off
        until("the daemon to register again", lambda: handler_mode(served) == "registered", 60)
        targetcli_ok("/backstores/user:preserve", "create", "name=db1", "size=8M", "cfgstring=db1")
        until("the daemon to serve db1", lambda: uio_of(served, "db1"))
        export_with_targetcli("db1")
        out = run(
            "qemu-io",
            "-f",
            "raw",
            "-c",
            "write -P 0x4e 0 1M",
            "-c",
            "read -P 0x4e 0 1M",
            served.url(0),
        )
        assert "Pattern verification failed" not in out, out
    finally:
        targetcli("clearconfig", "confirm=True")
        served.stop()
        stop_tcmu_runner(runner)
