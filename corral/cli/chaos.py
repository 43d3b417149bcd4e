"""``corral chaos``: faults from a seeded schedule on a test cluster, a workload,
and invariants checked at the end (issue 9)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click

from corral.chaos.schedule import KINDS
from corral.cli.common import _client_logging, console, err_console, fail, handle_errors


def _kinds(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise click.BadParameter(
            f"unknown kind(s) {', '.join(unknown) or '(none)'}; known: {', '.join(KINDS)}"
        )
    return kinds


@click.command()
@click.option(
    "--seed", type=int, default=None, help="The schedule's and workload's seed (default: random, printed)."
)
@click.option("--duration", default=60.0, show_default=True, help="Seconds of workload and faults.")
@click.option("--masters", default=3, show_default=True)
@click.option("--agents", default=3, show_default=True)
@click.option("--zk-nodes", default=3, show_default=True)
@click.option(
    "--faults",
    default=",".join(KINDS),
    show_default=True,
    callback=_kinds,
    help="Kinds of fault to inject, comma-separated.",
)
@click.option("--max-fault", default=8.0, show_default=True, help="Longest fault, seconds.")
@click.option(
    "--cluster",
    default=None,
    metavar="NAME",
    help="Use this running `corral cluster up` cluster (left running) instead of bringing one up.",
)
@click.option("--name", default="chaos", show_default=True, help="Name of the cluster brought up.")
@click.option("--keep-logs", is_flag=True, help="Keep the nodes' and frameworks' logs.")
@click.option(
    "--json", "json_file", type=click.Path(path_type=Path), default=None, help="Write the result here."
)
@click.pass_context
@handle_errors
def chaos(
    ctx: click.Context,
    seed: int | None,
    duration: float,
    masters: int,
    agents: int,
    zk_nodes: int,
    faults: tuple[str, ...],
    max_fault: float,
    cluster: str | None,
    name: str,
    keep_logs: bool,
    json_file: Path | None,
) -> None:
    """Inject faults into a test cluster running a workload; check invariants.

    \b
    Brings up a cluster (ZooKeeper, masters, agents in their own namespaces),
    runs batch jobs and a service through the real frameworks, and injects
    kill -9 + restart, pause, partition, loss of a ZooKeeper node and of quorum
    from a schedule made from --seed. Exits 1 if an invariant failed, printing
    the command that replays the run.

    \b
    corral chaos --duration 60 --seed 7
    corral chaos --duration 600 --seed 7          # the 10-minute soak
    corral chaos --cluster test --faults agent-kill,agent-partition
    """
    from corral.chaos.report import print_report, write_json
    from corral.chaos.run import ChaosOptions, ChaosRun

    _client_logging(ctx)
    if duration < 15:
        fail(f"--duration: at least 15 s (faults stop 12 s before the end), got {duration:g}")
    options = ChaosOptions(
        seed=seed if seed is not None else secrets.randbelow(1_000_000),
        duration_s=duration,
        masters=masters,
        agents=agents,
        zk_nodes=zk_nodes,
        faults=faults,
        cluster=cluster,
        name=name,
        max_fault_s=max_fault,
        keep_logs=keep_logs,
    )
    err_console.print(f"corral chaos: seed {options.seed} (replay: {options.replay()})", highlight=False)
    run = ChaosRun(options, say=lambda m: err_console.print(f"  {m}", highlight=False))
    result = run.run()
    print_report(result, console)
    if json_file is not None:
        write_json(result, json_file, run.samples)
    sys.exit(0 if result.ok else 1)
