"""Explicit and implicit reconciliation: what the master tells a framework about its tasks.

Answers carry ``REASON_RECONCILIATION`` and no uuid (nothing to acknowledge).
A task the master does not know is answered from what it knows of its agent:
gone (``TASK_GONE``, ``TASK_LOST`` for frameworks that are not
partition-aware), unreachable (``TASK_UNREACHABLE`` / ``TASK_LOST``), else
``TASK_UNKNOWN``. For ``agent_reregister_timeout_s`` after a master starts,
such questions wait: the agent may not have re-registered yet, and a
premature ``TASK_UNKNOWN`` would make the framework launch the task twice.
"""

from __future__ import annotations

import dataclasses

from corral.master.core.context import Core
from corral.master.core.domain import Reason, TaskInfo, TaskState, TaskStatus
from corral.master.core.records import FrameworkRecord, TaskRecord, partition_aware

#: questions kept for the end of the re-registration window, over all frameworks
MAX_DEFERRED_RECONCILE = 100_000


def reconcile(core: Core, framework_id: str, tasks: list[tuple[str, str]]) -> None:
    """Send the latest state of the named tasks (``(task_id, agent_id)``), or of every live task."""
    fw = core.framework(framework_id)
    out: list[TaskStatus] = []
    if not tasks:
        records = list(fw.tasks.values())
        # Tasks set aside as lost while their agent is away (master/core/liveness.py)
        # were told TASK_LOST once, perhaps to a disconnected framework: say it again.
        records += [
            t
            for a in core.state.agents.values()
            for (fw_id, _), t in sorted(a.lost_tasks.items())
            if fw_id == framework_id
        ]
        out = [reconciled(core, t.status) for t in records]
    recovering = core.now < core.recovered_at
    dropped = 0
    for task_id, agent_id in tasks:
        record = _latest(fw, task_id)
        if record is not None:
            out.append(reconciled(core, record.status))
        elif recovering:
            # Its agent may not have re-registered yet: answering UNKNOWN
            # now could make the framework launch it a second time. Kept once
            # per task and bounded: a framework that asks past the bound gets
            # no answer for the rest (reconciliation is retried by design).
            key = (framework_id, task_id)
            if key in core.deferred_reconcile or len(core.deferred_reconcile) < MAX_DEFERRED_RECONCILE:
                core.deferred_reconcile[key] = agent_id
            else:
                dropped += 1
        else:
            out.append(_unknown(core, framework_id, task_id, agent_id))
    if dropped:
        core.log.warning("reconcile.deferred_full", framework_id=framework_id, dropped=dropped)
    if out:
        core.send_updates(fw, out)


def _latest(fw: FrameworkRecord, task_id: str) -> TaskRecord | None:
    return fw.tasks.get(task_id) or next((t for t in reversed(fw.completed) if t.task_id == task_id), None)


def _unknown(core: Core, framework_id: str, task_id: str, agent_id: str) -> TaskStatus:
    """The answer about a task this master does not know."""
    agent = core.state.agents.get(agent_id)
    aware = partition_aware(core.state.frameworks.get(framework_id))
    state = TaskState.TASK_UNKNOWN
    reason = Reason.REASON_RECONCILIATION
    message = "task is not known to the master"
    if agent is not None and agent.gone:
        state = TaskState.TASK_GONE if aware else TaskState.TASK_LOST
        reason = Reason.REASON_AGENT_REMOVED
        message = f"agent {agent_id} was unreachable for too long and is gone"
    elif agent is not None and agent.unreachable:
        # Its agent was admitted but did not come back after a failover:
        # the task may still run there (Mesos answers the same).
        state = TaskState.TASK_UNREACHABLE if aware else TaskState.TASK_LOST
        reason = Reason.REASON_AGENT_DISCONNECTED
        message = f"agent {agent_id} did not re-register after the master failed over"
    info = TaskInfo(task_id=task_id, agent_id=agent_id)
    return core.status_for(framework_id, info, state, reason, message)


def answer_deferred(core: Core) -> None:
    """The re-registration window has closed: answer what was asked meanwhile."""
    if not core.deferred_reconcile or core.now < core.recovered_at:
        return
    pending, core.deferred_reconcile = core.deferred_reconcile, {}
    for (framework_id, task_id), agent_id in pending.items():
        fw = core.state.frameworks.get(framework_id)
        if fw is None or fw.tearing_down:
            continue
        record = _latest(fw, task_id)
        status = (
            reconciled(core, record.status)
            if record is not None
            else _unknown(core, framework_id, task_id, agent_id)
        )
        core.send_updates(fw, [status])


def reconciled(core: Core, status: TaskStatus) -> TaskStatus:
    """A task's latest status as a reconciliation answer."""
    state = status.state
    if state == TaskState.TASK_UNREACHABLE and not partition_aware(
        core.state.frameworks.get(status.framework_id)
    ):
        state = TaskState.TASK_LOST  # what it was told (master/core/liveness.py)
    # reconciliation answers need no acknowledgement: no uuid
    return dataclasses.replace(status, state=state, reason=Reason.REASON_RECONCILIATION, uuid=b"")
