"""The scheduler driver: owns the stream to the master so framework code is
plain Python.

It subscribes, dispatches events to the :class:`Scheduler` one at a time,
acknowledges updates after the callback returns, and on a broken stream
reconnects with backoff and re-subscribes with the same framework id (the
master keeps the framework for its ``failover_timeout_s``). The first
subscription has a deadline (``connect_timeout_s``): a wrong address or a
master that is down ends ``run()`` with :class:`ConnectTimeoutError`.

If the program has not configured structlog, the driver logs key-value lines
to stderr (``corral.logging.default_to_stderr``), never to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import socket
from collections.abc import Iterable, Sequence

import grpc
import grpc.aio
import structlog

from corral import logging as corral_logging
from corral.codec import resources_to_proto
from corral.detector import LeaderFinder
from corral.errors import ConnectTimeoutError, NotConnectedError, SubscribeError
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import MasterInfo, Offer, Task, TaskStatus
from corral.proto import messages_pb2 as pb
from corral.proto import scheduler_pb2, scheduler_pb2_grpc
from corral.resources import Resources
from corral.transport import Credentials, drain, make_channel

log = structlog.get_logger(__name__)
Call = scheduler_pb2.Call
Event = scheduler_pb2.Event

_FATAL_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}


def _principal_name(name: str) -> str:
    """A framework name as a principal's name (corral.identity: no spaces or colons)."""
    cleaned = re.sub(r"[^A-Za-z0-9._@/-]", "_", name)[:127]
    return cleaned if cleaned[:1].isalnum() else f"x{cleaned}"


#: acknowledgements or reconciliations sent in one call: the master refuses
#: more (master/validation.py MAX_FRAMEWORK_ITEMS_PER_CALL; a test keeps the two equal)
CALL_ITEMS = 10_000


