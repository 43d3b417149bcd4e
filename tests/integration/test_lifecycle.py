"""Agent liveness, framework teardown and failover, reconciliation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc.aio
import pytest

from corral.cli.local import LocalCluster
from corral.frameworks import Task, TaskState
from corral.proto import operator_pb2, operator_pb2_grpc
from corral.resources import Resources
from corral.testing import framework, local_cluster

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)


async def _agents(address: str) -> operator_pb2.ListAgentsResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await operator_pb2_grpc.OperatorStub(channel).ListAgents(operator_pb2.ListAgentsRequest())


async def _frameworks(address: str) -> operator_pb2.ListFrameworksResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        return await stub.ListFrameworks(operator_pb2.ListFrameworksRequest())


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def _poll(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_silent_agent_is_marked_disconnected_and_not_offered(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, agents=2) as cluster:
        silent = cluster.agent_list[0]
        # Stop its heartbeats but keep the stream open: only the heartbeat
        # timeout (3 x 0.5 s here) can notice. It must not reconnect after the
        # master drops it, as a hung agent would not.
        assert silent._timers is not None
        silent._timers.cancel()
        silent._stopping = True

        async def marked() -> bool:
            agents = {a.agent_info.id: a.connected for a in (await _agents(cluster.master_address)).agents}
            return agents[silent.agent_id] is False

        await _poll(marked, 10, "the silent agent to be marked disconnected")
        async with framework(cluster.master_address) as (driver, rec):
            for _ in range(3):
                offer = await rec.next_offer()
                assert offer.agent_id != silent.agent_id
                driver.decline(offer, refuse_s=0)


async def test_listing_shows_resources_in_use(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("busy", "sleep 30", Resources.of(cpus=0.5, mem=100))], refuse_s=0)
        await rec.wait_state("busy", TaskState.RUNNING)
        agents = {a.agent_info.id: a for a in (await _agents(cluster.master_address)).agents}
        from corral.codec import resources_from_proto

        agent = agents[offer.agent_id]
        assert agent.connected
        assert agent.task_count == 1
        used = resources_from_proto(agent.allocated)
        assert used.scalar("cpus") >= 500
        fws = (await _frameworks(cluster.master_address)).frameworks
        assert [f.framework_info.name for f in fws] == ["test-framework"]
        assert fws[0].task_count == 1


async def test_teardown_kills_tasks_and_removes_the_framework(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("long", "sleep 300", SMALL)])
        await rec.wait_state("long", TaskState.RUNNING)
        run = next(r for a in cluster.agent_list for r in a.tasks.values())
        pid = run.pid
        driver.teardown()

        async def gone() -> bool:
            return not (await _frameworks(cluster.master_address)).frameworks

        await _poll(gone, 15, "the framework to be removed")
        async with asyncio.timeout(10):
            while _exists(pid):
                await asyncio.sleep(0.05)


async def test_framework_past_its_failover_timeout_is_torn_down(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address, failover_timeout_s=0.5) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("orphan", "sleep 300", SMALL)])
        await rec.wait_state("orphan", TaskState.RUNNING)
        pid = next(r for a in cluster.agent_list for r in a.tasks.values()).pid
        driver.stop()  # disconnect without teardown
        async with asyncio.timeout(15):
            while _exists(pid):
                await asyncio.sleep(0.05)

        async def gone() -> bool:
            return not (await _frameworks(cluster.master_address)).frameworks

        await _poll(gone, 15, "the framework to be removed")


async def test_reconcile_reports_known_and_unknown_tasks(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("r1", "sleep 30", SMALL)])
        await rec.wait_state("r1", TaskState.RUNNING)
        before = len(rec.updates)
        driver.reconcile([("r1", offer.agent_id), ("never", offer.agent_id)])
        await rec.wait_for(lambda: len(rec.updates) >= before + 2, what="reconciliation answers")
        answers = {u.task_id: u for u in rec.updates[before:]}
        assert answers["r1"].state is TaskState.RUNNING
        assert answers["r1"].reason == "RECONCILIATION"
        assert answers["never"].state is TaskState.UNKNOWN
        before = len(rec.updates)
        driver.reconcile()  # implicit: every live task
        await rec.wait_for(lambda: len(rec.updates) > before, what="implicit reconciliation")
        assert rec.updates[-1].task_id == "r1"


async def test_a_scheduler_callback_that_raises_stops_the_driver_with_that_error(
    cluster: LocalCluster,
) -> None:
    from corral.frameworks import Scheduler, SchedulerDriver
    from corral.frameworks.types import Offer

    class Broken(Scheduler):
        async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
            raise RuntimeError("scheduler bug")

    driver = SchedulerDriver(Broken(), name="broken", master=cluster.master_address)
    with pytest.raises(RuntimeError, match="scheduler bug"):
        await asyncio.wait_for(driver.run(), 20)


async def test_teardown_while_an_agent_is_away_kills_its_tasks_when_it_returns(
    cluster: LocalCluster,
) -> None:
    assert cluster.server.master is not None
    master = cluster.server.master
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("away", "sleep 300", SMALL)])
        await rec.wait_state("away", TaskState.RUNNING)
        agent = next(a for a in cluster.agent_list if a.agent_id == offer.agent_id)
        pid = next(iter(agent.tasks.values())).pid
        # Cut the agent off and keep it from reconnecting for now.
        agent._stopping = True
        record = master.state.agents[agent.agent_id]
        outbox = master.outbox(record.stream)
        assert outbox is not None
        master.agent_disconnected(agent.agent_id, outbox)
        assert agent._main is not None
        await asyncio.wait_for(agent._main, 10)
        driver.teardown()

        async def gone() -> bool:
            return not (await _frameworks(cluster.master_address)).frameworks

        await _poll(gone, 15, "the framework to be removed")
        assert _exists(pid)  # nobody could tell the agent yet
        # The agent comes back: the master tells it to kill what it still runs.
        agent._stopping = False
        agent._main = asyncio.create_task(agent._connection_loop())
        async with asyncio.timeout(15):
            while _exists(pid):
                await asyncio.sleep(0.05)


async def test_a_second_driver_with_the_same_id_takes_over_and_the_first_stops(
    cluster: LocalCluster,
) -> None:
    from corral.frameworks import SchedulerDriver, SubscribeError
    from corral.testing import RecordingScheduler

    first = SchedulerDriver(RecordingScheduler(), name="twin", master=cluster.master_address)
    first_run = asyncio.create_task(first.run())
    await asyncio.wait_for(first.connected.wait(), 10)
    second = SchedulerDriver(
        RecordingScheduler(), name="twin", master=cluster.master_address, framework_id=first.framework_id
    )
    second_run = asyncio.create_task(second.run())
    try:
        await asyncio.wait_for(second.connected.wait(), 10)
        # The first is told it was replaced and stops for good, no reconnect loop.
        with pytest.raises(SubscribeError, match="ABORTED"):
            await asyncio.wait_for(first_run, 10)
        await asyncio.sleep(0.5)
        assert second.connected.is_set()
    finally:
        second.teardown()
        await asyncio.wait_for(second_run, 10)
