"""Scheduler.Subscribe: one bidirectional stream per framework.

The first call must be SUBSCRIBE (FAILED_PRECONDITION otherwise; garbage bytes
or a bad FrameworkInfo: INVALID_ARGUMENT; over the principal's subscription
rate: RESOURCE_EXHAUSTED). After that a bad call (garbage bytes, an unknown
type, over a size cap or over the principal's call rate) is answered with an
ERROR event naming the problem and the stream stays open: one framework's
mistake must not cost it its connection, let alone affect anyone else. When
the stream ends, cancelled or broken, the framework is disconnected at once
(its offers rescinded), however the stream ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import structlog

from corral.errors import CallError
from corral.identity import Principal
from corral.malformed import Malformed
from corral.master import wire
from corral.master.call_validation import validate_call_size
from corral.master.leadership import Leadership
from corral.master.master import Master, MasterConfig
from corral.master.rate_limit import RateLimiter
from corral.master.services.guard import Guard
from corral.master.streams import Outbox
from corral.master.validation import validate_framework_info
from corral.proto import messages_pb2 as pb
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


def call_name(call_type: int) -> str:
    """The call type's name; a number the proto does not define is named as
    such (Call.Type.Name raises ValueError on it, which once closed the
    caller's stream from inside the error path)."""
    if call_type in Call.Type.values():
        return Call.Type.Name(call_type)
    return f"call type {call_type}"


def error_event(code: str, message: str) -> Event:
    return Event(type=Event.ERROR, error=Event.Error(code=code, message=message))


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(
        self, leadership: Leadership, guard: Guard | None = None, config: MasterConfig | None = None
    ) -> None:
        self.leadership = leadership
        self.guard = guard or Guard()
        config = config or MasterConfig()
        #: Token buckets per principal; they outlive a leadership term, which
        #: is right: a client must not earn a fresh burst from a failover.
        self.call_limiter = RateLimiter(config.framework_rate_limits)
        self.subscribe_limiter = RateLimiter(config.subscribe_rate_limits)

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[Call | Malformed],
        context: grpc.aio.ServicerContext[Call, Event],
    ) -> None:
        master = await self.leadership.require(context)
        caller = self.guard.principal(context)
        #: rate limits count the transport's principal (the certificate's, or
        #: the metadata claim), never a name the SUBSCRIBE itself makes up
        limited_as = str(caller)
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if isinstance(first, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(first))
            raise AssertionError("unreachable: abort raises")
        if first.type != Call.SUBSCRIBE:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the first call must be SUBSCRIBE, got {call_name(first.type)}",
            )
        limit = self.subscribe_limiter.admit(limited_as, time.monotonic())
        if limit is not None:
            log.warning("scheduler.subscribe_rate_limited", principal=limited_as, limit=str(limit.limit))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"SUBSCRIBE: {limit}")
        info = first.subscribe.framework_info
        errors = validate_framework_info(info)
        if errors:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(errors))
        principal, refusal = framework_principal(caller, info.principal)
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
        reader = asyncio.create_task(
            self._read(master, request_iterator, framework_id, outbox, limited_as, principal)
        )
        try:
            while True:
                batch = await outbox.get_batch()
                if batch is None:
                    break
                for event in coalesce(batch):
                    await context.write(event)
        finally:
            # Disconnect before the first await: gRPC cancels this handler
            # when the client cancels, and a second cancellation arriving at
            # the await below (the reader saw the end of the stream first)
            # used to skip the disconnect, leaving the peer "connected" for
            # ever with its offers (issue 14; 1 run in 3 leaked some of 50).
            # The cancelled reader dispatches nothing more.
            reader.cancel()
            master.framework_disconnected(framework_id, outbox)
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(
        self,
        master: Master,
        calls: AsyncIterator[Call | Malformed],
        framework_id: str,
        outbox: Outbox[object],
        principal: str,
        owner: Principal,
    ) -> None:
        try:
            async for call in calls:
                event = self._answer(master, framework_id, call, principal, owner)
                if event is not None:
                    outbox.send(event)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            # However the caller's side ended (half-closed, cancelled, broken),
            # the writer loop sees the close and disconnects the framework.
            outbox.close()

    def _answer(
        self, master: Master, framework_id: str, call: Call | Malformed, principal: str, owner: Principal
    ) -> Event | None:
        """Carry out one call after SUBSCRIBE; an ERROR event if it was refused.
        ``principal`` is rate-limited, ``owner`` (the framework's) authorized."""
        if isinstance(call, Malformed):
            return error_event("INVALID_ARGUMENT", str(call))
        name = call_name(call.type)
        if call.type not in Call.Type.values():
            # A newer client, or garbage that happened to parse: say so, keep the stream.
            return error_event("INVALID_ARGUMENT", f"type: {call.type} is not a call type this master knows")
        refusal = self.call_limiter.admit(principal, time.monotonic())
        if refusal is not None:
            log.info("scheduler.rate_limited", framework_id=framework_id, principal=principal, call=name)
            return error_event("RESOURCE_EXHAUSTED", f"{name}: {refusal}")
        errors = validate_call_size(call, master.config.max_tasks_per_accept)
        if errors:
            log.warning("scheduler.call_refused", framework_id=framework_id, call=name, errors=errors[:3])
            return error_event("INVALID_ARGUMENT", f"{name}: {'; '.join(errors)}")
        if call.type == Call.UPDATE_FRAMEWORK:
            refused = self._refuse_update(call.update_framework.framework_info, owner)
            if refused is not None:
                return refused
        try:
            dispatch_call(master, framework_id, call)
        except CallError as e:
            return error_event(e.code, f"{name}: {e.message}")
        except Exception:
            # A bug on our side must not take the master down; the
            # framework hears about it and keeps its stream.
            log.exception("scheduler.call_failed", framework_id=framework_id, call=name)
            return error_event("INTERNAL", f"{name}: internal error")
        return None

    def _refuse_update(self, info: pb.FrameworkInfo, owner: Principal) -> Event | None:
        """UPDATE_FRAMEWORK's info is checked as SUBSCRIBE's is: valid, and its roles allowed."""
        errors = validate_framework_info(info)
        if errors:
            return error_event("INVALID_ARGUMENT", f"UPDATE_FRAMEWORK: {'; '.join(errors)}")
        roles = [f"role:{r}" for r in (info.roles or ["*"])]
        decision = self.guard.check(owner, "register_framework", roles, "UpdateFramework")
        if not decision.allowed:
            return error_event("PERMISSION_DENIED", f"UPDATE_FRAMEWORK: {decision.message}")
        return None


def dispatch_call(m: Master, framework_id: str, call: Call) -> None:
    """Carry out one scheduler call after SUBSCRIBE on ``framework_id``'s stream:
    the call's fields become the arguments of one :class:`Master` method.
    Raises CallError when it is refused. No transport inside: the servicer
    and the simulation (``corral/sim/masters.py``) both use it."""
    if call.framework_id and call.framework_id != framework_id:
        raise CallError(
            "PERMISSION_DENIED",
            f"framework_id: this stream belongs to {framework_id}, not {call.framework_id}",
        )
    match call.type:
        case Call.ACCEPT:
            refuse = (
                call.accept.filters.refuse_seconds if call.accept.filters.HasField("refuse_seconds") else None
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
        case Call.UPDATE_FRAMEWORK:
            m.update_framework(framework_id, wire.framework_from_pb(call.update_framework.framework_info))
        case Call.SUBSCRIBE:
            raise CallError("FAILED_PRECONDITION", "already subscribed on this stream")
        case _:
            raise CallError("INVALID_ARGUMENT", f"type: {call_name(call.type)} is not supported")
