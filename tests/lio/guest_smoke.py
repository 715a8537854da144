#!/usr/bin/python3
"""LIO smoke test, run as root inside the test guest (scripts/test-lio boots it).

Not a pytest module (pytest collects ``test_*.py`` only): it needs the guest's kernel,
and Debian's Python 3.11 with python3-rtslib-fb. It checks, in order:

1. a LIO ``fileio`` backstore served by an iSCSI target in demo mode (open access, no
   authentication) on 0.0.0.0:3260;
2. libiscsi's ``iscsi-inq`` and ``iscsi-ls`` against it on 127.0.0.1;
3. the kernel initiator: SendTargets discovery on 127.0.0.1, login, a pattern written and
   read back with ``dd`` on the disk it attaches (and found in the backing file), logout;
4. with ``--host``: the host's initiators through QEMU's forwarded port. The guest writes
   ``$GUEST_RUN/host-ready`` (the IQN), waits for ``$GUEST_RUN/host-done``, then finds the
   host's pattern in the backing file;
5. TCMU: a ``user`` backstore with tcmu-runner not running makes a ``/dev/uioN`` whose
   sysfs name starts with ``tcm-user/``; it is deleted again.

What it learnt (kernel, uio name, map size) goes to ``$GUEST_RUN/facts.json``.
Exit status: 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rtslib_fb import (  # type: ignore[import-not-found]
    LUN,
    TPG,
    FabricModule,
    FileIOStorageObject,
    NetworkPortal,
    RTSRoot,
    Target,
    UserBackedStorageObject,
)

IQN = "iqn.2026-11.org.targetcli-preserve:lio-smoke"
URL = f"iscsi://127.0.0.1:3260/{IQN}/0"
BACKING = Path("/tmp/lio/smoke0.img")
SIZE = 64 << 20
MIB = 1 << 20
RUN = Path(os.environ.get("GUEST_RUN", "/tmp"))
HOST_WAIT = 300  # seconds the guest waits for the host's part
facts: dict[str, object] = {"kernel": os.uname().release}


class Failed(Exception):
    pass


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


def sh(*argv: str, timeout: float = 60) -> str:
    """Run a command, return its stdout; fail with its output if it fails."""
    r = run(*argv, timeout=timeout)
    if r.returncode:
        raise Failed(f"{' '.join(argv)} exited {r.returncode}: {(r.stdout + r.stderr).strip()}")
    return r.stdout


def wait_for(what: str, probe: Callable[[], object], timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise Failed(f"{what}: not within {timeout} s")


def uptime() -> str:
    return Path("/proc/uptime").read_text().split()[0]


def backing_at(offset: int, length: int) -> bytes:
    with BACKING.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def create_target() -> None:
    BACKING.parent.mkdir(parents=True, exist_ok=True)
    with BACKING.open("wb") as f:
        f.truncate(SIZE)
    so = FileIOStorageObject("smoke0", str(BACKING), size=SIZE)
    tpg = TPG(Target(FabricModule("iscsi"), IQN), 1)
    # demo mode: any initiator, no ACLs, no CHAP, and writable
    for name, value in (
        ("generate_node_acls", "1"),
        ("cache_dynamic_acls", "1"),
        ("authentication", "0"),
        ("demo_mode_write_protect", "0"),
    ):
        tpg.set_attribute(name, value)
    NetworkPortal(tpg, "0.0.0.0", 3260)
    LUN(tpg, 0, so)
    tpg.enable = True
    print(f"  target {IQN}, LUN 0 = fileio {BACKING} ({SIZE >> 20} MiB) on 0.0.0.0:3260")


def libiscsi_tools() -> None:
    inq = sh("iscsi-inq", URL)
    if "LIO-ORG" not in inq:
        raise Failed(f"iscsi-inq does not show vendor LIO-ORG:\n{inq}")
    ls = sh("iscsi-ls", "-s", "iscsi://127.0.0.1:3260")
    if IQN not in ls or "Lun:0" not in ls:
        raise Failed(f"iscsi-ls does not list {IQN} LUN 0:\n{ls}")
    print("  " + "\n  ".join(line for line in ls.splitlines() if line.strip()))


def kernel_initiator() -> None:
    name = Path("/etc/iscsi/initiatorname.iscsi")
    name.write_text("InitiatorName=iqn.2026-11.org.targetcli-preserve:guest-initiator\n")
    if run("pgrep", "-x", "iscsid").returncode:
        sh("iscsid")  # forks; no init system here to start it
    found = sh("iscsiadm", "-m", "discovery", "-t", "st", "-p", "127.0.0.1")
    if f"127.0.0.1:3260,1 {IQN}" not in found:
        raise Failed(f"discovery on 127.0.0.1 did not return {IQN}:\n{found}")
    node = ("iscsiadm", "-m", "node", "-T", IQN, "-p", "127.0.0.1:3260")
    sh(*node, "--login")
    try:

        def disk() -> str | None:
            out = sh("iscsiadm", "-m", "session", "-P", "3")
            m = re.search(r"Attached scsi disk (\w+)\s+State: running", out)
            return m.group(1) if m and Path(f"/dev/{m.group(1)}").exists() else None

        dev = f"/dev/{wait_for('the disk of the iSCSI session', disk)}"
        pattern = os.urandom(MIB)
        Path("/tmp/pattern").write_bytes(pattern)
        sh("dd", "if=/tmp/pattern", f"of={dev}", "bs=1M", "seek=2", "count=1", "oflag=direct")
        sh("dd", f"if={dev}", "of=/tmp/readback", "bs=1M", "skip=2", "count=1", "iflag=direct")
        if Path("/tmp/readback").read_bytes() != pattern:
            raise Failed(f"{dev}: the 1 MiB read back at 2 MiB differs from what was written")
        if backing_at(2 * MIB, MIB) != pattern:
            raise Failed("the backing file does not hold the pattern written through the target")
        print(f"  logged in, {dev}: 1 MiB written and read back at 2 MiB, also in the backing file")
    finally:
        sh(*node, "--logout")
    if _sessions():
        raise Failed("a session is left after logout")


def _sessions() -> str:
    r = run("iscsiadm", "-m", "session")
    return r.stdout.strip() if r.returncode == 0 else ""  # exit 21: no sessions


def host_part() -> None:
    ready = RUN / "host-ready"
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(IQN + "\n")
    tmp.rename(ready)
    print(f"  waiting up to {HOST_WAIT} s for the host's initiators (forwarded port)")
    done = RUN / "host-done"
    wait_for("the host's part", done.exists, timeout=HOST_WAIT)
    verdict = done.read_text().strip()
    if verdict != "ok":
        raise Failed(f"the host's part failed: {verdict}")
    # the host wrote 1 MiB of 0x5a at 4 MiB (scripts/test-lio)
    if backing_at(4 * MIB, MIB) != b"\x5a" * MIB:
        raise Failed("the host's 0x5a pattern at 4 MiB is not in the backing file")
    print("  the host's 1 MiB of 0x5a at 4 MiB is in the backing file")


def tcmu_device() -> None:
    if run("pgrep", "-x", "tcmu-runner").returncode == 0:
        raise Failed("tcmu-runner is running; this check needs it absent")
    before = set(os.listdir("/sys/class/uio"))
    so = UserBackedStorageObject(
        "smoke_tcmu", config="preserve/test", size=16 * MIB, control="nl_reply_supported=-1"
    )
    try:

        def new_uio() -> str | None:
            new = sorted(set(os.listdir("/sys/class/uio")) - before)
            return new[0] if new else None

        uio = str(wait_for("a new uio device", new_uio, timeout=10))
        sysfs = Path("/sys/class/uio") / uio
        name = (sysfs / "name").read_text().strip()
        map_size = int((sysfs / "maps/map0/size").read_text().strip(), 0)
        wait_for(f"/dev/{uio}", Path(f"/dev/{uio}").exists, timeout=10)
        if not name.startswith("tcm-user/"):
            raise Failed(f"{uio} is named {name!r}, not tcm-user/...")
        facts.update(uio=uio, uio_name=name, uio_map0_size=map_size)
        print(f"  /dev/{uio}: name {name!r}, maps/map0/size {map_size} ({map_size / MIB:g} MiB)")
    finally:
        so.delete()
    wait_for("the uio device to go away", lambda: set(os.listdir("/sys/class/uio")) <= before)
    print("  deleted; the uio device is gone")


def main() -> int:
    with_host = "--host" in sys.argv[1:]
    print(f"lio smoke test on kernel {facts['kernel']} (uptime {uptime()} s)")
    checks: list[tuple[str, Callable[[], None]]] = [
        ("fileio backstore and iSCSI target", create_target),
        ("libiscsi tools in the guest", libiscsi_tools),
        ("kernel initiator in the guest", kernel_initiator),
    ]
    if with_host:
        checks.append(("host initiators through the forwarded port", host_part))
    checks.append(("TCMU user backstore makes a uio device", tcmu_device))
    failed = 0
    for i, (what, check) in enumerate(checks):
        start = time.monotonic()
        try:
            check()
        except Exception as e:  # noqa: BLE001 - report every check, then fail
            failed += 1
            print(f"FAIL {what} ({time.monotonic() - start:.1f} s): {type(e).__name__}: {e}")
            if i == 0:
                break  # nothing else can run without the target
        else:
            print(f"ok   {what} ({time.monotonic() - start:.1f} s)")
    if with_host and not (RUN / "host-ready").exists():
        (RUN / "host-ready").write_text("skip\n")  # the host need not wait any longer
    RTSRoot().clear_existing(confirm=True)
    (RUN / "facts.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(f"cleaned up (uptime {uptime()} s)")
    print(f"smoke: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
