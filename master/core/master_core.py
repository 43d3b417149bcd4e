"""The master core: one state object whose transitions take an input and return effects.

Inputs are a framework's call, an agent's message, a stream's end, a timer's
tick, the registry's contents after an election. Every transition takes
``now`` (the core reads no clock) and returns the effects it produced, in
order (``effects.py``); a refused call raises :class:`CallError`, or
:class:`Refused` carrying the effects produced before the refusal. The
runtime (``master/master.py``) owns streams, timers, the registry and the
election and carries the effects out; the simulation (``corral/sim``)
drives the same runtime under a virtual clock.

Between two transitions the state may be read (``state``, ``allocator``),
never written: that is the Operator API's and the metrics' snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from corral.errors import CallError
from corral.master.allocator import Reason as Why
from corral.master.allocator import RoleInfo
from corral.master.config import MasterConfig
from corral.master.core import agents, frameworks, launch, liveness, offers, policy, reconciliation, tasks
from corral.master.core.context import Core, Log, Refused
from corral.master.core.domain import (
    AgentInfo,
    AgentMaintenance,
    FrameworkInfo,
    MasterInfo,
    Operation,
    RolePolicy,
    TaskInfo,
    TaskStatus,
)
from corral.master.core.effects import Effect
from corral.master.core.records import FrameworkRecord, StreamId
from corral.master.core.registration import register_agent
from corral.resources import Resources

P = ParamSpec("P")
R = TypeVar("R")


class MasterCore(Core):
    """The master's transitions (see the module docstring)."""

    def __init__(
        self, config: MasterConfig, info: MasterInfo, ids: Callable[[str], str], log: Log | None = None
    ) -> None:
        super().__init__(config, info, ids, log)

    def _run(
        self, now: float, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> tuple[R, list[Effect]]:
        self.now = now
        try:
            result = fn(*args, **kwargs)
        except CallError as e:
            raise Refused(e, self.take_effects()) from None
        except BaseException:
            self.take_effects()  # a bug: do not carry half a transition's effects into the next
            raise
        return result, self.take_effects()

    # -- registry and timers ------------------------------------------------------

    def recover(
        self,
        now: float,
        agents_: dict[str, AgentInfo],
        frameworks_: dict[str, FrameworkInfo],
        roles: dict[str, RolePolicy],
        maintenance: dict[str, AgentMaintenance],
    ) -> list[Effect]:
        """Elected: what the registry holds (before any agent or framework connects)."""
        return self._run(now, agents.recover, self, agents_, frameworks_, roles, maintenance)[1]

    def allocate(self, now: float) -> tuple[int, list[Effect]]:
        """The allocation timer: one cycle; how many offers were made."""
        return self._run(now, offers.allocate, self)

    def tick(self, now: float) -> list[Effect]:
        """The housekeeping timer: offer expiry, heartbeats, liveness, failover
        timeouts, the re-registration window, deferred reconciliation."""
        return self._run(now, self._tick)[1]

    def _tick(self) -> None:
        offers.expire(self)
        agents.check_heartbeats(self)
        liveness.check(self)
        frameworks.check_failover(self)
        agents.check_reregistration(self)
        reconciliation.answer_deferred(self)
        frameworks.heartbeats(self)

    # -- agents ---------------------------------------------------------------------

    def register_agent(
        self,
        now: float,
        info: AgentInfo,
        total: Resources,
        tasks_: list[TaskStatus],
        frameworks_: list[FrameworkInfo],
        stream: StreamId,
        task_infos: list[TaskInfo] | None = None,
        principal: str = "",
        authenticated: bool = False,
    ) -> tuple[str, list[Effect]]:
        return self._run(
            now,
            register_agent,
            self,
            info,
            total,
            tasks_,
            frameworks_,
            stream,
            task_infos,
            principal,
            authenticated,
        )

    def agent_heartbeat(self, now: float, agent_id: str) -> list[Effect]:
        return self._run(now, agents.heartbeat, self, agent_id)[1]

    def agent_disconnected(self, now: float, agent_id: str, stream: StreamId) -> list[Effect]:
        return self._run(now, agents.disconnected, self, agent_id, stream)[1]

    def agent_status_updates(self, now: float, agent_id: str, statuses: list[TaskStatus]) -> list[Effect]:
        return self._run(now, tasks.status_updates, self, agent_id, statuses)[1]

    # -- frameworks -------------------------------------------------------------------

    def subscribe(
        self, now: float, info: FrameworkInfo, stream: StreamId, principal: str = ""
    ) -> tuple[FrameworkRecord, list[Effect]]:
        return self._run(now, frameworks.subscribe, self, info, stream, principal)

    def framework_disconnected(self, now: float, framework_id: str, stream: StreamId) -> list[Effect]:
        return self._run(now, frameworks.disconnected, self, framework_id, stream)[1]

    def teardown(self, now: float, framework_id: str, reason: str = "teardown requested") -> list[Effect]:
        return self._run(now, frameworks.teardown, self, framework_id, reason)[1]

    def accept(
        self,
        now: float,
        framework_id: str,
        offer_ids: list[str],
        operations: list[Operation],
        refuse_s: float | None,
    ) -> list[Effect]:
        return self._run(now, launch.accept, self, framework_id, offer_ids, operations, refuse_s)[1]

    def decline(
        self, now: float, framework_id: str, offer_ids: list[str], refuse_s: float | None
    ) -> list[Effect]:
        return self._run(now, offers.decline, self, framework_id, offer_ids, refuse_s)[1]

    def update_framework(self, now: float, framework_id: str, info: FrameworkInfo) -> list[Effect]:
        return self._run(now, frameworks.update, self, framework_id, info)[1]

    def revive(self, now: float, framework_id: str, roles: tuple[str, ...] = ()) -> list[Effect]:
        return self._run(now, frameworks.revive, self, framework_id, roles)[1]

    def suppress(self, now: float, framework_id: str, roles: tuple[str, ...] = ()) -> list[Effect]:
        return self._run(now, frameworks.suppress, self, framework_id, roles)[1]

    def kill(self, now: float, framework_id: str, task_id: str, grace_s: float = 0.0) -> list[Effect]:
        return self._run(now, tasks.kill, self, framework_id, task_id, grace_s)[1]

    def acknowledge(self, now: float, framework_id: str, acks: list[tuple[str, str, bytes]]) -> list[Effect]:
        return self._run(now, tasks.acknowledge, self, framework_id, acks)[1]

    def reconcile(self, now: float, framework_id: str, tasks_: list[tuple[str, str]]) -> list[Effect]:
        return self._run(now, reconciliation.reconcile, self, framework_id, tasks_)[1]

    # -- operator -----------------------------------------------------------------------

    def operator_kill(self, now: float, task_id: str, framework_id: str = "") -> list[Effect]:
        return self._run(now, tasks.operator_kill, self, task_id, framework_id)[1]

    def explain(self, now: float, framework_id: str) -> list[Why]:
        return self._run(now, policy.explain, self, framework_id)[0]

    def roles(self) -> list[RoleInfo]:
        return policy.roles(self)

    def set_weights(self, now: float, weights: list[tuple[str, float]]) -> list[Effect]:
        return self._run(now, policy.set_weights, self, weights)[1]

    def set_quota(
        self, now: float, role: str, guarantee: Resources, limit: Resources | None, force: bool = False
    ) -> list[Effect]:
        return self._run(now, policy.set_quota, self, role, guarantee, limit, force)[1]

    def reserve(
        self, now: float, agent_id: str, resources: Resources, unreserve: bool = False
    ) -> list[Effect]:
        return self._run(now, policy.reserve, self, agent_id, resources, unreserve)[1]

    def drain_agent(self, now: float, agent_id: str, draining: bool = True) -> list[Effect]:
        return self._run(now, policy.drain_agent, self, agent_id, draining)[1]
