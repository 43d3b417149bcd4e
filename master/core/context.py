"""The master core's state and the small transitions every other one uses.

:class:`Core` holds the model (``MasterState``), the allocator (pure too, and
part of the state: transitions need its refusals at once, so its events are
applied in place rather than returned), the configuration and the effects a
transition has produced so far. The modules beside this one (``offers``,
``frameworks``, ``tasks``, ``agents``, ``registration``, ``launch``,
``liveness``, ``reconciliation``, ``policy``) are functions over a ``Core``;
:class:`~corral.master.core.master_core.MasterCore` is the one object the
runtime drives. Nothing here reads a clock: ``now`` is set from the input
that started the transition.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from corral.errors import CallError
from corral.master.allocator import Allocator, AllocatorError
from corral.master.allocator.events import Event as AllocatorEvent
from corral.master.allocator.events import FrameworkAdded, ResourcesRecovered
from corral.master.config import MasterConfig
from corral.master.core import messages as msg
from corral.master.core.domain import (
    FrameworkInfo,
    MasterInfo,
    Reason,
    Source,
    TaskInfo,
    TaskState,
    TaskStatus,
    is_terminal,
)
from corral.master.core.effects import (
    AllocateSoon,
    AuditDenied,
    CloseStream,
    Decision,
    Effect,
    RegistryRecord,
    SendToAgent,
    SendToFramework,
    WriteRegistry,
)
from corral.master.core.records import (
    AgentRecord,
    FrameworkRecord,
    MasterCounters,
    MasterState,
    OfferRecord,
    StreamId,
    TaskRecord,
)


class Log(Protocol):
    """A key-value logger (structlog's bound logger, passed in by the runtime)."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...


class Authorizer(Protocol):
    """The ACL policy (``master/authz.py``'s ``Authorizer``): pure answers."""

    def decide(self, principal: object, action: str, obj: str) -> Decision: ...
    def decide_all(self, principal: object, action: str, objects: Iterable[str]) -> Decision: ...


@dataclass(frozen=True)
class _Allowed:
    allowed: bool = True
    message: str = ""


class AllowAll:
    def decide(self, principal: object, action: str, obj: str) -> Decision:
        return _Allowed()

    def decide_all(self, principal: object, action: str, objects: Iterable[str]) -> Decision:
        return _Allowed()


class _Quiet:
    def debug(self, event: str, **kw: Any) -> None:
        pass

    info = warning = debug


class Refused(CallError):
    """A call refused after some effects were produced (a bad ACCEPT's dropped
    tasks are reported before it is refused): the runtime carries them out,
    then answers the refusal."""

    def __init__(self, error: CallError, effects: list[Effect]) -> None:
        super().__init__(error.code, error.message)
        self.effects = effects


class Core:
    """The state and the shared transitions (see the module docstring)."""

    def __init__(
        self, config: MasterConfig, info: MasterInfo, ids: Callable[[str], str], log: Log | None = None
    ) -> None:
        self.config = config
        self.info = info
        self.new_id = ids
        self.log: Log = log or _Quiet()
        self.state = MasterState()
        self.allocator = Allocator()
        self.counters = MasterCounters()
        self.authorizer: Authorizer = AllowAll()
        self.now = info.start_time
        self.recovered_at = info.start_time + config.agent_reregister_timeout_s
        self.agent_seq = itertools.count(1)
        self.offer_seq = itertools.count(1)
        #: liveness bookkeeping: when agents were marked unreachable, who waits
        self.marked_at: deque[float] = deque(maxlen=10_000)
        self.deferred_unreachable: set[str] = set()
        #: (framework_id, task_id) -> agent_id asked about before the agents could
        #: re-register; a repeated question is kept once (reconciliation.py bounds it)
        self.deferred_reconcile: dict[tuple[str, str], str] = {}
        self.last_framework_heartbeat = info.start_time
        self._effects: list[Effect] = []

    # -- effects ----------------------------------------------------------------

    def emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    def take_effects(self) -> list[Effect]:
        out, self._effects = self._effects, []
        return out

    def to_framework(self, fw: FrameworkRecord, event: msg.FrameworkEvent) -> None:
        if fw.stream is not None:
            self.emit(SendToFramework(fw.stream, event))

    def to_agent(self, agent: AgentRecord, message: msg.AgentCommand) -> None:
        if agent.stream is not None:
            self.emit(SendToAgent(agent.stream, message))

    def close(self, stream: StreamId) -> None:
        self.emit(CloseStream(stream))

    def record(self, kind: str, key: str, data: RegistryRecord | None) -> None:
        self.emit(WriteRegistry(kind, key, data))

    def allocate_soon(self) -> None:
        self.emit(AllocateSoon())

    def audit_denied(self, decision: Decision, call: str, **fields: Any) -> None:
        self.emit(AuditDenied(decision, call, fields))

    # -- lookups ----------------------------------------------------------------

    def framework(self, framework_id: str) -> FrameworkRecord:
        """A subscribed framework, or CallError NOT_FOUND."""
        fw = self.state.frameworks.get(framework_id)
        if fw is None or fw.tearing_down:
            raise CallError("NOT_FOUND", f"framework_id: {framework_id!r} is not subscribed")
        return fw

    def agent_connected(self, agent_id: str) -> bool:
        agent = self.state.agents.get(agent_id)
        return agent is not None and agent.connected

    # -- allocator --------------------------------------------------------------

    def allocator_call(self, event: AllocatorEvent, what: str = "") -> None:
        """Hand a request from a framework or an operator to the allocator;
        a refusal becomes INVALID_ARGUMENT with the allocator's sentence."""
        try:
            self.allocator.handle(event)
        except AllocatorError as e:
            message = str(e)
            if what and not message.startswith(what.split(".", maxsplit=1)[0]):
                message = f"{what}: {message}"
            raise CallError("INVALID_ARGUMENT", message) from None

    def add_known_framework(self, framework_id: str, info: FrameworkInfo) -> None:
        """A framework learnt from the registry or an agent, not from its own
        SUBSCRIBE: roles it cannot have are replaced by '*' rather than refused."""
        try:
            self.allocator.handle(FrameworkAdded(framework_id, tuple(info.roles) or ("*",)))
        except AllocatorError as e:
            self.log.warning("framework.bad_roles", framework_id=framework_id, error=str(e))
            self.allocator.handle(FrameworkAdded(framework_id, ("*",)))

    # -- offers -----------------------------------------------------------------

    def remove_offer(self, offer_id: str) -> OfferRecord | None:
        offer = self.state.offers.pop(offer_id, None)
        if offer is None:
            return None
        fw = self.state.frameworks.get(offer.framework_id)
        if fw:
            fw.offers.discard(offer_id)
        agent = self.state.agents.get(offer.agent_id)
        if agent:
            agent.offers.discard(offer_id)
        return offer

    def rescind(self, offer_id: str, refuse_s: float = 0.0) -> None:
        offer = self.remove_offer(offer_id)
        if offer is None:
            return
        self.allocator.handle(
            ResourcesRecovered(
                offer.framework_id, offer.agent_id, offer.resources, refuse_s, self.now, offer.role
            )
        )
        fw = self.state.frameworks.get(offer.framework_id)
        if fw is not None:
            self.to_framework(fw, msg.Rescind(offer_id))
        self.allocate_soon()

    # -- task status ------------------------------------------------------------

    def status_for(
        self, framework_id: str, task: TaskInfo, state: TaskState, reason: Reason, message: str
    ) -> TaskStatus:
        """A status the master decides itself (no agent involved, no ack needed)."""
        return TaskStatus(
            task_id=task.task_id,
            state=state,
            reason=reason,
            message=message,
            source=Source.SOURCE_MASTER,
            agent_id=task.agent_id,
            framework_id=framework_id,
            timestamp=self.now,
        )

    def send_updates(self, fw: FrameworkRecord, statuses: list[TaskStatus]) -> None:
        if not statuses or not fw.connected or fw.stream is None:
            return  # (none: no empty UPDATE) the agent retries until the framework is back and acknowledges
        statuses = [_labelled(fw, s) for s in statuses]
        self.to_framework(fw, msg.Updates(tuple(statuses)))

    def apply_status(self, task: TaskRecord, status: TaskStatus) -> None:
        """Record a task's new state; on a terminal one give its resources back."""
        was_terminal = task.terminal
        task.status = status
        if is_terminal(status.state) and not was_terminal:
            self.counters.tasks_ended[status.state.name] += 1
            agent = self.state.agents.get(task.agent_id)
            if agent is not None:
                agent.tasks.discard((task.framework_id, task.task_id))
            self.release_resources(task)

    def release_resources(self, task: TaskRecord) -> None:
        """Give an ended task's resources back to the allocator."""
        if task.resources:
            self.allocator.handle(
                ResourcesRecovered(task.framework_id, task.agent_id, task.resources, role=task.role or None)
            )
            self.allocate_soon()

    def complete_task(self, fw: FrameworkRecord, task: TaskRecord) -> None:
        if fw.tasks.pop(task.task_id, None) is not None:
            fw.completed.append(task)
        agent = self.state.agents.get(task.agent_id)
        if agent is not None:
            agent.tasks.discard((fw.framework_id, task.task_id))

    def master_update(self, task: TaskRecord, state: TaskState, reason: Reason, message: str) -> None:
        """A status the master itself decides (no agent involved, no ack needed)."""
        status = self.status_for(task.framework_id, task.info, state, reason, message)
        self.apply_status(task, status)
        fw = self.state.frameworks.get(task.framework_id)
        if fw is not None:
            if is_terminal(state):
                self.complete_task(fw, task)
            self.send_updates(fw, [status])

    def kill_message(self, framework_id: str, task_id: str, grace_s: float = 0.0) -> msg.KillTask:
        return msg.KillTask(framework_id, task_id, grace_s)

    def acks_message(self, statuses: Iterable[TaskStatus]) -> msg.Acknowledgements:
        return msg.Acknowledgements(tuple(msg.Ack(s.task_id, s.uuid, s.framework_id) for s in statuses))


def _labelled(fw: FrameworkRecord, status: TaskStatus) -> TaskStatus:
    """``status`` as its framework gets it: with the task's labels as launched
    (Mesos' TaskStatus carries them too), never labels an agent put there.
    A copy when they differ: the stored status stays as the agent sent it."""
    task = fw.tasks.get(status.task_id) or next(
        (t for t in reversed(fw.completed) if t.task_id == status.task_id), None
    )
    labels = task.info.labels if task is not None else ()
    return status if status.labels == labels else replace(status, labels=labels)
