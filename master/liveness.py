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
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from corral.codec import is_terminal
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb

if TYPE_CHECKING:
    from corral.master.master import Master
    from corral.master.state import AgentRecord, FrameworkRecord

log = structlog.get_logger(__name__)
MasterMessage = agent_pb2.MasterMessage


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


def partition_aware(fw: FrameworkRecord | None) -> bool:
    return fw is not None and pb.FrameworkInfo.PARTITION_AWARE in fw.info.capabilities


class Liveness:
    """The master's agent-liveness transitions (called on the master's loop)."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.marked_at: deque[float] = deque(maxlen=10_000)
        self._deferred: set[str] = set()

    def check(self, now: float) -> None:
        """Mark silent agents unreachable, as many as the rate limit allows."""
        m = self.master
        silent_s = m.config.agent_heartbeat_interval_s * m.config.agent_heartbeat_misses
        candidates = sorted(
            (
                a
                for a in m.state.agents.values()
                if not a.connected
                and not a.unreachable
                and not a.gone
                and a.reregister_deadline is None
                and now - a.last_heartbeat > silent_s
            ),
            key=lambda a: a.last_heartbeat,
        )
        if not candidates:
            self._deferred.clear()
            return
        live = sum(1 for a in m.state.agents.values() if not a.gone)
        cfg = m.config
        budget = unreachable_budget(
            self.marked_at, now, live, cfg.agent_unreachable_fraction, cfg.agent_unreachable_window_s
        )
        for agent in candidates[:budget]:
            self._deferred.discard(agent.agent_id)
            self.mark_unreachable(agent, now, silent_s)
        for agent in candidates[budget:]:
            if agent.agent_id not in self._deferred:
                self._deferred.add(agent.agent_id)
                log.warning("agent.unreachable_deferred", agent_id=agent.agent_id, reason="rate limit")

    def mark_unreachable(self, agent: AgentRecord, now: float, silent_s: float) -> None:
        m = self.master
        agent.unreachable = True
        agent.unreachable_since = now
        self.marked_at.append(now)
        m.counters.agents_marked_unreachable += 1
        m.policy.record_maintenance(agent)  # a new leader must know (see AgentMaintenance)
        message = f"agent {agent.agent_id} stopped answering (silent for more than {silent_s:g}s)"
        for fw_id, task_id in sorted(agent.tasks):
            task = m.state.task(fw_id, task_id)
            if task is None or task.terminal:
                continue
            task.status = m._status_for(
                fw_id, task.info, pb.TASK_UNREACHABLE, pb.TaskStatus.REASON_AGENT_DISCONNECTED, message
            )
            fw = m.state.frameworks.get(fw_id)
            if fw is None:
                continue
            shown = task.status
            if not partition_aware(fw):
                shown = pb.TaskStatus()
                shown.CopyFrom(task.status)
                shown.state = pb.TASK_LOST
                # Told it is lost, the framework may launch a task with the
                # same id: this one steps aside (Mesos keeps them apart too).
                del fw.tasks[task_id]
                agent.tasks.discard((fw_id, task_id))
                agent.lost_tasks[(fw_id, task_id)] = task
                fw.completed.append(dataclasses.replace(task, status=shown))
            m._send_updates(fw, [shown])
        log.warning("agent.unreachable", agent_id=agent.agent_id, tasks=len(agent.tasks), reason=message)

    def returned(self, agent: AgentRecord, reported: list[pb.TaskStatus]) -> None:
        """An unreachable agent re-registered with ``reported`` tasks (called after adoption)."""
        m = self.master
        by_key = {(s.framework_id, s.task_id): s for s in reported}
        restored = killed = 0
        for fw_id, task_id in sorted(agent.tasks):
            task = m.state.task(fw_id, task_id)
            status = by_key.get((fw_id, task_id))
            if task is None or status is None or task.status.state != pb.TASK_UNREACHABLE:
                continue
            fw = m.state.frameworks.get(fw_id)
            if not partition_aware(fw):
                # Its framework is gone (the others' tasks were set aside, below).
                killed += 1
                if agent.outbox is not None:
                    agent.outbox.send(
                        MasterMessage(
                            kill_task=MasterMessage.KillTask(
                                framework_id=fw_id,
                                task_id=task_id,
                                grace_period_s=task.info.kill_policy.grace_period_s,
                            )
                        )
                    )
                continue
            if is_terminal(status.state):
                continue  # the agent re-sends that update itself, with its uuid
            task.status = status
            restored += 1
            if fw is not None:
                m._send_updates(fw, [m.reconciliation.reconciled(status)])
        log.info("agent.reachable_again", agent_id=agent.agent_id, restored=restored, killed=killed)

    def settle_lost(self, agent: AgentRecord, reported: list[pb.TaskStatus]) -> None:
        """At every re-registration (not only the first after the partition: a
        kill can be lost with a dropped stream or an agent restart): the
        set-aside tasks the agent still runs are killed (again), those it no
        longer reports give their resources back, and a terminal one is left
        for its update (re-sent by the agent with its uuid) to release."""
        by_key = {(s.framework_id, s.task_id): s for s in reported}
        for key, task in sorted(agent.lost_tasks.items()):
            status = by_key.get(key)
            if status is None:
                self.release_lost(agent, key)  # it ended while away: nothing to wait for
                continue
            if is_terminal(status.state):
                continue
            # It was told TASK_LOST and may have been replaced.
            if agent.outbox is not None:
                agent.outbox.send(
                    MasterMessage(
                        kill_task=MasterMessage.KillTask(
                            framework_id=key[0],
                            task_id=key[1],
                            grace_period_s=task.info.kill_policy.grace_period_s,
                        )
                    )
                )
            log.info("task.lost_killed", agent_id=agent.agent_id, framework_id=key[0], task_id=key[1])

    def release_lost(self, agent: AgentRecord, key: tuple[str, str]) -> None:
        """A set-aside task (see AgentRecord.lost_tasks) has ended: give its resources back."""
        task = agent.lost_tasks.pop(key, None)
        if task is not None and task.resources:
            self.master.release_resources(task)

    def gone(self, agent: AgentRecord) -> None:
        """Unreachable for too long: its tasks end GONE (LOST, already said, for the others)."""
        m = self.master
        message = f"agent {agent.agent_id} was unreachable for too long and is gone"
        for fw_id, task_id in sorted(agent.tasks):
            task = m.state.task(fw_id, task_id)
            fw = m.state.frameworks.get(fw_id)
            if task is None or task.terminal or fw is None:
                continue
            reason = pb.TaskStatus.REASON_AGENT_REMOVED
            status = m._status_for(fw_id, task.info, pb.TASK_GONE, reason, message)
            m._apply_status(task, status)
            m._complete_task(fw, task)
            if partition_aware(fw):
                m._send_updates(fw, [status])
        for key in sorted(agent.lost_tasks):
            self.release_lost(agent, key)
