"""The ``corral`` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from corral import __version__
from corral.cli import daemons, ids, images, views
from corral.cli import exit as exit_codes
from corral.cli.discovery import (
    remove_local,
    resolve_master,
    write_local,
)
from corral.frameworks.batch import TaskGroup
from corral.resources import Resources

if TYPE_CHECKING:
    pass

from corral.cli.common import (
    _allowed_host_paths,
    _client_logging,
    _daemon_logging,
    console,
    err_console,
    fail,
    handle_errors,
    master_option,
)
from corral.cli.output import output_option, show


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """corral: a two-level datacenter resource scheduler (Mesos-style), in Python."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level


# -- processes ----------------------------------------------------------------


@cli.command()
@click.option("--agents", "-n", default=3, show_default=True, help="Number of agents.")
@click.option("--port", default=5050, show_default=True, help="Master port (0: any free port).")
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Its state: agents' checkpoints, sandboxes, batch and service databases (default: ~/.corral/local).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Forget the state of a previous run (new agent ids, no jobs or services); "
    "containers it left are killed.",
)
@click.option(
    "--image-store",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The agents' image store (default: $CORRAL_IMAGE_STORE, else $CORRAL_HOME/images "
    "or ~/.corral/images; `corral image` finds it).",
)
@click.option(
    "--agent-resources",
    default=None,
    metavar="SPEC",
    help='Resources of each agent, e.g. "cpus:1;mem:1024" (default: a share of this host).',
)
@click.option(
    "--submit",
    "job_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Run this job on the new cluster, show its result, then stop.",
)
@click.option("--output/--no-output", default=True, help="With --submit: show each task's stdout.")
@click.option("--batch/--no-batch", default=True, help="Also run the batch framework service.")
@click.option("--services/--no-services", default=True, help="Also run the service framework.")
@click.option(
    "--allowed-host-paths",
    default="",
    metavar="PATH[,PATH]",
    help="Host paths tasks may bind-mount as volumes (default none), as for `corral agent`.",
)
@click.option(
    "--image-import-dir",
    "image_import_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A directory under which tasks may name image tarballs by path (repeatable), as for `corral agent`.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext instead of mutual TLS with a CA of its own (any local user can then call it).",
)
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics of the master and every agent (labelled agent_id) "
    "at http://HOST:PORT/metrics (default: off).",
)
@click.pass_context
@handle_errors
def local(
    ctx: click.Context,
    agents: int,
    port: int,
    work_dir: Path | None,
    fresh: bool,
    image_store: Path | None,
    agent_resources: str | None,
    job_file: Path | None,
    output: bool,
    batch: bool,
    services: bool,
    allowed_host_paths: str,
    image_import_dirs: tuple[Path, ...],
    insecure: bool,
    metrics_listen: str | None,
) -> None:
    """Start an embedded cluster: a master and N agents in one process, no ZooKeeper.

    It makes a CA of its own in WORK_DIR/tls and speaks mutual TLS (unless
    --insecure); the CLI finds the master and the operator's certificate
    through ~/.corral/local.json.

    Its state survives a restart, `kill -9` included: the agents come back
    under their ids and take back the tasks still running, and the batch jobs
    and services are kept. --fresh starts from nothing. A second `corral
    local` on the same work dir is refused.
    """
    from corral.cli.discovery import operator_name, state_dir
    from corral.cli.local import LocalCluster, claim_state_dir, serve_until_signal

    if agents < 1:
        fail("--agents: must be at least 1")
    ctx.obj["log_level"] = (
        ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or ("warning" if job_file else "info")
    )
    _daemon_logging(ctx)
    from corral.cli.batch import read_job_file, submit_local

    job = read_job_file(job_file) if job_file else None
    res = Resources.parse(agent_resources) if agent_resources else None
    wd = (work_dir or state_dir() / "local").absolute()
    lock = claim_state_dir(wd, fresh)
    images_dir = image_store or Path(os.environ.get("CORRAL_IMAGE_STORE") or state_dir() / "images")

    async def main() -> int:
        cluster = LocalCluster(
            agents=agents,
            work_dir=wd,
            listen=f"127.0.0.1:{port}",
            agent_resources=res,
            image_store=images_dir,
            image_import_dirs=tuple(p.resolve() for p in image_import_dirs),
            allowed_host_paths=_allowed_host_paths(allowed_host_paths),
            tls=not insecure,
            metrics_listen=metrics_listen,
        )
        try:
            await cluster.start()
        except RuntimeError as e:
            fail(f"could not start the master on port {port}: {e} (try --port 0)")
        path = write_local(
            cluster.master_address, wd, cluster.tls_files(f"operator:{operator_name()}"), images_dir
        )
        try:
            console.print(
                f"[bold green]corral local[/] master [bold]{cluster.master_address}[/] with "
                f"{agents} agent(s); work dir {wd}; "
                + (
                    f"mutual TLS, CA {cluster.tls_dir / 'ca.pem'}"
                    if cluster.tls
                    else "plaintext (--insecure)"
                ),
                highlight=False,
            )
            for agent in cluster.agent_list:
                console.print(f"  agent {agent.agent_id}: {agent.total.format()}", highlight=False)
            if cluster.metrics is not None:
                console.print(f"  metrics at http://{cluster.metrics.address}/metrics", highlight=False)
            if job is None:
                service = None
                if batch:
                    from corral.frameworks.batch.service import BatchService

                    service = BatchService(
                        cluster.master_address,
                        wd / "batch.db",
                        credentials=cluster.credentials("framework:batch"),
                        acls=cluster.acls,
                    )
                    console.print(f"  batch framework API at {await service.start()}", highlight=False)
                hosted = None
                if services:
                    from corral.frameworks.service.service import ServiceFramework

                    hosted = ServiceFramework(
                        cluster.master_address,
                        wd / "service.db",
                        credentials=cluster.credentials("framework:service"),
                        acls=cluster.acls,
                    )
                    console.print(f"  service framework API at {await hosted.start()}", highlight=False)
                console.print(
                    f"  clients find it through {path}; try `corral run -- echo hello`. Ctrl-C stops it.",
                    highlight=False,
                )
                try:
                    await serve_until_signal(cluster)
                finally:
                    if hosted is not None:
                        await hosted.stop()
                    if service is not None:
                        await service.stop()
                return 0
            return await submit_local(cluster.master_address, job[0], job[1], output)
        finally:
            remove_local()
            await cluster.stop()

    try:
        code = asyncio.run(main())
    finally:
        lock.release()
    sys.exit(code)


