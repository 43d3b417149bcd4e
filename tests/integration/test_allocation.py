"""Allocation through the real master: roles on SUBSCRIBE, SUPPRESS/REVIVE
per role, static and dynamic reservations, quota, weights, draining agents
and `corral explain`, over gRPC on loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral.codec import resources_from_proto, resources_to_proto
from corral.frameworks import Task, TaskState
from corral.frameworks.types import Offer
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import Resources
from corral.testing import RecordingScheduler, framework, local_cluster

pytestmark = [pytest.mark.root]


async def _operator(address: str, method: str, request: object) -> object:
    async with grpc.aio.insecure_channel(address) as channel:
        return await getattr(operator_pb2_grpc.OperatorStub(channel), method)(request, timeout=10)


async def _offers(rec: RecordingScheduler, count: int, timeout: float = 10.0) -> list[Offer]:
    return [await rec.next_offer(timeout) for _ in range(count)]


async def _cli(address: str, *args: str) -> tuple[int, str]:
    from corral.testing import corral_command

    env = {**os.environ, "CORRAL_MASTER": address, "CORRAL_LOG_LEVEL": "warning", "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        *corral_command(),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_offers_carry_the_role_and_suppress_revive_per_role(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=2) as cluster,
        framework(cluster.master_address, roles=("a", "b")) as (driver, rec),
    ):
        first = await _offers(rec, 2)
        assert sorted(o.role for o in first) == ["a", "b"]  # one agent per role: both at share 0
        driver.suppress(["a"])
        driver.decline(first, refuse_s=0)
        for _ in range(4):
            offer = await rec.next_offer()
            assert offer.role == "b", offer
            driver.decline(offer, refuse_s=0)
        reply = await _operator(
            cluster.master_address, "Explain", op.ExplainRequest(framework_id=rec.framework_id)
        )
        assert isinstance(reply, op.ExplainResponse)
        (why,) = [r for r in reply.reasons if r.kind == "suppressed"]
        assert why.role == "a"
        driver.revive(["a"])
        seen = set()
        for _ in range(20):
            offer = await rec.next_offer()
            seen.add(offer.role)
            driver.decline(offer, refuse_s=0)
            if "a" in seen:
                break
        assert "a" in seen
        # a role the framework does not have is refused, naming it
        driver.suppress(["nope"])
        code, message = await rec.wait_error()
        assert code == "INVALID_ARGUMENT"
        assert "'nope'" in message


async def test_single_role_keyword_and_bad_roles(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, agents=1) as cluster:
        async with framework(cluster.master_address, role="ml") as (driver, rec):
            offer = await rec.next_offer()
            assert offer.role == "ml"
            driver.decline(offer, refuse_s=0)
        with pytest.raises(Exception, match=r"roles\[0\].*'\.\.'"):
            async with framework(cluster.master_address, roles=("eng/..",)):
                pass


async def test_static_reservation_goes_only_to_its_role_and_runs_tasks(tmp_path: Path) -> None:
    spec = "cpus(ml):1;mem(ml):256;cpus:1;mem:512;disk:100;ports:[31000-31009]"
    async with (
        local_cluster(tmp_path, agents=1, agent_resources=spec) as cluster,
        framework(cluster.master_address, name="other") as (driver, rec),
    ):
        offer = await rec.next_offer()
        assert offer.resources.roles() == {""}, offer.resources
        assert offer.resources.scalar("cpus") == 1000
        # hold it (no decline) so the ml framework gets only the reservation
        async with framework(cluster.master_address, name="ml", role="ml") as (ml_driver, ml_rec):
            ml_offer = await ml_rec.next_offer()
            assert ml_offer.resources == Resources.parse("cpus(ml):1;mem(ml):256")
            task = Task("reserved-task", "true", Resources.parse("cpus(ml):0.5;mem(ml):64"))
            ml_driver.launch(ml_offer, [task])
            status = await ml_rec.wait_terminal("reserved-task")
            assert status.state is TaskState.FINISHED, status
        driver.decline(offer, refuse_s=0)


async def test_reserve_and_unreserve_through_accept(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1, agent_resources="cpus:2;mem:1024") as cluster,
        framework(cluster.master_address, role="ml") as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.reserve(offer, "cpus(ml):1;mem(ml):128", refuse_s=0)
        offer = await rec.next_offer()
        assert offer.resources.scalar("cpus", "ml") == 1000, offer.resources
        assert offer.resources.scalar("cpus", "") == 1000
        agents = await _operator(cluster.master_address, "ListAgents", op.ListAgentsRequest())
        assert isinstance(agents, op.ListAgentsResponse)
        total = resources_from_proto(agents.agents[0].total)
        assert total.scalar("cpus", "ml") == 1000
        # reserving for a role it was not offered in, or what is not there, is refused
        driver.reserve(offer, "cpus(other):1")
        code, message = await rec.wait_error()
        assert code == "INVALID_ARGUMENT"
        assert "'other'" in message
        offer = await rec.next_offer()
        driver.reserve(offer, "cpus(ml):5")
        code, message = await rec.wait_error()
        assert "cpus:5 is not in the offer" in message
        offer = await rec.next_offer()
        driver.unreserve(offer, "cpus(ml):1;mem(ml):128", refuse_s=0)
        offer = await rec.next_offer()
        assert offer.resources == Resources.parse("cpus:2;mem:1024")
        driver.decline(offer, refuse_s=0)


async def test_quota_limit_weights_drain_and_explain_through_the_cli(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, agents=2) as cluster:  # 2 x cpus:2
        address = cluster.master_address
        code, out = await _cli(address, "quota", "set", "capped", "--limit", "cpus:1.5")
        assert code == 0, out
        async with framework(address, name="capped-fw", role="capped") as (driver, rec):
            offer = await rec.next_offer()
            assert offer.resources.scalar("cpus") == 1500  # cut to the limit
            # it holds the offer: the role is at its limit, and explain says so
            code, out = await _cli(address, "explain", "capped-fw")
            assert code == 0, out
            assert "[quota_limit]" in out
            assert "cpus 1.5 of 1.5" in out
            code, out = await _cli(address, "roles")
            assert code == 0, out
            assert "capped" in out
            assert "cpus:1.5" in out
            driver.decline(offer, refuse_s=0)
        # a zero limit is kept (it once vanished and read "limit none"), and
        # '*' may have quota, as in Mesos
        code, out = await _cli(address, "quota", "set", "nocpu", "--limit", "cpus:0;mem:512")
        assert code == 0, out
        assert "limit cpus:0;mem:512" in out
        code, out = await _cli(address, "quota", "set", "*", "--limit", "cpus:3")
        assert code == 0, out
        code, out = await _cli(address, "roles")
        assert code == 0, out
        assert "cpus:0;mem:512" in out
        # bad input is refused with a message naming it
        code, out = await _cli(address, "weights", "set", "gold=0")
        assert code != 0
        assert "weight of role 'gold'" in out
        code, out = await _cli(address, "quota", "set", "big", "--guarantee", "cpus:100")
        assert code != 0
        assert "above the cluster's total (cpus 100 > 4)" in out
        code, out = await _cli(address, "weights", "set", "gold=2", "silver=1")
        assert code == 0, out
        # draining: the agent keeps running, offers nothing
        drained = cluster.agent_list[0].agent_id
        code, out = await _cli(address, "drain", drained)
        assert code == 0, out
        agents = await _operator(address, "ListAgents", op.ListAgentsRequest())
        assert isinstance(agents, op.ListAgentsResponse)
        assert {a.agent_info.id: a.draining for a in agents.agents}[drained] is True
        async with framework(address, name="gold-fw", role="gold") as (driver, rec):
            for _ in range(3):
                offer = await rec.next_offer()
                assert offer.agent_id != drained
                driver.decline(offer, refuse_s=0)
            code, out = await _cli(address, "undrain", drained)
            assert code == 0, out
            offer = await rec.next_offer(10, agent_id=drained)
            driver.decline(offer, refuse_s=0)
        code, out = await _cli(address, "drain", "no-such-agent")
        assert code == 4, out  # not found (docs/cli.md)
        assert "agent 'no-such-agent': no agent has this id" in out


async def test_quota_guarantee_and_bad_requests_through_the_operator_api(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, agents=1) as cluster:
        address = cluster.master_address
        request = op.SetQuotaRequest(
            role="q", guarantee=resources_to_proto(Resources.parse("cpus:1")), has_limit=False
        )
        await _operator(address, "SetQuota", request)
        roles = await _operator(address, "ListRoles", op.ListRolesRequest())
        assert isinstance(roles, op.ListRolesResponse)
        (q,) = [r for r in roles.roles if r.role == "q"]
        assert resources_from_proto(q.guarantee) == Resources.parse("cpus:1")
        for bad, match in [
            (op.SetQuotaRequest(role="bad role"), "bad role"),
            (
                op.SetQuotaRequest(
                    role="q", limit=resources_to_proto(Resources.parse("cpus(q):1")), has_limit=True
                ),
                "unreserved",
            ),
            (
                op.SetWeightsRequest(weights=[op.SetWeightsRequest.Weight(role="x", weight=-1)]),
                "weights\\[0\\]",
            ),
        ]:
            method = "SetQuota" if isinstance(bad, op.SetQuotaRequest) else "SetWeights"
            with pytest.raises(grpc.aio.AioRpcError, match=match) as info:
                await _operator(address, method, bad)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError, match="not known") as info:
            await _operator(address, "Explain", op.ExplainRequest(framework_id="nobody"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_operator_reserves_and_unreserves_through_the_cli(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, agents=1) as cluster:  # cpus:2;mem:2048
        address = cluster.master_address
        agent_id = cluster.agent_list[0].agent_id
        code, out = await _cli(address, "reserve", agent_id[:-1], "cpus(ml):1;mem(ml):512")  # a prefix
        assert code == 0, out
        assert f"reserved cpus(ml):1;mem(ml):512 on agent {agent_id}" in out  # the full id
        async with framework(address, name="ml-fw", role="ml") as (driver, rec):
            offer = await rec.next_offer()
            assert offer.resources.scalar("cpus", "ml") == 1000
            driver.decline(offer, refuse_s=0)
        code, out = await _cli(address, "reserve", agent_id, "cpus:1")
        assert code != 0
        assert "must name a role" in out
        code, out = await _cli(address, "reserve", agent_id, "cpus(ml):64")
        assert code != 0
        assert "not there to reserve" in out
        code, out = await _cli(address, "reserve", "no-such-agent", "cpus(ml):1")
        assert code == 4, out
        assert "agent 'no-such-agent': no agent has this id" in out
        code, out = await _cli(address, "unreserve", agent_id, "cpus(ml):1;mem(ml):512")
        assert code == 0, out
        async with framework(address, name="any-fw") as (driver, rec):
            offer = await rec.next_offer()
            assert offer.resources.scalar("cpus", "ml") == 0
            assert offer.resources.scalar("cpus") == 2000
            driver.decline(offer, refuse_s=0)
