"""Both programs as a user or a script meets them: real processes, real pipes, real users.

Each error is one line on stderr naming the thing, with the exit status the man pages
document; a reader that stops early is not an error; LUN numbers survive restarts with
another ``--lun`` list; a ``serve`` that fails leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.served import Served
from helpers.skips import need, not_applicable

from targetcli_preserve import __version__

NOBODY = 65534
CLI = [sys.executable, "-m", "targetcli_preserve.cli"]
DAEMON = [sys.executable, "-m", "targetcli_preserve.daemon"]


@pytest.fixture
def short_dir():
    # a short path: the control socket lives in it (AF_UNIX paths are short)
    path = Path(tempfile.mkdtemp(prefix="tcp-user-"))
    os.chmod(path, 0o755)  # others may look in (the tests as "nobody" need it)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd="/",
        check=False,
    )


def serve_in(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``targetcli-preserve --state-dir STATE_DIR serve ARGS`` run to its end."""
    return run([*CLI, "--state-dir", str(state_dir), "serve", *args])


def one_line_error(done: subprocess.CompletedProcess, prog: str = "targetcli-preserve") -> str:
    """The whole of stderr, checked to be one line starting with the program's name."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{prog}: "), done.stderr
    assert "Traceback" not in done.stderr and "Errno" not in done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def as_nobody(tmp_path_factory):
    """Run the CLI as the user 'nobody': Debian's python3 and a copy of the package in a
    directory anyone may read (this checkout and its venv may sit under a private home)."""
    if os.geteuid() != 0:
        pytest.skip("switching to the user 'nobody' needs root")
    python = shutil.which("python3", path="/usr/bin")
    assert python, "/usr/bin/python3 is missing (scripts/setup installs python3)"
    where = Path(tempfile.mkdtemp(prefix="tcp-nobody-"))
    os.chmod(where, 0o755)
    package = Path(__file__).resolve().parents[2] / "targetcli_preserve"
    shutil.copytree(
        package, where / "targetcli_preserve", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in where.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def run_as_nobody(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, "-m", "targetcli_preserve.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            user=NOBODY,
            stdin=subprocess.DEVNULL,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where), "HOME": "/nonexistent"},
            check=False,
        )

    yield run_as_nobody
    shutil.rmtree(where, ignore_errors=True)


# ---- --version ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,prog", [(CLI, "targetcli-preserve"), (DAEMON, "targetcli-preserved")]
)
def test_version(argv: list[str], prog: str) -> None:
    done = run([*argv, "--version"])
    assert done.returncode == 0
    assert done.stdout == f"{prog} {__version__}\n"


def test_the_installed_commands_say_their_version() -> None:
    bindir = Path(sys.executable).parent
    for prog in ("targetcli-preserve", "targetcli-preserved"):
        if not (bindir / prog).exists():
            pytest.skip(f"{prog} is not installed next to {sys.executable}")
        done = run([str(bindir / prog), "--version"])
        assert (done.returncode, done.stdout) == (0, f"{prog} {__version__}\n")


# ---- a reader that stops early -------------------------------------------------------------


def test_json_status_piped_into_head(short_dir: Path) -> None:
    served = Served(short_dir / "state", ["lun0:4M", "lun1:4M"]).start()
    try:
        cli = " ".join(CLI)
        for command in ("--json status", "--json luns", "luns", "--json volumes lun0"):
            pipeline = f"{cli} --state-dir {served.state_dir} {command} | head -1"
            done = run(["bash", "-c", f'set -o pipefail; {pipeline}; echo "exit $?" >&2'])
            whole = served.cli(*command.split()).stdout
            assert done.stdout == whole.splitlines(keepends=True)[0]
            assert done.stderr == "exit 0\n", (command, done.stderr)
    finally:
        assert served.stop() == 0


def test_stdout_closed_before_the_first_write_is_not_an_error(short_dir: Path) -> None:
    served = Served(short_dir / "state", ["lun0:4M"]).start()
    try:
        for command in (["--json", "status"], ["status"], ["--json", "locks"]):
            proc = subprocess.Popen(
                [*CLI, "--state-dir", str(served.state_dir), *command],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            proc.stdout.close()  # the reader is gone before the interpreter has started
            err = proc.stderr.read().decode()
            assert proc.wait(60) == 0, err
            assert err == ""
    finally:
        assert served.stop() == 0


# ---- the state directory -------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["luns"], ["preserve", "lun0"], ["locks"]])
def test_a_state_dir_that_is_a_file(short_dir: Path, command: list[str]) -> None:
    afile = short_dir / "afile"
    afile.write_text("not a directory\n")
    done = run([*CLI, "--state-dir", str(afile), *command])
    assert done.returncode == 2
    assert one_line_error(done) == f"targetcli-preserve: state directory {afile} is not a directory"
    done = run([*CLI, "--state-dir", str(afile), "--json", *command])
    assert (done.returncode, json.loads(done.stdout)["kind"]) == (2, "UserError")


@pytest.mark.parametrize(
    "argv,prog",
    [
        ([*CLI, "--state-dir", "{}", "serve"], "targetcli-preserve"),
        ([*DAEMON, "--state-dir", "{}"], "targetcli-preserved"),
    ],
)
def test_serve_on_a_state_dir_that_is_a_file(short_dir: Path, argv: list[str], prog: str) -> None:
    afile = short_dir / "afile"
    afile.write_text("")
    done = run([a.replace("{}", str(afile)) for a in argv] + ["--portal", "127.0.0.1:0"])
    assert done.returncode == 2
    assert one_line_error(done, prog) == f"{prog}: state directory {afile} is not a directory"
    assert afile.read_text() == ""


def test_a_state_dir_under_a_file(short_dir: Path) -> None:
    (short_dir / "afile").write_text("")
    done = run([*CLI, "--state-dir", str(short_dir / "afile" / "sub"), "status"])
    assert done.returncode == 2
    assert "is not a directory" in one_line_error(done)


def test_a_state_dir_too_long_for_a_control_socket(short_dir: Path) -> None:
    deep = short_dir / ("d" * 120)
    for argv in (
        [*CLI, "--state-dir", str(deep), "status"],
        [*CLI, "--state-dir", str(deep), "serve", "--portal", "127.0.0.1:0"],
    ):
        done = run(argv)
        assert done.returncode == 2
        assert "too long" in one_line_error(done)
    assert not deep.exists()


# ---- users: root's daemon, someone else's command --------------------------------------------


def test_no_daemon_as_another_user(short_dir: Path, as_nobody) -> None:
    done = as_nobody("--state-dir", str(short_dir / "nothing-here"), "status")
    assert done.returncode == 3
    assert "no daemon is running" in one_line_error(done)


def test_a_private_state_dir_as_another_user(short_dir: Path, as_nobody) -> None:
    private = short_dir / "private"
    private.mkdir(mode=0o700)
    for command in (["status"], ["luns"], ["preserve", "lun0"]):
        done = as_nobody("--state-dir", str(private), *command)
        assert done.returncode == 2
        message = one_line_error(done)
        assert f"cannot look into state directory {private}" in message
        assert "not allowed to talk" not in message


def test_roots_daemon_as_another_user(short_dir: Path, as_nobody) -> None:
    served = Served(short_dir / "state", ["lun0:4M"]).start()
    try:
        os.chmod(served.state_dir, 0o755)  # the directory is open, the socket is not
        done = as_nobody("--state-dir", str(served.state_dir), "status")
        assert done.returncode == 2
        assert "only the daemon's user (root) may use its control socket" in one_line_error(done)
    finally:
        assert served.stop() == 0


# ---- serve fails before it creates anything ------------------------------------------------


@pytest.fixture
def busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


@pytest.mark.parametrize(
    "argv,prog",
    [
        ([*CLI, "--state-dir", "{}", "serve"], "targetcli-preserve"),
        ([*DAEMON, "--state-dir", "{}"], "targetcli-preserved"),
    ],
)
def test_serve_on_a_busy_portal_creates_nothing(
    short_dir: Path, busy_port: int, argv: list[str], prog: str
) -> None:
    state = short_dir / "new-state"
    done = run(
        [a.replace("{}", str(state)) for a in argv]
        + ["--portal", f"127.0.0.1:{busy_port}", "--lun", "lun0:1G"]
    )
    assert done.returncode == 1
    assert one_line_error(done, prog) == (
        f"{prog}: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    )
    assert not state.exists()


def test_serve_on_a_busy_portal_leaves_an_existing_state_dir_as_it_was(
    short_dir: Path, busy_port: int
) -> None:
    served = Served(short_dir / "state", ["a:4M"]).start()
    assert served.stop() == 0
    before = sorted(p.relative_to(served.state_dir) for p in served.state_dir.rglob("*"))
    journal = (served.state_dir / "journal").read_bytes()
    done = serve_in(
        served.state_dir, "--portal", f"127.0.0.1:{busy_port}", "--lun", "a:4M", "--lun", "b:1G"
    )
    assert done.returncode == 1
    assert (served.state_dir / "journal").read_bytes() == journal
    assert sorted(p.relative_to(served.state_dir) for p in served.state_dir.rglob("*")) == before


def test_a_wrong_size_creates_none_of_the_other_luns(short_dir: Path) -> None:
    served = Served(short_dir / "state", ["a:4M"]).start()
    assert served.stop() == 0
    journal = (served.state_dir / "journal").read_bytes()
    done = serve_in(served.state_dir, "--portal", "127.0.0.1:0", "--lun", "new:4M", "--lun", "a:8M")
    assert done.returncode == 2
    assert one_line_error(done) == (
        "targetcli-preserve: LUN 'a' exists with size 4194304, not 8388608"
    )
    assert (served.state_dir / "journal").read_bytes() == journal
    assert not (served.state_dir / "luns" / "new").exists()


def test_a_new_state_dir_is_removed_when_serve_fails_after_making_it(short_dir: Path) -> None:
    state = short_dir / "fresh"
    # the LUN does not fit: creating its volume fails after the state dir was made
    done = serve_in(state, "--portal", "127.0.0.1:0", "--lun", "huge:8000000T")
    if done.returncode == 0:
        not_applicable(f"the file system of {short_dir} holds a 7.6 EiB sparse file")
    assert done.returncode == 1, done.stderr
    one_line_error(done)
    assert not state.exists()


@pytest.mark.parametrize(
    "argv,prog", [([*CLI, "serve"], "targetcli-preserve"), ([*DAEMON], "targetcli-preserved")]
)
def test_a_lun_name_given_twice_is_named(short_dir: Path, argv: list[str], prog: str) -> None:
    done = run(
        [
            *argv,
            "--state-dir",
            str(short_dir / "s"),
            "--portal",
            "127.0.0.1:0",
            "--lun",
            "db:1M",
            "--lun",
            "log:1M",
            "--lun",
            "db:2M",
        ]
    )
    assert done.returncode == 2
    assert one_line_error(done, prog) == f"{prog}: LUN name 'db' is given twice in --lun"
    assert not (short_dir / "s").exists()


# ---- LUN numbers are stable ------------------------------------------------------------------


def lun_numbers(served: Served) -> dict[str, int]:
    return {lun["name"]: lun["lun"] for lun in served.json("status")["luns"]}


def reported_luns(served: Served) -> list[int]:
    """The LUN numbers a real initiator sees (REPORT LUNS through iscsi-ls)."""
    need("iscsi-ls")
    done = run(["iscsi-ls", "-s", f"iscsi://127.0.0.1:{served.port}"])
    assert done.returncode == 0, done.stderr
    return sorted(
        int(line.split("Lun:")[1].split()[0]) for line in done.stdout.splitlines() if "Lun:" in line
    )


def test_lun_numbers_survive_restarts_with_another_lun_list(short_dir: Path) -> None:
    state = short_dir / "state"
    served = Served(state, ["a:4M", "b:4M"]).start()
    try:
        assert lun_numbers(served) == {"a": 0, "b": 1}
        wwn_b = {lun["name"]: lun["wwn"] for lun in served.json("status")["luns"]}["b"]
    finally:
        assert served.stop() == 0

    served = Served(state, ["b:4M"]).start()  # a is kept but not served
    try:
        assert lun_numbers(served) == {"b": 1}
        assert reported_luns(served) == [1]
        assert served.json("status", "b")["luns"][0]["wwn"] == wwn_b
    finally:
        assert served.stop() == 0

    served = Served(state, ["c:4M", "b:4M", "d:4M"]).start()  # new LUNs: lowest free numbers
    try:
        assert lun_numbers(served) == {"c": 2, "b": 1, "d": 3}
        assert reported_luns(served) == [1, 2, 3]
        listed = served.json("luns")
        assert [(lun["lun"], lun["name"], lun["served"]) for lun in listed] == [
            (0, "a", False),
            (1, "b", True),
            (2, "c", True),
            (3, "d", True),
        ]
        assert all(lun["size"] == 4 << 20 and lun["volumes"] == 1 for lun in listed)
        assert {lun["name"]: lun["wwn"] for lun in listed}["b"] == wwn_b
        table = served.cli("luns").stdout.splitlines()
        assert table[0].split() == ["LUN", "NAME", "SIZE", "WWN", "VOLUMES", "SERVED"]
        assert table[1].split() == ["0", "a", str(4 << 20), listed[0]["wwn"], "1", "no"]
    finally:
        assert served.stop() == 0

    # without a daemon, luns reads the state directory: the same LUNs, none served
    done = run([*CLI, "--state-dir", str(state), "--json", "luns"])
    assert done.returncode == 0, done.stderr
    assert [(lun["lun"], lun["name"], lun["served"]) for lun in json.loads(done.stdout)] == [
        (0, "a", False),
        (1, "b", False),
        (2, "c", False),
        (3, "d", False),
    ]


def test_luns_of_a_state_dir_that_does_not_exist(short_dir: Path) -> None:
    done = run([*CLI, "--state-dir", str(short_dir / "none"), "luns"])
    assert done.returncode == 2
    assert one_line_error(done) == (
        f"targetcli-preserve: there is no state directory {short_dir / 'none'}"
    )


def test_a_damaged_journal_stops_serve_naming_the_line(short_dir: Path) -> None:
    served = Served(short_dir / "state", ["a:4M"]).start()
    assert served.stop() == 0
    journal = served.state_dir / "journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b'{"op":"freeze","lun":"a"}\n' + b"".join(lines[1:]))
    done = serve_in(served.state_dir, "--portal", "127.0.0.1:0", "--lun", "a:4M")
    assert done.returncode == 1
    assert one_line_error(done) == (
        f"targetcli-preserve: {journal} line 2: 'freeze' record lacks field 'gen'"
    )
    done = run([*CLI, "--state-dir", str(served.state_dir), "luns"])
    assert (done.returncode, "line 2" in done.stderr) == (1, True)


# ---- create: a LUN more, without a restart -----------------------------------------------


def test_create_serves_a_new_lun_at_once(short_dir: Path) -> None:
    state = short_dir / "state"
    served = Served(state, ["a:4M"]).start()
    try:
        made = served.json("create", "db", "8M")
        assert (made["lun"], made["name"], made["size"], made["served"]) == (1, "db", 8 << 20, True)
        assert lun_numbers(served) == {"a": 0, "db": 1}
        assert reported_luns(served) == [0, 1]  # a real initiator sees it
        # it serves I/O and takes part in a preserve like any other LUN
        need("qemu-io")
        done = run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", served.url(1)])
        assert done.returncode == 0, done.stderr
        cut = served.json("preserve", "--wait", "a", "db")
        assert [lun["name"] for lun in cut["luns"]] == ["a", "db"]
        assert served.json("status", "db")["luns"][0]["volumes"] == 2

        # what cannot be: a served name, a bad name, a bad size; each a one-line error
        for args, expected in [
            (["db", "8M"], "targetcli-preserve: LUN 'db' is served already"),
            (["bad/name", "8M"], "targetcli-preserve: bad LUN name 'bad/name'"),
            (["c", "1000"], "targetcli-preserve: bad size '1000'"),
        ]:
            done = served.cli("create", *args)
            assert done.returncode == 2, done.stdout + done.stderr
            assert one_line_error(done).startswith(expected), done.stderr
        assert lun_numbers(served) == {"a": 0, "db": 1}
    finally:
        assert served.stop() == 0

    # the next start serves what --lun names; db is kept, and create serves it again
    served = Served(state, ["a:4M"]).start()
    try:
        assert lun_numbers(served) == {"a": 0}
        done = served.cli("create", "db", "16M")
        assert done.returncode == 2
        assert "LUN 'db' exists with size 8388608, not 16777216" in one_line_error(done)
        assert served.json("create", "db", "8M")["lun"] == 1
        assert served.json("status", "db")["luns"][0]["volumes"] == 2  # its preserve too
    finally:
        assert served.stop() == 0
