"""Driving configshell-fb's completion as readline does (the shell's tests)."""

from __future__ import annotations

import configshell_fb.shell as configshell_module
import pytest

from targetcli_preserve.ui.shell import PreserveShell


def complete(shell: PreserveShell, line: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What Tab offers at the end of ``line``: configshell's own completer, called the
    way readline calls it."""
    text = line.rsplit(" ", 1)[-1]
    rl = configshell_module.readline
    monkeypatch.setattr(rl, "get_line_buffer", lambda: line)
    monkeypatch.setattr(rl, "get_begidx", lambda: len(line) - len(text))
    monkeypatch.setattr(rl, "get_endidx", lambda: len(line))
    found, state = [], 0
    while (match := shell._complete(text, state)) is not None:
        found.append(match)
        state += 1
    return found
