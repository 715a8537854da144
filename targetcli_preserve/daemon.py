"""targetcli-preserved: the daemon that owns the engine, the volumes and the target.

Start-up order (DESIGN.md rule 9): lock the state directory, replay the journal, make
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
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import PreserveError, UserError
from .catalog import BLOCK_SIZE, Catalog, check_lun_name, replay
from .control import ControlServer
from .datapath import Datapath
from .iscsi.server import IscsiServer
from .journal import Journal, current_boot
from .preserve import Engine, VolumeState
from .scsi.target import LogicalUnit, LuIdentity, ScsiTarget
from .volumes import Volume, create_volume, open_volume, remove_volume

log = logging.getLogger(__name__)

DEFAULT_IQN = "iqn.2026-11.org.targetcli-preserve:default"
DEFAULT_PORTAL = ("127.0.0.1", 3260)
DEFAULT_LUN_SIZE = 1 << 30
_VOLUME_FILE = re.compile(r"vol-(\d{6})\.img\Z")


@dataclass(frozen=True)
class LunSpec:
    name: str
    size: int


@dataclass
class Config:
    state_dir: Path
    host: str = DEFAULT_PORTAL[0]
    port: int = DEFAULT_PORTAL[1]
    luns: list[LunSpec] = field(default_factory=lambda: [LunSpec("lun0", DEFAULT_LUN_SIZE)])
    iqn: str = DEFAULT_IQN


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
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_state_dir()
        journal_path = cfg.state_dir / "journal"
        catalog = replay(cfg.state_dir, Journal.read(journal_path))
        journal = Journal(journal_path)
        self.catalog = catalog
        await self._recover(catalog, journal)
        volumes: dict[tuple[str, int], Volume] = {}
        try:
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
            raise
        self.engine = engine
        self.datapath = Datapath(engine, catalog, journal, volumes)
        for spec in cfg.luns:
            self.datapath.prepare_standby(spec.name)
        self.lun_numbers = {spec.name: number for number, spec in enumerate(cfg.luns)}
        self.target = ScsiTarget({
            number: LogicalUnit(
                self.datapath.store(name),
                LuIdentity(name=name, wwn=uuid.UUID(catalog.luns[name].wwn)),
            )
            for name, number in self.lun_numbers.items()
        })
        self.server = IscsiServer(cfg.host, cfg.port, {cfg.iqn: self.target})
        await self.server.start()
        self.control = ControlServer(cfg.state_dir / "control.sock", self._handlers())
        await self.control.start()

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.close()
        if self.server is not None:
            await self.server.close()
        if self.datapath is not None:
            await self.datapath.close()
            self.datapath.journal.close()
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
            record = {"op": "abort", "cut": cut.id, "error": "the daemon stopped before the "
                      "preserve was " + ("durable" if cut.committed else "committed")}
            journal.append(record)
            catalog.apply(record)
            log.warning("rolled back preserve %d (T=%d): %s", cut.id, cut.seq, record["error"])
        for name, index in catalog.generations_to_freeze():  # its pre-cut commands ended
            record = {"op": "freeze", "lun": name, "gen": index}
            journal.append(record)
            catalog.apply(record)
        for name, lun in catalog.luns.items():  # clones begun before their ``cut`` record
            for path in _volume_files(catalog.lun_dir(name)):
                if int(_VOLUME_FILE.match(path.name).group(1)) > lun.live.index:
                    await remove_volume(path)

    async def _ensure_lun(self, catalog: Catalog, journal: Journal, spec: LunSpec) -> None:
        record = catalog.luns.get(spec.name)
        if record is not None:
            if record.size != spec.size:
                raise UserError(
                    f"LUN {spec.name!r} exists with size {record.size}, not {spec.size}"
                )
            return
        lun_dir = catalog.lun_dir(spec.name)
        lun_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in _volume_files(lun_dir):  # a creation that crashed before its record
            await remove_volume(path)
        path = catalog.volume_path(spec.name, 0)
        vol = await create_volume(path, spec.size)
        await vol.close()
        record = {
            "op": "lun", "name": spec.name, "size": spec.size, "block_size": BLOCK_SIZE,
            "wwn": str(uuid.uuid4()),
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
            await asyncio.gather(*(
                self.datapath.wait_frozen(n, cut.new_generation[n] - 1) for n in cut.luns
            ))
        record = self.catalog.cuts[cut.id]
        return {
            "cut": cut.id, "seq": cut.seq, "time": record.time,
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
            "portal": f"{self.config.host}:{self.server.port}",
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
            "last_cut": (
                {"cut": cuts[-1].id, "seq": cuts[-1].seq, "time": cuts[-1].time} if cuts else None
            ),
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
            "cut": gen.cut_seq if cut is not None else None,
            "cut_id": gen.cut_id,
            "time": cut.time if cut is not None else None,
            "damaged": gen.damaged,
            "clone": vol.strategy.value if vol is not None and vol.strategy else None,
            "hydrated": vol.hydration_progress() if vol is not None else None,
        }

    async def cmd_locks(self) -> list[dict[str, Any]]:
        return [
            {
                "lun": lock.lun, "seq": lock.seq, "lba": lock.start,
                "blocks": lock.end - lock.start,
                "state": "held" if lock.held else "waiting",
                "pre_cut": lock.pre_cut, "waiters": lock.waiters,
            }
            for lock in self.engine.locks()
        ]


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
    try:
        await daemon.start()
    except BaseException:
        await daemon.stop()
        raise
    try:
        print(f"target {config.iqn} on {config.host}:{daemon.server.port}", file=out)
        for name, number in daemon.lun_numbers.items():
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


def parse_size(text: str) -> int:
    """Bytes, or a number with a K/M/G/T suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"bad size {text!r}: use bytes or a K/M/G/T suffix, e.g. 1G")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[match.group(2).upper()]
    size = int(match.group(1)) << shift
    if size <= 0 or size % BLOCK_SIZE:
        raise UserError(f"bad size {text!r}: must be a positive multiple of {BLOCK_SIZE} bytes")
    return size


