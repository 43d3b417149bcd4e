"""Disk usage of a container's writable directories, as ``du`` counts it.

Mesos' ``disk/du`` isolator is the model: a sandbox has no filesystem quota of
its own on most hosts, so the agent measures it every ``disk_watch_interval_s``
and ends a task that holds more than its ``disk`` resource.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A sandbox with more entries than this is reported as at least what was counted:
# the walk runs in a worker thread and must end in bounded time.
MAX_ENTRIES = 1_000_000


def usage_bytes(*roots: Path, max_entries: int = MAX_ENTRIES) -> int:
    """Bytes allocated on disk below ``roots`` (st_blocks, like ``du``).

    Symbolic links are not followed, a file with several hard links counts
    once, and entries that vanish during the walk are skipped.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    entries = 0
    stack = [os.fspath(r) for r in roots]
    while stack and entries < max_entries:
        top = stack.pop()
        try:
            it = os.scandir(top)
        except OSError:
            continue
        with it:
            for entry in it:
                entries += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total
