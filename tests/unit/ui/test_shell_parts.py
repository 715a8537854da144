"""The shell's parts that need no daemon: cli.main's routing, configshell-fb driven as a
user types (cd, help, completion), the exit codes of one-shot use without a daemon, and
the tree built from replies of the daemon's shape (status, volumes) given in-process.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
from helpers.shell_testlib import complete

from targetcli_preserve import cli
from targetcli_preserve.exits import ExitCode
from targetcli_preserve.ui import lio as ui_lio
from targetcli_preserve.ui import nodes
from targetcli_preserve.ui.shell import PreserveShell, prefs_dir, run_shell


@pytest.mark.parametrize(
    "argv,route",
    [
        ([], (None, [], False)),
        (["--state-dir", "/s"], ("/s", [], False)),
        (["--state-dir=/s"], ("/s", [], False)),
        (["/preserve/lun0", "preserve"], (None, ["/preserve/lun0", "preserve"], False)),
        (["--state-dir", "/s", "/preserve", "ls"], ("/s", ["/preserve", "ls"], False)),
        (["ls"], (None, ["ls"], False)),
        (["help", "preserve"], (None, ["help", "preserve"], False)),
        (["status"], None),  # the subcommands stay argparse's
        (["preserve", "lun0"], None),
        (["create", "db", "1G"], None),
        (["--json", "status"], None),
        (["--json", "/preserve", "status"], (None, ["/preserve", "status"], True)),
        (["--state-dir", "/s", "--json", "ls"], ("/s", ["ls"], True)),
        (["--json"], (None, [], True)),
        (["--state-dir", "/s", "luns"], None),
        (["--help"], None),
        (["--state-dir"], None),  # argparse says what is missing
    ],
)
def test_cli_routes_shell_command_lines(argv: list[str], route) -> None:
    assert cli.shell_route(argv) == route


def test_human_size() -> None:
    assert nodes.human_size(512) == "512B"
    assert nodes.human_size(4 << 20) == "4.0MiB"
    assert nodes.human_size(3 << 29) == "1.5GiB"
    assert nodes.human_size(5 << 40) == "5.0TiB"


def test_prefs_dir_honours_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TARGETCLI_PRESERVE_HOME", str(tmp_path / "home"))
    assert prefs_dir() == tmp_path / "home"
    monkeypatch.delenv("TARGETCLI_PRESERVE_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert prefs_dir() == tmp_path / "config" / "targetcli-preserve"


@pytest.fixture
def shell(tmp_path: Path):
    """A shell whose state directory has no daemon."""
    sh = PreserveShell(tmp_path / "home")
    nodes.UIRoot(sh, str(tmp_path / "no-daemon"))
    return sh


def test_cd_help_and_completion_as_typed(shell: PreserveShell, capsys, monkeypatch) -> None:
    shell.run_cmdline("cd /preserve")
    assert shell._current_node.path == "/preserve"
    shell.run_cmdline("help preserve")
    out = capsys.readouterr().out
    assert "preserve [luns...] [wait=value...]" in out
    assert "EXAMPLES" in out and "preserve db log wait=true" in out
    assert complete(shell, "pre", monkeypatch) == ["preserve "]
    assert set(complete(shell, "l", monkeypatch)) == {"locks", "ls", "luns"}
    assert "create" in complete(shell, "", monkeypatch)
    assert complete(shell, "create name=db s", monkeypatch) == ["size="]
    shell.run_cmdline("cd /")
    assert "preserve/" in complete(shell, "", monkeypatch)
    assert complete(shell, "cd /pre", monkeypatch) == ["/preserve "]  # no LUNs: a leaf


def test_every_command_is_documented_with_examples() -> None:
    commands = [
        (cls.__name__, name, method)
        for cls in vars(nodes).values()
        if inspect.isclass(cls) and issubclass(cls, nodes.UINode)
        for name, method in vars(cls).items()
        if name.startswith("ui_command_")
    ]
    assert len(commands) >= 10
    for cls, name, method in commands:
        assert method.__doc__ and "EXAMPLES" in method.__doc__, f"{cls}.{name}"


def test_prefs_and_path_history_are_kept_in_the_home(shell: PreserveShell, tmp_path) -> None:
    shell.run_cmdline("cd /preserve")
    assert (tmp_path / "home" / "prefs.bin").is_file()
    assert (tmp_path / "home" / "history.txt").is_file()
    assert shell.prefs["path_history"][-1] == "/preserve"


@pytest.mark.parametrize(
    "words,code",
    [
        (["/preserve/lun0", "preserve"], ExitCode.NO_DAEMON),
        (["/preserve", "status"], ExitCode.NO_DAEMON),
        (["ls"], ExitCode.NO_DAEMON),
        (["/preserve", "help", "preserve"], ExitCode.OK),
        (["/preserve", "preserve", "wait=maybe"], ExitCode.USAGE),
        (["/preserve", "create", "name=x", "size=1Q"], ExitCode.USAGE),
        (["/preserve", "frobnicate"], ExitCode.USAGE),
    ],
)
def test_one_shot_exit_codes_without_a_daemon(tmp_path: Path, capsys, words, code) -> None:
    assert run_shell(str(tmp_path / "none"), words, home=tmp_path / "home") == code
    err = capsys.readouterr().err
    if code == ExitCode.NO_DAEMON:
        assert (
            err.strip()
            == f"no daemon is running for {tmp_path / 'none'} (No such file or directory)"
        )
    elif code != ExitCode.OK:
        assert len(err.strip().splitlines()) == 1, err


# ---- the tree, from replies of the daemon's shape -----------------------------------


def _volume(gen: int, state: str, preserve: int | None) -> dict:
    made_by = None if preserve is None else {"id": preserve, "seq": 7, "time": "T"}
    return {
        "generation": gen,
        "path": f"/s/luns/db/vol-00000{gen}.img",
        "state": state,
        "preserve": made_by,
        "damaged": False,
        "clone": None,
        "hydrated": None,
    }


def _status(fabric: str) -> dict:
    return {
        "target": "iqn.2026-11.org.targetcli-preserve:default",
        "portal": "127.0.0.1:3260",
        "fabric": fabric,
        "state_dir": "/s",
        "next_seq": 8,
        "luns": [
            {
                "name": "db",
                "lun": 0,
                "size": 1 << 30,
                "block_size": 512,
                "wwn": "6f1c2e0a-4b7d-4c1e-9a53-2d8f0b6e7c41",
                "live": _volume(1, "live", 1),
                "inflight": 0,
                "issued": 7,
                "volumes": 2,
                "draining": 0,
                "last_preserve": {"id": 1, "seq": 7, "time": "T"},
                "tcmu": None,
            }
        ],
    }


@pytest.fixture
def fake_daemon(monkeypatch):
    """cli's requests answered in-process with replies of the daemon's shape."""
    replies = {"fabric": "builtin"}
    monkeypatch.setattr(cli, "request_status", lambda state_dir: _status(replies["fabric"]))
    monkeypatch.setattr(
        cli,
        "request_volumes",
        lambda state_dir, lun: [_volume(0, "frozen", None), _volume(1, "live", 1)],
    )
    return replies


def test_tree_of_the_builtin_target(shell: PreserveShell, fake_daemon, capsys) -> None:
    shell.run_cmdline("ls")
    out = capsys.readouterr().out
    assert "o- preserve" in out and "[LUNs: 1, next seq 8]" in out
    assert "[1.0GiB, live gen1, last preserve 1 at seq 7 (T)]" in out
    assert "[frozen, original, /s/luns/db/vol-000000.img]" in out
    assert "[live, preserve 1 at seq 7 (T), /s/luns/db/vol-000001.img]" in out
    assert "o- iqn.2026-11.org.targetcli-preserve:default" in out
    assert "[/preserve/db (1.0GiB) 6f1c2e0a-4b7d-4c1e-9a53-2d8f0b6e7c41]" in out
    assert "o- 127.0.0.1:3260" in out
    node = shell._root_node.get_node("/preserve/db")
    shell.run_cmdline("ls")  # a refresh keeps the nodes that still exist
    assert shell._root_node.get_node("/preserve/db") is node


def test_against_lio_without_targetcli_ls_says_so(
    shell: PreserveShell, fake_daemon, capsys, monkeypatch
) -> None:
    fake_daemon["fabric"] = "lio"
    monkeypatch.setitem(sys.modules, "targetcli", None)  # not importable
    monkeypatch.setitem(sys.modules, "targetcli.ui_backstore", None)
    shell.run_cmdline("ls /")
    out = capsys.readouterr().out.splitlines()
    assert not any("o- iscsi" in line for line in out)  # the built-in target's node
    assert any("o- preserve" in line for line in out)
    assert out[-1].startswith("targetcli-fb is not importable here")
    shell.run_cmdline("ls /preserve")  # the note is for ls / only
    assert "targetcli-fb" not in capsys.readouterr().out


def test_mount_targetcli_without_configfs(shell: PreserveShell, monkeypatch, tmp_path) -> None:
    """targetcli importable (a stand-in here) but no configfs: one line, no nodes."""
    import types

    fake = types.ModuleType("targetcli")
    monkeypatch.setitem(sys.modules, "targetcli", fake)
    for name, attr in (("ui_backstore", "UIBackstores"), ("ui_target", "UIFabricModule")):
        module = types.ModuleType(f"targetcli.{name}")
        setattr(module, attr, object)
        monkeypatch.setitem(sys.modules, f"targetcli.{name}", module)
    monkeypatch.setattr(ui_lio.lio, "CONFIGFS", tmp_path / "no-configfs")
    note = ui_lio.mount_targetcli(shell._root_node)
    assert note is not None and "configfs" in note
    assert [child.name for child in shell._root_node.children] == ["preserve"]
