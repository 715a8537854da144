#!/usr/bin/env python3
"""Throughput behind kernel LIO: the daemon's TCMU handler next to LIO's own ``fileio``.

Runs inside the QEMU guest of ``scripts/bench-lio`` (or any machine with LIO, as root).
Both backends export the same backing file, one after the other, never at once:

* ``user:preserve``: ``targetcli-preserve serve --lio`` with one LUN; the backing file
  is that LUN's live volume, found with ``--json status``;
* ``fileio``: a LIO ``fileio`` backstore (rtslib-fb directly) on that same file, on its
  own target and port, made only after the daemon has stopped. ``write_back=True``
  (``fd_buffered_io=1``): buffered I/O through the page cache with a write-back cache
  reported to the initiator (WCE=1), which is what the daemon does; LIO's default
  (``O_DSYNC``, write-through) would compare a different contract.

Both targets get the daemon's TPG attributes and iSCSI parameters (lio.py: demo mode,
immediate data up to 256 KiB). The initiator is the guest's kernel initiator (iscsiadm
on 127.0.0.1, ``/dev/sdX``, no request merging: one SCSI command per I/O) driven by
fio: O_DIRECT, libaio, fixed queue depth, fixed size, time-based. Four workloads per backend session; the backends swap order every
round (ABBA...) so that drift in a shared host does not favour one side; the report
gives per-round figures and their medians, and the ratio user:preserve / fileio. Beside
throughput it records what an I/O costs: the guest's CPU time (``/proc/stat``: busy,
kernel, context switches) and the daemon's (``/proc/PID``: all threads, the event
loop's thread, the kernel's part), per I/O.

    bench/lio_vs_fileio.py [--seconds 12] [--ramp 2] [--rounds 4] [--size-mib 256]
                           [--json PATH] [--profile randwrite]

``--json`` defaults to ``$GUEST_RUN/lio-vs-fileio.json`` (the table goes next to it as
``.md``). ``--profile WORKLOAD`` adds, after the measured rounds, one more daemon session
under ``python3 -m cProfile`` running that workload only; its top entries are printed
and saved (``daemon.prof``, ``profile.txt``). Exit status 0 when every run completed.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.served: the daemon as users start it

from helpers.served import IQN, Served

from targetcli_preserve import lio

LUN = "bench"
FILEIO_NAME = "bench_fileio"
FILEIO_IQN = "iqn.2026-11.org.targetcli-preserve:bench-fileio"
PORTS = {"user:preserve": 3260, "fileio": 3261}
BACKENDS = ("user:preserve", "fileio")
MIB = 1 << 20
INITIATOR = "iqn.2026-11.org.targetcli-preserve:bench-initiator"
TMPFS_WORK = Path("/tmp/lio-bench")  # --fs tmpfs: the guest's /tmp
XFS_IMAGE = Path("/tmp/lio-bench-xfs.img")  # --fs xfs: a loop device over this image
XFS_MOUNT = Path("/mnt/lio-bench")


@dataclass(frozen=True)
class Workload:
    key: str
    name: str
    rw: str  # fio's --rw
    bs: int
    iodepth: int


WORKLOADS = [
    Workload("seqread", "seq read 128 KiB QD4", "read", 128 << 10, 4),
    Workload("seqwrite", "seq write 128 KiB QD4", "write", 128 << 10, 4),
    Workload("randread", "rand read 4 KiB QD16", "randread", 4 << 10, 16),
    Workload("randwrite", "rand write 4 KiB QD16", "randwrite", 4 << 10, 16),
]


@dataclass
class Run:
    backend: str
    workload: str
    round: int
    iops: float
    mib_s: float
    lat_mean_us: float
    lat_p99_us: float
    guest_cpu_pct: float  # all vCPUs busy over the run, in % of one vCPU (up to 100 x cpus)
    guest_kernel_pct: float  # the kernel's part of it (system, irq, softirq)
    ctxt_per_io: float  # the guest's context switches per I/O
    daemon_cpu_pct: float | None = None  # the daemon process (all threads), user:preserve
    daemon_loop_cpu_pct: float | None = None  # its main thread: the event loop
    daemon_sys_cpu_pct: float | None = None  # the kernel's part of the daemon's (all threads)


@dataclass
class Results:
    facts: dict[str, object] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    profile_run: Run | None = None  # the daemon under cProfile: not in the medians


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _run(*argv: str, timeout: float = 120) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


# -- CPU accounting -----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class GuestCpu:
    """The guest's /proc/stat counters: jiffies of all CPUs, context switches."""

    busy: int  # all but idle and iowait
    kernel: int  # system, irq, softirq
    total: int
    ctxt: int

    @classmethod
    def now(cls) -> GuestCpu:
        lines = Path("/proc/stat").read_text().splitlines()
        f = [
            int(x) for x in lines[0].split()[1:9]
        ]  # user nice system idle iowait irq softirq steal
        ctxt = next(int(line.split()[1]) for line in lines if line.startswith("ctxt "))
        return cls(sum(f) - f[3] - f[4], f[2] + f[5] + f[6], sum(f), ctxt)


