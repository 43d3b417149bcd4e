"""The durable batch framework against a real cluster: retries, dependencies,
constraints, timeouts, cron runs, the CLI, and a kill -9 of the service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks.batch.api import BatchClient
from corral.frameworks.batch.engine import JOB_FINAL, BatchEngine
from corral.frameworks.batch.service import BatchService
from corral.frameworks.batch.store import Store
from corral.testing import corral_command, eventually, local_cluster
from corral.testing import run_corral as cli

pytestmark = [pytest.mark.root]


async def finished(engine: BatchEngine, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    await eventually(lambda: engine.jobs[job_id].state in JOB_FINAL, timeout, f"job {job_id} to end")
    return engine.job_view(job_id)


async def test_a_200_task_array_with_random_failures_completes_through_retries(service: BatchService) -> None:
    engine = service.engine
    job_id = engine.submit(
        {
            "name": "flaky",
            "tasks": [
                {
                    "name": "t",
                    "count": 200,
                    "cpus": 0.05,
                    "mem": 16,
                    "retries": 10,
                    "backoff_s": 0.05,
                    # fails one time in four
                    "command": "test $(od -An -N1 -tu1 /dev/urandom) -ge 64",
                }
            ],
        }
    )["job_id"]
    job = await finished(engine, job_id, 60)
    assert job["state"] == "SUCCEEDED", [t for t in job["tasks"] if t["state"] != "FINISHED"][:3]
    tries = [t["attempts"] for t in job["tasks"]]
    assert all(t["state"] == "FINISHED" for t in job["tasks"])
    assert sum(tries) > 200, "with one failure in four, some task must have been retried"
    for t in job["tasks"]:
        states = [a["state"] for a in t["history"]]
        assert states[-1] == "FINISHED"
        assert states.count("FINISHED") == 1
        assert all(a["exit_code"] == 1 for a in t["history"][:-1] if a["state"] == "FAILED")


async def test_dag_order_skips_and_exhausted_retries(service: BatchService, shared_dir: Path) -> None:
    engine = service.engine
    log = shared_dir / "order"
    step = f"echo $CORRAL_JOB_ID-$CORRAL_TASK_INDEX >> {log}.$GROUP"
    job_id = engine.submit(
        {
            "name": "dag",
            "tasks": [
                {"name": "c", "after": ["a", "b"], "count": 2, "command": step, "env": {"GROUP": "c"}},
                {"name": "a", "count": 3, "command": step, "env": {"GROUP": "a"}},
                {"name": "b", "after": ["a"], "count": 2, "command": step, "env": {"GROUP": "b"}},
                {"name": "broken", "command": "exit 3", "retries": 1, "backoff_s": 0.05},
                {"name": "never", "after": ["broken"], "command": "true"},
            ],
        }
    )["job_id"]
    job = await finished(engine, job_id)
    tasks = {t["id"].removeprefix(job_id + "."): t for t in job["tasks"]}
    assert job["state"] == "FAILED"
    assert tasks["broken.0"]["state"] == "FAILED"
    assert tasks["broken.0"]["attempts"] == 2
    assert [a["exit_code"] for a in tasks["broken.0"]["history"]] == [3, 3]
    assert tasks["never.0"]["state"] == "SKIPPED"
    assert "broken" in tasks["never.0"]["message"]

    def span(group: str) -> tuple[float, float]:
        runs = [t["history"][-1] for name, t in tasks.items() if name.startswith(group + ".")]
        return min(r["launched_at"] for r in runs), max(r["finished_at"] for r in runs)

    assert span("a")[1] <= span("b")[0]
    assert max(span("a")[1], span("b")[1]) <= span("c")[0]
    lines = {g: Path(f"{log}.{g}").read_text().split() for g in "abc"}  # noqa: ASYNC240 (tiny files)
    assert {g: len(v) for g, v in lines.items()} == {"a": 3, "b": 2, "c": 2}


async def test_constraints_unique_host_and_timeout(tmp_path: Path) -> None:
    attrs = [{"rack": "r1", "zone": "a"}, {"rack": "r2", "zone": "b"}]
    async with local_cluster(tmp_path / "c", agents=2, attributes=attrs) as cluster:
        svc = BatchService(cluster.master_address, ":memory:", record=False)
        await svc.start()
        try:
            engine = svc.engine
            job_id = engine.submit(
                {
                    "name": "placed",
                    "tasks": [
                        {"name": "r1", "count": 4, "command": "true", "constraints": ["rack == r1"]},
                        {"name": "zb", "count": 2, "command": "true", "constraints": ["zone in [b, c]"]},
                        {"name": "spread", "count": 2, "command": "sleep 0.3", "unique_host": True},
                        {"name": "slow", "command": "sleep 30", "timeout_s": 0.5},
                    ],
                }
            )["job_id"]
            job = await finished(engine, job_id)
        finally:
            await svc.stop()
    agents = [a.agent_id for a in cluster.agent_list]
    by_group: dict[str, list[dict[str, Any]]] = {}
    for t in job["tasks"]:
        by_group.setdefault(t["group"], []).append(t)
    assert {t["agent_id"] for t in by_group["r1"]} == {agents[0]}
    assert {t["agent_id"] for t in by_group["zb"]} == {agents[1]}
    assert len({t["agent_id"] for t in by_group["spread"]}) == 2
    assert all(t["state"] == "FINISHED" for g in ("r1", "zb", "spread") for t in by_group[g])
    (slow,) = by_group["slow"]
    assert slow["state"] == "FAILED"
    assert slow["history"][0]["timed_out"]
    assert "timed out after 0.5s" in slow["message"]


async def test_periodic_jobs_run_on_their_schedule(service: BatchService) -> None:
    engine = service.engine
    answer = engine.submit({"name": "tick", "schedule": "* * * * * *", "tasks": [{"command": "true"}]})
    assert answer["periodic_id"] == "tick"
    await eventually(
        lambda: sum(1 for j in engine.jobs.values() if j.periodic == "tick" and j.state == "SUCCEEDED") >= 2,
        15,
        "two runs of the periodic job",
    )
    engine.cancel("tick")
    assert "tick" not in engine.jobs_view()["periodic"]


async def test_a_broken_stored_periodic_job_is_reported_and_the_service_serves_the_rest(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    db = tmp_path / "batch.db"
    Store(db).close()  # the schema
    good = json.dumps({"name": "good", "tasks": [{"command": "true"}]})
    with sqlite3.connect(db) as conn:  # as an older version, or a hand edit, may have left them
        conn.execute(
            "INSERT INTO periodic (id, schedule, spec, next_run, created_at) VALUES"
            " ('broken', '* * * * * *', '{\"name\": \"broken\", \"tasks\": 3}', 0, 0),"
            " ('good', '* * * * * *', ?, 0, 0)",
            (good,),
        )
    svc = BatchService(cluster.master_address, db, record=False)
    await svc.start()
    try:
        engine = svc.engine
        job_id = engine.submit({"name": "once", "tasks": [{"command": "true"}]})["job_id"]
        await finished(engine, job_id)
        await eventually(
            lambda: any(j.periodic == "good" and j.state == "SUCCEEDED" for j in engine.jobs.values()),
            15,
            "a run of the good periodic job",
        )
        assert not svc.failed.is_set(), svc.failure
        code, out = await cli("job", "broken", "--batch", svc.address, env={"COLUMNS": "300"})  # one line
        assert code == 0, out
        assert "FAILED" in out
        assert "tasks: needs at least one [[tasks]] table" in out
        code, out = await cli("jobs", "--batch", svc.address)
        assert "broken" in out
        assert "ACTIVE" in out  # the good one
    finally:
        await svc.stop()


async def test_cli_submit_wait_job_jobs_and_cancel(service: BatchService, tmp_path: Path) -> None:
    addr = service.address
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[tasks]]\ncommand = "exit 3"\nretries = 1\nbackoff_s = 0.05\n')
    code, out = await cli("submit", str(bad), "--wait", "--batch", addr)
    assert code == 1, out
    assert "FAILED" in out
    assert "0/1 tasks finished" in out
    job_id = out.split("submitted job ")[1].split()[0]

    code, out = await cli("job", job_id, "--attempts", "--batch", addr)
    assert code == 1, out  # the job FAILED (docs/cli.md, exit codes)
    assert out.count(f"{job_id}.task0.0.a") >= 2  # both attempts, with their exit code
    code, out = await cli("jobs", "--batch", addr)
    assert job_id in out
    assert "FAILED" in out

    sleepy = tmp_path / "sleepy.toml"
    sleepy.write_text('[[tasks]]\ncommand = "sleep 60"\n')
    code, out = await cli("submit", str(sleepy), "--batch", addr)
    assert code == 0, out
    sleepy_id = out.split("submitted job ")[1].split()[0]
    await eventually(
        lambda: service.engine.job_view(sleepy_id)["counts"].get("RUNNING") == 1, 20, "the sleeper to run"
    )
    code, out = await cli("cancel", sleepy_id, "--batch", addr)
    assert code == 0
    assert "cancelled" in out
    job = await finished(service.engine, sleepy_id)
    assert job["state"] == "CANCELLED"
    assert job["tasks"][0]["history"][0]["state"] == "KILLED"

    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[tasks]]\ncommand = "true"\nretry = 2\n')
    code, out = await cli("submit", str(unknown), "--batch", addr)
    assert code != 0
    assert "unknown.toml:3" in out
    assert "'retry'" in out
    code, out = await cli("job", "no-such-job", "--batch", addr)
    assert code == 4
    assert "job 'no-such-job': no job has this id" in out
    assert "Traceback" not in out


def attempts_in(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT task, id, state FROM attempts ORDER BY rowid").fetchall()


async def test_kill_9_of_the_service_mid_job_loses_nothing_and_reruns_nothing(
    cluster: LocalCluster, tmp_path: Path, shared_dir: Path
) -> None:
    home = tmp_path / "home"
    db = tmp_path / "batch.db"
    config = tmp_path / "batch.toml"
    config.write_text(f'db = "{db}"\n')
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    out = shared_dir / "out"
    cmd = [*corral_command(), "framework", "run", "batch", "--master", cluster.master_address]
    cmd += ["--config", str(config)]

    async def start() -> asyncio.subprocess.Process:
        (home / "batch.json").unlink(missing_ok=True)
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=asyncio.subprocess.DEVNULL)
        await eventually((home / "batch.json").exists, 20, "the batch service to start")
        return proc

    proc = await start()
    try:
        client = BatchClient(json.loads((home / "batch.json").read_text())["address"])
        spec = {
            "name": "durable",
            "tasks": [
                {
                    "name": "step",
                    "count": 30,
                    "cpus": 0.5,
                    "command": f"sleep 0.4; echo $CORRAL_TASK_INDEX >> {out}",
                }
            ],
        }
        job_id = (await asyncio.to_thread(client.submit, spec))["job_id"]

        def done() -> int:
            return sum(1 for _, _, state in attempts_in(db) if state == "FINISHED")

        await eventually(lambda: done() >= 8, 30, "8 tasks to finish")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        finished_before = done()
        assert finished_before < 30, "the job ended before the kill; make it longer"

        proc = await start()
        client = BatchClient(json.loads((home / "batch.json").read_text())["address"])
        await eventually(
            lambda: client.job(job_id)["state"] in JOB_FINAL, 40, "the job to end after the restart"
        )
        job = await asyncio.to_thread(client.job, job_id)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
    assert job["state"] == "SUCCEEDED"
    # Every index ran exactly once: none lost, none run twice.
    assert sorted(int(x) for x in out.read_text().split()) == list(range(30))
    rows = attempts_in(db)
    for t in job["tasks"]:
        states = [state for task, _, state in rows if task == t["id"]]
        assert states.count("FINISHED") == 1, (t["id"], states)
        # Anything else is a launch lost with the killed process, never a second run.
        assert set(states) <= {"FINISHED", "LOST"}, (t["id"], states)
    print(f"finished before the kill: {finished_before}/30", file=sys.stderr)


async def test_a_master_failover_mid_job_loses_nothing_and_reruns_nothing(
    zk_url: str, tmp_path: Path, shared_dir: Path
) -> None:
    from corral.master.server import MasterServer
    from corral.resources import Resources
    from corral.slave.agent import Agent, AgentConfig
    from corral.testing import FAST_MASTER

    masters = [MasterServer("127.0.0.1:0", FAST_MASTER, zk=zk_url, zk_session_timeout_s=2) for _ in range(2)]
    prefix = f"corral-test-{uuid.uuid4().hex[:8]}"
    agents = [
        Agent(
            AgentConfig(
                master=zk_url,
                work_dir=tmp_path / f"agent-{i}",
                resources=Resources.parse("cpus:2;mem:1024"),
                cgroup_prefix=f"{prefix}/agent-{i}",
                hostname=f"failover-agent-{i}",
            )
        )
        for i in range(2)
    ]
    out = shared_dir / "out"
    svc: BatchService | None = None
    try:
        for m in masters:
            await m.start()
        await eventually(lambda: masters[0].leading, 10, "the first master to lead")
        for a in agents:
            await a.start()
        await asyncio.wait_for(asyncio.gather(*(a.registered.wait() for a in agents)), 10)
        svc = BatchService(zk_url, tmp_path / "batch.db", record=False)
        await svc.start()
        engine = svc.engine
        command = f"sleep 0.3; echo $CORRAL_TASK_INDEX >> {out}"
        job_id = engine.submit({"name": "ha", "tasks": [{"command": command, "count": 24, "cpus": 0.5}]})[
            "job_id"
        ]
        await eventually(lambda: engine.job_counts(job_id)["FINISHED"] >= 4, 20, "4 tasks to finish")
        await masters[0].stop()
        await eventually(lambda: masters[1].leading, 10, "the standby to lead")
        job = await finished(engine, job_id, 40)
    finally:
        steps = [("the batch service", svc.stop())] if svc is not None else []
        steps += [(f"agent {i}", a.stop()) for i, a in enumerate(agents)]
        steps += [(f"master {i}", m.stop()) for i, m in enumerate(masters)]
        for what, step in steps:
            try:
                await asyncio.wait_for(step, 10)
            except TimeoutError:
                raise AssertionError(f"stopping {what} took more than 10 s") from None
    assert job["state"] == "SUCCEEDED"
    assert sorted(int(x) for x in out.read_text().split()) == list(range(24))
    for t in job["tasks"]:
        states = [a["state"] for a in t["history"]]
        assert states.count("FINISHED") == 1, (t["id"], states)
        assert set(states) <= {"FINISHED", "LOST"}, (t["id"], states)


async def test_a_task_no_agent_can_ever_fit_is_failed_at_once_or_waits_when_asked(
    service: BatchService,
) -> None:
    # Agents of cpus:2 each (the cluster fixture): 3 cpus never fit, and the
    # service learns it from ListAgents, not from offers.
    engine = service.engine
    never = "no agent can ever fit this task: cpus 3 asked, the largest agent has 2"
    job_id = engine.submit({"name": "huge", "tasks": [{"name": "t", "command": "true", "cpus": 3}]})["job_id"]
    job = await finished(engine, job_id, 15)
    assert job["state"] == "FAILED"
    assert job["tasks"][0]["message"] == f"unschedulable: {never}"
    assert job["tasks"][0]["attempts"] == 0

    waiting = engine.submit(
        {"name": "patient", "tasks": [{"name": "t", "command": "true", "cpus": 3, "wait_for_agents": True}]}
    )["job_id"]
    await eventually(
        lambda: engine.job_view(waiting, with_tasks=False)["unschedulable"] == {"t": never},
        15,
        "the waiting job to be shown unschedulable",
    )
    (entry,) = await asyncio.to_thread(BatchClient(service.address).pending)
    assert entry["never_fits"] == never
    assert entry["rejected"]["resources"]["count"] == 2
    assert entry["smallest_change"].startswith("lower the request to cpus 2, mem 32")
    assert engine.jobs[waiting].state == "RUNNING"
    engine.cancel(waiting)
