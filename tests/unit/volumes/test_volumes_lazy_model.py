"""Lazy clones against a naive model, with hypothesis (docs/design.md rules 3, 4 and 8).

Model: at the cut the clone equals the source. Afterwards
- a *pre-cut* write goes to the source and, replicated by the engine, to the clone
  (both writes run concurrently, in either order, possibly while a hydration step
  copies the very chunk they change);
- a *post-cut* write goes to the clone only;
- hydration steps (the background hydrator's unit of work) interleave with both.
The engine never runs overlapping writes at the same time, nor a read overlapping a
write, so the operations of one concurrent batch are chosen non-overlapping.
A "crash" (process crash) drops the clone without close or flush and reopens it with
open_volume in the same boot: nothing acknowledged may be lost.
A "powerloss" first runs a flush() whose k-th fsync/fdatasync fails as the power goes
(nothing after it runs), then changes the boot id and rolls the clone's data file back
to its content at its last successful fsync/fdatasync. The durable bitmap either keeps
everything ever written to it (a page written back early: the worst case for the
ordering of flush()) or is rolled back too (data synced, bit lost: stray bytes under a
clear bit). Then every chunk that no write touched since the last completed flush()
must read as before; the others may read as at that flush, as now, or as the source
(the LUN's write-back cache), and from then on they must not change without a write
(the model adopts them).
With ``background`` the real hydrator task runs alongside (no crashes then).
Optionally the source is itself a lazy clone (a chain) that hydrates on its own.
``tests/system/volumes`` runs the same scenario with REFLINK clones on XFS.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import uuid
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve._errors import BackendError
from targetcli_preserve.volumes import (
    CloneStrategy,
    LazyVolume,
    clone_volume,
    create_volume,
    open_volume,
)
from targetcli_preserve.volumes import bitmap as bitmap_mod

CS = 4096
SIZE = 5 * CS + 1000  # last chunk is partial

ranges = st.integers(0, SIZE - 1).flatmap(
    lambda off: st.tuples(st.just(off), st.integers(1, min(SIZE - off, 2 * CS + 100)))
)
write_op = st.tuples(
    st.sampled_from(["pre", "post"]), ranges, st.integers(1, 255), st.booleans()
).map(lambda t: ("write", t[0], t[1][0], t[1][1], t[2], t[3]))
read_op = ranges.map(lambda r: ("read", r[0], r[1]))
hyd_op = st.sampled_from([("hydrate",), ("hydrate-source",), ("flush",)])
batch = st.lists(st.one_of(write_op, read_op, hyd_op), min_size=1, max_size=6)
powerloss = st.tuples(st.just("powerloss"), st.integers(0, 4), st.booleans())
steps = st.lists(st.one_of(batch, st.just("crash"), powerloss), min_size=1, max_size=12)


class Disk:
    """What reached the disk: the clone's data file and durable bitmap as of their last
    fsync/fdatasync."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bitmap = path.with_name(path.name + ".bitmap")
        self.data: bytes | None = None
        self.bitmap_data: bytes | None = None
        self.boot = uuid.uuid4().bytes
        #: syncs left before the power goes (None: no cut planned)
        self.budget: int | None = None
        self._lock = threading.Lock()
        self._real = {"fsync": os.fsync, "fdatasync": os.fdatasync}

    def sync(self, name: str, fd: int) -> None:
        with self._lock:
            if self.budget is not None:
                if self.budget == 0:
                    raise OSError(5, "power cut")
                self.budget -= 1
        st = os.fstat(fd)
        for path, attr in ((self.path, "data"), (self.bitmap, "bitmap_data")):
            try:
                mine = os.path.samestat(st, os.stat(path))
            except FileNotFoundError:
                mine = False
            if mine:
                content = os.pread(fd, SIZE + 4096, 0)  # the state when the sync was called
                with self._lock:
                    setattr(self, attr, content)
        self._real[name](fd)

    def patches(self) -> list:  # type: ignore[type-arg]
        return [
            mock.patch.object(os, "fsync", lambda fd: self.sync("fsync", fd)),
            mock.patch.object(os, "fdatasync", lambda fd: self.sync("fdatasync", fd)),
            mock.patch.object(bitmap_mod, "current_boot_id", lambda: self.boot),
        ]

    def lose_power(self, bitmap_written_back: bool) -> None:
        """Roll the data file (and maybe the bitmap) back to what was synced; new boot."""
        assert self.data is not None and self.bitmap_data is not None
        if not bitmap_written_back:
            self.bitmap.write_bytes(self.bitmap_data)
        self.bitmap_data = self.bitmap.read_bytes()  # from now on, this is the disk
        with open(self.path, "r+b") as f:
            f.truncate(0)
            f.truncate(SIZE)
            for pos in range(0, len(self.data), 512):
                block = self.data[pos : pos + 512]
                if block.strip(b"\0"):
                    f.seek(pos)
                    f.write(block)
        self.boot = uuid.uuid4().bytes


