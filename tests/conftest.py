"""Rules for the whole suite: no silent skips under CI, and hypothesis' CI profile.

Under CI (``CI=true``) a skip is a failure: ``scripts/setup`` installs every tool the
tests use and CI runs as root, so a test that skips there is a test that silently did
not run. The only skips allowed are those that say the test does not apply to this
machine at all (``helpers.skips.not_applicable``), e.g. a check that needs a file system without
reflink when the temporary directory has it.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from helpers.skips import NOT_APPLICABLE
from hypothesis import settings

# CI runs with a fixed profile and a seed it prints (.ci/run), so a failure found there
# can be run again exactly: --hypothesis-profile=ci --hypothesis-seed=SEED.
settings.register_profile("ci", print_blob=True, deadline=None)


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (_under_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(NOT_APPLICABLE):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI, where scripts/setup provides everything the tests use: {reason}"
    )
