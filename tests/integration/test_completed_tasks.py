"""Completed tasks stay listed after their framework is torn down (issue 18:
`corral tasks --all` was empty after a teardown), bounded per framework as
Mesos' --max_completed_tasks_per_framework."""

from __future__ import annotations

import asyncio

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks import Task, TaskState
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import Resources
from corral.testing import framework
from corral.transport import Credentials, make_channel

pytestmark = [pytest.mark.root]


async def test_tasks_of_a_torn_down_framework_stay_listed(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        framework_id = driver.framework_id
        offer = await rec.next_offer()
        driver.launch(offer, [Task("once", "echo hi", Resources.of(cpus=0.1, mem=32))])
        assert (await rec.wait_terminal("once")).state is TaskState.FINISHED
    channel = make_channel(cluster.master_address, Credentials(claim="operator:test"))
    stub = operator_pb2_grpc.OperatorStub(channel)
    try:
        async with asyncio.timeout(20):
            while framework_id in {
                f.framework_info.id
                for f in (await stub.ListFrameworks(op.ListFrameworksRequest())).frameworks
            }:
                await asyncio.sleep(0.1)  # the teardown completes once its tasks are gone
        listed = await stub.ListTasks(op.ListTasksRequest(include_completed=True))
        assert [(t.task_info.task_id, t.framework_id) for t in listed.tasks] == [("once", framework_id)]
        assert (await stub.ListTasks(op.ListTasksRequest())).tasks == []  # not without --all
        one = await stub.ListTasks(op.ListTasksRequest(framework_id=framework_id, include_completed=True))
        assert [t.task_info.task_id for t in one.tasks] == ["once"]
    finally:
        await channel.close(None)
