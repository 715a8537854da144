"""A live preserve under real iSCSI load, checked byte for byte (docs/design.md rules 1-6).

qemu-io keeps many overlapping asynchronous writes in flight against the built-in
target; ``preserve`` runs in the middle. Afterwards:

- the live LUN (read back over iSCSI) equals every write applied in issue order (rule 1:
  overlapping writes take effect in issue order, through the cut and the replication);
- the frozen volume equals the writes issued before the cut applied in issue order,
  i.e. some prefix of the issue order (rules 4-6), and never a post-cut write (rule 5);
  the prefix is at least what was acknowledged before the cut and at most what was
  sent before ``preserve`` returned.

Both clone strategies run: lazy clones on the machine's own filesystem, reflinks on an
XFS loop image.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from qemu_load import QemuIo, apply, overlapping_writes
from served import Served, need, qemu_img_read

LUN_SIZE = 16 << 20
REGION = 4 << 20  # the writes crowd into this much, so they overlap a lot
COUNT = 240


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-io")
    need("qemu-img")


def frozen_prefix(frozen: bytes, writes, lo: int, hi: int) -> int | None:
    """The k in [lo, hi] with frozen == writes[:k] applied in order, if any."""
    image = apply(bytearray(LUN_SIZE), writes[:lo])
    for k in range(lo, hi + 1):
        if k > lo:
            apply(image, [writes[k - 1]])
        if image == frozen:
            return k
    return None


def run_load_with_cut(served: Served, luns: list[int], names: list[str], seed: int):
    """Drive one qemu-io per LUN; preserve all LUNs together while writes stream in.

    Returns the writes per LUN, the preserve result, and per LUN the bounds on the cut:
    writes acknowledged before it (all pre-cut) and writes sent when it returned (no
    later write can be pre-cut)."""
    loads = [overlapping_writes(seed + n, COUNT, REGION) for n in luns]
    ios = [QemuIo(served.url(n)) for n in luns]
    try:
        first, middle = 60, 160
        for io, writes in zip(ios, loads):
            io.feed([w.verbose_line() for w in writes[:first]])
        for io in ios:
            io.wait_acknowledged(20)  # the stream is flowing
        acked_before = [len(io.acknowledged()) for io in ios]
        feeders = [
            io.feed_in_background([w.verbose_line() for w in writes[first:middle]], gap=0.001)
            for io, writes in zip(ios, loads)
        ]
        while min(io.sent for io in ios) < first + 30:
            time.sleep(0.001)
        cut = served.call("preserve", names=names, wait=True)  # writes are in flight now
        sent_before = [io.sent for io in ios]
        for feeder in feeders:
            feeder.join(30)
        for io, writes in zip(ios, loads):
            io.feed([w.verbose_line() for w in writes[middle:]])
        outputs = [io.finish() for io in ios]
    finally:
        for io in ios:
            io.kill()
    for out in outputs:
        assert "error" not in out.lower() and "failed" not in out.lower(), out
    return loads, cut, acked_before, sent_before


def check_lun(served: Served, tmp_path: Path, lun: int, entry: dict, writes, lo: int, hi: int):
    live = qemu_img_read(served.url(lun), tmp_path / f"live{lun}.raw")
    assert live == apply(bytearray(LUN_SIZE), writes), "live LUN is not all writes in issue order"
    assert entry["preserved"]["state"] == "frozen"
    frozen = Path(entry["preserved"]["path"]).read_bytes()
    k = frozen_prefix(frozen, writes, lo, hi)
    assert k is not None, "frozen volume is not the pre-cut writes in issue order"
    return k


def test_preserve_under_async_writes(state_dir, clone_strategy, tmp_path):
    served = Served(state_dir, [f"lun0:{LUN_SIZE}"]).start()
    try:
        (writes,), cut, (acked,), (sent,) = run_load_with_cut(served, [0], ["lun0"], seed=1)
        k = check_lun(served, tmp_path, 0, cut["luns"][0], writes, acked, sent)
        vols = served.json("volumes", "lun0")
        assert [v["state"] for v in vols] == ["frozen", "live"]
        assert vols[1]["clone"] == clone_strategy
        assert vols[1]["preserve"]["seq"] == cut["seq"]
        print(
            f"{clone_strategy}: cut after {k} of {len(writes)} writes ({acked} acked before, "
            f"{cut['luns'][0]['inflight_at_cut']} in flight at the cut)"
        )
    finally:
        assert served.stop() == 0


def test_one_cut_over_two_luns(state_dir, clone_strategy, tmp_path):
    served = Served(state_dir, [f"lun0:{LUN_SIZE}", f"lun1:{LUN_SIZE}"]).start()
    try:
        loads, cut, acked, sent = run_load_with_cut(served, [0, 1], ["lun0", "lun1"], seed=7)
        assert [e["name"] for e in cut["luns"]] == ["lun0", "lun1"]
        for lun, (writes, entry, lo, hi) in enumerate(zip(loads, cut["luns"], acked, sent)):
            check_lun(served, tmp_path, lun, entry, writes, lo, hi)
        # One T for the whole consistency group (rule 2).
        cuts = {served.json("volumes", name)[-1]["preserve"]["seq"] for name in ("lun0", "lun1")}
        assert cuts == {cut["seq"]}
    finally:
        assert served.stop() == 0
