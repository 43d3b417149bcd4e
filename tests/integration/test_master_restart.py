"""A standalone master restarts: agents reconnect under the same id with
their running tasks, the framework re-subscribes with its id, nothing is lost."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import grpc.aio
import pytest

from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2, operator_pb2_grpc
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, framework

#: A restarted standalone master adopts what agents report only in its
#: re-registration window (the security review's injection): long enough
#: here for the agent's reconnect backoff.
RESTARTED = dataclasses.replace(FAST_MASTER, agent_reregister_timeout_s=10.0)

pytestmark = [pytest.mark.root]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_agent_and_framework_survive_a_master_restart(tmp_path: Path) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = Agent(
        AgentConfig(
            master=address,
            work_dir=tmp_path / "agent",
            resources=Resources.parse("cpus:1;mem:512"),
            cgroup_prefix="corral-test-restart",
        )
    )
    await agent.start()
    try:
        await asyncio.wait_for(agent.registered.wait(), 10)
        agent_id = agent.agent_id
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            offer = await rec.next_offer()
            driver.launch(offer, [Task("long", "sleep 300", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("long", TaskState.RUNNING)
            framework_id = driver.framework_id
            pid_before = next(iter(agent.tasks.values())).pid

            await server.stop()
            server = MasterServer(address, RESTARTED)
            await server.start()

            # The agent re-registers under the same id with its task.
            async with asyncio.timeout(15):
                while not (agent.registered.is_set() and server.master and server.master.state.agents):
                    await asyncio.sleep(0.05)
            assert list(server.master.state.agents) == [agent_id]
            # The framework re-subscribes with the same id.
            await rec.wait_for(lambda: rec.subscriptions >= 2, 15, "re-subscription")
            assert driver.framework_id == framework_id
            async with grpc.aio.insecure_channel(address) as channel:
                stub = operator_pb2_grpc.OperatorStub(channel)
                tasks = await stub.ListTasks(operator_pb2.ListTasksRequest())
            assert [(t.task_info.task_id, t.status.state) for t in tasks.tasks] == [("long", pb.TASK_RUNNING)]
            pid_after = next(iter(agent.tasks.values())).pid
            assert pid_after == pid_before  # not restarted

            # And it can still be controlled through the new master.
            driver.kill("long")
            status = await rec.wait_terminal("long")
            assert status.state is TaskState.KILLED
    finally:
        await agent.stop()
        await server.stop()


async def test_task_that_ends_while_the_master_is_down_is_reported(tmp_path: Path) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = Agent(
        AgentConfig(
            master=address,
            work_dir=tmp_path / "agent",
            resources=Resources.parse("cpus:1;mem:512"),
            cgroup_prefix="corral-test-restart2",
        )
    )
    await agent.start()
    try:
        await asyncio.wait_for(agent.registered.wait(), 10)
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            offer = await rec.next_offer()
            driver.launch(offer, [Task("short", "sleep 1; exit 4", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("short", TaskState.RUNNING)
            await server.stop()
            # The task ends while no master runs; the agent keeps its update.
            async with asyncio.timeout(15):
                while "short" in {tid for _, tid in agent.tasks} and not any(
                    s.task_id == "short" and s.state == pb.TASK_FAILED
                    for q in agent.updates.pending().values()
                    for s in q
                ):
                    await asyncio.sleep(0.05)
            server = MasterServer(address, RESTARTED)
            await server.start()
            status = await rec.wait_terminal("short", timeout=20)
            assert status.state is TaskState.FAILED
            assert status.exit_code == 4
    finally:
        await agent.stop()
        await server.stop()


async def test_agent_back_with_other_resources_is_offered_what_it_has(tmp_path: Path) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    config = AgentConfig(
        master=address,
        work_dir=tmp_path / "agent",
        resources=Resources.parse("cpus:2;mem:1024"),
        cgroup_prefix="corral-test-resize",
    )
    agent = Agent(config)
    await agent.start()
    try:
        await asyncio.wait_for(agent.registered.wait(), 10)
        first_id = agent.agent_id
        await agent.stop()
        config.resources = Resources.parse("cpus:1;mem:256")
        agent = Agent(config)  # same work dir: same agent id
        await agent.start()
        await asyncio.wait_for(agent.registered.wait(), 10)
        assert agent.agent_id == first_id
        async with framework(address) as (_driver, rec):
            offer = await rec.next_offer()
            assert offer.resources == Resources.parse("cpus:1;mem:256")
    finally:
        await agent.stop()
        await server.stop()