def _parse_env(items: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


@cli.command(context_settings={"ignore_unknown_options": True})
@master_option
@click.option("--cpus", default=0.1, show_default=True, type=float)
@click.option("--mem", default=64.0, show_default=True, type=float, help="MiB.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE")
@click.option("--name", default="run", show_default=True)
@click.option(
    "--network",
    type=click.Choice(["host", "none"]),
    default="host",
    show_default=True,
    help="none: a network namespace with loopback only.",
)
@click.option("--user", default=None, metavar="UID[:GID]", help="Run as this user (default root).")
@click.option(
    "--image",
    default="",
    metavar="NAME[:TAG]|HOST/REPO[:TAG]|TARBALL",
    help="Run on this image: in the agent's store, from a registry, or a tarball (see `corral image`).",
)
@click.option(
    "--pull",
    type=click.Choice(["if-not-present", "always", "never"]),
    default=None,
    help="For a registry image: when the agent pulls it (default if-not-present).",
)
@click.option(
    "--volume",
    "-v",
    multiple=True,
    metavar="HOST:CONTAINER[:ro]",
    help="Bind-mount a host path (on the agent) into the container.",
)
@click.option("--read-only", is_flag=True, help="With --image: a read-only root.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def run(
    ctx: click.Context,
    master: str | None,
    cpus: float,
    mem: float,
    env: tuple[str, ...],
    name: str,
    network: str,
    user: str | None,
    image: str,
    pull: str | None,
    volume: tuple[str, ...],
    read_only: bool,
    command: tuple[str, ...],
) -> None:
    """Run one task and stream its output; exit with its exit code.

    \b
    corral run -- echo hello
    corral run --cpus 1 --mem 256 -- python3 -c 'print(42)'
    corral run --image busybox:test -v /srv/data:/data:ro -- ls /data
    """
    import shlex

    from corral.cli.jobs import exit_code_of, follow_output, never_fits_message, run_job
    from corral.frameworks.batch.spec import parse_job

    _client_logging(ctx)
    addr = resolve_master(master)
    if not command and not image:
        fail("give a command (or an --image whose Entrypoint/Cmd to run)")
    cmd = command[0] if len(command) == 1 else shlex.join(command)
    volumes = []
    for v in volume:
        host, sep, rest = v.partition(":")
        target, _, mode = rest.partition(":")
        if not sep or not host or not target or mode not in ("", "ro", "rw"):
            fail(f"--volume: must be HOST:CONTAINER[:ro|rw], got {v!r}")
        volumes.append({"host_path": host, "container_path": target, "read_only": mode == "ro"})
    spec = parse_job(
        {
            "name": name,
            "tasks": [
                {
                    "name": name,
                    "command": cmd,
                    "cpus": cpus,
                    "mem": mem,
                    "env": _parse_env(env),
                    "network": network,
                    **({"user": user} if user else {}),
                    **({"image": image, "read_only_root": read_only} if image else {}),
                    **({"pull_policy": pull} if pull else {}),
                    **({"volumes": volumes} if volumes else {}),
                }
            ],
        }
    )
    assert isinstance(spec.groups[0], TaskGroup)
    never = never_fits_message(addr, spec)
    if never is not None:
        fail(never, exit_codes.REFUSED)

    async def main() -> int:
        result = await run_job(
            addr,
            spec,
            framework_name="corral-run",
            while_running=follow_output(addr, lambda job_id: f"{job_id}.{name}.0"),
        )
        p = result.progress[0]
        if result.interrupted:
            err_console.print("interrupted: the task was killed")
            return 130
        if (p.state is not None and p.state.name not in ("FINISHED", "FAILED")) or (
            p.status is not None and p.status.reason.startswith(("CONTAINER_LIMITATION", "CONTAINER_LAUNCH"))
        ):
            msg = p.status.message if p.status else ""
            err_console.print(f"[red]task {p.state.name if p.state else '?'}:[/] {msg}", highlight=False)
        return exit_code_of(p)

    sys.exit(asyncio.run(main()))


@cli.command()
@master_option
@click.argument("task_id")
@click.option("--framework", default="", help="Framework id, if several use this task id.")
@click.pass_context
@handle_errors
def kill(ctx: click.Context, master: str | None, task_id: str, framework: str) -> None:
    """Kill a task (SIGTERM, then SIGKILL after its grace period)."""
    _client_logging(ctx)
    address = resolve_master(master)
    task_id, framework = ids.task_id(views.operator_stub(address), task_id, framework)
    views.kill_task(address, task_id, framework)
    console.print(f"kill sent to task {task_id}", highlight=False)


# -- views --------------------------------------------------------------------


@cli.command()
@master_option
@output_option
@click.pass_context
@handle_errors
def agents(ctx: click.Context, master: str | None, output: str | None) -> None:
    """List agents with their resources."""
    _client_logging(ctx)
    show(output, views.agents_listing(resolve_master(master)))


@cli.command()
@master_option
@output_option
@click.pass_context
@handle_errors
def frameworks(ctx: click.Context, master: str | None, output: str | None) -> None:
    """List frameworks."""
    _client_logging(ctx)
    show(output, views.frameworks_listing(resolve_master(master)))


@cli.command()
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
    _client_logging(ctx)
    show(output, views.tasks_listing(resolve_master(master), include_completed, framework, agent))


@cli.command()
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

    from corral.cli import top as topview

    _client_logging(ctx)
    address = resolve_master(master)
    stub = views.operator_stub(address)
    framework = ids.framework_id(stub, framework) if framework else ""
    agent = ids.agent_id(stub, agent) if agent else ""
    if task:
        task, framework = ids.task_id(stub, task, framework)
    usages, errors, leader = topview.sample(address, agent, framework, task)
    if once:
        time.sleep(interval)
        previous = topview.index(usages)
        usages, errors, leader = topview.sample(address, agent, framework, task)
        console.print(topview.usage_table(usages, previous, errors, f"tasks of {leader}"))
        return
    with topview.keys() as fd, Live(console=console, auto_refresh=False) as live:
        while True:
            previous = topview.index(usages)
            if topview.wait_or_quit(fd, interval):
                return
            usages, errors, leader = topview.sample(address, agent, framework, task)
            live.update(topview.usage_table(usages, previous, errors, f"tasks of {leader}"), refresh=True)


@cli.command()
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
    _client_logging(ctx)
    address = resolve_master(master)
    task_id, framework = ids.task_id(views.operator_stub(address), task_id, framework)
    views.print_logs(address, task_id, "stderr" if stderr else "stdout", follow, framework)


from corral.cli.cluster import cluster  # noqa: E402  (the group looks main's helpers up lazily)

cli.add_command(cluster)
cli.add_command(images.image)
cli.add_command(daemons.master)
cli.add_command(daemons.agent)


def _register() -> None:
    """Commands that live in their own modules (one line each)."""
    from corral.cli import (
        acl,
        allocation,
        batch,
        certs,
        chaos,
        exec_cmd,
        frameworks_cmd,
        job_control,
        service,
        sim,
    )

    cli.add_command(certs.certs)
    cli.add_command(exec_cmd.exec_task)
    cli.add_command(chaos.chaos)
    cli.add_command(frameworks_cmd.framework)
    cli.add_command(service.service)
    cli.add_command(batch.submit)
    cli.add_command(batch.jobs)
    cli.add_command(batch.job)
    cli.add_command(batch.cancel)
    cli.add_command(job_control.hold)
    cli.add_command(job_control.release)
    cli.add_command(job_control.requeue)
    cli.add_command(allocation.explain)
    cli.add_command(allocation.reserve)
    cli.add_command(allocation.unreserve)
    cli.add_command(allocation.roles)
    cli.add_command(allocation.weights)
    cli.add_command(allocation.quota)
    cli.add_command(allocation.drain)
    cli.add_command(allocation.undrain)
    cli.add_command(acl.acl)
    cli.add_command(sim.sim)


def main() -> None:
    _register()
    cli(obj={})


if __name__ == "__main__":
    main()
