"""The interactive shell against ``serve --lio``: ``ls /`` shows ``/preserve`` next to
stock targetcli's own nodes (backstores, iscsi, ...) when targetcli-fb is importable, or
says in one line that it is not; a preserve from the shell works as on the built-in
target. Runs where LIO runs (the guest of ``scripts/test-lio``); elsewhere it is "not
applicable".
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.lio_testlib import require_lio
from helpers.served import IQN, Served

from targetcli_preserve import lio

PORT = 3260
CLI = [sys.executable, "-m", "targetcli_preserve.cli"]


@pytest.fixture(scope="module", autouse=True)
def _lio_here() -> None:
    require_lio()


@pytest.fixture
def served(tmp_path: Path):
    daemon = Served(tmp_path / "state", ["shell0:8M"], PORT, lio=True).start(timeout=120)
    try:
        yield daemon
    finally:
        daemon.stop()
        lio.Lio().remove(IQN, ["shell0"])


# configshell pads a node's line with dots up to the console width (80 off a terminal);
# a long summary (a path under pytest's tmp dir) leaves no room for them, hence \.*
def shell(served: Served, home: Path, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--state-dir", str(served.state_dir), *words],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TARGETCLI_PRESERVE_HOME": str(home)},
        check=False,
    )


def test_ls_shows_preserve_and_targetcli_nodes(served: Served, tmp_path: Path) -> None:
    done = shell(served, tmp_path / "home", "ls", "/", "depth=1")
    assert done.returncode == 0, done.stderr
    assert re.search(r"o- preserve \.* \[LUNs: 1, ", done.stdout), done.stdout
    assert "lio target" in done.stdout.splitlines()[0]
    # the guest has Debian's targetcli-fb: there its nodes must show
    if os.environ.get("GUEST_RUN") or importlib.util.find_spec("targetcli") is not None:
        assert re.search(r"o- backstores ", done.stdout), done.stdout
        assert re.search(r"o- iscsi ", done.stdout), done.stdout
        assert "targetcli-fb is not importable" not in done.stdout
    else:
        assert done.stdout.splitlines()[-1].startswith("targetcli-fb is not importable here")
        assert "o- iscsi" not in done.stdout  # the built-in target's node is not shown


def test_preserve_from_the_shell_through_lio(served: Served, tmp_path: Path) -> None:
    done = shell(served, tmp_path / "home", "/preserve/shell0", "preserve", "wait=true")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^preserve 1 at seq \d+ ", done.stdout, re.MULTILINE), done.stdout
    done = shell(served, tmp_path / "home", "ls", "/preserve/shell0")
    assert re.search(r"o- gen1 \.* \[live, preserve 1 at seq", done.stdout), done.stdout
