"""Scheduler.Subscribe: one bidirectional stream per framework.

The first call must be SUBSCRIBE (FAILED_PRECONDITION otherwise). After that a
bad call is answered with an ERROR event naming the problem and the stream
stays open: one framework's mistake must not cost it its connection, let alone
affect anyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import structlog

from corral.errors import CallError
from corral.identity import Principal
from corral.master.leadership import Leadership
from corral.master.master import Master
from corral.master.services.guard import Guard
from corral.master.state import Outbox
from corral.master.validation import validate_framework_info
from corral.proto import scheduler_pb2, scheduler_pb2_grpc

log = structlog.get_logger(__name__)
Call = scheduler_pb2.Call
Event = scheduler_pb2.Event


def coalesce(batch: list[object]) -> list[Event]:
    """Merge runs of UPDATE events into one event (fewer stream messages)."""
    out: list[Event] = []
    for item in batch:
        assert isinstance(item, Event)
        if item.type == Event.UPDATE and out and out[-1].type == Event.UPDATE:
            last = out[-1]
            if last.HasField("update"):
                last.updates.append(last.update)
                last.ClearField("update")
            if item.HasField("update"):
                last.updates.append(item.update)
            last.updates.extend(item.updates)
        else:
            out.append(item)
    return out


def framework_principal(caller: Principal, claimed: str) -> tuple[Principal, str | None]:
    """The principal a framework subscribes as, or a refusal.

    With a certificate, the certificate's; ``framework_info.principal`` may
    repeat it (``framework:NAME`` or just ``NAME``) but not name another.
    Without TLS nothing is proven: a claim in the call's metadata wins, else the
    one in ``framework_info.principal`` (as Mesos without authentication).
    """
    if caller.authenticated:
        if claimed and claimed not in (str(caller), caller.name):
            return caller, (
                f"framework_info.principal: {claimed!r} is not the principal of the client "
                f"certificate ({caller})"
            )
        return caller, None
    if caller.kind != "anonymous" or not claimed:
        return caller, None
    try:
        return Principal.parse(claimed if ":" in claimed else f"framework:{claimed}"), None
    except ValueError as e:
        return caller, f"framework_info.principal: {e}"


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, leadership: Leadership, guard: Guard | None = None) -> None:
        self.leadership = leadership
        self.guard = guard or Guard()

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[Call],
        context: grpc.aio.ServicerContext[Call, Event],
    ) -> None:
        master = await self.leadership.require(context)
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if first.type != Call.SUBSCRIBE:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the first call must be SUBSCRIBE, got {Call.Type.Name(first.type)}",
            )
        info = first.subscribe.framework_info
        errors = validate_framework_info(info)
        if errors:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(errors))
        principal, refusal = framework_principal(self.guard.principal(context), info.principal)
        if refusal is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        roles = [f"role:{r}" for r in (info.roles or ["*"])]
        await self.guard.require(context, principal, "register_framework", roles, "Subscribe")
        outbox: Outbox[object] = Outbox()
        try:
            fw = master.subscribe(info, outbox, str(principal))
        except CallError as e:
            if e.code == "PERMISSION_DENIED":
                self.guard.refused(
                    principal, "register_framework", f"framework:{info.id}", e.message, "Subscribe"
                )
            await context.abort(getattr(grpc.StatusCode, e.code), e.message)
        framework_id = fw.framework_id
        reader = asyncio.create_task(self._read(master, request_iterator, framework_id, outbox))
        try:
            while True:
                batch = await outbox.get_batch()
                if batch is None:
                    break
                for event in coalesce(batch):
                    await context.write(event)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            master.framework_disconnected(framework_id, outbox)

    async def _read(
        self, master: Master, calls: AsyncIterator[Call], framework_id: str, outbox: Outbox[object]
    ) -> None:
        try:
            async for call in calls:
                try:
                    self._dispatch(master, framework_id, call)
                except CallError as e:
                    outbox.send(
                        Event(
                            type=Event.ERROR,
                            error=Event.Error(
                                code=e.code, message=f"{Call.Type.Name(call.type)}: {e.message}"
                            ),
                        )
                    )
                except Exception:
                    # A bug on our side must not take the master down; the
                    # framework hears about it and keeps its stream.
                    log.exception("scheduler.call_failed", framework_id=framework_id)
                    outbox.send(
                        Event(
                            type=Event.ERROR,
                            error=Event.Error(
                                code="INTERNAL",
                                message=f"{Call.Type.Name(call.type)}: internal error",
                            ),
                        )
                    )
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            outbox.close()

    def _dispatch(self, m: Master, framework_id: str, call: Call) -> None:
        if call.framework_id and call.framework_id != framework_id:
            raise CallError(
                "PERMISSION_DENIED",
                f"framework_id: this stream belongs to {framework_id}, not {call.framework_id}",
            )
        match call.type:
            case Call.ACCEPT:
                refuse = (
                    call.accept.filters.refuse_seconds
                    if call.accept.filters.HasField("refuse_seconds")
                    else None
                )
                m.accept(framework_id, list(call.accept.offer_ids), list(call.accept.operations), refuse)
            case Call.DECLINE:
                refuse = (
                    call.decline.filters.refuse_seconds
                    if call.decline.filters.HasField("refuse_seconds")
                    else None
                )
                m.decline(framework_id, list(call.decline.offer_ids), refuse)
            case Call.REVIVE:
                m.revive(framework_id, tuple(call.revive.roles))
            case Call.SUPPRESS:
                m.suppress(framework_id, tuple(call.suppress.roles))
            case Call.KILL:
                m.kill(framework_id, call.kill.task_id)
            case Call.ACKNOWLEDGE:
                acks = [(a.agent_id, a.task_id, a.uuid) for a in call.acknowledges]
                if call.HasField("acknowledge"):
                    a = call.acknowledge
                    acks.append((a.agent_id, a.task_id, a.uuid))
                m.acknowledge(framework_id, acks)
            case Call.RECONCILE:
                m.reconcile(framework_id, [(t.task_id, t.agent_id) for t in call.reconcile.tasks])
            case Call.TEARDOWN:
                m.teardown(framework_id)
            case Call.SUBSCRIBE:
                raise CallError("FAILED_PRECONDITION", "already subscribed on this stream")
            case _:
                raise CallError("INVALID_ARGUMENT", f"type: {Call.Type.Name(call.type)} is not supported")
