"""Cut latency: from the preserve command to the first post-cut write acknowledged.

For each clone strategy (lazy on the machine's own filesystem, reflink on an XFS loop
image when run as root) and for a 1 GiB and a 64 GiB sparse LUN holding the same
scattered data, the real daemon stack (engine, data path, journal, volumes) runs in
this process; each sample calls ``preserve`` and at once issues a post-cut write, and
times its acknowledgement. docs/design.md rule 3 says the clone is O(1): the 64/1 ratio
should stay near 1 (goal: under 1 ms and a ratio under 1.5).

    .venv/bin/python bench/cut_latency.py [--samples 25] [--output docs/cut-latency.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from targetcli_preserve.daemon import Daemon
from targetcli_preserve.options import Config, LunSpec

SIZES = {"1 GiB": 1 << 30, "64 GiB": 64 << 30}
DATA_WRITES = 256  # 64 KiB each, scattered: the volume has extents to clone


async def measure(state_dir: Path, size: int, samples: int) -> tuple[list[float], str]:
    daemon = Daemon(Config(state_dir, "127.0.0.1", 0, [LunSpec("lun0", size)]))
    await daemon.start()
    try:
        store = daemon.services.datapath.store("lun0")
        step = store.num_blocks // DATA_WRITES
        for i in range(DATA_WRITES):
            await store.write(i * step, 128, os.urandom(65536))
        block = bytes(512)
        latencies = []
        for i in range(samples):
            t0 = time.perf_counter()
            cut = daemon.services.datapath.preserve(["lun0"])  # T taken here
            await store.write(i * 8, 1, block)  # post-cut: waits for the clone only
            latencies.append(time.perf_counter() - t0)
            done = await cut
            # Each sample starts from a settled LUN, as an administrator's cut would:
            # the previous preserve durable, its source frozen, the clone hydrated.
            await daemon.services.datapath.durable(done)
            await daemon.services.datapath.wait_frozen("lun0", done.new_generations["lun0"] - 1)
            await daemon.services.datapath.volumes[
                ("lun0", done.new_generations["lun0"])
            ].wait_hydrated()
            await asyncio.sleep(0.02)
        strategy = daemon.services.datapath.volumes[("lun0", samples)].strategy.value
        return latencies, strategy
    finally:
        await daemon.stop()


@contextmanager
def xfs_mount():
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        yield None
        return
    top = Path(tempfile.mkdtemp(prefix="bench-xfs-"))
    image, mnt = top / "xfs.img", top / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--output", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    rows = []
    with xfs_mount() as mnt, tempfile.TemporaryDirectory(prefix="bench-ext4-") as local:
        places = [("lazy", Path(local))] + ([("reflink", mnt)] if mnt else [])
        for expected, where in places:
            medians = {}
            for label, size in SIZES.items():
                state = Path(tempfile.mkdtemp(prefix="state-", dir=where))
                lat, strategy = asyncio.run(measure(state, size, args.samples))
                shutil.rmtree(state, ignore_errors=True)
                assert strategy == expected, (strategy, expected)
                med = statistics.median(lat)
                medians[label] = med
                p90 = statistics.quantiles(lat, n=10)[-1]
                rows.append((strategy, label, med, p90, max(lat)))
            ratio = medians["64 GiB"] / medians["1 GiB"]
            rows.append((expected, "64/1 ratio", ratio, None, None))
    lines = [
        f"Cut latency, preserve to first post-cut write acknowledged ({args.samples} samples)",
        "",
        (
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, kernel "
            f"{os.uname().release}, by `bench/cut_latency.py`: the daemon's stack in one "
            "process, a settled LUN with 256 x 64 KiB of scattered data; lazy on the machine's "
            "ext4, reflink on an XFS loop image. Goal: under 1 ms, 64/1 ratio under 1.5."
        ),
        "",
        "| clone | LUN size | median | p90 | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for strategy, label, med, p90, worst in rows:
        if p90 is None:
            lines.append(f"| {strategy} | **{label}** | **{med:.2f}** | | |")
        else:
            lines.append(
                f"| {strategy} | {label} | {med * 1e3:.3f} ms | {p90 * 1e3:.3f} ms "
                f"| {worst * 1e3:.3f} ms |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
