"""Agents registering and re-registering: admitted, resources checked, tasks adopted.

A new agent is admitted (recorded in the registry) and offered. One that comes
back (after a restart, a broken stream, a partition or a master failover)
brings its tasks: those the master knew and the agent no longer has are
``TASK_LOST``; those the master did not know (it failed over) are adopted with
their frameworks, which are re-created disconnected so they can re-subscribe;
tasks of frameworks torn down meanwhile are shut down on the agent; a task
under an id now live on another agent is killed (its framework replaced it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.codec import is_terminal, resources_from_proto
from corral.errors import CallError
from corral.master.allocator import AllocatorError
from corral.master.allocator.events import (
    AgentActivated,
    AgentAdded,
    AgentUpdated,
    FrameworkDeactivated,
    Reserved,
    ResourcesUsed,
)
from corral.master.liveness import partition_aware
from corral.master.registry import AGENTS
from corral.master.state import AgentRecord, FrameworkRecord, Outbox, TaskRecord
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError, Resources

if TYPE_CHECKING:
    from corral.master.master import Master

MasterMessage = agent_pb2.MasterMessage


class AgentRegistration:
    """Registers agents with the master and takes over the tasks they bring."""

    def __init__(self, master: Master) -> None:
        self.master = master

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
        """Admit a new agent, or re-admit a known one (same id) with the tasks
        it still runs. Returns the agent id.

        An agent id belongs to the principal that registered it; an
        authenticated principal runs one connected agent at a time (a node's
        certificate cannot register a second node's worth of resources).
        """
        now = self.master.clock()
        agent_id = info.id
        existing = self.master.state.agents.get(agent_id) if agent_id else None
        if existing is not None and existing.info.principal and existing.info.principal != principal:
            raise CallError(
                "PERMISSION_DENIED",
                f"agent_info.id: agent {agent_id} belongs to principal {existing.info.principal}, "
                f"not {principal}",
            )
        if authenticated:
            twin = next(
                (
                    a
                    for a in self.master.state.agents.values()
                    if a.info.principal == principal and a.agent_id != agent_id and a.connected
                ),
                None,
            )
            if twin is not None:
                raise CallError(
                    "FAILED_PRECONDITION",
                    f"principal {principal} already has agent {twin.agent_id} connected; "
                    "one agent per principal (issue each node its own certificate)",
                )
        info.principal = principal
        if existing is not None and existing.gone:
            raise CallError(
                "FAILED_PRECONDITION",
                f"agent {agent_id} was unreachable for longer than "
                f"{self.master.config.agent_gone_timeout_s:g}s and is gone: its tasks were reported "
                "GONE; register as a new agent",
            )
        if existing is not None:
            self._reregister_agent(existing, info, total, tasks, frameworks, outbox, now, task_infos or [])
            existing.recovered = False
        else:
            if not agent_id:
                agent_id = f"{self.master.info.id}-S{next(self.master._agent_seq)}"
            stored = pb.AgentInfo()
            stored.CopyFrom(info)
            record = AgentRecord(agent_id, stored, total, now, now, outbox, recovered=True)
            record.info.id = agent_id
            self.master.state.agents[agent_id] = record
            self.master._record(AGENTS, agent_id, stored.SerializeToString())
            used = self._adopt_tasks(record, tasks, frameworks, task_infos or [])
            record.recovered = False
            self.master.allocator.handle(AgentAdded(agent_id, total, used))
            self.master.log.info(
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
                    heartbeat_interval_s=self.master.config.agent_heartbeat_interval_s,
                    master_info=self.master.info,
                )
            )
        )
        self._shutdown_dead_frameworks(self.master.state.agents[agent_id], tasks)
        self.master.allocate_soon()
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
            self.master._record(AGENTS, agent.agent_id, info.SerializeToString())
        agent.info.CopyFrom(info)
        if total != agent.total:
            # Restarted with other resources: offer what it has now. Tasks
            # already running keep theirs, even if that over-commits it.
            self.master.log.warning(
                "agent.resources_changed",
                agent_id=agent.agent_id,
                was=agent.total.format(),
                now=total.format(),
            )
            agent.total = total
            self.master.allocator.handle(AgentUpdated(agent.agent_id, total))
            if agent.dynamic_reserved:
                # Its new total is unreserved: reserve again what was (Mesos
                # keeps them on the agent); what no longer fits is dropped, said.
                try:
                    self.master.allocator.handle(Reserved(agent.agent_id, agent.dynamic_reserved))
                except AllocatorError as e:
                    self.master.log.warning(
                        "agent.reservations_dropped",
                        agent_id=agent.agent_id,
                        reservations=agent.dynamic_reserved.format(),
                        error=str(e),
                    )
                    agent.dynamic_reserved = Resources()
                    self.master.policy.record_maintenance(agent)
        reported = {(t.framework_id, t.task_id) for t in tasks}
        # Tasks the master believes run there but the agent no longer has
        # ended while nobody watched: say so rather than let them vanish.
        for fw_id, task_id in sorted(agent.tasks - reported):
            task = self.master.state.task(fw_id, task_id)
            if task is not None and not task.terminal:
                self.master._master_update(
                    task,
                    pb.TASK_LOST,
                    pb.TaskStatus.REASON_AGENT_RESTARTED,
                    "the agent re-registered without this task",
                )
        new = [
            t
            for t in tasks
            if (t.framework_id, t.task_id) not in agent.tasks
            and (t.framework_id, t.task_id) not in agent.lost_tasks
        ]
        used = self._adopt_tasks(agent, new, frameworks, task_infos, unreachable=was_unreachable)
        for fw_id, res in used.items():
            self.master.allocator.handle(ResourcesUsed(fw_id, agent.agent_id, res))
        self.master.allocator.handle(AgentActivated(agent.agent_id))
        if was_unreachable:
            self.master.liveness.returned(agent, tasks)
            self.master.policy.record_maintenance(agent)  # no longer unreachable
        if agent.lost_tasks:
            self.master.liveness.settle_lost(agent, tasks)
        self.master.log.info("agent.reregistered", agent_id=agent.agent_id, tasks=len(tasks))

    def _adopt_tasks(
        self,
        agent: AgentRecord,
        tasks: list[pb.TaskStatus],
        frameworks: list[pb.FrameworkInfo],
        task_infos: list[pb.TaskInfo],
        unreachable: bool = False,
    ) -> dict[str, Resources]:
        """Take over tasks an agent reports that this master does not know
        (it restarted). Their frameworks are re-created, disconnected, so they
        can re-subscribe with the same id. ``unreachable``: the agent was
        marked so before this master led (the registry says), and frameworks
        that are not partition-aware were told its tasks were LOST: those are
        set aside and killed, not adopted (see master/liveness.py)."""
        infos = {f.id: f for f in frameworks}
        by_task = {(t.task_id): t for t in task_infos}
        used: dict[str, Resources] = {}
        room = agent.total.subtract_clamped(self.master.state.used_on_agent(agent.agent_id)).unreserved()
        dead = self._dead_frameworks(tasks)
        for status in tasks:
            if status.framework_id in dead:
                continue  # killed through ShutdownFramework, never adopted
            refusal = self._refuse_adoption(agent, status, by_task.get(status.task_id), room)
            if refusal is not None:
                self._kill_unadopted(agent, status, refusal)
                continue
            if not is_terminal(status.state):
                room = room.subtract_clamped(
                    _reported(agent, status, by_task.get(status.task_id))[1].unreserved()
                )
            fw = self.master.state.frameworks.get(status.framework_id)
            if fw is None:
                fw_info = infos.get(status.framework_id) or pb.FrameworkInfo(
                    id=status.framework_id, name="(recovered)"
                )
                fw = FrameworkRecord(
                    status.framework_id,
                    fw_info,
                    self.master.clock(),
                    None,
                    connected=False,
                    disconnected_at=self.master.clock(),
                )
                self.master.state.frameworks[fw.framework_id] = fw
                self.master._add_known_framework(fw.framework_id, fw_info)
                self.master.allocator.handle(FrameworkDeactivated(fw.framework_id))
            if unreachable and not partition_aware(fw):
                self._set_aside(agent, fw, status, by_task.get(status.task_id), used)
                continue
            known = fw.tasks.get(status.task_id)
            if known is not None:
                if known.agent_id != agent.agent_id and not is_terminal(status.state) and agent.outbox:
                    # Its framework, told it was lost, launched another task
                    # under this id elsewhere: this one must not run on.
                    self.master.log.warning(
                        "task.duplicate_killed", task_id=status.task_id, agent_id=agent.agent_id
                    )
                    agent.outbox.send(
                        MasterMessage(
                            kill_task=MasterMessage.KillTask(
                                framework_id=fw.framework_id, task_id=status.task_id
                            )
                        )
                    )
                continue
            # A task that ended while no master watched holds nothing, but is
            # adopted so its final update still reaches its framework.
            info, resources = _reported(agent, status, by_task.get(status.task_id))
            terminal = is_terminal(status.state)
            record = TaskRecord(
                status.task_id,
                fw.framework_id,
                agent.agent_id,
                info,
                resources,
                status,
                self.master.clock(),
            )
            fw.tasks[status.task_id] = record
            if terminal:
                record.unacked_uuid = status.uuid
                continue
            agent.tasks.add((fw.framework_id, status.task_id))
            used[fw.framework_id] = used.get(fw.framework_id, Resources()) + resources
            # A framework that was told the task was unreachable (or that
            # never heard of this master) learns it is back, as Mesos does.
            self.master._send_updates(fw, [self.master.reconciliation.reconciled(status)])
        return {k: v for k, v in used.items() if v}

    def _refuse_adoption(
        self, agent: AgentRecord, status: pb.TaskStatus, info: pb.TaskInfo | None, room: Resources
    ) -> str | None:
        """Why a reported task this master does not know must not be adopted:
        the master ran this agent all along (so it launched everything there),
        or the task holds more than the agent has left."""
        known = self.master.state.task(status.framework_id, status.task_id)
        if known is not None:
            return None  # handled by the caller (duplicates, its own)
        if not agent.recovered:
            return "this master did not launch it there"
        if not is_terminal(status.state):
            # Counted unreserved: reservations are the allocator's, not the total's.
            wanted = _reported(agent, status, info)[1].unreserved()
            if not room.contains(wanted):
                return f"it holds {wanted}, more than the agent has left ({room})"
        return None

    def _kill_unadopted(self, agent: AgentRecord, status: pb.TaskStatus, refusal: str) -> None:
        self.master.log.warning(
            "task.adoption_refused",
            agent_id=agent.agent_id,
            principal=agent.info.principal,
            framework_id=status.framework_id,
            task_id=status.task_id,
            reason=refusal,
        )
        if agent.outbox is None:
            return
        if is_terminal(status.state):
            ack = MasterMessage.Acknowledgements.Ack(
                task_id=status.task_id, uuid=status.uuid, framework_id=status.framework_id
            )
            agent.outbox.send(MasterMessage(acknowledgements=MasterMessage.Acknowledgements(acks=[ack])))
        else:
            agent.outbox.send(
                MasterMessage(
                    kill_task=MasterMessage.KillTask(framework_id=status.framework_id, task_id=status.task_id)
                )
            )

    def _set_aside(
        self,
        agent: AgentRecord,
        fw: FrameworkRecord,
        status: pb.TaskStatus,
        info: pb.TaskInfo | None,
        used: dict[str, Resources],
    ) -> None:
        """A task its framework was told was LOST, reported by its returning agent
        to a master that never knew it: held apart until it ends (settle_lost kills it)."""
        info, resources = _reported(agent, status, info)
        shown = pb.TaskStatus()
        shown.CopyFrom(status)
        shown.state = pb.TASK_UNREACHABLE  # reconciliation answers LOST, as it was told
        record = TaskRecord(
            status.task_id, fw.framework_id, agent.agent_id, info, resources, shown, self.master.clock()
        )
        agent.lost_tasks[(fw.framework_id, status.task_id)] = record
        if resources:
            used[fw.framework_id] = used.get(fw.framework_id, Resources()) + resources

    def _dead_frameworks(self, tasks: list[pb.TaskStatus]) -> set[str]:
        """Frameworks of reported tasks that were torn down (or are being):
        an agent that was away during the teardown still runs their tasks."""
        removed = {f.framework_id for f in self.master.state.completed_frameworks}
        dead = set()
        for status in tasks:
            fw = self.master.state.frameworks.get(status.framework_id)
            if (fw is None and status.framework_id in removed) or (fw is not None and fw.tearing_down):
                dead.add(status.framework_id)
        return dead

    def _shutdown_dead_frameworks(self, agent: AgentRecord, tasks: list[pb.TaskStatus]) -> None:
        if agent.outbox is None:
            return
        for framework_id in sorted(self._dead_frameworks(tasks)):
            self.master.log.info(
                "framework.shutdown_on_return", framework_id=framework_id, agent_id=agent.agent_id
            )
            agent.outbox.send(
                MasterMessage(shutdown_framework=MasterMessage.ShutdownFramework(framework_id=framework_id))
            )


def _reported(
    agent: AgentRecord, status: pb.TaskStatus, info: pb.TaskInfo | None
) -> tuple[pb.TaskInfo, Resources]:
    """The TaskInfo an agent reported for a task (a stub if none) and what the
    task holds there (nothing once it has ended, or if its resources are unreadable)."""
    info = info or pb.TaskInfo(task_id=status.task_id, name=status.task_id)
    info.agent_id = agent.agent_id
    if is_terminal(status.state):
        return info, Resources()
    try:
        return info, resources_from_proto(info.resources)
    except ResourceError:
        return info, Resources()
