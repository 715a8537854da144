"""Against kernel LIO (``serve --lio``): stock targetcli's own top-level nodes
(``backstores``, ``iscsi``, ``loopback``, ...) mounted under the shell's root, so that
``ls /`` shows LIO as targetcli does next to ``/preserve``.

targetcli-fb is optional: where it cannot be imported (or configfs is missing) the shell
says so in one line at ``ls /`` and works on without those nodes.
"""

from __future__ import annotations

from typing import Any

from .. import lio


def mount_targetcli(root: Any) -> str | None:
    """Mount targetcli's nodes under ``root``; None when they are there, else the one
    line that says why not."""
    try:
        from targetcli.ui_backstore import UIBackstores
        from targetcli.ui_target import UIFabricModule
    except ImportError as err:
        return (
            f"targetcli-fb is not importable here ({err}): LIO's own nodes (backstores, "
            "iscsi, ...) are not shown; install targetcli-fb to see them"
        )
    if not lio.CONFIGFS.is_dir():
        return f"LIO's configfs {lio.CONFIGFS} is missing: targetcli's nodes are not shown"
    taken = {child.name for child in root.children}
    try:
        modules = lio.fabric_modules()
        if "backstores" not in taken:
            UIBackstores(root)
        for module in modules:
            if module.name not in taken:
                UIFabricModule(module, root)
    except Exception as err:  # noqa: BLE001 - targetcli's and rtslib's errors: the shell goes on
        return f"targetcli's nodes cannot be shown: {err}"
    return None
