"""``corral sim``: seeded histories of a simulated cluster, checked (issue 17)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from typing import Any

import click
from rich.table import Table

from corral.cli.common import console, fail, handle_errors


def _seeds(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    out: list[int] = []
    try:
        for part in value.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give seeds as 1-200 or 3,7,9-12") from None
    return out


@click.command()
@click.option("--seeds", default="1-200", show_default=True, callback=_seeds, help="Seeds: 1-200, 3,7,9-12.")
@click.option("--hours", default=0.1, show_default=True, help="Simulated hours of faults per seed.")
@click.option("--agents", default=3, show_default=True)
@click.option("--faults", default="", help="Kinds of fault, comma-separated (default: all).")
@click.option("--keep-faults", default="", help="Replay: only these events of the schedule (indices).")
@click.option("--no-shrink", is_flag=True, help="Do not shrink the schedule of a violating seed.")
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Run seeds in this many processes (the output order stays the seeds' order).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def sim(
    seeds: list[int],
    hours: float,
    agents: int,
    faults: str,
    keep_faults: str,
    no_shrink: bool,
    jobs: int,
    as_json: bool,
) -> None:
    """Run the real master, SDK driver and batch engine against simulated
    agents and network under a virtual clock, one seeded history per seed,
    and check the invariants after every step (docs/architecture.md, "Simulation")."""
    import structlog

    from corral.sim.faults import KINDS
    from corral.sim.run import SimConfig, full_schedule, run_seeds, shrink

    # The simulated master logs every registration; at a few thousand
    # histories a minute that is noise (violations are reported here).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    kinds = tuple(k.strip() for k in faults.split(",") if k.strip()) or tuple(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        fail(f"--faults: unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    keep = tuple(int(i) for i in keep_faults.split(",") if i.strip()) if keep_faults else None
    config = SimConfig(hours=hours, agents=agents, kinds=kinds, keep=keep)
    started = time.perf_counter()
    total_faults: Counter[str] = Counter()
    steps = 0
    sim_s = 0.0
    bad = []
    digests: dict[str, str] = {}
    for result in run_seeds(seeds, config, jobs):
        digests[str(result.seed)] = result.digest
        steps += result.steps
        sim_s += result.sim_s
        total_faults.update(result.faults)
        if result.violations:
            bad.append(result)
    wall = time.perf_counter() - started
    load = os.getloadavg()[0]  # over the run
    reports: list[dict[str, Any]] = []
    for result in bad:
        first = result.violations[0]
        kept, _ = (keep, None) if no_shrink else shrink(result.seed, config, first.kind)
        flags = f"--hours {hours:g} --agents {agents}" + (f" --faults {','.join(kinds)}" if faults else "")
        replay = f"corral sim --seeds {result.seed} {flags}"
        if kept is not None:
            replay += f" --keep-faults {','.join(map(str, kept)) or '-1'}"
        events = (
            result.schedule
            if kept is None
            else [e for i, e in enumerate(full_schedule(result.seed, config)) if i in kept]
        )
        reports.append(
            {
                "seed": result.seed,
                "violations": [str(v) for v in result.violations],
                "minimal_faults": [str(e) for e in events],
                "replay": replay,
            }
        )
    summary: dict[str, Any] = {
        "seeds": len(seeds),
        "simulated_hours": round(sim_s / 3600, 2),
        "steps": steps,
        "faults": dict(sorted(total_faults.items())),
        "violations": sum(len(r.violations) for r in bad),
        "violating_seeds": [r.seed for r in bad],
        "wall_s": round(wall, 2),
        "seeds_per_s": round(len(seeds) / wall, 1),
        "simulated_hours_per_wall_s": round(sim_s / 3600 / wall, 2),
        "load_average": round(load, 2),
        "reports": reports,
        # Per seed, the history's sha256: a refactoring that must not change
        # behaviour compares these before and after, byte for byte.
        "digests": digests,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        table = Table(title="corral sim")
        for col in ("seeds", "sim hours", "steps", "faults", "violations", "seeds/s", "sim h / wall s"):
            table.add_column(col)
        table.add_row(
            str(len(seeds)),
            f"{sim_s / 3600:.1f}",
            str(steps),
            ", ".join(f"{k} {v}" for k, v in sorted(total_faults.items())),
            str(summary["violations"]),
            f"{summary['seeds_per_s']}",
            f"{summary['simulated_hours_per_wall_s']}",
        )
        console.print(table)
        for report in reports:
            console.print(f"[red]seed {report['seed']}[/red]: " + "; ".join(report["violations"][:3]))
            for line in report["minimal_faults"]:
                console.print(f"    {line}")
            console.print(f"  rerun: {report['replay']}")
    if bad:
        raise SystemExit(1)
