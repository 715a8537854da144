"""A live preserve under real iSCSI load, checked byte for byte (docs/design.md rules 1-6).

qemu-io keeps many overlapping asynchronous writes in flight against the built-in
target; ``preserve`` runs in the middle. Afterwards:

- the live LUN (read back over iSCSI) equals every write applied in issue order (rule 1:
  overlapping writes take effect in issue order, through the cut and the replication);
- the frozen volume equals exactly the writes issued before the cut, applied in issue
  order (rules 4-6): the daemon counts each LUN's commands, so the test knows which
  write was the first after T, and no other prefix passes;
- the cut lands in the middle of a burst, with several commands in flight.

Both clone strategies run: lazy clones on the machine's own filesystem, reflinks on an
XFS loop image.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.qemu_load import QemuIo, apply, overlapping_writes
from helpers.served import Served, qemu_img_read
from helpers.skips import need

LUN_SIZE = 16 << 20
REGION = 4 << 20  # the writes crowd into this much, so they overlap a lot
COUNT = 240


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-io")
    need("qemu-img")


WARMUP = 20  # writes acknowledged before the burst: the sessions are up and flowing
BURST = 180  # writes sent in one go; the cut lands in the middle of them
MIN_INFLIGHT = 4  # commands a LUN must have in flight at the cut


def run_load_with_cut(served: Served, luns: list[int], names: list[str], seed: int):
    """Drive one qemu-io per LUN; preserve all LUNs together in the middle of a burst.

    Returns the writes per LUN, the preserve result, and per LUN ``k``: how many of its
    writes were issued before the cut. The daemon counts each LUN's commands
    (``issued``); qemu-io sends one command per write, in order, on one session, so
    write i of the load is command ``issued_before_load + i`` of its LUN."""
    loads = [overlapping_writes(seed + n, COUNT, REGION) for n in luns]
    ios = [QemuIo(served.url(n)) for n in luns]
    try:
        for io, writes in zip(ios, loads):
            io.feed([w.verbose_line() for w in writes[:WARMUP]])
        for io in ios:
            io.settle(WARMUP)  # nothing of this LUN is in flight now
        issued = {lun["name"]: lun["issued"] for lun in served.json("status")["luns"]}
        before_load = [issued[name] - WARMUP for name in names]
        feeders = [
            io.feed_in_background([w.verbose_line() for w in writes[WARMUP : WARMUP + BURST]], 0)
            for io, writes in zip(ios, loads)
        ]
        for io in ios:
            io.wait_acknowledged(WARMUP + 10)  # the burst is flowing
        cut = served.call("preserve", names=names, wait=True)  # mid-burst
        for feeder in feeders:
            feeder.join(60)
        for io, writes in zip(ios, loads):
            io.feed([w.verbose_line() for w in writes[WARMUP + BURST :]])
        outputs = [io.finish() for io in ios]
    finally:
        for io in ios:
            io.kill()
    for out in outputs:
        assert "error" not in out.lower() and "failed" not in out.lower(), out
    ks = [entry["issued_at_cut"] - base for entry, base in zip(cut["luns"], before_load)]
    return loads, cut, ks


def check_lun(served: Served, tmp_path: Path, lun: int, entry: dict, writes, k: int) -> None:
    """Live: every write in issue order; frozen: exactly the first ``k`` (rules 1-6)."""
    assert WARMUP + 10 <= k <= WARMUP + BURST, f"the cut at write {k} is outside the burst"
    assert entry["inflight_at_cut"] >= MIN_INFLIGHT, (
        f"only {entry['inflight_at_cut']} commands in flight at the cut: no real concurrency"
    )
    live = qemu_img_read(served.url(lun), tmp_path / f"live{lun}.raw")
    assert live == apply(bytearray(LUN_SIZE), writes), "live LUN is not all writes in issue order"
    assert entry["preserved"]["state"] == "frozen"
    frozen = Path(entry["preserved"]["path"]).read_bytes()
    assert frozen == apply(bytearray(LUN_SIZE), writes[:k]), (
        f"the frozen volume is not exactly the {k} writes issued before the cut"
    )


def test_preserve_under_async_writes(state_dir, clone_strategy, tmp_path):
    served = Served(state_dir, [f"lun0:{LUN_SIZE}"]).start()
    try:
        (writes,), cut, (k,) = run_load_with_cut(served, [0], ["lun0"], seed=1)
        check_lun(served, tmp_path, 0, cut["luns"][0], writes, k)
        vols = served.json("volumes", "lun0")
        assert [v["state"] for v in vols] == ["frozen", "live"]
        assert vols[1]["clone"] == clone_strategy
        assert vols[1]["preserve"]["seq"] == cut["seq"]
        print(
            f"{clone_strategy}: cut after {k} of {len(writes)} writes, "
            f"{cut['luns'][0]['inflight_at_cut']} in flight at the cut"
        )
    finally:
        assert served.stop() == 0


def test_one_cut_over_two_luns(state_dir, clone_strategy, tmp_path):
    served = Served(state_dir, [f"lun0:{LUN_SIZE}", f"lun1:{LUN_SIZE}"]).start()
    try:
        loads, cut, ks = run_load_with_cut(served, [0, 1], ["lun0", "lun1"], seed=7)
        assert [e["name"] for e in cut["luns"]] == ["lun0", "lun1"]
        for lun, (writes, entry, k) in enumerate(zip(loads, cut["luns"], ks)):
            check_lun(served, tmp_path, lun, entry, writes, k)
        # One T for the whole consistency group (rule 2).
        cuts = {served.json("volumes", name)[-1]["preserve"]["seq"] for name in ("lun0", "lun1")}
        assert cuts == {cut["seq"]}
    finally:
        assert served.stop() == 0
