"""The one kind of skip allowed under CI (see tests/conftest.py)."""

from __future__ import annotations

import pytest

NOT_APPLICABLE = "not applicable here: "


def not_applicable(reason: str) -> None:
    """Skip, even under CI: this test has nothing to check on this machine."""
    pytest.skip(NOT_APPLICABLE + reason)
