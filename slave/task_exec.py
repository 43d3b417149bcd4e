"""``corral exec`` on the agent: a command inside a running task's container.

The master has authorized the caller and forwards ``MasterMessage.Exec``
down this agent's stream; the command runs through the same door as a
COMMAND health check (containerizer/enter.py): the task's namespaces,
cgroups, root, uid and capabilities, never the agent's privileges. Its
output goes back up the stream as ``ExecOutput`` pieces as it comes, then
one ``done`` message with the exit code (124 when it overstayed its
timeout). ``CancelExec`` (the caller went away) kills it, as does the
timeout: run_inside kills the command's process group either way.

With ``stdin``, ``ExecInput`` messages feed the command's standard input
(a bounded queue: a client that sends faster than the command reads ends
the command, rather than the agent holding the data); with ``tty`` the
command runs on a pseudo-terminal of the size asked, resized by
``ExecInput`` rows/cols (containerizer/enter_io.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog

from corral.proto import agent_pb2
from corral.slave.containerizer.containerizer import Containerizer
from corral.slave.containerizer.enter import Input
from corral.slave.containerizer.errors import ContainerError

log = structlog.get_logger(__name__)

AgentMessage = agent_pb2.AgentMessage
#: the exit code of a command killed at its timeout (as timeout(1))
EXIT_TIMED_OUT = 124
#: output forwarded per command; the rest is dropped, said in the last piece
OUTPUT_MAX = 16 << 20
#: commands running at once on one agent; more are refused
MAX_RUNNING = 16
#: the longest a command may run, whatever the master asks
TIMEOUT_MAX_S = 3600.0
#: stdin pieces held for a command that does not read them yet
INPUT_QUEUE_MAX = 256


def _reply(request_id: int, **fields: object) -> AgentMessage:
    return AgentMessage(exec_output=AgentMessage.ExecOutput(request_id=request_id, **fields))  # type: ignore[arg-type]


class ExecSessions:
    """The commands this agent runs for ``corral exec``, by request id."""

    def __init__(self, containerizer: Containerizer) -> None:
        self.containerizer = containerizer
        self._running: dict[int, asyncio.Task[None]] = {}
        self._inputs: dict[int, asyncio.Queue[Input]] = {}

    def start(
        self,
        request: agent_pb2.MasterMessage.Exec,
        container_id: str | None,
        outq: asyncio.Queue[AgentMessage | None],
    ) -> None:
        """Run ``request`` in ``container_id`` (None: no such task here),
        answering on ``outq``."""
        rid = request.request_id
        refusal = self._refusal(request, container_id)
        if refusal:
            outq.put_nowait(_reply(rid, done=True, error=refusal))
            return
        assert container_id is not None
        inputs: asyncio.Queue[Input] | None = asyncio.Queue(INPUT_QUEUE_MAX) if request.stdin else None
        task = asyncio.ensure_future(self._run(request, container_id, outq, inputs))
        self._running[rid] = task
        if inputs is not None:
            self._inputs[rid] = inputs

        def ended(_t: asyncio.Task[None]) -> None:
            self._running.pop(rid, None)
            self._inputs.pop(rid, None)

        task.add_done_callback(ended)

    def feed(self, message: agent_pb2.MasterMessage.ExecInput) -> None:
        """Stdin, its end or a terminal size for a running command."""
        inputs = self._inputs.get(message.request_id)
        if inputs is None:
            return  # ended, or it takes no input
        items: list[Input] = []
        if message.rows and message.cols:
            items.append((message.rows, message.cols))
        if message.data:
            items.append(message.data)
        if message.eof:
            items.append(None)
        try:
            for item in items:
                inputs.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("exec.input_overflow", request_id=message.request_id)
            self.cancel(message.request_id)

    def _refusal(self, request: agent_pb2.MasterMessage.Exec, container_id: str | None) -> str:
        if container_id is None:
            return f"task {request.task_id!r} does not run on this agent"
        if not request.argv:
            return "argv: a command is needed"
        if not self.containerizer.can_enter(container_id):
            return f"task {request.task_id!r} cannot be entered (launched before exec existed, or ended)"
        if len(self._running) >= MAX_RUNNING:
            return f"this agent already runs {MAX_RUNNING} exec commands; try again when one ends"
        return ""

    def running(self) -> int:
        """How many commands run now."""
        return len(self._running)

    def cancel(self, request_id: int) -> None:
        task = self._running.get(request_id)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Kill every command (the agent stops)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(
        self,
        request: agent_pb2.MasterMessage.Exec,
        container_id: str,
        outq: asyncio.Queue[AgentMessage | None],
        inputs: asyncio.Queue[Input] | None,
    ) -> None:
        rid = request.request_id
        sent = 0

        async def forward(chunk: bytes) -> None:
            nonlocal sent
            if sent < OUTPUT_MAX:
                piece = chunk[: OUTPUT_MAX - sent]
                sent += len(chunk)
                outq.put_nowait(_reply(rid, data=piece))
            else:
                sent += len(chunk)

        timeout_s = min(request.timeout_s or TIMEOUT_MAX_S, TIMEOUT_MAX_S)
        env: Mapping[str, str] | None = None  # the task's environment
        log.info("exec.started", task_id=request.task_id, argv=list(request.argv), timeout_s=timeout_s)
        try:
            tty = (request.rows or 24, request.cols or 80) if request.tty else None
            outcome = await self.containerizer.enter(
                container_id, request.argv, env, timeout_s, forward, inputs, tty
            )
        except ContainerError as e:
            outq.put_nowait(_reply(rid, done=True, error=str(e)))
            return
        if sent > OUTPUT_MAX:
            outq.put_nowait(
                _reply(rid, data=f"\n[corral: {sent - OUTPUT_MAX} bytes of output dropped]\n".encode())
            )
        code = EXIT_TIMED_OUT if outcome.returncode is None else outcome.returncode
        log.info("exec.ended", task_id=request.task_id, exit_code=code)
        outq.put_nowait(_reply(rid, done=True, exit_code=code))
