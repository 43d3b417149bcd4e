"""``corral framework list|run``: framework plugins found through the
entry-point group ``corral.frameworks``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.table import Table

from corral.cli.common import _daemon_logging, console, handle_errors, master_option
from corral.cli.discovery import framework_credentials, resolve_master, state_dir


@click.group("framework")
def framework() -> None:
    """Framework plugins: list the installed ones, run one."""


@framework.command("list")
@handle_errors
def list_plugins() -> None:
    """Installed framework plugins (entry-point group corral.frameworks)."""
    from corral.frameworks.plugins import discover

    table = Table(title="framework plugins", title_justify="left")
    for col in ("name", "package", "target", "description"):
        table.add_column(col)
    for info in discover():
        table.add_row(
            info.name, f"{info.distribution} {info.version}".strip(), info.target, info.description()
        )
    console.print(table)


@framework.command("run")
@master_option
@click.argument("name")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="A TOML file.")
@click.option(
    "--acls",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The master's ACL policy: who may use the framework's HTTP API (use_api). Default: operators.",
)
@click.pass_context
@handle_errors
def run_plugin(
    ctx: click.Context, master: str | None, name: str, config_file: Path | None, acls: Path | None
) -> None:
    """Run the framework plugin NAME against the cluster until it ends (or Ctrl-C)."""
    from corral.frameworks.plugins import PluginContext, find, load_config

    _daemon_logging(ctx)
    plugin = find(name).load()
    config = load_config(config_file)
    address = resolve_master(master)
    context = PluginContext(
        name=name,
        master=address,
        config=config,
        state_dir=state_dir() / "frameworks" / name,
        credentials=framework_credentials(address, name),
        acls=None if acls is None else str(acls),
    )
    sys.exit(asyncio.run(plugin.run(context)) or 0)
