"""SIGKILL during a preserve, then restart (docs/design.md rules 8 and 9).

The daemon is killed at a spread of moments around a preserve while qemu-io has writes
in flight. After a restart with the same command line:

- the LUN is consistent: either the cut committed (generation 0 frozen, 1 live) or it
  was rolled back (generation 0 live, no trace of the clone);
- every write qemu-io saw acknowledged is on the live LUN (read back over iSCSI);
- every slot of both volumes holds either its write's pattern or zeros, never a mix;
- whatever the preserved volume holds, the live one holds too (the writes here do not
  overlap, so the live LUN only ever gains data).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers.qemu_load import QemuIo, Write
from helpers.served import Served, qemu_img_read
from helpers.skips import need

from targetcli_preserve._errors import PreserveError

LUN_SIZE = 16 << 20
SLOT = 65536
SLOTS = LUN_SIZE // SLOT  # 256 slots: write i fills slot i with pattern i % 255 + 1


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-io")
    need("qemu-img")


def _preserve_quietly(served: Served, outcome: dict) -> None:
    try:
        outcome["result"] = served.call("preserve", names=["lun0"])
    except PreserveError as err:
        outcome["error"] = err  # the daemon died under it: that is the point


def slot_writes() -> list[Write]:
    return [Write(i * SLOT, SLOT, i % 255 + 1) for i in range(SLOTS)]


def check_slots(image: bytes, writes: list[Write], what: str) -> set[int]:
    """Indices of slots holding their pattern; fail on any slot holding a mix."""
    full = set()
    for i, w in enumerate(writes):
        chunk = image[w.offset : w.offset + w.length]
        if chunk == bytes([w.pattern]) * w.length:
            full.add(i)
        else:
            assert chunk == bytes(w.length), f"{what}: slot {i} is torn or foreign"
    return full


def wait_for_record(journal: Path, op: str, timeout: float = 10.0) -> None:
    """Return as soon as the journal holds a record ``op`` of a preserve (polled)."""
    needle = f'"op":"{op}"'.encode()
    deadline = time.monotonic() + timeout
    while needle not in journal.read_bytes():
        assert time.monotonic() < deadline, f"no {op!r} record within {timeout} s"
        time.sleep(0.0002)


# When to kill: a delay after the preserve was sent, or as soon as the journal shows a
# step of it. A cut whose "commit" record exists survives a crash of the daemon (same
# boot, rule 9); one whose preserve command returned survives anything.
KILL_POINTS = ["0ms", "0.5ms", "2ms", "5ms", "20ms", "cut", "commit", "durable", "returned"]
COMMITTED = {"commit", "durable", "returned"}


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_during_preserve(state_dir, clone_strategy, tmp_path, kill_at):
    writes = slot_writes()
    served = Served(state_dir, [f"lun0:{LUN_SIZE}"]).start()
    io = QemuIo(served.url(0))
    try:
        io.feed([w.verbose_line() for w in writes[:80]])
        io.settle(20)
        feeder = io.feed_in_background([w.verbose_line() for w in writes[80:200]])
        deadline = time.monotonic() + 30
        while io.sent < 120:
            assert time.monotonic() < deadline, "the feeder stalled"
            time.sleep(0.001)
        acked_before = {off // SLOT for off, _ in io.acknowledged()}
        outcome: dict = {}
        preserve = threading.Thread(target=_preserve_quietly, args=(served, outcome), daemon=True)
        preserve.start()
        if kill_at.endswith("ms"):
            time.sleep(float(kill_at[:-2]) / 1000)
        elif kill_at == "returned":
            preserve.join(30)
        else:
            wait_for_record(state_dir / "journal", kill_at)
        served.kill()
        preserve.join(30)
        feeder.join(30)
        time.sleep(0.2)
        acked = {off // SLOT for off, _ in io.acknowledged()}
    finally:
        io.kill()
        served.kill()

    port = served.port
    restarted_at = time.time_ns()
    served = Served(state_dir, [f"lun0:{LUN_SIZE}"], port=port).start()
    try:
        vols = served.json("volumes", "lun0")
        states = [v["state"] for v in vols]
        assert states in (["live"], ["frozen", "live"]), states
        live = qemu_img_read(served.url(0), tmp_path / "live.raw")
        on_live = check_slots(live, writes, "live")
        assert acked <= on_live, f"acknowledged writes lost: {sorted(acked - on_live)}"
        if kill_at == "returned":
            assert "result" in outcome, f"the preserve did not return: {outcome}"
        if kill_at in COMMITTED or "result" in outcome:
            assert len(vols) == 2, f"a committed preserve was rolled back (kill at {kill_at})"
        if "result" in outcome:
            assert vols[1]["preserve"]["id"] == outcome["result"]["id"]
        if len(vols) == 2:
            frozen = Path(vols[0]["path"]).read_bytes()
            on_frozen = check_slots(frozen, writes, "frozen")
            assert on_frozen <= on_live
            # every write acknowledged before the preserve was sent is pre-cut
            assert acked_before <= on_frozen, (
                f"acknowledged before the preserve, missing from it: "
                f"{sorted(acked_before - on_frozen)}"
            )
        else:
            # The rolled-back clone is gone; the only other files are the standby lazy
            # clone the restarted daemon made afresh for the next cut.
            leftovers = sorted(
                p.name
                for p in Path(vols[0]["path"]).parent.iterdir()
                if not p.name.startswith("vol-000000") and p.stat().st_mtime_ns < restarted_at
            )
            assert leftovers == [], f"a rolled-back clone left files: {leftovers}"
        print(
            f"kill at {kill_at}: {states}, preserve {'returned' if 'result' in outcome else 'cut off'}, "
            f"{len(acked)} acked, {len(on_live)} on live"
        )
    finally:
        assert served.stop() == 0
