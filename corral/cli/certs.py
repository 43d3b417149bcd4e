"""``corral certs init|issue|show``: a CA and the certificates of a cluster's
masters, agents, frameworks and operators (corral/pki.py; docs/operator.md,
"Security")."""

from __future__ import annotations

from pathlib import Path

import click

from corral.cli.common import _client_logging, console, fail, handle_errors


@click.group("certs")
def certs() -> None:
    """Certificates for mutual TLS: make a CA, issue certificates, show one."""


@certs.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", default="corral", show_default=True, help="The CA's name (its subject).")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(min=1))
@click.pass_context
@handle_errors
def init(ctx: click.Context, directory: Path, name: str, days: int) -> None:
    """Make a CA in DIRECTORY (ca.pem, and ca-key.pem: keep it there, private)."""
    _client_logging(ctx)
    from corral.pki import CertificateAuthority

    ca = CertificateAuthority.init(directory, name=name, days=days)
    console.print(
        f"CA {name!r} in {ca.directory}: {ca.cert_file} (give it to every process)", highlight=False
    )


@certs.command("issue")
@click.option(
    "--ca",
    "ca_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The CA's directory (from `corral certs init`).",
)
@click.argument("principal", metavar="KIND:NAME")
@click.option("--dns", multiple=True, metavar="NAME", help="A DNS name the holder serves under (repeatable).")
@click.option("--ip", multiple=True, metavar="ADDR", help="An IP address it serves under (repeatable).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write the pair (default: the CA's directory).",
)
@click.pass_context
@handle_errors
def issue(
    ctx: click.Context,
    ca_dir: Path,
    principal: str,
    dns: tuple[str, ...],
    ip: tuple[str, ...],
    days: int,
    out: Path | None,
) -> None:
    """Issue a certificate for KIND:NAME (agent, framework, operator or master).

    \b
    corral certs issue --ca /etc/corral/pki master:m1 --dns m1.example --ip 10.0.0.5
    corral certs issue --ca /etc/corral/pki agent:node-7
    corral certs issue --ca /etc/corral/pki operator:alice --out ~/.corral/tls
    """
    from corral.identity import Principal
    from corral.pki import CertificateAuthority

    _client_logging(ctx)
    try:
        p = Principal.parse(principal)
    except ValueError as e:
        fail(str(e))
    ca = CertificateAuthority.load(ca_dir)
    issued = ca.issue(p, dns=dns, ips=ip, days=days, out=out)
    console.print(f"{issued.principal}: {issued.cert}, key {issued.key}", highlight=False)


@certs.command("show")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@handle_errors
def show(file: Path) -> None:
    """Subject, principal, names, usages and validity of a certificate."""
    from corral.pki import describe

    info = describe(file)
    rows = [
        ("subject", info.subject),
        ("principal", info.principal or ("(a CA)" if info.is_ca else "(none: the CN is not KIND:NAME)")),
        ("issuer", info.issuer),
        ("DNS names", ", ".join(info.dns) or "-"),
        ("IP addresses", ", ".join(info.ips) or "-"),
        ("usages", ", ".join(info.usages) or "-"),
        ("valid from", f"{info.not_before:%Y-%m-%d %H:%M} UTC"),
        (
            "valid until",
            f"{info.not_after:%Y-%m-%d %H:%M} UTC" + ("  [bold red]EXPIRED[/]" if info.expired else ""),
        ),
        ("serial", f"{info.serial:x}"),
    ]
    for label, value in rows:
        console.print(f"{label + ':':14} {value}", highlight=False)
