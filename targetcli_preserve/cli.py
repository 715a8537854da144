"""targetcli-preserve: the one-shot command line (scripts depend on it: keep it stable).

    targetcli-preserve [--state-dir DIR] serve [--portal HOST:PORT] [--lun NAME:SIZE ...]
    targetcli-preserve [--state-dir DIR] [--json] preserve [--wait] LUN [LUN ...]
    targetcli-preserve [--state-dir DIR] [--json] status [LUN]
    targetcli-preserve [--state-dir DIR] [--json] volumes LUN
    targetcli-preserve [--state-dir DIR] [--json] locks

Every command but ``serve`` is one request to a running daemon over its control socket.
Exit codes: 0 done; 1 the operation failed (storage, daemon); 2 bad usage or input
(unknown LUN, bad argument); 3 no daemon is running for the state directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import control
from ._errors import PreserveError, UserError
from .daemon import add_serve_arguments, default_state_dir, run_serve

EXIT_FAILED, EXIT_USAGE, EXIT_NO_DAEMON = 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS,
                        help="the daemon's state directory (default: the user data dir)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the result as JSON, for scripts")
    parser = argparse.ArgumentParser(
        prog="targetcli-preserve", parents=[common],
        description="Point-in-time copies of live iSCSI LUNs, with no I/O pause.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", parents=[common], help="run the daemon and target in the foreground")
    add_serve_arguments(serve)
    p = sub.add_parser("preserve", parents=[common],
                       help="cut LUNs now: one consistent point in time for all of them")
    p.add_argument("luns", nargs="+", metavar="LUN")
    p.add_argument("--wait", action="store_true",
                   help="return only once the preserved volumes are drained and frozen")
    p = sub.add_parser("status", parents=[common], help="the daemon and its LUNs")
    p.add_argument("lun", nargs="?", metavar="LUN")
    p = sub.add_parser("volumes", parents=[common], help="every volume of a LUN and its state")
    p.add_argument("lun", metavar="LUN")
    sub.add_parser("locks", parents=[common], help="the lock table now")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.state_dir = getattr(args, "state_dir", None)
    args.json = getattr(args, "json", False)
    if args.command == "serve":
        return run_serve(args)
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    socket_path = state_dir / "control.sock"
    try:
        if args.command == "preserve":
            result = control.call(socket_path, "preserve", luns=args.luns, wait=args.wait,
                                  timeout=None if args.wait else 60.0)
        elif args.command in ("status", "volumes"):
            kwargs = {"lun": args.lun} if args.lun is not None else {}
            result = control.call(socket_path, args.command, **kwargs)
        else:
            result = control.call(socket_path, args.command)
    except control.DaemonUnreachable as err:
        return _fail(err, EXIT_NO_DAEMON, args.json)
    except UserError as err:
        return _fail(err, EXIT_USAGE, args.json)
    except PreserveError as err:
        return _fail(err, EXIT_FAILED, args.json)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_render(args.command, result))
    return 0


def _fail(err: PreserveError, code: int, as_json: bool) -> int:
    if as_json:
        json.dump({"error": str(err), "kind": type(err).__name__}, sys.stdout)
        sys.stdout.write("\n")
    print(f"targetcli-preserve: {err}", file=sys.stderr)
    return code


# ---- human-readable output ------------------------------------------------------------


def _render(command: str, result: Any) -> str:
    if command == "preserve":
        lines = [f"preserve {result['cut']}: cut at seq {result['seq']} ({result['time']})"]
        for lun in result["luns"]:
            kept, live = lun["preserved"], lun["live"]
            lines.append(f"  {lun['name']}: preserved {kept['path']} ({kept['state']}), "
                         f"live {live['path']}")
        return "\n".join(lines) + "\n"
    if command == "status":
        lines = [f"target {result['target']} on {result['portal']}",
                 f"state {result['state_dir']}, next seq {result['next_seq']}"]
        rows = [("LUN", "NAME", "SIZE", "LIVE VOLUME", "IN FLIGHT", "VOLUMES", "LAST CUT")]
        for lun in result["luns"]:
            last = lun["last_cut"]
            rows.append((str(lun["lun"]), lun["name"], str(lun["size"]), lun["live"]["path"],
                         str(lun["inflight"]), str(lun["volumes"]),
                         f"{last['seq']} @ {last['time']}" if last else "-"))
        return "\n".join(lines) + "\n" + _table(rows)
    if command == "volumes":
        rows = [("GEN", "STATE", "CUT", "CLONE", "HYDRATED", "PATH")]
        for vol in result:
            hydrated = vol["hydrated"]
            rows.append((str(vol["generation"]), vol["state"] + (" DAMAGED" if vol["damaged"] else ""),
                         "-" if vol["cut"] is None else str(vol["cut"]), vol["clone"] or "-",
                         "-" if hydrated is None else f"{hydrated:.0%}", vol["path"]))
        return _table(rows)
    if command == "locks":
        if not result:
            return "no locks held\n"
        rows = [("LUN", "SEQ", "LBA", "BLOCKS", "STATE", "PRE-CUT", "WAITERS")]
        for lock in result:
            rows.append((lock["lun"], str(lock["seq"]), str(lock["lba"]), str(lock["blocks"]),
                         lock["state"], "yes" if lock["pre_cut"] else "no", str(lock["waiters"])))
        return _table(rows)
    return json.dumps(result, indent=2) + "\n"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows
    )


if __name__ == "__main__":
    sys.exit(main())
