"""The interactive shell against the real daemon (``serve`` on 127.0.0.1), driven as a
user types: configshell-fb's own command lines and completer in-process, and
``targetcli-preserve PATH COMMAND`` as a real process with its exit status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.preserve_load import LUN_SIZE, check_lun_data, run_load_with_cut
from helpers.served import IQN, Served
from helpers.shell_session import ShellSession
from helpers.shell_testlib import complete
from helpers.skips import need

from targetcli_preserve.ui.nodes import UIGeneration, UIRoot
from targetcli_preserve.ui.shell import PreserveShell

CLI = [sys.executable, "-m", "targetcli_preserve.cli"]
PRESERVE_LINE = re.compile(r"^preserve (\d+) at seq \d+ \(\S+\)$", re.MULTILINE)


@pytest.fixture
def served():
    # a short path: the control socket lives in it (AF_UNIX paths are short)
    top = Path(tempfile.mkdtemp(prefix="tcp-shell-"))
    daemon = Served(top / "state", ["lun0:4M", "db:4M"]).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def shell(served: Served, tmp_path: Path) -> PreserveShell:
    sh = PreserveShell(tmp_path / "home")
    UIRoot(sh, str(served.state_dir))
    return sh


def run(served: Served, *argv: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--state-dir", str(served.state_dir), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TARGETCLI_PRESERVE_HOME": str(home)},
        check=False,
    )


def test_a_preserve_from_the_shell_is_a_new_generation(shell: PreserveShell, capsys) -> None:
    shell.run_cmdline("cd /preserve")
    shell.run_cmdline("ls")
    out = capsys.readouterr().out
    assert re.search(r"o- lun0 \.* \[4\.0MiB, live gen0, never preserved\]", out), out
    assert "o- db" in out and "o- gen0" in out and "gen1" not in out
    shell.run_cmdline("cd lun0")
    assert shell._current_node.path == "/preserve/lun0"
    shell.run_cmdline("preserve")
    out = capsys.readouterr().out
    match = PRESERVE_LINE.search(out)
    assert match and "  lun0: preserved " in out, out
    shell.run_cmdline("ls")
    out = capsys.readouterr().out
    assert re.search(rf"o- gen1 \.* \[live, preserve {match.group(1)} at seq", out), out
    assert re.search(r"o- gen0 \.* \[frozen, original, ", out), out
    gen1 = shell._current_node.get_node("gen1")
    assert isinstance(gen1, UIGeneration) and gen1.volume["state"] == "live"
    assert shell.failure == 0


def test_group_preserve_status_and_volumes_print_what_the_cli_prints(
    served: Served, shell: PreserveShell, capsys, tmp_path: Path
) -> None:
    shell.run_cmdline("/preserve preserve lun0 db wait=true")
    out = capsys.readouterr().out
    assert PRESERVE_LINE.search(out), out
    assert "  lun0: preserved " in out and "  db: preserved " in out and "(frozen)" in out
    assert shell.failure == 0
    for line, argv in (
        ("/preserve status", ["status"]),
        ("/preserve/db volumes", ["volumes", "db"]),
        ("/preserve/db status", ["status", "db"]),
        ("/preserve luns", ["luns"]),
        ("/preserve locks", ["locks"]),
    ):
        shell.run_cmdline(line)
        from_shell = capsys.readouterr().out
        from_cli = run(served, *argv, home=tmp_path / "home")
        assert from_cli.returncode == 0, from_cli.stderr
        assert from_shell == from_cli.stdout, line
    shell.run_cmdline("/preserve/db locks")
    assert capsys.readouterr().out == "no locks held\n"


def test_errors_are_logged_and_fail(shell: PreserveShell, capsys) -> None:
    shell.run_cmdline("/preserve preserve lun0 nope")
    assert shell.failure == 2
    assert capsys.readouterr().err.strip() == "no LUN named 'nope' is served"
    shell.run_cmdline("/preserve create name=lun0 size=4M")
    assert shell.failure == 2
    assert "lun0" in capsys.readouterr().err


def test_create_serves_a_new_lun_in_the_tree(shell: PreserveShell, capsys) -> None:
    shell.run_cmdline("/preserve create name=log size=8M")
    out = capsys.readouterr().out
    assert re.search(r"^2\s+log\s+8388608\s+\S+\s+1\s+yes$", out, re.MULTILINE), out
    shell.run_cmdline("ls /")
    out = capsys.readouterr().out
    assert re.search(r"o- log \.* \[8\.0MiB, live gen0, never preserved\]", out), out
    assert re.search(r"o- lun2 \.* \[/preserve/log \(8\.0MiB\) ", out), out
    assert f"o- {IQN}" in out
    shell.run_cmdline("/preserve/log preserve wait=true")
    assert PRESERVE_LINE.search(capsys.readouterr().out)


def test_completion_offers_the_daemons_luns(shell: PreserveShell, monkeypatch) -> None:
    shell.run_cmdline("cd /preserve")
    assert complete(shell, "preserve l", monkeypatch) == ["lun0"]
    assert set(complete(shell, "preserve ", monkeypatch)) == {"lun0", "db", "wait="}
    assert complete(shell, "preserve lun0 db wait=t", monkeypatch) == ["wait=true"]
    assert set(complete(shell, "cd /preserve/", monkeypatch)) >= {
        "/preserve/db/",
        "/preserve/lun0/",
    }
    shell.run_cmdline("cd lun0")
    assert set(complete(shell, "", monkeypatch)) >= {"preserve", "volumes", "gen0/"}
    assert complete(shell, "preserve wait=", monkeypatch) == ["wait=true", "wait=false"]


def test_one_shot_as_a_process(served: Served, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run(served, "/preserve/lun0", "preserve", home=home)
    assert done.returncode == 0, done.stderr
    assert PRESERVE_LINE.search(done.stdout) and done.stderr == ""
    done = run(served, "ls", "/preserve/lun0", home=home)
    assert done.returncode == 0, done.stderr
    assert re.search(r"o- gen1 \.* \[live, preserve 1 at seq", done.stdout), done.stdout
    # --json: the daemon's reply as the one-shot CLI prints it, for scripts
    done = run(served, "--json", "/preserve/lun0", "preserve", "wait=true", home=home)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["id"] == 2 and reply["luns"][0]["preserved"]["state"] == "frozen"
    done = run(served, "/preserve/nope", "preserve", home=home)
    assert done.returncode == 2
    assert done.stderr.strip() == "No such path /preserve/nope"
    done = run(served, "/preserve", "preserve", "nope", home=home)
    assert done.returncode == 2
    assert done.stderr.strip() == "no LUN named 'nope' is served"
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [*CLI, "--state-dir", str(tmp_path / "empty"), "/preserve/lun0", "preserve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TARGETCLI_PRESERVE_HOME": str(home)},
        check=False,
    )
    assert done.returncode == 3
    assert done.stderr.strip().startswith("no daemon is running for ")
    assert (home / "prefs.bin").is_file()


def test_interactive_session_on_stdin(served: Served, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "--state-dir", str(served.state_dir)],
        input="cd /preserve/db\npreserve\nls\nfrobnicate\nexit\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TARGETCLI_PRESERVE_HOME": str(tmp_path / "home")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "For help on commands, type 'help'." in done.stdout
    assert "/preserve/db> " in done.stdout
    assert re.search(r"> preserve 1 at seq \d+ ", done.stdout), done.stdout
    assert re.search(r"o- gen1 \.* \[live, preserve 1 at seq", done.stdout), done.stdout
    assert done.stderr.strip() == "Command not found frobnicate"


def test_a_cut_typed_into_an_open_shell_mid_burst_is_exact(tmp_path: Path) -> None:
    """The shell kept open (as an administrator has it), the preserve typed during a
    burst of overlapping writes: the frozen volume holds exactly the writes issued
    before the cut, the live LUN all of them (tests/helpers/preserve_load.py).

    The typed line reaches the daemon a few milliseconds after the test sees writes in
    flight, by which time the built-in target may have drained them: the cut lands in
    the burst, but this test does not insist on commands in flight at that instant.
    test_preserve_live.py does, with the same engine and the same control request."""
    need("qemu-io")
    top = Path(tempfile.mkdtemp(prefix="tcp-cut-"))
    served = Served(top / "state", [f"lun0:{LUN_SIZE}"]).start()
    session = ShellSession(served.state_dir, tmp_path / "home")
    try:
        loads, cut, ks = run_load_with_cut(
            served,
            [0],
            ["lun0"],
            seed=29,
            cut=lambda names: session.reply(f"/preserve/{names[0]} preserve wait=true"),
        )
        check_lun_data(served, tmp_path, 0, cut["luns"][0], loads[0], ks[0])
    finally:
        assert session.close() == 0, session.output()
        served.stop()
        shutil.rmtree(top, ignore_errors=True)
