"""A preserve in the middle of a burst of overlapping asynchronous writes, checked byte
for byte (docs/design.md rules 1-6); shared by the built-in target's tests
(tests/integration/test_preserve_live.py) and LIO's (tests/lio/).

qemu-io keeps many overlapping writes in flight; ``preserve`` runs in the middle.
Afterwards the live LUN (read back over iSCSI) equals every write applied in issue
order, and the frozen volume exactly the writes issued before the cut: the daemon
counts each LUN's commands, so the test knows which write was the first after T, and
no other prefix passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from helpers.qemu_load import QemuIo, apply, overlapping_writes
from helpers.served import Served, qemu_img_read

LUN_SIZE = 16 << 20
REGION = 4 << 20  # the writes crowd into this much, so they overlap a lot
COUNT = 240


WARMUP = 20  # writes acknowledged before the burst: the sessions are up and flowing
BURST = 180  # writes sent in one go; the cut lands in the middle of them
MIN_INFLIGHT = 4  # commands a LUN must have in flight at the cut


def run_load_with_cut(
    served: Served,
    luns: list[int],
    names: list[str],
    seed: int,
    cut: Callable[[list[str]], dict] | None = None,
):
    """Drive one qemu-io per LUN; preserve all LUNs together in the middle of a burst
    (by ``cut(names)``, the preserve's reply; default: the control request).

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
        _wait_inflight(served, names)
        if cut is None:
            result = served.call("preserve", names=names, wait=True)  # mid-burst
        else:
            result = cut(names)
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
    ks = [entry["issued_at_cut"] - base for entry, base in zip(result["luns"], before_load)]
    return loads, result, ks


def _wait_inflight(served: Served, names: list[str], timeout: float = 5.0) -> None:
    """Cut when every LUN has commands in flight, if that happens within ``timeout``
    (on a slow machine, such as the LIO guest under emulation, a write may finish before
    qemu-io sends the next; check_lun says whether the cut had enough concurrency)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inflight = {lun["name"]: lun["inflight"] for lun in served.call("status")["luns"]}
        if all(inflight[name] >= MIN_INFLIGHT for name in names):
            return
        time.sleep(0.001)


def check_lun(served: Served, tmp_path: Path, lun: int, entry: dict, writes, k: int) -> None:
    """Live: every write in issue order; frozen: exactly the first ``k`` (rules 1-6);
    then that the cut had commands in flight (else the check proved little)."""
    check_lun_data(served, tmp_path, lun, entry, writes, k)
    assert enough_concurrency(entry), (
        f"only {entry['inflight_at_cut']} commands in flight at the cut: no real concurrency"
    )


def enough_concurrency(entry: dict) -> bool:
    return entry["inflight_at_cut"] >= MIN_INFLIGHT


def check_lun_data(served: Served, tmp_path: Path, lun: int, entry: dict, writes, k: int) -> None:
    assert WARMUP + 10 <= k <= WARMUP + BURST, f"the cut at write {k} is outside the burst"
    live = qemu_img_read(served.url(lun), tmp_path / f"live{lun}.raw")
    assert live == apply(bytearray(LUN_SIZE), writes), "live LUN is not all writes in issue order"
    assert entry["preserved"]["state"] == "frozen"
    frozen = Path(entry["preserved"]["path"]).read_bytes()
    assert frozen == apply(bytearray(LUN_SIZE), writes[:k]), (
        f"the frozen volume is not exactly the {k} writes issued before the cut"
    )
