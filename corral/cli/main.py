"""The ``corral`` command line.

Every subcommand lives in its own module and is imported only when it runs
(corral/cli/lazy.py): ``corral --help`` imports click and this table, no
grpc, protobuf, asyncio, agent or framework code; a test guards that
(tests/unit/test_cli_imports.py). A new command is one line here, with the
first paragraph of its help (that test keeps the two equal).
"""

from __future__ import annotations

import sys

import click

from corral import __version__
from corral.cli.lazy import LazyCommand, LazyGroup

#: name -> where the command lives, and the first paragraph of its help
COMMANDS: dict[str, LazyCommand] = {
    # running work
    "local": LazyCommand(
        "corral.cli.local_cmd:local",
        "Start an embedded cluster: a master and N agents in one process, no ZooKeeper.",
    ),
    "run": LazyCommand(
        "corral.cli.run_cmd:run", "Run one task and stream its output; exit with its exit code."
    ),
    "kill": LazyCommand(
        "corral.cli.run_cmd:kill", "Kill a task (SIGTERM, then SIGKILL after its grace period)."
    ),
    "exec": LazyCommand(
        "corral.cli.exec_cmd:exec_task",
        "Run COMMAND inside running task TASK_ID's container; exit with its code.",
    ),
    "submit": LazyCommand("corral.cli.batch:submit", "Submit a job file (TOML)."),
    "jobs": LazyCommand(
        "corral.cli.batch:jobs",
        "List the batch service's jobs (the history; --since to cut it) and periodic jobs.",
    ),
    "job": LazyCommand(
        "corral.cli.batch:job",
        "Show a job: per task its state, tries, exit code and agent (or a periodic job and its runs).",
    ),
    "cancel": LazyCommand(
        "corral.cli.batch:cancel", "Cancel a job (its running tasks are killed) or remove a periodic job."
    ),
    "hold": LazyCommand(
        "corral.cli.job_control:hold",
        "Keep a job's pending tasks from launching (running ones go on). JOB_ID may be a prefix.",
    ),
    "release": LazyCommand("corral.cli.job_control:release", "Let a held job's tasks launch again."),
    "requeue": LazyCommand(
        "corral.cli.job_control:requeue", "Run an ended job again (its earlier attempts stay in its history)."
    ),
    "service": LazyCommand(
        "corral.cli.service:service",
        "Long-running services: keep N healthy instances, roll out new versions.",
    ),
    "framework": LazyCommand(
        "corral.cli.frameworks_cmd:framework", "Framework plugins: list the installed ones, run one."
    ),
    # views
    "agents": LazyCommand("corral.cli.views_cmd:agents", "List agents with their resources."),
    "frameworks": LazyCommand("corral.cli.views_cmd:frameworks", "List frameworks."),
    "tasks": LazyCommand("corral.cli.views_cmd:tasks", "List tasks with their states."),
    "top": LazyCommand(
        "corral.cli.views_cmd:top", "Live CPU, memory, pids and disk of running tasks; q quits."
    ),
    "logs": LazyCommand("corral.cli.views_cmd:logs", "Print a task's stdout (or stderr) from its sandbox."),
    # allocation
    "explain": LazyCommand(
        "corral.cli.allocation:explain",
        "Why FRAMEWORK (id, id prefix or name) is not being offered resources, and, for the "
        "bundled batch and service frameworks, why each pending task waits: which checker "
        "rejected which agents, and the smallest change that would fit it.",
    ),
    "reserve": LazyCommand(
        "corral.cli.allocation:reserve",
        'Reserve an agent\'s unreserved RESOURCES for roles, e.g. "cpus(ml):2;mem(ml):4096".',
    ),
    "unreserve": LazyCommand(
        "corral.cli.allocation:unreserve",
        'Give reserved RESOURCES of an agent back to every role, e.g. "cpus(ml):2".',
    ),
    "roles": LazyCommand(
        "corral.cli.allocation:roles", "List roles with weights, shares, quota and what they consume."
    ),
    "weights": LazyCommand(
        "corral.cli.allocation:weights",
        "Role weights (a role with weight 2 gets twice the share of weight 1).",
    ),
    "quota": LazyCommand(
        "corral.cli.allocation:quota", "Role quota: a guarantee offered first, a limit never exceeded."
    ),
    "drain": LazyCommand(
        "corral.cli.allocation:drain",
        "Put an agent under maintenance: its tasks keep running, it offers nothing.",
    ),
    "undrain": LazyCommand("corral.cli.allocation:undrain", "Bring a drained agent back into service."),
    "acl": LazyCommand("corral.cli.acl:acl", "The master's authorization policy: print, check and try it."),
    # processes and tools
    "master": LazyCommand(
        "corral.cli.daemons:master", "Run a master: standalone, or one of several elected through ZooKeeper."
    ),
    "agent": LazyCommand("corral.cli.daemons:agent", "Run a node agent that dials the master."),
    "cluster": LazyCommand(
        "corral.cli.cluster:cluster",
        "Multi-node test clusters on this host: every node in its own network namespace.",
    ),
    "image": LazyCommand(
        "corral.cli.images:image",
        "Container images in the local store: pulled from a registry, or imported from OCI "
        "image-layout or `docker save` tarballs.",
    ),
    "certs": LazyCommand(
        "corral.cli.certs:certs", "Certificates for mutual TLS: make a CA, issue certificates, show one."
    ),
    "chaos": LazyCommand(
        "corral.cli.chaos:chaos", "Inject faults into a test cluster running a workload; check invariants."
    ),
    "sim": LazyCommand(
        "corral.cli.sim:sim",
        "Run the real master, SDK driver and batch engine against simulated agents and network "
        "under a virtual clock, one seeded history per seed, and check the invariants after "
        'every step (docs/architecture.md, "Simulation").',
    ),
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="corral")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """corral: a two-level datacenter resource scheduler (Mesos-style), in Python."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level


def main() -> None:
    """The ``corral`` script: run the command, then exit, quickly if the
    command allows it (corral.cli.common.nothing_to_tear_down)."""
    try:
        cli(obj={})
    except SystemExit as e:
        common = sys.modules.get("corral.cli.common")  # absent: no command asked
        if common is not None and common.quick_exit_requested():
            _exit_without_teardown(e.code)
        raise


def _exit_without_teardown(code: object) -> None:
    """``os._exit`` with the status Python would give ``SystemExit(code)``,
    after flushing stdout and stderr; returns (the caller then exits the
    usual way) if a non-daemon thread still runs, which Python would wait for,
    if a tracer or profiler is set (coverage and cProfile write their data at
    exit), or if flushing fails."""
    import os
    import threading

    if sys.gettrace() is not None or sys.getprofile() is not None:
        return
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        return  # Python prints a message for these: let it
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


if __name__ == "__main__":
    main()
