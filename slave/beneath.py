"""Opening a file beneath a directory without following any symlink.

Root reads paths that others control (a task's sandbox, an image import
directory): a path checked first and opened afterwards can be swapped for a
symlink to ``/etc`` in between. So the path is walked one component at a
time from a directory descriptor, each step opened with ``O_NOFOLLOW``
(``O_PATH|O_DIRECTORY`` for the directories): no symlink is followed anywhere,
whatever changes meanwhile. The last step adds ``O_NONBLOCK`` so that opening
a FIFO does not wait for a writer; callers check it is a regular file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def open_beneath(root_fd: int, parts: Sequence[str]) -> int:
    """A read-only fd of ``parts`` (at least one) beneath the directory ``root_fd``
    (which stays open). Raises OSError: ``ELOOP`` or ``ENOTDIR`` for a symlink
    or a non-directory on the way."""
    fd = root_fd
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_NOFOLLOW | os.O_CLOEXEC
            flags |= os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY if last else os.O_PATH | os.O_DIRECTORY
            child = os.open(part, flags, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd
