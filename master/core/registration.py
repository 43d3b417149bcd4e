"""Agents registering and re-registering: admitted, resources checked, tasks taken back.

A new agent is admitted (recorded in the registry) and offered. One that comes
back (after a restart, a broken stream, a partition or a master failover)
brings its tasks: those the master knew and the agent no longer has are
``TASK_LOST``; those the master did not know are adopted (``adoption.py``);
an agent that was unreachable is told which of its tasks to kill
(``liveness.py``).
"""

from __future__ import annotations

import dataclasses

from corral.errors import CallError
from corral.master.allocator import AllocatorError
from corral.master.allocator.events import AgentActivated, AgentAdded, AgentUpdated, Reserved, ResourcesUsed
from corral.master.core import liveness
from corral.master.core import messages as msg
from corral.master.core.adoption import adopt_tasks, shutdown_dead_frameworks
from corral.master.core.context import Core
from corral.master.core.domain import AgentInfo, FrameworkInfo, Reason, TaskInfo, TaskState, TaskStatus
from corral.master.core.policy import record_maintenance
from corral.master.core.records import AGENTS, AgentRecord, StreamId
from corral.resources import Resources


def register_agent(
    core: Core,
    info: AgentInfo,
    total: Resources,
    tasks: list[TaskStatus],
    frameworks: list[FrameworkInfo],
    stream: StreamId,
    task_infos: list[TaskInfo] | None = None,
    principal: str = "",
    authenticated: bool = False,
) -> str:
    """Admit a new agent, or re-admit a known one (same id) with the tasks
    it still runs. Returns the agent id.

    An agent id belongs to the principal that registered it; an
    authenticated principal runs one connected agent at a time (a node's
    certificate cannot register a second node's worth of resources).
    """
    agent_id = info.id
    existing = core.state.agents.get(agent_id) if agent_id else None
    _check_admission(core, existing, agent_id, principal, authenticated)
    info = dataclasses.replace(info, principal=principal)
    if existing is not None:
        _reregister(core, existing, info, total, tasks, frameworks, stream, task_infos or [])
        existing.recovered = False
    else:
        if not agent_id:
            agent_id = f"{core.info.id}-S{next(core.agent_seq)}"
        stored = dataclasses.replace(info, id=agent_id)
        # Tasks this master did not launch are adopted only from an agent that
        # had an id (it ran under an earlier leader) and only in the
        # re-registration window after this master began: later, a "new"
        # agent reporting RUNNING tasks of other tenants' frameworks is an
        # injection (security review), and they are killed instead.
        returning = bool(info.id) and core.now < core.recovered_at
        record = AgentRecord(agent_id, stored, total, core.now, core.now, stream, recovered=returning)
        core.state.agents[agent_id] = record
        core.record(AGENTS, agent_id, stored)
        used = adopt_tasks(core, record, tasks, frameworks, task_infos or [])
        record.recovered = False
        core.allocator.handle(AgentAdded(agent_id, total, used))
        core.log.info(
            "agent.registered",
            agent_id=agent_id,
            hostname=info.hostname,
            resources=total.format(),
            adopted_tasks=len(record.tasks),
        )
    agent = core.state.agents[agent_id]
    registered = msg.Registered(agent_id, core.config.agent_heartbeat_interval_s, core.info)
    core.to_agent(agent, registered)
    shutdown_dead_frameworks(core, agent, tasks)
    core.allocate_soon()
    return agent_id


def _check_admission(
    core: Core, existing: AgentRecord | None, agent_id: str, principal: str, authenticated: bool
) -> None:
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
                for a in core.state.agents.values()
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
    if existing is not None and existing.gone:
        raise CallError(
            "FAILED_PRECONDITION",
            f"agent {agent_id} was unreachable for longer than "
            f"{core.config.agent_gone_timeout_s:g}s and is gone: its tasks were reported "
            "GONE; register as a new agent",
        )


def _reregister(
    core: Core,
    agent: AgentRecord,
    info: AgentInfo,
    total: Resources,
    tasks: list[TaskStatus],
    frameworks: list[FrameworkInfo],
    stream: StreamId,
    task_infos: list[TaskInfo],
) -> None:
    if agent.stream is not None and agent.stream != stream:
        core.close(agent.stream)
    agent.stream = stream
    agent.connected = True
    agent.last_heartbeat = core.now
    agent.reregister_deadline = None
    was_unreachable, agent.unreachable = agent.unreachable, False
    if agent.info != info:
        core.record(AGENTS, agent.agent_id, info)
    agent.info = info
    if total != agent.total:
        _resources_changed(core, agent, total)
    reported = {(t.framework_id, t.task_id) for t in tasks}
    # Tasks the master believes run there but the agent no longer has
    # ended while nobody watched: say so rather than let them vanish.
    for fw_id, task_id in sorted(agent.tasks - reported):
        task = core.state.task(fw_id, task_id)
        if task is not None and not task.terminal:
            core.master_update(
                task,
                TaskState.TASK_LOST,
                Reason.REASON_AGENT_RESTARTED,
                "the agent re-registered without this task",
            )
    new = [
        t
        for t in tasks
        if (t.framework_id, t.task_id) not in agent.tasks
        and (t.framework_id, t.task_id) not in agent.lost_tasks
    ]
    used = adopt_tasks(core, agent, new, frameworks, task_infos, unreachable=was_unreachable)
    for fw_id, res in used.items():
        core.allocator.handle(ResourcesUsed(fw_id, agent.agent_id, res))
    core.allocator.handle(AgentActivated(agent.agent_id))
    if was_unreachable:
        liveness.returned(core, agent, tasks)
        record_maintenance(core, agent)  # no longer unreachable
    if agent.lost_tasks:
        liveness.settle_lost(core, agent, tasks)
    core.log.info("agent.reregistered", agent_id=agent.agent_id, tasks=len(tasks))


def _resources_changed(core: Core, agent: AgentRecord, total: Resources) -> None:
    """Restarted with other resources: offer what it has now. Tasks already
    running keep theirs, even if that over-commits it."""
    core.log.warning(
        "agent.resources_changed", agent_id=agent.agent_id, was=agent.total.format(), now=total.format()
    )
    agent.total = total
    core.allocator.handle(AgentUpdated(agent.agent_id, total))
    if agent.dynamic_reserved:
        # Its new total is unreserved: reserve again what was (Mesos
        # keeps them on the agent); what no longer fits is dropped, said.
        try:
            core.allocator.handle(Reserved(agent.agent_id, agent.dynamic_reserved))
        except AllocatorError as e:
            core.log.warning(
                "agent.reservations_dropped",
                agent_id=agent.agent_id,
                reservations=agent.dynamic_reserved.format(),
                error=str(e),
            )
            agent.dynamic_reserved = Resources()
            record_maintenance(core, agent)
