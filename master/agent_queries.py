"""Questions the master forwards to agents over their streams: sandbox reads and usage.

Agents dial the master and serve no port (DESIGN.md), so an operator's question
about a task travels down the agent's stream with a request id, and the answer
comes back up it. Only the agent that was asked may answer; an agent that
disconnects fails its pending questions at once instead of at the deadline.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable

from corral.errors import CallError
from corral.master.streams import Outbox
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb

MasterMessage = agent_pb2.MasterMessage


class AgentQueries:
    """Pending requests to agents, by request id."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[object]]] = {}

    async def ask(
        self,
        agent_id: str,
        outbox: Outbox[object] | None,
        build: Callable[[int], MasterMessage],
        timeout_s: float,
    ) -> object:
        """Send ``build(request_id)`` to the agent and wait for its answer.

        Raises CallError UNAVAILABLE (not connected, or disconnected while
        asked) or DEADLINE_EXCEEDED.
        """
        if outbox is None:
            raise CallError("UNAVAILABLE", f"agent {agent_id} is not connected")
        request_id = next(self._seq)
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (agent_id, fut)
        try:
            outbox.send(build(request_id))
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            raise CallError("DEADLINE_EXCEEDED", f"agent {agent_id} did not answer in time") from None
        finally:
            self._pending.pop(request_id, None)

    def answer(self, agent_id: str, request_id: int, value: object) -> None:
        entry = self._pending.get(request_id)
        # Only the agent that was asked may answer.
        if entry is not None and entry[0] == agent_id and not entry[1].done():
            entry[1].set_result(value)

    def agent_gone(self, agent_id: str) -> None:
        for owner, fut in list(self._pending.values()):
            if owner == agent_id and not fut.done():
                fut.set_exception(CallError("UNAVAILABLE", f"agent {agent_id} disconnected"))

    async def usage(
        self,
        agents: Iterable[tuple[str, Outbox[object] | None]],
        task_ids: dict[str, list[str]],
        timeout_s: float,
    ) -> tuple[list[pb.TaskUsage], list[str]]:
        """Ask each agent (``(agent_id, outbox)``) for its tasks' usage at once; ``task_ids`` maps an agent
        to ``framework/task`` names (an agent not in it reports every task).

        Returns what came back and one error sentence per agent that failed.
        """
        agents = list(agents)

        async def one(agent: tuple[str, Outbox[object] | None]) -> list[pb.TaskUsage]:
            agent_id, outbox = agent
            wanted = task_ids.get(agent_id, [])

            def build(request_id: int) -> MasterMessage:
                return MasterMessage(get_usage=MasterMessage.GetUsage(request_id=request_id, task_ids=wanted))

            answer = await self.ask(agent_id, outbox, build, timeout_s)
            assert isinstance(answer, agent_pb2.AgentMessage.Usage)
            out = list(answer.tasks)
            for u in out:
                u.agent_id = agent_id
            return out

        results = await asyncio.gather(*(one(a) for a in agents), return_exceptions=True)
        usages: list[pb.TaskUsage] = []
        errors: list[str] = []
        for result in results:
            if isinstance(result, CallError):
                errors.append(result.message)
            elif isinstance(result, BaseException):
                raise result
            else:
                usages += result
        return usages, errors
