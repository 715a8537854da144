"""targetcli-preserved: the daemon that owns the engine, the volumes and the target.

Start-up order (docs/design.md rule 9): lock the state directory, replay the journal, make
the state consistent (roll back cuts that never committed, remove orphan clone files,
freeze generations whose pre-cut commands the previous run's end cut off), open or
create the LUNs' volumes, then serve: the built-in iSCSI target and the control socket.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import re
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from . import __version__
from ._errors import PreserveError, UserError
from .catalog import BLOCK_SIZE, Catalog, CutRecord, replay
from .control import ControlServer
from .datapath import Datapath
from .iscsi.server import IscsiServer
from .journal import Journal, current_boot
from .options import Config, LunSpec, add_serve_arguments, config_from, format_portal
from .preserve import Engine, VolumeState
from .scsi.target import LogicalUnit, LuIdentity, ScsiTarget
from .statedir import check_state_dir, lun_list
from .volumes import Volume, create_volume, open_volume, remove_volume

log = logging.getLogger(__name__)

_VOLUME_FILE = re.compile(r"vol-(\d{6})\.img\Z")


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog: Catalog | None = None
        self.engine: Engine | None = None
        self.datapath: Datapath | None = None
        self.target: ScsiTarget | None = None
        self.server: IscsiServer | None = None
        self.control: ControlServer | None = None
        self.lun_numbers: dict[str, int] = {}
        self._lock_fd: int | None = None

    # ---- start and stop -----------------------------------------------------------

    async def start(self) -> None:
        """Bring the daemon up; what could fail is checked before anything is created,
        and a state directory this attempt created is removed again if it fails."""
        cfg = self.config
        check_state_dir(cfg.state_dir)
        self.server = IscsiServer(cfg.host, cfg.port, {})
        await self.server.listen()  # a portal in use fails here, before any file exists
        created = not cfg.state_dir.exists()
        try:
            await self._start_in_state_dir()
        except BaseException:
            await self.stop()
            if created:
                shutil.rmtree(cfg.state_dir, ignore_errors=True)
            raise

    async def _start_in_state_dir(self) -> None:
        cfg = self.config
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise UserError(
                f"cannot create state directory {cfg.state_dir}: {err.strerror}"
            ) from err
        self._lock_state_dir()
        journal_path = cfg.state_dir / "journal"
        catalog = replay(cfg.state_dir, Journal.read(journal_path))
        for spec in cfg.luns:  # refuse a wrong --lun before the journal gets any record
            record = catalog.luns.get(spec.name)
            if record is not None and record.size != spec.size:
                raise UserError(
                    f"LUN {spec.name!r} exists with size {record.size}, not {spec.size}"
                )
        journal = Journal(journal_path)
        self.catalog = catalog
        volumes: dict[tuple[str, int], Volume] = {}
        try:
            await self._recover(catalog, journal)
            for spec in cfg.luns:
                await self._ensure_lun(catalog, journal, spec)
                record = catalog.luns[spec.name]
                live = record.live.index
                volumes[(spec.name, live)] = await open_volume(catalog.volume_path(spec.name, live))
            engine = Engine(first_seq=catalog.last_seq, first_cut=catalog.next_cut_id)
            for spec in cfg.luns:
                gens = catalog.luns[spec.name].generations
                engine.add_lun(spec.name, [(g.index, g.cut_seq, g.cut_id) for g in gens])
        except BaseException:
            for vol in volumes.values():
                await vol.close()
            journal.close()
            raise
        self.engine = engine
        self.datapath = Datapath(engine, catalog, journal, volumes)
        for spec in cfg.luns:
            self.datapath.prepare_standby(spec.name)
        self.lun_numbers = {spec.name: catalog.luns[spec.name].number for spec in cfg.luns}
        self.target = ScsiTarget(
            {
                number: LogicalUnit(
                    self.datapath.store(name),
                    LuIdentity(name=name, wwn=uuid.UUID(catalog.luns[name].wwn)),
                )
                for name, number in self.lun_numbers.items()
            }
        )
        self.server.targets[cfg.iqn] = self.target
        self.control = ControlServer(cfg.state_dir / "control.sock", self._handlers())
        await self.control.start()
        await self.server.start()

    async def stop(self) -> None:
        """Stop whatever :meth:`start` got to; safe to call again."""
        control, self.control = self.control, None
        if control is not None:
            await control.close()
        server, self.server = self.server, None
        if server is not None:
            await server.close()
        datapath, self.datapath = self.datapath, None
        if datapath is not None:
            await datapath.close()
            datapath.journal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock_state_dir(self) -> None:
        path = self.config.state_dir / "daemon.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another daemon is using {self.config.state_dir}") from None
        self._lock_fd = fd

    async def _recover(self, catalog: Catalog, journal: Journal) -> None:
        """Make the state directory consistent before any I/O (rule 9)."""
        for cut in catalog.cuts_to_roll_back(current_boot()):  # V stays (or is again) live
            for name, index in cut.luns.items():
                await remove_volume(catalog.volume_path(name, index))
            record = {
                "op": "abort",
                "cut": cut.id,
                "error": "the daemon stopped before the "
                "preserve was " + ("durable" if cut.committed else "committed"),
            }
            journal.append(record)
            catalog.apply(record)
            log.warning("rolled back preserve %d at seq %d: %s", cut.id, cut.seq, record["error"])
        for name, index in catalog.generations_to_freeze():  # its pre-cut commands ended
            record = {"op": "freeze", "lun": name, "gen": index}
            journal.append(record)
            catalog.apply(record)
        for name, lun in catalog.luns.items():  # clones begun before their ``cut`` record
            for path in _volume_files(catalog.lun_dir(name)):
                if int(_VOLUME_FILE.match(path.name).group(1)) > lun.live.index:
                    await remove_volume(path)

    async def _ensure_lun(self, catalog: Catalog, journal: Journal, spec: LunSpec) -> None:
        if spec.name in catalog.luns:
            return  # its size was checked at start
        lun_dir = catalog.lun_dir(spec.name)
        lun_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in _volume_files(lun_dir):  # a creation that crashed before its record
            await remove_volume(path)
        path = catalog.volume_path(spec.name, 0)
        vol = await create_volume(path, spec.size)
        await vol.close()
        record = {
            "op": "lun",
            "name": spec.name,
            "size": spec.size,
            "block_size": BLOCK_SIZE,
            "wwn": str(uuid.uuid4()),
            "number": catalog.free_lun_number(),
        }
        try:
            journal.append(record)
        except PreserveError:
            await remove_volume(path)  # creation is transactional
            raise
        catalog.apply(record)

    # ---- control commands ---------------------------------------------------------

    def _handlers(self) -> dict[str, Any]:
        return {
            "preserve": self.cmd_preserve,
            "status": self.cmd_status,
            "volumes": self.cmd_volumes,
            "locks": self.cmd_locks,
            "luns": self.cmd_luns,
        }

    def _served(self, name: Any) -> str:
        if not isinstance(name, str) or name not in self.lun_numbers:
            raise UserError(f"no LUN named {name!r} is served")
        return name

    async def cmd_preserve(self, luns: list[str], wait: bool = False) -> dict[str, Any]:
        if not isinstance(luns, list) or not luns:
            raise UserError("preserve needs at least one LUN")
        names = [self._served(n) for n in luns]
        cut = await self.datapath.preserve(names)
        await self.datapath.durable(cut)  # the admin's preserve survives a power loss
        if wait:
            await asyncio.gather(
                *(self.datapath.wait_frozen(n, cut.new_generation[n] - 1) for n in cut.luns)
            )
        return {
            **preserve_info(self.catalog.cuts[cut.id]),
            "luns": [
                {
                    "name": n,
                    "inflight_at_cut": cut.inflight_at_cut[n],
                    "preserved": self._volume_info(n, cut.new_generation[n] - 1),
                    "live": self._volume_info(n, cut.new_generation[n]),
                }
                for n in cut.luns
            ],
        }

    async def cmd_status(self, lun: str | None = None) -> dict[str, Any]:
        names = [self._served(lun)] if lun is not None else list(self.lun_numbers)
        return {
            "target": self.config.iqn,
            "portal": format_portal(self.config.host, self.server.port),
            "state_dir": str(self.config.state_dir),
            "next_seq": self.engine.next_seq,
            "luns": [self._lun_status(n) for n in names],
        }

    def _lun_status(self, name: str) -> dict[str, Any]:
        record = self.catalog.luns[name]
        gens = self.engine.generations(name)
        cuts = [self.catalog.cuts[g.cut_id] for g in gens if g.cut_id is not None]
        return {
            "name": name,
            "lun": self.lun_numbers[name],
            "size": record.size,
            "block_size": record.block_size,
            "wwn": record.wwn,
            "live": self._volume_info(name, gens[-1].index),
            "inflight": self.engine.inflight(name),
            "volumes": len(gens),
            "draining": sum(g.state is VolumeState.DRAINING for g in gens),
            "last_preserve": preserve_info(cuts[-1]) if cuts else None,
        }

    async def cmd_volumes(self, lun: str) -> list[dict[str, Any]]:
        name = self._served(lun)
        return [self._volume_info(name, g.index) for g in self.engine.generations(name)]

    def _volume_info(self, name: str, index: int) -> dict[str, Any]:
        gen = next(g for g in self.engine.generations(name) if g.index == index)
        vol = self.datapath.volumes.get((name, index))
        cut = self.catalog.cuts.get(gen.cut_id) if gen.cut_id is not None else None
        return {
            "generation": index,
            "path": str(self.catalog.volume_path(name, index)),
            "state": gen.state.value,
            "preserve": preserve_info(cut) if cut is not None else None,
            "damaged": gen.damaged,
            "clone": vol.strategy.value if vol is not None and vol.strategy else None,
            "hydrated": vol.hydration_progress() if vol is not None else None,
        }

    async def cmd_luns(self) -> list[dict[str, Any]]:
        return lun_list(self.catalog, served=set(self.lun_numbers))

    async def cmd_locks(self) -> list[dict[str, Any]]:
        return [
            {
                "lun": lock.lun,
                "seq": lock.seq,
                "lba": lock.start,
                "blocks": lock.end - lock.start,
                "state": "held" if lock.held else "waiting",
                "pre_cut": lock.pre_cut,
                "waiters": lock.waiters,
            }
            for lock in self.engine.locks()
        ]


def preserve_info(cut: CutRecord) -> dict[str, Any]:
    """How every front end names a preserve: its id, the issue sequence number where
    it cut (commands with a lower ``seq`` are in the preserved image), and its time."""
    return {"id": cut.id, "seq": cut.seq, "time": cut.time}


def _volume_files(lun_dir: Path) -> list[Path]:
    if not lun_dir.is_dir():
        return []
    return sorted(p for p in lun_dir.iterdir() if _VOLUME_FILE.match(p.name))


# ---- running it ---------------------------------------------------------------------


async def serve(config: Config, out=sys.stdout) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    try:
        print(f"target {config.iqn} on {format_portal(config.host, daemon.server.port)}", file=out)
        for name, number in sorted(daemon.lun_numbers.items(), key=lambda item: item[1]):
            record = daemon.catalog.luns[name]
            live = daemon.catalog.volume_path(name, record.live.index)
            print(f"  LUN {number}: {name} ({_human(record.size)}) {live}", file=out)
        print(f"state {config.state_dir}; control socket {daemon.control.path}", file=out)
        print("ready", file=out, flush=True)
        await stop.wait()
    finally:
        await daemon.stop()


def _human(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        scale = 1 << {"K": 10, "M": 20, "G": 30, "T": 40}[unit]
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}iB"
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
    """Run ``serve``; errors are one line on stderr, prefixed with ``prog``.
    Exit status: 0 clean stop, 2 bad input, 1 could not start or run."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config_from(args)))
    except PreserveError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2 if isinstance(err, UserError) else 1
    except OSError as err:  # storage or the system failed outside a PreserveError
        where = f" ({err.filename})" if err.filename else ""
        print(f"{prog}: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
