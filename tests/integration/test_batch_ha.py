"""A highly available batch service: instances sharing a real PostgreSQL,
elected through a real ZooKeeper; the leader's writes fenced by an epoch."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks.batch.api import BatchClient
from corral.frameworks.batch.engine import JOB_FINAL
from corral.frameworks.batch.service import BatchService
from corral.frameworks.batch.store import FencedError, JobRow, Store
from corral.frameworks.plugins import PluginError
from corral.testing import corral_command, eventually

SESSION_S = 2.0


def test_a_shared_store_fences_a_deposed_leader(pg_url: str) -> None:
    first, second = Store(pg_url), Store(pg_url)
    try:
        first.save(JobRow("j1", "n", "{}", "RUNNING", 1.25))
        first.set_framework_id("fw-1")
        assert second.load().jobs[0].submitted_at == 1.25  # a double, not PostgreSQL's 4-byte REAL
        assert second.framework_id() == "fw-1"
        assert first.lead("first", 1.0) == 1
        first.save(JobRow("j2", "n", "{}", "RUNNING", 2.0))
        assert second.lead("second", 2.0) == 2
        with pytest.raises(FencedError, match=r"epoch 1\) no longer leads: second \(epoch 2\) does"):
            first.save(JobRow("j3", "n", "{}", "RUNNING", 3.0))
        with pytest.raises(FencedError), first.transaction():
            first.set_framework_id("stolen")
        second.save(JobRow("j4", "n", "{}", "RUNNING", 4.0))
        assert [j.id for j in second.load().jobs] == ["j1", "j2", "j4"]
        assert second.framework_id() == "fw-1"
        assert second.leader() == (2, "second")
    finally:
        first.close()
        second.close()


def test_standbys_need_a_shared_database(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="instances with standbys need a database they share"):
        BatchService("127.0.0.1:1", tmp_path / "batch.db", zk="zk://127.0.0.1:1/b", record=False)


@pytest.fixture
async def two_instances(
    cluster: LocalCluster, zk_url: str, pg_url: str
) -> AsyncIterator[tuple[BatchService, BatchService]]:
    made = [
        BatchService(cluster.master_address, pg_url, zk=zk_url, zk_session_timeout_s=SESSION_S, record=False)
        for _ in range(2)
    ]
    try:
        for s in made:
            await s.start()
            await asyncio.sleep(0.3)  # the first one leads
        yield made[0], made[1]
    finally:
        for s in made:
            await s.stop()


@pytest.mark.root
async def test_the_standby_takes_over_and_the_deposed_leader_cannot_write(
    two_instances: tuple[BatchService, BatchService],
) -> None:
    leader, standby = two_instances
    await eventually(lambda: leader.leading, 15, "the first instance to lead")
    assert not standby.leading
    job = leader.engine.submit({"name": "a", "tasks": [{"name": "t", "count": 3, "command": "true"}]})[
        "job_id"
    ]
    await eventually(lambda: leader.engine.jobs[job].state in JOB_FINAL, 30, "the job to end")
    # The leader loses ZooKeeper (its session closes): it stops; the standby leads.
    assert leader.election is not None
    await leader.election.stop()
    await eventually(leader.failed.is_set, 5, "the deposed leader to stop")
    assert "lost its ZooKeeper leadership" in str(leader.failure)
    await eventually(lambda: standby.leading and standby.driver is not None, 15, "the standby to lead")
    assert standby.engine.jobs[job].state == "SUCCEEDED"  # it read what the leader wrote
    # Whatever the deposed engine still tries is refused by the database.
    with pytest.raises(FencedError):
        leader.engine.submit({"name": "late", "tasks": [{"name": "t", "command": "true"}]})
    assert "late" not in {j.name for j in standby.store.load().jobs}
    await eventually(
        lambda: standby.driver is not None and standby.driver.connected.is_set(), 15, "to subscribe"
    )
    again = standby.engine.submit({"name": "b", "tasks": [{"name": "t", "command": "true"}]})["job_id"]
    await eventually(lambda: standby.engine.jobs[again].state == "SUCCEEDED", 30, "a job on the new leader")


def _rows(pg_url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[arg-type]


@pytest.mark.root
@pytest.mark.slow
async def test_kill_9_of_the_leader_mid_array_and_cron_loses_nothing_and_runs_nothing_twice(
    cluster: LocalCluster, zk_url: str, pg_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # Tasks and the test both see /var/tmp (a task's /tmp is a tmpfs of its own).
    shared = Path("/var/tmp") / f"corral-test-{uuid.uuid4().hex[:8]}"
    shared.mkdir()
    config = tmp_path / "batch.toml"
    config.write_text(f'db = "{pg_url}"\nzk = "{zk_url}"\nzk_session_timeout_s = {SESSION_S}\n')
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    cmd = [*corral_command(), "framework", "run", "batch", "--master", cluster.master_address]
    cmd += ["--config", str(config)]
    record = home / "batch.json"
    procs: list[asyncio.subprocess.Process] = []

    async def start() -> asyncio.subprocess.Process:
        log = (tmp_path / f"instance-{len(procs)}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=log)
        log.close()
        procs.append(proc)
        return proc

    def leader_pid() -> int:
        return int(json.loads(record.read_text())["pid"])

    out, ticks = shared / "out", shared / "ticks"
    try:
        first = await start()
        await eventually(record.exists, 30, "the first instance to lead")
        assert leader_pid() == first.pid
        second = await start()
        await asyncio.sleep(1.0)
        assert first.returncode is None
        assert second.returncode is None
        assert leader_pid() == first.pid  # the second one waits
        client = BatchClient(json.loads(record.read_text())["address"])
        cron = {
            "name": "tick",
            "schedule": "*/2 * * * * *",
            "tasks": [{"name": "t", "command": f"date +%s >> {ticks}"}],
        }
        await asyncio.to_thread(client.submit, cron)

        def cron_runs() -> list[float]:
            rows = _rows(pg_url, "SELECT submitted_at FROM jobs WHERE periodic = 'tick'")
            return sorted(r[0] for r in rows)

        # The first leader runs the cron job at least once before it dies.
        for _ in range(40):  # at most 10 s
            if cron_runs():
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("the cron job did not run on the first leader within 10 s")

        array = {
            "name": "sweep",
            "tasks": [
                {
                    "name": "step",
                    "count": 30,
                    "cpus": 0.5,
                    "command": f"sleep 0.4; echo $CORRAL_TASK_INDEX >> {out}",
                }
            ],
        }
        job_id = (await asyncio.to_thread(client.submit, array))["job_id"]

        def finished() -> int:
            rows = _rows(
                pg_url, "SELECT count(*) FROM attempts WHERE state = 'FINISHED' AND task LIKE 'sweep-%'"
            )
            return int(rows[0][0])

        await eventually(lambda: finished() >= 8, 40, "8 tasks to finish")
        record.unlink()
        first.send_signal(signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), time.time()
        await first.wait()
        done_before = finished()
        assert done_before < 30, "the array ended before the kill; make it longer"
        await eventually(record.exists, SESSION_S + 15, "the standby to take over")
        took = time.monotonic() - killed_at
        assert leader_pid() == second.pid
        client = BatchClient(json.loads(record.read_text())["address"])
        await eventually(lambda: client.job(job_id)["state"] in JOB_FINAL, 60, "the array to end")
        job = await asyncio.to_thread(client.job, job_id)

        def runs_after_kill() -> int:
            return sum(1 for t in cron_runs() if t > killed_wall)

        # The cron job goes on under the new leader (forbid: a run still
        # waiting behind the array skips its slots, so count, don't sleep).
        for _ in range(120):  # at most 30 s
            if runs_after_kill() >= 2:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("no two cron runs on the new leader within 30 s")
        assert job["state"] == "SUCCEEDED"
        assert sorted(int(x) for x in out.read_text().split()) == list(range(30))  # each index once
        ran_ticks = len(ticks.read_text().split())
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 20)
        shutil.rmtree(shared, ignore_errors=True)
    attempts = _rows(pg_url, "SELECT task, state FROM attempts WHERE task LIKE 'sweep-%'")
    for t in job["tasks"]:
        states = [s for task, s in attempts if task == t["id"]]
        assert states.count("FINISHED") == 1, (t["id"], states)
        assert set(states) <= {"FINISHED", "LOST"}, (t["id"], states)
    # The cron job ran on both leaders and no slot ran twice: a slot missed
    # during the failover runs once, late; every run's slot is a distinct
    # 2 s mark, in order.
    runs = cron_runs()
    assert len(runs) >= 3, runs
    assert ran_ticks >= len(runs) - 1  # (the last run may still be on its way)
    slots = [
        r[0]
        for r in _rows(pg_url, "SELECT scheduled_at FROM jobs WHERE periodic = 'tick' ORDER BY submitted_at")
    ]
    assert all(s % 2 == 0 for s in slots), slots
    assert all(b - a >= 2 for a, b in itertools.pairwise(slots)), slots
    assert second.returncode is not None
    print(
        f"standby led {took:.1f} s after kill -9 (session {SESSION_S:g} s); {done_before}/30 done before",
        file=sys.stderr,
    )
