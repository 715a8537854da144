"""The one boundary (exits.py): every way a program can end gets its exit code and at
most one line on stderr."""

from __future__ import annotations

import errno

import pytest

from targetcli_preserve._errors import (
    BackendError,
    DaemonUnreachable,
    PreserveError,
    ProtocolError,
    UserError,
)
from targetcli_preserve.exits import ExitCode, run_guarded


def raising(err: BaseException):
    def body() -> int:
        raise err

    return body


@pytest.mark.parametrize(
    "err,code",
    [
        (DaemonUnreachable("no daemon is running for /s"), ExitCode.NO_DAEMON),
        (UserError("bad --lun 'x'"), ExitCode.USAGE),
        (BackendError("disk on fire"), ExitCode.FAILED),
        (ProtocolError("bad reply"), ExitCode.FAILED),
        (PreserveError("odd"), ExitCode.FAILED),
        (OSError(errno.ENOSPC, "No space left on device", "/s/journal"), ExitCode.FAILED),
    ],
)
def test_errors_become_their_exit_code_and_one_line(err, code, capsys) -> None:
    seen = []
    assert run_guarded("prog", raising(err), lambda e, c: seen.append((e, c))) == code
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and err_text.startswith("prog: ")
    assert "Errno" not in err_text
    assert seen == [(err, code)]


def test_an_oserror_reads_as_its_message_and_file(capsys) -> None:
    err = OSError(errno.ENOSPC, "No space left on device", "/s/journal")
    run_guarded("prog", raising(err))
    assert capsys.readouterr().err == "prog: No space left on device (/s/journal)\n"


def test_ctrl_c_is_130_and_quiet(capsys) -> None:
    assert run_guarded("prog", raising(KeyboardInterrupt())) == ExitCode.INTERRUPTED == 130
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_is_not_an_error() -> None:
    # (the real pipe is in tests/integration/test_cli_as_a_user.py)
    assert run_guarded("prog", raising(BrokenPipeError())) == ExitCode.OK


def test_success_passes_through() -> None:
    assert run_guarded("prog", lambda: ExitCode.OK) == 0


def test_a_bug_is_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        run_guarded("prog", raising(ZeroDivisionError()))
