"""The batch engine against a recording driver: restarts from its SQLite
store, reconciliation, retries, and the cost of a big job (no cluster)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.store import Store
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.types import MasterInfo, Offer, Task, TaskState, TaskStatus
from corral.resources import Resources

MASTER = MasterInfo("m", "127.0.0.1:5050", "test")


class RecordingDriver:
    """The driver verbs the engine uses, recorded."""

    def __init__(self) -> None:
        self.launched: list[Task] = []
        self.declined: list[tuple[str, float | None]] = []
        self.reconciled: list[list[tuple[str, str]]] = []
        self.killed: list[str] = []
        self.calls: list[str] = []
        self.connected = asyncio.Event()
        self.connected.set()

    def launch(self, offer: Offer, tasks: list[Task], refuse_s: float | None = None) -> None:
        self.launched.extend(tasks)

    def decline(self, offer: Offer, refuse_s: float | None = None) -> None:
        self.declined.append((offer.id, refuse_s))

    def reconcile(self, tasks: list[tuple[str, str]]) -> None:
        self.reconciled.append(list(tasks))

    def kill(self, task_id: str, agent_id: str = "") -> None:
        self.killed.append(task_id)

    def suppress(self) -> None:
        self.calls.append("suppress")

    def revive(self) -> None:
        self.calls.append("revive")


def offer(n: int = 0, cpus: float = 4) -> Offer:
    return Offer(f"o{n}", "a1", "host1", Resources.of(cpus=cpus, mem=4096), {"rack": "r1"})


def status(task_id: str, state: TaskState, exit_code: int | None = None) -> TaskStatus:
    return TaskStatus(task_id, state, agent_id="a1", exit_code=exit_code)


async def subscribe(engine: BatchEngine) -> RecordingDriver:
    driver = RecordingDriver()
    await engine.registered(cast(SchedulerDriver, driver), "fw-1", MASTER)
    return driver


def job(count: int, **group: Any) -> dict[str, Any]:
    return {"name": "j", "tasks": [{"name": "g", "command": "true", "count": count, "cpus": 1, **group}]}


async def test_a_restart_keeps_finished_tasks_and_retries_only_lost_launches(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    engine = BatchEngine(Store(db))
    job_id = engine.submit(job(3))["job_id"]
    driver = await subscribe(engine)
    await engine.offers(cast(SchedulerDriver, driver), [offer()])
    ids = [t.task_id for t in driver.launched]
    assert ids == [f"{job_id}.g.{i}.a1" for i in range(3)]
    d = cast(SchedulerDriver, driver)
    await engine.status_update(d, status(ids[0], TaskState.RUNNING))
    await engine.status_update(d, status(ids[0], TaskState.FINISHED, 0))
    await engine.status_update(d, status(ids[1], TaskState.RUNNING))
    engine.store.close()  # "kill -9": nothing else is written

    again = BatchEngine(Store(db))
    assert again.framework_id == "fw-1"
    assert again.tasks[f"{job_id}.g.0"].state == "FINISHED"
    driver2 = await subscribe(again)
    d2 = cast(SchedulerDriver, driver2)
    assert sorted(driver2.reconciled[0]) == [(ids[1], "a1"), (ids[2], "a1")]
    # The master never got ids[2] (lost with the crash); ids[1] finished meanwhile.
    await again.status_update(d2, status(ids[2], TaskState.UNKNOWN))
    await again.status_update(d2, status(ids[1], TaskState.FINISHED, 0))
    await again.offers(d2, [offer(1)])
    assert [t.task_id for t in driver2.launched] == [f"{job_id}.g.2.a2"]
    # Said explicitly on subscribing (the master may still hold it suppressed), then revived.
    assert driver2.calls[:2] == ["suppress", "revive"]
    task2 = again.tasks[f"{job_id}.g.2"]
    assert (task2.attempts, task2.failures) == (2, 0)
    await again.status_update(d2, status(f"{job_id}.g.2.a2", TaskState.FINISHED, 0))
    assert again.jobs[job_id].state == "SUCCEEDED"
    # A late duplicate of an end already recorded changes nothing.
    await again.status_update(d2, status(ids[0], TaskState.FAILED, 1))
    assert again.tasks[f"{job_id}.g.0"].state == "FINISHED"


async def test_retries_back_off_and_then_fail(tmp_path: Path) -> None:
    now = [1000.0]
    engine = BatchEngine(Store(":memory:"), clock=lambda: now[0])
    job_id = engine.submit(job(1, retries=1, backoff_s=10))["job_id"]
    driver = await subscribe(engine)
    d = cast(SchedulerDriver, driver)
    await engine.offers(d, [offer()])
    await engine.status_update(d, status(f"{job_id}.g.0.a1", TaskState.FAILED, 2))
    task = engine.tasks[f"{job_id}.g.0"]
    assert (task.state, task.not_before) == ("PENDING", 1010.0)
    await engine.offers(d, [offer(1)])  # still backing off: declined, refused only until then
    assert driver.declined[-1] == ("o1", 1.0)
    now[0] = 1010.0
    await engine.offers(d, [offer(2)])
    await engine.status_update(d, status(f"{job_id}.g.0.a2", TaskState.FAILED, 2))
    assert task.state == "FAILED"
    assert engine.jobs[job_id].state == "FAILED"
    assert "suppress" in driver.calls


async def test_a_10000_task_job_is_scheduled_in_linear_time() -> None:
    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(job(10_000, cpus=0.01))["job_id"]
    driver = await subscribe(engine)
    d = cast(SchedulerDriver, driver)
    started = time.perf_counter()
    n = 0
    while len(driver.launched) < 10_000:
        await engine.offers(d, [offer(n, cpus=10)])  # 1,000 tasks an offer
        n += 1
    for task in driver.launched:
        await engine.status_update(d, status(task.task_id, TaskState.FINISHED, 0))
    took = time.perf_counter() - started
    assert engine.jobs[job_id].state == "SUCCEEDED"
    assert took < 30, f"{took:.1f}s for 10,000 tasks"  # ~2 s here; quadratic would be minutes


OLD_PERIODIC_TABLE = """CREATE TABLE periodic (
    id TEXT PRIMARY KEY, schedule TEXT NOT NULL, spec TEXT NOT NULL,
    next_run REAL NOT NULL, last_job TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL
)"""


async def test_a_bad_stored_periodic_job_is_marked_failed_and_the_others_run(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    good = json.dumps({"name": "good", "tasks": [{"command": "true"}]})
    rows = [
        ("good", "* * * * * *", good),
        ("badjson", "* * * * * *", "{not json"),
        ("badspec", "* * * * * *", json.dumps({"name": "badspec", "tasks": [{"cpus": -1}]})),
        ("badcron", "61 * * * *", good),
        ("notatable", "* * * * * *", "[1, 2]"),
    ]
    # As a database made before periodic jobs had a state: the store adds the columns.
    with sqlite3.connect(db) as conn:
        conn.execute(OLD_PERIODIC_TABLE)
        conn.executemany("INSERT INTO periodic VALUES (?, ?, ?, 0, '', 0)", rows)
    now = [1000.0]
    engine = BatchEngine(Store(db), clock=lambda: now[0])
    states = {p["id"]: (p["state"], p["message"]) for p in engine.jobs_view()["periodic"]}
    assert states["good"] == ("ACTIVE", "")
    assert states["badjson"][0] == "FAILED"
    assert "not valid JSON" in states["badjson"][1]
    assert "tasks[0].command" in states["badspec"][1]
    assert "minute" in states["badcron"][1]
    assert "must be a table, got list" in states["notatable"][1]
    engine.tick()  # raised ValueError before: the service died on every start
    runs = [j for j in engine.jobs.values() if j.periodic]
    assert [j.periodic for j in runs] == ["good"]
    view = engine.job_view("badspec")  # what `corral job badspec` shows
    assert view["kind"] == "periodic"
    assert (view["state"], view["runs"]) == ("FAILED", [])
    assert engine.job_view("good")["runs"][0]["id"] == runs[0].id
    engine.store.close()
    # Kept across a restart; submitting it again replaces it.
    again = BatchEngine(Store(db), clock=lambda: now[0])
    assert again.periodic["badspec"].state == "FAILED"
    again.submit({"name": "badspec", "schedule": "* * * * * *", "tasks": [{"command": "true"}]})
    assert again.periodic["badspec"].state == "ACTIVE"
    now[0] += 1
    again.tick()
    assert {j.periodic for j in again.jobs.values() if j.periodic} == {"good", "badspec"}


async def test_a_lost_agent_reschedules_the_task_without_using_a_retry() -> None:
    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(job(1, retries=0))["job_id"]  # no retry at all
    driver = await subscribe(engine)
    d = cast(SchedulerDriver, driver)
    task = engine.tasks[f"{job_id}.g.0"]
    # Not partition-aware frameworks hear LOST; aware ones UNREACHABLE, then GONE.
    for n, ends in enumerate([[TaskState.LOST], [TaskState.UNREACHABLE, TaskState.GONE]], start=1):
        await engine.offers(d, [offer(n)])
        attempt = f"{job_id}.g.0.a{n}"
        await engine.status_update(d, status(attempt, TaskState.RUNNING))
        for state in ends:
            await engine.status_update(d, status(attempt, state))
        assert (task.state, task.failures, task.reschedules) == ("PENDING", 0, n)
        assert f"rescheduled ({n}/10)" in task.message
    await engine.offers(d, [offer(9)])
    await engine.status_update(d, status(f"{job_id}.g.0.a3", TaskState.FINISHED, 0))
    assert engine.jobs[job_id].state == "SUCCEEDED"
    view = engine.job_view(job_id)["tasks"][0]
    assert [a["state"] for a in view["history"]] == ["LOST", "GONE", "FINISHED"]
    assert (view["failures"], view["reschedules"]) == (0, 2)


async def test_reschedules_after_lost_agents_are_capped() -> None:
    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(job(1, retries=3))["job_id"]
    driver = await subscribe(engine)
    d = cast(SchedulerDriver, driver)
    task = engine.tasks[f"{job_id}.g.0"]
    for n in range(1, 12):  # 10 reschedules, then the 11th loss ends it
        assert task.state == "PENDING", (n, task.message)
        await engine.offers(d, [offer(n)])
        await engine.status_update(d, status(f"{job_id}.g.0.a{n}", TaskState.LOST))
    assert task.state == "FAILED"
    assert (task.attempts, task.failures, task.reschedules) == (11, 0, 11)
    assert "lost 11 times to its agent or launch (limit 10)" in task.message
    assert engine.jobs[job_id].state == "FAILED"


async def test_a_real_failure_still_uses_a_retry_after_a_reschedule() -> None:
    now = [1000.0]
    engine = BatchEngine(Store(":memory:"), clock=lambda: now[0])
    job_id = engine.submit(job(1, retries=1, backoff_s=5))["job_id"]
    driver = await subscribe(engine)
    d = cast(SchedulerDriver, driver)
    task = engine.tasks[f"{job_id}.g.0"]
    await engine.offers(d, [offer(1)])
    await engine.status_update(d, status(f"{job_id}.g.0.a1", TaskState.GONE))
    assert task.not_before == 0.0  # at once: no backoff for a lost agent
    await engine.offers(d, [offer(2)])
    await engine.status_update(d, status(f"{job_id}.g.0.a2", TaskState.FAILED, 1))
    assert (task.state, task.failures, task.not_before) == ("PENDING", 1, 1005.0)
    now[0] = 1005.0
    await engine.offers(d, [offer(3)])
    await engine.status_update(d, status(f"{job_id}.g.0.a3", TaskState.FAILED, 1))
    assert (task.state, task.failures, task.reschedules) == ("FAILED", 2, 1)


async def periodic_engine(policy: str | None) -> tuple[BatchEngine, RecordingDriver, list[float]]:
    """An engine with a periodic job due every 10 s (first at t=1010) whose run is one long task."""
    now = [1000.0]
    engine = BatchEngine(Store(":memory:"), clock=lambda: now[0])
    spec: dict[str, Any] = {"name": "p", "schedule": "*/10 * * * * *", "tasks": [{"command": "sleep 99"}]}
    if policy is not None:
        spec["concurrency_policy"] = policy
    engine.submit(spec)
    driver = await subscribe(engine)
    return engine, driver, now


async def runs_after_two_due_times(engine: BatchEngine, driver: RecordingDriver, now: list[float]) -> None:
    """The first run starts and runs; the second comes due while it still does."""
    d = cast(SchedulerDriver, driver)
    now[0] = 1010.0
    engine.tick()
    await engine.offers(d, [offer(1)])
    await engine.status_update(d, status(driver.launched[0].task_id, TaskState.RUNNING))
    now[0] = 1020.0
    engine.tick()


async def test_periodic_forbid_skips_a_run_while_the_last_one_runs() -> None:
    engine, driver, now = await periodic_engine(None)  # forbid is the default
    await runs_after_two_due_times(engine, driver, now)
    (first,) = engine.jobs.values()
    assert first.state == "RUNNING"
    view = engine.job_view("p")
    assert view["concurrency_policy"] == "forbid"
    assert f"{first.id} still runs (forbid)" in view["message"]
    assert view["next_run"] == 1030.0  # skipped, not postponed
    d = cast(SchedulerDriver, driver)
    await engine.status_update(d, status(driver.launched[0].task_id, TaskState.FINISHED, 0))
    now[0] = 1030.0
    engine.tick()
    assert len(engine.jobs) == 2
    assert engine.job_view("p")["message"] == ""


async def test_periodic_allow_starts_runs_side_by_side() -> None:
    engine, driver, now = await periodic_engine("allow")
    await runs_after_two_due_times(engine, driver, now)
    assert [j.state for j in engine.jobs.values()] == ["RUNNING", "RUNNING"]


async def test_periodic_replace_cancels_the_running_one() -> None:
    engine, driver, now = await periodic_engine("Replace")
    await runs_after_two_due_times(engine, driver, now)
    first, second = engine.jobs.values()
    assert (first.state, second.state) == ("CANCELLED", "RUNNING")
    assert driver.killed == [driver.launched[0].task_id]
    assert engine.periodic["p"].last_job == second.id
    # The cancelled run's task ends KILLED, which does not touch the new run.
    d = cast(SchedulerDriver, driver)
    await engine.status_update(d, status(driver.launched[0].task_id, TaskState.KILLED))
    assert engine.job_view(first.id)["tasks"][0]["state"] == "CANCELLED"
    assert second.state == "RUNNING"


async def test_missed_periodic_runs_collapse_into_one_and_the_next_is_after_now() -> None:
    # The missed-runs policy the cron library must not change: after 95 s
    # without a tick (nine due times passed), one run, next due after now.
    engine, _, now = await periodic_engine("allow")
    now[0] = 1095.5
    engine.tick()
    engine.tick()
    assert len(engine.jobs) == 1
    assert engine.job_view("p")["next_run"] == 1100.0


async def test_a_periodic_run_knows_its_slot_even_when_it_starts_late() -> None:
    # Due at 1010, started at 1013.5 (no instance led in between): the run is
    # the 1010 slot's, its tasks see CORRAL_SCHEDULED_TIME=1010, the next
    # slot is 1020 and a plain job has no slot.
    engine, driver, now = await periodic_engine(None)
    now[0] = 1013.5
    engine.tick()
    (run,) = engine.jobs.values()
    assert (run.submitted_at, run.scheduled_at) == (1013.5, 1010.0)
    assert engine.job_view(run.id)["scheduled_at"] == 1010.0
    assert engine.job_view("p")["next_run"] == 1020.0
    await engine.offers(cast(SchedulerDriver, driver), [offer(1)])
    assert driver.launched[0].env["CORRAL_SCHEDULED_TIME"] == "1010"
    plain = engine.submit({"name": "once", "tasks": [{"command": "true"}]})["job_id"]
    assert engine.jobs[plain].scheduled_at == 0.0
    await engine.offers(cast(SchedulerDriver, driver), [offer(2)])
    assert "CORRAL_SCHEDULED_TIME" not in driver.launched[1].env
