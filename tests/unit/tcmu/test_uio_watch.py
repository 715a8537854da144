"""The uio edge (tcmu/uio.py) and the device watcher (tcmu/watch.py) on this machine.

No TCMU device exists here: sysfs is a directory the test lays out like
``/sys/class/uio`` and the uevents are pyudev's own device objects (built from a uevent
environment, as udev hands them to a RUN program). The real thing runs in the LIO guest
(tests/lio/test_lio_serve.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import pyudev

from targetcli_preserve.tcmu import uio as uio_mod
from targetcli_preserve.tcmu.uio import TcmuName, UioDevice, UioError
from targetcli_preserve.tcmu.watch import UioWatcher


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("tcm-user/1/db0/preserve/db0", TcmuName(1, "db0", "preserve", "db0")),
        ("tcm-user/12/x/preserve/a/b", TcmuName(12, "x", "preserve", "a/b")),
        ("tcm-user/3/fb/fbo/file=/tmp/x\n", TcmuName(3, "fb", "fbo", "file=/tmp/x")),
        ("tcm-user/1/db0/preserve/", TcmuName(1, "db0", "preserve", "")),
        ("tcm-user/x/db0/preserve/db0", None),
        ("tcm-user/1//preserve/db0", None),
        ("tcm-user/1/db0", None),
        ("uio_pdrv_genirq", None),
        ("", None),
    ],
)
def test_tcmu_names(name, parsed):
    assert TcmuName.parse(name) == parsed


def _uio(sys_class: Path, uio: str, name: str, size: int = 1 << 16) -> None:
    (sys_class / uio / "maps" / "map0").mkdir(parents=True)
    (sys_class / uio / "name").write_text(name + "\n")
    (sys_class / uio / "maps" / "map0" / "size").write_text(f"{size:#x}\n")


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def added(self, uio: str, tcmu: TcmuName) -> None:
        self.events.append(("add", (uio, tcmu)))

    def removed(self, uio: str) -> None:
        self.events.append(("remove", uio))


def test_watcher_reports_only_its_subtype_once(tmp_path):
    _uio(tmp_path, "uio0", "tcm-user/1/db0/preserve/db0")
    _uio(tmp_path, "uio1", "tcm-user/2/fb/fbo/file=/x")
    _uio(tmp_path, "uio2", "uio_pdrv_genirq")
    seen = Seen()
    w = UioWatcher("preserve", seen.added, seen.removed, sys_class=tmp_path)
    for uio in ("uio0", "uio1", "uio2", "uio0", "uio9"):  # uio9: gone before it was read
        w.handle("add", uio)
    w.handle("change", "uio0")
    w.handle("remove", "uio1")  # not ours: never reported, so no removal either
    w.handle("remove", "uio0")
    w.handle("remove", "uio0")
    assert seen.events == [
        ("add", ("uio0", TcmuName(1, "db0", "preserve", "db0"))),
        ("remove", "uio0"),
    ]
    assert w.present == {}


def test_a_failing_owner_does_not_stop_the_watch(tmp_path, caplog):
    _uio(tmp_path, "uio0", "tcm-user/1/a/preserve/a")
    _uio(tmp_path, "uio1", "tcm-user/1/b/preserve/b")
    got = []

    def added(uio, tcmu):
        if uio == "uio0":
            raise RuntimeError("boom")
        got.append(uio)

    w = UioWatcher("preserve", added, lambda uio: None, sys_class=tmp_path)
    w.handle("add", "uio0")
    w.handle("add", "uio1")
    assert got == ["uio1"]
    assert "handling add of uio0 failed" in caplog.text


class FakeMonitor:
    """What the watcher uses of pyudev.Monitor: poll(timeout=0) until None."""

    def __init__(self, devices):
        self.devices = list(devices)

    def poll(self, timeout=None):
        assert timeout == 0, "the watcher must never block the loop"
        return self.devices.pop(0) if self.devices else None


def test_watcher_drains_pyudev_devices(tmp_path, monkeypatch):
    """A pyudev device as udev hands it over (libudev builds one per process from a
    uevent environment); the removal goes through ``handle`` like the monitor's would."""
    _uio(tmp_path, "uio4", "tcm-user/5/lun7/preserve/lun7")
    for key, value in (
        ("ACTION", "add"),
        ("DEVPATH", "/devices/virtual/uio/uio4"),
        ("SUBSYSTEM", "uio"),
        ("SEQNUM", "1"),
    ):
        monkeypatch.setenv(key, value)
    device = pyudev.Devices.from_environment(pyudev.Context())
    assert (device.action, device.sys_name, device.subsystem) == ("add", "uio4", "uio")
    seen = Seen()
    w = UioWatcher("preserve", seen.added, seen.removed, sys_class=tmp_path)
    w._monitor = FakeMonitor([device])
    w._drain()
    w.handle("remove", "uio4")
    assert seen.events == [
        ("add", ("uio4", TcmuName(5, "lun7", "preserve", "lun7"))),
        ("remove", "uio4"),
    ]


def test_uio_device_maps_the_whole_map(tmp_path):
    sys_class, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    _uio(sys_class, "uio0", "tcm-user/1/db0/preserve/db0", size=3 * 4096)
    (dev / "uio0").write_bytes(b"\xab" * (3 * 4096))
    device = UioDevice("uio0", sys_class, dev)
    try:
        assert device.map_size == 3 * 4096 and len(device.map) == 3 * 4096
        assert device.map[0] == 0xAB
        device.map[1] = 0x01
        device.ack()
        device.ring()
        assert isinstance(device.fileno(), int)
    finally:
        device.close()
        device.close()  # idempotent
    assert (dev / "uio0").read_bytes()[1] == 0x01  # MAP_SHARED


def test_uio_device_errors_name_the_device(tmp_path, monkeypatch):
    sys_class, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    with pytest.raises(UioError, match="uio0: cannot read the map size"):
        UioDevice("uio0", sys_class, dev)
    _uio(sys_class, "uio0", "tcm-user/1/db0/preserve/db0")
    with pytest.raises(UioError, match="cannot open .*uio0"):
        UioDevice("uio0", sys_class, dev)

    def busy(*args, **kwargs):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(uio_mod.os, "open", busy)
    with pytest.raises(UioError, match="another process serves it"):
        UioDevice("uio0", sys_class, dev)
