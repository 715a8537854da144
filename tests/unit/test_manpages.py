"""The manual pages render cleanly and document every command and option of the CLI.

The pages are hand-written troff; this test keeps them from falling behind
``cli.build_parser()`` (targetcli-preserve) and ``daemon.main`` (targetcli-preserved):
a new subcommand or long option fails here until it is documented.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MAN_DIR = Path(__file__).resolve().parents[2] / "man"
CLI_PAGE = MAN_DIR / "targetcli-preserve.8"
DAEMON_PAGE = MAN_DIR / "targetcli-preserved.8"

pytestmark = [
    pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed"),
    pytest.mark.skipif(shutil.which("nroff") is None, reason="nroff (groff) is not installed"),
]


def render(page: Path) -> tuple[str, str]:
    """Plain text of ``page`` as man(1) shows it, and what groff warned about."""
    env = {
        **os.environ,
        "MANWIDTH": "80",
        "LC_ALL": "C.UTF-8",
        "MANPAGER": "cat",
        "PAGER": "cat",
    }
    env.pop("MAN_KEEP_FORMATTING", None)
    proc = subprocess.run(
        ["man", "--warnings", "--no-hyphenation", "--no-justification", "-l", str(page)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"man -l {page.name} failed: {proc.stderr}"
    text = re.sub(r".\x08", "", proc.stdout)  # overstrike bold/underline, if any
    text = text.translate({0x2010: "-", 0x2011: "-", 0x2212: "-"})  # typographic hyphens
    return text, proc.stderr


def section(text: str, title: str) -> str:
    """The body of section ``title`` (headings are the unindented lines)."""
    match = re.search(rf"^{re.escape(title)}\n(.*?)(?=^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r}"
    return match.group(1)


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        opt
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    }


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def cli_parser() -> argparse.ArgumentParser:
    from targetcli_preserve.cli import build_parser

    return build_parser()


@pytest.fixture(scope="module")
def daemon_options() -> set[str]:
    """The long options of targetcli-preserved, read from the help of its real main()."""
    from targetcli_preserve import daemon

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        daemon.main(["--help"])
    assert exit_info.value.code == 0
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.getvalue())) - {"--help"}
    assert {"--state-dir", "--portal", "--lun", "--iqn"} <= options
    return options


@pytest.mark.parametrize("page", [CLI_PAGE, DAEMON_PAGE], ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    text, warnings = render(page)
    assert warnings == "", f"{page.name}: {warnings}"
    for title in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ):
        assert section(text, title).strip(), f"{page.name}: empty section {title}"


def test_cli_page_documents_every_subcommand(cli_parser: argparse.ArgumentParser) -> None:
    text, _ = render(CLI_PAGE)
    synopsis, commands = section(text, "SYNOPSIS"), section(text, "COMMANDS")
    names = subcommands(cli_parser)
    assert names, "build_parser() defines no subcommands"
    for name in names:
        assert re.search(rf"\btargetcli-preserve\b.*\s{name}(\s|$)", synopsis), (
            f"subcommand {name!r} missing from SYNOPSIS"
        )
        assert re.search(rf"^ {{7}}{name}(\s|$)", commands, re.MULTILINE), (
            f"subcommand {name!r} has no entry under COMMANDS"
        )


def test_cli_page_documents_every_long_option(cli_parser: argparse.ArgumentParser) -> None:
    text, _ = render(CLI_PAGE)
    documented = section(text, "COMMANDS") + section(text, "OPTIONS")
    options = long_options(cli_parser)
    for sub in subcommands(cli_parser).values():
        options |= long_options(sub)
    assert {"--state-dir", "--json", "--wait", "--portal", "--lun", "--iqn"} <= options
    missing = sorted(opt for opt in options if not mentions(documented, opt))
    assert not missing, f"options not documented in targetcli-preserve.8: {missing}"
    synopsis = section(text, "SYNOPSIS")
    missing = sorted(opt for opt in options if not mentions(synopsis, opt))
    assert not missing, f"options missing from the SYNOPSIS of targetcli-preserve.8: {missing}"


def test_daemon_page_documents_every_long_option(daemon_options: set[str]) -> None:
    text, _ = render(DAEMON_PAGE)
    options = daemon_options
    for where in ("SYNOPSIS", "OPTIONS"):
        body = section(text, where)
        missing = sorted(opt for opt in options if not mentions(body, opt))
        assert not missing, f"options missing from {where} of targetcli-preserved.8: {missing}"


def test_daemon_page_says_where_install_system_puts_each_file() -> None:
    from targetcli_preserve.system_install import FILES

    text, _ = render(DAEMON_PAGE)
    systemd = section(text, "SYSTEMD")
    for dest in FILES.values():
        assert dest in systemd, f"{dest} not under SYSTEMD in targetcli-preserved.8"
    for words in ("install-system", "systemctl enable", "/var/lib/targetcli-preserve"):
        assert words in systemd, f"{words!r} not under SYSTEMD in targetcli-preserved.8"
