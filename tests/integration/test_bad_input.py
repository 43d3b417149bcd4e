"""Bad input gets a clear answer that names the problem, never a crash, and
the master keeps serving everyone else (issue 3)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral.cli.local import LocalCluster
from corral.frameworks import Task, TaskState
from corral.master.master import MasterConfig
from corral.proto import (
    agent_pb2,
    agent_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from corral.proto import messages_pb2 as pb
from corral.resources import Resources
from corral.testing import FAST_MASTER, framework, local_cluster

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)
Call = scheduler_pb2.Call
Operation = scheduler_pb2.Operation


def _accept(offer_ids: list[str], *tasks: pb.TaskInfo) -> Call.Accept:
    return Call.Accept(
        offer_ids=offer_ids,
        operations=[Operation(type=Operation.LAUNCH, launch=Operation.Launch(task_infos=list(tasks)))],
    )


def _task(task_id: str, command: str = "true", **scalars: float) -> pb.TaskInfo:
    res = [pb.Resource(name=k, scalar=v) for k, v in (scalars or {"cpus": 0.1, "mem": 32}).items()]
    return pb.TaskInfo(
        task_id=task_id, name=task_id, resources=res, command=pb.CommandInfo(shell=True, value=command)
    )


def _with_check_as(user: str) -> pb.TaskInfo:
    task = _task("check-as-root", "sleep 5")
    task.container.uid = 65534
    task.health_check.type = pb.HealthCheck.COMMAND
    task.health_check.command.CopyFrom(pb.CommandInfo(shell=True, value="id", user=user))
    return task


async def _still_serves(cluster: LocalCluster) -> None:
    """After the abuse, an ordinary framework still runs an ordinary task."""
    async with framework(cluster.master_address, "bystander") as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("fine", "echo fine", SMALL)])
        assert (await rec.wait_terminal("fine")).state is TaskState.FINISHED


async def test_call_before_subscribe_is_failed_precondition(cluster: LocalCluster) -> None:
    async with grpc.aio.insecure_channel(cluster.master_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)

        async def calls():  # type: ignore[no-untyped-def]
            yield Call(type=Call.ACCEPT, accept=_accept(["nope"]))

        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Subscribe(calls()):
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SUBSCRIBE" in (err.value.details() or "")
    await _still_serves(cluster)


async def test_subscribe_with_bad_framework_info_is_invalid_argument(cluster: LocalCluster) -> None:
    async with grpc.aio.insecure_channel(cluster.master_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        info = pb.FrameworkInfo(name="", failover_timeout_s=math.nan)

        async def calls():  # type: ignore[no-untyped-def]
            yield Call(type=Call.SUBSCRIBE, subscribe=Call.Subscribe(framework_info=info))

        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Subscribe(calls()):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "framework_info.name" in (err.value.details() or "")
        assert "failover_timeout_s" in (err.value.details() or "")


async def test_accept_of_unknown_offer_drops_tasks(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        await rec.next_offer()
        driver.accept_raw(_accept(["no-such-offer"], _task("t1")))
        status = await rec.wait_terminal("t1")
        assert status.state is TaskState.DROPPED
        assert status.reason == "INVALID_OFFERS"
        assert "no-such-offer" in status.message
    await _still_serves(cluster)


async def test_accept_of_another_frameworks_offer_is_refused(cluster: LocalCluster) -> None:
    async with (
        framework(cluster.master_address, "owner") as (_d1, rec1),
        framework(cluster.master_address, "thief") as (d2, rec2),
    ):
        stolen = await rec1.next_offer()
        d2.accept_raw(_accept([stolen.id], _task("t1")))
        status = await rec2.wait_terminal("t1")
        assert status.state is TaskState.DROPPED
        assert "belongs to another framework" in status.message
        # The owner's offer is untouched: it can still use it.
        assert not any(u.task_id == "t1" for u in rec1.updates)


async def test_accept_of_expired_offer_drops_tasks(tmp_path: Path) -> None:
    config = MasterConfig(**{**FAST_MASTER.__dict__, "offer_timeout_s": 0.3})
    async with (
        local_cluster(tmp_path, agents=1, master_config=config) as cluster,
        framework(cluster.master_address) as (driver, rec),
    ):
        offer = await rec.next_offer()
        await rec.wait_for(lambda: offer.id in rec.rescinds, 5, "the offer to be rescinded")
        driver.accept_raw(_accept([offer.id], _task("late")))
        status = await rec.wait_terminal("late")
        assert status.state is TaskState.DROPPED
        assert "expired" in status.message


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (_task("big", cpus=64, mem=32), "resources.cpus: asks for 64"),
        (_task("neg", cpus=-1, mem=32), "must be >= 0"),
        (_task("nan", cpus=math.nan, mem=32), "must be finite"),
        (_task("inf", cpus=0.1, mem=math.inf), "must be finite"),
        (_task("gpu", cpus=0.1, gpus=1), "resources.gpus: unknown resource"),
        (_task("empty", command="  "), "command.value: must not be empty"),
        (_task("bad id!"), "task_id: must be"),
        (_task("nothing", cpus=0, mem=0), "must ask for some cpus or mem"),
        (_with_check_as("root"), "health_check.command.user: a health check runs as its task's user"),
    ],
    ids=["too-big", "negative", "nan", "inf", "unknown", "empty-command", "bad-id", "zero", "check-user"],
)
async def test_invalid_task_gets_task_error_naming_the_field(
    cluster: LocalCluster, task: pb.TaskInfo, expected: str
) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.accept_raw(_accept([offer.id], task, _task("good")))
        status = await rec.wait_terminal(task.task_id)
        assert status.state is TaskState.ERROR
        assert status.reason == "TASK_INVALID"
        assert expected in status.message
        assert "accept.operations[0].launch.task_infos[0]" in status.message
        # The valid task in the same accept still runs.
        assert (await rec.wait_terminal("good")).state is TaskState.FINISHED


async def test_duplicate_task_ids_are_refused(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.accept_raw(_accept([offer.id], _task("dup", "sleep 30"), _task("dup", "true")))
        await rec.wait_state("dup", TaskState.RUNNING)
        errors = [u for u in rec.updates if u.task_id == "dup" and u.state is TaskState.ERROR]
        assert errors
        assert "already in use" in errors[0].message
        # And against a live task from an earlier accept.
        offer2 = await rec.next_offer()
        driver.accept_raw(_accept([offer2.id], _task("dup", "true")))
        await rec.wait_for(
            lambda: sum(u.state is TaskState.ERROR for u in rec.updates if u.task_id == "dup") == 2,
            what="a second TASK_ERROR for dup",
        )
        running = rec.latest("dup")
        assert running is not None


async def test_kill_of_unknown_task_is_not_found(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        driver.kill("ghost")
        code, message = await rec.wait_error()
        assert code == "NOT_FOUND"
        assert "ghost" in message
    async with grpc.aio.insecure_channel(cluster.master_address) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.KillTask(operator_pb2.KillTaskRequest(task_id="ghost"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_decline_with_negative_refuse_is_invalid(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.decline(offer, refuse_s=-1)
        code, message = await rec.wait_error()
        assert code == "INVALID_ARGUMENT"
        assert "refuse_seconds" in message


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ([pb.Resource(name="cpus", scalar=-2)], "must be >= 0"),
        ([pb.Resource(name="mem", scalar=math.nan)], "must be finite"),
        ([pb.Resource(name="ports", scalar=5)], "must be ranges"),
        ([pb.Resource(name="Bad Name", scalar=1)], "resource name"),
        (
            [pb.Resource(name="ports", ranges=pb.Value.Ranges(range=[pb.Value.Range(begin=9, end=3)]))],
            "begin must be <= end",
        ),
    ],
    ids=["negative", "nan", "ports-scalar", "bad-name", "bad-range"],
)
async def test_agent_with_malformed_resources_is_rejected(
    cluster: LocalCluster, resources: list[pb.Resource], expected: str
) -> None:
    info = pb.AgentInfo(hostname="evil", resources=resources)
    async with grpc.aio.insecure_channel(cluster.master_address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)

        async def messages():  # type: ignore[no-untyped-def]
            yield agent_pb2.AgentMessage(register=agent_pb2.AgentMessage.Register(agent_info=info))
            await asyncio.sleep(5)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Connect(messages()):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "agent_info.resources[0]" in (err.value.details() or "")
        assert expected in (err.value.details() or "")
    assert all(a.info.hostname != "evil" for a in cluster.server.master.state.agents.values())  # type: ignore[union-attr]
    await _still_serves(cluster)


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../../../etc/passwd", "std\0out"], ids=["absolute", "dotdot", "nul"]
)
async def test_read_file_outside_the_sandbox_is_refused(cluster: LocalCluster, path: str) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("files", "echo hi", SMALL)])
        await rec.wait_terminal("files")
        async with grpc.aio.insecure_channel(cluster.master_address) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReadFile(operator_pb2.ReadFileRequest(task_id="files", path=path))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "path" in (err.value.details() or "")
    await _still_serves(cluster)


async def test_a_fifo_in_the_sandbox_does_not_hang_the_agent(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("fifo", "rm -f trap; mkfifo trap; echo ready; sleep 30", SMALL)])
        await rec.wait_state("fifo", TaskState.RUNNING)
        async with grpc.aio.insecure_channel(cluster.master_address) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            async with asyncio.timeout(10):
                while (
                    b"ready"
                    not in (
                        await stub.ReadFile(operator_pb2.ReadFileRequest(task_id="fifo", path="stdout"))
                    ).data
                ):
                    await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReadFile(operator_pb2.ReadFileRequest(task_id="fifo", path="trap"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "not a regular file" in (err.value.details() or "")
    await _still_serves(cluster)
