"""A click group whose subcommands are imported when they are used.

Click's documented pattern for large CLIs ("Lazily Loading Subcommands" in
its docs): the group holds a table of command name -> ``"module:attribute"``
and imports a command's module only when that command runs (or its own
``--help`` is asked for). The group's ``--help`` lists every command with its
short help from the table, without importing any of them, so ``corral
--help`` costs click and nothing else; a test keeps the table's help equal to
each command's own (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from gettext import gettext
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives and the first paragraph of its help, which
    ``--help`` of the group shortens exactly as click shortens the command's
    own help."""

    target: str  # "package.module:attribute"
    help: str


class LazyGroup(click.Group):
    """A :class:`click.Group` that imports its subcommands on first use."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy_commands:
            return command
        command = self.load(cmd_name)
        # Registered once loaded, so later lookups (and click's own help of the
        # command) find the real object.
        self.add_command(command, cmd_name)
        return command

    def load(self, cmd_name: str) -> click.Command:
        """Import the command ``cmd_name`` names in the table."""
        module_name, _, attribute = self.lazy_commands[cmd_name].target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_commands[cmd_name].target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section of ``--help``, from the table for the commands
        not imported yet (click's own layout and shortening)."""
        commands: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            loaded = super().get_command(ctx, name)
            # A stand-in that carries the table's help: click shortens it to the
            # column width the same way it shortens the real command's.
            command = loaded or click.Command(name, help=self.lazy_commands[name].help)
            if not command.hidden:
                commands.append((name, command))
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        rows = [(name, command.get_short_help_str(limit)) for name, command in commands]
        with formatter.section(gettext("Commands")):  # click's own heading
            formatter.write_dl(rows)
