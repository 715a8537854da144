"""The repository stands on its own: its design is in docs/design.md, and nothing it
holds points at files outside it (a user who clones it has nothing else)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tracked_files() -> list[Path]:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=30
        )
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.fail(f"git ls-files failed in {ROOT}: {err}")
    return [ROOT / name for name in done.stdout.decode().split("\0") if name]


def test_nothing_points_outside_the_repository() -> None:
    outside = re.compile(
        r"\.\./shared|\bshared/DESIGN|\bDESIGN\.md\b|\bshared/notes\b|\benvironment\.md\b"
    )
    offenders = []
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if outside.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_design_is_in_the_repository_and_the_readme_links_it() -> None:
    design = ROOT / "docs" / "design.md"
    assert design.is_file()
    text = design.read_text()
    for rule in range(1, 11):  # the code cites "rule N" by these numbers
        assert re.search(rf"\*\*Rule {rule}, ", text), f"docs/design.md has no rule {rule}"
    assert "(docs/design.md)" in (ROOT / "README.md").read_text()


def test_every_benchmark_starts() -> None:
    """The benchmarks import the test helpers: a move there must not break them."""
    import sys

    for bench in sorted((ROOT / "bench").glob("*.py")):
        done = subprocess.run(
            [sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{bench.name} --help: {done.stderr}"
