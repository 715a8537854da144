"""The one thread pool that runs every blocking volume syscall.

Volumes are used from a single asyncio event loop. pread/pwrite/fdatasync/FICLONE can
block on the disk, so they run here, never on the loop (the only exception is the
RWF_NOWAIT page-cache read in ``file.py``, which the kernel guarantees not to block on
I/O). One shared pool keeps the thread count bounded however many volumes are open.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

#: I/O-bound work: more threads than cores so many commands can be in flight at once.
EXECUTOR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="volume-io")