def parse_lun(text: str) -> LunSpec:
    name, sep, size = text.rpartition(":")
    if not sep:
        raise UserError(f"bad --lun {text!r}: use NAME:SIZE, e.g. lun0:1G")
    return LunSpec(check_lun_name(name), parse_size(size))


def parse_portal(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise UserError(f"bad --portal {text!r}: use HOST:PORT, e.g. 127.0.0.1:3260")
    return host.strip("[]"), int(port)


def default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("targetcli-preserve"))


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--portal", default=f"{DEFAULT_PORTAL[0]}:{DEFAULT_PORTAL[1]}",
                        help="address to listen on, HOST:PORT (default %(default)s)")
    parser.add_argument("--lun", action="append", default=[], metavar="NAME:SIZE",
                        help="serve LUN NAME of SIZE bytes (K/M/G/T suffixes); repeatable; "
                             "default lun0:1G; an existing LUN is reused")
    parser.add_argument("--iqn", default=DEFAULT_IQN, help="target name (default %(default)s)")


def config_from(args: argparse.Namespace) -> Config:
    host, port = parse_portal(args.portal)
    luns = [parse_lun(text) for text in args.lun] or [LunSpec("lun0", DEFAULT_LUN_SIZE)]
    if len({spec.name for spec in luns}) != len(luns):
        raise UserError("a LUN name is given twice")
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    return Config(state_dir.resolve(), host, port, luns, args.iqn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="targetcli-preserved", description="Serve LUNs over iSCSI with live preserve."
    )
    parser.add_argument("--state-dir", help="state directory (default: the user data dir)")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    return run_serve(args)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config_from(args)))
    except PreserveError as err:
        print(f"targetcli-preserved: {err}", file=sys.stderr)
        return 2 if isinstance(err, UserError) else 1
    except OSError as err:  # e.g. the portal address is in use
        print(f"targetcli-preserved: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
