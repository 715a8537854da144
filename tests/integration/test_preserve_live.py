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

import pytest
from helpers.preserve_load import LUN_SIZE, check_lun, run_load_with_cut
from helpers.served import Served
from helpers.skips import need


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-io")
    need("qemu-img")


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
