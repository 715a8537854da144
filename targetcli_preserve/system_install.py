"""``targetcli-preserve install-system``: put the appliance's system files in place.

The files ship in the package (``targetcli_preserve/system/``); :data:`FILES` says where
each one goes. The systemd unit's ``@DAEMON@`` becomes the absolute path of the
``targetcli-preserved`` installed next to the running interpreter (else the one on
``PATH``). Every file is written atomically (a temporary file in the same directory,
then a rename), mode 0644, under ``--root`` (a DESTDIR) when given; a file whose
content and mode are already right is left alone, so a second run changes nothing.
Then, on the running system only (no ``--root``), the managers that read these files
are told to reload them: systemd, udevd and the D-Bus system bus, each only when it
runs; a reload that fails is a warning, not a failure. ``--dry-run`` writes and runs
nothing and says what it would do.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ._errors import PreserveError
from .files import atomic_write

UNIT = "targetcli-preserved.service"
DAEMON_PLACEHOLDER = "@DAEMON@"
MODE = 0o644

# source in targetcli_preserve/system/ -> destination on the installed system
FILES: dict[str, str] = {
    UNIT: "/etc/systemd/system/targetcli-preserved.service",
    "60-targetcli-preserve.rules": "/etc/udev/rules.d/60-targetcli-preserve.rules",
    "targetcli-preserve-dbus.conf": "/etc/dbus-1/system.d/targetcli-preserve.conf",
    "targetcli-preserve-modules.conf": "/etc/modules-load.d/targetcli-preserve.conf",
}

# (what, needs this tool, runs only when this path exists, the command)
RELOADS: list[tuple[str, str, str, list[str]]] = [
    ("systemd", "systemctl", "/run/systemd/system", ["systemctl", "daemon-reload"]),
    ("udev", "udevadm", "/run/udev/control", ["udevadm", "control", "--reload"]),
    (
        "D-Bus",
        "dbus-send",
        "/run/dbus/system_bus_socket",
        [
            "dbus-send",
            "--system",
            "--type=method_call",
            "--dest=org.freedesktop.DBus",
            "/",
            "org.freedesktop.DBus.ReloadConfig",
        ],
    ),
]


@dataclass(frozen=True)
class Installed:
    source: str  # its name in targetcli_preserve/system/
    path: Path  # where it was (or would be) written, under --root
    action: str  # "written", "unchanged", or "would write" (--dry-run)

    def as_json(self) -> dict[str, str]:
        return {
            "source": self.source,
            "path": str(self.path),
            "mode": f"{MODE:04o}",
            "action": self.action,
        }


def source_text(name: str) -> str:
    """The packaged file ``name`` of ``targetcli_preserve/system/``."""
    return (resources.files("targetcli_preserve") / "system" / name).read_text(encoding="utf-8")


def find_daemon() -> Path:
    """The absolute path of the installed ``targetcli-preserved``: the one next to the
    running interpreter (the same installation as this code), else the one on PATH."""
    beside = Path(sys.executable).parent / "targetcli-preserved"
    if beside.is_file() and os.access(beside, os.X_OK):
        return Path(os.path.abspath(beside))  # the venv's bin, not where its python links to
    found = shutil.which("targetcli-preserved")
    if found is None:
        raise PreserveError(
            "cannot find the targetcli-preserved program (next to "
            f"{sys.executable} or on PATH): install the package first"
        )
    return Path(os.path.abspath(found))


def unit_exec_path(path: Path) -> str:
    """``path`` as the first word of a unit file's ExecStart= (systemd.service(5),
    COMMAND LINES): ``%`` doubled, quoted when it holds blanks or quotes."""
    text = str(path).replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(source: str, daemon: Path) -> str:
    """The content installed for ``source``."""
    text = source_text(source)
    if source == UNIT:
        placeholder = f"ExecStart={DAEMON_PLACEHOLDER} "
        if text.count(placeholder) != 1:
            raise PreserveError(f"{source} has no one {placeholder!r} to fill in")
        text = text.replace(placeholder, f"ExecStart={unit_exec_path(daemon)} ")
    return text


def destination(dest: str, root: Path | None) -> Path:
    return Path(dest) if root is None else root / dest.lstrip("/")


def is_current(path: Path, data: bytes, mode: int = MODE) -> bool:
    try:
        st = path.stat()
        return (st.st_mode & 0o7777) == mode and path.read_bytes() == data
    except FileNotFoundError:
        return False


def install_files(
    root: Path | None, *, dry_run: bool = False, daemon: Path | None = None
) -> list[Installed]:
    """Install every file of :data:`FILES` (under ``root``); what each one became."""
    daemon = find_daemon() if daemon is None else daemon
    done = []
    for source, dest in FILES.items():
        path = destination(dest, root)
        data = render(source, daemon).encode()
        if is_current(path, data):
            action = "unchanged"
        elif dry_run:
            action = "would write"
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            atomic_write(path, data, MODE)
            action = "written"
        done.append(Installed(source, path, action))
    return done


def reload_managers(
    *,
    dry_run: bool = False,
    warn: Callable[[str], None],
    say: Callable[[str], None],
    run: Callable[[list[str]], subprocess.CompletedProcess[str]] | None = None,
) -> list[str]:
    """Tell systemd, udevd and the system bus to read their files again, each only
    when its tool is installed and it runs; the commands that were (or would be) run.
    A failure is passed to ``warn``, never raised."""
    run = _run if run is None else run
    ran = []
    for what, tool, running, command in RELOADS:
        if shutil.which(tool) is None or not os.path.exists(running):
            continue
        line = shlex.join(command)
        ran.append(line)
        if dry_run:
            say(f"would run {line}")
            continue
        try:
            proc = run(command)
        except (OSError, subprocess.SubprocessError) as err:
            warn(f"{what} not reloaded: {line}: {err}")
            continue
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout or "").split())
            warn(f"{what} not reloaded: {line} exited with {proc.returncode}: {detail}")
        else:
            say(f"ran {line}")
    return ran


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