def _cpu_seconds(stat_file: Path) -> tuple[float, float]:
    """(utime, stime) from a /proc stat file, in seconds."""
    after_comm = stat_file.read_text().rsplit(")", 1)[1].split()
    return int(after_comm[11]) / _TICK, int(after_comm[12]) / _TICK


def _process_cpu(pid: int | None) -> tuple[float, float, float] | None:
    """CPU seconds of a process: all its threads, their system (kernel) part, and its
    main thread alone. The daemon's main thread runs the event loop; the others are the
    volume I/O pool. System time includes what the kernel does for TCMU in the daemon's
    system calls (the doorbell write completes the answered commands)."""
    if pid is None:
        return None
    try:
        user, system = _cpu_seconds(Path(f"/proc/{pid}/stat"))
        main = sum(_cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat")))
    except OSError:
        return None
    return user + system, system, main


# -- the kernel initiator -----------------------------------------------------------------


class KernelInitiator:
    """iscsiadm on 127.0.0.1, one session at a time."""

    def __init__(self) -> None:
        Path("/etc/iscsi").mkdir(parents=True, exist_ok=True)
        Path("/etc/iscsi/initiatorname.iscsi").write_text(f"InitiatorName={INITIATOR}\n")
        Path("/run/lock").mkdir(parents=True, exist_ok=True)
        if subprocess.run(["pgrep", "-x", "iscsid"], check=False, capture_output=True).returncode:
            _run("iscsid")
        self.node: tuple[str, ...] | None = None

    def login(self, iqn: str, port: int, timeout: float = 60) -> str:
        portal = f"127.0.0.1:{port}"
        _run("iscsiadm", "-m", "discovery", "-t", "st", "-p", portal)
        self.node = ("iscsiadm", "-m", "node", "-T", iqn, "-p", portal)
        _run(*self.node, "--login")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = _run("iscsiadm", "-m", "session", "-P", "3")
            for block in out.split("Target: ")[1:]:
                m = re.search(r"Attached scsi disk (\w+)", block)
                if block.split()[0] == iqn and m:
                    dev = m.group(1)
                    size = Path(f"/sys/block/{dev}/size")
                    if Path(f"/dev/{dev}").exists() and size.exists() and int(size.read_text()):
                        # One SCSI command per fio I/O: the block layer merges adjacent
                        # queued requests, more where commands wait longer, which would
                        # hand the slower backend larger commands than the other gets.
                        Path(f"/sys/block/{dev}/queue/nomerges").write_text("2\n")
                        return f"/dev/{dev}"
            time.sleep(0.2)
        raise RuntimeError(f"no disk attached for {iqn} on {portal}")

    def logout(self) -> None:
        if self.node is None:
            return
        subprocess.run([*self.node, "--logout"], capture_output=True, timeout=60, check=False)
        subprocess.run([*self.node, "-o", "delete"], capture_output=True, timeout=60, check=False)
        self.node = None


# -- fio ------------------------------------------------------------------------------------


def fio(dev: str, w: Workload, size: int, seconds: float, ramp: float) -> dict:
    argv = [
        "fio",
        f"--name={w.key}",
        f"--filename={dev}",
        "--direct=1",
        "--ioengine=libaio",
        f"--rw={w.rw}",
        f"--bs={w.bs}",
        f"--iodepth={w.iodepth}",
        "--numjobs=1",
        f"--size={size}",
        "--time_based",
        f"--runtime={seconds:g}",
        f"--ramp_time={ramp:g}",
        "--randrepeat=1",
        "--norandommap",
        "--output-format=json",
    ]
    out = _run(*argv, timeout=seconds + ramp + 120)
    job = json.loads(out[out.index("{") :])["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio {w.key} on {dev}: error {job['error']}")
    return job["write" if "write" in w.rw else "read"]


def measure(
    backend: str, pid: int | None, dev: str, w: Workload, r: int, args: argparse.Namespace
) -> Run:
    cpu0, proc0, t0 = GuestCpu.now(), _process_cpu(pid), time.monotonic()
    side = fio(dev, w, args.size_mib * MIB, args.seconds, args.ramp)
    cpu1, proc1, wall = GuestCpu.now(), _process_cpu(pid), time.monotonic() - t0
    # rates over fio's whole run (ramp included); per I/O: divided by the measured IOPS
    share = 100.0 * (os.cpu_count() or 1) / max(1, cpu1.total - cpu0.total)
    busy = share * (cpu1.busy - cpu0.busy)
    # over fio's whole run, ramp included: the same window as the guest's share
    pct = loop = system = None
    if proc0 is not None and proc1 is not None:
        pct, system, loop = (round(100.0 * (b - a) / wall, 1) for a, b in zip(proc0, proc1))
    pcts = side["clat_ns"].get("percentile", {})
    run = Run(
        backend=backend,
        workload=w.key,
        round=r,
        iops=side["iops"],
        mib_s=side["bw_bytes"] / MIB,
        lat_mean_us=side["lat_ns"]["mean"] / 1000,
        lat_p99_us=pcts.get("99.000000", 0) / 1000,
        guest_cpu_pct=round(busy, 1),
        guest_kernel_pct=round(share * (cpu1.kernel - cpu0.kernel), 1),
        ctxt_per_io=round((cpu1.ctxt - cpu0.ctxt) / wall / max(side["iops"], 1e-9), 1),
        daemon_cpu_pct=pct,
        daemon_loop_cpu_pct=loop,
        daemon_sys_cpu_pct=system,
    )
    say(
        f"round {r} {backend:13} {w.name:22} {run.iops:9.0f} IOPS {run.mib_s:8.1f} MiB/s "
        f"lat {run.lat_mean_us:8.0f} us, guest CPU {run.guest_cpu_pct:.0f}%"
        + (
            f", daemon CPU {pct:.0f}% (loop thread {loop:.0f}%, kernel {system:.0f}%)"
            if pct is not None
            else ""
        )
    )
    return run


# -- the two backends -----------------------------------------------------------------------


@dataclass
class Session:
    iqn: str
    port: int
    pid: int | None  # the daemon's, for its CPU time


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = TMPFS_WORK if args.fs == "tmpfs" else XFS_MOUNT
        self.state = self.work / "state"
        self.loop: str | None = None  # the loop device under XFS_MOUNT, while mounted
        self.lio = lio.Lio()
        import rtslib_fb

        self.rts = rtslib_fb
        self.backing: Path | None = None
        self.initiator = KernelInitiator()

    # the daemon ---------------------------------------------------------------------------

    @contextmanager
    def preserve(self, profile: Path | None = None) -> Iterator[Session]:
        daemon = Served(self.state, [f"{LUN}:{self.args.size_mib}M"], PORTS[BACKENDS[0]], lio=True)
        python = sys.executable
        if profile is not None:
            # Served starts "<python> -m targetcli_preserve.cli ...": run that under
            # profiled_daemon.py, which profiles between SIGUSR1 and SIGUSR2
            wrapper = self.work / "python-profiled"
            runner = Path(__file__).resolve().parent / "profiled_daemon.py"
            wrapper.write_text(f'#!/bin/sh\nexec {python} {runner} {profile} "$@"\n')
            wrapper.chmod(0o755)
            sys.executable = str(wrapper)
        try:
            daemon.start(timeout=300)
        except BaseException:
            self._clear_daemon_lio()
            raise
        finally:
            sys.executable = python
        try:
            live = Path(daemon.json("status")["luns"][0]["live"]["path"])
            if self.backing is None:
                self.backing = live
            elif live != self.backing:
                raise RuntimeError(f"the LUN's live volume moved: {live}, not {self.backing}")
            assert daemon.proc is not None
            yield Session(IQN, daemon.port, daemon.proc.pid)
        finally:
            code = daemon.stop(timeout=120)
            if code != 0:
                say(f"the daemon exited {code}:\n{''.join(daemon.output[-20:])}")
            self._clear_daemon_lio()  # a stopped daemon leaves LIO's configuration in place

    def _clear_daemon_lio(self) -> None:
        self.lio.remove(IQN, [LUN])

    # LIO's fileio -------------------------------------------------------------------------

    @contextmanager
    def fileio(self) -> Iterator[Session]:
        rts = self.rts
        assert self.backing is not None
        so = rts.FileIOStorageObject(
            FILEIO_NAME, dev=str(self.backing), size=self.backing.stat().st_size, write_back=True
        )
        target = None
        try:
            target = rts.Target(rts.FabricModule("iscsi"), FILEIO_IQN)
            tpg = rts.TPG(target, 1)
            # the daemon's TPG settings (lio.py), so that only the backstore differs
            for name, value in lio.DEMO_MODE.items():
                tpg.set_attribute(name, value)
            for name, value in lio._TPG_PARAMETERS.items():
                tpg.set_parameter(name, value)
            rts.NetworkPortal(tpg, "0.0.0.0", PORTS["fileio"])
            rts.LUN(tpg, 0, so)
            tpg.enable = True
            yield Session(FILEIO_IQN, PORTS["fileio"], None)
        finally:
            if target is not None:
                target.delete()
            so.delete()

    def _clear_fileio(self) -> None:
        for target in list(self.rts.RTSRoot().targets):
            if target.wwn == FILEIO_IQN:
                target.delete()
        for so in list(self.rts.RTSRoot().storage_objects):
            if so.plugin == "fileio" and so.name == FILEIO_NAME:
                so.delete()

    def session(self, backend: str, profile: Path | None = None):
        return self.preserve(profile) if backend == "user:preserve" else self.fileio()

    # the run ------------------------------------------------------------------------------

    def _mount_xfs(self) -> None:
        """XFS on a loop device over a sparse image in the guest's tmpfs (the guest has
        no disk). XFS is the filesystem the product is meant for (reflink clones), and
        unlike tmpfs on this kernel it takes preadv(RWF_NOWAIT), the daemon's page-cache
        read path (volumes/file.py)."""
        XFS_IMAGE.unlink(missing_ok=True)
        with XFS_IMAGE.open("wb") as f:
            f.truncate(max(512, self.args.size_mib + 256) * MIB)  # XFS wants >= 300 MiB
        _run("mkfs.xfs", "-q", "-f", str(XFS_IMAGE))
        self.loop = _run("losetup", "--find", "--show", str(XFS_IMAGE)).strip()
        XFS_MOUNT.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "xfs", self.loop, str(XFS_MOUNT))

    def _unmount_xfs(self) -> None:
        if self.loop is None:
            return
        subprocess.run(["umount", str(XFS_MOUNT)], capture_output=True, timeout=120, check=False)
        subprocess.run(["losetup", "-d", self.loop], capture_output=True, timeout=60, check=False)
        XFS_IMAGE.unlink(missing_ok=True)
        self.loop = None

    def setup(self) -> None:
        """A fresh state directory; the LUN made by the daemon, then filled with data
        (reads of holes would measure nothing) while no target serves it."""
        self._clear_daemon_lio()
        self._clear_fileio()
        if self.args.fs == "xfs":
            self._mount_xfs()
        elif self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        with self.preserve():
            pass
        assert self.backing is not None
        block = os.urandom(MIB)
        with self.backing.open("r+b") as f:
            for i in range(self.args.size_mib):
                f.write(block[i:] + block[:i])  # every MiB differs
            f.flush()
            os.fsync(f.fileno())
        say(f"backing file {self.backing}: {self.args.size_mib} MiB of data")

    def rounds(self, results: Results) -> None:
        for r in range(1, self.args.rounds + 1):
            order = BACKENDS if r % 2 else BACKENDS[::-1]
            for backend in order:
                with self.session(backend) as s:
                    dev = self.initiator.login(s.iqn, s.port)
                    try:
                        for w in WORKLOADS:
                            results.runs.append(measure(backend, s.pid, dev, w, r, self.args))
                    finally:
                        self.initiator.logout()

    def profile(self, key: str, out_dir: Path, results: Results) -> str:
        """One more daemon session, profiled (main thread) while fio runs ``key``."""
        w = next(w for w in WORKLOADS if w.key == key)
        prof = self.work / "daemon.prof"
        prof.unlink(missing_ok=True)
        with self.session("user:preserve", profile=prof) as s:
            assert s.pid is not None
            dev = self.initiator.login(s.iqn, s.port)
            try:
                os.kill(s.pid, signal.SIGUSR1)
                run = measure("cProfile", s.pid, dev, w, 0, self.args)
                os.kill(s.pid, signal.SIGUSR2)
                deadline = time.monotonic() + 60
                while not prof.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                self.initiator.logout()
        results.profile_run = run
        text = io.StringIO()
        print(
            f"cProfile of the daemon's main thread (the event loop) during {w.name}, "
            f"fio's ramp included: {run.iops:.0f} IOPS under the profiler\n",
            file=text,
        )
        stats = pstats.Stats(str(prof), stream=text)
        stats.strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
        shutil.copy(prof, out_dir / "daemon.prof")
        (out_dir / "profile.txt").write_text(text.getvalue())
        return text.getvalue()

    def close(self) -> None:
        self.initiator.logout()
        for clear in (self._clear_daemon_lio, self._clear_fileio, self._unmount_xfs):
            try:
                clear()
            except Exception as err:  # noqa: BLE001 - the report matters more
                say(f"cleaning LIO up: {err}")


