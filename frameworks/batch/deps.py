"""Dependencies between jobs, as Slurm's ``--dependency``:

    after = ["afterok:squares-1a2b3c", "afterany:nightly"]

An entry is ``KIND:JOB`` or just ``JOB`` (``afterok``); JOB is a job id, or a
job name meaning the newest job of that name when this one is submitted (the
service stores the id it resolved to, so a later job of the same name does not
change what an earlier one waits for). Kinds:

- ``afterok``: starts once JOB succeeded;
- ``afternotok``: starts once JOB failed or was cancelled;
- ``afterany``: starts once JOB ended, whatever its end.

A job whose dependency can no longer be met (``afterok`` on a job that
failed) does not wait for ever: its tasks are skipped, saying which
dependency, and it fails, as Slurm does with ``kill_invalid_depend``. A job
may only depend on jobs that exist when it is submitted, so dependencies
between jobs cannot form a cycle.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("afterok", "afternotok", "afterany")


class Verdict(enum.Enum):
    WAIT = "wait"
    MET = "met"
    NEVER = "never"


@dataclass(frozen=True)
class Dependency:
    kind: str
    job: str  # an id, or (before the service resolves it) a name

    def __str__(self) -> str:
        return f"{self.kind}:{self.job}"

    def verdict(self, state: str | None) -> Verdict:
        """Given the state of the job depended on (None: no such job)."""
        if state is None:
            return Verdict.NEVER
        if state == "RUNNING":
            return Verdict.WAIT
        met = {
            "afterok": state == "SUCCEEDED",
            "afternotok": state in ("FAILED", "CANCELLED"),
            "afterany": True,
        }[self.kind]
        return Verdict.MET if met else Verdict.NEVER


def parse_dependencies(raw: object, error: type[ValueError]) -> tuple[Dependency, ...]:
    """The top-level ``after`` of a job spec (a string or a list of them)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise error(f"after: must be a list such as ['afterok:JOB_ID'], got {raw!r}")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, str) or not entry.strip():
            raise error(f"after[{i}]: must be KIND:JOB or JOB, got {entry!r}")
        kind, sep, job = entry.strip().partition(":")
        if not sep:
            kind, job = "afterok", kind
        if kind not in KINDS:
            raise error(f"after[{i}]: kind {kind!r} is not one of {', '.join(KINDS)}")
        if not job:
            raise error(f"after[{i}]: names no job, got {entry!r}")
        out.append(Dependency(kind, job))
    return tuple(out)


def judge(deps: Sequence[Dependency], states: dict[str, str]) -> tuple[Verdict, Dependency | None]:
    """All of ``deps`` against the states of jobs by id: NEVER (with the first
    dependency that can no longer be met), WAIT, or MET."""
    waiting = False
    for d in deps:
        v = d.verdict(states.get(d.job))
        if v is Verdict.NEVER:
            return v, d
        waiting = waiting or v is Verdict.WAIT
    return (Verdict.WAIT if waiting else Verdict.MET), None
