"""``corral top``: live usage of running tasks, sampled through the master.

CPU is shown as a percentage of one CPU over the last interval (as
``docker stats`` does) next to the task's ``cpus``; memory, pids and disk next
to their limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text

from corral.cli import views
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op

Key = tuple[str, str]


def sample(master: str, agent: str, framework: str, task: str) -> tuple[list[pb.TaskUsage], list[str], str]:
    """One round of usage from every agent asked; returns usages, errors and the master's address."""
    stub = views.operator_stub(master)
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
