"""The CLI's TLS options and the checks ``corral master``/``agent`` make before
serving or dialling without TLS (docs/operator.md, "Security")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from corral.cli.discovery import TLS_META_KEY

if TYPE_CHECKING:
    from corral.transport import Credentials

F = TypeVar("F", bound=Callable[..., Any])


def _tls_slot(index: int) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        slots = ctx.meta.setdefault(TLS_META_KEY, ["", "", ""])
        slots[index] = value or ""

    return store


#: (option, environment variable, help) of the three TLS files, in slot order
_TLS_OPTIONS = (
    ("--tls-ca", "CORRAL_TLS_CA", "The CA certificate (PEM) that signed the cluster's certificates."),
    ("--tls-cert", "CORRAL_TLS_CERT", "This process's certificate (PEM, CN KIND:NAME)."),
    ("--tls-key", "CORRAL_TLS_KEY", "Its private key (PEM)."),
)


def tls_options(fn: F) -> F:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key`` (or ``$CORRAL_TLS_CA/CERT/KEY``):
    the CA and this process's certificate and key (read by
    corral.cli.discovery.flag_tls_files)."""
    # Decorators apply bottom-up: add them last first so --help lists ca, cert, key.
    for index in reversed(range(len(_TLS_OPTIONS))):
        name, env, what = _TLS_OPTIONS[index]
        fn = click.option(
            name,
            envvar=env,
            default=None,
            metavar="FILE",
            expose_value=False,
            callback=_tls_slot(index),
            help=f"{what} [env {env}]",
        )(fn)
    return fn


insecure_option = click.option(
    "--insecure",
    is_flag=True,
    help="Allow plaintext (no TLS) on a non-loopback address: anyone who can reach it is trusted.",
)


def daemon_credentials() -> Credentials | None:
    """The master's or agent's own certificate from --tls-* / $CORRAL_TLS_*; None: plaintext."""
    from corral.cli.discovery import flag_tls_files

    files = flag_tls_files()
    if files is None:
        return None
    from corral.pki import load_credentials

    return load_credentials(*files)


def master_on_loopback(master: str) -> bool:
    """A HOST:PORT on loopback, or a zk:// URL whose ZooKeeper servers all are
    (masters then advertise themselves on this host too, as in tests)."""
    from corral.transport import is_loopback
    from corral.zk import is_zk_url, parse_zk_url

    if not is_zk_url(master):
        return is_loopback(master)
    return all(is_loopback(h) for h in parse_zk_url(master).hosts.split(","))
