"""``corral hold``, ``release`` and ``requeue``: steering a batch job in the
batch service, as Slurm's ``scontrol hold|release|requeue``.

A held job's pending tasks do not launch (its running ones go on) until it
is released; requeue runs an ended job again (every task, or with
``--failed`` only those that failed, were cancelled or skipped), each task
with its retries back and its earlier attempts kept in its history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from corral.cli import ids
from corral.cli.batch import batch_client, batch_option
from corral.cli.common import _client_logging, console, handle_errors, master_option


def _steer(
    ctx: click.Context, master: str | None, batch: str | None, job_id: str, call: Callable[..., Any]
) -> None:
    """Resolve JOB_ID (a unique prefix will do), make the call, print its answer."""
    _client_logging(ctx)
    client = batch_client(master, batch)
    job_id = ids.job_id(client.jobs(), job_id)
    console.print(f"{job_id}: {call(client, job_id)['result']}", highlight=False, markup=False)


def _command(fn: Callable[..., None]) -> click.Command:
    for option in (click.pass_context, click.argument("job_id"), batch_option, master_option):
        fn = option(fn)
    return click.command()(handle_errors(fn))


@_command
def hold(ctx: click.Context, master: str | None, batch: str | None, job_id: str) -> None:
    """Keep a job's pending tasks from launching (running ones go on). JOB_ID may be a prefix."""
    _steer(ctx, master, batch, job_id, lambda c, j: c.hold(j))


@_command
def release(ctx: click.Context, master: str | None, batch: str | None, job_id: str) -> None:
    """Let a held job's tasks launch again."""
    _steer(ctx, master, batch, job_id, lambda c, j: c.release(j))


@click.option(
    "--failed", "failed_only", is_flag=True, help="Only the tasks that failed, were cancelled or skipped."
)
@_command
def requeue(
    ctx: click.Context, master: str | None, batch: str | None, job_id: str, failed_only: bool
) -> None:
    """Run an ended job again (its earlier attempts stay in its history)."""
    _steer(ctx, master, batch, job_id, lambda c, j: c.requeue(j, failed_only))
