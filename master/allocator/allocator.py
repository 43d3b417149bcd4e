"""The allocator: decides which framework is offered which agent's free resources.

Pure and synchronous (CONVENTIONS.md): events in through :meth:`Allocator.handle`,
decisions out of :meth:`Allocator.allocate`, time passed in. Hierarchical DRF
after Mesos' ``HierarchicalAllocatorProcess``:

- Roles form a tree (``eng/ml``). A :class:`RoleSorter` orders roles by the
  weighted dominant share of their subtree, level by level; inside a role a
  :class:`DRFSorter` orders its frameworks (a framework subscribed to several
  roles is a client of each, with its allocation per role).
- Per cycle, for each agent with something allocatable (in id order), roles are
  walked in fair order and, inside the first role whose offer from this agent
  is worth sending, the first framework that wants offers and does not filter
  the agent gets it. Shares move as the cycle goes, so one cycle spreads
  agents over hungry frameworks. An agent whose leftover is still allocatable
  (a quota limit cut the offer) goes on to the next framework.
- Reservations (``cpus(ml):4``, static from the agent or dynamic through
  :class:`~events.Reserved`) are offered only to their role and its
  sub-roles. Quota consumption of a role (Mesos 1.9): what is allocated to
  its subtree, reserved or not, plus its subtree's unallocated reservations.
- Quota: stage 1 offers roles below their guarantee first, cut to what the
  guarantee still needs; stage 2 offers everyone, but leaves enough
  unreserved resources unallocated for the guarantees not yet met (headroom).
  A limit cuts every offer, in both stages, so it is never exceeded.
- Filters: DECLINE filters one agent for one framework in the offer's role
  until ``now + refuse_s`` and at least through the next cycle (MESOS-4302),
  and only while the agent has nothing beyond what was refused (Mesos'
  ``RefusedOfferFilter``); each decline is its own filter. REVIVE clears
  the filters of the roles it names. SUPPRESS (per framework or per role)
  takes the framework out of a role's sorter until REVIVE, so the cycle
  never walks past it.
- One offer per (framework, role, agent) a cycle: what the quota stage and
  the fair-share stage give the same framework role on one agent is merged,
  as Mesos' ``offerable`` map merges it.
- Offers below a minimum allocatable size (cpus 0.01 or mem 32 MiB, Mesos'
  defaults) are not sent: crumbs nobody can use.
- Agents disconnected or draining (maintenance) are not offered.

Speed (``bench/allocator.py``): the set of agents with something allocatable
is kept up to date, so a cycle visits only those; shares come from per-name
integer totals; sorters are kept ordered incrementally (see ``sorter.py``).

This module holds the events and the cycle; the rest is one job a module:
``queries.py`` (the state's fields and the read-only questions: free,
held, shares, roles, explain), ``accounting.py`` (what each framework,
agent and role holds, quota consumption, the cycle's candidate agents),
``model.py`` (the values and per-agent/framework/role records), ``sorter.py``
(the role tree and DRF order), ``quota.py`` (offers under limits,
guarantees and headroom; quota requests), ``reservations.py`` (which
reserve/unreserve requests are granted and what they convert), ``roles.py``
(role names, the role an allocation is charged to) and ``explain.py`` (why a
framework gets nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.master.allocator.accounting import AllocatorAccounting
from corral.master.allocator.events import (
    AgentActivated,
    AgentAdded,
    AgentDeactivated,
    AgentDraining,
    AgentRemoved,
    AgentUpdated,
    Event,
    FrameworkActivated,
    FrameworkAdded,
    FrameworkDeactivated,
    FrameworkRemoved,
    QuotaSet,
    Reserved,
    ResourcesRecovered,
    ResourcesUsed,
    Revived,
    RoleWeight,
    Suppressed,
    Unreserved,
)
from corral.master.allocator.filters import add_filter, clear_roles, filtered
from corral.master.allocator.model import (
    DEFAULT_MIN_ALLOCATABLE,
    DEFAULT_ROLE,
    MIN_ALLOCATABLE_CPUS_MILLI,
    MIN_ALLOCATABLE_MEM_MILLI,
    REASON_KINDS,
    AgentState,
    Allocation,
    AllocatorError,
    FrameworkState,
    OfferFilter,
    Reason,
    RoleInfo,
    has_reserved,
)
from corral.master.allocator.quota import (
    Headroom,
    any_unmet,
    check_quota,
    held_in,
    make_headroom,
    offer_for,
    required,
    unmet,
)
from corral.master.allocator.reservations import check_reservation, convert_total
from corral.master.allocator.roles import check_role, check_roles_of, role_for
from corral.master.allocator.sorter import (
    check_weight,
    quantities,
)
from corral.resources import Resources

__all__ = [
    "DEFAULT_MIN_ALLOCATABLE",
    "DEFAULT_ROLE",
    "MIN_ALLOCATABLE_CPUS_MILLI",
    "MIN_ALLOCATABLE_MEM_MILLI",
    "REASON_KINDS",
    "Allocation",
    "Allocator",
    "AllocatorError",
    "Reason",
    "RoleInfo",
]


class Allocator(AllocatorAccounting):
    """Events in, allocations out.

    :meth:`handle` raises :class:`AllocatorError` for requests it refuses
    (user or operator input: weights, quota, reservations, unknown roles),
    before changing anything. Events that merely arrive late (a recovery for
    a framework or agent already removed) are ignored."""

    # -- events ---------------------------------------------------------------

    def handle(self, event: Event) -> None:
        match event:
            case AgentAdded(agent_id, total, used):
                if agent_id in self._agents:
                    self._remove_agent(agent_id)
                agent = AgentState(total=total, free=total, reserved=has_reserved(total))
                self._agents[agent_id] = agent
                self._consume_free_reservations(agent, 1)
                self._add_total(quantities(total), 1)
                for fw_id, res in sorted(used.items()):
                    if fw_id in self._frameworks:
                        self._use(fw_id, role_for(self._frameworks[fw_id], res, None), agent_id, res)
                self._refresh_candidate(agent_id)
            case AgentUpdated(agent_id, total):
                agent = self._agent(agent_id)
                self._add_total(quantities(agent.total), -1)
                self._consume_free_reservations(agent, -1)
                agent.total = total
                agent.reserved = has_reserved(total)
                agent.free = total.subtract_clamped(agent.allocated)
                self._consume_free_reservations(agent, 1)
                self._add_total(quantities(total), 1)
                self._refresh_candidate(agent_id)
            case AgentRemoved(agent_id):
                self._remove_agent(agent_id)
            case AgentActivated(agent_id):
                self._agent(agent_id).active = True
                self._refresh_candidate(agent_id)
            case AgentDeactivated(agent_id):
                self._agent(agent_id).active = False
                self._refresh_candidate(agent_id)
            case AgentDraining(agent_id, draining):
                self._agent(agent_id).draining = draining
                self._refresh_candidate(agent_id)
            case FrameworkAdded(framework_id, roles, weight):
                self._add_framework(framework_id, roles, weight)
            case FrameworkRemoved(framework_id):
                self._remove_framework(framework_id)
            case FrameworkActivated(framework_id):
                self._framework(framework_id).active = True
                self._refresh_framework(framework_id)
            case FrameworkDeactivated(framework_id):
                self._framework(framework_id).active = False
                self._refresh_framework(framework_id)
            case ResourcesUsed(framework_id, agent_id, resources, role):
                if framework_id in self._frameworks and agent_id in self._agents:
                    self._use(
                        framework_id,
                        role_for(self._frameworks[framework_id], resources, role),
                        agent_id,
                        resources,
                    )
            case ResourcesRecovered(framework_id, agent_id, resources, refuse_s, now, role):
                refusing = self._frameworks.get(framework_id)
                if refusing is not None and refuse_s > 0 and agent_id in self._agents:
                    # The role the filter is for: the offer's, resolved before
                    # the recovery can drop the framework from a role it left.
                    in_role = role if role is not None else role_for(refusing, resources, None)
                    self._recover(framework_id, agent_id, resources, role)
                    add_filter(
                        refusing, agent_id, in_role, OfferFilter(now + refuse_s, self._cycle, resources)
                    )
                else:
                    self._recover(framework_id, agent_id, resources, role)
            case Suppressed(framework_id, roles):
                fw = self._framework(framework_id)
                fw.suppressed |= set(check_roles_of(fw, framework_id, roles, "suppress"))
                self._refresh_framework(framework_id)
            case Revived(framework_id, roles):
                fw = self._framework(framework_id)
                revived = set(check_roles_of(fw, framework_id, roles, "revive"))
                fw.suppressed -= revived
                clear_roles(fw, revived)
                self._refresh_framework(framework_id)
            case RoleWeight(role, weight):
                check_role(role, "weight")
                try:
                    check_weight(f"role {role!r}", weight)
                except ValueError as e:
                    raise AllocatorError(str(e)) from None
                self._weights[role] = float(weight)
                self._role(role)
                self._role_sorter.set_weight(role, weight)
            case QuotaSet(role, guarantee, limit, force):
                self._set_quota(role, guarantee, limit, force)
            case Reserved(agent_id, resources, framework_id):
                self._reserve(agent_id, resources, framework_id, unreserve=False)
            case Unreserved(agent_id, resources, framework_id):
                self._reserve(agent_id, resources, framework_id, unreserve=True)

    # -- decisions ------------------------------------------------------------

    def allocate(self, now: float) -> list[Allocation]:
        """One allocation cycle at time ``now``."""
        self._cycle += 1
        out: list[Allocation] = []
        if not self._candidates:
            return out
        # (framework, agent, role) -> index in out: one offer each a cycle.
        # Only two stages can give one framework role the same agent twice.
        index: dict[tuple[str, str, str], int] | None = None
        agents = sorted(self._candidates)
        headroom = (
            make_headroom(self._roles, self._quota_roles, self._agents.values())
            if self._quota_roles
            else None
        )
        if headroom is not None:
            index = {}
            for agent_id in agents:
                if not headroom.required and not any_unmet(self._roles, self._quota_roles):
                    break  # every guarantee is met: stage 1 has nothing left to do
                if agent_id in self._candidates:
                    self._allocate_agent(agent_id, now, 1, headroom, out, index)
        for agent_id in agents:
            if agent_id in self._candidates:
                self._allocate_agent(agent_id, now, 2, headroom, out, index)
        if len(agents) > 2 * len(self._candidates) + 64:
            # A set never shrinks its table, and iterating it walks the whole
            # table: after a big cycle, copy it so the next one costs what it holds.
            self._candidates = set(self._candidates)
        return out

    def _allocate_agent(
        self,
        agent_id: str,
        now: float,
        stage: int,
        headroom: Headroom | None,
        out: list[Allocation],
        index: dict[tuple[str, str, str], int] | None,
    ) -> None:
        agent = self._agents[agent_id]
        served: set[tuple[str, str]] = set()  # (framework, role): once a stage, as in Mesos
        simple = headroom is None and not agent.reserved
        while True:
            chosen: tuple[str, str, Resources] | None = None
            for role in self._role_sorter.iter_roles():
                if stage == 1 and not unmet(self._roles, role):
                    continue
                if simple and not self._quota_roles:
                    offer = agent.free
                else:
                    offer = offer_for(self._roles, agent, role, stage, headroom)
                if not offer or not self._allocatable(offer):
                    continue
                for fw_id in self._roles[role].frameworks.iter_active():
                    if served and (fw_id, role) in served:
                        continue
                    fw = self._frameworks[fw_id]
                    if fw.filters and filtered(fw, agent_id, role, offer, now, self._cycle):
                        continue
                    chosen = (fw_id, role, offer)
                    break
                if chosen is not None:
                    break
            if chosen is None:
                return
            fw_id, role, offer = chosen
            self._use(fw_id, role, agent_id, offer)
            if headroom is not None:
                headroom.taken(offer)
                if headroom.required:  # once met, guarantees stay met within a cycle
                    headroom.required = required(self._roles, self._quota_roles)
            at = None if index is None else index.get((fw_id, agent_id, role))
            if at is None:
                if index is not None:
                    index[(fw_id, agent_id, role)] = len(out)
                out.append(Allocation(fw_id, agent_id, offer, role))
            else:
                out[at] = Allocation(fw_id, agent_id, out[at].resources + offer, role)
            served.add((fw_id, role))
            if agent_id not in self._candidates:
                return

    # -- agents and frameworks -----------------------------------------------

    def _remove_agent(self, agent_id: str) -> None:
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        for fw_id, fw in self._frameworks.items():
            by_role = fw.held.get(agent_id)
            if by_role:
                for role, res in sorted(by_role.items()):
                    self._recover(fw_id, agent_id, res, role)
            fw.held.pop(agent_id, None)
            fw.filters.pop(agent_id, None)
        self._consume_free_reservations(agent, -1)
        self._add_total(quantities(agent.total), -1)
        del self._agents[agent_id]
        self._candidates.discard(agent_id)

    def _add_framework(self, framework_id: str, roles: tuple[str, ...], weight: float) -> None:
        roles = tuple(dict.fromkeys(roles)) or (DEFAULT_ROLE,)
        for role in roles:
            check_role(role, "framework role")
        try:
            check_weight(f"framework {framework_id!r}", weight)
        except ValueError as e:
            raise AllocatorError(str(e)) from None
        fw = self._frameworks.get(framework_id)
        if fw is None:
            fw = self._frameworks[framework_id] = FrameworkState(roles=roles, weight=weight)
        else:
            fw.active = True
            fw.weight = weight
            old = fw.roles
            fw.roles = roles
            fw.suppressed &= set(roles)
            for role in old:
                if role not in roles and not self._holds_in(fw, role):
                    self._roles[role].frameworks.remove(framework_id)
                    self._refresh_role(role)
        for role in roles:
            sorter = self._role(role).frameworks
            if not sorter.contains(framework_id):
                sorter.add(framework_id, weight, active=False)
            else:
                sorter.update_weight(framework_id, weight)
        self._refresh_framework(framework_id)

    def _remove_framework(self, framework_id: str) -> None:
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return
        for agent_id, by_role in sorted(fw.held.items()):
            for role, res in sorted(by_role.items()):
                self._recover(framework_id, agent_id, res, role)
        for role, r in self._roles.items():
            if r.frameworks.contains(framework_id):
                r.frameworks.remove(framework_id)
                self._refresh_role(role)
        del self._frameworks[framework_id]

    # -- operator and framework requests --------------------------------------

    def _set_quota(
        self, role: str, guarantee: Resources, limit: Resources | Mapping[str, int] | None, force: bool
    ) -> None:
        g, lim = check_quota(self._roles, self._quota_roles, self._total, role, guarantee, limit, force)
        if role == DEFAULT_ROLE and DEFAULT_ROLE not in self._quota_roles:
            # '*' is not counted while it has no quota: count what it holds now.
            self._role(role).consumed = held_in(self._frameworks.values(), DEFAULT_ROLE)
        r = self._role(role)
        r.guarantee = g
        r.limit = lim
        if g or lim is not None:
            self._quota_roles.add(role)
        else:
            self._quota_roles.discard(role)
            if role == DEFAULT_ROLE:
                r.consumed = {}  # no longer counted

    def _reserve(
        self, agent_id: str, resources: Resources, framework_id: str | None, unreserve: bool
    ) -> None:
        c = check_reservation(
            self._agents, self._frameworks, self._roles, agent_id, resources, framework_id, unreserve
        )
        agent = self._agents[agent_id]
        if framework_id is not None and c.holder is not None:
            # Within what the framework holds: its allocation changes kind, not size.
            by_role = self._frameworks[framework_id].held[agent_id]
            by_role[c.holder] = by_role[c.holder].subtract_clamped(c.source) + c.converted
            convert_total(agent, c)
            agent.allocated = agent.allocated.subtract_clamped(c.source) + c.converted
            return
        self._consume_free_reservations(agent, -1)
        convert_total(agent, c)
        agent.free = agent.free.subtract_clamped(c.source) + c.converted
        if agent.reserved:
            for role in c.targets:
                self._role(role)
        self._consume_free_reservations(agent, 1)
        self._refresh_candidate(agent_id)
