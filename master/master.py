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
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from corral import __version__
from corral.codec import Reason, State, is_terminal, resources_from_proto, resources_to_proto
from corral.errors import CallError
from corral.master.agent_queries import AgentQueries
from corral.master.allocator import Allocator, AllocatorError, RoleInfo
from corral.master.allocator import Reason as Why
from corral.master.allocator.events import (
    AgentActivated,
    AgentAdded,
    AgentDeactivated,
    AgentDraining,
    AgentRemoved,
    AgentUpdated,
    FrameworkActivated,
    FrameworkAdded,
    FrameworkDeactivated,
    FrameworkRemoved,
    QuotaSet,
    Reserved,
    ResourcesRecovered,
    ResourcesUsed,
    Revived,
    RoleWeight,
    Suppressed,
    Unreserved,
)
from corral.master.allocator.events import Event as AllocatorEvent
from corral.master.liveness import Liveness, partition_aware
from corral.master.registry import AGENTS, FRAMEWORKS, ROLES, RegistryState, RegistryWriter, role_key
from corral.master.state import (
    AgentRecord,
    FrameworkRecord,
    MasterState,
    OfferRecord,
    Outbox,
    TaskRecord,
)
from corral.master.validation import validate_task
from corral.proto import agent_pb2, operator_pb2, scheduler_pb2
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


