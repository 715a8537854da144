"""The one-shot CLI (cli.py): argument parsing, exit codes, JSON and human output.

Exit codes (cli.py): 0 done; 1 the operation failed; 2 bad usage or input; 3 no daemon.
The daemon these tests talk to is the real one (daemon.Daemon), run in-process on a
background thread with its own event loop, on a 4 MiB LUN and a loopback port.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from targetcli_preserve import cli, control
from targetcli_preserve._errors import BackendError
from targetcli_preserve.control import ControlServer
from targetcli_preserve.daemon import Daemon
from targetcli_preserve.options import DEFAULT_IQN, Config, LunSpec

SIZE = 4 << 20


@pytest.fixture
def state_dir():
    # a short path: the control socket lives in it (AF_UNIX paths are short)
    path = Path(tempfile.mkdtemp(prefix="tcp-cli-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class LoopThread:
    """An event loop of its own on a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread():
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def daemon(state_dir: Path, loop_thread: LoopThread):
    served = Daemon(Config(state_dir, "127.0.0.1", 0, [LunSpec("lun0", SIZE)]))
    loop_thread.run(served.start())
    try:
        yield served
    finally:
        loop_thread.run(served.stop())


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, state_dir: Path, *argv: str):
    code, out, err = run_cli(capsys, "--state-dir", str(state_dir), "--json", *argv)
    assert code == 0, err
    return json.loads(out)


# ---- the parser ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["status"], {"command": "status", "lun": None}),
        (["status", "lun0"], {"command": "status", "lun": "lun0"}),
        (["volumes", "lun0"], {"command": "volumes", "lun": "lun0"}),
        (["locks"], {"command": "locks"}),
        (["preserve", "lun0"], {"command": "preserve", "luns": ["lun0"], "wait": False}),
        (
            ["preserve", "--wait", "a", "b"],
            {"command": "preserve", "luns": ["a", "b"], "wait": True},
        ),
        (["preserve", "a", "--wait"], {"command": "preserve", "luns": ["a"], "wait": True}),
        (
            ["serve"],
            {"command": "serve", "portal": "127.0.0.1:3260", "lun": [], "iqn": DEFAULT_IQN},
        ),
        (
            [
                "serve",
                "--portal",
                "0.0.0.0:3261",
                "--lun",
                "a:1G",
                "--lun",
                "b:4M",
                "--iqn",
                "iqn.x",
            ],
            {"command": "serve", "portal": "0.0.0.0:3261", "lun": ["a:1G", "b:4M"], "iqn": "iqn.x"},
        ),
    ],
)
def test_parser_subcommands(argv: list[str], expected: dict) -> None:
    args = vars(cli.build_parser().parse_args(argv))
    for key, value in expected.items():
        assert args[key] == value, key
    assert "json" not in args and "state_dir" not in args  # main() fills in the defaults


@pytest.mark.parametrize(
    "command", [["status"], ["locks"], ["volumes", "lun0"], ["preserve", "lun0"]]
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_parser_common_options_before_and_after_the_subcommand(
    command: list[str], where: str
) -> None:
    common = ["--json", "--state-dir", "/some/dir"]
    argv = common + command if where == "before" else command + common
    args = cli.build_parser().parse_args(argv)
    assert args.json is True
    assert args.state_dir == "/some/dir"
    assert args.command == command[0]


def test_parser_mixed_common_options() -> None:
    args = cli.build_parser().parse_args(["--state-dir", "/a", "status", "--json"])
    assert (args.state_dir, args.json) == ("/a", True)
    args = cli.build_parser().parse_args(["--json", "locks", "--state-dir", "/b"])
    assert (args.state_dir, args.json) == ("/b", True)


@pytest.mark.parametrize(
    "argv",
    [  # no arguments at all open the interactive shell (tests/integration/test_shell.py)
        ["frobnicate"],
        ["preserve"],
        ["volumes"],
        ["status", "a", "b"],
        ["locks", "x"],
        ["preserve", "--bogus", "lun0"],
    ],
)
def test_parser_bad_usage_exits_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# ---- no daemon -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "lun0"],
        ["volumes", "lun0"],
        ["locks"],
        ["preserve", "lun0"],
        ["preserve", "--wait", "a"],
    ],
)
def test_exit_3_when_no_daemon_runs(state_dir: Path, command: list[str], capsys) -> None:
    code, out, err = run_cli(capsys, "--state-dir", str(state_dir), *command)
    assert code == 3
    assert out == ""
    assert "no daemon is running" in err and str(state_dir) in err


