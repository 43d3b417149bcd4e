"""An agent with ``--user-namespaces``: its tasks' root is an unprivileged host
uid, and a restarted agent keeps each recovered task's id range (no new task
gets it) until the task is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.slave.containerizer.isolators.userns import REGISTRY
from corral.testing import FAST_MASTER, eventually, framework
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)


def _agent(address: str, work_dir: Path) -> Agent:
    return Agent(
        AgentConfig(
            master=address,
            work_dir=work_dir,
            resources=Resources.parse("cpus:2;mem:1024;disk:1024"),
            cgroup_prefix="corral-test-userns-agent",
            user_namespaces=True,
        )
    )


def _host_base(pid: int) -> int:
    """The host uid the task's root is (field 2 of its uid_map)."""
    return int(Path(f"/proc/{pid}/uid_map").read_text().split()[1])


def _claimed_by(base: int) -> str:
    """Who holds the range in the host-wide registry ("" if nobody)."""
    try:
        return (REGISTRY / str(base)).read_text()
    except FileNotFoundError:
        return ""


async def test_a_restarted_agent_keeps_the_id_range_of_a_recovered_task(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = _agent(address, tmp_path / "agent")
    await agent.start()
    try:
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            driver.launch(await rec.next_offer(), [Task("long", "sleep 300", SMALL)])
            await rec.wait_state("long", TaskState.RUNNING)
            run = agent.tasks[(driver.framework_id, "long")]
            base = _host_base(run.pid)
            assert base >= 1 << 30, f"the task's root is host uid {base}"
            assert _claimed_by(base).endswith(run.container_id)

            await agent.stop(kill_tasks=False)
            agent = _agent(address, tmp_path / "agent")
            await agent.start()
            async with asyncio.timeout(10):
                await agent.registered.wait()
            assert _claimed_by(base).endswith(run.container_id)

            driver.launch(await rec.next_offer(), [Task("next", "sleep 300", SMALL)])
            await rec.wait_state("next", TaskState.RUNNING)
            second = agent.tasks[(driver.framework_id, "next")]
            assert _host_base(second.pid) != base

            driver.kill("long")
            assert (await rec.wait_terminal("long")).state is TaskState.KILLED
            await eventually(lambda: not _claimed_by(base).endswith(run.container_id), 10, "the range freed")
            driver.kill("next")
            await rec.wait_terminal("next")
    finally:
        await agent.stop()
        await server.stop()
