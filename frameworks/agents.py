"""The cluster's agents as the bundled frameworks' placement sees them.

Offers say only what is free now, and only on agents the allocator hands
this framework. To say at once that a task can *never* fit, and what would
make a pending one fit, a framework needs every agent's total: it asks the
Operator API's ``ListAgents`` (action ``view_cluster``, which the built-in and
local policies grant framework principals; agent totals and attributes are
cluster facts, not another framework's work). A policy that refuses it leaves
the framework with offers only: no "never fits" verdict, tasks wait as before.

:func:`candidates` is pure (a ``ListAgentsResponse`` in, candidates out);
:class:`AgentWatch` is the shell that polls, owned by whoever starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc
import grpc.aio
import structlog

from corral.codec import attributes_from_proto, resources_from_proto
from corral.frameworks.placement import Candidate
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.transport import Credentials, make_channel

log = structlog.get_logger(__name__)

#: how often the agents are listed again (they join, leave and fill up)
POLL_S = 2.0


def candidates(resp: op.ListAgentsResponse) -> list[Candidate]:
    """One candidate per agent: free now (total less allocated and offered;
    nothing on a draining or disconnected agent) and its total."""
    out = []
    for a in resp.agents:
        total = resources_from_proto(a.total)
        free = total.subtract_clamped(resources_from_proto(a.allocated))
        if a.draining or not a.connected:
            free = free.subtract_clamped(free)
        info = a.agent_info
        out.append(
            Candidate(info.id, info.hostname, free, attributes_from_proto(info.attributes), total=total)
        )
    return out


async def list_agents(
    address: str, credentials: Credentials | None, timeout_s: float = 5.0
) -> list[Candidate]:
    """The agents of the master at ``address`` (a leader's address)."""
    channel = make_channel(address, credentials)
    try:
        stub = operator_pb2_grpc.OperatorStub(channel)
        return candidates(await stub.ListAgents(op.ListAgentsRequest(), timeout=timeout_s))
    finally:
        await channel.close(None)


class AgentWatch:
    """Lists the agents every :data:`POLL_S` and hands them to ``on_agents``.

    ``address`` is called each time (the leader may change); None skips a
    round. A refusal (PERMISSION_DENIED) stops the watch: the policy says no.
    """

    def __init__(
        self,
        address: Callable[[], str | None],
        credentials: Callable[[], Credentials | None],
        on_agents: Callable[[list[Candidate]], None],
        poll_s: float = POLL_S,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.on_agents = on_agents
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            address = self.address()
            if address:
                try:
                    self.on_agents(await list_agents(address, self.credentials()))
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                        log.warning("agents.not_allowed", error=e.details())
                        return
                    log.debug("agents.list_failed", code=e.code().name, error=e.details())
            await asyncio.sleep(self.poll_s)
