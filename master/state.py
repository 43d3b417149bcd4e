"""The master's in-memory model: agents, frameworks, tasks and offers.

Records hold domain values (Resources, ids, times) plus the protobuf payloads
the master forwards unchanged (TaskInfo, FrameworkInfo, the latest TaskStatus).
Lookups that can fail return None; the master decides what that means to the
caller (NOT_FOUND, TASK_DROPPED, ...).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from corral.codec import is_terminal
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

T = TypeVar("T")

#: Completed tasks and frameworks kept for operators, per framework / overall.
COMPLETED_TASKS_KEPT = 1000
COMPLETED_FRAMEWORKS_KEPT = 50


class Outbox(Generic[T]):
    """A stream's outgoing queue. ``send`` never blocks or fails: a message to a
    closed outbox is dropped, which is safe because every update that matters
    is retried by the agent until acknowledged."""

    def __init__(self) -> None:
        import asyncio

        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self.closed = False

    def send(self, message: T) -> None:
        if not self.closed:
            self._queue.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    async def get_batch(self, limit: int = 256) -> list[T] | None:
        """Wait for at least one message; return everything queued (up to
        ``limit``), or None once closed."""
        first = await self._queue.get()
        if first is None:
            return None
        out = [first]
        while len(out) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)
                break
            out.append(item)
        return out


@dataclass
class TaskRecord:
    task_id: str
    framework_id: str
    agent_id: str
    info: pb.TaskInfo
    resources: Resources
    status: pb.TaskStatus
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
    info: pb.AgentInfo
    total: Resources
    registered_at: float
    last_heartbeat: float
    outbox: Outbox[object] | None
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
    #: (they are killed) or is gone (see master/liveness.py).
    lost_tasks: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    #: reserved by RESERVE operations (not its static reservations), kept in
    #: the registry with the drain mark so a new leader keeps both
    dynamic_reserved: Resources = field(default_factory=Resources)


@dataclass
class FrameworkRecord:
    framework_id: str
    info: pb.FrameworkInfo
    registered_at: float
    outbox: Outbox[object] | None
    connected: bool = True
    suppressed: bool = False
    tearing_down: bool = False
    disconnected_at: float | None = None
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    completed: deque[TaskRecord] = field(default_factory=lambda: deque(maxlen=COMPLETED_TASKS_KEPT))
    offers: set[str] = field(default_factory=set)


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
