"""The durable registry in a real ZooKeeper: fenced writes, and a new leader
that knows which agents and frameworks to wait for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from corral.frameworks import Task, TaskState
from corral.master.master import MasterConfig
from corral.master.registry import (
    AGENTS,
    FRAMEWORKS,
    MAINTENANCE,
    ROLES,
    FencedError,
    Write,
    ZooKeeperRegistry,
    role_key,
)
from corral.master.server import MasterServer
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, eventually, framework
from corral.zk import parse_zk_url


def test_a_deposed_leader_cannot_write_the_registry(zk_url: str) -> None:
    url = parse_zk_url(zk_url)
    client = KazooClient(hosts=url.hosts)
    client.start()
    try:
        client.ensure_path(url.leader_dir)
        fence = client.create(f"{url.leader_dir}/member_", b"{}", ephemeral=True, sequence=True)
        registry = ZooKeeperRegistry(client, url, lambda: fence)
        info = pb.FrameworkInfo(id="fw-1", name="one")
        registry.apply(Write(FRAMEWORKS, "fw-1", info.SerializeToString()))
        assert set(registry.load().frameworks) == {"fw-1"}
        role = operator_pb2.RoleSummary(role="eng/ml", weight=2.0)
        registry.apply(Write(ROLES, role_key("eng/ml"), role.SerializeToString()))  # one znode
        assert [r.role for r in registry.load().roles.values()] == ["eng/ml"]
        kept = operator_pb2.AgentMaintenance(draining=True)
        registry.apply(Write(MAINTENANCE, "agent-1", kept.SerializeToString()))
        assert registry.load().maintenance == {"agent-1": kept}
        client.delete(fence)  # what the server does when our session ends
        with pytest.raises(FencedError):
            registry.apply(Write(FRAMEWORKS, "fw-2", pb.FrameworkInfo(id="fw-2").SerializeToString()))
        with pytest.raises(FencedError):
            registry.apply(Write(FRAMEWORKS, "fw-1", None))
        assert set(registry.load().frameworks) == {"fw-1"}  # nothing landed
        assert registry.load().agents == {}
        assert AGENTS == "agents"
    finally:
        client.stop()
        client.close()


@pytest.mark.root
async def test_new_leader_recovers_the_registry_and_reports_agents_that_never_return(
    zk_url: str, tmp_path: Path
) -> None:
    config = MasterConfig(**{**FAST_MASTER.__dict__, "agent_reregister_timeout_s": 1.0})
    masters = [MasterServer("127.0.0.1:0", config, zk=zk_url, zk_session_timeout_s=2) for _ in range(2)]
    agent = Agent(
        AgentConfig(
            master=zk_url,
            work_dir=tmp_path / "agent",
            resources=Resources.parse("cpus:1;mem:512"),
            cgroup_prefix="corral-test-registry",
        )
    )
    try:
        for m in masters:
            await m.start()
        await eventually(lambda: masters[0].leading, 10, "the first master to lead")
        leader, standby = masters
        await agent.start()
        await asyncio.wait_for(agent.registered.wait(), 10)
        async with framework(zk_url, failover_timeout_s=60) as (driver, rec):
            offer = await rec.next_offer()
            driver.launch(offer, [Task("stranded", "sleep 300", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("stranded", TaskState.RUNNING)
            assert leader.master is not None
            assert leader.master.registry is not None
            await leader.master.registry.flush()
            # The agent goes away for good (its task keeps running, unseen)...
            agent._stopping = True
            assert agent._main is not None
            agent._main.cancel()
            # ...and the leader dies.
            await leader.stop()
            await eventually(lambda: standby.master is not None, 10, "the standby to lead")
            assert standby.master is not None
            # It knows the agent and the framework from the registry.
            assert agent.agent_id in standby.master.state.agents
            assert driver.framework_id in standby.master.state.frameworks
            await rec.wait_for(lambda: rec.subscriptions >= 2, 15, "the framework to re-subscribe")
            driver.reconcile([("stranded", offer.agent_id)])
            status = await rec.wait_state("stranded", TaskState.UNREACHABLE, timeout=15)
            assert "did not re-register" in status.message
            # The agent comes back: the task reconciles to RUNNING, same process.
            before = len(rec.updates)
            pid = next(iter(agent.tasks.values())).pid
            agent._stopping = False
            agent._main = asyncio.create_task(agent._connection_loop())
            await rec.wait_for(
                lambda: any(
                    u.task_id == "stranded" and u.state is TaskState.RUNNING for u in rec.updates[before:]
                ),
                15,
                "the task to be RUNNING again",
            )
            assert next(iter(agent.tasks.values())).pid == pid
    finally:
        await agent.stop()
        for m in masters:
            await m.stop()


@pytest.mark.root
async def test_an_agent_away_too_long_is_gone_and_comes_back_as_a_new_agent(
    zk_url: str, tmp_path: Path
) -> None:
    config = MasterConfig(
        **{**FAST_MASTER.__dict__, "agent_reregister_timeout_s": 0.5, "agent_gone_timeout_s": 1.0}
    )
    masters = [MasterServer("127.0.0.1:0", config, zk=zk_url, zk_session_timeout_s=2) for _ in range(2)]
    agent = Agent(
        AgentConfig(
            master=zk_url,
            work_dir=tmp_path / "agent",
            resources=Resources.parse("cpus:1;mem:512"),
            cgroup_prefix="corral-test-gone",
        )
    )
    try:
        for m in masters:
            await m.start()
        await eventually(lambda: masters[0].leading, 10, "the first master to lead")
        leader, standby = masters
        await agent.start()
        await asyncio.wait_for(agent.registered.wait(), 10)
        old_id = agent.agent_id
        async with framework(zk_url, failover_timeout_s=60) as (driver, rec):
            offer = await rec.next_offer()
            driver.launch(offer, [Task("doomed", "sleep 300", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("doomed", TaskState.RUNNING)
            pid = next(iter(agent.tasks.values())).pid
            assert leader.master is not None
            assert leader.master.registry is not None
            await leader.master.registry.flush()
            agent._stopping = True
            assert agent._main is not None
            agent._main.cancel()
            await leader.stop()
            await eventually(lambda: standby.master is not None, 10, "the standby to lead")
            await rec.wait_for(lambda: rec.subscriptions >= 2, 15, "the framework to re-subscribe")
            # The driver reconciles by itself after re-subscribing; ask again
            # until the answer is GONE.
            async with asyncio.timeout(20):
                while (s := rec.latest("doomed")) is None or s.state is not TaskState.GONE:
                    driver.reconcile([("doomed", old_id)])
                    await asyncio.sleep(0.3)
            # Back after being declared gone: its task is killed and it joins
            # as a new agent.
            agent._stopping = False
            agent._main = asyncio.create_task(agent._connection_loop())
            await eventually(
                lambda: agent.agent_id not in ("", old_id) and agent.registered.is_set(), 20, "a new id"
            )
            await eventually(lambda: not Path(f"/proc/{pid}").exists(), 10, "the gone task to be killed")
    finally:
        await agent.stop()
        for m in masters:
            await m.stop()
