"""The exit statuses of ``corral``, in one place: every command maps its
failures through here (``common.handle_errors``), so a script can tell them
apart without reading the message.

    0  success
    1  the work failed: a job ended FAILED, a task failed (``corral run``
       passes the task's own status through instead, see docs/cli.md)
    2  usage: a bad flag, argument or value (click's own usage errors are 2)
    3  cannot reach the cluster: no cluster found, connection refused, no
       leader elected, a deadline passed
    4  not found or refused: an unknown or ambiguous id, NOT_FOUND,
       PERMISSION_DENIED, FAILED_PRECONDITION, ALREADY_EXISTS, ...

The split follows what a caller does next: 1 look at the work, 2 fix the
command line, 3 retry later or fix the address, 4 fix the request or the
policy. (Slurm and kubectl use 1 for most of these; Docker's ``run`` keeps a
band, 125-127, for its own errors. We keep the low band and print a line on
stderr instead, which ``corral run`` never does for a task's own status.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
REFUSED = 4
INTERRUPTED = 130  # the shell's 128 + SIGINT

# By status name, so that importing this module (every command does) does not
# import grpc.
_GRPC = {
    "OK": OK,
    "INVALID_ARGUMENT": USAGE,
    "OUT_OF_RANGE": USAGE,
    "UNAVAILABLE": UNREACHABLE,
    "DEADLINE_EXCEEDED": UNREACHABLE,
    "NOT_FOUND": REFUSED,
    "PERMISSION_DENIED": REFUSED,
    "UNAUTHENTICATED": REFUSED,
    "FAILED_PRECONDITION": REFUSED,
    "ALREADY_EXISTS": REFUSED,
    "RESOURCE_EXHAUSTED": REFUSED,  # a rate limit or a size cap: the call was refused
    "ABORTED": REFUSED,
    "UNIMPLEMENTED": REFUSED,  # an older master: it refuses the call
    "CANCELLED": FAILED,
    "UNKNOWN": FAILED,
    "INTERNAL": FAILED,
    "DATA_LOSS": FAILED,
}


def from_grpc(code: grpc.StatusCode | None) -> int:
    """The exit status for a call that ended with ``code`` (None: no status, 1)."""
    return FAILED if code is None else _GRPC.get(code.name, FAILED)


def from_grpc_name(name: str) -> int:
    """The same for a status given by name (``CallError.code``)."""
    return _GRPC.get(name, FAILED)


def from_http(status: int | None) -> int:
    """The exit status for a framework HTTP API's answer (None: not reached)."""
    if status is None:
        return UNREACHABLE
    if status in (400, 413, 414, 422):
        return USAGE
    if status in (502, 503, 504):
        return UNREACHABLE
    if 400 <= status < 500:
        return REFUSED
    return FAILED
