"""What a terminal status says about why a task ended (DESIGN.md: never make a user read dmesg)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from corral.slave.containerizer.cgroups.base import CgroupStats
from corral.slave.containerizer.model import Limitation

TAIL_BYTES = 4096
TAIL_LINES = 20


def stderr_tail(path: Path) -> str:
    """The last ~20 lines (at most 4 KiB) of a file; empty if it does not exist."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read(TAIL_BYTES)
    except FileNotFoundError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    if len(data) == TAIL_BYTES and size > TAIL_BYTES and lines:
        lines = lines[1:]  # the first line was cut in the middle
    return "\n".join(lines[-TAIL_LINES:])


def mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def limitation(stats: CgroupStats | None) -> Limitation | None:
    """The limit the task ran into, if any: an OOM kill, else refused forks
    (pids.max; v1 and v2 both count them in ``pids.events`` ``max``).

    Refused forks are reported whatever the exit code: a task that ends 0
    after its forks were refused may not have done all its work, and its user
    should hear of the limit (the agent keeps it FINISHED, with the reason).
    """
    if stats is None:
        return None
    if stats.oom_kills > 0:
        peak = max(stats.mem_peak_bytes, stats.mem_bytes)
        return Limitation(
            kind="memory",
            message=(
                f"memory limit {mib(stats.mem_limit_bytes)} exceeded (peak {mib(peak)}); "
                f"killed by the kernel OOM killer"
            ),
            limit=stats.mem_limit_bytes,
            peak=peak,
        )
    if stats.pids_max_events > 0 and stats.pids_limit > 0:
        refused = stats.pids_max_events
        forks = "fork" if refused == 1 else "forks"
        return Limitation(
            kind="pids",
            message=f"pids limit {stats.pids_limit} reached; {refused} {forks} refused",
            limit=stats.pids_limit,
            peak=stats.pids_limit,
        )
    return None


def describe(exit_code: int | None, sig: int | None, found: Limitation | None) -> str:
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        text = f"killed by signal {sig} ({name})"
    elif exit_code is not None:
        text = f"exited with code {exit_code}"
    else:
        text = "ended, but its supervisor recorded no exit status"
    return text if found is None else f"{text}: {found.message}"
