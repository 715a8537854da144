"""Data path throughput: the product daemon next to tgtd, same run, same workloads.

Both targets export a sparse 1 GiB backing file on this machine's filesystem (the data
ends up in the page cache) over 127.0.0.1. They run one after the other, never at the
same time, so each gets both cores (shared with its initiator). Workloads, each bounded
to a few seconds:

* sequential 128 KiB writes, QD16, over the whole LUN (``qemu-img bench -w``; this also
  fills the backing file so the reads below read cached data, not holes)
* random 4 KiB reads, QD16 (``iscsi-perf -r``, libiscsi-bin), fixed time
* sequential 128 KiB reads, QD16 (``iscsi-perf``), fixed time
* sequential 4 KiB writes, QD16 (``qemu-img bench -w``: iscsi-perf only reads, and
  qemu-img bench has no random mode), count calibrated to about the same time

The product runs as users run it (``targetcli-preserve serve``), so its numbers include
the preserve engine (no cut taken: one generation) and the journal-free write path.

    .venv/bin/python bench/datapath_vs_tgtd.py [--seconds 5] [--output docs/datapath-vs-tgtd.md]
    .venv/bin/python bench/datapath_vs_tgtd.py --profile prof.out   # cProfile the daemon
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: the daemon and tgtd as peers

from helpers.served import IQN, Served
from helpers.tgtd_peer import Tgtd, available

SIZE = 1 << 30
QD = 16


@dataclass
class Result:
    iops: float
    mib_s: float


@dataclass
class Workload:
    name: str
    run: Callable[[str, float], Result]


def _iscsi_perf(url: str, seconds: float, blocks: int, random: bool) -> Result:
    args = ["iscsi-perf", "-m", str(QD), "-b", str(blocks), "-t", str(int(seconds))]
    if random:
        args.append("-r")
    done = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    found = re.findall(r"iops average (\d+) \((\d+) MB/s\)", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"iscsi-perf failed (rc={done.returncode}):\n{done.stdout[-2000:]}")
    iops = float(found[-1][0])
    return Result(iops, iops * blocks * 512 / (1 << 20))


def _qemu_img_bench(url: str, count: int, size: int) -> Result:
    done = subprocess.run(
        [
            "qemu-img",
            "bench",
            "-w",
            "-f",
            "raw",
            "-t",
            "none",
            "-c",
            str(count),
            "-d",
            str(QD),
            "-s",
            str(size),
            "-S",
            str(size),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    m = re.search(r"Run completed in ([\d.]+) seconds", done.stdout)
    if done.returncode != 0 or not m:
        raise RuntimeError(f"qemu-img bench failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    secs = float(m.group(1))
    return Result(count / secs, count * size / secs / (1 << 20))


def _timed_writes(url: str, seconds: float, size: int) -> Result:
    """About ``seconds`` of sequential writes of ``size`` (a short pilot sets the count;
    wrapping past the end of the LUN is avoided)."""
    limit = SIZE // size
    pilot = _qemu_img_bench(url, min(2000, limit), size)
    count = int(min(limit, max(2000, pilot.iops * seconds)))
    return _qemu_img_bench(url, count, size)


WORKLOADS = [
    Workload(
        "seq write 128 KiB QD16 (fills the LUN)",
        lambda url, s: _qemu_img_bench(url, SIZE // (128 << 10), 128 << 10),
    ),
    Workload("rand read 4 KiB QD16", lambda url, s: _iscsi_perf(url, s, 8, True)),
    Workload("seq read 128 KiB QD16", lambda url, s: _iscsi_perf(url, s, 256, False)),
    Workload("seq write 4 KiB QD16", lambda url, s: _timed_writes(url, s, 4096)),
]


def run_all(url: str, seconds: float, label: str) -> list[Result]:
    out = []
    for w in WORKLOADS:
        r = w.run(url, seconds)
        print(f"  {label:8} {w.name:40} {r.iops:10.0f} IOPS {r.mib_s:9.1f} MiB/s", flush=True)
        out.append(r)
    return out


def bench_tgtd(work: Path, seconds: float) -> list[Result]:
    backing = work / "tgtd-lun.img"
    with open(backing, "wb") as f:
        f.truncate(SIZE)
    with Tgtd(backing) as tgtd:
        return run_all(tgtd.url(), seconds, "tgtd")


def bench_product(work: Path, seconds: float, profile: Path | None) -> list[Result]:
    daemon = Served(work / "state", [f"lun0:{SIZE >> 20}M"])
    python = sys.executable
    if profile is not None:
        # Served starts "<python> -m targetcli_preserve.cli ..."; run that under cProfile
        wrapper = work / "python-cprofile"
        wrapper.write_text(f'#!/bin/sh\nexec {python} -m cProfile -o {profile} "$@"\n')
        wrapper.chmod(0o755)
        sys.executable = str(wrapper)
    try:
        daemon.start()
    finally:
        sys.executable = python
    try:
        return run_all(f"iscsi://127.0.0.1:{daemon.port}/{IQN}/0", seconds, "product")
    finally:
        daemon.stop(timeout=60)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(tgtd: list[Result], product: list[Result], seconds: float) -> str:
    lines = [
        "# Data path: targetcli-preserve vs tgtd",
        "",
        "Written by `bench/datapath_vs_tgtd.py` (run it again to refresh). Both targets",
        "export a sparse 1 GiB file from the same filesystem over 127.0.0.1, one after the",
        "other in the same run; initiator and target share the machine's cores. Reads use",
        "`iscsi-perf` (libiscsi) for a fixed time, writes `qemu-img bench -w` (libiscsi",
        "through QEMU's block layer; sequential only). Queue depth 16 throughout.",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}",
        (
            f"- machine: {os.cpu_count()} cores ({_cpu()}), kernel {platform.release()}, "
            f"Python {platform.python_version()}"
        ),
        f"- about {seconds:g} s per workload",
        "",
        "| workload | tgtd IOPS | tgtd MiB/s | product IOPS | product MiB/s | product/tgtd |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, t, p in zip(WORKLOADS, tgtd, product, strict=True):
        lines.append(
            f"| {w.name} | {t.iops:,.0f} | {t.mib_s:,.1f} | {p.iops:,.0f} | {p.mib_s:,.1f} "
            f"| {p.iops / t.iops:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--output", type=Path, default=None, help="markdown file for the table")
    ap.add_argument("--profile", type=Path, default=None, help="cProfile output of the daemon")
    ap.add_argument("--product-only", action="store_true")
    args = ap.parse_args()
    for tool in ("iscsi-perf", "qemu-img"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian libiscsi-bin / qemu-utils)", file=sys.stderr)
            return 2
    reason = available()
    if reason is not None and not args.product_only:
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        work = Path(tmp)
        tgtd = [] if args.product_only else bench_tgtd(work, args.seconds)
        time.sleep(1)
        product = bench_product(work, args.seconds, args.profile)
    if tgtd:
        table = report(tgtd, product, args.seconds)
        print()
        print(table)
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
