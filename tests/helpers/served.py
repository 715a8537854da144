"""Run the real product (``targetcli-preserve serve``) as a subprocess for tests.

Everything here talks to the daemon the way users do: the CLI and the control socket,
and real initiators (qemu-io, qemu-img, libiscsi's tools) on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

IQN = "iqn.2026-11.org.targetcli-preserve:default"
_READY = re.compile(r"target (\S+) on 127\.0\.0\.1:(\d+)")


class Served:
    """One daemon process serving LUNs from ``state_dir`` on a free loopback port."""

    def __init__(
        self, state_dir: Path, luns: list[str], port: int = 0, *, lio: bool = False
    ) -> None:
        self.state_dir = state_dir
        self.luns = luns
        self.port = port
        # lio: kernel LIO exports the LUNs on 0.0.0.0:port (the guest's forwarded port
        # reaches it too); initiators here still use 127.0.0.1
        self.lio = lio
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 30.0) -> Served:
        args = [
            sys.executable,
            "-m",
            "targetcli_preserve.cli",
            "--state-dir",
            str(self.state_dir),
            "serve",
            "--portal",
            f"{'0.0.0.0' if self.lio else '127.0.0.1'}:{self.port}",
        ]
        if self.lio:
            args.append("--lio")
        for lun in self.luns:
            args += ["--lun", lun]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("daemon exited:\n" + "".join(self.output))
            self.output.append(line)
            match = _READY.search(line)
            if match:
                self.port = int(match.group(2))  # a restart keeps the same port
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError("daemon did not become ready:\n" + "".join(self.output))
        self._drain_output()
        return self

    def _drain_output(self) -> None:
        import threading

        def pump(stream, sink):
            for line in stream:
                sink.append(line)

        threading.Thread(target=pump, args=(self.proc.stdout, self.output), daemon=True).start()

    def url(self, lun: int = 0) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{IQN}/{lun}"

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "targetcli_preserve.cli",
                "--state-dir",
                str(self.state_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, timeout: float = 60.0):
        done = self.cli("--json", *args, timeout=timeout)
        assert done.returncode == 0, done.stderr + done.stdout
        return json.loads(done.stdout)

    def call(self, command: str, **args):
        """One control request in-process (no CLI start-up time: for timing-sensitive cuts)."""
        from targetcli_preserve import control

        return control.call(self.state_dir / "control.sock", command, **args)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def qemu_img_read(url: str, out: Path, timeout: float = 120.0) -> bytes:
    """The whole LUN as an initiator sees it, read over iSCSI by qemu-img."""
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(out)],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return out.read_bytes()
