"""The README's promise: its first command serves a LUN that real initiators can use.

Runs ``scripts/demo`` exactly as the README says (only with a private state directory
and a free port, so it cannot clash with anything on the machine), then talks to it
with iscsi-ls, iscsi-inq and qemu-io as a user would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IQN = "iqn.2026-11.org.targetcli-preserve:default"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.match(r"# targetcli-preserve\n\n```sh\n(.*?)```", text, re.DOTALL)
    assert block, "the README must open with its title, then a sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_setup_commands():
    commands = readme_commands()
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), f"{command} is not executable"
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_demo_serves_a_lun_to_real_initiators(tmp_path):
    for tool in ("iscsi-ls", "iscsi-inq", "qemu-io"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it)")
    demo = subprocess.Popen(
        [
            str(ROOT / "scripts" / "demo"),
            "--state-dir",
            str(tmp_path / "state"),
            "--portal",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 300  # a first run may install packages
        lines = []
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"target \S+ on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
            if line.strip() == "ready":
                break
        assert port is not None, "".join(lines)
        assert "lun0 (1 GiB)" in "".join(lines)
        portal = f"iscsi://127.0.0.1:{port}"
        listing = subprocess.run(
            ["iscsi-ls", "-s", portal], capture_output=True, text=True, timeout=30, check=False
        )
        assert f"Target:{IQN}" in listing.stdout and "Lun:0" in listing.stdout, listing
        inq = subprocess.run(
            ["iscsi-inq", f"{portal}/{IQN}/0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "Vendor:PRESERVE" in inq.stdout, inq
        io = subprocess.run(
            [
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "write -P 0xab 0 1M",
                "-c",
                "read -P 0xab 0 1M",
                "-c",
                "read -P 0 1M 64k",
                f"{portal}/{IQN}/0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert io.returncode == 0 and "Pattern verification failed" not in io.stdout, io
        assert io.stdout.count("read ") == 2, io.stdout
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        assert demo.wait(30) == 0
