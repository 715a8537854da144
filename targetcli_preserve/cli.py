"""targetcli-preserve: the one-shot command line (scripts depend on it: keep it stable).

    targetcli-preserve [--state-dir DIR] serve [--portal HOST:PORT] [--lun NAME:SIZE ...]
    targetcli-preserve [--state-dir DIR] [--json] preserve [--wait] LUN [LUN ...]
    targetcli-preserve [--state-dir DIR] [--json] status [LUN]
    targetcli-preserve [--state-dir DIR] [--json] volumes LUN
    targetcli-preserve [--state-dir DIR] [--json] locks
    targetcli-preserve [--state-dir DIR] [--json] luns
    targetcli-preserve [--state-dir DIR] [--json] create NAME SIZE
    targetcli-preserve [--json] install-system [--root DIR] [--dry-run]
    targetcli-preserve [--state-dir DIR] [--json] backup LUN [--preserve ID] --repo REPO
    targetcli-preserve [--json] verify --repo REPO [BACKUP]
    targetcli-preserve [--json] restore --repo REPO BACKUP --to PATH
    targetcli-preserve [--json] backups --repo REPO

    targetcli-preserve [--state-dir DIR]                   the interactive shell (ui/)
    targetcli-preserve [--state-dir DIR] PATH COMMAND ...  one shell command (ui/)

Every command but ``serve`` and ``install-system`` is one request to a running daemon
over its control socket (``luns`` reads the state directory itself when no daemon runs);
``install-system`` puts the systemd unit, udev rule and D-Bus policy in place
(system_install.py); ``backup``, ``verify``, ``restore`` and ``backups`` work on a
backup repository (backup/; ``backup`` asks the daemon which volume is frozen, or reads
the state directory when none runs). Exit codes and error
messages: exits.py, the one boundary both programs share.

A preserve is named the same way everywhere: its ``id``, the issue sequence number
``seq`` where it cut, and its ``time``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, control
from ._errors import UserError
from .exits import ExitCode, message, run_guarded
from .options import add_serve_arguments, parse_size
from .statedir import check_state_dir, default_state_dir, lun_list, read_catalog

PROG = "targetcli-preserve"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        help="the daemon's state directory (default: the user data dir)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the result as JSON, for scripts",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Point-in-time copies of live iSCSI LUNs, with no I/O pause.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve", parents=[common], help="run the daemon and target in the foreground"
    )
    add_serve_arguments(serve)
    p = sub.add_parser(
        "preserve",
        parents=[common],
        help="cut LUNs now: one consistent point in time for all of them",
    )
    p.add_argument("luns", nargs="+", metavar="LUN")
    p.add_argument(
        "--wait",
        action="store_true",
        help="return only once the preserved volumes are drained and frozen",
    )
    p = sub.add_parser("status", parents=[common], help="the daemon and its LUNs")
    p.add_argument("lun", nargs="?", metavar="LUN")
    p = sub.add_parser("volumes", parents=[common], help="every volume of a LUN and its state")
    p.add_argument("lun", metavar="LUN")
    sub.add_parser("locks", parents=[common], help="the lock table now")
    sub.add_parser(
        "luns", parents=[common], help="every LUN of the state directory: number, size, WWN, served"
    )
    p = sub.add_parser(
        "create",
        parents=[common],
        help="serve a new LUN from now on (with --lio: as a backstore on the daemon's target)",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("size", metavar="SIZE", help="bytes, or a K/M/G/T suffix (e.g. 10G)")
    p = sub.add_parser(
        "install-system",
        parents=[common],
        help="install the systemd unit, udev rule and D-Bus policy of LIO mode",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        help="install under DIR (a DESTDIR for packaging); nothing is reloaded",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be written and run; change nothing"
    )
    _add_backup_parsers(sub, common)
    return parser


def _add_backup_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    def repo_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repo", required=True, metavar="REPO", help="the backup repository")

    p = sub.add_parser(
        "backup",
        parents=[common],
        help="copy a frozen volume into a backup repository (deduplicated chunks)",
    )
    p.add_argument("lun", metavar="LUN")
    p.add_argument(
        "--preserve",
        type=_preserve_id,
        metavar="ID",
        help="the preserve whose image to back up (default: the newest frozen one)",
    )
    repo_arg(p)
    p = sub.add_parser(
        "verify", parents=[common], help="check every chunk and image digest of backups"
    )
    repo_arg(p)
    p.add_argument("backup", nargs="?", metavar="BACKUP", help="one backup id (default: all)")
    p = sub.add_parser("restore", parents=[common], help="write a backup's image to a new file")
    repo_arg(p)
    p.add_argument("backup", metavar="BACKUP")
    p.add_argument("--to", required=True, metavar="PATH", help="the file to write (must not exist)")
    p = sub.add_parser(
        "backups", parents=[common], help="the backups of a repository and its stored size"
    )
    repo_arg(p)


def _preserve_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a preserve id: {text!r}")
    return int(text)


# words that are the shell's commands, not subcommands: ``targetcli-preserve ls`` runs
# one shell command, as ``targetcli ls`` does
SHELL_WORDS = frozenset({"ls", "cd", "pwd", "help", "exit", "bookmarks", "get", "set"})


def shell_route(argv: Sequence[str]) -> tuple[str | None, list[str], bool] | None:
    """``(state_dir, shell words, json)`` when ``argv`` is for the interactive shell:
    nothing (or only ``--state-dir DIR``) opens it; a path (``/preserve/lun0
    preserve``) or a shell-only command (``ls``) runs one shell command. After
    ``--json`` the daemon's replies are printed as JSON (for scripts that drive the
    shell). None: a subcommand (argparse)."""
    state_dir: str | None = None
    as_json = False
    rest = list(argv)
    while rest and (rest[0] in ("--state-dir", "--json") or rest[0].startswith("--state-dir=")):
        if rest[0] == "--json":
            as_json, rest = True, rest[1:]
        elif rest[0] == "--state-dir":
            if len(rest) < 2:
                return None  # argparse says what is missing
            state_dir, rest = rest[1], rest[2:]
        else:
            state_dir, rest = rest[0].partition("=")[2], rest[1:]
    if not rest or rest[0].startswith(("/", "@")) or rest[0] in (".", "..", *SHELL_WORDS):
        return state_dir, rest, as_json
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    route = shell_route(argv)
    if route is not None:
        from .ui import run_shell  # configshell's imports are for the shell alone

        state_dir, words, as_json = route
        return run_shell(state_dir, words, as_json=as_json)
    args = build_parser().parse_args(argv)
    args.state_dir = getattr(args, "state_dir", None)
    args.json = getattr(args, "json", False)
    if args.command == "serve":
        from .daemon import run_serve  # the daemon's imports are for serve alone

        return run_serve(args, PROG)

    def body() -> int:
        if args.command == "install-system":
            return _install_system(args)
        result = _run(args)
        text = json.dumps(result, indent=2) + "\n" if args.json else render(args.command, result)
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.command == "verify" and not result["ok"]:
            print(f"{PROG}: verify found corrupt backups", file=sys.stderr)
            return ExitCode.FAILED
        return ExitCode.OK

    def json_error(err: BaseException, _code: ExitCode) -> None:
        if args.json:  # scripts get the error as JSON on stdout too
            print(json.dumps({"error": message(err), "kind": type(err).__name__}), flush=True)

    return run_guarded(PROG, body, json_error)


def _run(args: argparse.Namespace) -> Any:
    if args.command == "preserve":
        return request_preserve(args.state_dir, args.luns, wait=args.wait)
    if args.command == "status":
        return request_status(args.state_dir, args.lun)
    if args.command == "volumes":
        return request_volumes(args.state_dir, args.lun)
    if args.command == "create":
        return request_create(args.state_dir, args.name, parse_size(args.size))
    if args.command == "luns":
        return request_luns(args.state_dir)
    if args.command in ("backup", "verify", "restore", "backups"):
        return run_backup_command(args)
    return request_locks(args.state_dir)


# ---- the requests: one control call each (the interactive shell makes the same) -------


def control_socket(state_dir: str | Path | None) -> Path:
    """The control socket of ``state_dir`` (default: the user data dir), checked usable."""
    path = Path(state_dir) if state_dir else default_state_dir()
    check_state_dir(path)
    return path / "control.sock"


def request_preserve(state_dir: str | Path | None, luns: list[str], wait: bool = False) -> Any:
    return control.call(
        control_socket(state_dir),
        "preserve",
        names=luns,
        wait=wait,
        timeout=None if wait else 60.0,
    )


def request_status(state_dir: str | Path | None, lun: str | None = None) -> Any:
    if lun is None:
        return control.call(control_socket(state_dir), "status")
    return control.call(control_socket(state_dir), "status", name=lun)


def request_volumes(state_dir: str | Path | None, lun: str) -> Any:
    return control.call(control_socket(state_dir), "volumes", name=lun)


def request_locks(state_dir: str | Path | None) -> Any:
    return control.call(control_socket(state_dir), "locks")


def request_luns(state_dir: str | Path | None) -> Any:
    socket_path = control_socket(state_dir)
    try:
        return control.call(socket_path, "luns")
    except control.DaemonUnreachable:  # the state directory still says what it holds
        return lun_list(read_catalog(socket_path.parent), served=set())


def request_create(state_dir: str | Path | None, name: str, size: int) -> Any:
    """A new LUN served by the running daemon (built-in target): its ``luns`` entry."""
    return control.call(control_socket(state_dir), "create", name=name, size=size)


def run_backup_command(args: argparse.Namespace) -> Any:
    """The repository commands (backup/operations.py), run in this process."""
    from .backup import operations  # zstandard and the volume API: for these alone

    repo = Path(args.repo)
    if args.command == "backup":
        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
        image = operations.find_frozen(state_dir, args.lun, args.preserve)
        return operations.backup(repo, image)
    if args.command == "verify":
        return operations.verify(repo, args.backup)
    if args.command == "restore":
        return operations.restore(repo, args.backup, Path(args.to))
    return operations.list_backups(repo)


def _install_system(args: argparse.Namespace) -> int:
    from . import system_install  # only this command needs it

    root = None if args.root is None else Path(args.root).absolute()
    if root is not None and root.exists() and not root.is_dir():
        raise UserError(f"--root {args.root}: not a directory")
    files = system_install.install_files(root, dry_run=args.dry_run)
    if args.json:
        print(json.dumps([f.as_json() for f in files], indent=2), flush=True)
    else:
        for f in files:
            print(f"{f.action} {f.path}", flush=True)

    def warn(text: str) -> None:
        print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    if root is None:
        system_install.reload_managers(dry_run=args.dry_run, warn=warn, say=say)
    return ExitCode.OK


# ---- human-readable output ------------------------------------------------------------


def render(command: str, result: Any) -> str:
    renderer = RENDERERS.get(command)
    return renderer(result) if renderer else json.dumps(result, indent=2) + "\n"


def render_preserve(result: dict[str, Any]) -> str:
    lines = [f"preserve {preserve_text(result)}"]
    for lun in result["luns"]:
        kept, live = lun["preserved"], lun["live"]
        lines.append(
            f"  {lun['name']}: preserved {kept['path']} ({kept['state']}), live {live['path']}"
        )
    return "\n".join(lines) + "\n"


def render_status(result: dict[str, Any]) -> str:
    head = (
        f"target {result['target']} on {result['portal']}\n"
        f"state {result['state_dir']}, next seq {result['next_seq']}\n"
    )
    rows = [("LUN", "NAME", "SIZE", "LIVE VOLUME", "IN FLIGHT", "VOLUMES", "LAST PRESERVE")]
    for lun in result["luns"]:
        last = lun["last_preserve"]
        rows.append(
            (
                str(lun["lun"]),
                lun["name"],
                str(lun["size"]),
                lun["live"]["path"],
                str(lun["inflight"]),
                str(lun["volumes"]),
                preserve_text(last) if last else "-",
            )
        )
    return head + _table(rows)


def render_volumes(result: list[dict[str, Any]]) -> str:
    rows = [("GEN", "STATE", "PRESERVE", "SEQ", "TIME", "CLONE", "HYDRATED", "PATH")]
    for vol in result:
        hydrated, made_by = vol["hydrated"], vol["preserve"]
        rows.append(
            (
                str(vol["generation"]),
                vol["state"] + (" DAMAGED" if vol["damaged"] else ""),
                "-" if made_by is None else str(made_by["id"]),
                "-" if made_by is None else str(made_by["seq"]),
                "-" if made_by is None else made_by["time"],
                vol["clone"] or "-",
                "-" if hydrated is None else f"{hydrated:.0%}",
                vol["path"],
            )
        )
    return _table(rows)


def render_locks(result: list[dict[str, Any]]) -> str:
    if not result:
        return "no locks held\n"
    rows = [("LUN", "NAME", "SEQ", "LBA", "BLOCKS", "STATE", "PRE-CUT", "WAITERS")]
    for lock in result:
        rows.append(
            (
                str(lock["lun"]),
                lock["name"],
                str(lock["seq"]),
                str(lock["lba"]),
                str(lock["blocks"]),
                lock["state"],
                "yes" if lock["pre_cut"] else "no",
                str(lock["waiters"]),
            )
        )
    return _table(rows)


def render_luns(result: list[dict[str, Any]]) -> str:
    if not result:
        return "no LUNs\n"
    rows = [("LUN", "NAME", "SIZE", "WWN", "VOLUMES", "SERVED")]
    for lun in result:
        rows.append(
            (
                str(lun["lun"]),
                lun["name"],
                str(lun["size"]),
                lun["wwn"],
                str(lun["volumes"]),
                "yes" if lun["served"] else "no",
            )
        )
    return _table(rows)


def render_create(result: dict[str, Any]) -> str:
    """The new LUN's entry, as one row of the ``luns`` table."""
    return render_luns([result])


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def render_backup(result: dict[str, Any]) -> str:
    return (
        f"backup {result['id']}\n"
        f"  LUN {result['lun']} generation {result['generation']}, "
        f"preserve {preserve_text(result['preserve'])}\n"
        f"  read {_size(result['bytes_read'])} in {result['chunks']} chunks "
        f"({result['zero_chunks']} all zero)\n"
        f"  stored {result['new_chunks']} new chunks, {_size(result['new_bytes_stored'])}; "
        f"dedup ratio {_ratio_text(result['dedup_ratio'])}\n"
    )