# -- facts and the report -----------------------------------------------------------------


def _nowait(path: Path) -> str:
    """Does the backing file's filesystem take preadv(RWF_NOWAIT)? The daemon answers
    page-cache reads on its event loop only where it does (volumes/file.py)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        return "yes"
    except OSError as err:
        return f"no ({errno.errorcode.get(err.errno, err.errno)})"
    finally:
        os.close(fd)


def facts(args: argparse.Namespace, backing: Path) -> dict[str, object]:
    fs, longest = "?", -1
    for line in Path("/proc/mounts").read_text().splitlines():
        source, mnt, typ = line.split()[:3]
        if str(backing).startswith(mnt.rstrip("/") + "/") and len(mnt) > longest:
            fs, longest = f"{typ} on {source} ({mnt})", len(mnt)
    try:
        import rtslib_fb

        rtslib_version = getattr(rtslib_fb, "__version__", "?")
    except ImportError:
        rtslib_version = "?"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    commit = Path(os.environ.get("GUEST_RUN", "/nonexistent"), "commit")  # scripts/bench-lio
    return {
        "commit": commit.read_text().strip() if commit.is_file() else "?",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "fio": _run("fio", "--version").strip(),
        "rtslib_fb": rtslib_version,
        "backing_file": str(backing),
        "backing_fs": fs,
        "rwf_nowait": _nowait(backing),
        "fs": args.fs,
        "size_mib": args.size_mib,
        "seconds": args.seconds,
        "ramp_seconds": args.ramp,
        "rounds": args.rounds,
        "fileio": "write_back=True (fd_buffered_io=1: page cache, WCE=1)",
    }


@dataclass
class Median:
    iops: float
    mib_s: float
    lat_mean_us: float
    guest_cpu_pct: float
    rounds_mib_s: list[float]  # every round's figure, in round order
    # what one I/O costs: ms of vCPU time in the whole guest, its kernel part, in the
    # daemon (user:preserve only) and the daemon's kernel part; context switches
    cpu_ms_per_io: float
    kernel_ms_per_io: float
    daemon_ms_per_io: float | None
    daemon_kernel_ms_per_io: float | None
    ctxt_per_io: float


@dataclass
class Row:
    workload: str
    name: str
    preserve: Median  # user:preserve
    fileio: Median
    ratio: float  # preserve / fileio, of the medians


def _per_io(runs: list[Run], attr: str) -> float | None:
    """The median over rounds of a CPU share (% of one vCPU) per I/O, in ms."""
    values = [getattr(r, attr) for r in runs]
    if None in values:
        return None
    return statistics.median(10.0 * v / r.iops for v, r in zip(values, runs))


def _median(runs: list[Run]) -> Median:
    return Median(
        iops=statistics.median(r.iops for r in runs),
        mib_s=statistics.median(r.mib_s for r in runs),
        lat_mean_us=statistics.median(r.lat_mean_us for r in runs),
        guest_cpu_pct=statistics.median(r.guest_cpu_pct for r in runs),
        rounds_mib_s=[round(r.mib_s, 2) for r in runs],
        cpu_ms_per_io=_per_io(runs, "guest_cpu_pct") or 0.0,
        kernel_ms_per_io=_per_io(runs, "guest_kernel_pct") or 0.0,
        daemon_ms_per_io=_per_io(runs, "daemon_cpu_pct"),
        daemon_kernel_ms_per_io=_per_io(runs, "daemon_sys_cpu_pct"),
        ctxt_per_io=statistics.median(r.ctxt_per_io for r in runs),
    )


def _pick(runs: list[Run], backend: str, workload: str) -> list[Run]:
    return sorted(
        (r for r in runs if r.backend == backend and r.workload == workload),
        key=lambda r: r.round,
    )


def summary(results: Results) -> list[Row]:
    rows = []
    for w in WORKLOADS:
        ours = _median(_pick(results.runs, BACKENDS[0], w.key))
        theirs = _median(_pick(results.runs, BACKENDS[1], w.key))
        rows.append(Row(w.key, w.name, ours, theirs, ours.iops / theirs.iops))
    return rows


def table(results: Results, rows: list[Row]) -> str:
    f = results.facts
    lines = [
        (
            f"{f['date']}, commit {f['commit']}, kernel {f['kernel']}, {f['cpus']} vCPUs, "
            f"{f['size_mib']} MiB file "
            f"on {f['backing_fs']}, fio {f['seconds']:g} s (+{f['ramp_seconds']:g} s ramp) per "
            f"run, {f['rounds']} rounds, medians"
        ),
        "",
        "| workload | user:preserve MiB/s | IOPS | fileio MiB/s | IOPS | preserve / fileio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        p, q = row.preserve, row.fileio
        lines.append(
            f"| {row.name} | {p.mib_s:,.1f} | {p.iops:,.0f} | {q.mib_s:,.1f} | {q.iops:,.0f} "
            f"| {row.ratio:.2f}x |"
        )
    lines += [
        "",
        "What one I/O costs (medians over the rounds): ms of vCPU time in the whole guest",
        "(fio, initiator, LIO, the backstore) and its kernel part, the daemon's share of it",
        "and that share's kernel part, and the guest's context switches:",
        "",
        (
            "| workload | guest ms/IO preserve / fileio | kernel ms/IO preserve / fileio "
            "| daemon ms/IO (kernel) | switches/IO preserve / fileio |"
        ),
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        p, q = row.preserve, row.fileio
        lines.append(
            f"| {row.name} | {p.cpu_ms_per_io:.2f} / {q.cpu_ms_per_io:.2f} "
            f"| {p.kernel_ms_per_io:.2f} / {q.kernel_ms_per_io:.2f} "
            f"| {p.daemon_ms_per_io or 0:.2f} ({p.daemon_kernel_ms_per_io or 0:.2f}) "
            f"| {p.ctxt_per_io:.1f} / {q.ctxt_per_io:.1f} |"
        )
    lines += [
        "",
        "Every round: MiB/s; the guest's CPU busy, in % of one vCPU; the daemon's CPU, all",
        "threads, and in brackets its event loop's thread and the kernel's part (system time):",
        "",
        (
            "| workload | round | user:preserve | fileio | ratio "
            "| guest CPU preserve / fileio | daemon CPU (loop, kernel) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in WORKLOADS:
        pairs = zip(
            _pick(results.runs, BACKENDS[0], w.key),
            _pick(results.runs, BACKENDS[1], w.key),
            strict=True,
        )
        for p, q in pairs:
            lines.append(
                f"| {w.name} | {p.round} | {p.mib_s:,.1f} | {q.mib_s:,.1f} "
                f"| {p.mib_s / q.mib_s:.2f} | {p.guest_cpu_pct:.0f}% / {q.guest_cpu_pct:.0f}% "
                f"| {p.daemon_cpu_pct or 0:.0f}% ({p.daemon_loop_cpu_pct or 0:.0f}%, "
                f"{p.daemon_sys_cpu_pct or 0:.0f}%) |"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="fio runtime per run")
    ap.add_argument("--ramp", type=float, default=2.0, help="fio ramp time, not counted")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size-mib", type=int, default=256, help="the LUN and its file")
    ap.add_argument(
        "--fs",
        choices=["xfs", "tmpfs"],
        default="xfs",
        help="where the backing file lives: XFS on a loop device in tmpfs, or tmpfs itself",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", choices=[w.key for w in WORKLOADS], default=None)
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("at least 2 rounds: the backends swap order between rounds")
    out = args.json
    if out is None and os.environ.get("GUEST_RUN"):
        out = Path(os.environ["GUEST_RUN"]) / "lio-vs-fileio.json"
    reason = lio.unavailable()
    if reason is not None:
        print(f"bench: {reason}", file=sys.stderr)
        return 2
    for tool in (
        "fio",
        "iscsiadm",
        "iscsid",
        *(("mkfs.xfs", "losetup") if args.fs == "xfs" else ()),
    ):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed", file=sys.stderr)
            return 2

    results = Results()
    bench = Bench(args)
    rc = 0
    profile_text = None
    try:
        bench.setup()
        assert bench.backing is not None
        results.facts = facts(args, bench.backing)
        say(json.dumps(results.facts))
        bench.rounds(results)
        if args.profile:
            profile_text = bench.profile(args.profile, out.parent if out else Path("/tmp"), results)
    except Exception:  # noqa: BLE001 - reported, and the exit status says so
        traceback.print_exc()
        rc = 1
    finally:
        bench.close()
    rows = summary(results) if rc == 0 else []
    text = table(results, rows) if rc == 0 else ""
    if text:
        print("\n" + text, flush=True)
    if profile_text:
        print(profile_text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "ok": rc == 0,
                    "facts": results.facts,
                    "summary": [asdict(row) for row in rows],
                    "runs": [asdict(r) for r in results.runs],
                    "profile_run": asdict(results.profile_run) if results.profile_run else None,
                },
                indent=2,
            )
            + "\n"
        )
        if text:
            out.with_suffix(".md").write_text(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
