"""UPDATE_FRAMEWORK through the SDK: roles, name, failover timeout and
partition awareness change on the same stream, without re-registering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc.aio
import pytest

from corral.master.server import MasterServer
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2, operator_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from corral.testing import FAST_MASTER, framework, local_cluster
from corral.transport import Credentials, drain


async def _info(address: str, framework_id: str) -> pb.FrameworkInfo:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        answer = await stub.ListFrameworks(operator_pb2.ListFrameworksRequest())
    (summary,) = [f for f in answer.frameworks if f.framework_info.id == framework_id]
    return summary.framework_info


@pytest.mark.root
async def test_update_framework_changes_roles_without_re_registering(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address, name="sweep", partition_aware=False) as (driver, rec),
    ):
        offer = await rec.next_offer()
        assert offer.role == "*"
        framework_id = driver.framework_id

        driver.update_framework(
            roles=["*", "ml"], name="sweep-2", failover_timeout_s=120, partition_aware=True
        )
        # The offer was made to the old roles: rescinded.
        await rec.wait_for(lambda: offer.id in rec.rescinds, 10, "the old offer to be rescinded")
        info = await _info(cluster.master_address, framework_id)
        assert list(info.roles) == ["*", "ml"]
        assert (info.name, info.failover_timeout_s) == ("sweep-2", 120)
        assert pb.FrameworkInfo.PARTITION_AWARE in info.capabilities
        assert rec.subscriptions == 1  # the same stream, no re-registration
        assert driver.framework_name == "sweep-2"
        await rec.next_offer()  # offers go on

        # A bad value is refused before anything is sent or changed.
        with pytest.raises(ValueError, match=r"framework_info\.roles\[0\]"):
            driver.update_framework(roles=["bad role!"])
        assert list(driver.info.roles) == ["*", "ml"]


async def test_the_master_answers_a_bad_update_with_an_error_and_keeps_the_stream() -> None:
    server = MasterServer("127.0.0.1:0", FAST_MASTER)
    address = await server.start()
    calls: asyncio.Queue[scheduler_pb2.Call | None] = asyncio.Queue()
    Call = scheduler_pb2.Call
    info = pb.FrameworkInfo(name="raw", roles=["*"])
    calls.put_nowait(Call(type=Call.SUBSCRIBE, subscribe=Call.Subscribe(framework_info=info)))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stream = scheduler_pb2_grpc.SchedulerStub(channel).Subscribe(drain(calls))
            events = aiter(stream)
            async with asyncio.timeout(10):
                subscribed = await anext(events)
                assert subscribed.type == scheduler_pb2.Event.SUBSCRIBED
                bad = pb.FrameworkInfo(name="raw", roles=["a b"])
                calls.put_nowait(
                    Call(
                        type=Call.UPDATE_FRAMEWORK,
                        framework_id=subscribed.subscribed.framework_id,
                        update_framework=Call.UpdateFramework(framework_info=bad),
                    )
                )
                event = await anext(events)
                while event.type == scheduler_pb2.Event.HEARTBEAT:
                    event = await anext(events)
            assert event.type == scheduler_pb2.Event.ERROR
            assert event.error.code == "INVALID_ARGUMENT"
            assert event.error.message.startswith("UPDATE_FRAMEWORK: framework_info.roles[0]")
            info_now = await _info(address, subscribed.subscribed.framework_id)
            assert list(info_now.roles) == ["*"]
            assert stream.done() is False
            calls.put_nowait(None)
            stream.cancel()
    finally:
        await server.stop()


async def test_an_update_to_roles_the_acls_refuse_is_permission_denied_and_changes_nothing(
    tmp_path: Path,
) -> None:
    # framework:a may register in role ml only: moving to web is refused like
    # a SUBSCRIBE to web would be, on the same stream, and nothing changes.
    policy = tmp_path / "acls.toml"
    policy.write_text(
        'default = "allow"\n'
        "[[rules]]\nallow = false\n"
        'principals = ["framework:a"]\nactions = ["register_framework"]\nobjects = ["role:web"]\n'
    )
    server = MasterServer("127.0.0.1:0", FAST_MASTER, policy=str(policy))
    address = await server.start()
    try:
        async with framework(
            address, name="a", roles=["ml"], credentials=Credentials(claim="framework:a")
        ) as (driver, rec):
            framework_id = driver.framework_id
            driver.update_framework(roles=["web"])
            code, message = await rec.wait_error()
            assert code == "PERMISSION_DENIED", message
            assert message.startswith("UPDATE_FRAMEWORK: ")
            assert list((await _info(address, framework_id)).roles) == ["ml"]
            assert rec.subscriptions == 1
    finally:
        await server.stop()
