"""The scheduling part of a job spec: retries with backoff, a timeout,
constraints on agent attributes, one task per host, and dependencies between
task groups (a DAG). Kept apart from ``spec.py`` so the two grow independently.

    [[tasks]]
    name = "train"
    after = ["prepare"]              # starts once every "prepare" task finished
    retries = 3                      # re-run a failed task up to 3 more times
    backoff_s = 1.0                  # waits 1, 2, 4 ... s (at most backoff_max_s) between tries
    timeout_s = 600                  # killed (and counted as a failure) after 10 min
    constraints = ["rack == r1", "zone in [a, b]"]
    unique_host = true               # at most one task of this group per agent at a time
    max_running = 50                 # at most 50 tasks of this group launched at once
                                     # (Slurm's --array=0-999%50)
    wait_for_agents = true           # a task no agent can ever fit waits for agents that may
                                     # join (default: it fails at once, saying why)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.frameworks.constraints import Constraint, parse_constraint

#: the keys of a [[tasks]] table this module reads
POLICY_KEYS = frozenset(
    {
        "after",
        "retries",
        "backoff_s",
        "backoff_max_s",
        "timeout_s",
        "constraints",
        "unique_host",
        "wait_for_agents",
        "max_running",
    }
)
MAX_RETRIES = 100


@dataclass(frozen=True)
class Policy:
    """How a task group is scheduled (the defaults: run once, anywhere, no limit)."""

    after: tuple[str, ...] = ()
    retries: int = 0
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float | None = None
    constraints: tuple[Constraint, ...] = ()
    unique_host: bool = False
    #: a task that no agent's total can hold stays PENDING (shown as
    #: unschedulable) rather than failing at once
    wait_for_agents: bool = False
    #: at most this many of the group's tasks staging or running at once (None: no limit)
    max_running: int | None = None

    def backoff(self, failures: int) -> float:
        """Seconds to wait before the next try after ``failures`` failed ones."""
        if failures < 1:
            return 0.0
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** min(failures - 1, 30)))


def parse_policy(raw: Mapping[str, Any], where: str, error: type[ValueError]) -> Policy:
    """Read the policy keys of one [[tasks]] table; ``error`` names the key."""
    after = raw.get("after", [])
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or not all(isinstance(a, str) and a for a in after):
        raise error(f"{where}.after: must be a list of task group names, got {after!r}")
    retries = raw.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise error(f"{where}.retries: must be an integer from 0 to {MAX_RETRIES}, got {retries!r}")
    backoff_s = _seconds(raw, "backoff_s", where, 1.0, error)
    backoff_max_s = _seconds(raw, "backoff_max_s", where, max(60.0, backoff_s), error)
    timeout = raw.get("timeout_s")
    timeout_s = None if timeout is None else _seconds(raw, "timeout_s", where, 0.0, error)
    if timeout_s is not None and timeout_s <= 0:
        raise error(f"{where}.timeout_s: must be > 0, got {timeout!r}")
    raw_constraints = raw.get("constraints", [])
    if isinstance(raw_constraints, str):
        raw_constraints = [raw_constraints]
    if not isinstance(raw_constraints, list):
        raise error(f"{where}.constraints: must be a list such as ['rack == r1'], got {raw_constraints!r}")
    constraints = []
    for i, text in enumerate(raw_constraints):
        try:
            constraints.append(parse_constraint(text))
        except ValueError as e:
            raise error(f"{where}.constraints[{i}]: {e}") from None
    unique_host = raw.get("unique_host", False)
    if not isinstance(unique_host, bool):
        raise error(f"{where}.unique_host: must be true or false, got {unique_host!r}")
    wait_for_agents = raw.get("wait_for_agents", False)
    if not isinstance(wait_for_agents, bool):
        raise error(f"{where}.wait_for_agents: must be true or false, got {wait_for_agents!r}")
    max_running = raw.get("max_running")
    if max_running is not None and (
        isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1
    ):
        raise error(f"{where}.max_running: must be an integer >= 1, got {max_running!r}")
    return Policy(
        after=tuple(after),
        retries=retries,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
        timeout_s=timeout_s,
        constraints=tuple(constraints),
        unique_host=unique_host,
        wait_for_agents=wait_for_agents,
        max_running=max_running,
    )


def _seconds(raw: Mapping[str, Any], key: str, where: str, default: float, error: type[ValueError]) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{where}.{key}: must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise error(f"{where}.{key}: must be >= 0, got {value!r}")
    return float(value)


def check_dag(names: Sequence[str], after: Sequence[Sequence[str]], error: type[ValueError]) -> None:
    """Every ``after`` names a group of the job, and there is no cycle (named if found)."""
    known = set(names)
    for i, deps in enumerate(after):
        for dep in deps:
            if dep not in known:
                raise error(
                    f"tasks[{i}].after: no task group named {dep!r} (groups: {', '.join(names)}; "
                    "to wait for another job, use the job's top-level after = ['afterok:JOB'])"
                )
            if dep == names[i]:
                raise error(f"tasks[{i}].after: group {dep!r} cannot depend on itself")
    graph = dict(zip(names, after, strict=True))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise error(f"tasks: the dependencies form a cycle: {' -> '.join(cycle)} (via 'after')")
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for name in names:
        if name not in state:
            visit(name)
