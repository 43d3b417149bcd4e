"""The master: state transitions for agents, frameworks, offers and tasks.

The gRPC servicers in ``master/services/`` are thin: they validate, call one
method here, and move messages between streams and outboxes. Everything here
runs on one asyncio loop and is synchronous between awaits, so a transition is
atomic without locks. Timers (allocation, offer expiry, heartbeats, framework
failover) are owned by :meth:`Master.run` and cancelled on :meth:`Master.stop`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from corral import __version__
from corral.codec import Reason, State, is_terminal, resources_from_proto, resources_to_proto
from corral.errors import CallError
from corral.master.agent_queries import AgentQueries
from corral.master.agent_registration import AgentRegistration
from corral.master.allocator import Allocator, AllocatorError, RoleInfo
from corral.master.allocator import Reason as Why
from corral.master.allocator.events import (
    AgentAdded,
    AgentDeactivated,
    AgentRemoved,
    FrameworkActivated,
    FrameworkAdded,
    FrameworkDeactivated,
    FrameworkRemoved,
    ResourcesRecovered,
    Revived,
    Suppressed,
)
from corral.master.allocator.events import Event as AllocatorEvent
from corral.master.audit import AuditLog
from corral.master.authz import ALLOW_ALL, Authorizer
from corral.master.launch import Launcher
from corral.master.liveness import Liveness
from corral.master.metrics import MasterCounters
from corral.master.policy import AllocationPolicy
from corral.master.rate_limit import DEFAULT_FRAMEWORK_RATE_LIMITS, DEFAULT_SUBSCRIBE_RATE_LIMITS, RateLimits
from corral.master.reconciliation import Reconciliation
from corral.master.registry import (
    AGENTS,
    FRAMEWORKS,
    MAINTENANCE,
    RegistryState,
    RegistryWriter,
)
from corral.master.state import (
    AgentRecord,
    FrameworkRecord,
    MasterState,
    OfferRecord,
    Outbox,
    TaskRecord,
)
from corral.proto import agent_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError, Resources

log = structlog.get_logger(__name__)

Event = scheduler_pb2.Event
MasterMessage = agent_pb2.MasterMessage


@dataclass(frozen=True)
class MasterConfig:
    allocation_interval_s: float = 1.0
    #: after a change that frees resources, allocate this soon (batches bursts)
    allocation_batch_s: float = 0.005
    offer_timeout_s: float = 30.0
    default_refuse_s: float = 5.0
    agent_heartbeat_interval_s: float = 5.0
    agent_heartbeat_misses: int = 3
    framework_heartbeat_interval_s: float = 15.0
    read_file_timeout_s: float = 5.0
    read_file_default_length: int = 64 * 1024
    read_file_max_length: int = 1024 * 1024
    #: After a master starts, agents have this long to re-register with their
    #: tasks; until then "unknown task" is not an answer it can give.
    agent_reregister_timeout_s: float = 30.0
    #: An agent unreachable this long is gone: its tasks are reported GONE and
    #: it must come back as a new agent.
    agent_gone_timeout_s: float = 600.0
    #: At most max(1, this fraction of the agents) are marked unreachable
    #: within any agent_unreachable_window_s (see master/liveness.py).
    agent_unreachable_fraction: float = 0.1
    agent_unreachable_window_s: float = 60.0
    #: An ACCEPT with more tasks is refused whole, before any is looked at
    #: (one of 100,000 stalled the master for 5 s; see master/validation.py).
    max_tasks_per_accept: int = 1000
    #: Per-principal token buckets (master/rate_limit.py) on scheduler calls
    #: after SUBSCRIBE, and on SUBSCRIBE itself (dearer: it may rescind and
    #: re-offer). On by default; see docs/architecture.md, "Limits".
    #: Request size caps below the transport's 64 MiB (which an agent's
    #: re-registration with thousands of task descriptions may need): a
    #: scheduler call (an ACCEPT at the task cap with 8 KiB tasks is 8 MiB)
    #: and an operator request (ids and a few resources). Checked on the raw
    #: bytes before parsing (corral/malformed.py); over it is INVALID_ARGUMENT.
    max_call_bytes: int = 16 * 1024 * 1024
    max_operator_request_bytes: int = 1024 * 1024
    framework_rate_limits: RateLimits = DEFAULT_FRAMEWORK_RATE_LIMITS
    subscribe_rate_limits: RateLimits = DEFAULT_SUBSCRIBE_RATE_LIMITS


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


class Master:
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
        #: where new ids come from; the simulation (corral.sim) passes a seeded
        #: one so that a seed replays byte for byte
        self.new_id = ids
        self.state = MasterState()
        self.allocator = Allocator()
        self.info = pb.MasterInfo(
            id=master_id or ids(""),
            address=address,
            hostname=socket.gethostname(),
            version=__version__,
            start_time=clock(),
        )
        self._agent_seq = itertools.count(1)
        self._offer_seq = itertools.count(1)
        self.queries = AgentQueries()
        self._allocate_now = asyncio.Event()
        self._recovered_at = clock() + self.config.agent_reregister_timeout_s
        #: durable record of agents and frameworks (set by the server)
        self.registry: RegistryWriter | None = None
        #: the ACL policy and the audit log (set by the server; allow-all alone)
        self.authorizer = Authorizer(ALLOW_ALL)
        self.audit = AuditLog()
        self._tasks: list[asyncio.Task[None]] = []
        self.log = log.bind(master_id=self.info.id)
        self.liveness = Liveness(self)
        self.counters = MasterCounters()
        self.launcher = Launcher(self)
        self.policy = AllocationPolicy(self)
        self.reconciliation = Reconciliation(self)
        self.agent_registration = AgentRegistration(self)

    # -- lifecycle ------------------------------------------------------------

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
        for agent in self.state.agents.values():
            if agent.outbox:
                agent.outbox.close()
        for fw in self.state.frameworks.values():
            if fw.outbox:
                fw.outbox.close()

    def recover(self, state: RegistryState) -> None:
        """Before serving as a new leader: learn the agents and frameworks the
        registry lists. Agents get ``agent_reregister_timeout_s`` to come back
        with their tasks; frameworks their failover timeout to re-subscribe."""
        now = self.clock()
        deadline = now + self.config.agent_reregister_timeout_s
        for agent_id, info in state.agents.items():
            try:
                total = resources_from_proto(info.resources)
            except ResourceError:
                self.log.warning("registry.bad_agent", agent_id=agent_id)
                continue
            record = AgentRecord(agent_id, info, total, now, now, None, connected=False, recovered=True)
            record.reregister_deadline = deadline
            self.state.agents[agent_id] = record
            self.allocator.handle(AgentAdded(agent_id, total))
            self.allocator.handle(AgentDeactivated(agent_id))
        for framework_id, fw_info in state.frameworks.items():
            fw = FrameworkRecord(framework_id, fw_info, now, None, connected=False, disconnected_at=now)
            self.state.frameworks[framework_id] = fw
            self._add_known_framework(framework_id, fw_info)
            self.allocator.handle(FrameworkDeactivated(framework_id))
        for summary in state.roles.values():
            self.policy.restore_role(summary)
        for agent_id, maintenance in state.maintenance.items():
            if agent_id in self.state.agents:
                self.policy.restore_maintenance(self.state.agents[agent_id], maintenance)
        self.log.info(
            "master.recovered",
            agents=len(state.agents),
            frameworks=len(state.frameworks),
            roles=len(state.roles),
        )

    def _record(self, kind: str, key: str, data: bytes | None) -> None:
        if self.registry is not None:
            self.registry.put(kind, key, data)

    def _check_reregistration(self, now: float) -> None:
        for agent in self.state.agents.values():
            if agent.reregister_deadline is not None and now >= agent.reregister_deadline:
                agent.reregister_deadline = None
                if not agent.connected and not agent.unreachable:
                    agent.unreachable = True
                    agent.unreachable_since = now
                    self.policy.record_maintenance(agent)
                    self.log.warning(
                        "agent.unreachable",
                        agent_id=agent.agent_id,
                        reason="did not re-register after failover",
                    )
            if (
                agent.unreachable
                and not agent.gone
                and now - agent.unreachable_since >= self.config.agent_gone_timeout_s
            ):
                agent.gone = True
                self.liveness.gone(agent)
                self.allocator.handle(AgentRemoved(agent.agent_id))
                self._record(AGENTS, agent.agent_id, None)
                self._record(MAINTENANCE, agent.agent_id, None)
                self.log.warning("agent.gone", agent_id=agent.agent_id)

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
        last_fw_heartbeat = self.clock()
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            try:
                self._expire_offers(now)
                self._check_agent_heartbeats(now)
                self.liveness.check(now)
                self._check_framework_failover(now)
                self._check_reregistration(now)
                self.reconciliation.answer_deferred(now)
                if now - last_fw_heartbeat >= self.config.framework_heartbeat_interval_s:
                    last_fw_heartbeat = now
                    for fw in self.state.frameworks.values():
                        if fw.connected and fw.outbox:
                            fw.outbox.send(Event(type=Event.HEARTBEAT))
            except Exception:
                self.log.exception("housekeeping.failed")

    # -- allocation and offers ------------------------------------------------

    def run_allocation(self) -> int:
        """One allocation cycle; returns how many offers were sent."""
        started = time.perf_counter()
        now = self.clock()
        by_framework: dict[str, list[pb.Offer]] = {}
        for alloc in self.allocator.allocate(now):
            fw = self.state.frameworks.get(alloc.framework_id)
            agent = self.state.agents.get(alloc.agent_id)
            if fw is None or agent is None or not fw.connected or fw.outbox is None:
                self.allocator.handle(
                    ResourcesRecovered(alloc.framework_id, alloc.agent_id, alloc.resources, role=alloc.role)
                )
                continue
            offer_id = f"{self.info.id}-O{next(self._offer_seq)}"
            record = OfferRecord(offer_id, fw.framework_id, agent.agent_id, alloc.resources, now, alloc.role)
            self.state.offers[offer_id] = record
            fw.offers.add(offer_id)
            agent.offers.add(offer_id)
            by_framework.setdefault(fw.framework_id, []).append(
                pb.Offer(
                    id=offer_id,
                    framework_id=fw.framework_id,
                    agent_id=agent.agent_id,
                    hostname=agent.info.hostname,
                    resources=resources_to_proto(alloc.resources),
                    attributes=agent.info.attributes,
                    role=alloc.role,
                )
            )
        for fw_id, offers in by_framework.items():
            outbox = self.state.frameworks[fw_id].outbox
            assert outbox is not None
            outbox.send(Event(type=Event.OFFERS, offers=Event.Offers(offers=offers)))
        count = sum(len(o) for o in by_framework.values())
        if count:
            self.log.debug("offers.sent", offers=count, frameworks=len(by_framework))
        self.counters.allocation_runs += 1
        self.counters.allocation_seconds += time.perf_counter() - started
        self.counters.offers_sent += count
        return count

    def _remove_offer(self, offer_id: str) -> OfferRecord | None:
        offer = self.state.offers.pop(offer_id, None)
        if offer is None:
            return None
        fw = self.state.frameworks.get(offer.framework_id)
        if fw:
            fw.offers.discard(offer_id)
        agent = self.state.agents.get(offer.agent_id)
        if agent:
            agent.offers.discard(offer_id)
        return offer

    def _rescind(self, offer_id: str, refuse_s: float = 0.0) -> None:
        offer = self._remove_offer(offer_id)
        if offer is None:
            return
        self.allocator.handle(
            ResourcesRecovered(
                offer.framework_id, offer.agent_id, offer.resources, refuse_s, self.clock(), offer.role
            )
        )
        fw = self.state.frameworks.get(offer.framework_id)
        if fw and fw.outbox:
            fw.outbox.send(Event(type=Event.RESCIND, rescind=Event.Rescind(offer_id=offer_id)))
        self.allocate_soon()

    def _expire_offers(self, now: float) -> None:
        limit = self.config.offer_timeout_s
        expired = [o.offer_id for o in self.state.offers.values() if now - o.created_at >= limit]
        for offer_id in expired:
            self.log.info("offer.expired", offer_id=offer_id)
            self._rescind(offer_id)

    # -- agents ---------------------------------------------------------------

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
        (see master/agent_registration.py)."""
        return self.agent_registration.register_agent(
            info, total, tasks, frameworks, outbox, task_infos, principal, authenticated
        )

    def agent_heartbeat(self, agent_id: str) -> None:
        agent = self.state.agents.get(agent_id)
        if agent is not None:
            agent.last_heartbeat = self.clock()

    def agent_disconnected(self, agent_id: str, outbox: Outbox[object]) -> None:
        agent = self.state.agents.get(agent_id)
        if agent is None or agent.outbox is not outbox:
            return  # an older stream of an agent that already reconnected
        outbox.close()
        agent.outbox = None
        if not agent.connected:
            return
        agent.connected = False
        self.allocator.handle(AgentDeactivated(agent_id))
        for offer_id in sorted(agent.offers):
            self._rescind(offer_id)
        self.queries.agent_gone(agent_id)
        self.log.info("agent.disconnected", agent_id=agent_id)

    def _check_agent_heartbeats(self, now: float) -> None:
        limit = self.config.agent_heartbeat_interval_s * self.config.agent_heartbeat_misses
        for agent in list(self.state.agents.values()):
            if agent.connected and agent.outbox and now - agent.last_heartbeat > limit:
                self.log.warning(
                    "agent.heartbeats_missed",
                    agent_id=agent.agent_id,
                    silent_s=round(now - agent.last_heartbeat, 1),
                )
                self.agent_disconnected(agent.agent_id, agent.outbox)

    def agent_status_updates(self, agent_id: str, statuses: list[pb.TaskStatus]) -> None:
        agent = self.state.agents.get(agent_id)
        if agent is None:
            return
        forward: dict[str, list[pb.TaskStatus]] = {}
        self_acks: list[MasterMessage.Acknowledgements.Ack] = []
        for status in statuses:
            key = (status.framework_id, status.task_id)
            if key in agent.lost_tasks:
                # Set aside while the agent was away: its framework was told
                # TASK_LOST (and may run a new task under this id); only its end matters.
                if is_terminal(status.state):
                    self.liveness.release_lost(agent, key)
                self_acks.append(
                    MasterMessage.Acknowledgements.Ack(
                        task_id=status.task_id, uuid=status.uuid, framework_id=status.framework_id
                    )
                )
                continue
            task = self.state.task(status.framework_id, status.task_id)
            fw = self.state.frameworks.get(status.framework_id)
            stale = task is not None and (
                # Only the task's own agent speaks for it, and a task that
                # ended stays ended (a late or replayed update must not
                # revive it and return its resources twice).
                task.agent_id != agent_id or (task.terminal and not is_terminal(status.state))
            )
            if stale:
                self.log.warning(
                    "status.ignored",
                    task_id=status.task_id,
                    from_agent=agent_id,
                    state=pb.TaskState.Name(status.state),
                )
                self_acks.append(
                    MasterMessage.Acknowledgements.Ack(
                        task_id=status.task_id, uuid=status.uuid, framework_id=status.framework_id
                    )
                )
                continue
            if task is None or fw is None:
                # Nobody will ever acknowledge it (framework torn down, or an
                # update for a task already completed): acknowledge for them.
                self_acks.append(
                    MasterMessage.Acknowledgements.Ack(
                        task_id=status.task_id, uuid=status.uuid, framework_id=status.framework_id
                    )
                )
                continue
            self._apply_status(task, status)
            if fw.tearing_down:
                self_acks.append(
                    MasterMessage.Acknowledgements.Ack(
                        task_id=status.task_id, uuid=status.uuid, framework_id=status.framework_id
                    )
                )
                self._maybe_finish_teardown(fw)
                continue
            if status.uuid:
                task.unacked_uuid = status.uuid
            forward.setdefault(fw.framework_id, []).append(status)
        if self_acks and agent.outbox:
            agent.outbox.send(MasterMessage(acknowledgements=MasterMessage.Acknowledgements(acks=self_acks)))
        for fw_id, items in forward.items():
            self._send_updates(self.state.frameworks[fw_id], items)

    def _apply_status(self, task: TaskRecord, status: pb.TaskStatus) -> None:
        """Record a task's new state; on a terminal one give its resources back."""
        was_terminal = task.terminal
        task.status = status
        if is_terminal(status.state) and not was_terminal:
            self.counters.tasks_ended[pb.TaskState.Name(status.state)] += 1
            agent = self.state.agents.get(task.agent_id)
            if agent is not None:
                agent.tasks.discard((task.framework_id, task.task_id))
            self.release_resources(task)

    def release_resources(self, task: TaskRecord) -> None:
        """Give an ended task's resources back to the allocator."""
        if task.resources:
            self.allocator.handle(
                ResourcesRecovered(task.framework_id, task.agent_id, task.resources, role=task.role or None)
            )
            self.allocate_soon()

    def _send_updates(self, fw: FrameworkRecord, statuses: list[pb.TaskStatus]) -> None:
        if not fw.connected or fw.outbox is None:
            return  # the agent retries until the framework is back and acknowledges
        if len(statuses) == 1:
            fw.outbox.send(Event(type=Event.UPDATE, update=Event.Update(status=statuses[0])))
        else:
            fw.outbox.send(Event(type=Event.UPDATE, updates=[Event.Update(status=s) for s in statuses]))

    def _master_update(self, task: TaskRecord, state: State, reason: Reason, message: str) -> None:
        """A status the master itself decides (no agent involved, no ack needed)."""
        status = self._status_for(task.framework_id, task.info, state, reason, message)
        self._apply_status(task, status)
        fw = self.state.frameworks.get(task.framework_id)
        if fw is not None:
            if is_terminal(state):
                self._complete_task(fw, task)
            self._send_updates(fw, [status])

    def _complete_task(self, fw: FrameworkRecord, task: TaskRecord) -> None:
        if fw.tasks.pop(task.task_id, None) is not None:
            fw.completed.append(task)
        agent = self.state.agents.get(task.agent_id)
        if agent is not None:
            agent.tasks.discard((fw.framework_id, task.task_id))

    # -- frameworks -----------------------------------------------------------

    def subscribe(
        self, info: pb.FrameworkInfo, outbox: Outbox[object], principal: str = ""
    ) -> FrameworkRecord:
        """Register a new framework or re-subscribe a known one by id.

        A framework id belongs to the principal that registered it: another
        principal's re-subscription is refused and the owner keeps its stream.
        """
        now = self.clock()
        fw = self.state.frameworks.get(info.id) if info.id else None
        if fw is not None and fw.info.principal and fw.info.principal != principal:
            raise CallError(
                "PERMISSION_DENIED",
                f"framework_info.id: framework {info.id} belongs to principal {fw.info.principal}, "
                f"not {principal}",
            )
        if info.id and fw is None and any(f.framework_id == info.id for f in self.state.completed_frameworks):
            raise CallError(
                "NOT_FOUND",
                f"framework_info.id: framework {info.id!r} was torn down; subscribe without an id",
            )
        if fw is not None and fw.tearing_down:
            raise CallError("FAILED_PRECONDITION", f"framework {info.id} is being torn down")
        if fw is None:
            # An unknown id is accepted: after a restart of a standalone master
            # its frameworks come back before their agents re-register.
            fw_id = info.id or self.new_id("fw-")
            stored = pb.FrameworkInfo()
            stored.CopyFrom(info)
            stored.id = fw_id
            stored.principal = principal
            if not stored.roles:
                stored.roles.append("*")
            self._allocator_call(FrameworkAdded(fw_id, tuple(stored.roles)))
            fw = FrameworkRecord(fw_id, stored, now, outbox)
            self.state.frameworks[fw_id] = fw
            self._record(FRAMEWORKS, fw_id, stored.SerializeToString())
            self.log.info(
                "framework.subscribed", framework_id=fw_id, name=info.name, roles=list(stored.roles)
            )
        else:
            roles = list(info.roles) or ["*"]
            if roles != list(fw.info.roles):
                # Re-subscribing with other roles changes them (Mesos' UPDATE_FRAMEWORK).
                self._allocator_call(FrameworkAdded(fw.framework_id, tuple(roles)))
                del fw.info.roles[:]
                fw.info.roles.extend(roles)
                self._record(FRAMEWORKS, fw.framework_id, fw.info.SerializeToString())
            if fw.outbox is not None and fw.outbox is not outbox:
                # The old stream loses: one connection per framework, the newest.
                fw.outbox.send(
                    Event(
                        type=Event.ERROR,
                        error=Event.Error(
                            code="ABORTED", message="framework re-subscribed on another connection"
                        ),
                    )
                )
                fw.outbox.close()
            fw.info.name = info.name or fw.info.name
            fw.info.failover_timeout_s = info.failover_timeout_s
            if fw.info.principal != principal:  # claimed now (a record from before ACLs)
                fw.info.principal = principal
                self._record(FRAMEWORKS, fw.framework_id, fw.info.SerializeToString())
            fw.outbox = outbox
            fw.connected = True
            fw.disconnected_at = None
            self.allocator.handle(FrameworkActivated(fw.framework_id))
            self.log.info("framework.resubscribed", framework_id=fw.framework_id)
        outbox.send(
            Event(
                type=Event.SUBSCRIBED,
                subscribed=Event.Subscribed(
                    framework_id=fw.framework_id,
                    heartbeat_interval_s=self.config.framework_heartbeat_interval_s,
                    master_info=self.info,
                ),
            )
        )
        # Updates it missed while away: send them again now rather than waiting
        # for the agents' retry timers.
        pending = [t.status for t in fw.tasks.values() if t.unacked_uuid]
        if pending:
            self._send_updates(fw, pending)
        self.allocate_soon()
        return fw

    def framework_disconnected(self, framework_id: str, outbox: Outbox[object]) -> None:
        fw = self.state.frameworks.get(framework_id)
        if fw is None or fw.outbox is not outbox:
            return
        outbox.close()
        fw.outbox = None
        fw.connected = False
        fw.disconnected_at = self.clock()
        for offer_id in sorted(fw.offers):
            self._rescind(offer_id)
        self.allocator.handle(FrameworkDeactivated(framework_id))
        self.log.info(
            "framework.disconnected",
            framework_id=framework_id,
            failover_timeout_s=fw.info.failover_timeout_s,
        )
        if fw.info.failover_timeout_s <= 0:
            self.teardown(framework_id, reason="disconnected with failover_timeout_s = 0")

    def _check_framework_failover(self, now: float) -> None:
        for fw in list(self.state.frameworks.values()):
            if (
                not fw.connected
                and not fw.tearing_down
                and fw.disconnected_at is not None
                and now - fw.disconnected_at >= fw.info.failover_timeout_s
            ):
                self.teardown(fw.framework_id, reason="failover timeout passed")

    def teardown(self, framework_id: str, reason: str = "teardown requested") -> None:
        """Kill all of a framework's tasks and forget it once they have ended."""
        fw = self.state.frameworks.get(framework_id)
        if fw is None:
            raise CallError("NOT_FOUND", f"framework_id: {framework_id!r} is not known")
        if fw.tearing_down:
            return
        self.log.info("framework.teardown", framework_id=framework_id, reason=reason)
        fw.tearing_down = True
        for offer_id in sorted(fw.offers):
            self._rescind(offer_id)
        self.allocator.handle(FrameworkDeactivated(framework_id))
        agents = {t.agent_id for t in fw.tasks.values()}
        for agent_id in sorted(agents):
            agent = self.state.agents.get(agent_id)
            if agent is not None and agent.outbox is not None:
                agent.outbox.send(
                    MasterMessage(
                        shutdown_framework=MasterMessage.ShutdownFramework(framework_id=framework_id)
                    )
                )
        if fw.outbox is not None:
            fw.outbox.close()
            fw.outbox = None
        fw.connected = False
        self._maybe_finish_teardown(fw)

    def _maybe_finish_teardown(self, fw: FrameworkRecord) -> None:
        for task in list(fw.tasks.values()):
            if task.terminal or (
                not self._agent_connected(task.agent_id) and task.status.state == pb.TASK_STAGING
            ):
                self._complete_task(fw, task)
        live = [t for t in fw.tasks.values() if self._agent_connected(t.agent_id)]
        if live:
            return
        # Tasks on disconnected agents are killed by the agent when it comes
        # back and learns the framework is gone; they are not ours to track.
        for task in list(fw.tasks.values()):
            agent = self.state.agents.get(task.agent_id)
            if agent is not None:
                agent.tasks.discard((fw.framework_id, task.task_id))
            self._complete_task(fw, task)
        self.state.frameworks.pop(fw.framework_id, None)
        self.state.completed_frameworks.append(fw)
        self._record(FRAMEWORKS, fw.framework_id, None)
        self.allocator.handle(FrameworkRemoved(fw.framework_id))
        self.allocate_soon()
        self.log.info("framework.removed", framework_id=fw.framework_id)

    def _agent_connected(self, agent_id: str) -> bool:
        agent = self.state.agents.get(agent_id)
        return agent is not None and agent.connected

    def _framework(self, framework_id: str) -> FrameworkRecord:
        fw = self.state.frameworks.get(framework_id)
        if fw is None or fw.tearing_down:
            raise CallError("NOT_FOUND", f"framework_id: {framework_id!r} is not subscribed")
        return fw

    def accept(
        self,
        framework_id: str,
        offer_ids: list[str],
        operations: list[scheduler_pb2.Operation],
        refuse_s: float | None,
    ) -> None:
        """Carry out an ACCEPT: launches and reservations (see master/launch.py)."""
        self.launcher.accept(framework_id, offer_ids, operations, refuse_s)

    def _status_for(
        self, framework_id: str, task: pb.TaskInfo, state: State, reason: Reason, message: str
    ) -> pb.TaskStatus:
        """A status the master decides itself (no agent involved, no ack needed)."""
        return pb.TaskStatus(
            task_id=task.task_id,
            state=state,
            reason=reason,
            message=message,
            source=pb.TaskStatus.SOURCE_MASTER,
            agent_id=task.agent_id,
            framework_id=framework_id,
            timestamp=self.clock(),
        )

    def decline(self, framework_id: str, offer_ids: list[str], refuse_s: float | None) -> None:
        fw = self._framework(framework_id)
        refuse = self.config.default_refuse_s if refuse_s is None else refuse_s
        if refuse < 0 or math.isnan(refuse):
            raise CallError("INVALID_ARGUMENT", f"decline.filters.refuse_seconds: must be >= 0, got {refuse}")
        now = self.clock()
        unknown = []
        for offer_id in offer_ids:
            offer = self.state.offers.get(offer_id)
            if offer is None or offer.framework_id != fw.framework_id:
                unknown.append(offer_id)
                continue
            self._remove_offer(offer_id)
            self.allocator.handle(
                ResourcesRecovered(framework_id, offer.agent_id, offer.resources, refuse, now, offer.role)
            )
        self.allocate_soon()
        if unknown:
            raise CallError("NOT_FOUND", f"decline.offer_ids: not valid offers of this framework: {unknown}")

    def revive(self, framework_id: str, roles: tuple[str, ...] = ()) -> None:
        """Offers again in ``roles`` (every role when empty); clears decline filters."""
        fw = self._framework(framework_id)
        self._allocator_call(Revived(framework_id, roles), "revive.roles")
        if not roles:
            fw.suppressed = False
        self.allocate_soon()

    def suppress(self, framework_id: str, roles: tuple[str, ...] = ()) -> None:
        """No offers in ``roles`` (every role when empty) until REVIVE."""
        fw = self._framework(framework_id)
        self._allocator_call(Suppressed(framework_id, roles), "suppress.roles")
        if not roles or set(roles) >= set(fw.info.roles):
            fw.suppressed = True
        # Outstanding offers stay valid, as in Mesos: the framework may be
        # accepting one right now.

    def _add_known_framework(self, framework_id: str, info: pb.FrameworkInfo) -> None:
        """A framework learnt from the registry or an agent, not from its own
        SUBSCRIBE: roles it cannot have are replaced by '*' rather than refused."""
        try:
            self.allocator.handle(FrameworkAdded(framework_id, tuple(info.roles) or ("*",)))
        except AllocatorError as e:
            self.log.warning("framework.bad_roles", framework_id=framework_id, error=str(e))
            self.allocator.handle(FrameworkAdded(framework_id, ("*",)))

    def _allocator_call(self, event: AllocatorEvent, what: str = "") -> None:
        """Hand a request from a framework or an operator to the allocator;
        a refusal becomes INVALID_ARGUMENT with the allocator's sentence."""
        try:
            self.allocator.handle(event)
        except AllocatorError as e:
            message = str(e)
            if what and not message.startswith(what.split(".", maxsplit=1)[0]):
                message = f"{what}: {message}"
            raise CallError("INVALID_ARGUMENT", message) from None

    # -- allocation policy (operator) ----------------------------------------

    def explain(self, framework_id: str) -> list[Why]:
        return self.policy.explain(framework_id=framework_id)

    def roles(self) -> list[RoleInfo]:
        return self.policy.roles()

    def set_weights(self, weights: list[tuple[str, float]]) -> None:
        self.policy.set_weights(weights=weights)

    def set_quota(
        self,
        role: str,
        guarantee: Resources,
        limit: Resources | Mapping[str, int] | None,
        force: bool = False,
    ) -> None:
        self.policy.set_quota(role=role, guarantee=guarantee, limit=limit, force=force)

    def reserve(self, agent_id: str, resources: Resources, unreserve: bool = False) -> None:
        """An operator's dynamic reservation (see master/policy.py)."""
        self.policy.reserve(agent_id, resources, unreserve)

    def drain_agent(self, agent_id: str, draining: bool = True) -> None:
        self.policy.drain_agent(agent_id=agent_id, draining=draining)

    def kill(self, framework_id: str, task_id: str, grace_s: float = 0.0) -> None:
        fw = self._framework(framework_id)
        task = fw.tasks.get(task_id)
        if task is None:
            raise CallError(
                "NOT_FOUND",
                f"kill.task_id: task {task_id!r} is not a live task of framework {framework_id}",
            )
        agent = self.state.agents.get(task.agent_id)
        if agent is None or agent.outbox is None:
            raise CallError(
                "UNAVAILABLE",
                f"kill.task_id: the agent of task {task_id!r} is disconnected; "
                "the kill will not reach it now, retry when it is back",
            )
        agent.outbox.send(
            MasterMessage(
                kill_task=MasterMessage.KillTask(
                    framework_id=framework_id,
                    task_id=task_id,
                    grace_period_s=grace_s or task.info.kill_policy.grace_period_s,
                )
            )
        )

    def acknowledge(self, framework_id: str, acks: list[tuple[str, str, bytes]]) -> None:
        """Forward acknowledgements ``(agent_id, task_id, uuid)`` to their agents."""
        fw = self._framework(framework_id)
        by_agent: dict[str, list[MasterMessage.Acknowledgements.Ack]] = {}
        for named_agent, task_id, ack_uuid in acks:
            task = fw.tasks.get(task_id)
            # The task's own agent, whatever the call says: a framework must
            # not reach agents that do not run its tasks.
            agent_id = task.agent_id if task is not None else named_agent
            if task is not None and task.unacked_uuid == ack_uuid:
                task.unacked_uuid = b""
                if task.terminal:
                    self._complete_task(fw, task)
            by_agent.setdefault(agent_id, []).append(
                MasterMessage.Acknowledgements.Ack(task_id=task_id, uuid=ack_uuid, framework_id=framework_id)
            )
        for agent_id, items in by_agent.items():
            agent = self.state.agents.get(agent_id)
            if agent is not None and agent.outbox is not None:
                agent.outbox.send(MasterMessage(acknowledgements=MasterMessage.Acknowledgements(acks=items)))

    def reconcile(self, framework_id: str, tasks: list[tuple[str, str]]) -> None:
        self.reconciliation.reconcile(framework_id=framework_id, tasks=tasks)

    # -- operator -------------------------------------------------------------

    def operator_kill(self, task_id: str, framework_id: str = "") -> None:
        matches = self.state.find_task(task_id, framework_id)
        if not matches:
            raise CallError("NOT_FOUND", f"task_id: no live task {task_id!r}")
        if len(matches) > 1:
            raise CallError(
                "FAILED_PRECONDITION",
                f"task_id: {task_id!r} is used by {len(matches)} frameworks; give framework_id",
            )
        self.kill(matches[0].framework_id, task_id)

    async def read_file(
        self, task_id: str, framework_id: str, path: str, offset: int, length: int
    ) -> tuple[bytes, int, pb.TaskStatus]:
        matches = self.state.find_any_task(task_id, framework_id)
        if not matches:
            raise CallError("NOT_FOUND", f"task_id: no task {task_id!r}")
        task = matches[0]
        agent = self.state.agents.get(task.agent_id)
        if agent is None or agent.outbox is None:
            raise CallError("UNAVAILABLE", f"the agent of task {task_id!r} is not connected")
        length = min(length or self.config.read_file_default_length, self.config.read_file_max_length)

        def build(request_id: int) -> MasterMessage:
            return MasterMessage(
                read_file=MasterMessage.ReadFile(
                    request_id=request_id,
                    task_id=f"{task.framework_id}/{task_id}",
                    path=path,
                    offset=offset,
                    length=length,
                )
            )

        data = await self.queries.ask(agent, build, self.config.read_file_timeout_s)
        assert isinstance(data, agent_pb2.AgentMessage.FileData)
        if data.error:
            raise CallError("NOT_FOUND", data.error)
        return data.data, data.size, task.status

    def file_data(self, agent_id: str, data: agent_pb2.AgentMessage.FileData) -> None:
        self.queries.answer(agent_id, data.request_id, data)

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
        return await self.queries.usage(agents, wanted, self.config.read_file_timeout_s)

    def usage_data(self, agent_id: str, data: agent_pb2.AgentMessage.Usage) -> None:
        self.queries.answer(agent_id, data.request_id, data)


def default_address(port: int) -> str:
    host = os.environ.get("CORRAL_ADVERTISE_HOST", "127.0.0.1")
    return f"{host}:{port}"
