"""Tasks an agent brings back that this master does not know (it failed over
or restarted): adopted with their frameworks, set aside, or killed.

Their frameworks are re-created, disconnected, so they can re-subscribe with
the same id. A task is refused (killed, or acknowledged if it ended) when the
master ran this agent all along (so it launched everything there) or when it
holds more than the agent has left; tasks of frameworks torn down meanwhile
are shut down on the agent; a task under an id now live on another agent is
killed (its framework replaced it). After an unreachable mark, tasks of
frameworks that are not partition-aware were told LOST: they are set aside
(``AgentRecord.lost_tasks``) and killed, not adopted (see ``liveness.py``).
"""

from __future__ import annotations

import dataclasses

from corral.master.allocator.events import FrameworkDeactivated
from corral.master.core import messages as msg
from corral.master.core.context import Core
from corral.master.core.domain import FrameworkInfo, TaskInfo, TaskState, TaskStatus, is_terminal
from corral.master.core.reconciliation import reconciled
from corral.master.core.records import AgentRecord, FrameworkRecord, TaskRecord, partition_aware
from corral.resources import Resources


def adopt_tasks(
    core: Core,
    agent: AgentRecord,
    tasks: list[TaskStatus],
    frameworks: list[FrameworkInfo],
    task_infos: list[TaskInfo],
    unreachable: bool = False,
) -> dict[str, Resources]:
    """Take over the reported ``tasks``; returns what they use, by framework.
    ``unreachable``: the agent was marked so before this master led."""
    infos = {f.id: f for f in frameworks}
    by_task = {(t.task_id): t for t in task_infos}
    used: dict[str, Resources] = {}
    room = agent.total.subtract_clamped(core.state.used_on_agent(agent.agent_id)).unreserved()
    dead = dead_frameworks(core, tasks)
    for status in tasks:
        if status.framework_id in dead:
            continue  # killed through ShutdownFramework, never adopted
        info = by_task.get(status.task_id)
        refusal = _refuse_adoption(core, agent, status, info, room)
        if refusal is not None:
            _kill_unadopted(core, agent, status, refusal)
            continue
        if not is_terminal(status.state):
            room = room.subtract_clamped(_reported(agent, status, info)[1].unreserved())
        fw = core.state.frameworks.get(status.framework_id)
        if fw is None:
            fw = _recreate_framework(core, status, infos)
        if unreachable and not partition_aware(fw):
            _set_aside(core, agent, fw, status, info, used)
            continue
        known = fw.tasks.get(status.task_id)
        if known is not None:
            if (
                known.agent_id != agent.agent_id
                and not is_terminal(status.state)
                and agent.stream is not None
            ):
                # Its framework, told it was lost, launched another task
                # under this id elsewhere: this one must not run on.
                core.log.warning("task.duplicate_killed", task_id=status.task_id, agent_id=agent.agent_id)
                core.to_agent(agent, core.kill_message(fw.framework_id, status.task_id))
            continue
        # A task that ended while no master watched holds nothing, but is
        # adopted so its final update still reaches its framework.
        task_info, resources = _reported(agent, status, info)
        record = TaskRecord(
            status.task_id, fw.framework_id, agent.agent_id, task_info, resources, status, core.now
        )
        fw.tasks[status.task_id] = record
        if is_terminal(status.state):
            record.unacked_uuid = status.uuid
            continue
        agent.tasks.add((fw.framework_id, status.task_id))
        used[fw.framework_id] = used.get(fw.framework_id, Resources()) + resources
        # A framework that was told the task was unreachable (or that
        # never heard of this master) learns it is back, as Mesos does.
        core.send_updates(fw, [reconciled(core, status)])
    return {k: v for k, v in used.items() if v}


