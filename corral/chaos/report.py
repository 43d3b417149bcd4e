"""The end of a chaos run: the invariants' table, what was done, the seed and
the command that replays the run; optionally all of it as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from corral.chaos.invariants import Check
from corral.chaos.observer import Sample


@dataclass
class RunResult:
    """Everything a run found."""

    seed: int
    duration_s: float
    replay: str  # the command that replays this run
    checks: list[Check] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)  # applied faults, in order
    jobs: int = 0
    tasks: int = 0  # distinct task ids the cluster ran
    samples: int = 0
    submit_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    error: str = ""  # the run itself failed (not an invariant)
    cluster: dict[str, Any] = field(default_factory=dict)  # the cluster's plan, as in its state file

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.checks) and all(c.ok for c in self.checks)


def tasks_run(samples: list[Sample]) -> int:
    """Distinct task ids the leader or the agents' processes ever showed."""
    ids = {t.task_id for s in samples for t in s.tasks}
    ids |= {task for s in samples for _host, task in s.live}
    return len(ids)


def print_report(result: RunResult, out: Console) -> None:
    kinds = Counter(f["kind"] for f in result.faults)
    faults = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
    table = Table(
        title=f"corral chaos: seed {result.seed}, {result.duration_s:g}s, {len(result.faults)} faults "
        f"({faults}), {result.jobs} jobs, {result.tasks} tasks, {result.samples} samples",
        title_justify="left",
    )
    table.add_column("invariant")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in result.checks:
        table.add_row(
            c.name, Text("held", style="green") if c.ok else Text("FAILED", style="bold red"), c.detail
        )
    out.print(table)
    if result.submit_errors:
        out.print(
            f"{len(result.submit_errors)} submissions refused: {result.submit_errors[0]}", highlight=False
        )
    if result.error:
        out.print(f"[bold red]run failed:[/] {result.error}", highlight=False)
    if result.ok:
        out.print(
            f"[bold green]all invariants held[/] (seed {result.seed}, {result.wall_s:.0f}s)", highlight=False
        )
    else:
        out.print(f"[bold red]invariants failed[/] with seed {result.seed}; replay with:", highlight=False)
        out.print(f"  {result.replay}", highlight=False, soft_wrap=True)


def write_json(result: RunResult, path: Path, samples: list[Sample]) -> None:
    data = {**asdict(result), "ok": result.ok, "samples_data": [asdict(s) for s in samples]}
    path.write_text(json.dumps(data, indent=1))
