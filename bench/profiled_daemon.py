"""Run a Python module with cProfile switched on and off by signals (bench/lio_vs_fileio.py).

    python3 bench/profiled_daemon.py OUT -m targetcli_preserve.cli ARGS...

SIGUSR1 starts profiling the main thread (the daemon's event loop), SIGUSR2 stops it
and writes the statistics to OUT. Unlike ``python3 -m cProfile``, the profile then
covers only the window the benchmark chose (one workload), not the interpreter's start
and the imports, which take tens of seconds over 9p under TCG and would dominate it.
The handlers run on the main thread between two bytecodes, which asyncio wakes up for.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys


def main() -> None:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit(f"usage: {sys.argv[0]} OUT -m MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[3]
    profiler = cProfile.Profile()

    def start(signum: int, frame: object) -> None:
        profiler.enable()

    def stop(signum: int, frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
