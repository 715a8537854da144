"""The interactive shell ``targetcli-preserve`` (no arguments), on configshell-fb as
targetcli's: a tree of the daemon's LUNs and their generations, ``cd``, ``ls``, tab
completion, ``help``. The one place with ``ui_command_*`` methods.

Every command of the tree is one request the one-shot CLI makes too (cli.request_*),
printed with the one-shot CLI's renderers (cli.render_*).
"""

from .shell import run_shell

__all__ = ["run_shell"]
