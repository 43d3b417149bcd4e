"""Agent recovery in one process: an agent object stops without killing its
tasks and a new one takes over the same work directory; sandbox GC."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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


class _Node:
    """A master and one agent in this process; ``restart`` stands in for an
    agent process that dies (its tasks run on) and a new one on the same work dir."""

    def __init__(self, tmp_path: Path, **agent_kw: object) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.server = MasterServer(self.address, FAST_MASTER)
        self.work_dir = tmp_path / "agent"
        self.agent_kw = agent_kw
        self.agent = _agent(self.address, self.work_dir, **agent_kw)

    async def stop_agent(self) -> None:
        await self.agent.stop(kill_tasks=False)

    async def start_agent(self) -> Agent:
        self.agent = _agent(self.address, self.work_dir, **self.agent_kw)
        await self.agent.start()
        return self.agent


@contextlib.asynccontextmanager
async def _node(tmp_path: Path, **agent_kw: object) -> AsyncIterator[_Node]:
    node = _Node(tmp_path, **agent_kw)
    await node.server.start()
    await node.agent.start()
    try:
        yield node
    finally:
        await node.agent.stop()
        await node.server.stop()


async def test_a_new_agent_process_takes_over_tasks_and_finished_sandboxes(tmp_path: Path) -> None:
    async with _node(tmp_path) as node, framework(node.address, failover_timeout_s=30) as (driver, rec):
        agent = node.agent
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
        await node.stop_agent()
        # As if it had died in the middle of a SIGKILL round (freeze, kill, thaw).
        agent.containerizer.cgroups.set_frozen(cgroup, True)

        agent = await node.start_agent()
        assert agent.agent_id == agent_id
        assert agent.tasks[(driver.framework_id, "long")].pid == pid
        assert not agent.containerizer.cgroups.frozen(cgroup)  # thawed, it can end
        key = (driver.framework_id, "done")
        assert key in agent.completed  # corral logs still works for it
        async with asyncio.timeout(10):
            await agent.registered.wait()
        driver.kill("long")
        assert (await rec.wait_terminal("long")).state is TaskState.KILLED


async def test_finished_sandboxes_are_collected_after_the_delay(tmp_path: Path) -> None:
    gc = {"gc_delay_s": 1.0, "gc_disk_headroom": 0.0, "gc_interval_s": 0.2}
    async with _node(tmp_path, **gc) as node, framework(node.address) as (driver, rec):
        agent = node.agent
        driver.launch(await rec.next_offer(), [Task("t", "echo out", Resources.of(cpus=0.1, mem=32))])
        await rec.wait_state("t", TaskState.FINISHED)
        await eventually(lambda: len(agent.completed) == 1, 10, "the finished task's ack")
        (sandbox,) = agent.completed.values()
        assert (sandbox / "stdout").read_text() == "out\n"
        await eventually(lambda: not sandbox.exists(), 10, "the sandbox to be collected")
        assert not agent.completed
        trash = node.work_dir / "trash"
        await eventually(lambda: not any(trash.iterdir()), 10, "the trash to be emptied")
        # Forgotten by the checkpoints too: a restarted agent would not list it.
        assert not agent.checkpoints.load().tasks


async def test_a_re_attached_task_keeps_its_disk_limit_and_a_pause(tmp_path: Path) -> None:
    async with (
        _node(tmp_path, disk_watch_interval_s=0.2) as node,
        framework(node.address, failover_timeout_s=30) as (driver, rec),
    ):
        # It fills its sandbox only when told to (the file "go"), after the restart.
        grow = "while [ ! -e go ]; do sleep 0.05; done; head -c 4194304 /dev/zero > big; sleep 300"
        tasks = [
            Task("grow", grow, Resources.of(cpus=0.1, mem=32, disk=1)),
            Task("paused", "sleep 300", Resources.of(cpus=0.1, mem=32)),
        ]
        driver.launch(await rec.next_offer(), tasks)
        for t in tasks:
            await rec.wait_state(t.task_id, TaskState.RUNNING)
        paused = node.agent.tasks[(driver.framework_id, "paused")].container_id
        await node.agent.containerizer.pause(paused)
        await node.stop_agent()

        agent = await node.start_agent()
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


async def test_after_a_reboot_no_recorded_pid_is_trusted(tmp_path: Path) -> None:
    async with _node(tmp_path) as node, framework(node.address, failover_timeout_s=30) as (driver, rec):
        driver.launch(await rec.next_offer(), [Task("t", "sleep 300", Resources.of(cpus=0.1, mem=32))])
        await rec.wait_state("t", TaskState.RUNNING)
        await node.stop_agent()
        # As if the host had rebooted: the checkpoint is from another boot.
        # (The task's process still runs here; after a real reboot a
        # process with its pid and even its start time could be another one.)
        record = node.work_dir / "meta" / "agent.json"
        data = read_record(record)
        assert data is not None
        write_record(record, {**data, "boot_id": "an-earlier-boot"}, durable=True)

        agent = await node.start_agent()
        status = await rec.wait_terminal("t")
        assert status.state is TaskState.LOST
        assert "rebooted" in status.message
        async with asyncio.timeout(10):
            await agent.registered.wait()
        assert read_record(record)["boot_id"] == boot_id()  # type: ignore[index]
