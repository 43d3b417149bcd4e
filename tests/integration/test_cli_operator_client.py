"""The CLI's Operator API client (corral/cli/operator_client.py) follows a
non-leading master's redirect to the leader and keeps using it, over real
gRPC on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from corral.cli.operator_client import operator_stub
from corral.detector import LEADER_METADATA_KEY
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.transport import Credentials


class Master(operator_pb2_grpc.OperatorServicer):
    """Answers ListAgents with its own name, or redirects to ``leader``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.leader = ""
        self.calls = 0

    def ListAgents(
        self, request: op.ListAgentsRequest, context: grpc.ServicerContext
    ) -> op.ListAgentsResponse:
        self.calls += 1
        if self.leader:
            context.set_trailing_metadata(((LEADER_METADATA_KEY, self.leader),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader")
        return op.ListAgentsResponse(agents=[op.AgentSummary(agent_info=pb.AgentInfo(hostname=self.name))])


@pytest.fixture
def masters() -> Iterator[tuple[tuple[Master, str], tuple[Master, str]]]:
    started = []
    for name in ("m1", "m2"):
        master = Master(name)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        operator_pb2_grpc.add_OperatorServicer_to_server(master, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append((master, f"127.0.0.1:{port}", server))
    try:
        yield (started[0][0], started[0][1]), (started[1][0], started[1][1])
    finally:
        for _, _, server in started:
            server.stop(0).wait(10)


def test_a_redirect_is_followed_and_kept(masters: tuple[tuple[Master, str], tuple[Master, str]]) -> None:
    (m1, a1), (m2, a2) = masters
    m1.leader = a2  # m1 no longer leads: it names m2
    client = operator_stub(a1, Credentials(claim="operator:test"))
    first = client.ListAgents(op.ListAgentsRequest(), timeout=5)
    assert [a.agent_info.hostname for a in first.agents] == ["m2"]
    assert client.address == a2
    second = client.ListAgents(op.ListAgentsRequest(), timeout=5)
    assert [a.agent_info.hostname for a in second.agents] == ["m2"]
    assert (m1.calls, m2.calls) == (1, 2)  # the second call went straight to the leader


def test_an_answer_without_a_leader_is_raised(masters: tuple[tuple[Master, str], tuple[Master, str]]) -> None:
    (m1, a1), _ = masters
    m1.leader = a1  # names itself: nowhere else to go
    client = operator_stub(a1, Credentials(claim="operator:test"))
    with pytest.raises(grpc.RpcError) as e:
        client.ListAgents(op.ListAgentsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert m1.calls == 1
