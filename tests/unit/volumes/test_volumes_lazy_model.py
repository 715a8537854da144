"""Lazy clones against a naive model, with hypothesis (DESIGN.md rules 3, 4 and 8).

Model: at the cut the clone equals the source. Afterwards
- a *pre-cut* write goes to the source and, replicated by the engine, to the clone
  (both writes run concurrently, in either order, possibly while a hydration step
  copies the very chunk they change);
- a *post-cut* write goes to the clone only;
- hydration steps (the background hydrator's unit of work) interleave with both.
The engine never runs overlapping writes at the same time, nor a read overlapping a
write, so the operations of one concurrent batch are chosen non-overlapping.
A "crash" drops the clone without close or flush and reopens it with open_volume.
With ``background`` the real hydrator task runs alongside (no crashes then).
Optionally the source is itself a lazy clone (a chain) that hydrates on its own.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targetcli_preserve.volumes import LazyVolume, clone_volume, create_volume, open_volume

CS = 4096
SIZE = 5 * CS + 1000  # last chunk is partial

ranges = st.integers(0, SIZE - 1).flatmap(
    lambda off: st.tuples(st.just(off), st.integers(1, min(SIZE - off, 2 * CS + 100)))
)
write_op = st.tuples(
    st.sampled_from(["pre", "post"]), ranges, st.integers(1, 255), st.booleans()
).map(lambda t: ("write", t[0], t[1][0], t[1][1], t[2], t[3]))
read_op = ranges.map(lambda r: ("read", r[0], r[1]))
hyd_op = st.sampled_from([("hydrate",), ("hydrate-source",)])
batch = st.lists(st.one_of(write_op, read_op, hyd_op), min_size=1, max_size=6)
steps = st.lists(st.one_of(batch, st.just("crash")), min_size=1, max_size=12)
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


async def scenario(d: Path, init, chain: bool, background: bool, plan) -> None:
    base = await create_volume(d / "base", SIZE)
    src_model = bytearray(SIZE)
    for (off, n), byte in init:
        await base.write(off, bytes([byte]) * n)
        src_model[off : off + n] = bytes([byte]) * n
    source = base
    if chain:
        source = await clone_volume(base, d / "mid", chunk_size=2 * CS, background=False)
    clone = await clone_volume(source, d / "clone", chunk_size=CS, background=background)
    assert isinstance(clone, LazyVolume)
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

    for step in plan:
        if step == "crash":
            if background:
                continue  # a live hydrator thread would outlive the "crash"
            dead = clone
            clone = await open_volume(d / "clone", source=source, background=False)
            os.close(dead._fd)  # what the kernel does when the process dies
            dead._bitmap.close()
            continue
        ops = non_overlapping(step)
        await asyncio.gather(*(run(op) for op in ops))
        for op in ops:  # the model applies the batch's writes (disjoint: order-free)
            if op[0] == "write":
                _, kind, off, n, byte, _ = op
                clone_model[off : off + n] = bytes([byte]) * n
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
        asyncio.run(scenario(Path(d), init, chain, background, plan))
