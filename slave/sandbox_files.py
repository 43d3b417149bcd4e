"""Reading a file from a task's sandbox on an operator's behalf, safely.

The task owns its sandbox and may change it while the agent (root) reads: a
path checked first and opened afterwards can be swapped for a symlink to
``/etc`` in between. So the path is walked one component at a time from a
directory descriptor of the sandbox, each step opened with ``O_NOFOLLOW``
(``O_DIRECTORY`` for the directories): no symlink is followed anywhere, and the
file opened is the one inside the sandbox whatever the task does meanwhile.
FIFOs and devices are refused without blocking (``O_NONBLOCK``, regular files only).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_READ = 1 << 20


class SandboxFileError(Exception):
    """The file cannot be read; the message names the path and why."""


def _open_beneath(root: Path, parts: list[str]) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def read(sandbox: Path, name: str, offset: int, length: int) -> tuple[bytes, int]:
    """Up to ``length`` bytes (at most 1 MiB) of ``sandbox/name`` from ``offset``, and its size.

    Raises SandboxFileError for absolute paths, ``..``, symlinks, missing files
    and anything that is not a regular file.
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if "\0" in name or name.startswith("/") or ".." in parts or not parts:
        raise SandboxFileError(f"path {name!r}: must be a relative path inside the sandbox")
    try:
        fd = _open_beneath(sandbox, parts)
    except FileNotFoundError:
        raise SandboxFileError(f"path {name!r}: no such file in the sandbox") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SandboxFileError(
                f"path {name!r}: not a regular file inside the sandbox (symbolic links are not followed)"
            ) from None
        raise SandboxFileError(f"path {name!r}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SandboxFileError(f"path {name!r}: not a regular file")
        try:
            data = os.pread(fd, min(length, MAX_READ), min(offset, st.st_size))
        except OSError as e:
            raise SandboxFileError(f"path {name!r}: {e.strerror}") from None
        return data, st.st_size
    finally:
        os.close(fd)
