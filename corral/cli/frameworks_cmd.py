"""``corral framework list|run``: framework plugins found through the
entry-point group ``corral.frameworks``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from corral.cli.common import _daemon_logging, handle_errors, master_option
from corral.cli.discovery import framework_credentials, resolve_master, state_dir
from corral.cli.output import Column, Listing, key, output_option, show


@click.group("framework")
def framework() -> None:
    """Framework plugins: list the installed ones, run one."""


PLUGIN_COLUMNS = (
    Column("name", key("name")),
    Column("package", lambda p: f"{p['package']} {p['version']}".strip()),
    Column("target", key("target"), fold=True),
    Column("description", key("description")),
)


@framework.command("list")
@output_option
@handle_errors
def list_plugins(output: str | None) -> None:
    """Installed framework plugins (entry-point group corral.frameworks)."""
    from corral.frameworks.plugins import discover

    records = [
        {
            "name": info.name,
            "package": info.distribution,
            "version": info.version,
            "target": info.target,
            "description": info.description(),
        }
        for info in discover()
    ]
    show(output, Listing(PLUGIN_COLUMNS, records, title="framework plugins"))


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
