"""Agent.Connect: the stream an agent dials to register and take commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import structlog

from corral.errors import CallError
from corral.master.leadership import Leadership
from corral.master.master import Master
from corral.master.services.guard import Guard
from corral.master.state import Outbox
from corral.master.validation import validate_agent_info
from corral.proto import agent_pb2, agent_pb2_grpc

log = structlog.get_logger(__name__)
AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, leadership: Leadership, guard: Guard | None = None) -> None:
        self.leadership = leadership
        self.guard = guard or Guard()

    async def Connect(
        self,
        request_iterator: AsyncIterator[AgentMessage],
        context: grpc.aio.ServicerContext[AgentMessage, MasterMessage],
    ) -> None:
        master = await self.leadership.require(context)
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if first.WhichOneof("message") != "register":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be register")
        reg = first.register
        errors, total = validate_agent_info(reg.agent_info)
        if errors:
            log.warning("agent.rejected", hostname=reg.agent_info.hostname, errors=errors)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(errors))
        principal = self.guard.principal(context)
        await self.guard.require(
            context, principal, "register_agent", f"agent:{reg.agent_info.hostname}", "Agent.Connect"
        )
        outbox: Outbox[object] = Outbox()
        try:
            agent_id = master.register_agent(
                reg.agent_info,
                total,
                list(reg.tasks),
                list(reg.frameworks),
                outbox,
                list(reg.task_infos),
                principal=str(principal),
                authenticated=principal.authenticated,
            )
        except CallError as e:
            if e.code in ("PERMISSION_DENIED", "FAILED_PRECONDITION"):
                self.guard.refused(
                    principal, "register_agent", f"agent:{reg.agent_info.id}", e.message, "Agent.Connect"
                )
            await context.abort(getattr(grpc.StatusCode, e.code), e.message)
            raise  # unreachable: abort raises
        reader = asyncio.create_task(self._read(master, request_iterator, agent_id, outbox))
        try:
            while True:
                batch = await outbox.get_batch()
                if batch is None:
                    break
                for message in batch:
                    assert isinstance(message, MasterMessage)
                    await context.write(message)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            master.agent_disconnected(agent_id, outbox)

    async def _read(
        self, m: Master, messages: AsyncIterator[AgentMessage], agent_id: str, outbox: Outbox[object]
    ) -> None:
        try:
            async for message in messages:
                try:
                    kind = message.WhichOneof("message")
                    m.agent_heartbeat(agent_id)
                    if kind == "status_updates":
                        m.agent_status_updates(agent_id, list(message.status_updates.statuses))
                    elif kind == "file_data":
                        m.file_data(agent_id, message.file_data)
                    elif kind == "usage":
                        m.usage_data(agent_id, message.usage)
                    elif kind == "register":
                        outbox.send(
                            MasterMessage(
                                error=MasterMessage.Error(
                                    code="FAILED_PRECONDITION", message="already registered"
                                )
                            )
                        )
                except Exception:
                    log.exception("agent.message_failed", agent_id=agent_id)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            outbox.close()
