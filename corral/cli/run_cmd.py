"""``corral run`` (one task, its output streamed, its exit code passed on) and
``corral kill``.

What a command needs beyond click (grpc, protobuf, asyncio, the framework
driver) is imported when it runs, so that ``corral run --help`` stays fast."""

from __future__ import annotations

import sys

import click

from corral.cli import common
from corral.cli import exit as exit_codes
from corral.cli.common import _client_logging, fail, handle_errors, master_option
from corral.cli.discovery import client_credentials, resolve_master


def _parse_env(items: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


@click.command(context_settings={"ignore_unknown_options": True})
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
    import asyncio
    import shlex

    from corral.cli.jobs import exit_code_of, follow_output, never_fits_message, run_job
    from corral.frameworks.batch.spec import TaskGroup, parse_job

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
    # Read and checked once: the three calls below would each load them.
    credentials = client_credentials(addr)
    never = never_fits_message(addr, spec, credentials)
    if never is not None:
        fail(never, exit_codes.REFUSED)

    async def main() -> int:
        result = await run_job(
            addr,
            spec,
            framework_name="corral-run",
            while_running=follow_output(addr, lambda job_id: f"{job_id}.{name}.0", credentials),
            credentials=credentials,
        )
        p = result.progress[0]
        if result.interrupted:
            common.err_console.print("interrupted: the task was killed")
            return 130
        if (p.state is not None and p.state.name not in ("FINISHED", "FAILED")) or (
            p.status is not None and p.status.reason.startswith(("CONTAINER_LIMITATION", "CONTAINER_LAUNCH"))
        ):
            from rich.text import Text

            msg = p.status.message if p.status else ""
            # The task's message as written: brackets in it are no markup.
            state = p.state.name if p.state else "?"
            common.err_console.print(Text.assemble((f"task {state}:", "red"), " ", msg), highlight=False)
        return exit_code_of(p)

    code = asyncio.run(main())
    # The framework is torn down, the output written and flushed; what is
    # still open (the Operator API's channel) the kernel closes, as at any exit.
    common.nothing_to_tear_down()
    sys.exit(code)


@click.command()
@master_option
@click.argument("task_id")
@click.option("--framework", default="", help="Framework id, if several use this task id.")
@click.pass_context
@handle_errors
def kill(ctx: click.Context, master: str | None, task_id: str, framework: str) -> None:
    """Kill a task (SIGTERM, then SIGKILL after its grace period)."""
    from corral.cli import ids, views
    from corral.cli.operator_client import operator_stub

    _client_logging(ctx)
    address = resolve_master(master)
    task_id, framework = ids.task_id(operator_stub(address), task_id, framework)
    views.kill_task(address, task_id, framework)
    common.console.print(f"kill sent to task {task_id}", highlight=False)
