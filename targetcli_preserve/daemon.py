"""targetcli-preserved: the daemon's life, from start to stop.

Start-up order (docs/design.md rule 9): bind the portal (so that an address in use
fails before anything is created; with ``--lio``, check that LIO can serve instead),
lock the state directory, replay the journal, check every ``--lun`` against it, make
the state consistent (recovery.py), open or create the LUNs' volumes, then serve: the
control socket and the built-in iSCSI target, or LIO's (kernel_target.py). What a
start made is undone in reverse order when a later step fails, and on stop; a state
directory that the failed start itself created is removed. LIO's configuration is
the exception: it outlives the daemon (lio.py says why).

The pieces live elsewhere: options in options.py, recovery in recovery.py, the control
commands' replies in commands.py, the data path in datapath.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import TextIO

from . import __version__, lio, notify
from ._errors import UserError
from .boot import current_boot
from .catalog import Catalog, replay
from .commands import ControlCommands
from .control import ControlServer
from .datapath import Datapath
from .exits import ExitCode, run_guarded
from .iscsi.server import IscsiServer
from .journal import Journal
from .kernel_target import KernelTarget
from .options import Config, add_serve_arguments, config_from, format_portal
from .preserve import Engine
from .records import read_records
from .recovery import recover
from .scsi.target import ScsiTarget
from .serving import LunSet
from .statedir import check_state_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """What a started daemon runs."""

    catalog: Catalog
    engine: Engine
    datapath: Datapath
    target: ScsiTarget
    server: IscsiServer | None  # the built-in target; None with --lio
    kernel: KernelTarget | None  # the LUNs' TCMU devices with --lio; else None
    control: ControlServer
    commands: ControlCommands

    @property
    def lun_numbers(self) -> dict[str, int]:
        """Served LUN name -> LUN number."""
        return self.commands.lun_numbers


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._services: Services | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the daemon is not running")
        return self._services

    async def start(self) -> None:
        """Bring the daemon up; on failure undo what this start made and re-raise."""
        cfg = self.config
        check_state_dir(cfg.state_dir)
        created = not cfg.state_dir.exists()
        stack = contextlib.AsyncExitStack()
        try:
            self._services = await self._start(stack)
        except BaseException:
            await stack.aclose()
            if created:
                shutil.rmtree(cfg.state_dir, ignore_errors=True)
            raise
        self._stack = stack

    async def stop(self) -> None:
        """Undo everything :meth:`start` made, newest first; safe to call again."""
        stack, self._stack, self._services = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> Services:
        cfg = self.config
        server: IscsiServer | None = None
        if cfg.lio:
            reason = lio.unavailable()  # before any file exists, like a portal in use
            if reason is not None:
                raise lio.LioError(reason)
        else:
            server = IscsiServer(cfg.host, cfg.port, {})
            await server.listen()  # a portal in use fails here, before any file exists
            stack.push_async_callback(server.close)
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise UserError(
                f"cannot create state directory {cfg.state_dir}: {err.strerror}"
            ) from err
        stack.callback(os.close, self._lock_state_dir())
        journal_path = cfg.state_dir / "journal"
        catalog = replay(cfg.state_dir, read_records(journal_path))
        for spec in cfg.luns:  # refuse a wrong --lun before the journal gets any record
            existing = catalog.luns.get(spec.name)
            if existing is not None and existing.size != spec.size:
                raise UserError(
                    f"LUN {spec.name!r} exists with size {existing.size}, not {spec.size}"
                )
        journal = Journal(journal_path)
        stack.callback(journal.close)
        await recover(catalog, journal, current_boot())
        engine = Engine(first_seq=catalog.last_seq, first_cut=catalog.next_cut_id)
        datapath = Datapath(engine, catalog, journal, {})
        stack.push_async_callback(datapath.close)  # closes every volume it was given
        # Closed before the data path: the target stops taking commands and waits for
        # those still running (closing it twice is harmless: the first callback above
        # only matters if a start fails before this point).
        if server is not None:
            stack.push_async_callback(server.close)
        target = ScsiTarget()
        luns = LunSet(catalog, journal, engine, datapath, target)
        for spec in cfg.luns:
            await luns.serve(spec)
        kernel: KernelTarget | None = None
        if server is not None:
            server.targets[cfg.iqn] = target
            port = server.port
        else:
            kernel = KernelTarget(lio.Lio(), luns, cfg.iqn, (cfg.host, cfg.port))
            stack.push_async_callback(kernel.close)  # before the data path closes
            kernel.configure([spec.name for spec in cfg.luns])
            port = cfg.port
        commands = ControlCommands(
            cfg, catalog, engine, datapath, format_portal(cfg.host, port), luns, kernel
        )
        control = ControlServer(cfg.state_dir / "control.sock", commands.handlers())
        await control.start()
        stack.push_async_callback(control.close)
        if server is not None:
            await server.start()
        else:
            assert kernel is not None
            await kernel.start()
        return Services(catalog, engine, datapath, target, server, kernel, control, commands)

    def _lock_state_dir(self) -> int:
        """Only one daemon per state directory: hold an flock(2) while running."""
        path = self.config.state_dir / "daemon.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another daemon is using {self.config.state_dir}") from None
        return fd


# ---- running it ---------------------------------------------------------------------


async def serve(config: Config, out: TextIO = sys.stdout) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    try:
        services = daemon.services
        fabric = " (kernel LIO)" if config.lio else ""
        if config.lio and not config.luns:  # no target of its own (kernel_target.py)
            where = "the user:preserve backstores made in targetcli (kernel LIO)"
        else:
            where = f"target {config.iqn} on {services.commands.portal}{fabric}"
        print(where, file=out)
        for name, number in sorted(services.lun_numbers.items(), key=lambda item: item[1]):
            record = services.catalog.luns[name]
            live = services.catalog.volume_path(name, record.live.index)
            via = ""
            if services.kernel is not None:
                via = f" via /dev/{services.kernel.uio_of(name)}"
            print(f"  LUN {number}: {name} ({_human(record.size)}) {live}{via}", file=out)
        print(f"state {config.state_dir}; control socket {services.control.path}", file=out)
        print("ready", file=out, flush=True)
        luns = len(services.lun_numbers)
        notify.ready(f"serving {luns} LUN{'' if luns == 1 else 's'}: {where}")
        await stop.wait()
        notify.stopping()
    finally:
        await daemon.stop()


def _human(size: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}iB"
    return f"{size} bytes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="targetcli-preserved", description="Serve LUNs over iSCSI with live preserve."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--state-dir", help="state directory (default: the user data dir)")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    return run_serve(args, parser.prog)


def run_serve(args: argparse.Namespace, prog: str) -> int:
    """Run ``serve`` in the foreground; exit 0 after a clean stop (see exits.py)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        asyncio.run(serve(config_from(args)))
        return ExitCode.OK

    return run_guarded(prog, body)


if __name__ == "__main__":
    sys.exit(main())
