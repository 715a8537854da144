"""Reflink clones with FICLONE (DESIGN.md rule 3): O(1) where the filesystem shares extents.

``ioctl(dst_fd, FICLONE, src_fd)`` makes ``dst`` share every extent of ``src`` (XFS made
with ``-m reflink=1``, btrfs). Its cost grows with the number of extents and with the
source's dirty page cache (the kernel writes that back first), not with the size. On a
filesystem without it (ext4, tmpfs) the ioctl fails with one of :data:`UNSUPPORTED`.
"""

from __future__ import annotations

import errno
import fcntl

FICLONE = 0x40049409

#: errnos meaning "this filesystem (or this pair of files) cannot reflink".
UNSUPPORTED = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS}
)


class ReflinkUnsupported(Exception):
    """FICLONE is not available for this source/destination pair."""

    def __init__(self, err: OSError) -> None:
        super().__init__(f"FICLONE is not supported here ({err.strerror})")
        self.errno = err.errno


def reflink(dst_fd: int, src_fd: int) -> None:
    """Share all of ``src_fd``'s extents into ``dst_fd``. Blocking.

    Raises ReflinkUnsupported when the filesystem cannot do it, OSError otherwise."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as err:
        if err.errno in UNSUPPORTED:
            raise ReflinkUnsupported(err) from err
        raise
