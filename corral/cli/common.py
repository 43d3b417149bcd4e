"""What every ``corral`` command shares: the consoles, the error handling
that turns failures into one sentence and an exit code, ``--master``, and
logging set-up. Its own module so that command modules need not import the
command group (``main.py``) back."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from corral.cli import exit as exit_codes
from corral.cli.discovery import CLUSTER_META_KEY
from corral.cli.security import tls_options
from corral.errors import (
    ApiError,
    CallError,
    CertificateError,
    ClusterNotFoundError,
    ConnectTimeoutError,
    CorralError,
    IdLookupError,
    NotConnectedError,
    SubscribeError,
)

if TYPE_CHECKING:
    import grpc
    from rich.console import Console

    # Made on first use (see __getattr__): rich costs ``corral --help`` tens of ms.
    console: Console
    err_console: Console

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    if stderr:
        return Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    # Piped output gets wide tables rather than words folded at 80 columns.
    return Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200")))


def __getattr__(name: str) -> Any:
    """``console`` and ``err_console``, made when a command first prints (PEP 562)."""
    if name == "console":
        return _console(stderr=False)
    if name == "err_console":
        return _console(stderr=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ExitPlan:
    """Whether the command that ran declared it leaves nothing to tear down
    (see :func:`nothing_to_tear_down`)."""

    quick = False


_exit_plan = _ExitPlan()


def nothing_to_tear_down() -> None:
    """Declare that the running command has closed and flushed all it made
    (channels, files, child processes), so that the ``corral`` process may end
    without the interpreter's teardown of grpc, protobuf and some 400
    modules, which costs ``corral run`` tens of milliseconds
    (corral.cli.main.main does it; a test invoking the group in-process never
    exits early)."""
    _exit_plan.quick = True


def quick_exit_requested() -> bool:
    return _exit_plan.quick


def fail(message: str, code: int = exit_codes.USAGE) -> NoReturn:
    """One sentence on stderr and exit ``code`` (corral/cli/exit.py). The
    message is printed as written: brackets in it (``[scheduler] table``, a
    task's own text) are not taken for rich markup."""
    from rich.text import Text

    _console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    sys.exit(code)


def _rpc_failure(e: grpc.RpcError) -> NoReturn:
    import grpc

    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    status = exit_codes.from_grpc(code)
    if code == grpc.StatusCode.UNAVAILABLE:
        # A refused TLS handshake looks like a closed socket from here.
        hint = (
            " (if it serves mutual TLS: give --tls-ca, --tls-cert and --tls-key of an operator "
            "certificate from its CA, or set CORRAL_TLS_CA/CERT/KEY)"
            if "Socket closed" in (details or "") or "handshake" in (details or "").lower()
            else ""
        )
        fail(f"cannot reach the master: {details}{hint}", status)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        fail(f"cannot reach the master: no answer in time ({details})", status)
    fail(f"{code.name if code else 'error'}: {details}", status)


def handle_errors(fn: F) -> F:
    """Turn expected failures into a sentence and an exit status (corral/cli/exit.py),
    not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClusterNotFoundError as e:
            fail(str(e), exit_codes.UNREACHABLE)
        except IdLookupError as e:
            fail(str(e), exit_codes.REFUSED)
        except (CertificateError, ValueError) as e:
            # ValueError covers JobSpecError and ResourceError, named here
            # without importing the batch framework.
            fail(str(e), exit_codes.USAGE)
        except ApiError as e:
            fail(str(e), exit_codes.from_http(e.status))
        except CallError as e:
            fail(str(e), exit_codes.from_grpc_name(e.code))
        except (NotConnectedError, ConnectTimeoutError) as e:
            fail(str(e), exit_codes.UNREACHABLE)
        except SubscribeError as e:
            fail(str(e), exit_codes.REFUSED)
        except CorralError as e:
            fail(str(e), exit_codes.FAILED)
        except KeyboardInterrupt:
            fail("interrupted", exit_codes.INTERRUPTED)
        except Exception as e:
            # A gRPC failure, if the command made calls (then grpc is loaded
            # and importing it costs nothing); anything else is a bug and
            # keeps its traceback.
            import grpc

            if isinstance(e, grpc.RpcError):
                _rpc_failure(e)
            raise

    return wrapper  # type: ignore[return-value]


def master_option(fn: F) -> F:
    """``--master``, ``--cluster NAME`` (a `corral cluster up` cluster; read by
    resolve_master) and the TLS options."""
    fn = tls_options(fn)
    fn = click.option(
        "--cluster",
        default=None,
        metavar="NAME",
        expose_value=False,
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(CLUSTER_META_KEY, value),
        help="Talk to this `corral cluster up` cluster.",
    )(fn)
    return click.option(
        "--master",
        "-m",
        envvar="CORRAL_MASTER",
        default=None,
        metavar="HOST:PORT",
        help="Master to talk to (default: $CORRAL_MASTER, then the `corral local` cluster).",
    )(fn)


def _daemon_logging(ctx: click.Context) -> None:
    from corral import logging as corral_logging

    corral_logging.configure(ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or "info")


def _client_logging(ctx: click.Context) -> None:
    from corral import logging as corral_logging

    corral_logging.configure(ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or "warning")


def _allowed_host_paths(spec: str) -> tuple[Path, ...]:
    """``--allowed-host-paths``: comma-separated absolute paths."""
    paths = tuple(Path(p.strip()) for p in spec.split(",") if p.strip())
    for p in paths:
        if not p.is_absolute():
            fail(f"--allowed-host-paths: {str(p)!r} is not an absolute path")
    return paths
