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
- Filters: DECLINE filters one agent for one framework until ``now +
  refuse_s``, and only while the agent has nothing beyond what was refused
  (Mesos' ``RefusedOfferFilter``); REVIVE clears them. SUPPRESS (per
  framework or per role) takes the framework out of a role's sorter until
  REVIVE, so the cycle never walks past it.
- Offers below a minimum allocatable size (cpus 0.01 or mem 32 MiB, Mesos'
  defaults) are not sent: crumbs nobody can use.
- Agents disconnected or draining (maintenance) are not offered.

Speed (``bench/allocator.py``): the set of agents with something allocatable
is kept up to date, so a cycle visits only those; shares come from per-name
integer totals; sorters are kept ordered incrementally (see ``sorter.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
from corral.master.allocator.sorter import (
    DRFSorter,
    Quantities,
    RoleSorter,
    ancestors_and_self,
    check_weight,
    is_within,
    quantities,
)
from corral.resources import MILLI, ResourceError, Resources, format_milli, validate_role

#: Below this an agent's leftovers are crumbs nobody can use (Mesos' defaults:
#: cpus 0.01 or mem 32 MiB make an offer worth sending).
MIN_ALLOCATABLE_CPUS_MILLI = 10
MIN_ALLOCATABLE_MEM_MILLI = 32 * MILLI
DEFAULT_MIN_ALLOCATABLE: tuple[Mapping[str, int], ...] = (
    {"cpus": MIN_ALLOCATABLE_CPUS_MILLI},
    {"mem": MIN_ALLOCATABLE_MEM_MILLI},
)

DEFAULT_ROLE = "*"
_EMPTY = Resources()


class AllocatorError(ValueError):
    """A request the allocator refuses (bad weight, quota, role or
    reservation); the message names what is wrong. Nothing has changed."""


@dataclass(frozen=True, slots=True)
class Allocation:
    framework_id: str
    agent_id: str
    resources: Resources
    role: str = DEFAULT_ROLE


#: Kinds of :class:`Reason`, in the order :meth:`Allocator.explain` lists them.
REASON_KINDS = (
    "unknown",
    "disconnected",
    "suppressed",
    "filtered",
    "quota_limit",
    "share",
    "nothing_fits",
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a framework is not being offered resources."""

    kind: str  # one of REASON_KINDS
    message: str
    role: str = ""
    agents: int = 0  # "filtered": on how many agents
    until: float = 0.0  # "filtered": the latest expiry


@dataclass(slots=True)
class _Agent:
    total: Resources
    free: Resources
    allocated: Resources = _EMPTY
    active: bool = True
    draining: bool = False
    reserved: bool = False  # any reserved resources in total

    def offerable(self) -> bool:
        return self.active and not self.draining


@dataclass(slots=True)
class _Framework:
    roles: tuple[str, ...]
    weight: float = 1.0
    active: bool = True
    suppressed: set[str] = field(default_factory=set)
    # agent_id -> (until, resources refused). As in Mesos' RefusedOfferFilter,
    # the filter holds only while the agent has nothing beyond what was
    # refused: once a task ends there, the larger offer goes out at once.
    filters: dict[str, tuple[float, Resources]] = field(default_factory=dict)
    held: dict[str, dict[str, Resources]] = field(default_factory=dict)  # agent -> role -> resources

    def wants(self, role: str) -> bool:
        return self.active and role in self.roles and role not in self.suppressed


@dataclass(slots=True)
class _Role:
    frameworks: DRFSorter
    guarantee: Quantities = field(default_factory=dict)
    limit: Quantities | None = None
    consumed: Quantities = field(default_factory=dict)  # this role and its sub-roles


class Allocator:
    """Events in, allocations out.

    :meth:`handle` raises :class:`AllocatorError` for requests it refuses
    (user or operator input: weights, quota, reservations, unknown roles),
    before changing anything. Events that merely arrive late (a recovery for
    a framework or agent already removed) are ignored."""

    def __init__(self, min_allocatable: Iterable[Mapping[str, int]] = DEFAULT_MIN_ALLOCATABLE) -> None:
        self._agents: dict[str, _Agent] = {}
        self._frameworks: dict[str, _Framework] = {}
        self._roles: dict[str, _Role] = {}
        self._role_sorter = RoleSorter()
        self._weights: dict[str, float] = {}
        self._candidates: set[str] = set()  # offerable agents with something allocatable
        self._total: Quantities = {}
        self._quota_roles: set[str] = set()
        self._min_allocatable = [dict(m) for m in min_allocatable]
        self._min_names = {n for m in self._min_allocatable for n in m}

    # -- events ---------------------------------------------------------------

    def handle(self, event: Event) -> None:
        match event:
            case AgentAdded(agent_id, total, used):
                if agent_id in self._agents:
                    self._remove_agent(agent_id)
                agent = _Agent(total=total, free=total, reserved=_has_reserved(total))
                self._agents[agent_id] = agent
                self._consume_free_reservations(agent, 1)
                self._add_total(quantities(total), 1)
                for fw_id, res in sorted(used.items()):
                    if fw_id in self._frameworks:
                        self._use(fw_id, self._role_for(fw_id, res, None), agent_id, res)
                self._refresh_candidate(agent_id)
            case AgentUpdated(agent_id, total):
                agent = self._agents[agent_id]
                self._add_total(quantities(agent.total), -1)
                self._consume_free_reservations(agent, -1)
                agent.total = total
                agent.reserved = _has_reserved(total)
                agent.free = total.subtract_clamped(agent.allocated)
                self._consume_free_reservations(agent, 1)
                self._add_total(quantities(total), 1)
                self._refresh_candidate(agent_id)
            case AgentRemoved(agent_id):
                self._remove_agent(agent_id)
            case AgentActivated(agent_id):
                self._agents[agent_id].active = True
                self._refresh_candidate(agent_id)
            case AgentDeactivated(agent_id):
                self._agents[agent_id].active = False
                self._refresh_candidate(agent_id)
            case AgentDraining(agent_id, draining):
                if agent_id not in self._agents:
                    raise AllocatorError(f"agent_id: agent {agent_id!r} is not known")
                self._agents[agent_id].draining = draining
                self._refresh_candidate(agent_id)
            case FrameworkAdded(framework_id, roles, weight):
                self._add_framework(framework_id, roles, weight)
            case FrameworkRemoved(framework_id):
                self._remove_framework(framework_id)
            case FrameworkActivated(framework_id):
                self._frameworks[framework_id].active = True
                self._refresh_framework(framework_id)
            case FrameworkDeactivated(framework_id):
                self._frameworks[framework_id].active = False
                self._refresh_framework(framework_id)
            case ResourcesUsed(framework_id, agent_id, resources, role):
                if framework_id in self._frameworks and agent_id in self._agents:
                    self._use(
                        framework_id, self._role_for(framework_id, resources, role), agent_id, resources
                    )
            case ResourcesRecovered(framework_id, agent_id, resources, refuse_s, now, role):
                self._recover(framework_id, agent_id, resources, role)
                refusing = self._frameworks.get(framework_id)
                if refusing is not None and refuse_s > 0 and agent_id in self._agents:
                    refusing.filters[agent_id] = (now + refuse_s, resources)
            case Suppressed(framework_id, roles):
                fw = self._frameworks[framework_id]
                fw.suppressed |= set(self._check_roles_of(framework_id, roles, "suppress"))
                self._refresh_framework(framework_id)
            case Revived(framework_id, roles):
                fw = self._frameworks[framework_id]
                fw.suppressed -= set(self._check_roles_of(framework_id, roles, "revive"))
                fw.filters.clear()
                self._refresh_framework(framework_id)
            case RoleWeight(role, weight):
                self._check_role(role, "weight")
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
        out: list[Allocation] = []
        if not self._candidates:
            return out
        agents = sorted(self._candidates)
        headroom = self._headroom() if self._quota_roles else None
        if headroom is not None:
            for agent_id in agents:
                if not headroom.required:
                    break  # every guarantee is met: stage 1 has nothing left to do
                if agent_id in self._candidates:
                    self._allocate_agent(agent_id, now, 1, headroom, out)
        for agent_id in agents:
            if agent_id in self._candidates:
                self._allocate_agent(agent_id, now, 2, headroom, out)
        if len(agents) > 2 * len(self._candidates) + 64:
            # A set never shrinks its table, and iterating it walks the whole
            # table: after a big cycle, copy it so the next one costs what it holds.
            self._candidates = set(self._candidates)
        return out

    def _allocate_agent(
        self, agent_id: str, now: float, stage: int, headroom: _Headroom | None, out: list[Allocation]
    ) -> None:
        agent = self._agents[agent_id]
        served: set[str] = set()
        simple = headroom is None and not agent.reserved
        while True:
            chosen: tuple[str, str, Resources] | None = None
            for role in self._role_sorter.iter_roles():
                if stage == 1 and not self._unmet(role):
                    continue
                if simple and not self._quota_roles:
                    offer = agent.free
                else:
                    offer = self._offer(agent, role, stage, headroom)
                if not offer or not self._allocatable(offer):
                    continue
                for fw_id in self._roles[role].frameworks.iter_active():
                    if fw_id in served:
                        continue
                    refused = self._frameworks[fw_id].filters.get(agent_id)
                    if refused is not None:
                        until, what = refused
                        if until > now and what.contains(offer):
                            continue
                        del self._frameworks[fw_id].filters[agent_id]
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
                    headroom.required = self._required()
            out.append(Allocation(fw_id, agent_id, offer, role))
            served.add(fw_id)
            if agent_id not in self._candidates:
                return

    # -- queries --------------------------------------------------------------

    def free(self, agent_id: str) -> Resources:
        return self._agents[agent_id].free

    def agent_total(self, agent_id: str) -> Resources:
        return self._agents[agent_id].total

    def allocated(self, framework_id: str, role: str | None = None) -> Resources:
        out = Resources()
        for by_role in self._frameworks[framework_id].held.values():
            for r, res in by_role.items():
                if role is None or r == role:
                    out = out + res
        return out

    def held(self, framework_id: str, agent_id: str) -> dict[str, Resources]:
        """What the framework holds on the agent, by the role it is charged to."""
        return dict(self._frameworks[framework_id].held.get(agent_id, {}))

    def allocated_on(self, framework_id: str, agent_id: str) -> Resources:
        out = Resources()
        for res in self._frameworks[framework_id].held.get(agent_id, {}).values():
            out = out + res
        return out

    def total(self) -> Resources:
        return Resources(scalars={(n, ""): v for n, v in self._total.items() if v})

    def share(self, framework_id: str, role: str | None = None) -> float:
        """Dominant share of the framework in ``role`` (default: its first)."""
        fw = self._frameworks[framework_id]
        return self._roles[role or fw.roles[0]].frameworks.share(framework_id)

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
                    guarantee=_resources(r.guarantee),
                    limit=None if r.limit is None else _resources(r.limit),
                    consumed=_resources(r.consumed),
                )
            )
        return out

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def draining(self, agent_id: str) -> bool:
        return self._agents[agent_id].draining

    def explain(self, framework_id: str, now: float) -> list[Reason]:
        """Why ``framework_id`` is not being offered resources. Empty when
        nothing stands in its way (it should get the next offer that fits)."""
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return [Reason("unknown", f"framework {framework_id} is not known to the allocator")]
        reasons: list[Reason] = []
        if not fw.active:
            reasons.append(Reason("disconnected", "framework is disconnected"))
        for role in fw.roles:
            if role in fw.suppressed:
                reasons.append(
                    Reason(
                        "suppressed",
                        f"framework has suppressed offers in role {role!r} (it will be offered after REVIVE)",
                        role=role,
                    )
                )
        filtered = sorted(a for a, (until, _) in fw.filters.items() if until > now and a in self._agents)
        if filtered:
            until = max(fw.filters[a][0] for a in filtered)
            reasons.append(
                Reason(
                    "filtered",
                    f"filtered on {len(filtered)} agent(s) until t+{until - now:.1f}s after declines"
                    " (REVIVE clears the filters)",
                    agents=len(filtered),
                    until=until,
                )
            )
        wanted = [r for r in fw.roles if r not in fw.suppressed]
        for role in wanted:
            at = self._at_limit(role)
            if at:
                reasons.append(Reason("quota_limit", at, role=role))
        for role in wanted:
            behind = self._behind(framework_id, role)
            if behind:
                reasons.append(Reason("share", behind, role=role))
        fits = 0
        draining = 0
        for agent_id in self._candidates:
            agent = self._agents[agent_id]
            if any(self._allocatable(self._offer(agent, role, 2, None)) for role in wanted):
                fits += 1
        draining = sum(1 for a in self._agents.values() if a.draining)
        if wanted and not fits:
            extra = f" ({draining} agent(s) draining)" if draining else ""
            reasons.append(
                Reason(
                    "nothing_fits",
                    "no agent has free resources for roles "
                    f"{', '.join(repr(r) for r in wanted)} above the minimum allocatable size{extra}",
                )
            )
        return reasons

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
            self._check_role(role, "framework role")
        try:
            check_weight(f"framework {framework_id!r}", weight)
        except ValueError as e:
            raise AllocatorError(str(e)) from None
        fw = self._frameworks.get(framework_id)
        if fw is None:
            fw = self._frameworks[framework_id] = _Framework(roles=roles, weight=weight)
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

    def _holds_in(self, fw: _Framework, role: str) -> bool:
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

    def _role(self, role: str) -> _Role:
        r = self._roles.get(role)
        if r is None:
            for path in ancestors_and_self(role):
                if path not in self._roles:
                    self._roles[path] = _Role(DRFSorter(self._total))
            r = self._roles[role]
            self._role_sorter.add(role)
        return r

    def _check_role(self, role: str, what: str) -> None:
        if not isinstance(role, str) or not role:
            raise AllocatorError(f"{what}: a role must be a non-empty name, got {role!r}")
        if role == DEFAULT_ROLE:
            return
        try:
            validate_role(role)
        except ResourceError as e:
            raise AllocatorError(f"{what}: {e}") from None
        if "*" in role or any(part in (".", "..") for part in role.split("/")):
            raise AllocatorError(f"{what}: role {role!r}: '.', '..' and '*' are not role names")

    def _check_roles_of(self, framework_id: str, roles: tuple[str, ...], what: str) -> tuple[str, ...]:
        fw = self._frameworks[framework_id]
        unknown = [r for r in roles if r not in fw.roles]
        if unknown:
            raise AllocatorError(
                f"{what}.roles: framework {framework_id} is not subscribed to role(s) "
                f"{', '.join(repr(r) for r in unknown)} (its roles: {', '.join(fw.roles)})"
            )
        return roles or fw.roles

    def _role_for(self, framework_id: str, res: Resources, role: str | None) -> str:
        """The role an allocation is charged to: the one given if the
        framework has it, else the first whose reservations it holds, else its first."""
        fw = self._frameworks[framework_id]
        if role is not None and role in fw.roles:
            return role
        reserved = {r for r in res.roles() if r}
        for candidate in fw.roles:
            if reserved and all(is_within(candidate, r) for r in reserved):
                return candidate
        return fw.roles[0]

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
        by_role[role] = by_role.get(role, _EMPTY) + resources
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
        if role == DEFAULT_ROLE:
            return  # '*' has no quota and no parent: nothing reads it
        for path in ancestors_and_self(role):
            consumed = self._role(path).consumed
            for n, v in q.items():
                left = consumed.get(n, 0) + sign * v
                if left:
                    consumed[n] = left
                else:
                    consumed.pop(n, None)

    def _consume_free_reservations(self, agent: _Agent, sign: int) -> None:
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

    # -- offers under reservations and quota ----------------------------------

    def _offer(self, agent: _Agent, role: str, stage: int, headroom: _Headroom | None) -> Resources:
        """What ``agent`` can offer ``role`` now: its reservations for the role
        or an ancestor, and unreserved resources cut by quota (limits of the
        role and its ancestors; in stage 1 the guarantee still missing; the
        headroom other roles' guarantees need)."""
        free = agent.free
        path = ancestors_and_self(role)
        # Per limited role on the path: (depth, what is left under its limit).
        budgets: list[tuple[int, dict[str, int]]] = []
        for depth, p in enumerate(path):
            limited = self._roles.get(p)
            if limited is not None and limited.limit is not None:
                used = limited.consumed
                budgets.append((depth, {n: lim - used.get(n, 0) for n, lim in limited.limit.items()}))
        unreserved_cap: dict[str, int] | None = None
        if headroom is not None:
            unreserved_cap = headroom.allowed(role, self)
            if stage == 1:
                for n, need in self._unmet(role).items():
                    unreserved_cap[n] = min(unreserved_cap.get(n, need), need)
        if not budgets and not unreserved_cap and not agent.reserved:
            return free
        depth_of = {p: d for d, p in enumerate(path)}
        scalars: dict[tuple[str, str], int] = {}
        # Reservations for the deepest ancestors first: they count against the
        # fewest limits (a reservation already counts for its own subtree).
        reserved = [(k, v) for k, v in free.scalars.items() if k[1] and k[1] in depth_of]
        reserved.sort(key=lambda kv: -depth_of[kv[0][1]])
        unreserved = [(k, v) for k, v in free.scalars.items() if not k[1]]
        for (n, res_role), v in [*reserved, *unreserved]:
            d = depth_of[res_role] if res_role else -1
            take = v
            if not res_role and unreserved_cap is not None and n in unreserved_cap:
                take = min(take, unreserved_cap[n])
            for depth, left in budgets:
                if depth > d and n in left:
                    take = min(take, left[n])
            if take <= 0:
                continue
            for depth, left in budgets:
                if depth > d and n in left:
                    left[n] -= take
            scalars[(n, res_role)] = take
        ranges = {k: v for k, v in free.ranges.items() if not k[1] or k[1] in depth_of}
        sets = {k: v for k, v in free.sets.items() if not k[1] or k[1] in depth_of}
        return Resources(scalars, ranges, sets)

    def _unmet(self, role: str) -> Quantities:
        """What the nearest guarantee on ``role``'s path still misses."""
        for p in reversed(ancestors_and_self(role)):
            r = self._roles.get(p)
            if r is not None and r.guarantee:
                return {
                    n: g - r.consumed.get(n, 0) for n, g in r.guarantee.items() if g > r.consumed.get(n, 0)
                }
        return {}

    def _top_guarantees(self) -> list[str]:
        out = []
        for role in sorted(self._quota_roles):
            if not self._roles[role].guarantee:
                continue
            if any(self._roles[p].guarantee for p in ancestors_and_self(role)[:-1] if p in self._roles):
                continue
            out.append(role)
        return out

    def _required(self) -> dict[str, Quantities]:
        """Per top guaranteed role, what its guarantee still misses."""
        out: dict[str, Quantities] = {}
        for role in self._top_guarantees():
            unmet = self._unmet(role)
            if unmet:
                out[role] = unmet
        return out

    def _headroom(self) -> _Headroom | None:
        if not any(self._roles[r].guarantee for r in self._quota_roles):
            return None
        available: dict[str, int] = {}
        for agent in self._agents.values():
            if agent.offerable():
                for (n, r), v in agent.free.scalars.items():
                    if not r:
                        available[n] = available.get(n, 0) + v
        return _Headroom(available, self._required())

    def _at_limit(self, role: str) -> str:
        for p in ancestors_and_self(role):
            r = self._roles.get(p)
            if r is None or r.limit is None:
                continue
            full = [n for n, lim in sorted(r.limit.items()) if r.consumed.get(n, 0) >= lim]
            if full:
                what = ", ".join(
                    f"{n} {format_milli(r.consumed.get(n, 0))} of {format_milli(r.limit[n])}" for n in full
                )
                via = "" if p == role else f" (through role {p!r})"
                return f"role {role!r} is at its quota limit{via}: {what}"
        return ""

    def _behind(self, framework_id: str, role: str) -> str:
        """Who is offered before ``framework_id`` in ``role``, if anyone."""
        r = self._roles.get(role)
        if r is None or not r.frameworks.is_active(framework_id):
            return ""
        mine = r.frameworks.weighted_share(framework_id)
        ahead = []
        for other in r.frameworks.iter_active():
            if other == framework_id:
                break
            ahead.append(other)
        role_ahead = []
        for other_role in self._role_sorter.iter_roles():
            if other_role == role:
                break
            role_ahead.append(other_role)
        parts = []
        if ahead:
            parts.append(
                f"its weighted dominant share {mine:.3f} in role {role!r} is above {len(ahead)} other "
                f"framework(s) offered first (lowest: {ahead[0]} at "
                f"{r.frameworks.weighted_share(ahead[0]):.3f})"
            )
        if role_ahead:
            parts.append(
                f"role {role!r} (weighted share {self._role_sorter.weighted_share(role):.3f}) comes after "
                f"{len(role_ahead)} role(s) with lower shares (first: {role_ahead[0]!r} at "
                f"{self._role_sorter.weighted_share(role_ahead[0]):.3f})"
            )
        return "; ".join(parts)

    # -- operator and framework requests --------------------------------------

    def _set_quota(self, role: str, guarantee: Resources, limit: Resources | None, force: bool) -> None:
        self._check_role(role, "quota.role")
        if role == DEFAULT_ROLE:
            raise AllocatorError("quota.role: the default role '*' cannot have quota")
        for what, res in (("guarantee", guarantee), ("limit", limit)):
            if res is None:
                continue
            if res.ranges or res.sets:
                raise AllocatorError(f"quota.{what}: only scalars (cpus, mem, ...) can have quota, got {res}")
            if any(r for r in res.roles()):
                raise AllocatorError(f"quota.{what}: quota is for unreserved quantities, got {res}")
        g = quantities(guarantee)
        lim = None if limit is None else quantities(limit)
        if lim is not None:
            over = [n for n, v in sorted(g.items()) if v > lim.get(n, 0) and n in lim]
            if over:
                raise AllocatorError(
                    f"quota.guarantee: {', '.join(over)} above the limit for role {role!r} "
                    f"(guarantee {guarantee}, limit {limit})"
                )
        if not force and g:
            # All top-level guarantees together must fit in the cluster.
            wanted: dict[str, int] = dict(g)
            for other in self._top_guarantees():
                if not is_within(other, role) and not is_within(role, other):
                    for n, v in self._roles[other].guarantee.items():
                        wanted[n] = wanted.get(n, 0) + v
            above = [n for n, v in sorted(wanted.items()) if v > self._total.get(n, 0)]
            if above:
                detail = ", ".join(
                    f"{n} {format_milli(wanted[n])} > {format_milli(self._total.get(n, 0))}" for n in above
                )
                raise AllocatorError(
                    f"quota.guarantee for role {role!r}: guarantees above the cluster's total ({detail});"
                    " use force to set it anyway"
                )
        r = self._role(role)
        r.guarantee = g
        r.limit = lim
        if g or lim is not None:
            self._quota_roles.add(role)
        else:
            self._quota_roles.discard(role)

    def _reserve(
        self, agent_id: str, resources: Resources, framework_id: str | None, unreserve: bool
    ) -> None:
        what = "unreserve" if unreserve else "reserve"
        agent = self._agents.get(agent_id)
        if agent is None:
            raise AllocatorError(f"{what}: agent {agent_id!r} is not known")
        if not resources:
            raise AllocatorError(f"{what}: no resources given")
        targets = resources.roles()
        if "" in targets:
            raise AllocatorError(
                f"{what}: every resource must name its role, as in cpus(ml):2; got {resources}"
            )
        for role in targets:
            self._check_role(role, f"{what}.role")
            if role == DEFAULT_ROLE:
                raise AllocatorError(f"{what}: resources cannot be reserved for the default role '*'")
        plain = resources.unreserved()
        source, converted = (resources, plain) if unreserve else (plain, resources)
        if framework_id is not None:
            fw = self._frameworks.get(framework_id)
            if fw is None:
                raise AllocatorError(f"{what}: framework {framework_id!r} is not known")
            bad = [t for t in sorted(targets) if not any(is_within(r, t) for r in fw.roles)]
            if bad:
                raise AllocatorError(
                    f"{what}: role(s) {', '.join(repr(t) for t in bad)} unknown to framework {framework_id} "
                    f"(its roles: {', '.join(fw.roles)})"
                )
            by_role = fw.held.get(agent_id, {})
            holder = next(
                (
                    r
                    for r in sorted(by_role)
                    if by_role[r].contains(source) and all(is_within(r, t) for t in targets)
                ),
                None,
            )
            if holder is None:
                held = Resources()
                for res in by_role.values():
                    held = held + res
                raise AllocatorError(
                    f"{what}: {resources} on agent {agent_id}: the framework's offer there does not hold "
                    f"{source} (it holds {held or '(none)'})"
                )
            by_role[holder] = by_role[holder].subtract_clamped(source) + converted
            agent.total = agent.total.subtract_clamped(source) + converted
            agent.allocated = agent.allocated.subtract_clamped(source) + converted
            agent.reserved = _has_reserved(agent.total)
            return
        if not agent.free.contains(source):
            raise AllocatorError(
                f"{what}: {resources} on agent {agent_id}: not there to {what}; "
                f"its unallocated resources are {agent.free or '(none)'}"
            )
        if not unreserve:
            q = quantities(resources)
            for role in sorted(targets):
                for p in ancestors_and_self(role):
                    r = self._roles.get(p)
                    if r is not None and r.limit is not None:
                        over = [
                            n for n, v in q.items() if n in r.limit and r.consumed.get(n, 0) + v > r.limit[n]
                        ]
                        if over:
                            raise AllocatorError(
                                f"reserve: {resources} would put role {p!r} above its quota limit for "
                                f"{', '.join(over)}"
                            )
        self._consume_free_reservations(agent, -1)
        agent.total = agent.total.subtract_clamped(source) + converted
        agent.free = agent.free.subtract_clamped(source) + converted
        agent.reserved = _has_reserved(agent.total)
        if agent.reserved:
            for role in targets:
                self._role(role)
        self._consume_free_reservations(agent, 1)
        self._refresh_candidate(agent_id)


@dataclass
class _Headroom:
    """Unreserved resources still unallocated on offerable agents, and what
    each top-level guaranteed role still needs of them."""

    available: dict[str, int]
    required: dict[str, Quantities]

    def taken(self, offer: Resources) -> None:
        for (n, r), v in offer.scalars.items():
            if not r:
                self.available[n] = self.available.get(n, 0) - v

    def allowed(self, role: str, allocator: Allocator) -> dict[str, int]:
        """How much of each name ``role`` may take without eating into the
        headroom other roles' guarantees need."""
        need: dict[str, int] = {}
        for g, unmet in self.required.items():
            if is_within(role, g):
                continue
            for n, v in unmet.items():
                need[n] = need.get(n, 0) + v
        return {n: max(0, self.available.get(n, 0) - v) for n, v in need.items()}


@dataclass(frozen=True, slots=True)
class RoleInfo:
    role: str
    weight: float
    frameworks: tuple[str, ...]
    share: float
    guarantee: Resources
    limit: Resources | None
    consumed: Resources


def _has_reserved(res: Resources) -> bool:
    return any(r for r in res.roles())


def _resources(q: Mapping[str, int]) -> Resources:
    return Resources(scalars={(n, ""): v for n, v in q.items() if v > 0})
