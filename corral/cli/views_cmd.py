"""The operator's views: ``corral agents``, ``frameworks``, ``tasks``, ``top``
and ``logs`` (the Operator API client, grpc and protobuf are imported when a
command runs)."""

from __future__ import annotations

import click

from corral.cli import common
from corral.cli.common import _client_logging, handle_errors, master_option
from corral.cli.discovery import resolve_master
from corral.cli.output import output_option, show


@click.command()
@master_option
@output_option
@click.pass_context
@handle_errors
def agents(ctx: click.Context, master: str | None, output: str | None) -> None:
    """List agents with their resources."""
    from corral.cli import views

    _client_logging(ctx)
    show(output, views.agents_listing(resolve_master(master)))


@click.command()
@master_option
@output_option
@click.pass_context
@handle_errors
def frameworks(ctx: click.Context, master: str | None, output: str | None) -> None:
    """List frameworks."""
    from corral.cli import views

    _client_logging(ctx)
    show(output, views.frameworks_listing(resolve_master(master)))


@click.command()
@master_option
@click.option("--all", "-a", "include_completed", is_flag=True, help="Include completed tasks.")
@click.option("--framework", default="", help="Only this framework's tasks (id, id prefix or name).")
@click.option("--agent", default="", help="Only tasks on this agent (id or id prefix).")
@output_option
@click.pass_context
@handle_errors
def tasks(
    ctx: click.Context,
    master: str | None,
    include_completed: bool,
    framework: str,
    agent: str,
    output: str | None,
) -> None:
    """List tasks with their states."""
    from corral.cli import views

    _client_logging(ctx)
    show(output, views.tasks_listing(resolve_master(master), include_completed, framework, agent))


@click.command()
@master_option
@click.option("--agent", default="", help="Only tasks on this agent.")
@click.option("--framework", default="", help="Only this framework's tasks.")
@click.option("--task", default="", help="Only this task.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.option("--once", is_flag=True, help="Print one table (two samples, one interval apart) and exit.")
@click.pass_context
@handle_errors
def top(
    ctx: click.Context, master: str | None, agent: str, framework: str, task: str, interval: float, once: bool
) -> None:
    """Live CPU, memory, pids and disk of running tasks; q quits."""
    import time

    from rich.live import Live

    from corral.cli import ids
    from corral.cli import top as topview
    from corral.cli.operator_client import operator_stub

    _client_logging(ctx)
    address = resolve_master(master)
    stub = operator_stub(address)
    framework = ids.framework_id(stub, framework) if framework else ""
    agent = ids.agent_id(stub, agent) if agent else ""
    if task:
        task, framework = ids.task_id(stub, task, framework)
    usages, errors, leader = topview.sample(address, agent, framework, task)
    if once:
        time.sleep(interval)
        previous = topview.index(usages)
        usages, errors, leader = topview.sample(address, agent, framework, task)
        common.console.print(topview.usage_table(usages, previous, errors, f"tasks of {leader}"))
        return
    with topview.keys() as fd, Live(console=common.console, auto_refresh=False) as live:
        while True:
            previous = topview.index(usages)
            if topview.wait_or_quit(fd, interval):
                return
            usages, errors, leader = topview.sample(address, agent, framework, task)
            live.update(topview.usage_table(usages, previous, errors, f"tasks of {leader}"), refresh=True)


@click.command()
@master_option
@click.argument("task_id")
@click.option("--stderr", is_flag=True, help="Show stderr instead of stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the task runs.")
@click.option("--framework", default="")
@click.pass_context
@handle_errors
def logs(
    ctx: click.Context,
    master: str | None,
    task_id: str,
    stderr: bool,
    follow: bool,
    framework: str,
) -> None:
    """Print a task's stdout (or stderr) from its sandbox."""
    from corral.cli import ids, views
    from corral.cli.operator_client import operator_stub

    _client_logging(ctx)
    address = resolve_master(master)
    task_id, framework = ids.task_id(operator_stub(address), task_id, framework)
    views.print_logs(address, task_id, "stderr" if stderr else "stdout", follow, framework)
