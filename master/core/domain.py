"""The master's domain values: what it knows of tasks, agents, frameworks and offers.

Frozen dataclasses, converted from and to the wire's protobuf at the edge
(``master/wire.py``, exactly: a round trip gives the same value back). The
enums keep the wire's numbers and names (``TaskState.TASK_RUNNING == 3``), so
a state compares equal to the protobuf constant and logs the same name.

Still being converted kind by kind (issue 17): a name here that is an alias
of a protobuf type is a kind not converted yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeAlias

from corral.proto import messages_pb2 as pb
from corral.resources import Resources

TaskInfo: TypeAlias = pb.TaskInfo


class TaskState(IntEnum):
    TASK_STATE_UNSPECIFIED = 0
    TASK_STAGING = 1
    TASK_STARTING = 2
    TASK_RUNNING = 3
    TASK_KILLING = 4
    TASK_FINISHED = 5
    TASK_FAILED = 6
    TASK_KILLED = 7
    TASK_ERROR = 8
    TASK_LOST = 9
    TASK_DROPPED = 10
    TASK_UNREACHABLE = 11
    TASK_GONE = 12
    TASK_GONE_BY_OPERATOR = 13
    TASK_UNKNOWN = 14


class Reason(IntEnum):
    REASON_UNSPECIFIED = 0
    REASON_COMMAND_EXITED = 1
    REASON_CONTAINER_LIMITATION_MEMORY = 2
    REASON_CONTAINER_LIMITATION_DISK = 3
    REASON_CONTAINER_LIMITATION_PIDS = 4
    REASON_CONTAINER_LAUNCH_FAILED = 5
    REASON_TASK_KILLED_BY_REQUEST = 6
    REASON_TASK_INVALID = 7
    REASON_INVALID_OFFERS = 8
    REASON_RESOURCES_UNKNOWN = 9
    REASON_AGENT_DISCONNECTED = 10
    REASON_AGENT_REMOVED = 11
    REASON_AGENT_RESTARTED = 12
    REASON_AGENT_UNKNOWN = 13
    REASON_FRAMEWORK_REMOVED = 14
    REASON_MASTER_DISCONNECTED = 15
    REASON_RECONCILIATION = 16
    REASON_TASK_UNKNOWN = 17
    REASON_TASK_KILLED_DURING_LAUNCH = 18
    REASON_TASK_HEALTH_CHECK_STATUS_UPDATED = 19
    REASON_TASK_UNHEALTHY = 20
    REASON_TASK_UNAUTHORIZED = 21


class Source(IntEnum):
    SOURCE_UNSPECIFIED = 0
    SOURCE_MASTER = 1
    SOURCE_AGENT = 2
    SOURCE_EXECUTOR = 3


TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_FINISHED,
        TaskState.TASK_FAILED,
        TaskState.TASK_KILLED,
        TaskState.TASK_ERROR,
        TaskState.TASK_LOST,
        TaskState.TASK_DROPPED,
        TaskState.TASK_GONE,
        TaskState.TASK_GONE_BY_OPERATOR,
    }
)


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


@dataclass(frozen=True)
class MasterInfo:
    """This master, as frameworks and agents are told of it."""

    id: str
    address: str = ""
    hostname: str = ""
    version: str = ""
    #: seconds since the epoch
    start_time: float = 0.0


@dataclass(frozen=True)
class AgentInfo:
    """An agent as it registered (``id`` and ``principal`` set by the master)."""

    id: str = ""
    hostname: str = ""
    resources: Resources = field(default_factory=Resources)
    #: (name, value) in the agent's order (offers repeat them as given)
    attributes: tuple[tuple[str, str], ...] = ()
    work_dir: str = ""
    version: str = ""
    principal: str = ""


@dataclass(frozen=True)
class Offer:
    """Resources of one agent offered to one framework, in one role."""

    id: str
    framework_id: str
    agent_id: str
    hostname: str
    resources: Resources
    attributes: tuple[tuple[str, str], ...]
    #: the role the resources are allocated to
    role: str


@dataclass(frozen=True)
class RolePolicy:
    """A role's weight and quota as the registry keeps them (``roles/<role>``)."""

    role: str
    weight: float = 1.0
    guarantee: Resources = field(default_factory=Resources)
    #: unreserved scalar quantities in milli-units (None: no limit)
    limit: Mapping[str, int] | None = None


@dataclass(frozen=True)
class AgentMaintenance:
    """An agent's drain mark, dynamic reservations and unreachable mark
    (``maintenance/<agent_id>``; 0: not unreachable)."""

    draining: bool = False
    reservations: Resources = field(default_factory=Resources)
    unreachable_since: float = 0.0


class Capability(IntEnum):
    CAPABILITY_UNSPECIFIED = 0
    #: sees TASK_UNREACHABLE/GONE instead of TASK_LOST
    PARTITION_AWARE = 1
    MULTI_ROLE = 2
    TASK_KILLING_STATE = 3


@dataclass(frozen=True)
class FrameworkInfo:
    """A framework as it subscribed (``id`` and ``principal`` set by the master)."""

    id: str = ""
    name: str = ""
    user: str = ""
    roles: tuple[str, ...] = ()
    failover_timeout_s: float = 0.0
    #: the wire's numbers; one this master does not know is kept as it came
    capabilities: tuple[int, ...] = ()
    principal: str = ""
    hostname: str = ""


@dataclass(frozen=True)
class TaskStatus:
    """A task's state as its agent (or the master) reported it; the wire's
    field names, and its defaults for what is unset (``None``: absent)."""

    task_id: str = ""
    state: TaskState = TaskState.TASK_STATE_UNSPECIFIED
    reason: Reason = Reason.REASON_UNSPECIFIED
    message: str = ""
    source: Source = Source.SOURCE_UNSPECIFIED
    agent_id: str = ""
    framework_id: str = ""
    timestamp: float = 0.0
    #: set on updates that need an acknowledgement
    uuid: bytes = b""
    exit_code: int | None = None
    signal: int | None = None
    stderr_tail: str = ""
    limit: int | None = None
    peak: int | None = None
    healthy: bool | None = None