def _recreate_framework(core: Core, status: TaskStatus, infos: dict[str, FrameworkInfo]) -> FrameworkRecord:
    fw_info = infos.get(status.framework_id) or FrameworkInfo(id=status.framework_id, name="(recovered)")
    fw = FrameworkRecord(
        status.framework_id, fw_info, core.now, None, connected=False, disconnected_at=core.now
    )
    core.state.frameworks[fw.framework_id] = fw
    core.add_known_framework(fw.framework_id, fw_info)
    core.allocator.handle(FrameworkDeactivated(fw.framework_id))
    return fw


def _refuse_adoption(
    core: Core, agent: AgentRecord, status: TaskStatus, info: TaskInfo | None, room: Resources
) -> str | None:
    """Why a reported task this master does not know must not be adopted."""
    if core.state.task(status.framework_id, status.task_id) is not None:
        return None  # handled by the caller (duplicates, its own)
    if not agent.recovered:
        return "this master did not launch it there"
    if not is_terminal(status.state):
        # Counted unreserved: reservations are the allocator's, not the total's.
        wanted = _reported(agent, status, info)[1].unreserved()
        if not room.contains(wanted):
            return f"it holds {wanted}, more than the agent has left ({room})"
    return None


def _kill_unadopted(core: Core, agent: AgentRecord, status: TaskStatus, refusal: str) -> None:
    core.log.warning(
        "task.adoption_refused",
        agent_id=agent.agent_id,
        principal=agent.info.principal,
        framework_id=status.framework_id,
        task_id=status.task_id,
        reason=refusal,
    )
    if is_terminal(status.state):
        core.to_agent(agent, core.acks_message([status]))
    else:
        core.to_agent(agent, core.kill_message(status.framework_id, status.task_id))


def _set_aside(
    core: Core,
    agent: AgentRecord,
    fw: FrameworkRecord,
    status: TaskStatus,
    info: TaskInfo | None,
    used: dict[str, Resources],
) -> None:
    """A task its framework was told was LOST, reported by its returning agent
    to a master that never knew it: held apart until it ends (settle_lost kills it)."""
    task_info, resources = _reported(agent, status, info)
    # reconciliation answers LOST, as it was told
    shown = dataclasses.replace(status, state=TaskState.TASK_UNREACHABLE)
    record = TaskRecord(
        status.task_id, fw.framework_id, agent.agent_id, task_info, resources, shown, core.now
    )
    agent.lost_tasks[(fw.framework_id, status.task_id)] = record
    if resources:
        used[fw.framework_id] = used.get(fw.framework_id, Resources()) + resources


def dead_frameworks(core: Core, tasks: list[TaskStatus]) -> set[str]:
    """Frameworks of reported tasks that were torn down (or are being):
    an agent that was away during the teardown still runs their tasks."""
    removed = {f.framework_id for f in core.state.completed_frameworks}
    dead = set()
    for status in tasks:
        fw = core.state.frameworks.get(status.framework_id)
        if (fw is None and status.framework_id in removed) or (fw is not None and fw.tearing_down):
            dead.add(status.framework_id)
    return dead


def shutdown_dead_frameworks(core: Core, agent: AgentRecord, tasks: list[TaskStatus]) -> None:
    if agent.stream is None:
        return
    for framework_id in sorted(dead_frameworks(core, tasks)):
        core.log.info("framework.shutdown_on_return", framework_id=framework_id, agent_id=agent.agent_id)
        core.to_agent(agent, msg.ShutdownFramework(framework_id))


def _reported(agent: AgentRecord, status: TaskStatus, info: TaskInfo | None) -> tuple[TaskInfo, Resources]:
    """The TaskInfo an agent reported for a task (a stub if none) and what the
    task holds there (nothing once it has ended, or if its resources are unreadable)."""
    info = dataclasses.replace(
        info or TaskInfo(task_id=status.task_id, name=status.task_id), agent_id=agent.agent_id
    )
    # (resources that did not parse are empty: wire.task_from_pb)
    return info, Resources() if is_terminal(status.state) else info.resources
