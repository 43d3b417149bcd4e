"""Masters elected through a real ZooKeeper: a non-leader redirects, and when
the leader goes, agents and frameworks follow the new one with nothing lost."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral.detector import leader_from_error
from corral.frameworks import Task, TaskState
from corral.proto import operator_pb2, operator_pb2_grpc
from corral.resources import Resources
from corral.testing import elected_cluster, eventually, framework

pytestmark = [pytest.mark.root]


async def test_non_leader_redirects_and_clients_follow_a_failover(zk_url: str, tmp_path: Path) -> None:
    async with elected_cluster(zk_url, tmp_path) as ((leader, standby), agent):
        assert leader.leading
        assert not standby.leading

        # A non-leading master answers with UNAVAILABLE and names the leader.
        async with grpc.aio.insecure_channel(standby.address) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListAgents(operator_pb2.ListAgentsRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert leader_from_error(err.value) == leader.address
            info = await stub.GetMasterInfo(operator_pb2.GetMasterInfoRequest())
            assert not info.leading

        agent_id = agent.agent_id
        async with framework(zk_url, failover_timeout_s=30) as (driver, rec):
            offer = await rec.next_offer()
            driver.launch(offer, [Task("survivor", "sleep 300", Resources.of(cpus=0.1, mem=32))])
            await rec.wait_state("survivor", TaskState.RUNNING)
            pid = next(iter(agent.tasks.values())).pid
            framework_id = driver.framework_id

            await leader.stop()  # a clean exit: the standby takes over at once
            await eventually(lambda: standby.leading, 10, "the standby to lead")
            await eventually(
                lambda: standby.master is not None and agent_id in standby.master.state.agents,
                15,
                "the agent to re-register with the new leader",
            )
            await rec.wait_for(lambda: rec.subscriptions >= 2, 15, "the framework to re-subscribe")
            assert driver.framework_id == framework_id
            # The SDK reconciled by itself: the task's state came back.
            await rec.wait_for(
                lambda: any(
                    u.task_id == "survivor" and u.reason == "RECONCILIATION" and u.state is TaskState.RUNNING
                    for u in rec.updates
                ),
                15,
                "the SDK's own reconciliation",
            )
            assert next(iter(agent.tasks.values())).pid == pid  # still the same process
            assert standby.master is not None
            task = standby.master.state.task(framework_id, "survivor")
            assert task is not None
            assert task.status.state == TaskState.RUNNING.value

            # New work goes through the new leader.
            offer = await rec.next_offer()
            driver.launch(offer, [Task("after", "echo after", Resources.of(cpus=0.1, mem=32))])
            assert (await rec.wait_terminal("after")).state is TaskState.FINISHED
            driver.kill("survivor")
            assert (await rec.wait_terminal("survivor")).state is TaskState.KILLED
