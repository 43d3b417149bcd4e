"""The allocator's accounting: what each framework, agent and role holds.

:class:`AllocatorAccounting` adds to the state (``queries.py``) the
bookkeeping every event and every cycle goes through: charging an
allocation to a framework's role on an agent (``_use``), taking back only
what a framework really holds (``_recover``), quota consumption up the role
tree (with unallocated reservations counted for their role), the cluster
total the sorters divide by, and the set of agents worth visiting in a
cycle. :class:`~corral.master.allocator.allocator.Allocator` builds the
events and the cycle on top; the methods stay private to that one object.
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.master.allocator.model import (
    DEFAULT_ROLE,
    EMPTY,
    AgentState,
    FrameworkState,
    RoleState,
)
from corral.master.allocator.queries import AllocatorQueries
from corral.master.allocator.sorter import DRFSorter, ancestors_and_self, quantities
from corral.resources import Resources


class AllocatorAccounting(AllocatorQueries):
    """The allocator's state plus the bookkeeping that changes it."""

    # -- roles and frameworks in the sorters -----------------------------------

    def _holds_in(self, fw: FrameworkState, role: str) -> bool:
        return any(role in by_role for by_role in fw.held.values())

    def _refresh_framework(self, framework_id: str) -> None:
        fw = self._frameworks[framework_id]
        for role, r in self._roles.items():
            if not r.frameworks.contains(framework_id):
                continue
            if fw.wants(role):
                r.frameworks.activate(framework_id)
            else:
                r.frameworks.deactivate(framework_id)
            self._refresh_role(role)

    def _refresh_role(self, role: str) -> None:
        self._role_sorter.set_active(role, self._roles[role].frameworks.has_active())

    def _role(self, role: str) -> RoleState:
        r = self._roles.get(role)
        if r is None:
            for path in ancestors_and_self(role):
                if path not in self._roles:
                    self._roles[path] = RoleState(DRFSorter(self._total))
            r = self._roles[role]
            self._role_sorter.add(role)
        return r

    # -- accounting -----------------------------------------------------------

    def _use(self, framework_id: str, role: str, agent_id: str, resources: Resources) -> None:
        if not resources:
            return
        fw = self._frameworks[framework_id]
        agent = self._agents[agent_id]
        if agent.reserved:
            self._consume_free_reservations(agent, -1)
        agent.allocated = agent.allocated + resources
        agent.free = agent.free.subtract_clamped(resources)
        if agent.reserved:
            self._consume_free_reservations(agent, 1)
        by_role = fw.held.setdefault(agent_id, {})
        by_role[role] = by_role.get(role, EMPTY) + resources
        q = quantities(resources)
        r = self._role(role)
        if not r.frameworks.contains(framework_id):
            r.frameworks.add(framework_id, fw.weight, active=False)
        r.frameworks.add_quantities(framework_id, q)
        self._role_sorter.add_quantities(role, q)
        self._consume(role, q, 1)
        self._refresh_candidate(agent_id)

    def _recover(self, framework_id: str, agent_id: str, resources: Resources, role: str | None) -> None:
        # Only what this framework really holds there comes back: a late task
        # end after the framework or agent was removed must not free
        # resources that now belong to someone else.
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return
        by_role = fw.held.get(agent_id)
        if not by_role:
            return
        order = sorted(by_role)
        if role in by_role:
            order.remove(role)
            order.insert(0, role)
        agent = self._agents[agent_id]
        remaining = resources
        for r in order:
            held = by_role[r]
            left = held.subtract_clamped(remaining)
            back = held.subtract_clamped(left)
            if not back:
                continue
            if left:
                by_role[r] = left
            else:
                del by_role[r]
            q = quantities(back)
            neg = {n: -v for n, v in q.items()}
            self._roles[r].frameworks.add_quantities(framework_id, neg)
            self._role_sorter.add_quantities(r, neg)
            self._consume(r, q, -1)
            if agent.reserved:
                self._consume_free_reservations(agent, -1)
            agent.allocated = agent.allocated.subtract_clamped(back)
            agent.free = agent.total.subtract_clamped(agent.allocated)
            if agent.reserved:
                self._consume_free_reservations(agent, 1)
            remaining = remaining.subtract_clamped(back)
            if not remaining:
                break
        if not by_role:
            del fw.held[agent_id]
        for r in set(order) - set(by_role):
            # a role it left: forget it there once nothing is held
            if r not in fw.roles and r in self._roles and not self._holds_in(fw, r):
                self._roles[r].frameworks.remove(framework_id)
                self._refresh_role(r)
        self._refresh_candidate(agent_id)

    def _consume(self, role: str, q: Mapping[str, int], sign: int) -> None:
        if role == DEFAULT_ROLE and DEFAULT_ROLE not in self._quota_roles:
            return  # nothing reads '*' unless it has quota (counted from then on)
        for path in ancestors_and_self(role):
            consumed = self._role(path).consumed
            for n, v in q.items():
                left = consumed.get(n, 0) + sign * v
                if left:
                    consumed[n] = left
                else:
                    consumed.pop(n, None)

    def _consume_free_reservations(self, agent: AgentState, sign: int) -> None:
        """Unallocated reservations count toward their role's quota consumption."""
        if not agent.reserved:
            return
        for (n, role), v in agent.free.scalars.items():
            if role:
                self._consume(role, {n: v}, sign)

    def _add_total(self, q: Mapping[str, int], sign: int) -> None:
        for n, v in q.items():
            left = self._total.get(n, 0) + sign * v
            if left:
                self._total[n] = left
            else:
                self._total.pop(n, None)
        self._role_sorter.set_total(self._total)
        for r in self._roles.values():
            r.frameworks.set_total(self._total)

    def _refresh_candidate(self, agent_id: str) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None and agent.offerable() and self._allocatable(agent.free):
            self._candidates.add(agent_id)
        else:
            self._candidates.discard(agent_id)
