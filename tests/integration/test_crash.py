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
from qemu_load import QemuIo, Write
from served import Served, need, qemu_img_read

from targetcli_preserve._errors import PreserveError

LUN_SIZE = 16 << 20
SLOT = 65536
SLOTS = LUN_SIZE // SLOT  # 256 slots: write i fills slot i with pattern i % 255 + 1


@pytest.fixture(autouse=True)
def _tools():
    need("qemu-io")
    need("qemu-img")


def _preserve_quietly(served: Served) -> None:
    try:
        served.call("preserve", names=["lun0"])
    except PreserveError:
        pass  # the daemon died under it: that is the point


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


@pytest.mark.parametrize("delay_ms", [0.0, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0])
def test_sigkill_during_preserve(state_dir, clone_strategy, tmp_path, delay_ms):
    writes = slot_writes()
    served = Served(state_dir, [f"lun0:{LUN_SIZE}"]).start()
    io = QemuIo(served.url(0))
    try:
        io.feed([w.verbose_line() for w in writes[:80]])
        io.wait_acknowledged(20)
        feeder = io.feed_in_background([w.verbose_line() for w in writes[80:200]])
        while io.sent < 120:
            time.sleep(0.001)
        preserve = threading.Thread(target=_preserve_quietly, args=(served,), daemon=True)
        preserve.start()
        time.sleep(delay_ms / 1000)
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
        if len(vols) == 2:
            frozen = Path(vols[0]["path"]).read_bytes()
            on_frozen = check_slots(frozen, writes, "frozen")
            assert on_frozen <= on_live
        else:
            # The rolled-back clone is gone; the only other files are the standby lazy
            # clone the restarted daemon made afresh for the next cut.
            leftovers = sorted(
                p.name
                for p in Path(vols[0]["path"]).parent.iterdir()
                if not p.name.startswith("vol-000000") and p.stat().st_mtime_ns < restarted_at
            )
            assert leftovers == [], f"a rolled-back clone left files: {leftovers}"
        print(f"delay {delay_ms} ms: {states}, {len(acked)} acked, {len(on_live)} on live")
    finally:
        assert served.stop() == 0
