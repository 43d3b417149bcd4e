"""Agent recovery: carry on after a restart with the tasks an earlier run left.

``recover`` runs before the agent dials the master. It reads the checkpoints
(slave/checkpoints.py; a damaged one stops the agent with a CheckpointError
naming the file), then per task that had not completed:

* its update log gives the last state and the updates not yet acknowledged,
  which go back into the status update manager with their uuids;
* the containerizer re-attaches to its supervisor (pid + start time, pidfd):
  a task still running is watched again, a task that ended while the agent
  was down is reported from its ``exit_status.json``, a task whose end left no
  record is reported TASK_LOST; a task that was being killed is killed again.

Containers and cgroups that no checkpointed task owns are killed and removed.
No task is ever launched again. With ``--recover=cleanup`` every task the
earlier run left is killed and forgotten instead (the agent keeps its id if it
can read it, so the master reports those tasks LOST when it re-registers).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from corral.codec import is_terminal
from corral.proto import messages_pb2 as pb
from corral.slave.checkpoints import CheckpointError, CheckpointWriteError, boot_id, read_record
from corral.slave.containerizer import ContainerError
from corral.slave.status_updates import TaskKey

if TYPE_CHECKING:
    from corral.slave.agent import Agent

log = structlog.get_logger(__name__)

MODES = ("reconnect", "cleanup")


class Journal:
    """Checkpoints the agent's status updates and acknowledgements into its journal.

    A write that fails (a full disk) is logged and the update still goes: it
    is delivered at least once while this agent process lives. A restarted
    agent learns what the journal missed from the container (its exit status,
    or TASK_LOST once the container is gone), so no task disappears; failing
    running tasks for a full disk would be the worse outcome.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def updated(self, status: pb.TaskStatus) -> None:
        run = self.agent.tasks.get((status.framework_id, status.task_id))
        if run is not None:  # an update about a task this agent never had is not kept
            try:
                self.agent.checkpoints.record_update(run.container_id, status)
            except CheckpointWriteError as e:
                self.agent.checkpoint_failed(e, task_id=status.task_id)

    def acknowledged(self, key: TaskKey, uuid: bytes) -> None:
        run = self.agent.tasks.get(key)
        if run is not None:
            try:
                self.agent.checkpoints.record_ack(run.container_id, uuid)
            except CheckpointWriteError as e:
                # Not fatal: after a restart the update goes once more (a duplicate).
                self.agent.checkpoint_failed(e, task_id=key[1])


async def recover(agent: Agent) -> None:
    """Restore ``agent`` from its checkpoints (see the module docstring)."""
    mode = agent.config.recover
    if mode not in MODES:
        raise ValueError(f"recover: must be one of {', '.join(MODES)}, got {mode!r}")
    started = time.monotonic()
    if mode == "cleanup":
        await _cleanup(agent)
        return
    checkpoint = agent.checkpoints.load()
    agent.agent_id = checkpoint.agent_id
    # Containers do not outlive their host's boot (see Containerizer.recover).
    rebooted = bool(checkpoint.boot_id) and checkpoint.boot_id != boot_id()
    if rebooted:
        agent.log.warning("agent.host_rebooted", tasks=len(checkpoint.tasks))
    agent.frameworks.update(checkpoint.frameworks)
    counts = {"running": 0, "ended": 0, "lost": 0, "reported": 0, "completed": 0}
    keep: set[str] = set()
    from corral.slave.agent import TaskRun  # circular at import time

    for task in checkpoint.tasks:
        key = (task.framework_id, task.info.task_id)
        if task.completed_at is not None:
            agent.completed[key] = task.sandbox
            agent.completed_at[key] = task.completed_at
            counts["completed"] += 1
            continue
        run = TaskRun(task.framework_id, task.info, task.container_id, task.sandbox, recovered=True)
        latest = task.updates.latest
        if latest is not None:
            run.state = latest.state
        agent.tasks[key] = run
        agent.updates.restore(key, task.updates.pending)
        run.launched.set()
        if is_terminal(run.state):
            # Its container was destroyed before the terminal update was made;
            # only the update (if not acknowledged) is left to deliver.
            counts["reported"] += 1
            continue
        keep.add(task.container_id)
        try:
            kind = agent.containerizer.recover(
                task.container_id, task.sandbox, agent.recovered_config(run), rebooted=rebooted
            )
        except ContainerError as e:
            path = agent.work_dir / "containers" / task.container_id / "container.json"
            raise CheckpointError(path, str(e).split(": ", 1)[-1]) from None
        counts[kind] += 1
        if kind == "running":
            run.pid = agent.containerizer.task_pid(task.container_id)
            if run.state in (pb.TASK_STAGING, pb.TASK_STARTING):
                agent._update(run, pb.TASK_RUNNING)  # it exec'd; the update was not made yet
            elif run.state == pb.TASK_KILLING:
                agent._spawn_kill(run.framework_id, task.info.task_id, 0.0)
        elif run.state == pb.TASK_KILLING:
            run.kill_requested = True
        lost = ""
        if kind == "lost":
            if rebooted:
                lost = "the host rebooted while the task ran"
            elif run.state in (pb.TASK_STAGING, pb.TASK_STARTING):
                lost = "the agent restarted while the task was starting"
            else:
                lost = "the agent was down when the task ended and no exit status was recorded"
        run.watcher = agent._spawn_follow(run, lost)
    removed = await agent.containerizer.cleanup_leftovers(keep)
    agent.log.info(
        "agent.recovered",
        agent_id=agent.agent_id,
        frameworks=len(agent.frameworks),
        leftovers_removed=len(removed),
        elapsed_s=round(time.monotonic() - started, 3),
        **counts,
    )


async def _cleanup(agent: Agent) -> None:
    """Kill everything an earlier run left and forget its tasks; keep the agent id if readable."""
    try:
        record = read_record(agent.checkpoints.meta / "agent.json")
    except CheckpointError as e:
        log.warning("agent.cleanup_forgets_id", reason=str(e))
        record = None
    agent_id = record.get("agent_id") if record else None
    agent.checkpoints.forget_agent()
    removed = await agent.containerizer.cleanup_leftovers(set())
    if isinstance(agent_id, str) and agent_id:
        agent.agent_id = agent_id
        agent.checkpoints.save_agent(agent_id)
    agent.log.warning("agent.cleaned_up", agent_id=agent.agent_id, containers_killed=len(removed))
