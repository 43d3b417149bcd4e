"""The master's runtime: streams, timers, the registry and the election
around the functional core (``master/core/``).

The gRPC servicers in ``master/services/`` are thin: they validate, call one
method here, and move messages between streams and outboxes. Each method
hands its input and the time to :class:`MasterCore`, then carries out the
effects it returns (``_carry_out``): messages onto outboxes, streams closed,
registry writes queued, an allocation cycle brought forward. Everything runs
on one asyncio loop and is synchronous between awaits, so a transition is
atomic without locks. Timers (allocation, housekeeping) are owned by
:meth:`Master.start` and cancelled on :meth:`Master.stop`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

import structlog

from corral import __version__
from corral.errors import CallError
from corral.master import wire
from corral.master.agent_queries import AgentQueries
from corral.master.allocator import Allocator, RoleInfo
from corral.master.allocator import Reason as Why
from corral.master.audit import AuditLog
from corral.master.authz import ALLOW_ALL, Authorizer, Decision
from corral.master.config import MasterConfig
from corral.master.core.context import Refused
from corral.master.core.domain import FrameworkInfo, MasterInfo
from corral.master.core.effects import (
    AgentLeft,
    AllocateSoon,
    AuditDenied,
    CloseStream,
    Effect,
    SendToAgent,
    SendToFramework,
    WriteRegistry,
)
from corral.master.core.master_core import MasterCore
from corral.master.core.messages import RunTasks
from corral.master.core.records import FrameworkRecord, MasterCounters, StateView, StreamId, TaskRecord
from corral.master.latency import MasterHistograms
from corral.master.registry import RegistryState, RegistryWriter
from corral.master.streams import Outbox
from corral.master.task_exec import ExecStreams
from corral.proto import agent_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.resources import Resources

__all__ = ["Master", "MasterConfig", "default_address", "new_id"]

log = structlog.get_logger(__name__)

Event = scheduler_pb2.Event
MasterMessage = agent_pb2.MasterMessage


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


class Master:
    """The runtime around one :class:`MasterCore` (one leadership term)."""

    def __init__(
        self,
        config: MasterConfig | None = None,
        *,
        address: str = "",
        clock: Callable[[], float] = time.time,
        master_id: str = "",
        ids: Callable[[str], str] = new_id,
    ) -> None:
        self.config = config or MasterConfig()
        self.clock = clock
        info = MasterInfo(
            id=master_id or ids(""),
            address=address,
            hostname=socket.gethostname(),
            version=__version__,
            start_time=clock(),
        )
        self.log = log.bind(master_id=info.id)
        #: the state and its transitions; read it between calls, never write it
        self.core = MasterCore(self.config, info, ids, self.log)
        self.queries = AgentQueries()
        self.execs = ExecStreams()
        #: this term's latency histograms (master/metrics.py reports them)
        self.histograms = MasterHistograms()
        self._allocate_now = asyncio.Event()
        #: durable record of agents and frameworks (set by the server)
        self.registry: RegistryWriter | None = None
        #: the audit log (set by the server)
        self.audit = AuditLog()
        self._authorizer = Authorizer(ALLOW_ALL)
        self.core.authorizer = self._authorizer
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_seq = itertools.count(1)
        self._streams: dict[StreamId, Outbox[object]] = {}
        self._stream_ids: dict[Outbox[object], StreamId] = {}

    # -- read-only views ----------------------------------------------------------

    @property
    def info(self) -> pb.MasterInfo:
        return wire.master_info_to_pb(self.core.info)

    @property
    def state(self) -> StateView:
        """The core's state for readers (Operator API, metrics, the simulation's
        checks): consistent between transitions; read it, never write it."""
        return self.core.state

    @property
    def allocator(self) -> Allocator:
        return self.core.allocator

    @property
    def counters(self) -> MasterCounters:
        return self.core.counters

    @property
    def authorizer(self) -> Authorizer:
        return self._authorizer

    @authorizer.setter
    def authorizer(self, value: Authorizer) -> None:
        self._authorizer = value
        self.core.authorizer = value

    def outbox(self, stream: StreamId | None) -> Outbox[object] | None:
        """The outbox of an open stream (``AgentRecord.stream``, ``FrameworkRecord.stream``)."""
        return None if stream is None else self._streams.get(stream)

    # -- effects ------------------------------------------------------------------------

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToFramework | SendToAgent):
                box = self._streams.get(effect.stream)
                if box is None:
                    continue
                if isinstance(effect, SendToFramework):
                    box.send(wire.event_to_pb(effect.event))
                else:
                    box.send(wire.command_to_pb(effect.message))
                    if isinstance(effect.message, RunTasks):
                        self._launch_sent(effect.message)
            elif isinstance(effect, AllocateSoon):
                self._allocate_now.set()
            elif isinstance(effect, WriteRegistry):
                if self.registry is not None:
                    self.registry.put(effect.kind, effect.key, wire.record_bytes(effect.data))
            elif isinstance(effect, CloseStream):
                self._forget(effect.stream, close=True)
            elif isinstance(effect, AgentLeft):
                self.queries.agent_gone(effect.agent_id)
                self.execs.agent_gone(effect.agent_id)
            elif isinstance(effect, AuditDenied):
                assert isinstance(effect.decision, Decision)
                self.audit.denied(effect.decision, effect.call, **effect.fields)

    def _launch_sent(self, run: RunTasks) -> None:
        fw = run.framework_info.id
        self.histograms.launch_timer.sent(((fw, t.task_id) for t in run.tasks), self.clock())

    def _open(self, outbox: Outbox[object]) -> StreamId:
        stream = self._stream_ids.get(outbox)
        if stream is None:
            stream = next(self._stream_seq)
            self._streams[stream] = outbox
            self._stream_ids[outbox] = stream
        return stream

    def _forget(self, stream: StreamId, close: bool = False) -> None:
        box = self._streams.pop(stream, None)
        if box is not None:
            self._stream_ids.pop(box, None)
            if close:
                box.close()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers. They are cancelled and awaited by :meth:`stop`."""
        self._tasks = [
            asyncio.create_task(self._allocation_loop(), name="allocation"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for stream in list(self._streams):
            self._forget(stream, close=True)

    def recover(self, state: RegistryState) -> None:
        """Before serving as a new leader: learn the agents and frameworks the
        registry lists (see ``master/core/agents.py``)."""
        self._carry_out(self.core.recover(self.clock(), *wire.from_registry(state, self.log)))

    def allocate_soon(self) -> None:
        self._allocate_now.set()

    async def _allocation_loop(self) -> None:
        while True:
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that
                # arrives as the event is set, and stop() would wait for ever.
                async with asyncio.timeout(self.config.allocation_interval_s):
                    await self._allocate_now.wait()
                # A burst of finished tasks or declines arrives together; wait a
                # moment so one cycle offers all of it.
                await asyncio.sleep(self.config.allocation_batch_s)
            except TimeoutError:
                pass
            self._allocate_now.clear()
            try:
                self.run_allocation()
            except Exception:
                self.log.exception("allocation.failed")

    async def _housekeeping_loop(self) -> None:
        tick = min(1.0, self.config.offer_timeout_s / 4, self.config.agent_heartbeat_interval_s)
        while True:
            await asyncio.sleep(tick)
            try:
                self.housekeeping()
            except Exception:
                self.log.exception("housekeeping.failed")

    def housekeeping(self) -> None:
        """One housekeeping tick now (the timer's; tests call it directly)."""
        self._carry_out(self.core.tick(self.clock()))

    def run_allocation(self) -> int:
        """One allocation cycle; returns how many offers were sent."""
        started = time.perf_counter()
        count, effects = self.core.allocate(self.clock())
        self._carry_out(effects)
        took = time.perf_counter() - started
        self.core.counters.allocation_seconds += took
        self.histograms.allocation_cycle.observe(took)
        return count

    # -- calls: each hands its input to the core and carries out the effects ----------

    def _call(self, fn: Callable[..., list[Effect]], *args: object) -> None:
        try:
            effects = fn(self.clock(), *args)
        except Refused as e:
            self._carry_out(e.effects)
            raise
        self._carry_out(effects)

    def register_agent(
        self,
        info: pb.AgentInfo,
        total: Resources,
        tasks: list[pb.TaskStatus],
        frameworks: list[pb.FrameworkInfo],
        outbox: Outbox[object],
        task_infos: list[pb.TaskInfo] | None = None,
        principal: str = "",
        authenticated: bool = False,
    ) -> str:
        """Admit a new agent or take one back with its tasks; returns its id
        (see master/core/registration.py)."""
        stream = self._open(outbox)
        try:
            agent_id, effects = self.core.register_agent(
                self.clock(),
                wire.agent_from_pb(info),
                total,
                [wire.status_from_pb(s) for s in tasks],
                [wire.framework_from_pb(f) for f in frameworks],
                stream,
                [wire.task_from_pb(t) for t in task_infos or []],
                principal,
                authenticated,
            )
        except Refused as e:
            self._forget(stream)
            self._carry_out(e.effects)
            raise
        self._carry_out(effects)
        return agent_id

    def agent_heartbeat(self, agent_id: str) -> None:
        self._call(self.core.agent_heartbeat, agent_id)

    def agent_disconnected(self, agent_id: str, outbox: Outbox[object]) -> None:
        stream = self._stream_ids.get(outbox)
        if stream is None:
            return  # an older stream of an agent that already reconnected
        self._call(self.core.agent_disconnected, agent_id, stream)
        self._forget(stream)

    def agent_status_updates(self, agent_id: str, statuses: list[pb.TaskStatus]) -> None:
        self._call(self.core.agent_status_updates, agent_id, [wire.status_from_pb(s) for s in statuses])
        now = self.clock()
        for s in statuses:
            took = self.histograms.launch_timer.status((s.framework_id, s.task_id), s.state, now)
            if took is not None:
                self.histograms.task_launch.observe(took)

    def subscribe(
        self, info: pb.FrameworkInfo, outbox: Outbox[object], principal: str = ""
    ) -> FrameworkRecord:
        """Register a new framework or re-subscribe a known one by id
        (see master/core/frameworks.py)."""
        stream = self._open(outbox)
        try:
            fw, effects = self.core.subscribe(self.clock(), wire.framework_from_pb(info), stream, principal)
        except Refused as e:
            self._forget(stream)
            self._carry_out(e.effects)
            raise
        self._carry_out(effects)
        return fw

    def framework_disconnected(self, framework_id: str, outbox: Outbox[object]) -> None:
        stream = self._stream_ids.get(outbox)
        if stream is None:
            return
        self._call(self.core.framework_disconnected, framework_id, stream)
        self._forget(stream)

    def teardown(self, framework_id: str, reason: str = "teardown requested") -> None:
        """Kill all of a framework's tasks and forget it once they have ended."""
        self._call(self.core.teardown, framework_id, reason)

    def accept(
        self,
        framework_id: str,
        offer_ids: list[str],
        operations: list[scheduler_pb2.Operation],
        refuse_s: float | None,
    ) -> None:
        """Carry out an ACCEPT: launches and reservations (see master/core/launch.py)."""
        ops = [wire.operation_from_pb(op, i) for i, op in enumerate(operations)]
        self._call(self.core.accept, framework_id, offer_ids, ops, refuse_s)

    def decline(self, framework_id: str, offer_ids: list[str], refuse_s: float | None) -> None:
        self._call(self.core.decline, framework_id, offer_ids, refuse_s)

    def update_framework(self, framework_id: str, info: FrameworkInfo) -> None:
        """UPDATE_FRAMEWORK: new roles, capabilities, name, failover timeout."""
        self._call(self.core.update_framework, framework_id, info)

    def revive(self, framework_id: str, roles: tuple[str, ...] = ()) -> None:
        """Offers again in ``roles`` (every role when empty); clears decline filters."""
        self._call(self.core.revive, framework_id, roles)

    def suppress(self, framework_id: str, roles: tuple[str, ...] = ()) -> None:
        """No offers in ``roles`` (every role when empty) until REVIVE."""
        self._call(self.core.suppress, framework_id, roles)

    def kill(self, framework_id: str, task_id: str, grace_s: float = 0.0) -> None:
        self._call(self.core.kill, framework_id, task_id, grace_s)

    def acknowledge(self, framework_id: str, acks: list[tuple[str, str, bytes]]) -> None:
        """Forward acknowledgements ``(agent_id, task_id, uuid)`` to their agents."""
        self._call(self.core.acknowledge, framework_id, acks)

    def reconcile(self, framework_id: str, tasks: list[tuple[str, str]]) -> None:
        self._call(self.core.reconcile, framework_id, tasks)

    # -- operator -------------------------------------------------------------------------

    def explain(self, framework_id: str) -> list[Why]:
        return self.core.explain(self.clock(), framework_id)

    def roles(self) -> list[RoleInfo]:
        return self.core.roles()

    def set_weights(self, weights: list[tuple[str, float]]) -> None:
        self._call(self.core.set_weights, weights)

    def set_quota(
        self,
        role: str,
        guarantee: Resources,
        limit: Resources | Mapping[str, int] | None,
        force: bool = False,
    ) -> None:
        self._call(self.core.set_quota, role, guarantee, limit, force)

    def reserve(self, agent_id: str, resources: Resources, unreserve: bool = False) -> None:
        """An operator's dynamic reservation (see master/core/policy.py)."""
        self._call(self.core.reserve, agent_id, resources, unreserve)

    def drain_agent(self, agent_id: str, draining: bool = True) -> None:
        self._call(self.core.drain_agent, agent_id, draining)

    def operator_kill(self, task_id: str, framework_id: str = "") -> None:
        self._call(self.core.operator_kill, task_id, framework_id)

    async def read_file(
        self, task_id: str, framework_id: str, path: str, offset: int, length: int
    ) -> tuple[bytes, int, pb.TaskStatus]:
        matches = self.state.find_any_task(task_id, framework_id)
        if not matches:
            raise CallError("NOT_FOUND", f"task_id: no task {task_id!r}")
        task = matches[0]
        agent = self.state.agents.get(task.agent_id)
        outbox = self.outbox(agent.stream) if agent is not None else None
        if agent is None or outbox is None:
            raise CallError("UNAVAILABLE", f"the agent of task {task_id!r} is not connected")
        length = min(length or self.config.read_file_default_length, self.config.read_file_max_length)

        def build(request_id: int) -> MasterMessage:
            return wire.read_file_message(request_id, f"{task.framework_id}/{task_id}", path, offset, length)

        data = await self.queries.ask(agent.agent_id, outbox, build, self.config.read_file_timeout_s)
        assert isinstance(data, agent_pb2.AgentMessage.FileData)
        if data.error:
            raise CallError("NOT_FOUND", data.error)
        return data.data, data.size, wire.status_to_pb(task.status)

    def file_data(self, agent_id: str, data: agent_pb2.AgentMessage.FileData) -> None:
        self.queries.answer(agent_id, data.request_id, data)

    def exec_task(
        self,
        task: TaskRecord,
        request: op.ExecTaskRequest,
        timeout_s: float,
        inputs: AsyncIterator[op.ExecTaskInput] | None,
    ) -> AsyncGenerator[agent_pb2.AgentMessage.ExecOutput, None]:
        """Run ``request.argv`` in running ``task``'s container, fed ``inputs``;
        its output as it comes (task_exec.py)."""
        agent = self.state.agents.get(task.agent_id)
        outbox = self.outbox(agent.stream) if agent is not None else None
        r = request

        def build(request_id: int) -> MasterMessage:
            return wire.exec_message(request_id, f"{task.framework_id}/{task.task_id}", r, timeout_s)

        return self.execs.run(task.agent_id, outbox, build, inputs if r.stdin or r.tty else None)

    def exec_output(self, agent_id: str, data: agent_pb2.AgentMessage.ExecOutput) -> None:
        self.execs.answer(agent_id, data)

    async def usage(
        self, agent_id: str = "", framework_id: str = "", task_id: str = ""
    ) -> tuple[list[pb.TaskUsage], list[str]]:
        """Live usage of running tasks, optionally of one agent, framework or task.

        Agents that cannot answer are named in the second list; filters that
        match nothing raise CallError NOT_FOUND.
        """
        if agent_id and agent_id not in self.state.agents:
            raise CallError("NOT_FOUND", f"agent_id: no agent {agent_id!r}")
        if framework_id and framework_id not in self.state.frameworks:
            raise CallError("NOT_FOUND", f"framework_id: no framework {framework_id!r}")
        wanted: dict[str, list[str]] = {}
        if task_id or framework_id:
            tasks = (
                self.state.find_task(task_id, framework_id)
                if task_id
                else list(self.state.frameworks[framework_id].tasks.values())
            )
            if task_id and not tasks:
                raise CallError("NOT_FOUND", f"task_id: no running task {task_id!r}")
            for t in tasks:
                if not agent_id or t.agent_id == agent_id:
                    wanted.setdefault(t.agent_id, []).append(f"{t.framework_id}/{t.task_id}")
            agents = [self.state.agents[a] for a in wanted if a in self.state.agents]
        else:
            agents = [a for a in self.state.agents.values() if not agent_id or a.agent_id == agent_id]
        targets = [(a.agent_id, self.outbox(a.stream)) for a in agents]
        usages, errors = await self.queries.usage(targets, wanted, self.config.read_file_timeout_s)
        # An agent answers for the tasks this master knows it runs, nothing
        # else: a made-up entry would show under another tenant's framework.
        state = self.state
        known = [
            u
            for u in usages
            if (rec := state.task(u.framework_id, u.task_id)) is not None and rec.agent_id == u.agent_id
        ]
        return known, errors

    def usage_data(self, agent_id: str, data: agent_pb2.AgentMessage.Usage) -> None:
        self.queries.answer(agent_id, data.request_id, data)


def default_address(port: int) -> str:
    host = os.environ.get("CORRAL_ADVERTISE_HOST", "127.0.0.1")
    return f"{host}:{port}"
