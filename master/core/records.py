"""The master's in-memory model: agents, frameworks, tasks and offers.

Records hold domain values (``domain.py``: infos, statuses, Resources, ids,
times, stream ids; a task's full TaskInfo only as the bytes the master
forwards, see docs/architecture.md, "Master core"). A connection is
named by a stream id the runtime hands in (``master/master.py`` owns the
outboxes): the model holds no queue and nothing asyncio. Lookups that can fail
return None; the transitions decide what that means to the caller
(NOT_FOUND, TASK_DROPPED, ...).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

from corral.master.core.domain import AgentInfo, Capability, FrameworkInfo, TaskInfo, TaskStatus, is_terminal
from corral.resources import Resources

#: Completed tasks and frameworks kept for operators, per framework / overall.
COMPLETED_TASKS_KEPT = 1000
COMPLETED_FRAMEWORKS_KEPT = 50

#: Registry kinds (the runtime's ``master/registry.py`` stores them).
AGENTS = "agents"
FRAMEWORKS = "frameworks"
#: Role weights and quota set by operators (key: the role, '/' written %2F).
ROLES = "roles"
#: Per agent: drained by an operator, resources reserved dynamically.
MAINTENANCE = "maintenance"
KINDS = (AGENTS, FRAMEWORKS, ROLES, MAINTENANCE)

#: A connection (an agent's or a framework's stream), numbered by the runtime.
StreamId = int


def role_key(role: str) -> str:
    """A role as one znode name: ``eng/ml`` -> ``eng%2Fml``."""
    return role.replace("%", "%25").replace("/", "%2F")


@dataclass
class TaskRecord:
    task_id: str
    framework_id: str
    agent_id: str
    info: TaskInfo
    resources: Resources
    status: TaskStatus
    launched_at: float
    #: uuid of the latest status the framework has not acknowledged yet
    unacked_uuid: bytes = b""
    #: the role its resources are allocated to (the offer's); "" if unknown (adopted)
    role: str = ""

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status.state)


@dataclass
class OfferRecord:
    offer_id: str
    framework_id: str
    agent_id: str
    resources: Resources
    created_at: float
    role: str = "*"  # the role the resources are allocated to


@dataclass
class AgentRecord:
    agent_id: str
    info: AgentInfo
    total: Resources
    registered_at: float
    last_heartbeat: float
    #: its open stream (None: not connected to this master)
    stream: StreamId | None
    connected: bool = True
    #: (framework_id, task_id) of live tasks on this agent
    tasks: set[tuple[str, str]] = field(default_factory=set)
    offers: set[str] = field(default_factory=set)
    #: recovered from the registry: must re-register before this time
    reregister_deadline: float | None = None
    #: not yet (re-)registered with this master since it started leading: only
    #: then may the agent bring tasks this master did not launch (adoption)
    recovered: bool = False
    #: recovered but did not re-register in time (since when)
    unreachable: bool = False
    unreachable_since: float = 0.0
    #: unreachable for too long: its tasks are gone, it may not come back as itself
    gone: bool = False
    #: tasks of frameworks that are not partition-aware, set aside when the
    #: agent became unreachable and they were told TASK_LOST: the framework
    #: may reuse their ids. They hold their resources until the agent returns
    #: (they are killed) or is gone (see master/core/liveness.py).
    lost_tasks: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    #: reserved by RESERVE operations (not its static reservations), kept in
    #: the registry with the drain mark so a new leader keeps both
    dynamic_reserved: Resources = field(default_factory=Resources)


@dataclass
class FrameworkRecord:
    framework_id: str
    info: FrameworkInfo
    registered_at: float
    #: its open stream (None: disconnected)
    stream: StreamId | None
    connected: bool = True
    suppressed: bool = False
    tearing_down: bool = False
    disconnected_at: float | None = None
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    completed: deque[TaskRecord] = field(default_factory=lambda: deque(maxlen=COMPLETED_TASKS_KEPT))
    offers: set[str] = field(default_factory=set)


def partition_aware(fw: FrameworkRecord | None) -> bool:
    return fw is not None and Capability.PARTITION_AWARE in fw.info.capabilities


@dataclass
class MasterCounters:
    """Monotonic counts since this master began to lead."""

    allocation_runs: int = 0
    allocation_seconds: float = 0.0
    offers_sent: int = 0
    tasks_launched: int = 0
    #: terminal states reached, by state name (TASK_FINISHED, ...)
    tasks_ended: Counter[str] = field(default_factory=Counter)
    agents_marked_unreachable: int = 0


class StateView(Protocol):
    """What readers outside the core (the Operator API, metrics, the
    simulation's invariants) may use: lookups, never the transitions."""

    @property
    def agents(self) -> dict[str, AgentRecord]: ...
    @property
    def frameworks(self) -> dict[str, FrameworkRecord]: ...
    @property
    def offers(self) -> dict[str, OfferRecord]: ...
    @property
    def completed_frameworks(self) -> deque[FrameworkRecord]: ...
    def task(self, framework_id: str, task_id: str) -> TaskRecord | None: ...
    def find_task(self, task_id: str, framework_id: str = "") -> list[TaskRecord]: ...
    def find_any_task(self, task_id: str, framework_id: str = "") -> list[TaskRecord]: ...
    def used_on_agent(self, agent_id: str) -> Resources: ...
    def offered_on_agent(self, agent_id: str) -> Resources: ...


@dataclass
class MasterState:
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    frameworks: dict[str, FrameworkRecord] = field(default_factory=dict)
    offers: dict[str, OfferRecord] = field(default_factory=dict)
    completed_frameworks: deque[FrameworkRecord] = field(
        default_factory=lambda: deque(maxlen=COMPLETED_FRAMEWORKS_KEPT)
    )

    def task(self, framework_id: str, task_id: str) -> TaskRecord | None:
        fw = self.frameworks.get(framework_id)
        return fw.tasks.get(task_id) if fw else None

    def find_task(self, task_id: str, framework_id: str = "") -> list[TaskRecord]:
        """Live tasks with this id (in one framework if given)."""
        fws = (
            [self.frameworks[framework_id]]
            if framework_id in self.frameworks
            else ([] if framework_id else list(self.frameworks.values()))
        )
        return [fw.tasks[task_id] for fw in fws if task_id in fw.tasks]

    def find_any_task(self, task_id: str, framework_id: str = "") -> list[TaskRecord]:
        """Live or completed tasks with this id, live ones first."""
        live = self.find_task(task_id, framework_id)
        if live:
            return live
        out: list[TaskRecord] = []
        fws = list(self.frameworks.values()) + list(self.completed_frameworks)
        for fw in fws:
            if framework_id and fw.framework_id != framework_id:
                continue
            out += [t for t in fw.completed if t.task_id == task_id]
        return out[-1:]

    def used_on_agent(self, agent_id: str) -> Resources:
        agent = self.agents[agent_id]
        used = Resources()
        for fw_id, task_id in agent.tasks:
            task = self.task(fw_id, task_id)
            if task is not None:
                used = used + task.resources
        for task in agent.lost_tasks.values():
            used = used + task.resources
        return used

    def offered_on_agent(self, agent_id: str) -> Resources:
        out = Resources()
        for offer_id in self.agents[agent_id].offers:
            out = out + self.offers[offer_id].resources
        return out
