"""The daemon behind kernel LIO (``serve --lio``): TCMU, the same engine, the same cut.

Runs where LIO runs: in the QEMU guest of ``scripts/test-lio`` (Debian's kernel with
configfs, target_core_user and iscsi_target_mod), or directly on any machine that has
them, as root. Elsewhere every test here is "not applicable" (a skip CI accepts).

Initiators: libiscsi's tools and qemu-io on 127.0.0.1 (their issue order is known:
one session, CmdSN order) and the kernel's own initiator (iscsiadm, ``/dev/sdX``).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.conformance import run_suite
from helpers.lio_testlib import (
    require_lio,
    run,
    start_tcmu_runner,
    stop_tcmu_runner,
    uio_of,
    until,
)
from helpers.preserve_load import (
    LUN_SIZE,
    MIN_INFLIGHT,
    check_lun_data,
    enough_concurrency,
    run_load_with_cut,
)
from helpers.qemu_load import QemuIo, Write
from helpers.served import IQN, Served, qemu_img_read
from helpers.skips import need, not_applicable

from targetcli_preserve import lio
from targetcli_preserve.tcmu import netlink

PORT = 3260
MIB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _lio_here() -> None:
    require_lio("qemu-io", "qemu-img", "iscsi-inq", "iscsi-test-cu")


def _clear_lio(names: list[str]) -> None:
    lio.Lio().remove(IQN, names)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start ``serve --lio`` with LUN specs; LIO's configuration is removed afterwards
    (a stopped daemon leaves it in place on purpose)."""
    started: list[Served] = []

    def start(*luns: str, state: str = "state") -> Served:
        served = Served(tmp_path / state, list(luns), PORT, lio=True).start(timeout=120)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
    _clear_lio([spec.split(":")[0] for served in started for spec in served.luns])


