"""The one kind of skip allowed under CI (see tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

NOT_APPLICABLE = "not applicable here: "


def not_applicable(reason: str) -> None:
    """Skip, even under CI: this test has nothing to check on this machine."""
    pytest.skip(NOT_APPLICABLE + reason)


def need(tool: str) -> str:
    """The path of ``tool``; a skip if it is missing (a failure under CI, where
    scripts/setup installs every tool the tests use)."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/setup installs it)")
    return path
