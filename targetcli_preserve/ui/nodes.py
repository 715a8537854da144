"""The shell's tree, built from the daemon's replies and refreshed before it is shown or
walked (shell.py says when)::

    /
    o- preserve             the LUNs of the daemon
    | o- lun0               one per LUN: size, live volume, last preserve
    |   o- gen0             one per generation: state, preserve, file
    |   o- gen1
    o- iscsi                the built-in target (against LIO: targetcli's own nodes)
      o- IQN
        o- luns
        | o- lun0
        o- portals
          o- 127.0.0.1:3260

A node that still exists keeps its object through a refresh, so the shell's current
node stays in the tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from configshell_fb import ConfigNode

from .. import cli
from .._errors import PreserveError
from ..exits import message
from ..options import parse_size
from . import lio


def human_size(size: int) -> str:
    """1073741824 -> "1.0GiB", as targetcli shows sizes."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _bool(value: str | bool, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


class UINode(ConfigNode):
    """Our nodes' base: the daemon's requests, made and printed the one-shot CLI's way."""

    def __init__(self, name: str, parent: ConfigNode) -> None:
        super().__init__(name, parent)

    @property
    def root(self) -> UIRoot:
        root = self.get_root()
        assert isinstance(root, UIRoot)
        return root

    def request(self, command: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(state_dir, *args)``, its result printed as the one-shot CLI prints
        it; an error is reported targetcli's way (and fails a one-shot shell)."""
        try:
            result = call(self.root.state_dir, *args, **kwargs)
        except (PreserveError, OSError) as err:
            self.shell.fail(err)
            return None
        if self.root.as_json:
            self.show(json.dumps(result, indent=2) + "\n")
        else:
            self.show(cli.render(command, result))
        return result

    def show(self, text: str) -> None:
        self.shell.con.raw_write(text, output=self.shell.con._stdout)

    def sync(self, names: Iterable[str], make: Callable[[str], ConfigNode]) -> list[Any]:
        """Children named ``names``, in that order: existing ones kept, new ones made
        with ``make``, the others removed."""
        wanted = list(names)
        for child in list(self.children):
            if child.name not in wanted:
                self.remove_child(child)
        have = {child.name: child for child in self.children}
        return [have[name] if name in have else make(name) for name in wanted]

    def ui_command_ls(self, path: str | None = None, depth: str | None = None) -> None:
        """
        Display the tree below the current node or below path, each node with its
        summary in brackets: a LUN's size, live volume and last preserve; a
        generation's state, the preserve that made it and its file.

        The tree is read from the daemon first, so new LUNs and new
        generations show at once.

        EXAMPLES
        ========
        ls
        ls /preserve depth=1
        ls /preserve/lun0

        SEE ALSO
        ========
        cd status volumes
        """
        super().ui_command_ls(path, depth)
        if self.root.daemon_error is not None:
            self.shell.fail(self.root.daemon_error)


class UIRoot(UINode):
    """``/``: the daemon of one state directory."""

    def __init__(self, shell: Any, state_dir: str | None) -> None:
        ConfigNode.__init__(self, "/", shell=shell)
        self.state_dir = state_dir
        self.as_json = False  # print the daemon's replies as JSON (one-shot --json)
        self.as_root = os.geteuid() == 0  # targetcli's nodes ask (privileged commands)
        self.status: dict[str, Any] | None = None
        self.daemon_error: BaseException | None = None
        self.lio_note: str | None = None  # why targetcli's own nodes are not shown
        self._lio_mounted = False
        self.preserve = UIPreserve(self)

    def refresh(self) -> None:
        """Read the daemon's status and update the tree to it."""
        try:
            self.status = cli.request_status(self.state_dir)
            self.daemon_error = None
        except (PreserveError, OSError) as err:
            self.status, self.daemon_error = None, err
        self.preserve.update(self.status)
        fabric = self.status["fabric"] if self.status else None
        iscsi = [child for child in self.children if isinstance(child, UIIscsi)]
        if fabric == "builtin" and self.status is not None:
            node = iscsi[0] if iscsi else UIIscsi(self)
            node.update(self.status)
        else:
            for node in iscsi:
                self.remove_child(node)
        if fabric == "lio" and not self._lio_mounted:
            self.lio_note = lio.mount_targetcli(self)
            self._lio_mounted = True

    def summary(self) -> tuple[str, bool | None]:
        if self.daemon_error is not None:
            return "no daemon", False
        assert self.status is not None
        return f"{self.status['fabric']} target, state {self.status['state_dir']}", True

    def ui_command_ls(self, path: str | None = None, depth: str | None = None) -> None:
        super().ui_command_ls(path, depth)
        if self.lio_note and (path is None or self.get_node(path) is self):
            self.show(self.lio_note + "\n")

    ui_command_ls.__doc__ = UINode.ui_command_ls.__doc__  # help shows the same text


class UIPreserve(UINode):
    """``/preserve``: every LUN the daemon serves."""

    def __init__(self, parent: UIRoot) -> None:
        super().__init__("preserve", parent)
        self.status: dict[str, Any] | None = None

    def update(self, status: dict[str, Any] | None) -> None:
        self.status = status
        luns = {lun["name"]: lun for lun in status["luns"]} if status else {}
        for node in self.sync(luns, lambda name: UILun(name, self)):
            node.update(luns[node.name])

    def summary(self) -> tuple[str, bool | None]:
        if self.status is None:
            error = self.root.daemon_error
            return (message(error) if error else "no daemon"), False
        return f"LUNs: {len(self.status['luns'])}, next seq {self.status['next_seq']}", True

    def lun_names(self) -> list[str]:
        return [child.name for child in self.children]

    def ui_command_preserve(self, *luns: str, **wait: str) -> None:
        """
        Cut the named LUNs now, all at one point in time (one consistency group):
        each gets a new live generation, and its old volume drains and freezes.
        The command returns as soon as the clones are committed; wait=true
        returns only once every preserved volume is frozen.

        Prints the preserve (its id, the seq where it cut, its time) and, for each
        LUN, the preserved volume and the new live one, as
        `targetcli-preserve preserve` does.

        EXAMPLES
        ========
        preserve lun0
        preserve db log
        preserve db log wait=true

        SEE ALSO
        ========
        status volumes
        """
        # **wait: configshell takes keyword parameters only through a ** argument
        unknown = sorted(set(wait) - {"wait"})
        if unknown:
            raise ValueError(f"unexpected parameter {unknown[0]}: only wait=true|false")
        self.request(
            "preserve",
            cli.request_preserve,
            list(luns),
            wait=_bool(wait.get("wait", False), "wait"),
        )

    def ui_complete_preserve(
        self, parameters: dict[str, str], text: str, current_param: str
    ) -> list[str]:
        if current_param == "wait":  # the value of wait=
            return [value for value in ("true", "false") if value.startswith(text)]
        on_line = set(parameters.values())
        names = [name for name in self.lun_names() if name.startswith(text)]
        names = [name for name in names if name not in on_line or name == text]
        return [*names, "wait="] if "wait".startswith(text) else names

    def ui_command_status(self) -> None:
        """
        Show the target, its portal, the state directory, the next sequence
        number, and for every LUN its number, size, live volume, commands in
        flight, number of generations and last preserve, as
        `targetcli-preserve status` does.

        EXAMPLES
        ========
        status
        /preserve status
        """
        self.request("status", cli.request_status)

    def ui_command_luns(self) -> None:
        """
        List every LUN of the state directory, served or not: its number, name,
        size, WWN, volumes and whether it is served, as `targetcli-preserve luns`
        does.

        EXAMPLES
        ========
        luns
        """
        self.request("luns", cli.request_luns)

    def ui_command_locks(self) -> None:
        """
        Show the lock table now: one entry for each write in flight on any LUN,
        as `targetcli-preserve locks` does. An idle target has no locks.

        EXAMPLES
        ========
        locks
        """
        self.request("locks", cli.request_locks)

    def ui_command_create(self, name: str, size: str) -> None:
        """
        Serve a new LUN from now on, as `targetcli-preserve create` does (with
        serve --lio also as a user:preserve backstore on the daemon's target):
        name is 1 to 64 letters, digits, '.', '_' or '-'; size is bytes or a
        number with a K/M/G/T suffix (powers of 1024), a multiple of 512 bytes.
        The LUN gets the lowest free LUN number and keeps it. Prints its row of
        the `luns` table; it shows in the tree at once.

        EXAMPLES
        ========
        create name=db size=10G
        create db 512M

        SEE ALSO
        ========
        luns ls
        """
        self.request("create", cli.request_create, name=name, size=parse_size(size))

    def ui_complete_create(
        self, parameters: dict[str, str], text: str, current_param: str
    ) -> list[str]:
        if current_param == "size":
            return [s for s in ("512M", "1G", "10G") if s.startswith(text)]
        return []


class UILun(UINode):
    """``/preserve/NAME``: one LUN and its generations."""

    def __init__(self, name: str, parent: UIPreserve) -> None:
        super().__init__(name, parent)
        self.status: dict[str, Any] = {}
        self.volumes: list[dict[str, Any]] = []
        self.volumes_error: str | None = None  # why its generations are not shown

    def update(self, status: dict[str, Any]) -> None:
        self.status = status
        try:
            self.volumes = cli.request_volumes(self.root.state_dir, self.name)
            self.volumes_error = None
        except (PreserveError, OSError) as err:  # e.g. gone between the two requests
            self.volumes, self.volumes_error = [], message(err)
        gens = {f"gen{vol['generation']}": vol for vol in self.volumes}
        for node in self.sync(gens, lambda name: UIGeneration(name, self)):
            node.volume = gens[node.name]

    def summary(self) -> tuple[str, bool | None]:
        if not self.status:
            return "...", None
        live, last = self.status["live"], self.status["last_preserve"]
        text = f"{human_size(self.status['size'])}, live gen{live['generation']}"
        if self.status["draining"]:
            text += f", {self.status['draining']} draining"
        text += f", last preserve {cli.preserve_text(last)}" if last else ", never preserved"
        if self.volumes_error is not None:
            text += f", generations unknown: {self.volumes_error}"
        return text, not any(vol["damaged"] for vol in self.volumes)

    def ui_command_preserve(self, wait: str = "false") -> None:
        """
        Cut this LUN now: it gets a new live generation, and its old volume drains
        and freezes. wait=true returns only once the preserved volume is frozen.
        Prints the preserve and the two volumes, as `targetcli-preserve preserve`
        does; the new generation shows under this node at once.

        To cut several LUNs at one point in time, run preserve at /preserve.

        EXAMPLES
        ========
        preserve
        preserve wait=true
        /preserve/lun0 preserve

        SEE ALSO
        ========
        volumes ls
        """
        self.request("preserve", cli.request_preserve, [self.name], wait=_bool(wait, "wait"))

    def ui_complete_preserve(
        self, parameters: dict[str, str], text: str, current_param: str
    ) -> list[str]:
        if current_param == "wait":
            return [v for v in ("true", "false") if v.startswith(text)]
        return []

    def ui_command_status(self) -> None:
        """
        Show the target and this LUN's row of `status`: its number, size, live
        volume, commands in flight, generations and last preserve.

        EXAMPLES
        ========
        status
        """
        self.request("status", cli.request_status, self.name)

    def ui_command_volumes(self) -> None:
        """
        List every volume (generation) of this LUN, oldest first: state, the
        preserve that made it, clone method, hydration and file, as
        `targetcli-preserve volumes` does.

        EXAMPLES
        ========
        volumes
        /preserve/lun0 volumes
        """
        self.request("volumes", cli.request_volumes, self.name)

    def ui_command_locks(self) -> None:
        """
        Show the lock table of this LUN: one entry for each of its writes in
        flight.

        EXAMPLES
        ========
        locks
        """
        name = self.name
        self.request("locks", lambda state_dir: _locks_of(state_dir, name))


def _locks_of(state_dir: str | None, name: str) -> list[dict[str, Any]]:
    return [lock for lock in cli.request_locks(state_dir) if lock["name"] == name]


class UIGeneration(UINode):
    """``/preserve/NAME/genN``: one volume of a LUN."""

    def __init__(self, name: str, parent: UILun) -> None:
        super().__init__(name, parent)
        self.volume: dict[str, Any] = {}

    def summary(self) -> tuple[str, bool | None]:
        vol = self.volume
        if not vol:
            return "...", None
        made_by = vol["preserve"]
        parts = [vol["state"] + (" DAMAGED" if vol["damaged"] else "")]
        parts.append(f"preserve {cli.preserve_text(made_by)}" if made_by else "original")
        parts.append(vol["path"])
        healthy = None if vol["state"] in ("draining", "cloning") else True
        return ", ".join(parts), False if vol["damaged"] else healthy


class UIIscsi(UINode):
    """``/iscsi``: the daemon's built-in iSCSI target."""

    def __init__(self, parent: UIRoot) -> None:
        super().__init__("iscsi", parent)

    def update(self, status: dict[str, Any]) -> None:
        for node in self.sync([status["target"]], lambda name: UITarget(name, self)):
            node.update(status)

    def summary(self) -> tuple[str, bool | None]:
        return f"Targets: {len(self.children)}", None


class UITarget(UINode):
    """``/iscsi/IQN``: its LUNs and its portal."""

    def __init__(self, name: str, parent: UIIscsi) -> None:
        super().__init__(name, parent)
        self.luns = UIGroup("luns", self, "LUNs")
        self.portals = UIGroup("portals", self, "Portals")

    def update(self, status: dict[str, Any]) -> None:
        luns = {f"lun{lun['lun']}": lun for lun in status["luns"]}
        for node in self.luns.sync(luns, lambda name: UITargetLun(name, self.luns)):
            node.lun = luns[node.name]
        self.portals.sync([status["portal"]], lambda name: UIPortal(name, self.portals))

    def summary(self) -> tuple[str, bool | None]:
        return "built-in target", True


class UIGroup(UINode):
    def __init__(self, name: str, parent: UINode, what: str) -> None:
        super().__init__(name, parent)
        self.what = what

    def summary(self) -> tuple[str, bool | None]:
        return f"{self.what}: {len(self.children)}", None


class UITargetLun(UINode):
    def __init__(self, name: str, parent: UIGroup) -> None:
        super().__init__(name, parent)
        self.lun: dict[str, Any] = {}

    def summary(self) -> tuple[str, bool | None]:
        if not self.lun:
            return "...", None
        return (
            f"/preserve/{self.lun['name']} ({human_size(self.lun['size'])}) {self.lun['wwn']}",
            True,
        )


class UIPortal(UINode):
    def summary(self) -> tuple[str, bool | None]:
        return "OK", True
