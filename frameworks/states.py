"""A task's state, the reason it changed, and who said so: the words of a status update.

Each value has a docstring (``TaskState.LOST.__doc__``); docs/frameworks.md
shows the same words as tables, and a test keeps the two equal. The states are
Mesos' (``TaskState`` in mesos.proto), and so are the reasons this master
sends. Values a newer master may add still decode: an unknown state is
``TaskState.UNKNOWN``, an unknown reason ``Reason.UNRECOGNIZED``, an unknown
source ``Source.UNSPECIFIED``.

>>> TaskState.UNREACHABLE.is_terminal
False
>>> Reason.from_proto(10_000)
<Reason.UNRECOGNIZED: 'UNRECOGNIZED'>
>>> Reason.CONTAINER_LIMITATION_MEMORY == "CONTAINER_LIMITATION_MEMORY"
True
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from corral.proto import messages_pb2 as pb


class TaskState(enum.Enum):
    """Where a task is in its life. ``is_terminal``: the task will not run again.

    Non-terminal: STAGING, STARTING, RUNNING, KILLING, UNREACHABLE, UNKNOWN.
    """

    STAGING = pb.TASK_STAGING
    STARTING = pb.TASK_STARTING
    RUNNING = pb.TASK_RUNNING
    KILLING = pb.TASK_KILLING
    FINISHED = pb.TASK_FINISHED
    FAILED = pb.TASK_FAILED
    KILLED = pb.TASK_KILLED
    ERROR = pb.TASK_ERROR
    LOST = pb.TASK_LOST
    DROPPED = pb.TASK_DROPPED
    UNREACHABLE = pb.TASK_UNREACHABLE
    GONE = pb.TASK_GONE
    GONE_BY_OPERATOR = pb.TASK_GONE_BY_OPERATOR
    UNKNOWN = pb.TASK_UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """The task will not run again: FINISHED, FAILED, KILLED, ERROR, LOST, DROPPED, GONE,
        GONE_BY_OPERATOR. UNREACHABLE and UNKNOWN are not terminal."""
        return self in _TERMINAL

    @classmethod
    def from_proto(cls, value: int) -> TaskState:
        """The state of a wire value; one this SDK does not know is UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


_TERMINAL = frozenset(
    {
        TaskState.FINISHED,
        TaskState.FAILED,
        TaskState.KILLED,
        TaskState.ERROR,
        TaskState.LOST,
        TaskState.DROPPED,
        TaskState.GONE,
        TaskState.GONE_BY_OPERATOR,
    }
)


class Reason(enum.StrEnum):
    """Why a task's state changed (``TaskStatus.reason``).

    A string enum: ``status.reason == "TASK_UNHEALTHY"`` holds, and
    ``f"{status.reason}"`` is the name. UNSPECIFIED is the empty string, so
    ``if status.reason:`` asks whether there is one.
    """

    UNSPECIFIED = ""
    COMMAND_EXITED = "COMMAND_EXITED"
    CONTAINER_LIMITATION_MEMORY = "CONTAINER_LIMITATION_MEMORY"
    CONTAINER_LIMITATION_DISK = "CONTAINER_LIMITATION_DISK"
    CONTAINER_LIMITATION_PIDS = "CONTAINER_LIMITATION_PIDS"
    CONTAINER_LAUNCH_FAILED = "CONTAINER_LAUNCH_FAILED"
    TASK_KILLED_BY_REQUEST = "TASK_KILLED_BY_REQUEST"
    TASK_INVALID = "TASK_INVALID"
    INVALID_OFFERS = "INVALID_OFFERS"
    RESOURCES_UNKNOWN = "RESOURCES_UNKNOWN"
    AGENT_DISCONNECTED = "AGENT_DISCONNECTED"
    AGENT_REMOVED = "AGENT_REMOVED"
    AGENT_RESTARTED = "AGENT_RESTARTED"
    AGENT_UNKNOWN = "AGENT_UNKNOWN"
    FRAMEWORK_REMOVED = "FRAMEWORK_REMOVED"
    MASTER_DISCONNECTED = "MASTER_DISCONNECTED"
    RECONCILIATION = "RECONCILIATION"
    TASK_UNKNOWN = "TASK_UNKNOWN"
    TASK_KILLED_DURING_LAUNCH = "TASK_KILLED_DURING_LAUNCH"
    TASK_HEALTH_CHECK_STATUS_UPDATED = "TASK_HEALTH_CHECK_STATUS_UPDATED"
    TASK_UNHEALTHY = "TASK_UNHEALTHY"
    TASK_UNAUTHORIZED = "TASK_UNAUTHORIZED"
    UNRECOGNIZED = "UNRECOGNIZED"

    @classmethod
    def from_proto(cls, value: int) -> Reason:
        """The reason of a wire value; one this SDK does not know is UNRECOGNIZED."""
        try:
            name = pb.TaskStatus.Reason.Name(value)
        except ValueError:
            return cls.UNRECOGNIZED
        if value == pb.TaskStatus.REASON_UNSPECIFIED:
            return cls.UNSPECIFIED
        try:
            return cls(name.removeprefix("REASON_"))
        except ValueError:
            return cls.UNRECOGNIZED


class Source(enum.StrEnum):
    """Who produced a status update (``TaskStatus.source``)."""

    UNSPECIFIED = ""
    MASTER = "MASTER"
    AGENT = "AGENT"
    EXECUTOR = "EXECUTOR"

    @classmethod
    def from_proto(cls, value: int) -> Source:
        """The source of a wire value; one this SDK does not know is UNSPECIFIED."""
        try:
            name = pb.TaskStatus.Source.Name(value)
        except ValueError:
            return cls.UNSPECIFIED
        if value == pb.TaskStatus.SOURCE_UNSPECIFIED:
            return cls.UNSPECIFIED
        try:
            return cls(name.removeprefix("SOURCE_"))
        except ValueError:
            return cls.UNSPECIFIED


