"""Agent.Connect: the stream an agent dials to register and take commands.

The first message must be a registration (FAILED_PRECONDITION otherwise;
garbage bytes or a bad registration: INVALID_ARGUMENT). After that, a message
that does not parse or a status update that does not validate is answered
with an error message and the stream stays open; the valid updates of the
same batch go through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import structlog

from corral.errors import CallError
from corral.malformed import Malformed
from corral.master.call_validation import validate_registration, validate_status_updates
from corral.master.leadership import Leadership
from corral.master.master import Master
from corral.master.services.guard import Guard
from corral.master.streams import Outbox
from corral.proto import agent_pb2, agent_pb2_grpc

log = structlog.get_logger(__name__)
#: a DNS name's limit; checked before anything else is read of a registration
MAX_HOSTNAME = 253
AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage


def _error(code: str, message: str) -> MasterMessage:
    return MasterMessage(error=MasterMessage.Error(code=code, message=message))


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, leadership: Leadership, guard: Guard | None = None) -> None:
        self.leadership = leadership
        self.guard = guard or Guard()

    async def Connect(
        self,
        request_iterator: AsyncIterator[AgentMessage | Malformed],
        context: grpc.aio.ServicerContext[AgentMessage, MasterMessage],
    ) -> None:
        master = await self.leadership.require(context)
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if isinstance(first, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(first))
            raise AssertionError("unreachable: abort raises")
        if first.WhichOneof("message") != "register":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be register")
        reg = first.register
        # Who may register is asked before the registration is validated:
        # validating a large one costs seconds, which a tenant's certificate
        # must not be able to spend (a security review measured 1.7 s for 63 MiB).
        hostname = reg.agent_info.hostname
        if len(hostname) > MAX_HOSTNAME:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"agent_info.hostname: at most {MAX_HOSTNAME} characters, got {len(hostname)}",
            )
        principal = self.guard.principal(context)
        await self.guard.require(context, principal, "register_agent", f"agent:{hostname}", "Agent.Connect")
        errors, total = validate_registration(reg)
        if errors:
            log.warning("agent.rejected", hostname=hostname, errors=errors)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(errors))
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
            # Disconnect before the first await: gRPC cancels this handler
            # when the client cancels, and a second cancellation arriving at
            # the await below (the reader saw the end of the stream first)
            # used to skip the disconnect, leaving the peer "connected" for
            # ever with its offers (issue 14; 1 run in 3 leaked some of 50).
            # The cancelled reader dispatches nothing more.
            reader.cancel()
            master.agent_disconnected(agent_id, outbox)
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(
        self,
        m: Master,
        messages: AsyncIterator[AgentMessage | Malformed],
        agent_id: str,
        outbox: Outbox[object],
    ) -> None:
        try:
            async for message in messages:
                if isinstance(message, Malformed):
                    log.warning("agent.message_malformed", agent_id=agent_id, problem=message.problem)
                    outbox.send(_error("INVALID_ARGUMENT", str(message)))
                    continue
                try:
                    kind = message.WhichOneof("message")
                    m.agent_heartbeat(agent_id)
                    if kind == "status_updates":
                        good, errors = validate_status_updates(message.status_updates.statuses, "statuses")
                        if errors:
                            # Not acknowledged: an honest agent never sends one, and
                            # its retries are bounded by its own backoff.
                            log.warning("agent.updates_refused", agent_id=agent_id, errors=errors[:3])
                            outbox.send(_error("INVALID_ARGUMENT", "; ".join(errors[:20])))
                        m.agent_status_updates(agent_id, good)
                    elif kind == "file_data":
                        m.file_data(agent_id, message.file_data)
                    elif kind == "usage":
                        m.usage_data(agent_id, message.usage)
                    elif kind == "exec_output":
                        m.exec_output(agent_id, message.exec_output)
                    elif kind == "register":
                        outbox.send(_error("FAILED_PRECONDITION", "already registered"))
                except Exception:
                    log.exception("agent.message_failed", agent_id=agent_id)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            outbox.close()
