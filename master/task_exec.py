"""``corral exec`` through the master: a command's output streamed back from its agent.

Agents serve no port (DESIGN.md), so the master forwards ``Exec`` down the
task's agent's stream with a request id, as it does sandbox reads
(agent_queries.py); unlike a read, the answer is many ``ExecOutput``
pieces, the last one ``done``. Each pending command has a bounded queue
the agent's pieces go into and the operator's call reads from. Only the
agent that was asked may answer; its disconnection ends the command's
stream with UNAVAILABLE at once. A caller that goes away (or a client
that cannot keep up with the output) gets ``CancelExec`` sent, which kills
the command on the agent.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from corral.errors import CallError
from corral.master.streams import Outbox
from corral.proto import agent_pb2
from corral.proto import operator_pb2 as op

MasterMessage = agent_pb2.MasterMessage
ExecOutput = agent_pb2.AgentMessage.ExecOutput
#: pieces of output held for a slow caller before its command is cancelled
QUEUE_MAX = 1024
#: the largest stdin piece one message may carry
STDIN_PIECE_MAX = 64 * 1024
#: the default and the longest time a command may run
DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 3600.0


@dataclass
class _Pending:
    agent_id: str
    queue: asyncio.Queue[ExecOutput | CallError]


class ExecStreams:
    """Commands running on agents for operators, by request id."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._pending: dict[int, _Pending] = {}

    async def run(
        self,
        agent_id: str,
        outbox: Outbox[object] | None,
        build: Callable[[int], MasterMessage],
        inputs: AsyncIterator[op.ExecTaskInput] | None = None,
    ) -> AsyncGenerator[ExecOutput, None]:
        """Send ``build(request_id)`` to the agent, then what ``inputs``
        brings (stdin, its end, terminal sizes), and yield its pieces up to
        the ``done`` one. Raises CallError UNAVAILABLE (not connected, or
        disconnected meanwhile), RESOURCE_EXHAUSTED (the caller reads too
        slowly) or INVALID_ARGUMENT (a stdin piece over 64 KiB); leaving
        early cancels the command on the agent."""
        if outbox is None:
            raise CallError("UNAVAILABLE", f"agent {agent_id} is not connected")
        request_id = next(self._seq)
        pending = _Pending(agent_id, asyncio.Queue(QUEUE_MAX))
        self._pending[request_id] = pending
        done = False
        pump = None
        try:
            outbox.send(build(request_id))
            if inputs is not None:
                pump = asyncio.ensure_future(_pump(inputs, outbox, request_id, pending))
            while not done:
                item = await pending.queue.get()
                if isinstance(item, CallError):
                    done = item.code == "UNAVAILABLE"  # the agent is gone: nothing to cancel
                    raise item
                done = item.done
                yield item
        finally:
            if pump is not None:
                pump.cancel()
            self._pending.pop(request_id, None)
            if not done:
                outbox.send(MasterMessage(cancel_exec=MasterMessage.CancelExec(request_id=request_id)))

    def answer(self, agent_id: str, output: ExecOutput) -> None:
        pending = self._pending.get(output.request_id)
        if pending is None or pending.agent_id != agent_id:
            return  # only the agent that was asked may answer
        try:
            pending.queue.put_nowait(output)
        except asyncio.QueueFull:
            # The caller does not keep up: end its call (run() then cancels
            # the command) instead of holding the output in the master.
            self._pending.pop(output.request_id, None)
            _drain(pending.queue)
            pending.queue.put_nowait(
                CallError("RESOURCE_EXHAUSTED", "the command's output came faster than it was read")
            )

    def agent_gone(self, agent_id: str) -> None:
        for request_id, pending in list(self._pending.items()):
            if pending.agent_id == agent_id:
                self._pending.pop(request_id, None)
                _drain(pending.queue)
                pending.queue.put_nowait(CallError("UNAVAILABLE", f"agent {agent_id} disconnected"))


async def _pump(
    inputs: AsyncIterator[op.ExecTaskInput], outbox: Outbox[object], request_id: int, pending: _Pending
) -> None:
    """Forward the caller's stdin and terminal sizes to the agent; a bad
    piece ends the call (through the queue the call reads)."""
    async for piece in inputs:
        if len(piece.stdin) > STDIN_PIECE_MAX:
            error = f"stdin: at most {STDIN_PIECE_MAX} bytes a message, got {len(piece.stdin)}"
            _drain(pending.queue)
            pending.queue.put_nowait(CallError("INVALID_ARGUMENT", error))
            return
        message = MasterMessage.ExecInput(
            request_id=request_id, data=piece.stdin, eof=piece.stdin_eof, rows=piece.rows, cols=piece.cols
        )
        outbox.send(MasterMessage(exec_input=message))


def _drain(queue: asyncio.Queue[ExecOutput | CallError]) -> None:
    while not queue.empty():
        queue.get_nowait()
