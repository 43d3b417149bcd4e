"""``corral exec TASK -- CMD``: run a command inside a running task's container.

    corral exec web-0 -- cat /etc/hostname        # a unique prefix of the task id will do
    corral exec --framework FW_ID --timeout 30 sleeper-1 -- sh -c 'ps; df -h .'

The master authorizes the call (``exec_task`` on the task's owner: its
framework's principal, or an operator) and audits it; the task's agent
runs the command in the task's namespaces, cgroups and root, as the task's
user with its capabilities and seccomp filter (slave/task_exec.py). Output
(stdout and stderr together) is streamed as it comes; the exit code is the
command's (124: it overstayed --timeout; 125: the container could not be
entered). Ctrl-C kills the command and exits 130.

``-i`` feeds stdin to the command (``echo hi | corral exec -i T -- cat``);
``-t`` runs it on a pseudo-terminal the size of ours, ours in raw mode, so
keys (^C included) go to the command as typed: ``corral exec -it T -- sh``.
A terminal session's timeout is the longest allowed (3600 s) unless given.
Without ``-i`` stdin is /dev/null.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Any

import click
import grpc

from corral.cli import exit as exit_codes
from corral.cli import ids
from corral.cli.common import _client_logging, fail, handle_errors, master_option
from corral.cli.discovery import client_credentials, leader_address, resolve_master
from corral.cli.operator_client import operator_stub
from corral.detector import leader_from_error
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.transport import make_sync_channel

#: bytes of stdin a message carries (the master takes at most 64 KiB)
STDIN_PIECE = 32 * 1024
#: the timeout of a terminal session unless --timeout says (the master's maximum)
MAX_SESSION_S = 3600.0


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
@click.option("--interactive", "-i", is_flag=True, help="Feed this terminal's stdin to the command.")
@click.option("--tty", "-t", "use_tty", is_flag=True, help="Run it on a terminal (with -i: a shell).")
@click.argument("task_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def exec_task(
    ctx: click.Context,
    master: str | None,
    framework: str,
    timeout_s: float,
    interactive: bool,
    use_tty: bool,
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
    task_id, framework = ids.task_id(operator_stub(address), task_id, framework)
    rows = cols = 0
    if use_tty:
        if not sys.stdin.isatty():
            fail("-t: stdin is not a terminal (use -i alone to pipe input)")
        rows, cols = _terminal_size()
        # A session at a terminal may last: the longest the master allows, unless told.
        timeout_s = timeout_s or MAX_SESSION_S
    request = op.ExecTaskRequest(
        task_id=task_id,
        framework_id=framework,
        argv=argv,
        timeout_s=timeout_s,
        stdin=interactive,
        tty=use_tty,
        rows=rows,
        cols=cols,
    )
    sys.exit(stream(address, request))


def _terminal_size() -> tuple[int, int]:
    size = os.get_terminal_size(sys.stdin.fileno())
    return size.lines or 24, size.columns or 80  # a terminal that does not say: the classic size


def stream(master: str, request: op.ExecTaskRequest) -> int:
    """Print the command's output as it comes, feeding it stdin with
    ``request.stdin``; its exit code (130 on Ctrl-C). Follows a non-leading
    master's redirect once, before any output."""
    credentials = client_credentials(master)
    address = leader_address(master)
    for attempt in range(2):
        try:
            return _one_call(address, credentials, request)
        except grpc.RpcError as e:
            leader = leader_from_error(e)
            if attempt == 0 and leader is not None and leader != address:
                address = leader
                continue
            raise
    raise AssertionError("unreachable: the loop returns or raises")


def _one_call(address: str, credentials: Any, request: op.ExecTaskRequest) -> int:
    out = sys.stdout.buffer
    inputs: queue.Queue[op.ExecTaskInput | None] = queue.Queue()

    def requests() -> Iterator[op.ExecTaskInput]:
        yield op.ExecTaskInput(start=request)
        if not (request.stdin or request.tty):
            return
        while (item := inputs.get()) is not None:
            yield item

    def read_stdin() -> None:
        fd = sys.stdin.fileno()
        while data := os.read(fd, STDIN_PIECE):
            inputs.put(op.ExecTaskInput(stdin=data))
        inputs.put(op.ExecTaskInput(stdin_eof=True))

    channel = make_sync_channel(address, credentials)
    call = operator_pb2_grpc.OperatorStub(channel).ExecTask(requests())
    saved = None
    try:
        if request.tty:
            fd = sys.stdin.fileno()
            saved = termios.tcgetattr(fd)
            tty.setraw(fd)  # keys go to the command as typed, ^C included

            def resized(_sig: int, _frame: object) -> None:
                rows, cols = _terminal_size()
                inputs.put(op.ExecTaskInput(rows=rows, cols=cols))

            signal.signal(signal.SIGWINCH, resized)
        if request.stdin:
            threading.Thread(target=read_stdin, daemon=True, name="exec-stdin").start()
        for piece in call:
            if piece.output:
                out.write(piece.output)
                out.flush()
            if piece.done:
                return int(piece.exit_code)
    except KeyboardInterrupt:
        call.cancel()  # the master cancels the command on its agent
        out.flush()
        sys.stderr.write("\ninterrupted: the command was killed\n")
        return exit_codes.INTERRUPTED
    finally:
        inputs.put(None)
        if saved is not None:
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        channel.close()
    raise click.ClickException(f"the master ended the exec of {request.task_id!r} without an exit code")
