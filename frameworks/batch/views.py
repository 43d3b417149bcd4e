"""What the batch API and the CLI show of jobs, tasks, attempts and periodic
jobs: JSON-ready dicts read from the engine's model (never written)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.frameworks.batch.store import AttemptRow, JobRow, PeriodicRow

if TYPE_CHECKING:
    from corral.frameworks.batch.engine import BatchEngine


class UnknownJobError(KeyError):
    """No job (or periodic job) has this id."""


class JobStateError(ValueError):
    """The job is not in a state this request applies to (the message says
    which and what to do); the API answers 409."""


def job_view(engine: BatchEngine, job_id: str, with_tasks: bool = True) -> dict[str, Any]:
    """A job with its tasks and their attempts (or only its summary), as JSON-ready data;
    for a periodic job's id, :meth:`periodic_view`."""
    job = engine.jobs.get(job_id)
    if job is None:
        return periodic_view(engine, job_id)
    if not with_tasks:
        return job_summary(engine, job)
    tasks = [engine.tasks[t] for t in engine.job_tasks[job_id]]
    return {
        **job_summary(engine, job),
        "tasks": [
            {
                "id": t.id,
                "group": t.grp,
                "index": t.idx,
                "state": t.state,
                "attempts": t.attempts,
                "failures": t.failures,
                "reschedules": t.reschedules,
                "exit_code": t.exit_code,
                "agent_id": t.agent_id,
                "hostname": t.hostname,
                "message": t.message,
                "not_before": t.not_before,
                "history": [attempt_view(engine.attempts[a]) for a in engine.task_attempts.get(t.id, [])],
            }
            for t in tasks
        ],
    }


def jobs_view(engine: BatchEngine) -> dict[str, Any]:
    """Every job (summaries, newest last) and every periodic job."""
    return {
        "jobs": [job_summary(engine, j) for j in engine.jobs.values()],
        "periodic": [periodic_summary(engine, p) for p in engine.periodic.values()],
    }


def periodic_summary(engine: BatchEngine, p: PeriodicRow) -> dict[str, Any]:
    return {
        "id": p.id,
        "kind": "periodic",
        "schedule": p.schedule,
        "concurrency_policy": engine.periodic_policy.get(p.id, ""),
        "next_run": p.next_run,
        "last_job": p.last_job,
        "state": p.state,
        "message": p.message,
    }


def periodic_view(engine: BatchEngine, periodic_id: str) -> dict[str, Any]:
    """A periodic job: its schedule, state (FAILED says why) and its runs."""
    p = engine.periodic.get(periodic_id)
    if p is None:
        raise UnknownJobError(periodic_id)
    runs = [job_summary(engine, j) for j in engine.jobs.values() if j.periodic == periodic_id]
    return {**periodic_summary(engine, p), "created_at": p.created_at, "runs": runs}


def job_summary(engine: BatchEngine, job: JobRow) -> dict[str, Any]:
    counts = dict(engine.job_counts(job.id))
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "submitted_at": job.submitted_at,
        "finished_at": job.finished_at,
        "periodic": job.periodic,
        "held": job.held,
        "after": [str(d) for d in engine.specs[job.id].after],
        "scheduled_at": job.scheduled_at,
        "total": len(engine.job_tasks[job.id]),
        "counts": counts,
        "unschedulable": {g: str(v) for (j, g), v in engine.unschedulable.items() if j == job.id},
    }


def attempt_view(a: AttemptRow) -> dict[str, Any]:
    return {
        "task_id": a.id,
        "number": a.number,
        "state": a.state,
        "agent_id": a.agent_id,
        "hostname": a.hostname,
        "launched_at": a.launched_at,
        "finished_at": a.finished_at,
        "exit_code": a.exit_code,
        "signal": a.signal,
        "reason": a.reason,
        "message": a.message,
        "timed_out": a.timed_out,
        "queued_at": a.queued_at,
        "started_at": a.started_at,
        "cpu_time_s": a.cpu_time_s,
        "mem_peak_bytes": a.mem_peak_bytes,
    }
