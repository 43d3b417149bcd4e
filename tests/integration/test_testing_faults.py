"""corral.testing's faults for framework authors: a master restart and an
agent restart inside one test process, with a framework that rides them out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.frameworks.types import Task, TaskState
from corral.resources import Resources
from corral.testing import eventually, framework, local_cluster
from corral.testing_net import partitionable

pytestmark = [pytest.mark.root]


async def test_a_task_survives_a_master_restart_and_an_agent_restart(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address, failover_timeout_s=60.0) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("long", "sleep 3", Resources.of(cpus=0.1, mem=32))])
        running = await rec.wait_state("long", TaskState.RUNNING)
        first_id = rec.framework_id
        await cluster.restart_master()
        await eventually(lambda: cluster.server.leading, 10, "the new master to lead")
        agent = await cluster.restart_agent(0)
        assert agent is cluster.agent_list[0]
        end = await rec.wait_terminal("long", timeout=30)
        assert end.state is TaskState.FINISHED, end
        assert rec.framework_id == first_id  # the same framework, re-subscribed
        # It ran once, re-attached by the restarted agent: it did not start over.
        assert 2.5 <= end.timestamp - running.timestamp < 5.5


async def test_a_stopped_agent_left_alone_has_its_tasks_ended_with_the_cluster(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("orphan", "sleep 60", Resources.of(cpus=0.1, mem=32))])
        await rec.wait_state("orphan", TaskState.RUNNING)
        await cluster.stop_agent(0)
    # (the cluster fixture's cgroup check would fail if its container were left)
    leftovers = [
        d for d in cluster.agent_list[0].containerizer.cgroups.dirs(cluster.cgroup_prefix) if d.exists()
    ]
    assert leftovers == []


async def test_a_partitioned_framework_comes_back_with_its_task_running(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        partitionable(cluster.master_address) as link,
        framework(link.address, failover_timeout_s=60.0) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("kept", "sleep 60", Resources.of(cpus=0.1, mem=32))])
        await rec.wait_state("kept", TaskState.RUNNING)
        master = cluster.server.master
        assert master is not None
        fw = master.state.frameworks[rec.framework_id]
        await link.cut()
        await eventually(lambda: not fw.connected, 10, "the master to see the framework gone")
        await asyncio.sleep(0.5)
        assert rec.subscriptions == 1  # cut off: it cannot get back
        link.heal()
        await rec.wait_for(lambda: rec.subscriptions == 2, what="the re-subscription")
        assert fw.connected
        assert rec.latest("kept").state is TaskState.RUNNING  # the master kept its task
        driver.kill("kept")
        assert (await rec.wait_terminal("kept")).state is TaskState.KILLED
