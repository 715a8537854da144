"""targetcli-preserve: the one-shot command line (scripts depend on it: keep it stable).

    targetcli-preserve [--state-dir DIR] serve [--portal HOST:PORT] [--lun NAME:SIZE ...]
    targetcli-preserve [--state-dir DIR] [--json] preserve [--wait] LUN [LUN ...]
    targetcli-preserve [--state-dir DIR] [--json] status [LUN]
    targetcli-preserve [--state-dir DIR] [--json] volumes LUN
    targetcli-preserve [--state-dir DIR] [--json] locks
    targetcli-preserve [--state-dir DIR] [--json] luns
    targetcli-preserve [--state-dir DIR] [--json] create NAME SIZE
    targetcli-preserve [--json] install-system [--root DIR] [--dry-run]

Every command but ``serve`` and ``install-system`` is one request to a running daemon
over its control socket (``luns`` reads the state directory itself when no daemon runs);
``install-system`` puts the systemd unit, udev rule and D-Bus policy in place
(system_install.py). Exit codes and error
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
    return parser


def main(argv: list[str] | None = None) -> int:
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
        text = json.dumps(result, indent=2) + "\n" if args.json else _render(args.command, result)
        sys.stdout.write(text)
        sys.stdout.flush()
        return ExitCode.OK

    def json_error(err: BaseException, _code: ExitCode) -> None:
        if args.json:  # scripts get the error as JSON on stdout too
            print(json.dumps({"error": message(err), "kind": type(err).__name__}), flush=True)

    return run_guarded(PROG, body, json_error)


def _run(args: argparse.Namespace) -> Any:
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    check_state_dir(state_dir)
    socket_path = state_dir / "control.sock"
    if args.command == "preserve":
        return control.call(
            socket_path,
            "preserve",
            names=args.luns,
            wait=args.wait,
            timeout=None if args.wait else 60.0,
        )
    if args.command in ("status", "volumes"):
        kwargs = {"name": args.lun} if args.lun is not None else {}
        return control.call(socket_path, args.command, **kwargs)
    if args.command == "create":
        return control.call(socket_path, "create", name=args.name, size=parse_size(args.size))
    if args.command == "luns":
        try:
            return control.call(socket_path, "luns")
        except control.DaemonUnreachable:  # the state directory still says what it holds
            return lun_list(read_catalog(state_dir), served=set())
    return control.call(socket_path, args.command)


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


def _render(command: str, result: Any) -> str:
    render = _RENDERERS.get(command)
    return render(result) if render else json.dumps(result, indent=2) + "\n"


def _render_preserve(result: dict[str, Any]) -> str:
    lines = [f"preserve {_preserve_text(result)}"]
    for lun in result["luns"]:
        kept, live = lun["preserved"], lun["live"]
        lines.append(
            f"  {lun['name']}: preserved {kept['path']} ({kept['state']}), live {live['path']}"
        )
    return "\n".join(lines) + "\n"


def _render_status(result: dict[str, Any]) -> str:
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
                _preserve_text(last) if last else "-",
            )
        )
    return head + _table(rows)


def _render_volumes(result: list[dict[str, Any]]) -> str:
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


def _render_locks(result: list[dict[str, Any]]) -> str:
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


def _render_luns(result: list[dict[str, Any]]) -> str:
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


_RENDERERS: dict[str, Callable[[Any], str]] = {
    "preserve": _render_preserve,
    "status": _render_status,
    "volumes": _render_volumes,
    "locks": _render_locks,
    "luns": _render_luns,
    "create": lambda lun: _render_luns([lun]),
}


def _preserve_text(preserve: dict[str, Any]) -> str:
    return f"{preserve['id']} at seq {preserve['seq']} ({preserve['time']})"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows
    )


if __name__ == "__main__":
    sys.exit(main())
