"""`corral master` refuses bad limit flags with a sentence before serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.main import cli


@pytest.mark.parametrize(
    ("content", "flags", "expected"),
    [
        ("framework:a 5\n", [], "line 1: expected PRINCIPAL QPS BURST"),
        ("batch 5 10\n", [], "principal 'batch': expected KIND:NAME"),
        (None, ["--framework-qps", "-1"], "qps must be a finite number > 0"),
        (None, ["--subscribe-qps", "1", "--subscribe-burst", "0"], "burst must be"),
        (None, ["--max-tasks-per-accept", "0"], "--max-tasks-per-accept: must be at least 1"),
    ],
)
def test_bad_limits_are_refused(tmp_path: Path, content: str | None, flags: list[str], expected: str) -> None:
    args = ["master", "--listen", "127.0.0.1:0", *flags]
    if content is not None:
        path = tmp_path / "limits"
        path.write_text(content)
        args += ["--rate-limits", str(path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_unreadable_limits_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["master", "--listen", "127.0.0.1:0", "--rate-limits", str(tmp_path / "missing")]
    )
    assert result.exit_code == 2
    assert "cannot read" in result.output
    assert "missing" in result.output
