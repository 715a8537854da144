"""install-system (system_install.py) and the files it installs: the systemd unit (checked
by systemd-analyze and against what the daemon must be able to write), the udev rule,
the D-Bus policy (loaded by a real dbus-daemon), the modules list."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dbus_peers import BusDaemon
from helpers.skips import need, not_applicable

from targetcli_preserve import lio, system_install
from targetcli_preserve.cli import main
from targetcli_preserve.system_install import FILES, UNIT

PACKAGE_SYSTEM = Path(system_install.__file__).parent / "system"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def installed(root: Path, source: str) -> Path:
    return root / FILES[source].lstrip("/")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A DESTDIR with everything installed once."""
    top = tmp_path / "root"
    code, _, err = run_cli("install-system", "--root", str(top))
    assert (code, err) == (0, ""), err
    return top


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment of a unit file, in order (a key may
    come more than once: configparser would keep only the last)."""
    entries, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(entries: list[tuple[str, str, str]], section: str, key: str) -> list[str]:
    """Every word given to ``key`` in ``section``, across its assignments."""
    return [w for s, k, v in entries if (s, k) == (section, key) for w in v.split()]


def one(entries: list[tuple[str, str, str]], section: str, key: str) -> str:
    found = [v for s, k, v in entries if (s, k) == (section, key)]
    assert len(found) == 1, f"[{section}] {key}= given {len(found)} times"
    return found[0]


# ---- the table ---------------------------------------------------------------------------


def test_every_source_of_the_table_ships_in_the_package() -> None:
    for source in FILES:
        assert (PACKAGE_SYSTEM / source).is_file(), f"targetcli_preserve/system/{source}"
        assert system_install.source_text(source).strip()


def test_every_file_of_the_system_directory_is_installed() -> None:
    shipped = {p.name for p in PACKAGE_SYSTEM.iterdir() if not p.name.startswith(".")}
    assert shipped == set(FILES), "a file of targetcli_preserve/system/ that nothing installs"


def test_setup_cfg_ships_the_system_directory_in_the_wheel() -> None:
    setup_cfg = (PACKAGE_SYSTEM.parents[1] / "setup.cfg").read_text()
    section = setup_cfg.split("[options.package_data]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^targetcli_preserve\s*=.*\bsystem/\*", section, re.MULTILINE)


def test_destinations_are_absolute_and_distinct() -> None:
    assert all(dest.startswith("/etc/") for dest in FILES.values())
    assert len(set(FILES.values())) == len(FILES)
    assert FILES["targetcli-preserve-dbus.conf"] == "/etc/dbus-1/system.d/targetcli-preserve.conf"


# ---- the installer under --root --------------------------------------------------------


def test_install_writes_every_file_with_mode_0644(root: Path) -> None:
    daemon = system_install.find_daemon()
    for source in FILES:
        path = installed(root, source)
        assert path.stat().st_mode & 0o7777 == 0o644, path
        assert path.read_text() == system_install.render(source, daemon)
        shipped = (PACKAGE_SYSTEM / source).read_text().splitlines()
        changed = [
            line
            for line, was in zip(path.read_text().splitlines(), shipped, strict=True)
            if line != was
        ]
        # the unit's ExecStart= gets the daemon's path; nothing else differs
        assert [line.split("=")[0] for line in changed] == (["ExecStart"] if source == UNIT else [])
    leftovers = [p for p in root.rglob(".*") if p.is_file()]
    assert leftovers == [], "temporary files left behind"


def test_unit_execstart_names_the_real_installed_daemon(root: Path) -> None:
    entries = unit_entries(installed(root, UNIT).read_text())
    argv = shlex.split(one(entries, "Service", "ExecStart"))
    program = Path(argv[0])
    assert program.is_absolute() and program.name == "targetcli-preserved"
    assert os.access(program, os.X_OK)
    assert "@DAEMON@" not in installed(root, UNIT).read_text()
    # the very program: it answers --version like the package's daemon
    done = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("targetcli-preserved ")


def test_a_second_run_changes_nothing(root: Path) -> None:
    before = {s: installed(root, s).stat() for s in FILES}
    code, out, _ = run_cli("install-system", "--root", str(root))
    assert code == 0
    assert out.splitlines() == [f"unchanged {installed(root, s)}" for s in FILES]
    for source, st in before.items():
        now = installed(root, source).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), source


def test_a_changed_file_is_replaced_and_its_mode_fixed(root: Path) -> None:
    rule = installed(root, "60-targetcli-preserve.rules")
    rule.write_text("edited\n")
    unit = installed(root, UNIT)
    unit.chmod(0o600)
    code, out, _ = run_cli("install-system", "--root", str(root))
    assert code == 0
    assert f"written {rule}" in out.splitlines()
    assert f"written {unit}" in out.splitlines()
    assert rule.read_bytes() == (PACKAGE_SYSTEM / rule.name).read_bytes()
    assert unit.stat().st_mode & 0o7777 == 0o644


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    top = tmp_path / "root"
    code, out, err = run_cli("install-system", "--root", str(top), "--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"would write {installed(top, s)}" for s in FILES]
    assert not top.exists()


def test_dry_run_over_an_installed_root_says_unchanged(root: Path) -> None:
    code, out, _ = run_cli("install-system", "--root", str(root), "--dry-run")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} == {"unchanged"}


def test_json_lists_the_files(tmp_path: Path) -> None:
    top = tmp_path / "root"
    code, out, _ = run_cli("--json", "install-system", "--root", str(top))
    assert code == 0
    listed = json.loads(out)
    assert listed == [
        {"source": s, "path": str(installed(top, s)), "mode": "0644", "action": "written"}
        for s in FILES
    ]


def test_a_root_that_is_a_file_is_bad_usage(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    code, out, err = run_cli("install-system", "--root", str(not_a_dir), "--json")
    assert code == 2
    assert "not a directory" in err
    assert json.loads(out)["kind"] == "UserError"


def test_an_unwritable_destination_fails_with_status_1(tmp_path: Path) -> None:
    top = tmp_path / "root"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "systemd").write_text("a file where a directory belongs")
    code, _, err = run_cli("install-system", "--root", str(top))
    assert code == 1
    assert err.startswith("targetcli-preserve: ")


def test_exec_path_is_quoted_for_systemd() -> None:
    assert system_install.unit_exec_path(Path("/usr/bin/x")) == "/usr/bin/x"
    assert system_install.unit_exec_path(Path("/opt/a b/x")) == '"/opt/a b/x"'
    assert system_install.unit_exec_path(Path("/opt/100%/x")) == "/opt/100%%/x"


# ---- reloads -------------------------------------------------------------------------------


def test_reloads_run_only_what_runs_and_a_failure_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = tmp_path / "running"
    running.write_text("")
    monkeypatch.setattr(
        system_install,
        "RELOADS",
        [
            ("good", "true", str(running), ["true"]),
            ("bad", "false", str(running), ["false"]),
            ("not installed", "no-such-tool-here", str(running), ["no-such-tool-here"]),
            ("not running", "true", str(tmp_path / "absent"), ["true", "not-running"]),
        ],
    )
    warnings: list[str] = []
    said: list[str] = []
    ran = system_install.reload_managers(warn=warnings.append, say=said.append)
    assert ran == ["true", "false"]
    assert said == ["ran true"]
    assert len(warnings) == 1 and warnings[0].startswith("bad not reloaded: false exited with 1")
    warnings.clear()
    said.clear()
    ran = system_install.reload_managers(dry_run=True, warn=warnings.append, say=said.append)
    assert said == ["would run true", "would run false"]
    assert warnings == []


# ---- the unit ----------------------------------------------------------------------------


def test_systemd_analyze_verifies_the_installed_unit(root: Path) -> None:
    tool = need("systemd-analyze")
    done = subprocess.run(
        [tool, "verify", "--man=no", str(installed(root, UNIT))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # an unknown or misspelled key is only a warning


def test_systemd_analyze_catches_a_broken_unit(root: Path) -> None:
    """The check above can fail: a missing ExecStart program is an error."""
    tool = need("systemd-analyze")
    unit = installed(root, UNIT)
    text = unit.read_text()
    program = shlex.split(one(unit_entries(text), "Service", "ExecStart"))[0]
    unit.write_text(text.replace(program, str(root / "nowhere" / "targetcli-preserved")))
    done = subprocess.run(
        [tool, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0


def test_unit_keeps_writable_what_the_daemon_writes(root: Path) -> None:
    entries = unit_entries(installed(root, UNIT).read_text())
    argv = shlex.split(one(entries, "Service", "ExecStart"))
    assert "--lio" in argv
    state_dir = argv[argv.index("--state-dir") + 1]
    # ProtectSystem=strict: only the state directory (systemd's StateDirectory=, under
    # /var/lib) and ReadWritePaths= stay writable
    assert one(entries, "Service", "ProtectSystem") == "strict"
    assert state_dir == "/var/lib/" + one(entries, "Service", "StateDirectory")
    # ProtectKernelTunables=yes makes /sys read-only: configfs must be writable again
    assert one(entries, "Service", "ProtectKernelTunables") == "yes"
    assert str(lio.CONFIGFS).startswith("/sys/kernel/config")
    writable = values(entries, "Service", "ReadWritePaths")
    assert any(str(lio.CONFIGFS) == w or str(lio.CONFIGFS).startswith(w + "/") for w in writable)
    for hiding in ("PrivateDevices", "PrivateNetwork", "PrivateUsers", "DynamicUser", "User"):
        assert values(entries, "Service", hiding) in ([], ["no"]), hiding
    if values(entries, "Service", "DevicePolicy") not in ([], ["auto"]):
        assert "char-uio" in values(entries, "Service", "DeviceAllow")
    families = set(values(entries, "Service", "RestrictAddressFamilies"))
    assert {"AF_UNIX", "AF_NETLINK"} <= families  # control socket, sd_notify; udev, TCM-USER
    assert one(entries, "Service", "NoNewPrivileges") == "yes"
    assert one(entries, "Service", "ProtectHome") == "yes"
    assert one(entries, "Service", "PrivateTmp") == "yes"


def test_unit_is_a_notify_service_ordered_around_lio(root: Path) -> None:
    entries = unit_entries(installed(root, UNIT).read_text())
    assert one(entries, "Service", "Type") == "notify"
    assert one(entries, "Service", "Restart") == "on-failure"
    assert int(one(entries, "Service", "LimitNOFILE")) >= 4096
    after = values(entries, "Unit", "After")
    for unit in ("network-online.target", "tcmu-runner.service", "sys-kernel-config.mount"):
        assert unit in after
    assert "network-online.target" in values(entries, "Unit", "Wants")
    before = values(entries, "Unit", "Before")
    assert {"target.service", "rtslib-fb-targetctl.service"} <= set(before)
    assert values(entries, "Install", "WantedBy") == ["multi-user.target"]


def test_modules_the_unit_cannot_load_are_loaded_at_boot(root: Path) -> None:
    entries = unit_entries(installed(root, UNIT).read_text())
    assert one(entries, "Service", "ProtectKernelModules") == "yes"
    assert "systemd-modules-load.service" in values(entries, "Unit", "After")
    listed = installed(root, "targetcli-preserve-modules.conf").read_text().split("\n")
    modules = {line.strip() for line in listed if line.strip() and not line.startswith("#")}
    assert {"target_core_user", "iscsi_target_mod", "uio"} <= modules  # lio.unavailable()


# ---- the D-Bus policy --------------------------------------------------------------------

OWNED = ("org.kernel.TCMUService1", "org.kernel.TCMUService1.HandlerManager1.preserve")


def test_dbus_policy_lets_root_own_the_tcmu_names() -> None:
    tree = ET.parse(PACKAGE_SYSTEM / "targetcli-preserve-dbus.conf").getroot()
    assert tree.tag == "busconfig"
    root_owns = {a.get("own") for p in tree.iter("policy") if p.get("user") == "root" for a in p}
    assert set(OWNED) <= root_owns


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """A dbus-daemon like the system bus (it denies owning any name) with our policy."""
    need("dbus-daemon")
    policy = (PACKAGE_SYSTEM / "targetcli-preserve-dbus.conf").read_text()
    daemon = BusDaemon(tmp_path, {"targetcli-preserve.conf": policy})
    daemon.start()
    try:
        yield daemon.address
    finally:
        daemon.stop()


def request_name(address: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            need("dbus-send"),
            f"--bus={address}",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            f"string:{name}",
            "uint32:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dbus_daemon_loads_the_policy_and_root_may_own_the_names(bus: str) -> None:
    if os.geteuid() != 0:
        not_applicable("the policy lets root own the names; this test does not run as root")
    for name in OWNED:
        done = request_name(bus, name)
        assert done.returncode == 0, done.stderr
        assert "uint32 1" in done.stdout  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
    other = request_name(bus, "org.kernel.TCMUService1.HandlerManager1.other")
    assert other.returncode != 0 and "AccessDenied" in other.stderr
