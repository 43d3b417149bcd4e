"""The batch engine's model of jobs, tasks and attempts, and the moves
between their states that need no master: adding what the store holds,
counting states per group, releasing groups whose dependencies (groups of
the job, or other jobs: deps.py) are met or skipping them, and closing jobs.
:class:`~corral.frameworks.batch.engine.BatchEngine` builds on it with
offers, status updates, timers and the API. Every write goes through
``store`` inside the caller's transaction.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import structlog

from corral.frameworks.batch.deps import Dependency, Verdict, judge
from corral.frameworks.batch.spec import JobSpec, JobSpecError, TaskGroup, parse_job
from corral.frameworks.batch.store import AttemptRow, JobRow, Snapshot, Store, TaskRow
from corral.frameworks.batch.views import UnknownJobError
from corral.frameworks.types import Task, TaskState

log = structlog.get_logger(__name__)

FINAL = frozenset({"FINISHED", "FAILED", "CANCELLED", "SKIPPED"})
JOB_FINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class JobModel:
    """Jobs, tasks and attempts by id, with per-group state counts."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.jobs: dict[str, JobRow] = {}
        self.specs: dict[str, JobSpec] = {}
        self.tasks: dict[str, TaskRow] = {}
        self.job_tasks: dict[str, list[str]] = {}
        self.attempts: dict[str, AttemptRow] = {}
        self.task_attempts: dict[str, list[str]] = {}
        self.live: dict[str, AttemptRow] = {}
        #: PENDING task ids in order (a dict as an ordered set)
        self.pending: dict[str, None] = {}
        self._task_defs: dict[str, dict[str, Task]] = {}
        #: per (job, group): its task ids and how many are in each state, so a
        #: task's end costs O(groups), not O(tasks of the job)
        self.group_tasks: dict[tuple[str, str], list[str]] = {}
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        #: per job id: the jobs whose top-level ``after`` names it (deps.py)
        self.dependents: dict[str, list[str]] = {}
        #: bumped on every change, for watchers
        self.version = 0

    def load(self, snap: Snapshot) -> None:
        """Take in the jobs, tasks and attempts a store holds."""
        for job in snap.jobs:
            try:
                self.specs[job.id] = parse_job(json.loads(job.spec))
            except ValueError as e:  # written by an older version that accepted it
                log.error("batch.spec_unreadable", job_id=job.id, error=str(e))
                continue
            self.jobs[job.id] = job
            self.job_tasks[job.id] = []
            self._index_dependencies(job.id)
        for task in snap.tasks:
            if task.job_id in self.jobs:
                self._add_task(task)
        for attempt in snap.attempts:
            if attempt.task in self.tasks:
                self._add_attempt(attempt)

    def _add_task(self, task: TaskRow) -> None:
        self.tasks[task.id] = task
        self.job_tasks[task.job_id].append(task.id)
        key = (task.job_id, task.grp)
        self.group_tasks.setdefault(key, []).append(task.id)
        self.counts.setdefault(key, Counter())[task.state] += 1
        if task.state == "PENDING":
            self.pending[task.id] = None

    def _add_attempt(self, attempt: AttemptRow) -> None:
        self.attempts[attempt.id] = attempt
        self.task_attempts.setdefault(attempt.task, []).append(attempt.id)
        if not TaskState[attempt.state].is_terminal:
            self.live[attempt.id] = attempt

    def _set_state(self, task: TaskRow, state: str, message: str | None = None) -> None:
        counts = self.counts[(task.job_id, task.grp)]
        counts[task.state] -= 1
        counts[state] += 1
        task.state = state
        if message is not None:
            task.message = message
        if state == "PENDING":
            self.pending[task.id] = None
            task.queued_at = self.clock()
        else:
            self.pending.pop(task.id, None)
        self.store.save(task)

    def group(self, task: TaskRow) -> TaskGroup:
        return self.specs[task.job_id].group(task.grp)

    def _task_def(self, task: TaskRow) -> Task:
        defs = self._task_defs.get(task.job_id)
        if defs is None:
            defs = {t.task_id: t for t in self.specs[task.job_id].tasks(task.job_id)}
            self._task_defs[task.job_id] = defs
        return defs[task.id]

    def _resolve(self, spec: JobSpec) -> tuple[Dependency, ...]:
        """The job's dependencies with every job named by its id (a name: the
        newest job of that name); JobSpecError for one that names no job."""
        out = []
        for i, d in enumerate(spec.after):
            if d.job in self.jobs:
                out.append(d)
                continue
            named = [j.id for j in self.jobs.values() if j.name == d.job]
            if not named:
                raise JobSpecError(f"after[{i}]: no job has the id or name {d.job!r}")
            out.append(Dependency(d.kind, named[-1]))
        return tuple(out)

    def _index_dependencies(self, job_id: str) -> None:
        for d in self.specs[job_id].after:
            self.dependents.setdefault(d.job, []).append(job_id)

    def _job(self, job_id: str) -> JobRow:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    def job_counts(self, job_id: str) -> Counter[str]:
        """How many of the job's tasks are in each state."""
        total: Counter[str] = Counter()
        for group in self.specs[job_id].groups:
            total.update(self.counts.get((job_id, group.name), Counter()))
        return +total

    def _advance(self, job: JobRow) -> None:
        """Release groups whose dependencies finished, skip those whose failed,
        and close the job when every task is final (in a transaction)."""
        spec = self.specs[job.id]
        states = {d.job: self.jobs[d.job].state for d in spec.after if d.job in self.jobs}
        verdict, unmet = judge(spec.after, states)
        changed = True
        while changed:
            changed = False
            for group in spec.groups:
                if not self.counts[(job.id, group.name)]["WAITING"]:
                    continue
                if verdict is Verdict.WAIT:
                    break
                if verdict is Verdict.NEVER:
                    why = self._unmet(unmet)
                    for tid in self.group_tasks[(job.id, group.name)]:
                        if self.tasks[tid].state == "WAITING":
                            self._set_state(self.tasks[tid], "SKIPPED", f"not run: {why}")
                    changed = True
                    continue
                deps = [self.counts[(job.id, d)] for d in group.policy.after]
                failed = next(
                    (
                        d
                        for d, c in zip(group.policy.after, deps, strict=True)
                        if c["FAILED"] or c["SKIPPED"] or c["CANCELLED"]
                    ),
                    None,
                )
                sizes = [len(self.group_tasks[(job.id, d)]) for d in group.policy.after]
                if failed is None and any(c["FINISHED"] < n for c, n in zip(deps, sizes, strict=True)):
                    continue
                for tid in self.group_tasks[(job.id, group.name)]:
                    t = self.tasks[tid]
                    if t.state == "WAITING":
                        if failed is not None:
                            self._set_state(t, "SKIPPED", f"not run: group {failed!r} did not finish")
                        else:
                            self._set_state(t, "PENDING")
                changed = True
        counts = self.job_counts(job.id)
        if sum(counts.values()) != sum(counts[s] for s in FINAL):
            return
        if job.state == "RUNNING":
            job.state = "SUCCEEDED" if counts["FINISHED"] == sum(counts.values()) else "FAILED"
        if not job.finished_at:
            job.finished_at = self.clock()
            self.store.save(job)
            log.info("batch.job_ended", job_id=job.id, state=job.state)
            for waiting in self.dependents.get(job.id, []):
                if self.jobs.get(waiting) is not None and self.jobs[waiting].state == "RUNNING":
                    self._advance(self.jobs[waiting])

    def _unmet(self, dep: Dependency | None) -> str:
        if dep is None:  # (judge names the dependency with NEVER)
            return "a dependency can no longer be met"
        other = self.jobs.get(dep.job)
        if other is None:
            return f"dependency {dep} can no longer be met: the job is gone"
        return f"dependency {dep} can no longer be met: {dep.job} {other.state.lower()}"
