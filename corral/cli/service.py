"""``corral service deploy|list|status|scale|rm``: long-running services.

They talk to the service framework's API: the one ``corral local`` starts,
or ``corral framework run service`` (found through
``$CORRAL_HOME/service.json``), or ``--service HOST:PORT``.
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from corral.cli import exit as exit_codes
from corral.cli.common import _client_logging, console, fail, handle_errors, master_option
from corral.cli.output import Column, Listing, effective, key, output_option, show
from corral.frameworks.service.spec import load_service

STYLE = {"RUNNING": "green", "DEPLOYING": "cyan", "ROLLING_BACK": "yellow", "DELETING": "yellow"}

service_option = click.option(
    "--service",
    "address",
    envvar="CORRAL_SERVICE",
    default=None,
    metavar="HOST:PORT",
    help="The service framework's API (default: $CORRAL_SERVICE, then $CORRAL_HOME/service.json).",
)


def _client(master_flag: str | None, address: str | None) -> Any:
    from corral.cli.discovery import api_credentials
    from corral.frameworks.service.api import ServiceClient
    from corral.frameworks.service.service import find_service

    found = find_service()
    if address:
        same = found is not None and found.get("address") == address
        return ServiceClient(address, credentials=api_credentials(found if same else None))
    if found is None or (master_flag and master_flag.removeprefix("grpc://") != found.get("master")):
        fail(
            "no service framework found: start one with `corral local` or `corral framework run service`",
            exit_codes.UNREACHABLE,
        )
    assert found is not None
    return ServiceClient(str(found["address"]), credentials=api_credentials(found))


@click.group()
def service() -> None:
    """Long-running services: keep N healthy instances, roll out new versions."""


@service.command()
@master_option
@service_option
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--wait", "-w", is_flag=True, help="Wait until it is healthy (exit 0) or has failed (exit 1).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="With --wait.",
)
@click.pass_context
@handle_errors
def deploy(
    ctx: click.Context, master: str | None, address: str | None, spec_file: Path, wait: bool, timeout_s: float
) -> None:
    """Create a service from a TOML file, or roll out a new version of it.

    With --wait, follow the deployment: exit 0 once the new version runs
    with every instance healthy (for 3 s in a row), 1 if it was rolled back, failed with
    nothing to roll back to, or is not healthy after --timeout; Ctrl-C
    detaches (130) and the deployment goes on.
    """
    _client_logging(ctx)
    spec, _ = load_service(spec_file)  # raises ServiceSpecError naming the file, line and key
    data = tomllib.loads(spec_file.read_text())
    client = _client(master, address)
    answer = client.deploy(data, spec_file.stem)
    console.print(
        f"service [bold]{answer['name']}[/] v{answer['version']}: {answer['result']}", highlight=False
    )
    if wait:
        from corral.cli import service_wait

        name, version = str(answer["name"]), int(answer["version"])
        limit = spec.update.rollback_after_failures
        sys.exit(
            service_wait.wait(
                lambda: client.service(name),
                name,
                version,
                limit,
                timeout_s,
                healthy_for_s=service_wait.HEALTHY_FOR_S,
            )
        )


SERVICE_COLUMNS = (
    Column("name", key("name")),
    Column("state", lambda s: Text(s["state"], style=STYLE.get(s["state"], ""))),
    Column(
        "version",
        lambda s: (
            f"v{s['version']}"
            + (f" (stable v{s['stable_version']})" if s["stable_version"] != s["version"] else "")
        ),
    ),
    Column("healthy", lambda s: f"{s['healthy']}/{s['instances']}"),
    Column("instances", key("instances"), right=True),
    Column("message", lambda s: _message(s), fold=True),  # noqa: PLW0108 (defined below)
    Column("running", key("running"), wide=True, right=True),
    Column("failures", key("failures"), wide=True, right=True),
)
INSTANCE_COLUMNS = (
    Column("id", key("id"), fold=True),
    Column("version", lambda i: f"v{i['version']}"),
    Column("state", key("state")),
    Column("healthy", lambda i: "" if i["healthy"] is None else ("yes" if i["healthy"] else "no")),
    Column("agent", key("agent_id"), fold=True),
    Column("hostname", key("hostname")),
    Column("ports", key("ports")),
    Column("age", lambda i: f"{(i['ended_at'] or time.time()) - i['launched_at']:.0f}s"),
    Column("message", key("message"), fold=True),
)


@service.command(name="list")
@master_option
@service_option
@output_option
@click.pass_context
@handle_errors
def list_services(ctx: click.Context, master: str | None, address: str | None, output: str | None) -> None:
    """Every service: state, version, healthy/instances."""
    _client_logging(ctx)
    show(output, Listing(SERVICE_COLUMNS, _client(master, address).services(), "services", "no services"))


def _message(s: dict[str, Any]) -> str:
    text = str(s["message"])
    if s.get("waiting"):
        text = f"{text}; {s.get('waiting_count')} waiting: {s['waiting']}"
    if s.get("unschedulable"):
        text = f"{text}; unschedulable: {s['unschedulable']} (waiting for agents)"
    return text


@service.command()
@master_option
@service_option
@click.argument("name")
@output_option
@click.pass_context
@handle_errors
def status(
    ctx: click.Context, master: str | None, address: str | None, name: str, output: str | None
) -> None:
    """One service and its recent instances."""
    _client_logging(ctx)
    s = _client(master, address).service(name)
    if effective(output) in ("json", "yaml"):
        show(output, data=s)
        return
    console.print(
        f"[bold]{s['name']}[/] {s['state']} v{s['version']} (stable v{s['stable_version']}): "
        f"{s['healthy']}/{s['instances']} healthy, at least {s['min_healthy']} during updates; "
        f"{s['message']}"
        + (f"; waiting: {s['waiting']}" if s.get("waiting") else "")
        + (f"; unschedulable: {s['unschedulable']}" if s.get("unschedulable") else ""),
        highlight=False,
    )
    show(output, Listing(INSTANCE_COLUMNS, s["instances_detail"], "instances"), data=s)


@service.command()
@master_option
@service_option
@click.argument("name")
@click.argument("instances", type=click.IntRange(min=0, max=1000))
@click.pass_context
@handle_errors
def scale(ctx: click.Context, master: str | None, address: str | None, name: str, instances: int) -> None:
    """Keep INSTANCES instances of a service."""
    _client_logging(ctx)
    _client(master, address).scale(name, instances)
    console.print(f"service [bold]{name}[/] scaled to {instances}", highlight=False)


@service.command(name="rm")
@master_option
@service_option
@click.argument("name")
@click.pass_context
@handle_errors
def remove(ctx: click.Context, master: str | None, address: str | None, name: str) -> None:
    """Stop every instance of a service and forget it."""
    _client_logging(ctx)
    answer = _client(master, address).remove(name)
    console.print(f"service [bold]{name}[/]: {answer['result']}", highlight=False)


__all__ = ["service"]
