"""The state directory seen from outside a daemon: where it is, whether it is usable,
and what LUNs it holds. Light on imports, so one-shot commands start fast.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from ._errors import UserError
from .catalog import Catalog, replay
from .records import read_records


def default_state_dir() -> Path:
    import platformdirs  # imported here: only a default needs it

    return Path(platformdirs.user_data_dir("targetcli-preserve"))


def lun_list(catalog: Catalog, served: set[str]) -> list[dict[str, Any]]:
    """Every LUN of a state directory, by LUN number."""
    return [
        {
            "lun": lun.number,
            "name": lun.name,
            "size": lun.size,
            "block_size": lun.block_size,
            "wwn": lun.wwn,
            "served": lun.name in served,
            "volumes": len(lun.generations),
        }
        for lun in sorted(catalog.luns.values(), key=lambda lun: lun.number)
    ]


def read_catalog(state_dir: Path) -> Catalog:
    """The catalog of a state directory, read without a daemon (read-only)."""
    check_state_dir(state_dir)
    if not state_dir.exists():
        raise UserError(f"there is no state directory {state_dir}")
    if not os.access(state_dir, os.R_OK | os.X_OK):
        raise _private(state_dir)
    return replay(state_dir, read_records(state_dir / "journal"))  # no journal: no LUNs


def check_state_dir(state_dir: Path) -> None:
    """A usable state directory path: absent (``serve`` makes it) or a directory we may
    look into; a UserError naming the path otherwise."""
    try:
        is_dir = stat.S_ISDIR(state_dir.stat().st_mode)
    except FileNotFoundError:
        is_dir = True  # made by serve; other commands find no daemon there
    except NotADirectoryError:
        is_dir = False
    except PermissionError as err:
        raise _private(state_dir) from err
    if not is_dir:
        raise UserError(f"state directory {state_dir} is not a directory")
    if len(os.fsencode(state_dir / "control.sock")) >= 108:  # sun_path, unix(7)
        raise UserError(
            f"state directory {state_dir} is too long: its control socket path must be "
            "under 108 bytes"
        )


def _private(state_dir: Path) -> UserError:
    return UserError(
        f"cannot look into state directory {state_dir} (permission denied): "
        "run as the user that owns it (root)"
    )
