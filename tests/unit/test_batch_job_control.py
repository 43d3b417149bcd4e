"""Throttled arrays (max_running), hold and release, requeue, and
dependencies between jobs (afterok, afternotok, afterany), on the batch
engine with a recording driver (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_batch_engine import RecordingDriver, job, offer, status, subscribe

from corral.cli.batch import parse_since
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.spec import JobSpecError
from corral.frameworks.batch.store import Store
from corral.frameworks.batch.views import JobStateError, UnknownJobError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.types import TaskState, TaskStatus


def driven(engine: BatchEngine, driver: RecordingDriver) -> SchedulerDriver:
    return cast(SchedulerDriver, driver)


async def finish_all(engine: BatchEngine, driver: RecordingDriver, code: int = 0) -> None:
    """End every launched attempt that is still live with ``code``."""
    for t in list(driver.launched):
        if t.task_id in engine.live:
            state = TaskState.FINISHED if code == 0 else TaskState.FAILED
            await engine.status_update(driven(engine, driver), status(t.task_id, state, code))


def running(engine: BatchEngine, job_id: str) -> int:
    c = engine.job_counts(job_id)
    return c["STAGING"] + c["RUNNING"]


# -- max_running ---------------------------------------------------------------


async def test_max_running_caps_an_array_and_the_rest_follow_as_tasks_end() -> None:
    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(job(10, max_running=3))["job_id"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    await engine.offers(d, [offer(1, cpus=16)])
    assert len(driver.launched) == 3
    await engine.offers(d, [offer(2, cpus=16)])
    assert len(driver.launched) == 3  # no room: the offer is declined
    assert driver.declined[-1][0] == "o2"
    await engine.status_update(d, status(driver.launched[0].task_id, TaskState.FINISHED, 0))
    await engine.offers(d, [offer(3, cpus=16)])
    assert len(driver.launched) == 4
    assert running(engine, job_id) == 3


def test_max_running_must_be_a_positive_integer() -> None:
    engine = BatchEngine(Store(":memory:"))
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(JobSpecError, match=r"tasks\[0\]\.max_running: must be an integer >= 1"):
            engine.submit(job(2, max_running=bad))


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 6),
    count=st.integers(1, 20),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.booleans()), max_size=40),
)
def test_the_throttle_is_never_exceeded(limit: int, count: int, steps: list[tuple[bool, int, bool]]) -> None:
    # Offers and ends in any order (ends of any live attempt, failed or not,
    # with retries): never more than ``limit`` staging or running.
    import asyncio

    async def run() -> None:
        engine = BatchEngine(Store(":memory:"), clock=lambda: 0.0)
        job_id = engine.submit(job(count, max_running=limit, retries=2, backoff_s=0))["job_id"]
        driver = await subscribe(engine)
        d = driven(engine, driver)
        for n, (is_offer, pick, ok) in enumerate(steps):
            if is_offer:
                await engine.offers(d, [offer(n, cpus=64)])
            elif engine.live:
                attempt = sorted(engine.live)[pick % len(engine.live)]
                state = TaskState.FINISHED if ok else TaskState.FAILED
                await engine.status_update(d, status(attempt, state, 0 if ok else 1))
            assert running(engine, job_id) <= limit
            assert len(engine.live) <= limit

    asyncio.run(run())


# -- hold, release, requeue ------------------------------------------------------


async def test_a_held_job_launches_nothing_until_released() -> None:
    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(job(2))["job_id"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    assert engine.hold(job_id).startswith("held")
    assert engine.hold(job_id) == "already held"
    assert engine.job_view(job_id, with_tasks=False)["held"] is True
    await engine.offers(d, [offer(1)])
    assert driver.launched == []
    assert "suppress" in driver.calls  # nothing to launch: no offers wanted
    assert engine.release(job_id) == "released"
    assert driver.calls[-1] == "revive"
    await engine.offers(d, [offer(2)])
    assert len(driver.launched) == 2


async def test_hold_survives_a_restart_and_refuses_an_ended_job(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    engine = BatchEngine(Store(db))
    job_id = engine.submit(job(1))["job_id"]
    engine.hold(job_id)
    again = BatchEngine(Store(db))
    assert again.jobs[job_id].held is True
    again.release(job_id)
    driver = await subscribe(again)
    await again.offers(driven(again, driver), [offer()])
    await finish_all(again, driver)
    assert again.jobs[job_id].state == "SUCCEEDED"
    with pytest.raises(JobStateError, match="already succeeded: nothing to hold"):
        again.hold(job_id)
    with pytest.raises(UnknownJobError):
        again.hold("nope")


async def test_requeue_runs_an_ended_job_again_and_keeps_the_history() -> None:
    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(job(2))["job_id"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    with pytest.raises(JobStateError, match="still running"):
        engine.requeue(job_id)
    await engine.offers(d, [offer(1)])
    await finish_all(engine, driver)
    assert engine.jobs[job_id].state == "SUCCEEDED"
    assert engine.requeue(job_id) == "requeued 2 task(s)"
    assert engine.jobs[job_id].state == "RUNNING"
    assert engine.jobs[job_id].finished_at == 0.0
    await engine.offers(d, [offer(2)])
    assert [t.task_id for t in driver.launched[2:]] == [f"{job_id}.g.0.a2", f"{job_id}.g.1.a2"]
    await finish_all(engine, driver)
    assert engine.jobs[job_id].state == "SUCCEEDED"
    history = engine.job_view(job_id)["tasks"][0]["history"]
    assert [a["number"] for a in history] == [1, 2]


async def test_requeue_failed_only_reruns_the_failed_task_and_what_was_skipped_after_it() -> None:
    engine = BatchEngine(Store(":memory:"))
    spec: dict[str, Any] = {
        "name": "dag",
        "tasks": [
            {"name": "a", "command": "true", "count": 2},
            {"name": "b", "command": "true", "after": ["a"]},
        ],
    }
    job_id = engine.submit(spec)["job_id"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    await engine.offers(d, [offer(1)])
    a0, a1 = driver.launched
    await engine.status_update(d, status(a0.task_id, TaskState.FINISHED, 0))
    await engine.status_update(d, status(a1.task_id, TaskState.FAILED, 3))
    assert engine.jobs[job_id].state == "FAILED"
    assert engine.tasks[f"{job_id}.b.0"].state == "SKIPPED"
    assert engine.requeue(job_id, failed_only=True) == "requeued 2 task(s)"
    assert engine.tasks[f"{job_id}.a.0"].state == "FINISHED"  # not run again
    assert engine.tasks[f"{job_id}.a.1"].state == "PENDING"
    assert engine.tasks[f"{job_id}.b.0"].state == "WAITING"
    await engine.offers(d, [offer(2)])
    assert [t.task_id for t in driver.launched[2:]] == [f"{job_id}.a.1.a2"]
    await finish_all(engine, driver)
    await engine.offers(d, [offer(3)])
    await finish_all(engine, driver)
    assert engine.jobs[job_id].state == "SUCCEEDED"
    with pytest.raises(JobStateError, match="no failed, cancelled or skipped task"):
        engine.requeue(job_id, failed_only=True)


# -- dependencies between jobs ---------------------------------------------------


def dependent(after: Any, name: str = "next") -> dict[str, Any]:
    return {"name": name, "after": after, "tasks": [{"name": "g", "command": "true"}]}


async def test_afterok_waits_for_the_job_to_succeed_then_runs() -> None:
    engine = BatchEngine(Store(":memory:"))
    first = engine.submit(job(1))["job_id"]
    second = engine.submit(dependent([f"afterok:{first}"]))["job_id"]
    assert engine.job_view(second, with_tasks=False)["after"] == [f"afterok:{first}"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    await engine.offers(d, [offer(1)])
    assert [t.task_id for t in driver.launched] == [f"{first}.g.0.a1"]  # the second waits
    assert engine.tasks[f"{second}.g.0"].state == "WAITING"
    await finish_all(engine, driver)
    assert engine.tasks[f"{second}.g.0"].state == "PENDING"
    await engine.offers(d, [offer(2)])
    await finish_all(engine, driver)
    assert engine.jobs[second].state == "SUCCEEDED"


async def test_afterok_on_a_job_that_failed_skips_the_tasks_and_fails_saying_why() -> None:
    engine = BatchEngine(Store(":memory:"))
    first = engine.submit(job(1))["job_id"]
    second = engine.submit(dependent(first))["job_id"]  # plain id: afterok
    other = engine.submit(dependent(f"afternotok:{first}", name="cleanup"))["job_id"]
    anyway = engine.submit(dependent(f"afterany:{first}", name="report"))["job_id"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    await engine.offers(d, [offer(1)])
    await finish_all(engine, driver, code=1)
    assert engine.jobs[first].state == "FAILED"
    assert engine.jobs[second].state == "FAILED"
    task = engine.tasks[f"{second}.g.0"]
    assert task.state == "SKIPPED"
    assert task.message == f"not run: dependency afterok:{first} can no longer be met: {first} failed"
    assert engine.tasks[f"{other}.g.0"].state == "PENDING"
    assert engine.tasks[f"{anyway}.g.0"].state == "PENDING"


async def test_afternotok_on_a_job_that_succeeded_never_runs() -> None:
    engine = BatchEngine(Store(":memory:"))
    first = engine.submit(job(1))["job_id"]
    driver = await subscribe(engine)
    await engine.offers(driven(engine, driver), [offer(1)])
    await finish_all(engine, driver)
    # Submitted after its dependency ended: judged at once.
    late = engine.submit(dependent(f"afternotok:{first}"))["job_id"]
    assert engine.jobs[late].state == "FAILED"
    ok = engine.submit(dependent(f"afterok:{first}", name="ok"))["job_id"]
    assert engine.tasks[f"{ok}.g.0"].state == "PENDING"


def test_a_dependency_by_name_resolves_to_the_newest_job_of_that_name() -> None:
    engine = BatchEngine(Store(":memory:"))
    engine.submit(job(1))
    newest = engine.submit(job(1))["job_id"]
    second = engine.submit(dependent("afterany:j"))["job_id"]
    assert engine.job_view(second, with_tasks=False)["after"] == [f"afterany:{newest}"]


@pytest.mark.parametrize(
    ("after", "error"),
    [
        ("nope", r"after\[0\]: no job has the id or name 'nope'"),
        (["afterwards:x"], r"after\[0\]: kind 'afterwards' is not one of afterok, afternotok, afterany"),
        (["afterok:"], r"after\[0\]: names no job"),
        ([3], r"after\[0\]: must be KIND:JOB or JOB"),
        ({"a": 1}, r"after: must be a list"),
    ],
)
def test_bad_dependencies_are_refused_naming_the_entry(after: Any, error: str) -> None:
    engine = BatchEngine(Store(":memory:"))
    with pytest.raises(JobSpecError, match=error):
        engine.submit(dependent(after))
    assert engine.jobs == {}


def test_a_periodic_job_cannot_depend_on_jobs_and_a_group_name_typo_hints_at_after() -> None:
    engine = BatchEngine(Store(":memory:"))
    spec = {**dependent("x"), "schedule": "* * * * *"}
    with pytest.raises(JobSpecError, match="after: not for a periodic job"):
        engine.submit(spec)
    bad = {"name": "j", "tasks": [{"name": "g", "command": "true", "after": ["other-job"]}]}
    with pytest.raises(JobSpecError, match=r"use the job's top-level after = \['afterok:JOB'\]"):
        engine.submit(bad)


async def test_dependencies_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    engine = BatchEngine(Store(db))
    first = engine.submit(job(1))["job_id"]
    second = engine.submit(dependent(f"afterok:{first}"))["job_id"]
    driver = await subscribe(engine)
    await engine.offers(driven(engine, driver), [offer(1)])
    again = BatchEngine(Store(db))
    driver2 = await subscribe(again)
    d2 = driven(again, driver2)
    await again.status_update(d2, status(f"{first}.g.0.a1", TaskState.FINISHED, 0))
    assert again.tasks[f"{second}.g.0"].state == "PENDING"


# -- accounting --------------------------------------------------------------------


async def test_an_attempt_keeps_the_agents_times_and_what_its_cgroup_used() -> None:
    now = [100.0]
    engine = BatchEngine(Store(":memory:"), clock=lambda: now[0])
    job_id = engine.submit(job(1))["job_id"]
    driver = await subscribe(engine)
    d = driven(engine, driver)
    now[0] = 102.0
    await engine.offers(d, [offer(1)])
    tid = driver.launched[0].task_id
    running = TaskStatus(tid, TaskState.RUNNING, agent_id="a1", timestamp=102.5)
    await engine.status_update(d, running)
    now[0] = 140.0  # the end arrives late (the service was away): the agent's time counts
    end = TaskStatus(
        tid,
        TaskState.FINISHED,
        agent_id="a1",
        exit_code=0,
        timestamp=107.5,
        cpu_time_s=4.5,
        mem_peak_bytes=7 << 20,
    )
    await engine.status_update(d, end)
    (a,) = engine.job_view(job_id)["tasks"][0]["history"]
    assert (a["queued_at"], a["launched_at"], a["started_at"], a["finished_at"]) == (
        100.0,
        102.0,
        102.5,
        107.5,
    )
    assert (a["cpu_time_s"], a["mem_peak_bytes"]) == (4.5, 7 << 20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 1000.0 - 90), ("30m", 1000.0 - 1800), ("2h", 1000.0 - 7200), ("1.5d", 1000.0 - 129600)],
)
def test_since_takes_durations(text: str, expected: float) -> None:
    assert parse_since(text, 1000.0) == expected


def test_since_takes_dates_and_refuses_the_rest() -> None:
    assert parse_since("2026-12-08T14:00+00:00", 0.0) == 1796738400.0
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday", 0.0)