def chunks_of(off: int, n: int, cs: int = CS) -> set[int]:
    return set(range(off // cs, (off + n - 1) // cs + 1))


initial = st.lists(st.tuples(ranges, st.integers(1, 255)), max_size=4)


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]


def non_overlapping(ops: list[tuple]) -> list[tuple]:
    """Drop ops that overlap an earlier read/write of the same batch."""
    kept: list[tuple] = []
    taken: list[tuple[int, int]] = []
    for op in ops:
        if op[0] in ("write", "read"):
            r = (op[2], op[3]) if op[0] == "write" else (op[1], op[2])
            if any(overlaps(r, t) for t in taken):
                continue
            taken.append(r)
        kept.append(op)
    return kept


async def scenario(
    d: Path, disk: Disk, init, chain: bool, background: bool, plan, strategy=None, cs: int = CS
) -> None:
    """``strategy``: for both clones; None is the automatic choice, which must be LAZY
    here (these tests run on a filesystem without reflink). ``cs``: the clone's chunk
    size (the chain's middle clone has twice that)."""
    base = await create_volume(d / "base", SIZE)
    src_model = bytearray(SIZE)
    for (off, n), byte in init:
        await base.write(off, bytes([byte]) * n)
        src_model[off : off + n] = bytes([byte]) * n
    source = base
    if chain:
        source = await clone_volume(base, d / "mid", strategy, chunk_size=2 * cs, background=False)
    clone = await clone_volume(source, d / "clone", strategy, chunk_size=cs, background=background)
    assert isinstance(clone, LazyVolume)
    assert clone.strategy is (strategy or CloneStrategy.LAZY)
    clone_model = bytearray(src_model)

    async def run(op: tuple) -> None:
        nonlocal clone
        if op[0] == "write":
            _, kind, off, n, byte, clone_first = op
            data = bytes([byte]) * n
            if kind == "post":
                await clone.write(off, data)
            else:
                a, b = (clone, source) if clone_first else (source, clone)
                await asyncio.gather(a.write(off, data), b.write(off, data))
        elif op[0] == "read":
            _, off, n = op
            got = await clone.read(off, n)
            assert got == bytes(clone_model[off : off + n]), f"read {off}+{n}"
        elif op[0] == "hydrate":
            await clone.hydrate_step()
        elif op[0] == "hydrate-source" and isinstance(source, LazyVolume):
            await source.hydrate_step()
        elif op[0] == "flush":
            await clone.flush()

    flushed = False  # a flush() has completed: the clone itself is durable
    at_flush = bytes(clone_model)  # the clone's content at the last completed flush()
    touched: set[int] = set()  # chunks written since the last completed flush()
    ambiguous: set[int] = set()  # chunks written in the batch of that flush()
    for step in plan:
        if step == "crash":
            if background:
                continue  # a live hydrator thread would outlive the "crash"
            dead = clone
            clone = await open_volume(d / "clone", source=source, background=False)
            assert clone.strategy is (strategy or CloneStrategy.LAZY)
            os.close(dead._fd)  # what the kernel does when the process dies
            dead._bitmap.close()
            continue
        if step[0] == "powerloss":
            if background:
                continue  # a live hydrator thread would outlive the power
            if not flushed:  # else the clone itself may be gone (write-back cache)
                await clone.flush()
                flushed, at_flush, touched, ambiguous = True, bytes(clone_model), set(), set()
            disk.budget = step[1]
            try:
                await clone.flush()
            except BackendError:
                pass  # the power went during it
            else:
                at_flush, touched, ambiguous = bytes(clone_model), set(), set()
            disk.budget = None
            os.close(clone._fd)
            clone._bitmap.close()
            disk.lose_power(bitmap_written_back=step[2])
            clone = await open_volume(d / "clone", source=source, background=False)
            assert clone.strategy is (strategy or CloneStrategy.LAZY)
            got = await clone.read(0, SIZE)
            for c in range(-(-SIZE // cs)):
                lo, hi = c * cs, min(SIZE, (c + 1) * cs)
                if c in ambiguous:
                    continue  # written while the last flush ran: it may or may not cover it
                if c not in touched:
                    assert got[lo:hi] == bytes(clone_model[lo:hi]), f"flushed chunk {c} lost"
                else:
                    assert got[lo:hi] in (
                        at_flush[lo:hi],
                        bytes(clone_model[lo:hi]),
                        bytes(src_model[lo:hi]),
                    ), f"chunk {c} reads data it never held"
            clone_model[:] = got
            at_flush, touched, ambiguous = got, set(), set()
            continue
        ops = non_overlapping(step)
        before = bytes(clone_model)
        await asyncio.gather(*(run(op) for op in ops))
        if any(op[0] == "flush" for op in ops):
            flushed = True
            at_flush, touched, ambiguous = before, set(), set()
            for op in ops:
                if op[0] == "write":
                    ambiguous |= chunks_of(op[2], op[3], cs)
        for op in ops:  # the model applies the batch's writes (disjoint: order-free)
            if op[0] == "write":
                _, kind, off, n, byte, _ = op
                clone_model[off : off + n] = bytes([byte]) * n
                touched |= chunks_of(off, n, cs)
                if kind == "pre":
                    src_model[off : off + n] = bytes([byte]) * n
        assert await clone.read(0, SIZE) == bytes(clone_model)
        assert await source.read(0, SIZE) == bytes(src_model)

    await clone.wait_hydrated()
    assert clone._bitmap.remaining == 0
    assert await clone.read(0, SIZE) == bytes(clone_model)
    assert await source.read(0, SIZE) == bytes(src_model)
    assert (d / "clone").read_bytes() == bytes(clone_model)  # the file alone holds it
    await clone.close()
    again = await open_volume(d / "clone")
    assert await again.read(0, SIZE) == bytes(clone_model)
    await again.close()
    if source is not base:
        await source.close()
    await base.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(init=initial, chain=st.booleans(), background=st.booleans(), plan=steps)
def test_lazy_clone_matches_the_model(init, chain, background, plan) -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        disk = Disk(Path(d) / "clone")
        patches = disk.patches()
        for patch in patches:
            patch.start()
        try:
            asyncio.run(scenario(Path(d), disk, init, chain, background, plan))
        finally:
            for patch in patches:
                patch.stop()
