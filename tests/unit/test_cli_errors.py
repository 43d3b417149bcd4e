"""The CLI's error line prints a message as written (corral/cli/common.py fail).

rich would take ``[scheduler]`` for a style tag and drop it: a plugin's
``PluginError("[scheduler] table: ...")`` printed as ``error:  table: ...``.
"""

from __future__ import annotations

import pytest

from corral.cli import exit as exit_codes
from corral.cli.common import fail, handle_errors
from corral.frameworks.plugins import PluginError


@pytest.mark.parametrize(
    "message",
    [
        "[scheduler] table: count must be an integer",
        "config: unknown table(s) ['nope']; allowed: ['framework', 'scheduler']",
        "[bold]not bold[/bold] and [red]not red[/]",
        "a trailing backslash \\",
    ],
)
def test_fail_prints_brackets_literally(message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        fail(message, exit_codes.USAGE)
    assert exited.value.code == exit_codes.USAGE
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_plugin_error_reaches_the_terminal_whole(capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def command() -> None:
        raise PluginError("[scheduler] table: `count` is missing")

    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code == exit_codes.FAILED
    assert capsys.readouterr().err == "error: [scheduler] table: `count` is missing\n"
