"""The targetcli-preserve shell as a running process fed on stdin, as a user or a script
keeps it open: a command typed at a chosen moment runs at once (the shell has started
and read the tree before), and with ``--json`` its reply can be read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class ShellSession:
    def __init__(self, state_dir: Path, home: Path, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "targetcli_preserve.cli",
                "--state-dir",
                str(state_dir),
                "--json",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "TARGETCLI_PRESERVE_HOME": str(home)},
        )
        self._out = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()
        self.send("ls /preserve")  # the shell is up and has read the tree
        self.wait_for("o- preserve")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read(1):
            with self._lock:
                self._out += chunk

    def send(self, line: str) -> int:
        """Type ``line``; returns where its output starts."""
        with self._lock:
            mark = len(self._out)
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return mark

    def wait_for(self, text: str, start: int = 0) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with self._lock:
                out = self._out[start:]
            if text in out:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"the shell did not print {text!r}:\n{self.output()}")

    def reply(self, line: str) -> Any:
        """Type ``line`` and return the JSON reply it prints."""
        start = self.send(line)
        deadline = time.monotonic() + self.timeout
        decoder = json.JSONDecoder()
        while time.monotonic() < deadline:
            with self._lock:
                out = self._out[start:]
            brace = out.find("{")
            if brace >= 0:
                try:
                    return decoder.raw_decode(out, brace)[0]
                except json.JSONDecodeError:
                    pass  # not all of it yet
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        raise AssertionError(f"no JSON reply to {line!r}:\n{self.output()}")

    def output(self) -> str:
        with self._lock:
            return self._out

    def close(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()
