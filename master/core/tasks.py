"""Task status: agents' updates in, frameworks' acknowledgements and kills out.

Only a task's own agent speaks for it, and a task that ended stays ended. An
update nobody will acknowledge (framework torn down or tearing down, task
already completed, a stale or set-aside task) is acknowledged by the master
itself, so the agent stops retrying it.
"""

from __future__ import annotations

from corral.errors import CallError
from corral.master.core import messages as msg
from corral.master.core.context import Core
from corral.master.core.domain import TaskStatus, is_terminal
from corral.master.core.frameworks import maybe_finish_teardown
from corral.master.core.liveness import release_lost


def status_updates(core: Core, agent_id: str, statuses: list[TaskStatus]) -> None:
    agent = core.state.agents.get(agent_id)
    if agent is None:
        return
    forward: dict[str, list[TaskStatus]] = {}
    self_acks: list[TaskStatus] = []
    for status in statuses:
        key = (status.framework_id, status.task_id)
        if key in agent.lost_tasks:
            # Set aside while the agent was away: its framework was told
            # TASK_LOST (and may run a new task under this id); only its end matters.
            if is_terminal(status.state):
                release_lost(core, agent, key)
            self_acks.append(status)
            continue
        task = core.state.task(status.framework_id, status.task_id)
        fw = core.state.frameworks.get(status.framework_id)
        stale = task is not None and (
            # Only the task's own agent speaks for it, and a task that
            # ended stays ended (a late or replayed update must not
            # revive it and return its resources twice).
            task.agent_id != agent_id or (task.terminal and not is_terminal(status.state))
        )
        if stale:
            core.log.warning(
                "status.ignored",
                task_id=status.task_id,
                from_agent=agent_id,
                state=status.state.name,
            )
            self_acks.append(status)
            continue
        if task is None or fw is None:
            # Nobody will ever acknowledge it (framework torn down, or an
            # update for a task already completed): acknowledge for them.
            self_acks.append(status)
            continue
        core.apply_status(task, status)
        if fw.tearing_down:
            self_acks.append(status)
            maybe_finish_teardown(core, fw)
            continue
        if status.uuid:
            task.unacked_uuid = status.uuid
        forward.setdefault(fw.framework_id, []).append(status)
    if self_acks:
        core.to_agent(agent, core.acks_message(self_acks))
    for fw_id, items in forward.items():
        core.send_updates(core.state.frameworks[fw_id], items)


def kill(core: Core, framework_id: str, task_id: str, grace_s: float = 0.0) -> None:
    fw = core.framework(framework_id)
    task = fw.tasks.get(task_id)
    if task is None:
        raise CallError(
            "NOT_FOUND", f"kill.task_id: task {task_id!r} is not a live task of framework {framework_id}"
        )
    agent = core.state.agents.get(task.agent_id)
    if agent is None or agent.stream is None:
        raise CallError(
            "UNAVAILABLE",
            f"kill.task_id: the agent of task {task_id!r} is disconnected; "
            "the kill will not reach it now, retry when it is back",
        )
    core.to_agent(agent, core.kill_message(framework_id, task_id, grace_s or task.info.kill_grace_s))


def operator_kill(core: Core, task_id: str, framework_id: str = "") -> None:
    matches = core.state.find_task(task_id, framework_id)
    if not matches:
        raise CallError("NOT_FOUND", f"task_id: no live task {task_id!r}")
    if len(matches) > 1:
        raise CallError(
            "FAILED_PRECONDITION",
            f"task_id: {task_id!r} is used by {len(matches)} frameworks; give framework_id",
        )
    kill(core, matches[0].framework_id, task_id)


def acknowledge(core: Core, framework_id: str, acks: list[tuple[str, str, bytes]]) -> None:
    """Forward acknowledgements ``(agent_id, task_id, uuid)`` to their agents."""
    fw = core.framework(framework_id)
    by_agent: dict[str, list[msg.Ack]] = {}
    for named_agent, task_id, ack_uuid in acks:
        task = fw.tasks.get(task_id)
        # The task's own agent, whatever the call says: a framework must
        # not reach agents that do not run its tasks.
        agent_id = task.agent_id if task is not None else named_agent
        if task is not None and task.unacked_uuid == ack_uuid:
            task.unacked_uuid = b""
            if task.terminal:
                core.complete_task(fw, task)
        by_agent.setdefault(agent_id, []).append(msg.Ack(task_id, ack_uuid, framework_id))
    for agent_id, items in by_agent.items():
        agent = core.state.agents.get(agent_id)
        if agent is not None:
            core.to_agent(agent, msg.Acknowledgements(tuple(items)))
