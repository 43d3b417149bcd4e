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

from typing import TYPE_CHECKING

from corral.codec import Reason, State
from corral.master.liveness import partition_aware
from corral.proto import messages_pb2 as pb

if TYPE_CHECKING:
    from corral.master.master import Master


class Reconciliation:
    """Answers a framework's RECONCILE calls for the master."""

    def __init__(self, master: Master) -> None:
        self.master = master
        #: (framework_id, task_id, agent_id) asked about before the agents could re-register
        self.deferred: list[tuple[str, str, str]] = []

    def reconcile(self, framework_id: str, tasks: list[tuple[str, str]]) -> None:
        """Send the latest state of the named tasks, or of every live task."""
        fw = self.master._framework(framework_id)
        out: list[pb.TaskStatus] = []
        if not tasks:
            records = list(fw.tasks.values())
            # Tasks set aside as lost while their agent is away (master/liveness.py)
            # were told TASK_LOST once, perhaps to a disconnected framework: say it again.
            records += [
                t
                for a in self.master.state.agents.values()
                for (fw_id, _), t in sorted(a.lost_tasks.items())
                if fw_id == framework_id
            ]
            out = [self.reconciled(t.status) for t in records]
        recovering = self.master.clock() < self.master._recovered_at
        for task_id, agent_id in tasks:
            record = fw.tasks.get(task_id) or next(
                (t for t in reversed(fw.completed) if t.task_id == task_id), None
            )
            if record is not None:
                out.append(self.reconciled(record.status))
            elif recovering:
                # Its agent may not have re-registered yet: answering UNKNOWN
                # now could make the framework launch it a second time.
                self.deferred.append((framework_id, task_id, agent_id))
            else:
                out.append(self._unknown(framework_id, task_id, agent_id))
        if out:
            self.master._send_updates(fw, out)

    def _unknown(self, framework_id: str, task_id: str, agent_id: str) -> pb.TaskStatus:
        """The answer about a task this master does not know."""
        agent = self.master.state.agents.get(agent_id)
        fw = self.master.state.frameworks.get(framework_id)
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
        return self.master._status_for(framework_id, info, state, reason, message)

    def answer_deferred(self, now: float) -> None:
        if not self.deferred or now < self.master._recovered_at:
            return
        pending, self.deferred = self.deferred, []
        for framework_id, task_id, agent_id in pending:
            fw = self.master.state.frameworks.get(framework_id)
            if fw is None or fw.tearing_down:
                continue
            record = fw.tasks.get(task_id) or next(
                (t for t in reversed(fw.completed) if t.task_id == task_id), None
            )
            status = (
                self.reconciled(record.status)
                if record is not None
                else self._unknown(framework_id, task_id, agent_id)
            )
            self.master._send_updates(fw, [status])

    def reconciled(self, status: pb.TaskStatus) -> pb.TaskStatus:
        copy = pb.TaskStatus()
        copy.CopyFrom(status)
        if copy.state == pb.TASK_UNREACHABLE and not partition_aware(
            self.master.state.frameworks.get(copy.framework_id)
        ):
            copy.state = pb.TASK_LOST  # what it was told (master/liveness.py)
        copy.reason = pb.TaskStatus.REASON_RECONCILIATION
        copy.uuid = b""  # reconciliation answers need no acknowledgement
        return copy
