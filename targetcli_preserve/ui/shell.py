"""The shell itself: configshell-fb's ConfigShell with our preferences, our tree, and
the exit codes of exits.py for one-shot use (``targetcli-preserve /preserve/lun0
preserve``).

Preferences and history live in ``$TARGETCLI_PRESERVE_HOME`` or the user's config dir
(``~/.config/targetcli-preserve``), as targetcli keeps its own in ``~/.targetcli``.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any, ClassVar

from configshell_fb import ConfigShell, ExecutionError, console, log, prefs

from .. import __version__
from .._errors import PreserveError
from ..exits import ExitCode, exit_code, message
from .nodes import UIRoot

HOME_ENV = "TARGETCLI_PRESERVE_HOME"

# what targetcli's own nodes read from the preferences (they are mounted under our root
# against LIO); targetcli's defaults
TARGETCLI_PREFS: dict[str, Any] = {
    "export_backstore_name_as_model": True,
    "auto_enable_tpgt": True,
    "auto_add_mapped_luns": True,
    "auto_cd_after_create": False,
    "auto_add_default_portal": True,
    "max_backup_files": "10",
}


def prefs_dir() -> Path:
    """Where the shell keeps prefs.bin, history.txt and log.txt."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("targetcli-preserve"))


class _QuietDebugLog(log.Log):
    """configshell's log (a Borg: the same state), without the stack walk its ``debug``
    makes for every message, wanted or not: ``inspect.stack()`` some 18 times per
    command line was most of a command's time (12 ms here, over a second under
    emulation), and a preserve typed into the shell waited for it."""

    def debug(self, msg: str) -> None:
        level = self.levels.index("debug")
        prefs = self.prefs
        if (
            max(
                self.levels.index(prefs["loglevel_file"]),
                self.levels.index(prefs["loglevel_console"]),
            )
            >= level
        ):
            super().debug(msg)


class PreserveShell(ConfigShell):
    default_prefs: ClassVar[dict[str, Any]] = {
        **ConfigShell.default_prefs,
        "loglevel_file": "info",
        **TARGETCLI_PREFS,
    }

    def __init__(self, preferences_dir: Path | None) -> None:
        _fresh_prefs()
        super().__init__(_usable(preferences_dir))
        self.log = _QuietDebugLog()
        _bind_streams()
        self.failure = ExitCode.OK

    def fail(self, err: BaseException, code: ExitCode | None = None) -> None:
        """Report an error targetcli's way (shell.log.error) and remember its exit code
        for one-shot use."""
        self.log.error(message(err))
        self.failure = exit_code(err) if code is None else code

    def run_cmdline(self, cmdline: str) -> None:
        """The tree is read from the daemon before it is shown or walked (``ls``,
        ``cd``, a path not in the tree yet), so it has the LUNs and generations made
        since, by anyone. The other commands ask the daemon themselves: a preserve
        typed at a LUN runs at once, without reading the tree first."""
        self.failure = ExitCode.OK
        _bind_streams()
        if cmdline and isinstance(self._root_node, UIRoot) and self._shows_tree(cmdline):
            self._root_node.refresh()
        super().run_cmdline(cmdline)

    def _shows_tree(self, cmdline: str) -> bool:
        words = cmdline.split()  # configshell parses it fully next; this is cheaper
        path = words.pop(0) if words and words[0].startswith(("/", ".", "@")) else "."
        try:
            self._current_node.get_node(path)
        except ValueError:  # not in the tree yet (or a typo configshell reports)
            return True
        return (words[0] if words else "") in TREE_COMMANDS

    def _complete_token_kparam(
        self, text: str, path: str, command: str, pparams: list[str], kparams: dict[str, str]
    ) -> list[str]:
        """configshell pairs each positional value with a named parameter, and fails
        (IndexError) past the last one: ``preserve lun0 db wait=<Tab>`` (``*luns``)."""
        named = self._current_node.get_node(path).get_command_signature(command)[0]
        return super()._complete_token_kparam(text, path, command, pparams[: len(named)], kparams)


# commands that show or walk the tree ("": a bare path, which configshell takes as cd)
TREE_COMMANDS = frozenset({"ls", "cd", ""})


def _bind_streams() -> None:
    """configshell's Console (a Borg) holds the streams of its import time: use the
    process's streams of now."""
    console.Console(stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr)


def _fresh_prefs() -> None:
    """configshell's Prefs is a Borg shared by every shell of the process: start each
    shell from nothing (its file, if any, is loaded next)."""
    shared = prefs.Prefs()
    shared._prefs = {"loglevel_file": "info"}
    shared.filename = None
    shared.autosave = False


def _usable(path: Path | None) -> str | None:
    """The preferences directory, made if need be; None (no saved prefs or history)
    where it cannot be made: configshell does not recover from that itself."""
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        prefs_file = path / "prefs.bin"
        if not prefs_file.exists():  # configshell 1.1 warns on every first start otherwise
            prefs_file.write_bytes(pickle.dumps({}))
    except OSError:
        return None
    return str(path) if os.access(path, os.W_OK | os.X_OK) else None


def run_shell(
    state_dir: str | None, words: list[str], home: Path | None = None, as_json: bool = False
) -> int:
    """Open the shell (``words`` empty) or run the one shell command ``words`` and exit
    with its status; ``as_json``: the daemon's replies are printed as JSON."""
    try:
        shell = PreserveShell(home if home is not None else prefs_dir())
        root = UIRoot(shell, state_dir)
        root.as_json = as_json
        if words:
            return one_shot(shell, root, " ".join(words))
        return interactive(shell, root)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        from ..exits import _quiet_stdout

        _quiet_stdout()
        return ExitCode.OK


def one_shot(shell: PreserveShell, root: UIRoot, cmdline: str) -> int:
    """One command line, from ``/``, as ``targetcli PATH COMMAND`` runs it."""
    try:
        shell.run_cmdline(cmdline)
    except ExecutionError as err:
        if root.daemon_error is not None and not _path_exists(shell, cmdline):
            shell.fail(root.daemon_error)  # no such path: because no daemon answers
        else:
            shell.fail(err, ExitCode.USAGE)
    except (PreserveError, OSError, ValueError) as err:
        shell.fail(err, ExitCode.USAGE if isinstance(err, ValueError) else None)
    return shell.failure


def _path_exists(shell: PreserveShell, cmdline: str) -> bool:
    path = shell._parse_cmdline(cmdline)[1].rstrip("*")
    try:
        shell._current_node.get_node(path)
    except ValueError:
        return False
    return True


def interactive(shell: PreserveShell, root: UIRoot) -> int:
    shell.con.display(
        f"targetcli-preserve shell version {__version__}\n"
        "Point-in-time copies of live iSCSI LUNs. For help on commands, type 'help'.\n"
    )
    root.refresh()
    if root.daemon_error is not None:
        shell.log.warning(message(root.daemon_error))
    while not shell._exit:
        try:
            shell.run_interactive()
        except (ExecutionError, PreserveError, OSError, ValueError) as err:
            shell.log.error(message(err))
    return ExitCode.OK
