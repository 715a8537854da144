"""tgtd (Debian ``tgt``), the reference user-space iSCSI target, as a peer for
side-by-side runs: conformance baselines (tests/integration/test_conformance.py) and
benchmarks (bench/datapath_vs_tgtd.py).

One :class:`Tgtd` is one ``tgtd -f`` process on its own loopback portal and its own
control index (so it never meets another tgtd on this machine), exporting one backing
file as LUN 1 of one target. tgtd ignores SIGTERM: :meth:`stop` takes it offline,
deletes the target and then the system through ``tgtadm``, and kills only the process
it started if that did not end it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

TGTD_IQN = "iqn.2026-11.org.targetcli-preserve:tgtd-peer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """None when tgtd can run here, else the reason it cannot."""
    for tool in ("tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package tgt)"
    return None


class Tgtd:
    def __init__(self, backing: Path, port: int = 0, iqn: str = TGTD_IQN) -> None:
        self.backing = backing
        self.port = port or free_port()
        self.iqn = iqn
        self.control = self._free_control_index()
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def _free_control_index() -> int:
        for _ in range(100):
            n = random.randint(200, 9999)
            if not Path(f"/var/run/tgtd/socket.{n}").exists():
                return n
        raise RuntimeError("no free tgtd control index")

    def adm(
        self, *args: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["tgtadm", "-C", str(self.control), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"tgtadm {' '.join(args)}: {done.stderr.strip()}")
        return done

    def start(self, timeout: float = 20) -> Self:
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while self.adm("--op", "show", "--mode", "sys", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tgtd did not start")
            time.sleep(0.1)
        try:
            self.adm(
                "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", self.iqn
            )
            self.adm(
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "1",
                "--backing-store",
                str(self.backing),
            )
            self.adm(
                "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"
            )
        except Exception:
            self.stop()
            raise
        return self

    def url(self, lun: int = 1) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{self.iqn}/{lun}"

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.adm(
                "--op", "update", "--mode", "sys", "--name", "State", "-v", "offline", check=False
            )
            self.adm(
                "--lld",
                "iscsi",
                "--op",
                "delete",
                "--mode",
                "target",
                "--tid",
                "1",
                "--force",
                check=False,
            )
            self.adm("--op", "delete", "--mode", "system", check=False)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)  # only the process we started
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
