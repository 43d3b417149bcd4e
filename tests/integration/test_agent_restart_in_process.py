"""Agent recovery in one process: an agent object stops without killing its
tasks and a new one takes over the same work directory; sandbox GC."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.slave.checkpoints import boot_id, read_record, write_record
from corral.testing import FAST_MASTER, eventually, framework
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root]


def _agent(address: str, work_dir: Path, resources: str = "cpus:2;mem:1024;disk:1024", **kw: object) -> Agent:
    return Agent(
        AgentConfig(
            master=address,
            work_dir=work_dir,
            resources=Resources.parse(resources),
            cgroup_prefix="corral-test-recovery-int",
            **kw,  # type: ignore[arg-type]
        )
    )


async def test_a_new_agent_process_takes_over_tasks_and_finished_sandboxes(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = _agent(address, tmp_path / "agent")
    await agent.start()
    try:
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            small = Resources.of(cpus=0.1, mem=32)
            driver.launch(
                await rec.next_offer(), [Task("done", "echo out", small), Task("long", "sleep 300", small)]
            )
            await rec.wait_state("done", TaskState.FINISHED)
            await rec.wait_state("long", TaskState.RUNNING)
            await eventually(lambda: len(agent.completed) == 1, 10, "the finished task's ack")
            run = agent.tasks[(driver.framework_id, "long")]
            agent_id, pid = agent.agent_id, run.pid
            cgroup = f"{agent.containerizer.cgroup_prefix}/{run.container_id}"
            await agent.stop(kill_tasks=False)
            # As if it had died in the middle of a SIGKILL round (freeze, kill, thaw).
            agent.containerizer.cgroups.set_frozen(cgroup, True)

            agent = _agent(address, tmp_path / "agent")
            await agent.start()
            assert agent.agent_id == agent_id
            assert agent.tasks[(driver.framework_id, "long")].pid == pid
            assert not agent.containerizer.cgroups.frozen(cgroup)  # thawed, it can end
            key = (driver.framework_id, "done")
            assert key in agent.completed  # corral logs still works for it
            await asyncio.wait_for(agent.registered.wait(), 10)
            driver.kill("long")
            assert (await rec.wait_terminal("long")).state is TaskState.KILLED
    finally:
        await agent.stop()
        await server.stop()


async def test_finished_sandboxes_are_collected_after_the_delay(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = _agent(address, tmp_path / "agent", gc_delay_s=1.0, gc_disk_headroom=0.0, gc_interval_s=0.2)
    await agent.start()
    try:
        async with framework(address) as (driver, rec):
            driver.launch(await rec.next_offer(), [Task("t", "echo out", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("t", TaskState.FINISHED)
            await eventually(lambda: len(agent.completed) == 1, 10, "the finished task's ack")
            (sandbox,) = agent.completed.values()
            assert (sandbox / "stdout").read_text() == "out\n"
            await eventually(lambda: not sandbox.exists(), 10, "the sandbox to be collected")
            assert not agent.completed
            trash = tmp_path / "agent" / "trash"
            await eventually(lambda: not any(trash.iterdir()), 10, "the trash to be emptied")
            # Forgotten by the checkpoints too: a restarted agent would not list it.
            assert not agent.checkpoints.load().tasks
    finally:
        await agent.stop()
        await server.stop()


async def test_a_re_attached_task_keeps_its_disk_limit_and_a_pause(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = _agent(address, tmp_path / "agent", disk_watch_interval_s=0.2)
    await agent.start()
    try:
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            # It fills its sandbox only when told to (the file "go"), after the restart.
            grow = "while [ ! -e go ]; do sleep 0.05; done; head -c 4194304 /dev/zero > big; sleep 300"
            tasks = [
                Task("grow", grow, Resources.of(cpus=0.1, mem=32, disk=1)),
                Task("paused", "sleep 300", Resources.of(cpus=0.1, mem=32)),
            ]
            driver.launch(await rec.next_offer(), tasks)
            for t in tasks:
                await rec.wait_state(t.task_id, TaskState.RUNNING)
            paused = agent.tasks[(driver.framework_id, "paused")].container_id
            await agent.containerizer.pause(paused)
            await agent.stop(kill_tasks=False)

            agent = _agent(address, tmp_path / "agent", disk_watch_interval_s=0.2)
            await agent.start()
            assert agent.containerizer.state(paused) == "paused"  # a pause on purpose stays
            cgroup = f"{agent.containerizer.cgroup_prefix}/{paused}"
            assert agent.containerizer.cgroups.frozen(cgroup)
            (agent.tasks[(driver.framework_id, "grow")].sandbox / "go").touch()
            status = await rec.wait_terminal("grow")
            assert status.state is TaskState.FAILED
            assert status.reason == "CONTAINER_LIMITATION_DISK", status
            await agent.containerizer.resume(paused)
            driver.kill("paused")
            assert (await rec.wait_terminal("paused")).state is TaskState.KILLED
    finally:
        await agent.stop()
        await server.stop()


async def test_after_a_reboot_no_recorded_pid_is_trusted(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = _agent(address, tmp_path / "agent")
    await agent.start()
    try:
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            driver.launch(await rec.next_offer(), [Task("t", "sleep 300", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("t", TaskState.RUNNING)
            await agent.stop(kill_tasks=False)
            # As if the host had rebooted: the checkpoint is from another boot.
            # (The task's process still runs here; after a real reboot a
            # process with its pid and even its start time could be another one.)
            record = tmp_path / "agent" / "meta" / "agent.json"
            data = read_record(record)
            assert data is not None
            write_record(record, {**data, "boot_id": "an-earlier-boot"}, durable=True)

            agent = _agent(address, tmp_path / "agent")
            await agent.start()
            status = await rec.wait_terminal("t")
            assert status.state is TaskState.LOST
            assert "rebooted" in status.message
            await asyncio.wait_for(agent.registered.wait(), 10)
            assert read_record(record)["boot_id"] == boot_id()  # type: ignore[index]
    finally:
        await agent.stop()
        await server.stop()