def render_verify(result: dict[str, Any]) -> str:
    if not result["backups"]:
        return "no backups\n"
    lines = []
    for b in result["backups"]:
        if b["ok"]:
            lines.append(f"{b['id']}: OK ({b['chunks']} chunks)")
            continue
        lines.append(f"{b['id']}: CORRUPT")
        for bad in b["bad_chunks"]:
            lines.append(f"  chunk {bad['index']} {bad['digest']}: {bad['why']}")
        if not b["bad_chunks"]:
            lines.append("  the image does not match its digest")
    return "\n".join(lines) + "\n"


def render_restore(result: dict[str, Any]) -> str:
    return (
        f"restored {result['id']} to {result['to']}: {_size(result['size'])} "
        f"({_size(result['bytes_written'])} written, {_size(result['holes'])} holes)\n"
    )


def render_backups(result: dict[str, Any]) -> str:
    rows = [("ID", "LUN", "PRESERVE", "SEQ", "PRESERVE TIME", "SIZE", "CHUNKS")]
    for b in result["backups"]:
        rows.append(
            (
                b["id"],
                b["lun"],
                str(b["preserve"]["id"]),
                str(b["preserve"]["seq"]),
                b["preserve"]["time"],
                _size(b["size"]),
                f"{b['chunks']} ({b['zero_chunks']} zero)",
            )
        )
    head = _table(rows) if result["backups"] else "no backups\n"
    return head + (
        f"repository {result['repository']}: {_size(result['logical_bytes'])} of images in "
        f"{_size(result['stored_bytes'])} stored, dedup ratio "
        f"{_ratio_text(result['dedup_ratio'])}\n"
    )


RENDERERS: dict[str, Callable[[Any], str]] = {
    "preserve": render_preserve,
    "status": render_status,
    "volumes": render_volumes,
    "locks": render_locks,
    "luns": render_luns,
    "create": render_create,
    "backup": render_backup,
    "verify": render_verify,
    "restore": render_restore,
    "backups": render_backups,
}


def preserve_text(preserve: dict[str, Any]) -> str:
    return f"{preserve['id']} at seq {preserve['seq']} ({preserve['time']})"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows
    )


if __name__ == "__main__":
    sys.exit(main())
