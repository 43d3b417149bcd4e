"""``corral hold``, ``release`` and ``requeue``: steering a batch job in the
batch service, as Slurm's ``scontrol hold|release|requeue``.

A held job's pending tasks do not launch (its running ones go on) until it
is released; requeue runs an ended job again (every task, or with
``--failed`` only those that failed, were cancelled or skipped), each task
with its retries back and its earlier attempts kept in its history.
"""

from __future__ import annotations

import click

from corral.cli import ids
from corral.cli.batch import _client, batch_option
from corral.cli.common import _client_logging, console, handle_errors, master_option


@click.command()
@master_option
@batch_option
@click.argument("job_id")
@click.pass_context
@handle_errors
def hold(ctx: click.Context, master: str | None, batch: str | None, job_id: str) -> None:
    """Keep a job's pending tasks from launching (running ones go on). JOB_ID may be a prefix."""
    _client_logging(ctx)
    client = _client(master, batch)
    job_id = ids.job_id(client.jobs(), job_id)
    console.print(f"{job_id}: {client.hold(job_id)['result']}", highlight=False, markup=False)


@click.command()
@master_option
@batch_option
@click.argument("job_id")
@click.pass_context
@handle_errors
def release(ctx: click.Context, master: str | None, batch: str | None, job_id: str) -> None:
    """Let a held job's tasks launch again."""
    _client_logging(ctx)
    client = _client(master, batch)
    job_id = ids.job_id(client.jobs(), job_id)
    console.print(f"{job_id}: {client.release(job_id)['result']}", highlight=False, markup=False)


@click.command()
@master_option
@batch_option
@click.argument("job_id")
@click.option(
    "--failed", "failed_only", is_flag=True, help="Only the tasks that failed, were cancelled or skipped."
)
@click.pass_context
@handle_errors
def requeue(
    ctx: click.Context, master: str | None, batch: str | None, job_id: str, failed_only: bool
) -> None:
    """Run an ended job again (its earlier attempts stay in its history)."""
    _client_logging(ctx)
    client = _client(master, batch)
    job_id = ids.job_id(client.jobs(), job_id)
    console.print(f"{job_id}: {client.requeue(job_id, failed_only)['result']}", highlight=False, markup=False)
