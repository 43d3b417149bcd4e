"""Live usage of running tasks through the Operator API (what `corral top` shows)."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from corral.cli.local import LocalCluster
from corral.cli.top import cpu_percent, usage_table
from corral.frameworks import Task, TaskState
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import Resources
from corral.testing import framework

pytestmark = [pytest.mark.root]
MiB = 1 << 20
SPIN = "head -c 1048576 /dev/zero > f; while :; do :; done"


async def test_usage_of_running_tasks_with_their_limits_and_filters(cluster: LocalCluster) -> None:
    async with (
        framework(cluster.master_address) as (driver, rec),
        grpc.aio.insecure_channel(cluster.master_address) as channel,
    ):
        stub = operator_pb2_grpc.OperatorStub(channel)
        offer = await rec.next_offer()
        driver.launch(
            offer,
            [
                Task("spin", SPIN, Resources.of(cpus=0.5, mem=48, disk=16)),
                Task("idle", "sleep 300", Resources.of(cpus=0.1, mem=32)),
            ],
        )
        await rec.wait_state("spin", TaskState.RUNNING)
        await rec.wait_state("idle", TaskState.RUNNING)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:  # the spinning task uses CPU and writes its file (measured after ~1 s)
            resp = await stub.GetUsage(op.GetUsageRequest(task_id="spin"))
            if resp.usages and resp.usages[0].cpu_time_s > 0.05 and resp.usages[0].disk_bytes >= MiB:
                break
            assert loop.time() < deadline, f"no CPU or disk use measured: {list(resp.usages)}"
            await asyncio.sleep(0.05)
        everything = await stub.GetUsage(op.GetUsageRequest())
        assert not everything.errors
        by_task = {u.task_id: u for u in everything.usages}
        assert set(by_task) == {"spin", "idle"}
        spin = by_task["spin"]
        assert spin.framework_id == driver.framework_id
        assert spin.agent_id == offer.agent_id
        assert spin.state == "running"
        assert spin.cpus == 0.5
        assert spin.mem_limit_bytes == 48 * MiB
        assert spin.pids_limit == 4096
        assert spin.disk_limit_bytes == 16 * MiB
        assert by_task["idle"].disk_limit_bytes == 0  # asked for no disk: unlimited
        assert 0 < by_task["idle"].pids <= 3  # init, sh, sleep

        # Filters: by framework, by agent, and unknown names.
        mine = await stub.GetUsage(op.GetUsageRequest(framework_id=driver.framework_id))
        assert {u.task_id for u in mine.usages} == {"spin", "idle"}
        other_agent = next(a for a in cluster.agent_list if a.agent_id != offer.agent_id)
        elsewhere = await stub.GetUsage(op.GetUsageRequest(agent_id=other_agent.agent_id))
        assert list(elsewhere.usages) == []
        for request, name in (
            (op.GetUsageRequest(task_id="nope"), "task_id"),
            (op.GetUsageRequest(framework_id="nope"), "framework_id"),
            (op.GetUsageRequest(agent_id="nope"), "agent_id"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetUsage(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert name in (err.value.details() or "")

        # The table `corral top` prints from two samples.
        later = await stub.GetUsage(op.GetUsageRequest())
        table = usage_table(later.usages, {(u.framework_id, u.task_id): u for u in everything.usages})
        assert table.row_count == 2


def test_cpu_percent_is_the_share_of_one_cpu_between_samples() -> None:
    before = pb.TaskUsage(cpu_time_s=1.0, timestamp=100.0)
    assert cpu_percent(before, pb.TaskUsage(cpu_time_s=1.5, timestamp=101.0)) == pytest.approx(50.0)
    assert cpu_percent(None, before) is None
    assert cpu_percent(before, pb.TaskUsage(cpu_time_s=2.0, timestamp=100.0)) is None