def _describe(cls: type[enum.Enum], docs: Mapping[enum.Enum, str]) -> None:
    """Give each member its docstring (``help(Reason.AGENT_RESTARTED)``); every member has one."""
    missing = [m.name for m in cls if m not in docs]
    if missing:
        raise TypeError(f"{cls.__name__}: members without a description: {missing}")
    for member, doc in docs.items():
        member.__doc__ = doc


_describe(
    TaskState,
    {
        TaskState.STAGING: "Accepted by the master and on its way to the agent. Not terminal.",
        TaskState.STARTING: "The agent is preparing its container (image, mounts, cgroups). Not terminal.",
        TaskState.RUNNING: "Its command runs. Not terminal.",
        TaskState.KILLING: "A kill was asked for; the kill grace period runs. Not terminal.",
        TaskState.FINISHED: "Its command exited with status 0. Terminal.",
        TaskState.FAILED: (
            "Its command exited non-zero or by a signal, hit a container limit, or its container "
            "could not start (see ``reason``). Terminal."
        ),
        TaskState.KILLED: "Killed on request, or by the agent after failing its health check. Terminal.",
        TaskState.ERROR: "The master refused it (malformed or unauthorized); it never ran. Terminal.",
        TaskState.LOST: (
            "Its end cannot be known: its agent restarted without it, or was removed while this "
            "framework is not partition-aware. Terminal: relaunch it if it must run."
        ),
        TaskState.DROPPED: (
            "Never started: the offer was invalid or used up, or the agent went away "
            "before the launch. Terminal."
        ),
        TaskState.UNREACHABLE: (
            "Its agent lost contact (partition-aware frameworks only). Not terminal: it may still run "
            "and come back RUNNING, or end GONE."
        ),
        TaskState.GONE: "Its agent stayed unreachable too long and was removed; the task is gone. Terminal.",
        TaskState.GONE_BY_OPERATOR: (
            "Reserved (Mesos: an operator marked its agent gone); this master does not send it. Terminal."
        ),
        TaskState.UNKNOWN: (
            "The master does not know the task (a reconciliation answer), or a newer master sent a "
            "state this SDK does not know. Not terminal: nothing is known about it."
        ),
    },
)


_describe(
    Reason,
    {
        Reason.UNSPECIFIED: "No reason given.",
        Reason.COMMAND_EXITED: "The command ended by itself; see ``exit_code`` and ``signal``.",
        Reason.CONTAINER_LIMITATION_MEMORY: (
            "Killed by the kernel for using more than its ``mem`` (``limit`` and ``peak`` in bytes). FAILED."
        ),
        Reason.CONTAINER_LIMITATION_DISK: (
            "Its sandbox grew past its ``disk`` (``limit`` and ``peak`` in bytes). FAILED."
        ),
        Reason.CONTAINER_LIMITATION_PIDS: (
            "It hit its process limit (``limit``, ``peak``): FAILED, or FINISHED if it still exited 0."
        ),
        Reason.CONTAINER_LAUNCH_FAILED: (
            "The agent could not start its container (image, mount, user...): FAILED, or DROPPED if "
            "the agent could not even take it; ``message`` says why."
        ),
        Reason.TASK_KILLED_BY_REQUEST: "Killed because its framework or an operator asked.",
        Reason.TASK_INVALID: "Refused by the master's validation; ``message`` names the field. ERROR.",
        Reason.INVALID_OFFERS: "The offers it was launched on were invalid, used or expired. DROPPED.",
        Reason.RESOURCES_UNKNOWN: "Reserved (Mesos' list); this master does not send it.",
        Reason.AGENT_DISCONNECTED: (
            "Its agent lost contact: UNREACHABLE (or LOST if not partition-aware), or DROPPED at launch."
        ),
        Reason.AGENT_REMOVED: "Its agent was unreachable for too long and was removed. GONE or LOST.",
        Reason.AGENT_RESTARTED: "Its agent restarted and could not recover the task. LOST.",
        Reason.AGENT_UNKNOWN: "Reserved (Mesos' list); this master does not send it.",
        Reason.FRAMEWORK_REMOVED: "Reserved (Mesos' list); this master does not send it.",
        Reason.MASTER_DISCONNECTED: "Reserved (Mesos' list); this master does not send it.",
        Reason.RECONCILIATION: "An answer to ``driver.reconcile``: the state as the master knows it.",
        Reason.TASK_UNKNOWN: "Its agent has no such task (it never arrived, or was forgotten). LOST.",
        Reason.TASK_KILLED_DURING_LAUNCH: ("Reserved (Mesos' list); this master does not send it."),
        Reason.TASK_HEALTH_CHECK_STATUS_UPDATED: ("A RUNNING update whose ``healthy`` verdict changed."),
        Reason.TASK_UNHEALTHY: "Killed by its agent after failing its health check too often. KILLED.",
        Reason.TASK_UNAUTHORIZED: (
            "The master's ACLs do not let its framework run it (as that user, or with those devices). ERROR."
        ),
        Reason.UNRECOGNIZED: "A reason a newer master sent that this SDK does not know.",
    },
)


_describe(
    Source,
    {
        Source.UNSPECIFIED: "Not said, or a source a newer master sent that this SDK does not know.",
        Source.MASTER: "The master (refusals, drops, reconciliation, lost agents).",
        Source.AGENT: "The task's agent (the container started, ended, hit a limit).",
        Source.EXECUTOR: "An executor (reserved: this agent's tasks have none of their own).",
    },
)
