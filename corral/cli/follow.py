"""Following a batch job until it ends: ``corral job ID --follow`` and
``corral submit --wait`` against the batch service.

Each change of a task (a new attempt, a state, an exit) is printed as one
line as it is seen, then the job's table and a summary; the exit code is
0 if the job succeeded, 1 if not. The job lives in the batch service, not
in this process, so Ctrl-C only detaches: the job runs on, and the message
says how to follow it again or cancel it (exit 130).

The poll and its diff are apart: :func:`task_changes` is a pure function of
two views of the job, :func:`follow` the loop around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from corral.cli import exit as exit_codes
from corral.cli.common import console, err_console

#: the exit code after Ctrl-C detached (as a shell reports SIGINT)
EXIT_DETACHED = exit_codes.INTERRUPTED
JOB_FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

TaskKey = tuple[str, int]


def _key(task: Mapping[str, Any]) -> TaskKey:
    return (str(task["group"]), int(task["index"]))


def _seen(task: Mapping[str, Any]) -> tuple[str, int, str]:
    """What a line is printed for when it changes: state, attempts, last attempt's state."""
    last = task["history"][-1] if task["history"] else None
    return (str(task["state"]), int(task["attempts"]), str(last["state"]) if last else "")


def describe(task: Mapping[str, Any]) -> str:
    """One line about a task as it is now."""
    name = f"{task['group']}[{task['index']}]"
    last = task["history"][-1] if task["history"] else None
    line = f"{name} {task['state']}"
    if last is not None:
        line += f" (attempt {task['attempts']}, {last['task_id']}"
        where = last.get("hostname") or last.get("agent_id")
        if where:
            line += f" on {where}"
        line += ")"
        if last.get("exit_code") is not None:
            line += f" exit {last['exit_code']}"
        elif last.get("signal"):
            line += f" signal {last['signal']}"
    if task["state"] != "FINISHED" and task.get("message"):
        line += f": {task['message']}"
    return line


def task_changes(
    before: Mapping[TaskKey, tuple[str, int, str]], job: Mapping[str, Any]
) -> tuple[list[str], dict[TaskKey, tuple[str, int, str]]]:
    """Lines for the tasks of ``job`` that changed since ``before``, and the new ``before``.

    >>> t = {"group": "sq", "index": 0, "state": "RUNNING", "attempts": 1, "message": "",
    ...      "history": [{"task_id": "j.sq.0", "state": "RUNNING", "hostname": "h", "exit_code": None}]}
    >>> lines, seen = task_changes({}, {"tasks": [t]})
    >>> lines
    ['sq[0] RUNNING (attempt 1, j.sq.0 on h)']
    >>> task_changes(seen, {"tasks": [t]})[0]
    []
    """
    now = {_key(t): _seen(t) for t in job.get("tasks", [])}
    lines = [describe(t) for t in job.get("tasks", []) if before.get(_key(t)) != now[_key(t)]]
    return lines, now


def follow(
    fetch: Callable[[], dict[str, Any]],
    job_id: str,
    finish: Callable[[dict[str, Any]], int],
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print the job's task changes until it ends, then ``finish(job)``'s
    result; on Ctrl-C detach (the job runs on) and return EXIT_DETACHED."""
    seen: dict[TaskKey, tuple[str, int, str]] = {}
    state = ""
    try:
        while True:
            job = fetch()
            lines, seen = task_changes(seen, job)
            for line in lines:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
            if job["state"] != state:
                state = job["state"]
                console.print(f"job {job_id} {state.lower()}", highlight=False, markup=False)
            if state in JOB_FINAL:
                return finish(job)
            deadline = clock() + poll_s
            while clock() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - clock())))
    except KeyboardInterrupt:
        err_console.print(
            f"detached: job {job_id} keeps running in the batch service; follow it again with "
            f"`corral job {job_id} --follow`, stop it with `corral cancel {job_id}`",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_DETACHED
