"""Under CI a skip fails the run, unless the test says it does not apply here
(tests/conftest.py). Checked on a small suite run by pytester with our conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]

SUITE = """
import pytest
from helpers.skips import not_applicable

def test_runs():
    pass

def test_skips_for_a_missing_tool():
    pytest.skip("qemu-io is not installed")

@pytest.mark.skipif(True, reason="nroff is not installed")
def test_skipif_marker():
    pass

def test_does_not_apply():
    not_applicable("the temporary directory has reflink")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    helpers = pytester.mkpydir("helpers")
    (helpers / "skips.py").write_text((TESTS / "helpers" / "skips.py").read_text())
    pytester.makepyfile(test_suite=SUITE)
    pytester.syspathinsert()
    return pytester


def test_under_ci_a_skip_fails(suite: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-rs")
    # a skipif marker skips at set-up: under CI that is an error, which fails the run too
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped under CI*qemu-io is not installed*"])
    result.stdout.fnmatch_lines(["*skipped under CI*nroff is not installed*"])


def test_elsewhere_a_skip_is_a_skip(suite: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    suite.runpytest().assert_outcomes(passed=1, skipped=3, xfailed=1)
