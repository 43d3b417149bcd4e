"""Agents that stop answering: unreachable, back again, or gone for good.

Mesos' model (docs: high-availability-framework-guide, "partition-aware"):

* An agent silent for ``agent_heartbeat_interval_s * agent_heartbeat_misses``
  (a broken stream only makes it *disconnected*: it usually comes straight
  back) is marked **unreachable**. Its tasks may still run. Partition-aware
  frameworks are told ``TASK_UNREACHABLE``, others ``TASK_LOST``; the master
  keeps the tasks (state UNREACHABLE) and their resources.
* **Rate limit**: within any ``agent_unreachable_window_s`` at most
  ``max(1, agent_unreachable_fraction * agents)`` agents are marked; the rest
  wait (disconnected, offered nothing) until the window allows or they come
  back. A switch failure that silences half the cluster for a minute must not
  make every framework reschedule everything (Mesos' ``agent_removal_rate_limit``).
* When it **comes back** with its tasks: partition-aware frameworks are told
  their real state (``RUNNING`` again); tasks of the other frameworks, which
  were told ``TASK_LOST`` and may have replaced them, are killed, as Mesos does.
* Unreachable for ``agent_gone_timeout_s``: **gone**. Its tasks end
  ``TASK_GONE`` (``TASK_LOST`` for the others, which were told already) and it
  may only return as a new agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from corral.master.core.context import Core
from corral.master.core.domain import Reason, TaskState, TaskStatus, is_terminal
from corral.master.core.policy import record_maintenance
from corral.master.core.reconciliation import reconciled
from corral.master.core.records import AgentRecord, partition_aware


def unreachable_budget(
    marked_at: Sequence[float], now: float, agents: int, fraction: float, window_s: float
) -> int:
    """How many more agents may be marked unreachable at ``now``.

    ``marked_at``: when earlier agents were marked. At most
    ``max(1, floor(fraction * agents))`` within any ``window_s``; a fraction
    of 1 or more means no limit.
    """
    if fraction >= 1.0:
        return agents
    recent = sum(1 for t in marked_at if now - t < window_s)
    return max(0, max(1, int(fraction * agents)) - recent)


def check(core: Core) -> None:
    """Mark silent agents unreachable, as many as the rate limit allows."""
    cfg = core.config
    now = core.now
    silent_s = cfg.agent_heartbeat_interval_s * cfg.agent_heartbeat_misses
    candidates = sorted(
        (
            a
            for a in core.state.agents.values()
            if not a.connected
            and not a.unreachable
            and not a.gone
            and a.reregister_deadline is None
            and now - a.last_heartbeat > silent_s
        ),
        key=lambda a: a.last_heartbeat,
    )
    if not candidates:
        core.deferred_unreachable.clear()
        return
    live = sum(1 for a in core.state.agents.values() if not a.gone)
    budget = unreachable_budget(
        core.marked_at, now, live, cfg.agent_unreachable_fraction, cfg.agent_unreachable_window_s
    )
    for agent in candidates[:budget]:
        core.deferred_unreachable.discard(agent.agent_id)
        mark_unreachable(core, agent, silent_s)
    for agent in candidates[budget:]:
        if agent.agent_id not in core.deferred_unreachable:
            core.deferred_unreachable.add(agent.agent_id)
            core.log.warning("agent.unreachable_deferred", agent_id=agent.agent_id, reason="rate limit")


def mark_unreachable(core: Core, agent: AgentRecord, silent_s: float) -> None:
    agent.unreachable = True
    agent.unreachable_since = core.now
    core.marked_at.append(core.now)
    core.counters.agents_marked_unreachable += 1
    record_maintenance(core, agent)  # a new leader must know (see AgentMaintenance)
    message = f"agent {agent.agent_id} stopped answering (silent for more than {silent_s:g}s)"
    for fw_id, task_id in sorted(agent.tasks):
        task = core.state.task(fw_id, task_id)
        if task is None or task.terminal:
            continue
        task.status = core.status_for(
            fw_id, task.info, TaskState.TASK_UNREACHABLE, Reason.REASON_AGENT_DISCONNECTED, message
        )
        fw = core.state.frameworks.get(fw_id)
        if fw is None:
            continue
        shown = task.status
        if not partition_aware(fw):
            shown = dataclasses.replace(task.status, state=TaskState.TASK_LOST)
            # Told it is lost, the framework may launch a task with the
            # same id: this one steps aside (Mesos keeps them apart too).
            del fw.tasks[task_id]
            agent.tasks.discard((fw_id, task_id))
            agent.lost_tasks[(fw_id, task_id)] = task
            fw.completed.append(dataclasses.replace(task, status=shown))
        core.send_updates(fw, [shown])
    core.log.warning("agent.unreachable", agent_id=agent.agent_id, tasks=len(agent.tasks), reason=message)


def returned(core: Core, agent: AgentRecord, reported: list[TaskStatus]) -> None:
    """An unreachable agent re-registered with ``reported`` tasks (called after adoption)."""
    by_key = {(s.framework_id, s.task_id): s for s in reported}
    restored = killed = 0
    for fw_id, task_id in sorted(agent.tasks):
        task = core.state.task(fw_id, task_id)
        status = by_key.get((fw_id, task_id))
        if task is None or status is None or task.status.state != TaskState.TASK_UNREACHABLE:
            continue
        fw = core.state.frameworks.get(fw_id)
        if not partition_aware(fw):
            # Its framework is gone (the others' tasks were set aside, below).
            killed += 1
            core.to_agent(agent, core.kill_message(fw_id, task_id, task.info.kill_grace_s))
            continue
        if is_terminal(status.state):
            continue  # the agent re-sends that update itself, with its uuid
        task.status = status
        restored += 1
        if fw is not None:
            core.send_updates(fw, [reconciled(core, status)])
    core.log.info("agent.reachable_again", agent_id=agent.agent_id, restored=restored, killed=killed)


def settle_lost(core: Core, agent: AgentRecord, reported: list[TaskStatus]) -> None:
    """At every re-registration (not only the first after the partition: a
    kill can be lost with a dropped stream or an agent restart): the
    set-aside tasks the agent still runs are killed (again), those it no
    longer reports give their resources back, and a terminal one is left
    for its update (re-sent by the agent with its uuid) to release."""
    by_key = {(s.framework_id, s.task_id): s for s in reported}
    for key, task in sorted(agent.lost_tasks.items()):
        status = by_key.get(key)
        if status is None:
            release_lost(core, agent, key)  # it ended while away: nothing to wait for
            continue
        if is_terminal(status.state):
            continue
        # It was told TASK_LOST and may have been replaced.
        core.to_agent(agent, core.kill_message(key[0], key[1], task.info.kill_grace_s))
        core.log.info("task.lost_killed", agent_id=agent.agent_id, framework_id=key[0], task_id=key[1])


def release_lost(core: Core, agent: AgentRecord, key: tuple[str, str]) -> None:
    """A set-aside task (see AgentRecord.lost_tasks) has ended: give its resources back."""
    task = agent.lost_tasks.pop(key, None)
    if task is not None and task.resources:
        core.release_resources(task)


def gone(core: Core, agent: AgentRecord) -> None:
    """Unreachable for too long: its tasks end GONE (LOST, already said, for the others)."""
    message = f"agent {agent.agent_id} was unreachable for too long and is gone"
    for fw_id, task_id in sorted(agent.tasks):
        task = core.state.task(fw_id, task_id)
        fw = core.state.frameworks.get(fw_id)
        if task is None or task.terminal or fw is None:
            continue
        reason = Reason.REASON_AGENT_REMOVED
        status = core.status_for(fw_id, task.info, TaskState.TASK_GONE, reason, message)
        core.apply_status(task, status)
        core.complete_task(fw, task)
        if partition_aware(fw):
            core.send_updates(fw, [status])
    for key in sorted(agent.lost_tasks):
        release_lost(core, agent, key)