class SchedulerDriver:
    """Connects a :class:`Scheduler` to a master.

    >>> driver = SchedulerDriver(MyScheduler(), name="my-fw", master="127.0.0.1:5050")  # doctest: +SKIP
    >>> await driver.run()  # returns after driver.stop() or a teardown
    >>> driver.exit_code  # what the scheduler passed to stop(exit_code=...); 0 by default

    ``connect_timeout_s``: how long ``run()`` tries to subscribe the first time
    before it raises :class:`ConnectTimeoutError` (None: forever). Once
    subscribed, the driver reconnects after a broken stream for as long as it
    takes, as the master keeps the framework for ``failover_timeout_s``.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        name: str,
        master: str,
        roles: Sequence[str] = ("*",),
        role: str | None = None,
        framework_id: str = "",
        failover_timeout_s: float = 60.0,
        auto_acknowledge: bool = True,
        auto_reconcile: bool = True,
        partition_aware: bool = True,
        credentials: Credentials | None = None,
        reconnect_max_s: float = 5.0,
        connect_timeout_s: float | None = 60.0,
    ) -> None:
        corral_logging.default_to_stderr()
        self.scheduler = scheduler
        self.master = master
        #: the id the master gave this framework (set on subscription; "" before,
        #: unless given to re-subscribe as an existing framework)
        self.framework_id = framework_id
        self.connect_timeout_s = connect_timeout_s
        #: what ``run()``'s caller should exit with: set by ``stop``/``teardown``
        #: (``corral framework run`` exits with it)
        self.exit_code = 0
        self._last_error = ""
        self.auto_acknowledge = auto_acknowledge
        self.auto_reconcile = auto_reconcile
        #: live tasks seen in updates: task id -> agent id (for reconciliation)
        self._live: dict[str, str] = {}
        self._subscribed_before = False
        # Without TLS a driver claims ``framework:<name>`` (the master marks it
        # unauthenticated); with TLS its certificate names it.
        creds = credentials or Credentials()
        self.credentials = creds if creds.claim else creds.claiming(f"framework:{_principal_name(name)}")
        self.reconnect_max_s = reconnect_max_s
        self.drain_timeout_s = 2.0
        caps = [pb.FrameworkInfo.TASK_KILLING_STATE]
        if partition_aware:
            caps.append(pb.FrameworkInfo.PARTITION_AWARE)
        if role is not None:
            roles = (role,)  # the single-role spelling
        self.info = pb.FrameworkInfo(
            name=name,
            user=getpass.getuser(),
            roles=list(roles),
            failover_timeout_s=failover_timeout_s,
            capabilities=caps,
            hostname=socket.gethostname(),
        )
        self.master_info: MasterInfo | None = None
        #: Why the driver stopped on its own: a callback raised, or another
        #: connection took the framework over. ``run()`` raises it.
        self.failure: BaseException | None = None
        self.connected = asyncio.Event()
        self._outq: asyncio.Queue[Call | None] | None = None
        self._stopping = False
        self._teardown = False
        self._stopped = asyncio.Event()
        # run()'s deadline for the first subscription; lifted once subscribed.
        self._until_subscribed: asyncio.Timeout | None = None
        self.log = log.bind(framework=name)

    @property
    def framework_name(self) -> str:
        """The framework's name, as given to the driver (and shown by ``corral frameworks``)."""
        return self.info.name

    # -- calls ----------------------------------------------------------------

    def _call(self, call: Call) -> None:
        if self._outq is None:
            raise NotConnectedError(
                f"{Call.Type.Name(call.type)}: not connected to the master (reconnecting)"
            )
        call.framework_id = self.framework_id
        self._outq.put_nowait(call)

    def launch(
        self,
        offers: Offer | Sequence[Offer],
        tasks: Iterable[Task],
        refuse_s: float | None = None,
    ) -> None:
        """Launch tasks on one or more offers of the same agent. Resources the
        tasks leave unused go back to the pool (refused for ``refuse_s`` if given)."""
        offer_list = [offers] if isinstance(offers, Offer) else list(offers)
        agent_id = offer_list[0].agent_id if offer_list else ""
        tasks = list(tasks)
        for task in tasks:
            self._live[task.task_id] = agent_id
        accept = Call.Accept(
            offer_ids=[o.id for o in offer_list],
            operations=[
                scheduler_pb2.Operation(
                    type=scheduler_pb2.Operation.LAUNCH,
                    launch=scheduler_pb2.Operation.Launch(task_infos=[t.to_proto(agent_id) for t in tasks]),
                )
            ],
        )
        if refuse_s is not None:
            accept.filters.refuse_seconds = refuse_s
        self._call(Call(type=Call.ACCEPT, accept=accept))

    def accept_raw(self, accept: Call.Accept) -> None:
        """Send an ACCEPT built by hand (for operations the helpers do not cover)."""
        self._call(Call(type=Call.ACCEPT, accept=accept))

    def decline(self, offers: Offer | str | Sequence[Offer | str], refuse_s: float | None = None) -> None:
        """Give offers back; the master will not re-offer the agent to this
        framework for ``refuse_s`` (its default, 5 s, when None)."""
        items = [offers] if isinstance(offers, Offer | str) else list(offers)
        decline = Call.Decline(offer_ids=[o if isinstance(o, str) else o.id for o in items])
        if refuse_s is not None:
            decline.filters.refuse_seconds = refuse_s
        self._call(Call(type=Call.DECLINE, decline=decline))

    def revive(self, roles: Sequence[str] = ()) -> None:
        """Ask for offers again after ``suppress`` and clear decline filters,
        in ``roles`` (every role of the framework when empty)."""
        self._call(Call(type=Call.REVIVE, revive=Call.Revive(roles=list(roles))))

    def suppress(self, roles: Sequence[str] = ()) -> None:
        """Stop offers until ``revive``: be polite when there is nothing to
        run. Only in ``roles`` when given; every role when empty."""
        self._call(Call(type=Call.SUPPRESS, suppress=Call.Suppress(roles=list(roles))))

    def reserve(self, offer: Offer, resources: Resources | str, refuse_s: float | None = None) -> None:
        """Reserve part of an offer for the role it was made to, e.g.
        ``driver.reserve(offer, "cpus(ml):2;mem(ml):1024")``; the rest goes back.
        The reserved resources come back in later offers to that role only."""
        self._convert(offer, resources, refuse_s, unreserve=False)

    def unreserve(self, offer: Offer, resources: Resources | str, refuse_s: float | None = None) -> None:
        """Give reserved resources of an offer back to everyone."""
        self._convert(offer, resources, refuse_s, unreserve=True)

    def _convert(
        self, offer: Offer, resources: Resources | str, refuse_s: float | None, *, unreserve: bool
    ) -> None:
        res = Resources.parse(resources) if isinstance(resources, str) else resources
        items = resources_to_proto(res)
        operation = scheduler_pb2.Operation
        if unreserve:
            op = operation(type=operation.UNRESERVE, unreserve=operation.Unreserve(resources=items))
        else:
            op = operation(type=operation.RESERVE, reserve=operation.Reserve(resources=items))
        accept = Call.Accept(offer_ids=[offer.id], operations=[op])
        if refuse_s is not None:
            accept.filters.refuse_seconds = refuse_s
        self._call(Call(type=Call.ACCEPT, accept=accept))

    def kill(self, task_id: str, agent_id: str = "") -> None:
        self._call(Call(type=Call.KILL, kill=Call.Kill(task_id=task_id, agent_id=agent_id)))

    def acknowledge(self, statuses: Iterable[TaskStatus]) -> None:
        acks = [
            Call.Acknowledge(agent_id=s.agent_id, task_id=s.task_id, uuid=s.uuid) for s in statuses if s.uuid
        ]
        for i in range(0, len(acks), CALL_ITEMS):
            self._call(Call(type=Call.ACKNOWLEDGE, acknowledges=acks[i : i + CALL_ITEMS]))

    def reconcile(self, tasks: Iterable[tuple[str, str]] = ()) -> None:
        """Ask for the latest state of ``(task_id, agent_id)`` pairs, or of
        every task when empty (implicit reconciliation); in calls of at most
        :data:`CALL_ITEMS` pairs."""
        items = [Call.Reconcile.Task(task_id=t, agent_id=a) for t, a in tasks]
        for i in range(0, max(len(items), 1), CALL_ITEMS):
            chunk = items[i : i + CALL_ITEMS]
            self._call(Call(type=Call.RECONCILE, reconcile=Call.Reconcile(tasks=chunk)))

    def update_framework(
        self,
        *,
        roles: Sequence[str] | None = None,
        name: str | None = None,
        failover_timeout_s: float | None = None,
        partition_aware: bool | None = None,
    ) -> None:
        """Change the framework's roles, name, failover timeout or partition
        awareness without re-registering (Mesos' UPDATE_FRAMEWORK); what is
        None stays. Offers to the old roles are rescinded when the roles
        change. A bad value raises ValueError here, before anything changes
        (the master's own validation); a role the master's ACLs refuse comes
        back as an ``error`` (PERMISSION_DENIED), and the master keeps the old
        roles. The driver subscribes with the new values from then on.
        NotConnectedError while reconnecting (the next subscription carries
        the change)."""
        wanted = pb.FrameworkInfo()
        wanted.CopyFrom(self.info)
        if roles is not None:
            del wanted.roles[:]
            wanted.roles.extend(roles)
        if name is not None:
            wanted.name = name
        if failover_timeout_s is not None:
            wanted.failover_timeout_s = failover_timeout_s
        # Here, not at the top: a client of the SDK (`corral run`) then loads
        # no master module unless it updates its framework.
        from corral.master.validation import validate_framework_info

        errors = validate_framework_info(wanted)
        if errors:
            raise ValueError("update_framework: " + "; ".join(errors))
        if roles is not None:
            del self.info.roles[:]
            self.info.roles.extend(roles)
        if name is not None:
            self.info.name = name
        if failover_timeout_s is not None:
            self.info.failover_timeout_s = failover_timeout_s
        if partition_aware is not None:
            caps = [c for c in self.info.capabilities if c != pb.FrameworkInfo.PARTITION_AWARE]
            if partition_aware:
                caps.append(pb.FrameworkInfo.PARTITION_AWARE)
            del self.info.capabilities[:]
            self.info.capabilities.extend(caps)
        info = pb.FrameworkInfo()
        info.CopyFrom(self.info)
        info.id = self.framework_id
        update = Call.UpdateFramework(framework_info=info)
        self._call(Call(type=Call.UPDATE_FRAMEWORK, update_framework=update))

    def teardown(self, exit_code: int | None = None) -> None:
        """End the framework: the master kills its tasks and forgets it.
        ``exit_code`` (if given) becomes :attr:`exit_code`."""
        if exit_code is not None:
            self.exit_code = exit_code
        self._teardown = True
        self._stopping = True
        if self._outq is not None:
            self._call(Call(type=Call.TEARDOWN))
        else:
            self._stopped.set()

    def stop(self, exit_code: int | None = None) -> None:
        """Close the stream; the master keeps the framework for its failover timeout.
        Calls already made (acknowledgements included) are sent first.
        ``exit_code`` (if given) becomes :attr:`exit_code`, e.g. 1 when the
        framework's work failed."""
        if exit_code is not None:
            self.exit_code = exit_code
        self._stopping = True
        self._stopped.set()

    # -- the session seam -----------------------------------------------------
    # What a transport needs to drive the driver: gRPC below (``_session``),
    # or the simulation's streams (``corral/sim/framework.py``).

    @property
    def stopping(self) -> bool:
        """``stop()`` or ``teardown()`` was called (or a failure stopped it)."""
        return self._stopping

    def subscribe_call(self) -> Call:
        """The first call of a session: SUBSCRIBE with this framework's id, if it has one."""
        info = pb.FrameworkInfo()
        info.CopyFrom(self.info)
        info.id = self.framework_id
        return Call(type=Call.SUBSCRIBE, subscribe=Call.Subscribe(framework_info=info))

    async def receive(self, event: Event, calls: asyncio.Queue[Call | None]) -> bool:
        """One event of the current session, whose calls go onto ``calls``:
        dispatched to the scheduler (see the module docstring). False when the
        session must end: a callback raised (``failure``; the driver stops)."""
        if event.type == Event.SUBSCRIBED:
            self._outq = calls
        try:
            await self._dispatch(event)
        except Exception as e:
            # A scheduler bug: stop cleanly (queued calls still go
            # out) and let run() raise it; the updates of this event
            # stay unacknowledged, so they come again after a fix.
            self.log.exception("driver.callback_failed", event_type=Event.Type.Name(event.type))
            self.failure = e
            self.stop()
            return False
        return True

    def session_ended(self) -> bool:
        """The transport's session is over; returns whether it had subscribed."""
        subscribed = self._outq is not None
        self._outq = None
        self.connected.clear()
        return subscribed

    def tells_disconnected(self, subscribed: bool) -> bool:
        """Whether the scheduler hears ``disconnected`` after a session that
        ``subscribed``: only if the driver will reconnect, never after its own
        ``stop()``, ``teardown()`` or a failure."""
        return subscribed and not self._stopping

    # -- the connection -------------------------------------------------------

    async def run(self) -> None:
        """Connect and dispatch events until ``stop()``/``teardown()``.
        Raises :class:`SubscribeError` if the master refuses the framework,
        :class:`ConnectTimeoutError` if it cannot subscribe in ``connect_timeout_s``."""
        finder = LeaderFinder(self.master)
        timeout_s = None if self._subscribed_before else self.connect_timeout_s
        try:
            # Until the first SUBSCRIBED, which lifts it (_dispatch).
            async with asyncio.timeout(timeout_s) as until_subscribed:
                self._until_subscribed = until_subscribed
                await finder.start()
                await self._reconnect_loop(finder)
        except TimeoutError:
            if not until_subscribed.expired() or self._subscribed_before:
                raise
            last = f" (last: {self._last_error})" if self._last_error else ""
            self.log.error("driver.connect_timeout", master=self.master, timeout_s=timeout_s, last=last)
            raise ConnectTimeoutError(
                f"could not subscribe to the master at {self.master} within {timeout_s:g} s{last}"
            ) from None
        finally:
            self._until_subscribed = None
            await finder.stop()
        if self.failure is not None:
            raise self.failure

    async def _reconnect_loop(self, finder: LeaderFinder) -> None:
        delay = 0.05
        while not self._stopping:
            address = await finder.address(timeout=self.reconnect_max_s)
            if address is None:
                self._last_error = "no leading master found"
                self.log.warning("driver.no_leader", master=self.master)
            elif await self._connect(finder, address):
                delay = 0.05
            if self._stopping:
                break
            await asyncio.sleep(delay)
            delay = min(self.reconnect_max_s, delay * 2)

    async def _connect(self, finder: LeaderFinder, address: str) -> bool:
        """One session with the master at ``address``; True if it subscribed."""
        channel = make_channel(address, self.credentials)
        subscribed = False
        try:
            await finder.session(self._session(channel), address)
        except grpc.aio.AioRpcError as e:
            if e.code() in _FATAL_CODES:
                raise SubscribeError(f"{e.code().name}: {e.details()}") from None
            finder.failed(e, address)
            self._last_error = f"{e.code().name}: {e.details()}"
            self.log.info("driver.disconnected", code=e.code().name, details=e.details())
        finally:
            subscribed = self.session_ended()
            await channel.close(None)
        if self.tells_disconnected(subscribed):
            await self.scheduler.disconnected(self)
        return subscribed

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        outq: asyncio.Queue[Call | None] = asyncio.Queue()
        outq.put_nowait(self.subscribe_call())

        call = stub.Subscribe(drain(outq), metadata=self.credentials.metadata())
        stop_wait = asyncio.create_task(self._stopped.wait())
        try:
            events = aiter(call)
            while True:
                next_event = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait({next_event, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if next_event not in done:
                    next_event.cancel()
                    # Let the cancelled read end before the stream is drained
                    # below: two readers of one stream are an error.
                    # (asyncio.wait: the read's cancellation is not ours to raise.)
                    await asyncio.wait({next_event})
                    return
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    if self._teardown:
                        self._stopping = True
                    return
                if not await self.receive(event, outq):
                    return
        finally:
            stop_wait.cancel()
            outq.put_nowait(None)
            if self._stopping and self._outq is not None:
                # Half-close after the queued calls; the master then ends the
                # stream, so draining it means everything was sent.
                with contextlib.suppress(
                    TimeoutError, grpc.aio.AioRpcError, asyncio.CancelledError, StopAsyncIteration
                ):
                    async with asyncio.timeout(self.drain_timeout_s):
                        await self._drain(call)
            call.cancel()

    @staticmethod
    async def _drain(call: grpc.aio.StreamStreamCall[Call, Event]) -> None:
        async for _ in call:
            pass

    async def _dispatch(self, event: Event) -> None:
        s = self.scheduler
        match event.type:
            case Event.SUBSCRIBED:
                sub = event.subscribed
                self.framework_id = sub.framework_id
                if self._until_subscribed is not None:
                    self._until_subscribed.reschedule(None)
                mi = sub.master_info
                self.master_info = MasterInfo(mi.id, mi.address, mi.version)
                self.connected.set()
                self.log = log.bind(framework=self.info.name, framework_id=self.framework_id)
                self.log.info("driver.subscribed", master=mi.address)
                resubscribed = self._subscribed_before
                self._subscribed_before = True
                await s.registered(self, sub.framework_id, self.master_info)
                if resubscribed and self.auto_reconcile:
                    # Whatever happened while we were away (a failover, a
                    # partition), ask for the latest state of every task we
                    # know by id, and of every task the master knows.
                    self.reconcile(sorted(self._live.items()))
                    self.reconcile()
            case Event.OFFERS:
                await s.offers(self, [Offer.from_proto(o) for o in event.offers.offers])
            case Event.RESCIND:
                await s.rescinded(self, event.rescind.offer_id)
            case Event.UPDATE:
                raw = [u.status for u in event.updates]
                if event.HasField("update"):
                    raw.insert(0, event.update.status)
                statuses = [TaskStatus.from_proto(st) for st in raw]
                for status in statuses:
                    if status.state.is_terminal:
                        self._live.pop(status.task_id, None)
                    else:
                        self._live[status.task_id] = status.agent_id
                    await s.status_update(self, status)
                if self.auto_acknowledge and self._outq is not None:
                    self.acknowledge(statuses)
            case Event.MESSAGE:
                await s.message(self, event.message.agent_id, event.message.data)
            case Event.ERROR:
                if event.error.code == "ABORTED":
                    # Another connection subscribed with our id: reconnecting
                    # would only steal it back and forth.
                    self.failure = SubscribeError(f"ABORTED: {event.error.message}")
                    self.stop()
                await s.error(self, event.error.code, event.error.message)
            case Event.FAILURE | Event.HEARTBEAT:
                pass
            case _:
                self.log.debug("driver.unknown_event", type=event.type)


async def tear_down(driver: SchedulerDriver, runner: asyncio.Task[None], timeout_s: float = 5.0) -> None:
    """End the framework whose ``driver.run()`` is ``runner``, for a ``finally``:
    unless run() already returned, tear the framework down (the master kills
    whatever still runs), wait up to ``timeout_s`` for run() to return, and
    cancel it if it has not. Never raises; run()'s own error, if any, stays
    for the caller to read from ``runner``."""
    if runner.done():
        return
    with contextlib.suppress(Exception):
        driver.teardown()
    await asyncio.wait({runner}, timeout=timeout_s)
    if not runner.done():
        runner.cancel()
        await asyncio.wait({runner}, timeout=timeout_s)
    if runner.done() and not runner.cancelled():
        runner.exception()  # seen: an error while tearing down is no "never retrieved" warning
