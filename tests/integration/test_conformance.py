"""libiscsi's conformance suite (``iscsi-test-cu -t SCSI,iSCSI``) against the real
product daemon (``targetcli-preserve serve``), with tgtd run once in the same session as
a baseline; both counts are printed side by side.

The product must pass every test. A test may only fail if it is listed in ALLOWED_FAILURES
with the reason (a command we deliberately do not implement that libiscsi counts as a
failure instead of a skip). iscsi-test-cu writes to the LUN, so every run gets a
throwaway state directory / backing file.
"""

from __future__ import annotations

import pytest
from helpers.conformance import CuRun, run_suite
from helpers.served import IQN, Served
from helpers.skips import need
from helpers.tgtd_peer import Tgtd, available

FAMILIES = "SCSI,iSCSI"
LUN_SIZE = 64 << 20

# test name ("Suite.Test" as iscsi-test-cu names it) -> why it may fail against the product
ALLOWED_FAILURES: dict[str, str] = {}

_results: dict[str, CuRun] = {}


@pytest.fixture(scope="module")
def product_run(tmp_path_factory) -> CuRun:
    need("iscsi-test-cu")
    state = tmp_path_factory.mktemp("conformance") / "state"
    daemon = Served(state, [f"lun0:{LUN_SIZE >> 20}M"]).start()
    try:
        result = run_suite(f"iscsi://127.0.0.1:{daemon.port}/{IQN}/0", FAMILIES)
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.output[-50:])
    _results["product"] = result
    return result


@pytest.fixture(scope="module")
def tgtd_run(tmp_path_factory) -> CuRun:
    need("iscsi-test-cu")
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    backing = tmp_path_factory.mktemp("tgtd") / "lun.img"
    with open(backing, "wb") as f:
        f.truncate(LUN_SIZE)
    with Tgtd(backing) as tgtd:
        result = run_suite(tgtd.url(), FAMILIES)
    _results["tgtd"] = result
    return result


@pytest.mark.slow
def test_product_passes_iscsi_test_cu(product_run: CuRun):
    r = product_run
    unexpected = sorted(set(r.failures) - set(ALLOWED_FAILURES))
    assert r.ran == r.total and r.total >= 200, r.output[-3000:]
    assert not unexpected, f"unexpected failures {unexpected}:\n{r.output[-6000:]}"
    assert r.failed == len(r.failures) <= len(ALLOWED_FAILURES), r.output[-3000:]
    if not r.failures:
        assert r.returncode == 0, r.output[-3000:]


@pytest.mark.slow
def test_side_by_side_with_tgtd(product_run: CuRun, tgtd_run: CuRun, capsys):
    rows = [("", "product", "tgtd")]
    for name in ("total", "ran", "passed", "failed", "skipped", "really_passed"):
        rows.append((name, str(getattr(product_run, name)), str(getattr(tgtd_run, name))))
    table = "\n".join(f"  {a:<13} {b:>8} {c:>8}" for a, b, c in rows)
    with capsys.disabled():
        print(f"\niscsi-test-cu -t {FAMILIES}:\n{table}")
        print(f"  tgtd failures: {', '.join(tgtd_run.failures) or 'none'}")
    # the baseline is informational; it only has to have run
    assert tgtd_run.ran == tgtd_run.total >= 200, tgtd_run.output[-3000:]
    assert product_run.passed >= tgtd_run.passed
