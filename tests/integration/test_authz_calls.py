"""ACLs over real gRPC: random calls from several principals under a random
policy never get through where the policy says no, and change nothing then.

Plaintext with claimed principals (the ``corral-principal`` metadata key)
reaches the same authorizer as certificates do; tests/integration/test_tls_*.py
cover the certificates themselves.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.codec import resources_to_proto
from corral.identity import PRINCIPAL_METADATA_KEY
from corral.master.authz import ACTIONS, Rule, load_policy
from corral.master.master import MasterConfig
from corral.master.server import MasterServer
from corral.master.streams import Outbox
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import Resources
from corral.testing import eventually

PRINCIPALS = ["operator:ops", "framework:a", "framework:b", "agent:n1", "anonymous:x"]
OWNERS = ["framework:a", "framework:b"]
ROLES = ["ml", "web"]


def _toml(rules: list[Rule], default_allow: bool) -> str:
    lines = [f'default = "{"allow" if default_allow else "deny"}"']
    for r in rules:
        lines += [
            "[[rules]]",
            f"allow = {'true' if r.allow else 'false'}",
            f"principals = {json.dumps(list(r.principals))}",
            f"actions = {json.dumps(list(r.actions))}",
            f"objects = {json.dumps(list(r.objects))}",
        ]
    return "\n".join(lines) + "\n"


_rules = st.builds(
    Rule,
    st.booleans(),
    st.lists(
        st.sampled_from(["*", "operator:*", "framework:*", "framework:a", "agent:*"]), min_size=1, max_size=2
    ).map(tuple),
    st.lists(st.sampled_from([*ACTIONS, "*"]), min_size=1, max_size=3).map(tuple),
    st.lists(
        st.sampled_from(["*", "role:ml", "owner:{principal}", "owner:framework:b", "cluster", "agent:*"]),
        min_size=1,
        max_size=2,
    ).map(tuple),
)
_calls = st.lists(
    st.tuples(
        st.sampled_from(PRINCIPALS),
        st.sampled_from(
            [
                "ListAgents",
                "ListFrameworks",
                "ListTasks",
                "Explain",
                "Teardown",
                "SetWeights",
                "SetQuota",
                "DrainAgent",
                "Reserve",
                "KillTask",
            ]
        ),
        st.integers(0, 1),
    ),
    min_size=1,
    max_size=12,
)


async def _scenario(
    tmp: Path, rules: list[Rule], default_allow: bool, calls: list[tuple[str, str, int]]
) -> None:
    policy_file = tmp / "acls.toml"
    policy_file.write_text(_toml(rules, default_allow))
    policy = load_policy(policy_file)
    server = MasterServer("127.0.0.1:0", MasterConfig(allocation_interval_s=60), policy=str(policy_file))
    address = await server.start()
    try:
        await eventually(lambda: server.leading, 5.0, "the master leads")
        m = server.master
        assert m is not None
        fw_ids = []
        for owner, role in zip(OWNERS, ROLES, strict=True):
            fw = m.subscribe(
                pb.FrameworkInfo(name=owner, roles=[role], failover_timeout_s=60), Outbox(), owner
            )
            fw_ids.append(fw.framework_id)
        total = Resources.parse("cpus:4;mem:4096")
        agent_id = m.register_agent(
            pb.AgentInfo(hostname="n1", resources=resources_to_proto(total)),
            total,
            [],
            [],
            Outbox(),
            principal="agent:n1",
        )
        async with grpc.aio.insecure_channel(address) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            for principal, call, i in calls:
                md = ((PRINCIPAL_METADATA_KEY, principal),)
                fw_id, owner, role = fw_ids[i], OWNERS[i], ROLES[i]
                before = _snapshot(server, fw_id, role, agent_id)

                def may(action: str, obj: str, principal: str = principal) -> bool:
                    return policy.allows(principal, action, obj)

                request = _request(stub, call, md, fw_id, role, agent_id)
                expected = {
                    "ListAgents": may("view_cluster", "cluster"),
                    "ListTasks": may("view_task", f"owner:{owner}"),
                    "Explain": may("view_framework", f"owner:{owner}"),
                    "Teardown": may("teardown_framework", f"owner:{owner}"),
                    "SetWeights": may("set_weight", f"role:{role}"),
                    "SetQuota": may("set_quota", f"role:{role}"),
                    "DrainAgent": may("drain_agent", f"agent:{agent_id}"),
                    "Reserve": may("reserve_resources", f"role:{role}"),
                }.get(call, True)  # ListFrameworks filters; KillTask of no task is NOT_FOUND
                try:
                    response = await request
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as e:
                    code, response = e.code(), None
                if not expected:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (principal, call, code)
                    assert _snapshot(server, fw_id, role, agent_id) == before, (principal, call)
                else:
                    assert code != grpc.StatusCode.PERMISSION_DENIED, (principal, call)
                if call == "ListFrameworks":
                    assert response is not None
                    shown = {f.framework_info.principal for f in response.frameworks}
                    live = {f.info.principal for f in m.state.frameworks.values()}
                    assert shown == {p for p in live if may("view_framework", f"owner:{p}")}
    finally:
        await server.stop(0)


def _request(
    stub: operator_pb2_grpc.OperatorStub,
    call: str,
    md: tuple[tuple[str, str], ...],
    fw_id: str,
    role: str,
    agent_id: str,
) -> Any:
    """The operator call named ``call``, made as the principal in ``md``."""
    match call:
        case "ListAgents":
            return stub.ListAgents(op.ListAgentsRequest(), metadata=md)
        case "ListFrameworks":
            return stub.ListFrameworks(op.ListFrameworksRequest(), metadata=md)
        case "ListTasks":
            return stub.ListTasks(op.ListTasksRequest(framework_id=fw_id), metadata=md)
        case "Explain":
            return stub.Explain(op.ExplainRequest(framework_id=fw_id), metadata=md)
        case "Teardown":
            return stub.Teardown(op.TeardownRequest(framework_id=fw_id), metadata=md)
        case "SetWeights":
            weights = [op.SetWeightsRequest.Weight(role=role, weight=3.0)]
            return stub.SetWeights(op.SetWeightsRequest(weights=weights), metadata=md)
        case "SetQuota":
            guarantee = resources_to_proto(Resources.parse("cpus:1"))
            return stub.SetQuota(op.SetQuotaRequest(role=role, guarantee=guarantee), metadata=md)
        case "DrainAgent":
            return stub.DrainAgent(op.DrainAgentRequest(agent_id=agent_id), metadata=md)
        case "Reserve":
            res = resources_to_proto(Resources.parse(f"cpus({role}):0.1"))
            return stub.ReserveResources(
                op.ReserveResourcesRequest(agent_id=agent_id, resources=res), metadata=md
            )
        case _:  # KillTask; no task has that id, so it is NOT_FOUND whoever asks
            return stub.KillTask(op.KillTaskRequest(task_id="none"), metadata=md)


def _snapshot(server: MasterServer, fw_id: str, role: str, agent_id: str) -> tuple[object, ...]:
    m = server.master
    assert m is not None
    fw = m.state.frameworks.get(fw_id)
    roles = {r.role: (r.weight, r.guarantee.format()) for r in m.roles()}
    return (
        fw is not None and not fw.tearing_down,
        roles.get(role),
        m.allocator.draining(agent_id),
        m.allocator.agent_total(agent_id).format(),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_rules, max_size=5), st.booleans(), _calls)
def test_no_call_gets_through_that_the_policy_denies(
    tmp_path: Path, rules: list[Rule], default_allow: bool, calls: list[tuple[str, str, int]]
) -> None:
    asyncio.run(_scenario(tmp_path, rules, default_allow, calls))
