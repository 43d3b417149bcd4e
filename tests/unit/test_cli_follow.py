"""Following a batch job (corral/cli/follow.py): which task changes make a
line, and Ctrl-C detaching instead of failing."""

from __future__ import annotations

from typing import Any

import pytest

from corral.cli.follow import EXIT_DETACHED, follow, task_changes


def _task(state: str, attempts: int = 1, last: str = "", exit_code: int | None = None) -> dict[str, Any]:
    history = [
        {"task_id": f"j.sq.0#{attempts}", "state": last or state, "hostname": "h1", "exit_code": exit_code}
    ]
    return {
        "group": "sq",
        "index": 0,
        "state": state,
        "attempts": attempts,
        "message": "",
        "history": history,
    }


def test_a_line_per_change_and_none_when_nothing_changed() -> None:
    lines, seen = task_changes({}, {"tasks": [_task("RUNNING")]})
    assert lines == ["sq[0] RUNNING (attempt 1, j.sq.0#1 on h1)"]
    assert task_changes(seen, {"tasks": [_task("RUNNING")]})[0] == []
    # A retry is a change even when the task's state reads the same.
    lines, seen = task_changes(seen, {"tasks": [_task("RUNNING", attempts=2)]})
    assert lines == ["sq[0] RUNNING (attempt 2, j.sq.0#2 on h1)"]
    lines, _ = task_changes(seen, {"tasks": [_task("FINISHED", attempts=2, exit_code=0)]})
    assert lines == ["sq[0] FINISHED (attempt 2, j.sq.0#2 on h1) exit 0"]


def test_follow_ends_with_the_finish_code_and_ctrl_c_detaches(capsys: pytest.CaptureFixture[str]) -> None:
    views = iter(
        [
            {"state": "RUNNING", "tasks": [_task("RUNNING")]},
            {"state": "FAILED", "tasks": [_task("FAILED", exit_code=3)]},
        ]
    )
    assert follow(lambda: next(views), "j", lambda job: 1 if job["state"] == "FAILED" else 0, poll_s=0) == 1
    out = capsys.readouterr().out
    assert "sq[0] FAILED (attempt 1, j.sq.0#1 on h1) exit 3" in out
    assert "job j failed" in out

    def interrupted() -> dict[str, Any]:
        raise KeyboardInterrupt

    assert follow(interrupted, "j", lambda job: 0) == EXIT_DETACHED
    err = capsys.readouterr().err
    assert "detached: job j keeps running" in err
    assert "`corral job j --follow`" in err