def test_luns_keep_their_identity_through_lio(serve):
    served = serve("db0:16M", "db1:8M")
    status = served.json("status")
    assert status["fabric"] == "lio"
    by_name = {lun["name"]: lun for lun in status["luns"]}
    for name in ("db0", "db1"):
        tcmu = by_name[name]["tcmu"]
        assert tcmu["backstore"] == f"user/{name}" and re.fullmatch(r"uio\d+", tcmu["uio"])
    # INQUIRY is ours (TCMU passes it through), REPORT LUNS is LIO's
    inq = run("iscsi-inq", served.url(0))
    assert "Vendor:PRESERVE" in inq, inq
    serial = run("iscsi-inq", "-e", "1", "-c", "128", served.url(1))
    assert uuid.UUID(by_name["db1"]["wwn"]).hex in serial, serial  # VPD 80h: the WWN in hex
    # LIO queues REPORTED LUNS DATA HAS CHANGED (SPC-4 6.37: a UNIT ATTENTION) for a new
    # initiator's dynamic ACL as each LUN is mapped to it; iscsi-ls stops at the first
    # UNIT ATTENTION, which its TEST UNIT READY consumes, so the second run lists all
    subprocess.run(
        ["iscsi-ls", "-s", f"iscsi://127.0.0.1:{PORT}"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    listing = run("iscsi-ls", "-s", f"iscsi://127.0.0.1:{PORT}")
    assert IQN in listing and "Lun:0" in listing and "Lun:1" in listing, listing
    # what the man page says of I/O while no daemon serves a ring: commands wait in the
    # kernel up to cmd_time_out seconds (30 by default)
    attrib = next(lio.CONFIGFS.glob("core/user_*/db0/attrib"))
    assert (attrib / "cmd_time_out").read_text().strip() == "30"
    # the same identity after a preserve (a preserve never changes it)
    served.call("preserve", names=["db1"], wait=True)
    assert run("iscsi-inq", "-e", "1", "-c", "128", served.url(1)) == serial


ATTEMPTS = 3  # under emulation a burst may have too few commands in flight at the cut


def _load_with_cut(serve, tmp_path: Path, names: list[str], seed: int) -> None:
    """The load and the cut of tests/helpers/preserve_load.py, checked byte for byte at
    every attempt; repeated on fresh LUNs (at most ATTEMPTS) while the cut happened to
    find fewer than MIN_INFLIGHT commands in flight on a LUN."""
    for attempt in range(1, ATTEMPTS + 1):
        served = serve(*(f"{n}:{LUN_SIZE}" for n in names), state=f"state{attempt}")
        luns = list(range(len(names)))
        loads, cut, ks = run_load_with_cut(served, luns, names, seed=seed + attempt)
        for lun, (writes, entry, k) in enumerate(zip(loads, cut["luns"], ks)):
            check_lun_data(served, tmp_path, lun, entry, writes, k)
        inflight = [entry["inflight_at_cut"] for entry in cut["luns"]]
        print(f"LIO, attempt {attempt}: cut after {ks} writes, {inflight} in flight")
        if all(enough_concurrency(entry) for entry in cut["luns"]):
            if len(names) > 1:  # one T for the whole consistency group (rule 2)
                seqs = {served.json("volumes", n)[-1]["preserve"]["seq"] for n in names}
                assert seqs == {cut["seq"]}
            return
        served.stop()
        _clear_lio(names)
    raise AssertionError(f"{ATTEMPTS} attempts, never {MIN_INFLIGHT} commands in flight at a cut")


def test_preserve_under_async_writes(serve, tmp_path):
    _load_with_cut(serve, tmp_path, ["lun0"], seed=11)


def test_one_cut_over_two_luns(serve, tmp_path):
    _load_with_cut(serve, tmp_path, ["lun0", "lun1"], seed=17)


# -- the kernel initiator ---------------------------------------------------------------


class KernelInitiator:
    """iscsiadm on 127.0.0.1 (discovery inside the guest is allowed); one session."""

    def __init__(self) -> None:
        Path("/etc/iscsi").mkdir(parents=True, exist_ok=True)
        Path("/etc/iscsi/initiatorname.iscsi").write_text(
            "InitiatorName=iqn.2026-11.org.targetcli-preserve:guest-initiator\n"
        )
        Path("/run/lock").mkdir(parents=True, exist_ok=True)
        if subprocess.run(["pgrep", "-x", "iscsid"], check=False, capture_output=True).returncode:
            run("iscsid")
        run("iscsiadm", "-m", "discovery", "-t", "st", "-p", f"127.0.0.1:{PORT}")
        self.node = ("iscsiadm", "-m", "node", "-T", IQN, "-p", f"127.0.0.1:{PORT}")
        run(*self.node, "--login")

    def disk(self, lun: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for dev in Path("/sys/block").glob("sd*"):
                hctl = os.listdir(dev / "device" / "scsi_device")[0]  # H:C:T:L
                if int(hctl.split(":")[3]) == lun and Path(f"/dev/{dev.name}").exists():
                    # one SCSI command per write: the block layer must not merge
                    # adjacent queued writes (the tests count commands)
                    (dev / "queue" / "nomerges").write_text("2\n")
                    return f"/dev/{dev.name}"
            time.sleep(0.2)
        raise AssertionError(
            f"no disk for LUN {lun}: {run('iscsiadm', '-m', 'session', '-P', '3')}"
        )

    def logout(self) -> None:
        subprocess.run([*self.node, "--logout"], capture_output=True, timeout=60, check=False)


@pytest.fixture
def kernel_initiator() -> Iterator:
    """Log the kernel's initiator in (call it once the daemon serves); out at the end."""
    need("iscsiadm")
    sessions: list[KernelInitiator] = []

    def login() -> KernelInitiator:
        sessions.append(KernelInitiator())
        return sessions[-1]

    yield login
    for session in sessions:
        session.logout()


SLOT = 64 << 10  # each kernel-initiator write: one 64 KiB command (O_DIRECT)


def _dd_writes(dev: str, count: int, first_pattern: int = 1) -> list[subprocess.Popen]:
    """``count`` writes at once, each its own process, slot i filled with byte
    ``first_pattern + i``: the kernel keeps them in flight together."""
    procs = []
    for i in range(count):
        pattern = bytes([first_pattern + i]) * SLOT
        procs.append(
            subprocess.Popen(
                ["dd", f"of={dev}", f"bs={SLOT}", f"seek={i}", "count=1", "oflag=direct"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        procs[-1].stdin.write(pattern)  # type: ignore[union-attr]
    for proc in procs:
        proc.stdin.close()  # type: ignore[union-attr]  # all start writing at once
    return procs


def _wait_all(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    for proc in procs:
        assert proc.wait(timeout) == 0, proc.stderr.read()  # type: ignore[union-attr]


def _slots(image: bytes, count: int) -> list[int | None]:
    """Per slot: its pattern byte when the slot holds one whole write, 0 when untouched,
    None when torn (anything else)."""
    out: list[int | None] = []
    for i in range(count):
        chunk = image[i * SLOT : (i + 1) * SLOT]
        first = chunk[0]
        out.append(first if chunk == bytes([first]) * SLOT else None)
    return out


def test_kernel_initiator_preserve_mid_burst(serve, kernel_initiator):
    served = serve("lun0:16M")
    dev = kernel_initiator().disk(0)
    count = 96
    before = served.json("status", "lun0")["luns"][0]["issued"]
    procs = _dd_writes(dev, count)
    cut = served.call("preserve", names=["lun0"], wait=True)
    _wait_all(procs)
    entry = cut["luns"][0]
    k = entry["issued_at_cut"] - before
    assert 0 < k < count, f"the cut fell outside the burst ({k} of {count} before it)"
    frozen = _slots(Path(entry["preserved"]["path"]).read_bytes(), count)
    assert None not in frozen, "a write is torn in the frozen volume"
    whole = [i for i, p in enumerate(frozen) if p]
    assert len(whole) == k, f"{len(whole)} whole writes frozen, {k} issued before the cut"
    assert all(frozen[i] == i + 1 for i in whole)
    live = _slots(
        _run_bytes("dd", f"if={dev}", f"bs={SLOT}", f"count={count}", "iflag=direct"), count
    )
    assert live == [i + 1 for i in range(count)], "the live LUN lacks acknowledged writes"
    print(
        f"kernel initiator: {k} of {count} writes before the cut, {entry['inflight_at_cut']} in flight"
    )


def _run_bytes(*argv: str, timeout: float = 120) -> bytes:
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lun_reset_and_abort_are_survived(serve, kernel_initiator, tmp_path):
    served = serve("lun0:16M")
    # libiscsi's task management tests: ABORT TASK and LUN RESET with commands in flight
    tmf = run_suite(served.url(0), "iSCSI.iSCSITMF", timeout=300)
    assert tmf.ran == tmf.total >= 2 and tmf.failed == 0, tmf.output[-3000:]
    # a LUN reset from the kernel initiator while its writes are in flight
    need("sg_reset")
    dev = kernel_initiator().disk(0)
    procs = _dd_writes(dev, 48, first_pattern=101)
    run("sg_reset", "-d", dev)
    _wait_all(procs)
    live = _slots(_run_bytes("dd", f"if={dev}", f"bs={SLOT}", "count=48", "iflag=direct"), 48)
    assert live == [101 + i for i in range(48)], "writes were lost across the LUN reset"
    # and the LUN still takes a preserve afterwards
    cut = served.call("preserve", names=["lun0"], wait=True)
    assert cut["luns"][0]["preserved"]["state"] == "frozen"


def test_sigkill_and_restart_reattach(serve, tmp_path):
    served = serve(f"lun0:{LUN_SIZE}")
    slots = LUN_SIZE // SLOT
    writes = [Write(i * SLOT, SLOT, i + 1) for i in range(min(slots, 200))]
    io = QemuIo(served.url(0))
    try:
        feeder = io.feed_in_background([w.verbose_line() for w in writes], gap=0.002)
        io.wait_acknowledged(40)
        os.kill(served.proc.pid, signal.SIGKILL)  # commands stay on the ring, unanswered
        served.proc.wait()
        served.proc = None
        acked_at_kill = len(io.acknowledged())
        served.start(timeout=120)  # reattaches to the same LIO devices
        feeder.join(120)
        out = io.finish(timeout=120)
    finally:
        io.kill()
    acked = set(io.acknowledged())
    assert len(acked) == len(writes), f"qemu-io acknowledged {len(acked)} of {len(writes)}:\n{out}"
    live = qemu_img_read(served.url(0), tmp_path / "live.raw")
    for w in writes:
        assert live[w.offset : w.offset + w.length] == bytes([w.pattern]) * w.length, (
            f"write {w.pattern} at {w.offset} is missing after the restart"
        )
    print(f"SIGKILL after {acked_at_kill} acknowledged writes; all {len(writes)} present")


def test_iscsi_test_cu_against_lio_fileio(serve, tmp_path):
    """libiscsi's SCSI family on the preserve LUN and on LIO's own fileio backstore in
    the same kernel, counted honestly (libiscsi counts a skipped sub-test as passed)."""
    served = serve("lun0:64M")
    ours = run_suite(served.url(0), "SCSI", timeout=1200)
    fileio = _fileio_run(tmp_path)
    print(
        f"\niscsi-test-cu -t SCSI: user:preserve ran {ours.ran}/{ours.total}, passed "
        f"{ours.passed} ({ours.really_passed} without a [SKIPPED] command), failed "
        f"{ours.failed}; LIO fileio ran {fileio.ran}/{fileio.total}, passed {fileio.passed} "
        f"({fileio.really_passed}), failed {fileio.failed}\n"
        f"  failing on user:preserve: {', '.join(ours.failures) or 'none'}\n"
        f"  failing on fileio: {', '.join(fileio.failures) or 'none'}"
    )
    worse = sorted(set(ours.failures) - set(fileio.failures) - set(LIO_TIMING))
    assert ours.ran == ours.total >= 100, ours.output[-3000:]
    assert not worse, f"fails on user:preserve but not on fileio: {worse}\n{ours.output[-6000:]}"


# Tests of what LIO itself executes for every backstore, TCMU included (RESERVE(6) is
# emulated by LIO's core, never passed to the ring), whose outcome depends on how soon
# LIO tears a session down: they check the reservation right after a logout or a
# dropped connection, and fail on LIO's fileio too in some runs (seen in the guest).
LIO_TIMING = {
    "Reserve6.ITNexusLoss": "reservation still held just after the IT nexus loss",
    "Reserve6.Logout": "reservation still held just after the logout",
}


def _fileio_run(tmp_path: Path):
    """The same suite against a fileio backstore on its own LIO target (made with
    rtslib-fb directly: the product's LIO code is lio.py, this is the baseline's)."""
    import rtslib_fb as rts

    iqn = "iqn.2026-11.org.targetcli-preserve:fileio-baseline"
    backing = tmp_path / "fileio.img"
    with backing.open("wb") as f:
        f.truncate(64 * MIB)
    so = rts.FileIOStorageObject("baseline", str(backing), size=64 * MIB)
    target = rts.Target(rts.FabricModule("iscsi"), iqn)
    try:
        tpg = rts.TPG(target, 1)
        for name, value in lio.DEMO_MODE.items():  # access as the product's export
            tpg.set_attribute(name, value)
        rts.NetworkPortal(tpg, "127.0.0.1", 3261)
        rts.LUN(tpg, 0, so)
        tpg.enable = True
        return run_suite(f"iscsi://127.0.0.1:3261/{iqn}/0", "SCSI", timeout=1200)
    finally:
        target.delete()
        so.delete()


def test_udev_rule_names_and_protects_the_device(serve):
    """targetcli_preserve/system/60-targetcli-preserve.rules, run by ``udevadm test`` on the real uio device."""
    need("udevadm")
    served = serve("db0:8M")
    uio = served.json("status", "db0")["luns"][0]["tcmu"]["uio"]
    rules = Path("/etc/udev/rules.d")
    rules.mkdir(parents=True, exist_ok=True)
    rule = (
        Path(__file__).parents[2] / "targetcli_preserve" / "system" / "60-targetcli-preserve.rules"
    )
    (rules / rule.name).write_text(rule.read_text())
    try:
        done = subprocess.run(
            ["udevadm", "test", "--action=add", f"/sys/class/uio/{uio}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        (rules / rule.name).unlink()
    out = done.stdout + done.stderr
    assert "/dev/targetcli-preserve/db0" in out, out[-3000:]
    assert re.search(r"MODE 0?600|mode=0?600", out, re.IGNORECASE), out[-3000:]


def test_a_backstore_deleted_and_made_again_is_served_again(serve):
    """Real uevents through the udev watcher: the daemon lets go of a device the kernel
    removes, and serves the one an administrator makes again, with the LUN's data."""
    served = serve("db0:8M")
    lun = served.json("status", "db0")["luns"][0]
    run("qemu-io", "-f", "raw", "-c", "write -P 0x3c 0 64k", served.url(0))
    admin = lio.Lio()
    admin.remove(IQN, ["db0"])  # what `targetcli /backstores/user:preserve delete db0` does
    until("the daemon to let go of the removed device", lambda: uio_of(served, "db0") is None)
    admin.backstore("db0", lun["size"], lun["wwn"], 16384)
    admin.export(IQN, "0.0.0.0", PORT, {0: "db0"})
    uio = until("the daemon to serve the new device", lambda: uio_of(served, "db0"))
    out = run("qemu-io", "-f", "raw", "-c", "read -P 0x3c 0 64k", served.url(0))
    assert "Pattern verification failed" not in out, out
    print(f"served again through {uio} after the backstore was made again")


def test_beside_a_running_tcmu_runner(serve):
    """tcmu-runner owns the TCM-USER netlink family and turns on the kernel's reply
    mode; it answers a device-add for a handler it does not know with an error. The
    daemon's backstores are made with nl_reply_supported=-1, so they work beside it."""
    runner = start_tcmu_runner()
    try:
        served = serve("db0:8M")
        assert uio_of(served, "db0")
        out = run(
            "qemu-io",
            "-f",
            "raw",
            "-c",
            "write -P 0x6d 0 1M",
            "-c",
            "read -P 0x6d 0 1M",
            served.url(0),
        )
        assert "Pattern verification failed" not in out, out
    finally:
        stop_tcmu_runner(runner)


# -- TCM-USER netlink: a reconfiguration of the LUN's backstore ---------------------------

TCMU_PARAMETERS = Path("/sys/module/target_core_user/parameters")


def _configfs_write(path: Path, value: str | None, timeout: float = 30) -> int:
    """Write ``value`` to a configfs file (None: remove the directory ``path``) from a
    child process: its errno, 0 for success.

    A child, because a write or rmdir the kernel waits on sleeps uninterruptibly until a
    netlink reply comes: if none does, the module's block_netlink and reset_netlink end
    the wait (-EINTR) and the test fails instead of hanging the guest."""
    code = (
        "import os, sys\n"
        "try:\n"
        "    if len(sys.argv) == 2:\n"
        "        os.rmdir(sys.argv[1])\n"
        "    else:\n"
        "        fd = os.open(sys.argv[1], os.O_WRONLY)\n"
        "        os.write(fd, sys.argv[2].encode())\n"
        "except OSError as err:\n"
        "    sys.exit(err.errno)\n"
    )
    argv = [sys.executable, "-c", code, str(path)] + ([] if value is None else [value])
    child = subprocess.Popen(argv)
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        (TCMU_PARAMETERS / "block_netlink").write_text("1")
        try:
            (TCMU_PARAMETERS / "reset_netlink").write_text("1")
        finally:
            (TCMU_PARAMETERS / "block_netlink").write_text("0")
        child.wait(30)
        pytest.fail(f"{value or 'rmdir'} > {path}: no netlink reply within {timeout} s")


def _log_line(served: Served, *texts: str, timeout: float = 30) -> str:
    """The first line of the daemon's output that holds one of ``texts``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(served.output):
            if any(text in line for text in texts):
                return line.strip()
        time.sleep(0.2)
    raise AssertionError(f"the daemon did not log {texts}:\n{''.join(served.output)[-3000:]}")


def _capacity(served: Served) -> int:
    return int(run("iscsi-readcapacity16", "-s", served.url(0)).split()[-1])


def _unmap(device: Path) -> None:
    """Take the backstore ``device`` off its LUN (LIO removes no backstore in use)."""
    for lun in Path(f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/lun").iterdir():
        links = [link for link in lun.iterdir() if link.is_symlink()]
        if any(link.resolve() == device.resolve() for link in links):
            for link in links:
                link.unlink()
            lun.rmdir()


def test_backstore_changes_reach_the_daemon_by_netlink(serve):
    """attrib/dev_size makes the kernel send RECONFIG_DEVICE (the control file's
    dev_size= does not); the daemon logs it, refuses it when the kernel waits for its
    answer, answers a removal, and READ CAPACITY always reports the LUN's own size."""
    size = 16 * MIB
    served = serve("db0:16M")
    device = next(Path("/sys/kernel/config/target/core").glob("user_*/db0"))
    attrib = device / "attrib"
    assert (attrib / "nl_reply_supported").read_text().strip() == "-1"
    assert _capacity(served) == size

    # The kernel does not wait (nl_reply_supported -1): LIO takes the size, the daemon
    # says so, the initiators still see the LUN's size.
    assert _configfs_write(attrib / "dev_size", str(2 * size)) == 0
    print(_log_line(served, f"LIO's dev_size {2 * size} was set without waiting"))
    assert _capacity(served) == size
    assert _configfs_write(attrib / "dev_size", str(size)) == 0
    print(_log_line(served, f"LIO's dev_size set to {size}, the LUN's size"))
    # control's dev_size= changes LIO's value without an event
    lines = len(served.output)
    assert _configfs_write(device / "control", f"dev_size={2 * size}") == 0
    assert f"Size: {2 * size} " in (device / "info").read_text()
    assert _configfs_write(device / "control", f"dev_size={size}") == 0
    time.sleep(2)
    assert not [line for line in served.output[lines:] if "dev_size" in line]

    # Nobody listening: the kernel refuses a reconfiguration with ESRCH.
    served.stop()
    assert _configfs_write(attrib / "dev_size", str(2 * size)) == errno.ESRCH
    assert (attrib / "dev_size").read_text().strip() == str(size)

    # The kernel waits (reply mode on, as tcmu-runner sets it, and nl_reply_supported 1,
    # which the daemon reads when it starts): the daemon's answer decides.
    (attrib / "nl_reply_supported").write_text("1")
    served.start(timeout=120)
    uio = served.json("status", "db0")["luns"][0]["tcmu"]["uio"]
    netlink.set_reply_mode(True)
    try:
        assert _configfs_write(attrib / "dev_size", str(2 * size)) == errno.EINVAL
        assert (attrib / "dev_size").read_text().strip() == str(size)
        assert _configfs_write(attrib / "dev_config", "preserve/other") == errno.EINVAL
        assert _configfs_write(attrib / "emulate_write_cache", "1") == 0
        assert _configfs_write(attrib / "dev_size", str(size)) == 0
        assert _capacity(served) == size
        name = (Path("/sys/class/uio") / uio / "name").read_text().strip()
        assert name.endswith("/db0/preserve/db0"), name
        # a removal waits for the daemon's answer too (without one, rmdir would sleep)
        _unmap(device)
        assert _configfs_write(device, None) == 0
    finally:
        netlink.set_reply_mode(False)
    assert not device.exists()
    print(_log_line(served, f"refused LIO's dev_size {2 * size}"))
    print(_log_line(served, "refused LIO's dev_config 'preserve/other'"))
    print(_log_line(served, "LIO's emulate_write_cache set to 1"))
    # the device is gone: the udev event or the ring's EIO, whichever comes first
    print(
        _log_line(
            served,
            f"{uio}: the TCMU device of LUN db0 was removed",
            "LUN db0: its TCMU ring cannot be served any more",
        )
    )


def test_host_initiators_through_the_forwarded_port(serve):
    """scripts/test-lio's host side: iscsi-inq and qemu-io from the host, through QEMU's
    forwarded port, on the daemon's LUN (a full URL; never discovery from the host)."""
    run_dir = os.environ.get("GUEST_RUN")
    if not run_dir:
        not_applicable("no host on the other side of a forwarded port (scripts/test-lio)")
    served = serve("lun0:16M")
    ready = Path(run_dir) / "host-ready-preserve"
    ready.with_suffix(".tmp").write_text(IQN + "\n")
    ready.with_suffix(".tmp").rename(ready)
    done = Path(run_dir) / "host-done-preserve"
    until("the host's initiators", done.exists, timeout=300)
    assert done.read_text().strip() == "ok", done.read_text()
    live = Path(served.json("status", "lun0")["luns"][0]["live"]["path"])
    with live.open("rb") as f:  # the host wrote 1 MiB of 0x5a at 4 MiB
        f.seek(4 * MIB)
        assert f.read(MIB) == b"\x5a" * MIB, "the host's write is not in the live volume"
