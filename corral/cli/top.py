"""``corral top``: live usage of running tasks, sampled through the master.

CPU is shown as a percentage of one CPU over the last interval (as
``docker stats`` does) next to the task's ``cpus``; memory, pids and disk next
to their limits.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator, Mapping, Sequence

from rich.table import Table
from rich.text import Text

from corral.cli.operator_client import operator_stub
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op

Key = tuple[str, str]
#: keys that end ``corral top`` (as in top(1)); Ctrl-C does too
QUIT_KEYS = frozenset(b"qQ")


@contextlib.contextmanager
def keys() -> Iterator[int | None]:
    """stdin in cbreak mode (one key at a time, no echo) while ``corral top``
    runs, restored after; yields its fd, or None when stdin is no terminal."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def wait_or_quit(fd: int | None, interval_s: float) -> bool:
    """Sleep ``interval_s``, or less if a quit key is typed; True: quit."""
    if fd is None:
        time.sleep(interval_s)
        return False
    deadline = time.monotonic() + interval_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            typed = os.read(fd, 64)
            if not typed or any(b in QUIT_KEYS for b in typed):
                return True  # q, or the terminal went away
    return False


def sample(master: str, agent: str, framework: str, task: str) -> tuple[list[pb.TaskUsage], list[str], str]:
    """One round of usage from every agent asked; returns usages, errors and the master's address."""
    stub = operator_stub(master)
    resp = stub.GetUsage(op.GetUsageRequest(agent_id=agent, framework_id=framework, task_id=task))
    return list(resp.usages), list(resp.errors), stub.address


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _of(used: str, limit: int, fmt: str) -> str:
    return used if not limit else f"{used} / {fmt}"


def cpu_percent(before: pb.TaskUsage | None, now: pb.TaskUsage) -> float | None:
    """Share of one CPU used between two samples; None without an earlier one."""
    if before is None or now.timestamp <= before.timestamp:
        return None
    return max(0.0, (now.cpu_time_s - before.cpu_time_s) / (now.timestamp - before.timestamp) * 100)


def usage_table(
    usages: Sequence[pb.TaskUsage],
    previous: Mapping[Key, pb.TaskUsage],
    errors: Sequence[str] = (),
    title: str = "",
) -> Table:
    table = Table(title=title or None, title_justify="left")
    for col in ("task", "framework", "agent", "state", "cpu", "mem", "peak", "pids", "disk"):
        table.add_column(col, overflow="fold", justify="right" if col in ("cpu", "pids") else "left")
    for u in sorted(usages, key=lambda u: (u.framework_id, u.task_id)):
        pct = cpu_percent(previous.get((u.framework_id, u.task_id)), u)
        cpu = "…" if pct is None else f"{pct:.0f}%"
        table.add_row(
            u.task_id,
            u.framework_id,
            u.agent_id,
            Text(u.state, style="yellow" if u.state == "paused" else ""),
            f"{cpu} of {u.cpus:g}",
            _of(_size(u.mem_bytes), u.mem_limit_bytes, _size(u.mem_limit_bytes)),
            _size(u.mem_peak_bytes),
            _of(str(u.pids), u.pids_limit, str(u.pids_limit)),
            _of(_size(u.disk_bytes), u.disk_limit_bytes, _size(u.disk_limit_bytes)),
        )
    captions = [f"not measured: {e}" for e in errors]
    if not usages:
        captions.insert(0, "no running tasks")
    if captions:
        table.caption = "\n".join(captions)
    return table


def index(usages: Sequence[pb.TaskUsage]) -> dict[Key, pb.TaskUsage]:
    return {(u.framework_id, u.task_id): u for u in usages}
