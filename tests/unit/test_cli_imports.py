"""What the ``corral`` entry point imports, and that its lazy command table
(corral/cli/main.py) tells the truth about the commands.

``corral --help`` must not pay for grpc, protobuf, asyncio, the agent's or the
master's code, the frameworks, kazoo or rich: each command module is imported
only when that command runs (corral/cli/lazy.py). These tests run the entry
point in a fresh interpreter and read its ``sys.modules``; they assert what
is imported, never how long it takes (bench/cli_startup.py measures that).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from corral.cli.main import COMMANDS, cli

#: never imported by ``corral --help``, ``--version`` or importing the entry point
HEAVY = (
    "grpc",
    "google.protobuf",
    "asyncio",
    "kazoo",
    "rich",
    "structlog",
    "yaml",
    "cryptography",
    "corral.proto",
    "corral.slave",
    "corral.master",
    "corral.frameworks",
    "corral.cli.local",
)
#: what no client command (one that only calls a master) imports, even while it
#: runs: agent and master code, and kazoo (only a zk:// master needs it, and
#: then corral.zk_detector imports it)
AGENT_AND_MASTER = ("corral.slave", "corral.master", "corral.cli.local", "kazoo")

# Runs the entry point as the `corral` script does, then writes sys.modules
# to the file named by the first argument.
PROBE = """
import json, sys
out, argv = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["corral", *argv]
if argv != ["--import-only"]:
    from corral.cli.main import main
    try:
        main()
    except SystemExit:
        pass
else:
    import corral.cli.main
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def _modules_after(tmp_path: Path, argv: list[str]) -> list[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.exists(), f"the probe did not finish: {done.stderr[-2000:]}"
    modules: list[str] = json.loads(out.read_text())
    return modules


def _under(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


@pytest.mark.parametrize(
    "argv",
    [["--import-only"], ["--help"], ["-h"], ["--version"], []],
    ids=["import", "help", "h", "version", "no-args"],
)
def test_the_entry_point_imports_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    modules = _modules_after(tmp_path, argv)
    assert "corral.cli.main" in modules  # the probe did run the CLI
    assert _under(modules, HEAVY) == []
    # no command module either: the table answers --help
    assert _under(modules, ("corral.cli",)) == ["corral.cli", "corral.cli.lazy", "corral.cli.main"]


@pytest.mark.parametrize("command", ["run", "kill", "tasks", "local", "agent"])
def test_a_commands_help_imports_no_transport_or_agent_code(tmp_path: Path, command: str) -> None:
    modules = _modules_after(tmp_path, [command, "--help"])
    assert COMMANDS[command].target.partition(":")[0] in modules  # its own module, only
    assert _under(modules, ("grpc", "google.protobuf", "kazoo", "corral.slave", "corral.master")) == []
    if command == "run":
        assert _under(modules, ("asyncio", "corral.frameworks", "rich", "structlog", "cryptography")) == []


def test_client_commands_import_no_agent_or_master_code(tmp_path: Path) -> None:
    """What ``corral run``, ``tasks``, ``submit``, ``explain``, ``exec``... load
    when they run (their deferred imports included) holds no agent or master
    code and no kazoo: a client of one master needs only the protocol, the SDK
    and the views."""
    client_modules = [
        "corral.cli.run_cmd",
        "corral.cli.jobs",
        "corral.cli.operator_client",
        "corral.cli.views",
        "corral.cli.views_cmd",
        "corral.cli.top",
        "corral.cli.batch",
        "corral.cli.service",
        "corral.cli.allocation",
        "corral.cli.exec_cmd",
        "corral.cli.acl",
        "corral.frameworks.batch.spec",
        "corral.frameworks.agents",
        "corral.frameworks.fit_change",
        "corral.pki",
    ]
    out = tmp_path / "modules.json"
    code = f"import json, sys, importlib\nfor m in {client_modules!r}: importlib.import_module(m)\n"
    code += f"json.dump(sorted(sys.modules), open({str(out)!r}, 'w'))\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    modules = json.loads(out.read_text())
    assert set(client_modules) <= set(modules)
    assert _under(modules, AGENT_AND_MASTER) == []


def _listed_commands(help_text: str) -> list[str]:
    section = help_text.split("Commands:\n", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert _listed_commands(result.output) == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_matches_each_command(name: str) -> None:
    """The table's module:attribute is a click command, and the short help
    ``corral --help`` shows from the table is what the command itself gives
    at any width."""
    assert isinstance(cli, click.Group)
    command = cli.load(name)  # type: ignore[attr-defined]
    assert isinstance(command, click.Command)
    stand_in = click.Command(name, help=COMMANDS[name].help)
    for limit in (10, 30, 45, 60, 80, 120, 400):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), limit


def test_help_is_the_same_before_and_after_the_commands_are_loaded() -> None:
    """The listing made from the table equals click's own listing of the
    loaded commands (on a fresh group, so this test's loads stay its own)."""
    from corral.cli.lazy import LazyGroup

    fresh = LazyGroup("corral", lazy_commands=COMMANDS, help=cli.help)
    from_table = CliRunner().invoke(fresh, ["--help"], terminal_width=90).output
    loaded = click.Group("corral", help=cli.help, commands={n: fresh.load(n) for n in COMMANDS})
    from_commands = CliRunner().invoke(loaded, ["--help"], terminal_width=90).output
    assert from_table == from_commands


def test_an_unknown_command_is_refused_as_before() -> None:
    result = CliRunner().invoke(cli, ["nosuch"])
    assert result.exit_code == 2
    assert "No such command 'nosuch'" in result.output