_SUPPORTED_OPERATIONS = (
    scheduler_pb2.Operation.LAUNCH,
    scheduler_pb2.Operation.LAUNCH_GROUP,
    scheduler_pb2.Operation.RESERVE,
    scheduler_pb2.Operation.UNRESERVE,
)


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
    ) -> None:
        self.config = config or MasterConfig()
        self.clock = clock
        self.state = MasterState()
        self.allocator = Allocator()
        self.info = pb.MasterInfo(
            id=master_id or new_id(),
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
        self._deferred_reconciles: list[tuple[str, str, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.log = log.bind(master_id=self.info.id)
        self.liveness = Liveness(self)

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
            record = AgentRecord(agent_id, info, total, now, now, None, connected=False)
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
            self._restore_role(summary)
        self.log.info(
            "master.recovered",
            agents=len(state.agents),
            frameworks=len(state.frameworks),
            roles=len(state.roles),
        )

    def _restore_role(self, summary: operator_pb2.RoleSummary) -> None:
        """Weights and quota an earlier leader recorded; forced, as they were
        accepted then (the cluster may not have re-registered yet)."""
        try:
            if summary.weight and summary.weight != 1.0:
                self.allocator.handle(RoleWeight(summary.role, summary.weight))
            guarantee = resources_from_proto(summary.guarantee)
            limit = resources_from_proto(summary.limit) if summary.has_limit else None
            if guarantee or limit is not None:
                self.allocator.handle(QuotaSet(summary.role, guarantee, limit, force=True))
        except (AllocatorError, ResourceError) as e:
            self.log.warning("registry.bad_role", role=summary.role, error=str(e))

    def _record_role(self, role: str) -> None:
        """Persist a role's weight and quota, so a new leader keeps them."""
        for info in self.allocator.roles():
            if info.role != role:
                continue
            if info.weight == 1.0 and not info.guarantee and info.limit is None:
                self._record(ROLES, role_key(role), None)
                return
            summary = operator_pb2.RoleSummary(
                role=role,
                weight=info.weight,
                guarantee=resources_to_proto(info.guarantee),
                limit=resources_to_proto(info.limit or Resources()),
                has_limit=info.limit is not None,
            )
            self._record(ROLES, role_key(role), summary.SerializeToString())

    def _record(self, kind: str, key: str, data: bytes | None) -> None:
        if self.registry is not None:
            self.registry.put(kind, key, data)

    def _check_reregistration(self, now: float) -> None:
        for agent in self.state.agents.values():
            if agent.reregister_deadline is not None and now >= agent.reregister_deadline:
                agent.reregister_deadline = None
                if not agent.connected:
                    agent.unreachable = True
                    agent.unreachable_since = now
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
                self._answer_deferred_reconciles(now)
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
    ) -> str:
        """Admit a new agent, or re-admit a known one (same id) with the tasks
        it still runs. Returns the agent id."""
        now = self.clock()
        agent_id = info.id
        existing = self.state.agents.get(agent_id) if agent_id else None
        if existing is not None and existing.gone:
            raise CallError(
                "FAILED_PRECONDITION",
                f"agent {agent_id} was unreachable for longer than "
                f"{self.config.agent_gone_timeout_s:g}s and is gone: its tasks were reported "
                "GONE; register as a new agent",
            )
        if existing is not None:
            self._reregister_agent(existing, info, total, tasks, frameworks, outbox, now, task_infos or [])
        else:
            if not agent_id:
                agent_id = f"{self.info.id}-S{next(self._agent_seq)}"
            stored = pb.AgentInfo()
            stored.CopyFrom(info)
            record = AgentRecord(agent_id, stored, total, now, now, outbox)
            record.info.id = agent_id
            self.state.agents[agent_id] = record
            self._record(AGENTS, agent_id, stored.SerializeToString())
            used = self._adopt_tasks(record, tasks, frameworks, task_infos or [])
            self.allocator.handle(AgentAdded(agent_id, total, used))
            self.log.info(
                "agent.registered",
                agent_id=agent_id,
                hostname=info.hostname,
                resources=total.format(),
                adopted_tasks=len(record.tasks),
            )
        outbox.send(
            MasterMessage(
                registered=MasterMessage.Registered(
                    agent_id=agent_id,
                    heartbeat_interval_s=self.config.agent_heartbeat_interval_s,
                    master_info=self.info,
                )
            )
        )
        self._shutdown_dead_frameworks(self.state.agents[agent_id], tasks)
        self.allocate_soon()
        return agent_id

    def _reregister_agent(
        self,
        agent: AgentRecord,
        info: pb.AgentInfo,
        total: Resources,
        tasks: list[pb.TaskStatus],
        frameworks: list[pb.FrameworkInfo],
        outbox: Outbox[object],
        now: float,
        task_infos: list[pb.TaskInfo],
    ) -> None:
        if agent.outbox is not None and agent.outbox is not outbox:
            agent.outbox.close()
        agent.outbox = outbox
        agent.connected = True
        agent.last_heartbeat = now
        agent.reregister_deadline = None
        was_unreachable, agent.unreachable = agent.unreachable, False
        if agent.info.SerializeToString() != info.SerializeToString():
            self._record(AGENTS, agent.agent_id, info.SerializeToString())
        agent.info.CopyFrom(info)
        if total != agent.total:
            # Restarted with other resources: offer what it has now. Tasks
            # already running keep theirs, even if that over-commits it.
            self.log.warning(
                "agent.resources_changed",
                agent_id=agent.agent_id,
                was=agent.total.format(),
                now=total.format(),
            )
            agent.total = total
            self.allocator.handle(AgentUpdated(agent.agent_id, total))
        reported = {(t.framework_id, t.task_id) for t in tasks}
        # Tasks the master believes run there but the agent no longer has
        # ended while nobody watched: say so rather than let them vanish.
        for fw_id, task_id in sorted(agent.tasks - reported):
            task = self.state.task(fw_id, task_id)
            if task is not None and not task.terminal:
                self._master_update(
                    task,
                    pb.TASK_LOST,
                    pb.TaskStatus.REASON_AGENT_RESTARTED,
                    "the agent re-registered without this task",
                )
        new = [t for t in tasks if (t.framework_id, t.task_id) not in agent.tasks]
        used = self._adopt_tasks(agent, new, frameworks, task_infos)
        for fw_id, res in used.items():
            self.allocator.handle(ResourcesUsed(fw_id, agent.agent_id, res))
        self.allocator.handle(AgentActivated(agent.agent_id))
        if was_unreachable:
            self.liveness.returned(agent, tasks)
        self.log.info("agent.reregistered", agent_id=agent.agent_id, tasks=len(tasks))

    def _adopt_tasks(
        self,
        agent: AgentRecord,
        tasks: list[pb.TaskStatus],
        frameworks: list[pb.FrameworkInfo],
        task_infos: list[pb.TaskInfo],
    ) -> dict[str, Resources]:
        """Take over tasks an agent reports that this master does not know
        (it restarted). Their frameworks are re-created, disconnected, so they
        can re-subscribe with the same id."""
        infos = {f.id: f for f in frameworks}
        by_task = {(t.task_id): t for t in task_infos}
        used: dict[str, Resources] = {}
        dead = self._dead_frameworks(tasks)
        for status in tasks:
            if status.framework_id in dead:
                continue  # killed through ShutdownFramework, never adopted
            fw = self.state.frameworks.get(status.framework_id)
            if fw is None:
                fw_info = infos.get(status.framework_id) or pb.FrameworkInfo(
                    id=status.framework_id, name="(recovered)"
                )
                fw = FrameworkRecord(
                    status.framework_id,
                    fw_info,
                    self.clock(),
                    None,
                    connected=False,
                    disconnected_at=self.clock(),
                )
                self.state.frameworks[fw.framework_id] = fw
                self._add_known_framework(fw.framework_id, fw_info)
                self.allocator.handle(FrameworkDeactivated(fw.framework_id))
            if status.task_id in fw.tasks:
                continue
            info = by_task.get(status.task_id) or pb.TaskInfo(task_id=status.task_id, name=status.task_id)
            info.agent_id = agent.agent_id
            terminal = is_terminal(status.state)
            try:
                # A task that ended while no master watched holds nothing, but
                # is adopted so its final update still reaches its framework.
                resources = Resources() if terminal else resources_from_proto(info.resources)
            except ResourceError:
                resources = Resources()
            record = TaskRecord(
                status.task_id,
                fw.framework_id,
                agent.agent_id,
                info,
                resources,
                status,
                self.clock(),
            )
            fw.tasks[status.task_id] = record
            if terminal:
                record.unacked_uuid = status.uuid
                continue
            agent.tasks.add((fw.framework_id, status.task_id))
            used[fw.framework_id] = used.get(fw.framework_id, Resources()) + resources
            # A framework that was told the task was unreachable (or that
            # never heard of this master) learns it is back, as Mesos does.
            self._send_updates(fw, [self._reconciled(status)])
        return {k: v for k, v in used.items() if v}

    def _dead_frameworks(self, tasks: list[pb.TaskStatus]) -> set[str]:
        """Frameworks of reported tasks that were torn down (or are being):
        an agent that was away during the teardown still runs their tasks."""
        removed = {f.framework_id for f in self.state.completed_frameworks}
        dead = set()
        for status in tasks:
            fw = self.state.frameworks.get(status.framework_id)
            if (fw is None and status.framework_id in removed) or (fw is not None and fw.tearing_down):
                dead.add(status.framework_id)
        return dead

    def _shutdown_dead_frameworks(self, agent: AgentRecord, tasks: list[pb.TaskStatus]) -> None:
        if agent.outbox is None:
            return
        for framework_id in sorted(self._dead_frameworks(tasks)):
            self.log.info("framework.shutdown_on_return", framework_id=framework_id, agent_id=agent.agent_id)
            agent.outbox.send(
                MasterMessage(shutdown_framework=MasterMessage.ShutdownFramework(framework_id=framework_id))
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
            agent = self.state.agents.get(task.agent_id)
            if agent is not None:
                agent.tasks.discard((task.framework_id, task.task_id))
            if task.resources:
                self.allocator.handle(
                    ResourcesRecovered(
                        task.framework_id, task.agent_id, task.resources, role=task.role or None
                    )
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

    def subscribe(self, info: pb.FrameworkInfo, outbox: Outbox[object]) -> FrameworkRecord:
        """Register a new framework or re-subscribe a known one by id."""
        now = self.clock()
        fw = self.state.frameworks.get(info.id) if info.id else None
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
            fw_id = info.id or new_id("fw-")
            stored = pb.FrameworkInfo()
            stored.CopyFrom(info)
            stored.id = fw_id
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
        """Carry out LAUNCH operations on offers. Bad offers drop every task
        (TASK_DROPPED); a bad task gets TASK_ERROR and the rest still launch."""
        fw = self._framework(framework_id)
        now = self.clock()
        tasks = [
            (f"accept.operations[{i}].launch.task_infos[{j}]", t)
            for i, op in enumerate(operations)
            if op.type in (scheduler_pb2.Operation.LAUNCH, scheduler_pb2.Operation.LAUNCH_GROUP)
            for j, t in enumerate(op.launch.task_infos)
        ]
        unsupported = [
            f"accept.operations[{i}].type: {scheduler_pb2.Operation.Type.Name(op.type)} is not supported yet"
            for i, op in enumerate(operations)
            if op.type not in _SUPPORTED_OPERATIONS
        ]
        problem = self._check_offers(fw, offer_ids) or (unsupported[0] if unsupported else None)
        conversions: list[tuple[Resources, bool]] = []
        if problem is None:
            problem, conversions = self._check_reservations(offer_ids, operations)
        if problem is not None:
            # Valid offers among them go back; the tasks are dropped, never launched.
            for offer_id in offer_ids:
                offer = self.state.offers.get(offer_id)
                if offer is not None and offer.framework_id == framework_id:
                    self._remove_offer(offer_id)
                    self.allocator.handle(
                        ResourcesRecovered(framework_id, offer.agent_id, offer.resources, role=offer.role)
                    )
            self.allocate_soon()
            self._send_updates(
                fw,
                [
                    self._status_for(
                        fw.framework_id, t, pb.TASK_DROPPED, pb.TaskStatus.REASON_INVALID_OFFERS, problem
                    )
                    for _, t in tasks
                ],
            )
            if not tasks:
                raise CallError("INVALID_ARGUMENT", problem)
            return
        offers = [self._remove_offer(o) for o in offer_ids]
        agent_id = offers[0].agent_id if offers and offers[0] else ""
        available = Resources()
        for offer in offers:
            assert offer is not None
            available = available + offer.resources
        agent = self.state.agents[agent_id]
        role = offers[0].role if offers and offers[0] else "*"
        for res, unreserve in conversions:
            # Checked above against the offers, which the allocator still
            # counts as this framework's: RESERVE/UNRESERVE cannot fail here.
            event = Unreserved if unreserve else Reserved
            try:
                self.allocator.handle(event(agent_id, res, framework_id))
            except AllocatorError as e:
                # Offers of two roles in one ACCEPT: the combined offer held
                # it, no single role's part does. Skip it, launch the rest.
                if fw.outbox is not None:
                    error = Event.Error(code="INVALID_ARGUMENT", message=f"ACCEPT: {e}")
                    fw.outbox.send(Event(type=Event.ERROR, error=error))
                continue
            source, converted = (res, res.unreserved()) if unreserve else (res.unreserved(), res)
            available = available.subtract_clamped(source) + converted
            self.log.info(
                "resources.unreserved" if unreserve else "resources.reserved",
                framework_id=framework_id,
                agent_id=agent_id,
                resources=res.format(),
            )
        launched: list[pb.TaskInfo] = []
        errors: list[pb.TaskStatus] = []
        seen: set[str] = set()
        for where, task in tasks:
            problems, wanted = validate_task(task, where, available, {*fw.tasks, *seen})
            if problems:
                errors.append(
                    self._status_for(
                        fw.framework_id,
                        task,
                        pb.TASK_ERROR,
                        pb.TaskStatus.REASON_TASK_INVALID,
                        "; ".join(problems),
                    )
                )
                continue
            seen.add(task.task_id)
            available = available - wanted
            stored = pb.TaskInfo()
            stored.CopyFrom(task)
            stored.agent_id = agent_id
            status = pb.TaskStatus(
                task_id=task.task_id,
                state=pb.TASK_STAGING,
                source=pb.TaskStatus.SOURCE_MASTER,
                agent_id=agent_id,
                framework_id=framework_id,
                timestamp=now,
            )
            record = TaskRecord(task.task_id, framework_id, agent_id, stored, wanted, status, now, role=role)
            fw.tasks[task.task_id] = record
            agent.tasks.add((framework_id, task.task_id))
            launched.append(stored)
        if launched and agent.outbox is not None:
            agent.outbox.send(
                MasterMessage(run_tasks=MasterMessage.RunTasks(framework_info=fw.info, tasks=launched))
            )
        elif launched:
            # The agent went away between offer and accept: the offer would
            # have been rescinded, so this is a race; report it honestly.
            for stored in launched:
                self._master_update(
                    fw.tasks[stored.task_id],
                    pb.TASK_DROPPED,
                    pb.TaskStatus.REASON_AGENT_DISCONNECTED,
                    f"agent {agent_id} is disconnected",
                )
        if errors:
            self._send_updates(fw, errors)
        if available:
            self.allocator.handle(
                ResourcesRecovered(framework_id, agent_id, available, refuse_s or 0.0, now, role)
            )
            self.allocate_soon()
        if launched:
            self.log.debug(
                "tasks.launched", framework_id=framework_id, agent_id=agent_id, count=len(launched)
            )

    def _check_reservations(
        self, offer_ids: list[str], operations: list[scheduler_pb2.Operation]
    ) -> tuple[str | None, list[tuple[Resources, bool]]]:
        """RESERVE and UNRESERVE operations, checked in order against the
        offers: ``(problem, [(resources, unreserve)])``. A framework reserves
        for the role its offer was made to, and only what the offer holds."""
        conversions: list[tuple[Resources, bool]] = []
        ops = [
            (i, op)
            for i, op in enumerate(operations)
            if op.type in (scheduler_pb2.Operation.RESERVE, scheduler_pb2.Operation.UNRESERVE)
        ]
        if not ops:
            return None, conversions
        available = Resources()
        roles = set()
        for offer_id in offer_ids:
            offer = self.state.offers[offer_id]
            available = available + offer.resources
            roles.add(offer.role)
        for i, op in ops:
            unreserve = op.type == scheduler_pb2.Operation.UNRESERVE
            where = f"accept.operations[{i}].{'unreserve' if unreserve else 'reserve'}.resources"
            items = op.unreserve.resources if unreserve else op.reserve.resources
            try:
                res = resources_from_proto(items, where)
            except ResourceError as e:
                return str(e), []
            if not res:
                return f"{where}: must name at least one resource", []
            targets = res.roles()
            if "" in targets:
                return f"{where}: every resource must name the role to reserve for, got {res}", []
            bad = sorted(targets - roles)
            if bad:
                return (
                    f"{where}: role(s) {', '.join(repr(r) for r in bad)} are not the role of the offer "
                    f"({', '.join(sorted(roles))}); a framework reserves for the role it was offered in",
                    [],
                )
            needed = res if unreserve else res.unreserved()
            if not available.contains(needed):
                return f"{where}: {needed} is not in the offer (it has {available})", []
            converted = res.unreserved() if unreserve else res
            available = available.subtract_clamped(needed) + converted
            conversions.append((res, unreserve))
        return None, conversions

    def _check_offers(self, fw: FrameworkRecord, offer_ids: list[str]) -> str | None:
        if not offer_ids:
            return "accept.offer_ids: must name at least one offer"
        if len(set(offer_ids)) != len(offer_ids):
            return "accept.offer_ids: an offer is given more than once"
        agents = set()
        for i, offer_id in enumerate(offer_ids):
            offer = self.state.offers.get(offer_id)
            if offer is None:
                return (
                    f"accept.offer_ids[{i}]: offer {offer_id!r} is not valid "
                    "(unknown, already used, rescinded or expired)"
                )
            if offer.framework_id != fw.framework_id:
                return f"accept.offer_ids[{i}]: offer {offer_id!r} belongs to another framework"
            agents.add(offer.agent_id)
        if len(agents) > 1:
            return "accept.offer_ids: offers must all be on the same agent"
        return None

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
        """Why a framework is not being offered resources (empty: nothing in its way)."""
        fw = self.state.frameworks.get(framework_id)
        if fw is None:
            raise CallError("NOT_FOUND", f"framework_id: {framework_id!r} is not known")
        return self.allocator.explain(framework_id, self.clock())

    def roles(self) -> list[RoleInfo]:
        return self.allocator.roles()

    def set_weights(self, weights: list[tuple[str, float]]) -> None:
        """Set role weights, all or none: every one is checked first."""
        if not weights:
            raise CallError("INVALID_ARGUMENT", "weights: give at least one ROLE=WEIGHT")
        trial = Allocator()
        for i, (role, weight) in enumerate(weights):
            try:
                trial.handle(RoleWeight(role, weight))
            except AllocatorError as e:
                raise CallError("INVALID_ARGUMENT", f"weights[{i}]: {e}") from None
        for role, weight in weights:
            self._allocator_call(RoleWeight(role, weight))
            self._record_role(role)
        self.log.info("roles.weights", weights=dict(weights))
        self.allocate_soon()

    def set_quota(
        self, role: str, guarantee: Resources, limit: Resources | None, force: bool = False
    ) -> None:
        self._allocator_call(QuotaSet(role, guarantee, limit, force))
        self._record_role(role)
        self.log.info(
            "roles.quota",
            role=role,
            guarantee=guarantee.format(),
            limit=None if limit is None else limit.format(),
        )
        self.allocate_soon()

    def drain_agent(self, agent_id: str, draining: bool = True) -> None:
        """Maintenance: a draining agent keeps its tasks and offers nothing."""
        agent = self.state.agents.get(agent_id)
        if agent is None or agent.gone:
            raise CallError("NOT_FOUND", f"agent_id: {agent_id!r} is not known")
        self._allocator_call(AgentDraining(agent_id, draining))
        if draining:
            for offer_id in sorted(agent.offers):
                self._rescind(offer_id)
        self.log.info("agent.draining" if draining else "agent.undrained", agent_id=agent_id)
        self.allocate_soon()

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
        """Send the latest state of the named tasks, or of every live task."""
        fw = self._framework(framework_id)
        out: list[pb.TaskStatus] = []
        if not tasks:
            records = list(fw.tasks.values())
            out = [self._reconciled(t.status) for t in records]
        recovering = self.clock() < self._recovered_at
        for task_id, agent_id in tasks:
            record = fw.tasks.get(task_id) or next(
                (t for t in reversed(fw.completed) if t.task_id == task_id), None
            )
            if record is not None:
                out.append(self._reconciled(record.status))
            elif recovering:
                # Its agent may not have re-registered yet: answering UNKNOWN
                # now could make the framework launch it a second time.
                self._deferred_reconciles.append((framework_id, task_id, agent_id))
            else:
                out.append(self._unknown(framework_id, task_id, agent_id))
        if out:
            self._send_updates(fw, out)

    def _unknown(self, framework_id: str, task_id: str, agent_id: str) -> pb.TaskStatus:
        """The answer about a task this master does not know."""
        agent = self.state.agents.get(agent_id)
        fw = self.state.frameworks.get(framework_id)
        aware = fw is not None and pb.FrameworkInfo.PARTITION_AWARE in fw.info.capabilities
        state: State = pb.TASK_UNKNOWN
        reason: Reason = pb.TaskStatus.REASON_RECONCILIATION
        message = "task is not known to the master"
        if agent is not None and agent.gone:
            state = pb.TASK_GONE if aware else pb.TASK_LOST
            reason = pb.TaskStatus.REASON_AGENT_REMOVED
            message = f"agent {agent_id} was unreachable for too long and is gone"
        elif agent is not None and agent.unreachable:
            # Its agent was admitted but did not come back after a failover:
            # the task may still run there (Mesos answers the same).
            state = pb.TASK_UNREACHABLE if aware else pb.TASK_LOST
            reason = pb.TaskStatus.REASON_AGENT_DISCONNECTED
            message = f"agent {agent_id} did not re-register after the master failed over"
        info = pb.TaskInfo(task_id=task_id, agent_id=agent_id)
        return self._status_for(framework_id, info, state, reason, message)

    def _answer_deferred_reconciles(self, now: float) -> None:
        if not self._deferred_reconciles or now < self._recovered_at:
            return
        pending, self._deferred_reconciles = self._deferred_reconciles, []
        for framework_id, task_id, agent_id in pending:
            fw = self.state.frameworks.get(framework_id)
            if fw is None or fw.tearing_down:
                continue
            record = fw.tasks.get(task_id) or next(
                (t for t in reversed(fw.completed) if t.task_id == task_id), None
            )
            status = (
                self._reconciled(record.status)
                if record is not None
                else self._unknown(framework_id, task_id, agent_id)
            )
            self._send_updates(fw, [status])

    def _reconciled(self, status: pb.TaskStatus) -> pb.TaskStatus:
        copy = pb.TaskStatus()
        copy.CopyFrom(status)
        if copy.state == pb.TASK_UNREACHABLE and not partition_aware(
            self.state.frameworks.get(copy.framework_id)
        ):
            copy.state = pb.TASK_LOST  # what it was told (master/liveness.py)
        copy.reason = pb.TaskStatus.REASON_RECONCILIATION
        copy.uuid = b""  # reconciliation answers need no acknowledgement
        return copy

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
