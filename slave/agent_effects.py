"""What the agent core asks its runtime to do: effects, frozen values.

slave/agent_core.py returns lists of these; slave/agent.py carries them out
in order. Writes are checkpoints (slave/checkpoints.py); a failed write is
logged and counted by the runtime and, where it changes a decision (a launch),
fed back to the core as an input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.slave.checkpoints import TaskCheckpoint
from corral.slave.status_updates import TaskKey


@dataclass(frozen=True)
class Send:
    """Put a message on the stream to the master (the core sends only while registered)."""

    message: agent_pb2.AgentMessage


@dataclass(frozen=True)
class SaveAgent:
    """Checkpoint the agent id (then tell the core: ``saved_agent``)."""

    agent_id: str


@dataclass(frozen=True)
class SaveFramework:
    info: pb.FrameworkInfo


@dataclass(frozen=True)
class SaveTask:
    """Checkpoint a task about to be launched."""

    task: TaskCheckpoint


@dataclass(frozen=True)
class JournalUpdate:
    """Journal a status update before it can be sent."""

    container_id: str
    status: pb.TaskStatus


@dataclass(frozen=True)
class JournalAck:
    """Journal an acknowledgement before the task's next update goes."""

    container_id: str
    uuid: bytes
    task_id: str


@dataclass(frozen=True)
class CompleteTask:
    """Journal that a task's terminal update was acknowledged."""

    container_id: str
    task_id: str
    now: float


@dataclass(frozen=True)
class RemoveSandbox:
    """Forget a finished task: its checkpoint, and its sandbox (moved to the trash)."""

    sandbox: Path


@dataclass(frozen=True)
class EmptyTrash:
    """Delete the trash off the event loop (one deleter at a time)."""


@dataclass(frozen=True)
class Launch:
    """Start the task's container (its sandbox, image, limits) and follow it."""

    key: TaskKey


@dataclass(frozen=True)
class Kill:
    """Kill the task's container with this grace period, unless a kill is in progress."""

    key: TaskKey
    grace_s: float


@dataclass(frozen=True)
class Follow:
    """Watch a re-attached container until it ends; ``lost`` says why its end
    cannot be known (then it is reported TASK_LOST)."""

    key: TaskKey
    lost: str


Write = SaveAgent | SaveFramework | SaveTask
Effect = (
    Send
    | SaveAgent
    | SaveFramework
    | SaveTask
    | JournalUpdate
    | JournalAck
    | CompleteTask
    | RemoveSandbox
    | EmptyTrash
    | Launch
    | Kill
    | Follow
)


def log_context(effect: Effect) -> dict[str, object]:
    """What the log line of a failed checkpoint write names."""
    if isinstance(effect, SaveFramework):
        return {"framework_id": effect.info.id}
    if isinstance(effect, SaveTask):
        return {"task_id": effect.task.info.task_id}
    if isinstance(effect, JournalUpdate):
        return {"task_id": effect.status.task_id}
    if isinstance(effect, JournalAck | CompleteTask):
        return {"task_id": effect.task_id}
    return {}
