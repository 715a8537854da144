"""What the LIO tests (tests/lio/) share: where they may run, running a tool, waiting
for a condition, and the daemon's view of a LUN's TCMU device."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from helpers.served import Served
from helpers.skips import need, not_applicable
from targetcli_preserve import lio

T = TypeVar("T")


def require_lio(*tools: str) -> None:
    """LIO must be here: in the guest of scripts/test-lio a failure, elsewhere a test
    that does not apply; then the tools the module uses."""
    reason = lio.unavailable()
    if reason is not None:
        if os.environ.get("GUEST_RUN"):  # the guest of scripts/test-lio: LIO must be there
            pytest.fail(f"the LIO test guest cannot serve LIO: {reason}")
        not_applicable(f"{reason}; scripts/test-lio runs these tests in a QEMU guest")
    for tool in tools:
        need(tool)


def run(*argv: str, timeout: float = 120) -> str:
    """Run a tool; its stdout, or a failure with everything it said."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
    return done.stdout


def until(what: str, probe: Callable[[], T], timeout: float = 60) -> T:
    """``probe()``'s first true value, polled for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def uio_of(served: Served, name: str) -> str | None:
    """The uio device the daemon serves LUN ``name`` through, or None."""
    return served.call("status", name=name)["luns"][0]["tcmu"]["uio"]


def start_tcmu_runner() -> subprocess.Popen:
    """tcmu-runner, once it lists its own handlers on the system D-Bus (it owns the
    TCM-USER netlink family and has turned the kernel's reply mode on by then)."""
    need("tcmu-runner")
    runner = subprocess.Popen(
        ["tcmu-runner"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    until("tcmu-runner on D-Bus", lambda: runner.poll() is not None or _runner_listed(), 90)
    if runner.poll() is not None:
        said = runner.stderr.read() if runner.stderr else ""
        raise AssertionError(f"tcmu-runner exited: {said}")
    return runner


def stop_tcmu_runner(runner: subprocess.Popen) -> None:
    runner.terminate()
    runner.wait(30)


def _runner_listed() -> bool:
    """tcmu-runner (not a stand-in) answers on D-Bus: it lists its own handler fbo."""
    done = subprocess.run(
        [
            "dbus-send",
            "--system",
            "--print-reply",
            "--dest=org.kernel.TCMUService1",
            "/org/kernel/TCMUService1",
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and "fbo" in done.stdout