def test_exit_3_as_json(state_dir: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "--state-dir", str(state_dir), "status", "--json")
    assert code == 3
    assert "no daemon is running" in err  # the message also goes to stderr
    error = json.loads(out)
    assert error["kind"] == "DaemonUnreachable"
    assert "no daemon is running" in error["error"]


def test_exit_3_when_the_state_dir_does_not_exist(tmp_path: Path, capsys) -> None:
    code, _, _ = run_cli(capsys, "--state-dir", str(tmp_path / "nowhere"), "locks")
    assert code == 3


# ---- serve refuses bad input before starting -----------------------------------------


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--lun", "lun0"], "bad --lun"),
        (["--lun", "bad/name:1M"], "bad LUN name"),
        (["--lun", "lun0:1000"], "bad size"),
        (["--lun", "a:1M", "--lun", "a:2M"], "given twice"),
        (["--portal", "127.0.0.1:99999"], "bad --portal"),
    ],
)
def test_serve_with_bad_arguments_exits_2(
    state_dir: Path, extra: list[str], words: str, capsys
) -> None:
    code, _, err = run_cli(capsys, "--state-dir", str(state_dir), "serve", *extra)
    assert code == 2
    assert words in err
    assert not (state_dir / "journal").exists()  # nothing was started


def test_serve_on_a_busy_portal_exits_1(state_dir: Path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(
            capsys,
            "--state-dir",
            str(state_dir),
            "serve",
            "--portal",
            f"127.0.0.1:{port}",
            "--lun",
            "lun0:1M",
        )
    assert code == 1
    assert "in use" in err
    assert not (state_dir / "control.sock").exists()


def test_serve_lio_without_lio_says_what_is_missing(
    state_dir: Path, capsys, monkeypatch, tmp_path: Path
) -> None:
    """serve --lio where LIO cannot serve: one line naming what is missing, nothing made."""
    from targetcli_preserve import lio

    monkeypatch.setattr(lio, "CONFIGFS", tmp_path / "no-configfs")
    code, _, err = run_cli(capsys, "--state-dir", str(state_dir), "serve", "--lio")
    assert code == 1
    assert "no LIO" in err and "configfs" in err and len(err.strip().splitlines()) == 1
    assert not (state_dir / "journal").exists() and not (state_dir / "daemon.lock").exists()


# ---- exit 1: the daemon reports a failure -----------------------------------------------


@pytest.fixture
def failing_daemon(state_dir: Path):
    """A control socket whose every command fails the way a broken daemon's would."""

    async def backend(**_):
        raise BackendError("volume lun0 is on fire")

    async def crash(**_):
        raise RuntimeError("bug")

    thread = LoopThread()
    server = ControlServer(
        state_dir / "control.sock",
        {"status": backend, "preserve": backend, "volumes": crash, "locks": crash},
    )
    try:
        thread.run(server.start())
        yield server
    finally:
        thread.run(server.close())
        thread.close()


@pytest.mark.parametrize(
    "command,words",
    [
        (["status"], "volume lun0 is on fire"),
        (["preserve", "lun0"], "volume lun0 is on fire"),
        (["volumes", "lun0"], "internal error: bug"),
        (["locks"], "internal error: bug"),
    ],
)
def test_exit_1_when_the_operation_fails(
    state_dir: Path, failing_daemon, command, words, capsys
) -> None:
    code, out, err = run_cli(capsys, "--state-dir", str(state_dir), *command)
    assert code == 1
    assert out == "" and words in err
    code, out, _ = run_cli(capsys, "--state-dir", str(state_dir), "--json", *command)
    assert code == 1
    assert words in json.loads(out)["error"]


# ---- a real daemon ---------------------------------------------------------------------


def test_status_json(daemon: Daemon, state_dir: Path, capsys) -> None:
    status = run_json(capsys, state_dir, "status")
    assert status["target"] == DEFAULT_IQN
    assert status["portal"] == f"127.0.0.1:{daemon.services.server.port}"
    assert status["state_dir"] == str(state_dir)
    assert isinstance(status["next_seq"], int)
    [lun] = status["luns"]
    assert lun["name"] == "lun0" and lun["lun"] == 0
    assert lun["size"] == SIZE and lun["block_size"] == 512
    assert re.fullmatch(r"[0-9a-f-]{36}", lun["wwn"])
    assert lun["live"]["path"] == str(state_dir / "luns" / "lun0" / "vol-000000.img")
    assert lun["live"]["state"] == "live" and lun["live"]["generation"] == 0
    assert (lun["inflight"], lun["volumes"], lun["draining"], lun["last_preserve"]) == (
        0,
        1,
        0,
        None,
    )


def test_status_of_one_lun(daemon: Daemon, state_dir: Path, capsys) -> None:
    status = run_json(capsys, state_dir, "status", "lun0")
    assert [lun["name"] for lun in status["luns"]] == ["lun0"]


def test_status_human(daemon: Daemon, state_dir: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--state-dir", str(state_dir), "status")
    assert code == 0
    assert f"target {DEFAULT_IQN} on 127.0.0.1:{daemon.services.server.port}" in out
    assert f"state {state_dir}" in out
    header, row = out.splitlines()[2:4]
    assert header.split() == [
        "LUN",
        "NAME",
        "SIZE",
        "LIVE",
        "VOLUME",
        "IN",
        "FLIGHT",
        "VOLUMES",
        "LAST",
        "PRESERVE",
    ]
    assert row.split() == [
        "0",
        "lun0",
        str(SIZE),
        str(state_dir / "luns" / "lun0" / "vol-000000.img"),
        "0",
        "1",
        "-",
    ]


def test_volumes_json_and_human(daemon: Daemon, state_dir: Path, capsys) -> None:
    [vol] = run_json(capsys, state_dir, "volumes", "lun0")
    assert vol["generation"] == 0 and vol["state"] == "live"
    assert vol["path"] == str(state_dir / "luns" / "lun0" / "vol-000000.img")
    assert vol["preserve"] is None
    assert vol["damaged"] is False
    assert {"clone", "hydrated"} <= vol.keys()
    code, out, _ = run_cli(capsys, "--state-dir", str(state_dir), "volumes", "lun0")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "GEN",
        "STATE",
        "PRESERVE",
        "SEQ",
        "TIME",
        "CLONE",
        "HYDRATED",
        "PATH",
    ]
    assert lines[1].split()[0:5] == ["0", "live", "-", "-", "-"]
    assert lines[1].split()[-1] == vol["path"]


def test_locks_json_and_human(daemon: Daemon, state_dir: Path, capsys) -> None:
    assert run_json(capsys, state_dir, "locks") == []
    code, out, _ = run_cli(capsys, "--state-dir", str(state_dir), "locks")
    assert (code, out) == (0, "no locks held\n")


@pytest.mark.parametrize(
    "command",
    [["status", "nope"], ["volumes", "nope"], ["preserve", "nope"], ["preserve", "lun0", "nope"]],
)
def test_exit_2_for_an_unknown_lun(
    daemon: Daemon, state_dir: Path, command: list[str], capsys
) -> None:
    code, out, err = run_cli(capsys, "--state-dir", str(state_dir), *command)
    assert code == 2
    assert out == "" and "'nope'" in err
    code, out, _ = run_cli(capsys, "--state-dir", str(state_dir), "--json", *command)
    assert code == 2
    assert json.loads(out)["kind"] == "UserError"
    # a refused preserve changed nothing, not even on the LUNs it did name
    assert len(run_json(capsys, state_dir, "volumes", "lun0")) == 1


def test_preserve_json(daemon: Daemon, state_dir: Path, capsys) -> None:
    result = run_json(capsys, state_dir, "preserve", "lun0")
    assert result["id"] == 1
    assert isinstance(result["seq"], int) and result["time"]
    [lun] = result["luns"]
    assert lun["name"] == "lun0" and lun["inflight_at_cut"] == 0
    lun_dir = state_dir / "luns" / "lun0"
    assert lun["preserved"]["generation"] == 0
    assert lun["preserved"]["path"] == str(lun_dir / "vol-000000.img")
    assert lun["preserved"]["state"] in ("draining", "frozen")
    assert lun["live"]["generation"] == 1 and lun["live"]["state"] == "live"
    assert lun["live"]["path"] == str(lun_dir / "vol-000001.img")
    assert lun["live"]["preserve"] == {"id": 1, "seq": result["seq"], "time": result["time"]}
    assert (lun_dir / "vol-000001.img").exists()
    status = run_json(capsys, state_dir, "status", "lun0")
    assert status["luns"][0]["last_preserve"] == {
        "id": 1,
        "seq": result["seq"],
        "time": result["time"],
    }
    assert status["luns"][0]["volumes"] == 2


def test_preserve_human(daemon: Daemon, state_dir: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--state-dir", str(state_dir), "preserve", "lun0")
    assert code == 0
    lun_dir = state_dir / "luns" / "lun0"
    assert re.match(r"preserve 1 at seq \d+ \(\S+\)\n", out)
    assert f"lun0: preserved {lun_dir / 'vol-000000.img'}" in out
    assert f"live {lun_dir / 'vol-000001.img'}" in out


def test_preserve_wait_returns_with_the_volume_frozen(
    daemon: Daemon, state_dir: Path, capsys
) -> None:
    result = run_json(capsys, state_dir, "preserve", "--wait", "lun0")
    assert result["luns"][0]["preserved"]["state"] == "frozen"
    volumes = run_json(capsys, state_dir, "volumes", "lun0")
    assert [(v["generation"], v["state"]) for v in volumes] == [(0, "frozen"), (1, "live")]
    assert volumes[1]["preserve"]["id"] == result["id"]
    # a second preserve stacks on the first
    again = run_json(capsys, state_dir, "preserve", "lun0", "--wait")
    assert again["id"] == result["id"] + 1 and again["seq"] >= result["seq"]
    assert again["luns"][0]["preserved"]["generation"] == 1
    assert again["luns"][0]["preserved"]["state"] == "frozen"
    assert again["luns"][0]["live"]["generation"] == 2


def _hold_a_write(daemon: Daemon, loop_thread: LoopThread, data: bytes):
    """A WRITE of LBA 0 whose Data-Out has not arrived yet: in flight until released."""

    async def submit():
        payload = asyncio.get_running_loop().create_future()
        done = daemon.services.datapath.store("lun0").write(0, len(data) // 512, payload)
        return payload, done

    payload, done = loop_thread.run(submit())

    def release() -> None:
        loop_thread.loop.call_soon_threadsafe(payload.set_result, data)

        async def finished():
            return await done

        loop_thread.run(finished())

    return release


def _wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_preserve_without_wait_returns_while_pre_cut_io_runs(
    daemon: Daemon, loop_thread: LoopThread, state_dir: Path, capsys
) -> None:
    data = bytes([0xA5]) * 4096
    release = _hold_a_write(daemon, loop_thread, data)
    try:
        result = run_json(capsys, state_dir, "preserve", "lun0")
        [lun] = result["luns"]
        assert lun["inflight_at_cut"] == 1
        assert lun["preserved"]["state"] == "draining"
        status = run_json(capsys, state_dir, "status", "lun0")["luns"][0]
        assert (status["inflight"], status["draining"]) == (1, 1)
    finally:
        release()

    def frozen() -> bool:
        return run_json(capsys, state_dir, "volumes", "lun0")[0]["state"] == "frozen"

    _wait_for(frozen, "the preserved volume to freeze")
    with open(state_dir / "luns" / "lun0" / "vol-000000.img", "rb") as f:
        assert f.read(len(data)) == data  # the pre-cut write is in the preserved image


def test_preserve_wait_waits_for_pre_cut_io(
    daemon: Daemon, loop_thread: LoopThread, state_dir: Path, capsys
) -> None:
    data = bytes([0x3C]) * 4096
    release = _hold_a_write(daemon, loop_thread, data)
    outcome: dict = {}

    def preserve() -> None:
        outcome["code"] = cli.main(
            ["--state-dir", str(state_dir), "--json", "preserve", "--wait", "lun0"]
        )

    worker = threading.Thread(target=preserve)

    def cut_taken() -> bool:  # a second volume exists, the held write still pre-cut
        return len(control.call(state_dir / "control.sock", "volumes", name="lun0")) == 2

    try:
        worker.start()
        _wait_for(cut_taken, "the cut")
    finally:
        release()
        worker.join(30)
    assert outcome["code"] == 0
    result = json.loads(capsys.readouterr().out)
    [lun] = result["luns"]
    assert lun["inflight_at_cut"] == 1
    assert lun["preserved"]["state"] == "frozen"
    with open(state_dir / "luns" / "lun0" / "vol-000000.img", "rb") as f:
        assert f.read(len(data)) == data


def test_preserve_of_a_lun_named_twice_cuts_it_once(
    daemon: Daemon, state_dir: Path, capsys
) -> None:
    result = run_json(capsys, state_dir, "preserve", "lun0", "lun0")
    assert [lun["name"] for lun in result["luns"]] == ["lun0"]
    assert len(run_json(capsys, state_dir, "volumes", "lun0")) == 2


# ---- the human tables, from given results ------------------------------------------------


def test_render_locks_table() -> None:
    out = cli.render(
        "locks",
        [
            {
                "name": "lun0",
                "lun": 0,
                "seq": 17,
                "lba": 2048,
                "blocks": 8,
                "state": "held",
                "pre_cut": True,
                "waiters": 2,
            },
            {
                "name": "db",
                "lun": 3,
                "seq": 19,
                "lba": 0,
                "blocks": 128,
                "state": "waiting",
                "pre_cut": False,
                "waiters": 0,
            },
        ],
    )
    lines = out.splitlines()
    assert lines[0].split() == [
        "LUN", "NAME", "SEQ", "LBA", "BLOCKS", "STATE", "PRE-CUT", "WAITERS",
    ]  # fmt: skip
    assert lines[1].split() == ["0", "lun0", "17", "2048", "8", "held", "yes", "2"]
    assert lines[2].split() == ["3", "db", "19", "0", "128", "waiting", "no", "0"]
    # columns line up
    assert lines[0].index("SEQ") == lines[1].index("17") == lines[2].index("19")


def test_render_volumes_table_flags_damage_and_hydration() -> None:
    out = cli.render(
        "volumes",
        [
            {
                "generation": 0,
                "state": "frozen",
                "preserve": None,
                "clone": None,
                "hydrated": None,
                "damaged": False,
                "path": "/s/vol-000000.img",
            },
            {
                "generation": 1,
                "state": "live",
                "preserve": {"id": 3, "seq": 42, "time": "t1"},
                "clone": "lazy",
                "hydrated": 0.5,
                "damaged": True,
                "path": "/s/vol-000001.img",
            },
        ],
    )
    lines = out.splitlines()
    assert lines[1].split() == ["0", "frozen", "-", "-", "-", "-", "-", "/s/vol-000000.img"]
    assert lines[2].split() == [
        "1",
        "live",
        "DAMAGED",
        "3",
        "42",
        "t1",
        "lazy",
        "50%",
        "/s/vol-000001.img",
    ]
