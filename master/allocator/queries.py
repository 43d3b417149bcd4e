"""The allocator's state and its read-only questions (see ``allocator.py``).

:class:`AllocatorQueries` holds the fields the allocator keeps (agents,
frameworks, roles and their sorters, the allocatable candidates, totals) and
answers questions about them without changing anything: what an agent has
free, what a framework holds, shares, the roles, why a framework is offered
nothing. The Operator API and the metrics read the allocator only through
these; :class:`~corral.master.allocator.allocator.Allocator` adds the events
and the cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from corral.master.allocator.explain import explain
from corral.master.allocator.model import (
    DEFAULT_MIN_ALLOCATABLE,
    AgentState,
    AllocatorError,
    FrameworkState,
    Reason,
    RoleInfo,
    RoleState,
    to_resources,
)
from corral.master.allocator.sorter import Quantities, RoleSorter
from corral.resources import Resources


class AllocatorQueries:
    """The allocator's fields and the questions that only read them."""

    def __init__(self, min_allocatable: Iterable[Mapping[str, int]] = DEFAULT_MIN_ALLOCATABLE) -> None:
        self._agents: dict[str, AgentState] = {}
        self._frameworks: dict[str, FrameworkState] = {}
        self._roles: dict[str, RoleState] = {}
        self._role_sorter = RoleSorter()
        self._weights: dict[str, float] = {}
        self._candidates: set[str] = set()  # offerable agents with something allocatable
        self._total: Quantities = {}
        self._quota_roles: set[str] = set()
        self._min_allocatable = [dict(m) for m in min_allocatable]
        self._min_names = {n for m in self._min_allocatable for n in m}
        self._cycle = 0  # allocation cycles started (decline filters outlive the next one)

    # -- queries --------------------------------------------------------------

    def free(self, agent_id: str) -> Resources:
        return self._agent(agent_id).free

    def agent_total(self, agent_id: str) -> Resources:
        return self._agent(agent_id).total

    def allocated(self, framework_id: str, role: str | None = None) -> Resources:
        out = Resources()
        for by_role in self._framework(framework_id).held.values():
            for r, res in by_role.items():
                if role is None or r == role:
                    out = out + res
        return out

    def held(self, framework_id: str, agent_id: str) -> dict[str, Resources]:
        """What the framework holds on the agent, by the role it is charged to."""
        return dict(self._framework(framework_id).held.get(agent_id, {}))

    def allocated_on(self, framework_id: str, agent_id: str) -> Resources:
        out = Resources()
        for res in self._framework(framework_id).held.get(agent_id, {}).values():
            out = out + res
        return out

    def total(self) -> Resources:
        return Resources(scalars={(n, ""): v for n, v in self._total.items() if v})

    def share(self, framework_id: str, role: str | None = None) -> float:
        """Dominant share of the framework in ``role`` (default: its first)."""
        fw = self._framework(framework_id)
        r = self._roles.get(role or fw.roles[0])
        if r is None or not r.frameworks.contains(framework_id):
            raise AllocatorError(f"role: framework {framework_id} is not in role {role!r}")
        return r.frameworks.share(framework_id)

    def role_share(self, role: str) -> float:
        return self._role_sorter.share(role)

    def consumed(self, role: str) -> Resources:
        """Quota consumption of ``role`` and its sub-roles."""
        r = self._roles.get(role)
        return Resources(scalars={(n, ""): v for n, v in (r.consumed if r else {}).items() if v})

    def roles(self) -> list[RoleInfo]:
        """Every role known (subscribed, reserved for, weighted or with quota)."""
        out = []
        for name in sorted(self._roles):
            r = self._roles[name]
            out.append(
                RoleInfo(
                    role=name,
                    weight=self._weights.get(name, 1.0),
                    frameworks=tuple(r.frameworks.clients()),
                    share=self._role_sorter.share(name),
                    guarantee=to_resources(r.guarantee),
                    limit=None if r.limit is None else to_resources(r.limit),
                    consumed=to_resources(r.consumed),
                    limit_quantities=None if r.limit is None else dict(r.limit),
                )
            )
        return out

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def draining(self, agent_id: str) -> bool:
        return self._agent(agent_id).draining

    def explain(self, framework_id: str, now: float) -> list[Reason]:
        """Why ``framework_id`` is not being offered resources. Empty when
        nothing stands in its way (it should get the next offer that fits)."""
        return explain(
            framework_id,
            self._frameworks.get(framework_id),
            now,
            self._agents,
            self._candidates,
            self._roles,
            self._role_sorter,
            self._allocatable,
            self._cycle + 1,
        )

    # -- lookups that name what is missing ------------------------------------

    def _agent(self, agent_id: str) -> AgentState:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise AllocatorError(f"agent_id: agent {agent_id!r} is not known to the allocator")
        return agent

    def _framework(self, framework_id: str) -> FrameworkState:
        fw = self._frameworks.get(framework_id)
        if fw is None:
            raise AllocatorError(f"framework_id: framework {framework_id!r} is not known to the allocator")
        return fw

    # -- sizes ----------------------------------------------------------------

    def _allocatable(self, res: Resources) -> bool:
        if not res.scalars:
            return False
        q: dict[str, int] = {}
        wanted = self._min_names
        for (n, _), v in res.scalars.items():
            if n in wanted:
                q[n] = q.get(n, 0) + v
        for m in self._min_allocatable:
            for n, v in m.items():
                if q.get(n, 0) < v:
                    break
            else:
                return True
        return False
