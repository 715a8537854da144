"""Restart recovery, state by state (docs/design.md rule 9; catalog.py says the policy).

Each test leaves a state directory exactly as a crash at one step of a preserve would
(journal records written or not, clone file made or not, same boot or a reboot), starts
the real daemon on it, and checks what it keeps. The SIGKILL test (test_crash.py) hits
these states at random; this one hits each on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from targetcli_preserve._errors import UserError
from targetcli_preserve.daemon import Daemon
from targetcli_preserve.journal import Journal, current_boot
from targetcli_preserve.options import Config, LunSpec
from targetcli_preserve.volumes import clone_volume, open_volume

SIZE = 4 << 20
BS = 512


def run(coro):
    return asyncio.run(coro)


async def _started(state: Path) -> Daemon:
    daemon = Daemon(Config(state, "127.0.0.1", 0, [LunSpec("lun0", SIZE)]))
    await daemon.start()
    return daemon


async def _write_and_stop(state: Path, lba: int, byte: int) -> None:
    daemon = await _started(state)
    try:
        await daemon.services.datapath.store("lun0").write(lba, 8, bytes([byte]) * 8 * BS)
    finally:
        await daemon.stop()


async def _lun_view(state: Path) -> tuple[list[tuple[int, str]], bytes]:
    """(generation, state) of every volume, and the live LUN's first 64 KiB as read
    through the data path, after a restart."""
    daemon = await _started(state)
    try:
        vols = [
            (v["generation"], v["state"]) for v in await daemon.services.commands.volumes("lun0")
        ]
        data = await daemon.services.datapath.store("lun0").read(0, 128)
        return vols, data
    finally:
        await daemon.stop()


def crash_mid_preserve(
    state: Path, *, commit: bool, durable: bool, boot: str, clone_made: bool = True
) -> None:
    """Leave ``state`` as a daemon killed during a preserve of lun0 would."""
    vol0 = state / "luns" / "lun0" / "vol-000000.img"
    vol1 = state / "luns" / "lun0" / "vol-000001.img"
    if clone_made:

        async def make():
            source = await open_volume(vol0)
            clone = await clone_volume(source, vol1)
            await clone.close()
            await source.close()

        run(make())
    journal = Journal(state / "journal")
    journal.append(
        {"op": "cut", "cut": 1, "seq": 5, "time": "t", "boot": boot, "luns": {"lun0": 1}}
    )
    if commit:
        journal.append({"op": "commit", "cut": 1})
    if durable:
        journal.append({"op": "durable", "cut": 1})
    journal.close()


def ops(state: Path) -> list[str]:
    return [r["op"] for r in Journal.read(state / "journal")]


@pytest.fixture
def state(tmp_path) -> Path:
    state = tmp_path / "state"
    run(_write_and_stop(state, 0, 0xA1))
    return state


def test_uncommitted_cut_is_rolled_back(state):
    crash_mid_preserve(state, commit=False, durable=False, boot=current_boot())
    vols, data = run(_lun_view(state))
    assert vols == [(0, "live")]
    assert data[: 8 * BS] == b"\xa1" * 8 * BS
    assert sorted(p.name for p in (state / "luns" / "lun0").iterdir()) == ["vol-000000.img"]
    assert ops(state)[-1] == "abort"


def test_cut_record_without_clone_is_rolled_back(state):
    crash_mid_preserve(state, commit=False, durable=False, boot=current_boot(), clone_made=False)
    vols, _ = run(_lun_view(state))
    assert vols == [(0, "live")]


def test_committed_cut_survives_a_daemon_crash(state):
    # Same boot: the page cache kept the commit and the clone; post-cut writes may
    # have been acknowledged on the clone, so it must stay live.
    crash_mid_preserve(state, commit=True, durable=False, boot=current_boot())
    vols, data = run(_lun_view(state))
    assert vols == [(0, "frozen"), (1, "live")]  # drained by the crash: frozen now
    assert data[: 8 * BS] == b"\xa1" * 8 * BS
    assert ops(state)[-1] == "freeze"


def test_committed_but_not_durable_cut_is_rolled_back_after_a_reboot(state):
    crash_mid_preserve(state, commit=True, durable=False, boot="another-boot")
    vols, data = run(_lun_view(state))
    assert vols == [(0, "live")]
    assert data[: 8 * BS] == b"\xa1" * 8 * BS


def test_durable_cut_survives_a_reboot(state):
    crash_mid_preserve(state, commit=True, durable=True, boot="another-boot")
    vols, _ = run(_lun_view(state))
    assert vols == [(0, "frozen"), (1, "live")]


def test_rollback_makes_the_source_live_again_even_if_it_was_frozen(state):
    crash_mid_preserve(state, commit=True, durable=False, boot="another-boot")
    journal = Journal(state / "journal")
    journal.append({"op": "freeze", "lun": "lun0", "gen": 0})
    journal.close()
    vols, _ = run(_lun_view(state))
    assert vols == [(0, "live")]
    run(_write_and_stop(state, 16, 0xB2))  # and it takes writes again
    _, data = run(_lun_view(state))
    assert data[16 * BS : 24 * BS] == b"\xb2" * 8 * BS


def test_orphan_clone_without_a_cut_record_is_removed(state):
    async def make():
        source = await open_volume(state / "luns" / "lun0" / "vol-000000.img")
        clone = await clone_volume(source, state / "luns" / "lun0" / "vol-000001.img")
        await clone.close()
        await source.close()

    run(make())
    vols, _ = run(_lun_view(state))
    assert vols == [(0, "live")]
    assert sorted(p.name for p in (state / "luns" / "lun0").iterdir()) == ["vol-000000.img"]


def test_torn_journal_tail_is_ignored(state):
    with open(state / "journal", "ab") as f:
        f.write(b'{"op": "cut", "cut": 1, "se')  # the daemon died mid-write
    vols, _ = run(_lun_view(state))
    assert vols == [(0, "live")]
    run(_write_and_stop(state, 0, 0xC3))  # and later records still read back
    assert all(isinstance(r, dict) for r in Journal.read(state / "journal"))
    _, data = run(_lun_view(state))
    assert data[: 8 * BS] == b"\xc3" * 8 * BS


def test_restart_keeps_cut_details(state):
    crash_mid_preserve(state, commit=True, durable=True, boot=current_boot())

    async def view():
        daemon = await _started(state)
        try:
            return await daemon.services.commands.volumes(
                "lun0"
            ), await daemon.services.commands.status("lun0")
        finally:
            await daemon.stop()

    vols, status = run(view())
    assert vols[1]["preserve"] == {"id": 1, "seq": 5, "time": "t"}
    assert status["luns"][0]["last_preserve"] == {"id": 1, "seq": 5, "time": "t"}
    assert status["next_seq"] >= 5  # the counter goes on past every T taken


def test_a_different_size_for_an_existing_lun_is_refused(state):
    async def start():
        daemon = Daemon(Config(state, "127.0.0.1", 0, [LunSpec("lun0", SIZE * 2)]))
        try:
            await daemon.start()
        finally:
            await daemon.stop()

    with pytest.raises(UserError, match="exists with size"):
        run(start())


def test_a_second_daemon_on_the_same_state_is_refused(state):
    async def both():
        first = await _started(state)
        try:
            with pytest.raises(UserError, match="another daemon"):
                await _started(state)
        finally:
            await first.stop()

    run(both())


def test_control_socket_is_private(state):
    async def mode():
        daemon = await _started(state)
        try:
            return os.stat(state / "control.sock").st_mode & 0o777
        finally:
            await daemon.stop()

    assert run(mode()) == 0o600


def test_journal_records_are_json_lines(state):
    for line in (state / "journal").read_bytes().splitlines():
        assert isinstance(json.loads(line), dict)
