"""Running libiscsi's conformance suite, ``iscsi-test-cu``, and counting what really ran.

Its CUnit summary counts a test that found its command absent ("[SKIPPED] ... is not
implemented") as passed. The suite runs in verbose mode, which names each test
("Test: NAME ...passed"), so :class:`CuRun` can tell those apart: ``skipped`` counts the
passed tests that printed a "[SKIPPED]" line, ``really_passed`` the rest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

SUITE_TIMEOUT = 600  # seconds; the whole SCSI,iSCSI suite takes about 12 s on the host

_SUMMARY = re.compile(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.MULTILINE)
_FAILED = re.compile(r"Suite (\S+), Test (\S+) had failures")
# verbose mode: "Suite: NAME" then "  Test: NAME ...", what the test printed, its verdict
_SUITE_OR_TEST = re.compile(r"^Suite: (\S+)|^  Test: (\S+) \.\.\.", re.MULTILINE)
_VERDICT = re.compile(r"^(passed|FAILED)\b", re.MULTILINE)  # at the start of a line ...


@dataclass
class CuRun:
    total: int
    ran: int
    passed: int
    failed: int
    inactive: int
    skipped: int  # passed tests that printed "[SKIPPED]": a command they test is absent
    failures: list[str] = field(default_factory=list)
    returncode: int = 0
    output: str = ""

    @property
    def really_passed(self) -> int:
        """Passed without a "[SKIPPED]" sub-test (libiscsi counts those as passed)."""
        return self.passed - self.skipped


def _tests(out: str) -> list[tuple[str, str, bool]]:
    """(Suite.Test, verdict, printed [SKIPPED] before it) for every test in verbose output."""
    found = []
    suite = ""
    marks = list(_SUITE_OR_TEST.finditer(out))
    for i, m in enumerate(marks):
        if m.group(1):
            suite = m.group(1)
            continue
        end = marks[i + 1].start() if i + 1 < len(marks) else len(out)
        body = out[m.end() : end]  # ... or right after "...", which this keeps a line start
        body = "\n" + body
        verdict = _VERDICT.search(body)
        if verdict is None:
            continue
        found.append(
            (f"{suite}.{m.group(2)}", verdict.group(), "[SKIPPED]" in body[: verdict.start()])
        )
    return found


def run_suite(url: str, families: str, timeout: float = SUITE_TIMEOUT) -> CuRun:
    done = subprocess.run(
        [shutil.which("iscsi-test-cu") or "iscsi-test-cu", "-d", "-v", "-t", families, url],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout + done.stderr
    m = _SUMMARY.search(out)
    assert m, f"no Run Summary from iscsi-test-cu (rc={done.returncode}):\n{out[-3000:]}"
    total, ran, passed, failed, inactive = map(int, m.groups())
    tests = _tests(done.stdout)
    failures = {name for name, verdict, _ in tests if verdict == "FAILED"}
    failures |= {f"{s}.{t}" for s, t in _FAILED.findall(out)}
    return CuRun(
        total,
        ran,
        passed,
        failed,
        inactive,
        skipped=sum(verdict == "passed" and skipped for _, verdict, skipped in tests),
        failures=sorted(failures),
        returncode=done.returncode,
        output=out,
    )
