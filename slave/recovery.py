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
:func:`inspect` does the reading and re-attaching and returns a
:class:`Recovered` value (the decisions are :func:`take_back`'s, pure); the agent core takes it as an input
(``AgentCore.recovered``) and the runtime then removes the leftovers.
No task is ever launched again. With ``--recover=cleanup`` every task the
earlier run left is killed and forgotten instead (the agent keeps its id if it
can read it, so the master reports those tasks LOST when it re-registers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from corral.codec import State, is_terminal
from corral.proto import messages_pb2 as pb
from corral.slave.checkpoints import (
    AgentCheckpoint,
    CheckpointError,
    Checkpoints,
    TaskCheckpoint,
    boot_id,
    read_record,
)
from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer
from corral.slave.status_updates import TaskKey

log = structlog.get_logger(__name__)

MODES = ("reconnect", "cleanup")


@dataclass(frozen=True)
class CompletedTask:
    """A task whose terminal update was acknowledged; its sandbox is kept for logs."""

    key: TaskKey
    sandbox: Path
    completed_at: float


@dataclass(frozen=True)
class RecoveredTask:
    """A task that had not completed, and what became of its container."""

    checkpoint: TaskCheckpoint
    #: its last journaled state (None: no update was made)
    state: State | None
    #: its updates not yet acknowledged, uuids kept
    pending: list[pb.TaskStatus]
    #: the containerizer's verdict: "running", "ended" or "lost"; None for a
    #: task whose terminal update was made (its container is gone already)
    kind: str | None
    #: the task's pid when it still runs
    pid: int = 0
    #: why its end cannot be known (it is reported TASK_LOST), if so
    lost: str = ""


@dataclass(frozen=True)
class Recovered:
    """What an earlier run left, as the agent core takes it (AgentCore.recovered)."""

    agent_id: str
    frameworks: dict[str, pb.FrameworkInfo] = field(default_factory=dict)
    completed: list[CompletedTask] = field(default_factory=list)
    tasks: list[RecoveredTask] = field(default_factory=list)
    rebooted: bool = False
    #: the containers recovered tasks own (the rest are leftovers to remove)
    keep: frozenset[str] = frozenset()

    def counts(self) -> dict[str, int]:
        """For the ``agent.recovered`` log line."""
        counts = {"running": 0, "ended": 0, "lost": 0, "reported": 0, "completed": len(self.completed)}
        for task in self.tasks:
            counts[task.kind or "reported"] += 1
        return counts


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"recover: must be one of {', '.join(MODES)}, got {mode!r}")


def _lost_reason(kind: str, rebooted: bool, state: State) -> str:
    if kind != "lost":
        return ""
    if rebooted:
        return "the host rebooted while the task ran"
    if state in (pb.TASK_STAGING, pb.TASK_STARTING):
        return "the agent restarted while the task was starting"
    return "the agent was down when the task ended and no exit status was recorded"


#: what became of a task's container: ("running" | "ended" | "lost", its task's pid)
Verdict = Callable[[TaskCheckpoint], tuple[str, int]]


def take_back(checkpoint: AgentCheckpoint, rebooted: bool, verdict: Verdict) -> Recovered:
    """What an earlier run left, given its checkpoint and the containerizer's
    ``verdict`` on each task that had not ended. Pure: :func:`inspect` passes
    the real containerizer, corral.sim its simulated containers."""
    completed, tasks, keep = [], [], set()
    for task in checkpoint.tasks:
        key = (task.framework_id, task.info.task_id)
        if task.completed_at is not None:
            completed.append(CompletedTask(key, task.sandbox, task.completed_at))
            continue
        latest = task.updates.latest
        state = None if latest is None else latest.state
        if state is not None and is_terminal(state):
            # Its container was destroyed before the terminal update was made;
            # only the update (if not acknowledged) is left to deliver.
            tasks.append(RecoveredTask(task, state, task.updates.pending, None))
            continue
        keep.add(task.container_id)
        kind, pid = verdict(task)
        lost = _lost_reason(kind, rebooted, pb.TASK_STAGING if state is None else state)
        tasks.append(
            RecoveredTask(task, state, task.updates.pending, kind, pid if kind == "running" else 0, lost)
        )
    return Recovered(
        checkpoint.agent_id, dict(checkpoint.frameworks), completed, tasks, rebooted, frozenset(keep)
    )


def inspect(
    checkpoints: Checkpoints,
    containerizer: Containerizer,
    work_dir: Path,
    limits: Callable[[TaskCheckpoint, str], ContainerConfig | None],
) -> Recovered:
    """Read the checkpoints and re-attach the containerizer to every task that
    had not ended (``limits``: the container config a task was launched with,
    given the agent id, or None). Raises CheckpointError for a damaged one."""
    checkpoint = checkpoints.load()
    # Containers do not outlive their host's boot (see Containerizer.recover).
    rebooted = bool(checkpoint.boot_id) and checkpoint.boot_id != boot_id()

    def verdict(task: TaskCheckpoint) -> tuple[str, int]:
        try:
            kind = containerizer.recover(
                task.container_id, task.sandbox, limits(task, checkpoint.agent_id), rebooted=rebooted
            )
        except ContainerError as e:
            path = work_dir / "containers" / task.container_id / "container.json"
            raise CheckpointError(path, str(e).split(": ", 1)[-1]) from None
        return kind, containerizer.task_pid(task.container_id) if kind == "running" else 0

    return take_back(checkpoint, rebooted, verdict)


async def clean_up(checkpoints: Checkpoints, containerizer: Containerizer) -> tuple[str, int]:
    """``--recover=cleanup``: kill everything an earlier run left and forget
    its tasks. Returns the agent id if it was readable (kept), else "", and
    how many containers were killed."""
    try:
        record = read_record(checkpoints.meta / "agent.json")
    except CheckpointError as e:
        log.warning("agent.cleanup_forgets_id", reason=str(e))
        record = None
    agent_id = record.get("agent_id") if record else None
    checkpoints.forget_agent()
    removed = await containerizer.cleanup_leftovers(set())
    if isinstance(agent_id, str) and agent_id:
        checkpoints.save_agent(agent_id)
        return agent_id, len(removed)
    return "", len(removed)
