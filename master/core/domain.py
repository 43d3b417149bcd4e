"""The master's domain values: what it knows of tasks, agents, frameworks and offers.

Frozen dataclasses, converted from and to the wire's protobuf at the edge
(``master/wire.py``, exactly: a round trip gives the same value back). The
enums keep the wire's numbers and names (``TaskState.TASK_RUNNING == 3``), so
a state compares equal to the protobuf constant and logs the same name.
Nothing here imports protobuf (tests/unit/test_master_core_imports.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from corral.resources import Resources


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


@dataclass(frozen=True)
class TaskAccess:
    """What the ACLs are asked about a task before it runs (launch.py)."""

    #: the user it runs as (0: unset, root), inside its user namespace if it asks for one
    uid: int = 0
    #: its group (the uid's own when unset)
    gid: int = 0
    user_namespace: bool = False
    seccomp_profile: str = ""
    devices: tuple[str, ...] = ()
    #: (index in container.volumes, host_path) of volumes bound from the host
    host_paths: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class TaskInfo:
    """A task as the master needs it; the framework's whole TaskInfo rides
    along as ``payload`` (its serialized bytes), which the master forwards
    to the agent and shows operators without reading it. The edge sets
    ``task_id``, ``name``, ``agent_id`` and ``labels`` over the payload's on
    the way out (a task the master only heard of from an agent has no payload)."""

    task_id: str = ""
    name: str = ""
    agent_id: str = ""
    #: what it holds (empty if they did not parse: see TaskCheck)
    resources: Resources = field(default_factory=Resources)
    kill_grace_s: float = 0.0
    access: TaskAccess = TaskAccess()
    #: (key, value) in the framework's order: its updates carry them (context._labelled)
    labels: tuple[tuple[str, str], ...] = ()
    payload: bytes = b""


@dataclass(frozen=True)
class TaskCheck:
    """What the edge found wrong with a task to launch (master/validation.py),
    kept apart so the core can put its own findings (a task id in use, what
    the offers hold) among them in the order validate_task gives."""

    #: its task_id
    id_problems: tuple[str, ...] = ()
    #: command, name, labels, kill policy, container, health check
    spec_problems: tuple[str, ...] = ()
    #: its resources are too large or do not parse (nothing more is checked)
    resource_problems: tuple[str, ...] = ()


class OperationType(IntEnum):
    TYPE_UNSPECIFIED = 0
    LAUNCH = 1
    LAUNCH_GROUP = 2
    RESERVE = 3
    UNRESERVE = 4


@dataclass(frozen=True)
class LaunchTask:
    info: TaskInfo
    #: its field path in the ACCEPT, e.g. accept.operations[0].launch.task_infos[2]
    where: str
    check: TaskCheck = TaskCheck()


@dataclass(frozen=True)
class Operation:
    """One operation of an ACCEPT."""

    #: the wire's number (an unknown one is kept, and refused by its name)
    type: int
    type_name: str
    #: LAUNCH, LAUNCH_GROUP
    tasks: tuple[LaunchTask, ...] = ()
    #: RESERVE, UNRESERVE: what, its field path, and why it did not parse
    resources: Resources = field(default_factory=Resources)
    where: str = ""
    problem: str | None = None


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
    #: terminal updates: what the task's cgroup used, read as it ended
    cpu_time_s: float | None = None
    mem_peak_bytes: int | None = None
    #: (key, value): the agent's as it sent them; the master puts the task's
    #: as launched on what it sends the framework (context._labelled)
    labels: tuple[tuple[str, str], ...] = ()
