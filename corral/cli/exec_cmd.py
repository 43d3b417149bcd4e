"""``corral exec TASK -- CMD``: run a command inside a running task's container.

    corral exec web-0 -- cat /etc/hostname        # a unique prefix of the task id will do
    corral exec --framework FW_ID --timeout 30 sleeper-1 -- sh -c 'ps; df -h .'

The master authorizes the call (``exec_task`` on the task's owner: its
framework's principal, or an operator) and audits it; the task's agent
runs the command in the task's namespaces, cgroups and root, as the task's
user with its capabilities and seccomp filter (slave/task_exec.py). Output
(stdout and stderr together) is streamed as it comes; the exit code is the
command's (124: it overstayed --timeout; 125: the container could not be
entered). Ctrl-C kills the command and exits 130. There is no terminal
(``-it``) yet: stdin is /dev/null.
"""

from __future__ import annotations

import sys

import click
import grpc

from corral.cli import exit as exit_codes
from corral.cli import ids, views
from corral.cli.common import _client_logging, fail, handle_errors, master_option
from corral.cli.discovery import client_credentials, leader_address, resolve_master
from corral.detector import leader_from_error
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.transport import make_sync_channel


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@master_option
@click.option(
    "--framework", default="", help="The task's framework (id, prefix or name) if the task id is not unique."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=0.0,
    show_default=False,
    help="Kill the command after this many seconds (default: the master's, 300; at most 3600).",
)
@click.argument("task_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def exec_task(
    ctx: click.Context,
    master: str | None,
    framework: str,
    timeout_s: float,
    task_id: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND inside running task TASK_ID's container; exit with its code."""
    _client_logging(ctx)
    argv = list(command[1:] if command[:1] == ("--",) else command)
    if not argv:
        fail("a command is needed after --")
    if timeout_s < 0:
        fail(f"--timeout: must be >= 0, got {timeout_s:g}")
    address = resolve_master(master)
    task_id, framework = ids.task_id(views.operator_stub(address), task_id, framework)
    request = op.ExecTaskRequest(task_id=task_id, framework_id=framework, argv=argv, timeout_s=timeout_s)
    sys.exit(stream(address, request))


def stream(master: str, request: op.ExecTaskRequest) -> int:
    """Print the command's output as it comes; its exit code (130 on Ctrl-C).
    Follows a non-leading master's redirect once, before any output."""
    credentials = client_credentials(master)
    address = leader_address(master)
    out = sys.stdout.buffer
    for attempt in range(2):
        channel = make_sync_channel(address, credentials)
        call = operator_pb2_grpc.OperatorStub(channel).ExecTask(request)
        try:
            for piece in call:
                if piece.output:
                    out.write(piece.output)
                    out.flush()
                if piece.done:
                    return int(piece.exit_code)
        except grpc.RpcError as e:
            leader = leader_from_error(e)
            if attempt == 0 and leader is not None and leader != address:
                address = leader
                continue
            raise
        except KeyboardInterrupt:
            call.cancel()  # the master cancels the command on its agent
            out.flush()
            sys.stderr.write("\ninterrupted: the command was killed\n")
            return exit_codes.INTERRUPTED
        finally:
            channel.close()
        break
    raise click.ClickException(f"the master ended the exec of {request.task_id!r} without an exit code")
