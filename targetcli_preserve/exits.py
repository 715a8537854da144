"""The one boundary where errors become exit codes and one-line messages, for both
programs (``targetcli-preserve`` and ``targetcli-preserved``).

Exit codes (targetcli-preserve(8), EXIT STATUS): 0 done; 1 the operation failed
(storage, the daemon); 2 bad usage or input; 3 no daemon runs for the state
directory; 130 interrupted by Ctrl-C, as a shell reports SIGINT. A reader that stops
reading the output early (``| head -1``) is not an error.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable

from ._errors import DaemonUnreachable, PreserveError, UserError


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NO_DAEMON = 3
    INTERRUPTED = 130  # 128 + SIGINT


def exit_code(err: BaseException) -> ExitCode:
    if isinstance(err, DaemonUnreachable):
        return ExitCode.NO_DAEMON
    if isinstance(err, UserError):
        return ExitCode.USAGE
    return ExitCode.FAILED


def message(err: BaseException) -> str:
    """One line for a person: an OSError without its ``[Errno N]`` noise."""
    if isinstance(err, OSError) and not isinstance(err, PreserveError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}"
    return " ".join(str(err).split()) or type(err).__name__


def run_guarded(
    prog: str,
    body: Callable[[], int],
    on_error: Callable[[BaseException, ExitCode], None] | None = None,
) -> int:
    """Run a program's ``body`` and turn whatever it raises into an exit code: a
    PreserveError or OSError into its one-line message on stderr (and ``on_error``,
    where the CLI prints its JSON error), Ctrl-C into 130, a closed stdout into 0."""
    try:
        return body()
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return ExitCode.OK
    except (PreserveError, OSError) as err:
        code = exit_code(err)
        print(f"{prog}: {message(err)}", file=sys.stderr)
        if on_error is not None:
            try:
                on_error(err, code)
            except BrokenPipeError:
                _quiet_stdout()
        return code


def _quiet_stdout() -> None:
    """The reader of stdout is gone: point stdout at /dev/null, so the interpreter's
    last flush at exit finds nowhere to fail."""
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (captured in tests): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)
