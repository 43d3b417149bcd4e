"""Reading and writing cgroup interface files.

Each write is one ``write(2)``: cgroupfs treats every write as one command.
``O_CREAT`` is harmless on cgroupfs (the file exists) and lets the v2 backend be
tested against a plain directory tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.slave.containerizer.errors import CgroupError


def write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e


def read_text(path: Path) -> str | None:
    """The file's content, or None if it does not exist (controller absent, cgroup gone)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def read_int(path: Path, default: int = 0) -> int:
    """An integer file; "max" (v2 for no limit) and a missing file give ``default``."""
    text = read_text(path)
    if text is None:
        return default
    text = text.strip()
    if not text or text == "max":
        return default
    return int(text.split()[0])


def read_flat_keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (memory.events, pids.events, cpu.stat, memory.oom_control)."""
    text = read_text(path)
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def read_pids(path: Path) -> set[int]:
    """Pids listed in a cgroup.procs file; empty if the cgroup is gone."""
    text = read_text(path)
    return {int(p) for p in (text or "").split()}


def rmdir(path: Path) -> bool:
    """Remove one cgroup directory: True if gone, False if still busy."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno == 16:  # EBUSY: exiting tasks not yet detached
            return False
        raise CgroupError(f"cannot remove cgroup {path}: {e.strerror}") from e
    return True
