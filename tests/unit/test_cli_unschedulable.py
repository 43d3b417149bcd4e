"""The CLI's progress line and jobs table show an unschedulable group."""

from __future__ import annotations

import io

from rich.console import Console

from corral.cli.batch import JobProgress

WHY = "no agent can ever fit this task: cpus 4 asked, the largest agent has 1"


def test_the_progress_line_says_which_group_is_unschedulable_and_why() -> None:
    out = io.StringIO()
    with JobProgress(Console(file=out, force_terminal=False, width=300)) as progress:
        progress.show({"total": 2, "counts": {"PENDING": 2}, "unschedulable": {"train": WHY}})
    assert (
        out.getvalue().splitlines()[0]
        == f"0/2 done, pending 2; train unschedulable: {WHY} (waiting for agents)"
    )


def test_without_a_verdict_the_line_is_as_before() -> None:
    out = io.StringIO()
    with JobProgress(Console(file=out, force_terminal=False, width=300)) as progress:
        progress.show({"total": 2, "counts": {"PENDING": 1, "RUNNING": 1}})
    assert out.getvalue().splitlines()[0] == "0/2 done, running 1, pending 1"
