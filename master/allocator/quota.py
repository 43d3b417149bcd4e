"""Quota (Mesos 1.9 semantics): what an agent may offer a role under the
limits and guarantees of the role's path, the headroom unmet guarantees keep
free, and the checks of a quota request. Pure: functions over the allocator's
role book (``roles``: role -> :class:`RoleState`).

A role's consumption (``RoleState.consumed``) is what its subtree is
allocated, reserved or not, plus its subtree's unallocated reservations; the
allocator keeps it up to date. A limit cuts every offer; a guarantee is
served first (stage 1, cut to what it still misses), and in stage 2 offers
leave enough unreserved resources for the guarantees not yet met.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from corral.master.allocator.model import AgentState, AllocatorError, FrameworkState, RoleState
from corral.master.allocator.roles import check_role
from corral.master.allocator.sorter import Quantities, ancestors_and_self, is_within, quantities
from corral.resources import Resources, format_milli


@dataclass
class Headroom:
    """Unreserved resources still unallocated on offerable agents, and what
    each top-level guaranteed role still needs of them."""

    available: dict[str, int]
    required: dict[str, Quantities]

    def taken(self, offer: Resources) -> None:
        for (n, r), v in offer.scalars.items():
            if not r:
                self.available[n] = self.available.get(n, 0) - v

    def allowed(self, role: str) -> dict[str, int]:
        """How much of each name ``role`` may take without eating into the
        headroom other roles' guarantees need."""
        need: dict[str, int] = {}
        for g, unmet in self.required.items():
            if is_within(role, g):
                continue
            for n, v in unmet.items():
                need[n] = need.get(n, 0) + v
        return {n: max(0, self.available.get(n, 0) - v) for n, v in need.items()}


def offer_for(
    roles: Mapping[str, RoleState], agent: AgentState, role: str, stage: int, headroom: Headroom | None
) -> Resources:
    """What ``agent`` can offer ``role`` now: its reservations for the role
    or an ancestor, and unreserved resources cut by quota (limits of the
    role and its ancestors; in stage 1 the guarantee still missing; the
    headroom other roles' guarantees need)."""
    free = agent.free
    path = ancestors_and_self(role)
    # Per limited role on the path: (depth, what is left under its limit).
    budgets: list[tuple[int, dict[str, int]]] = []
    for depth, p in enumerate(path):
        limited = roles.get(p)
        if limited is not None and limited.limit is not None:
            used = limited.consumed
            budgets.append((depth, {n: lim - used.get(n, 0) for n, lim in limited.limit.items()}))
    unreserved_cap: dict[str, int] | None = None
    if headroom is not None:
        unreserved_cap = headroom.allowed(role)
        if stage == 1:
            for n, need in unmet(roles, role).items():
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


def unmet(roles: Mapping[str, RoleState], role: str) -> Quantities:
    """What the nearest guarantee on ``role``'s path still misses."""
    for p in reversed(ancestors_and_self(role)):
        r = roles.get(p)
        if r is not None and r.guarantee:
            return {n: g - r.consumed.get(n, 0) for n, g in r.guarantee.items() if g > r.consumed.get(n, 0)}
    return {}


def any_unmet(roles: Mapping[str, RoleState], quota_roles: Iterable[str]) -> bool:
    """Whether some role (nested ones too) is still below its guarantee."""
    for role in quota_roles:
        r = roles[role]
        if any(g > r.consumed.get(n, 0) for n, g in r.guarantee.items()):
            return True
    return False


def top_guarantees(roles: Mapping[str, RoleState], quota_roles: Iterable[str]) -> list[str]:
    """The guaranteed roles with no guaranteed ancestor, by name."""
    out = []
    for role in sorted(quota_roles):
        if not roles[role].guarantee:
            continue
        if any(roles[p].guarantee for p in ancestors_and_self(role)[:-1] if p in roles):
            continue
        out.append(role)
    return out


def required(roles: Mapping[str, RoleState], quota_roles: Iterable[str]) -> dict[str, Quantities]:
    """Per top guaranteed role, what its guarantee still misses."""
    out: dict[str, Quantities] = {}
    for role in top_guarantees(roles, quota_roles):
        missing = unmet(roles, role)
        if missing:
            out[role] = missing
    return out


def make_headroom(
    roles: Mapping[str, RoleState], quota_roles: Set[str], agents: Iterable[AgentState]
) -> Headroom | None:
    """The headroom for a cycle, or None when no role has a guarantee."""
    if not any(roles[r].guarantee for r in quota_roles):
        return None
    available: dict[str, int] = {}
    for agent in agents:
        if agent.offerable():
            for (n, r), v in agent.free.scalars.items():
                if not r:
                    available[n] = available.get(n, 0) + v
    return Headroom(available, required(roles, quota_roles))


def at_limit(roles: Mapping[str, RoleState], role: str) -> str:
    """Why ``role`` gets nothing more because of a limit on its path (a
    sentence naming the resource and the role), or ``""``."""
    for p in ancestors_and_self(role):
        r = roles.get(p)
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


def check_quota(
    roles: Mapping[str, RoleState],
    quota_roles: Set[str],
    total: Mapping[str, int],
    role: str,
    guarantee: Resources,
    limit: Resources | Mapping[str, int] | None,
    force: bool,
) -> tuple[Quantities, Quantities | None]:
    """A quota request's guarantee and limit as quantities; raises
    :class:`AllocatorError` naming what is wrong (unforced guarantees must
    fit in the cluster's ``total`` together)."""
    # The default role '*' may have quota too, as in Mesos: its consumption
    # is what frameworks in '*' are allocated (it has no reservations).
    check_role(role, "quota.role")
    for what, res in (("guarantee", guarantee), ("limit", limit)):
        if not isinstance(res, Resources):
            continue
        if res.ranges or res.sets:
            raise AllocatorError(f"quota.{what}: only scalars (cpus, mem, ...) can have quota, got {res}")
        if any(r for r in res.roles()):
            raise AllocatorError(f"quota.{what}: quota is for unreserved quantities, got {res}")
    g = quantities(guarantee)
    lim = limit_quantities(limit)
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
        for other in top_guarantees(roles, quota_roles):
            if not is_within(other, role) and not is_within(role, other):
                for n, v in roles[other].guarantee.items():
                    wanted[n] = wanted.get(n, 0) + v
        above = [n for n, v in sorted(wanted.items()) if v > total.get(n, 0)]
        if above:
            detail = ", ".join(
                f"{n} {format_milli(wanted[n])} > {format_milli(total.get(n, 0))}" for n in above
            )
            raise AllocatorError(
                f"quota.guarantee for role {role!r}: guarantees above the cluster's total ({detail});"
                " use force to set it anyway"
            )
    return g, lim


def held_in(frameworks: Iterable[FrameworkState], role: str) -> Quantities:
    """What ``frameworks`` hold in ``role`` (not its sub-roles), by name."""
    held: Quantities = {}
    for fw in frameworks:
        for by_role in fw.held.values():
            res = by_role.get(role)
            if res is not None:
                for n, v in quantities(res).items():
                    held[n] = held.get(n, 0) + v
    return held


def limit_quantities(limit: Resources | Mapping[str, int] | None) -> Quantities | None:
    """A quota limit as quantities. A mapping (name -> milli-units) keeps
    zeros, which :class:`Resources` cannot hold: ``cpus:0`` is a limit of no
    cpus at all, not the absence of a cpus limit."""
    if limit is None:
        return None
    if isinstance(limit, Resources):
        return quantities(limit)
    out: Quantities = {}
    for name, v in limit.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise AllocatorError(f"quota.limit: {name} must be a non-negative quantity, got {v!r}")
        out[name] = v
    return out


def check_reservation_within_limits(
    roles: Mapping[str, RoleState], resources: Resources, targets: Iterable[str]
) -> None:
    """Refuse reserving ``resources`` if it would put a role on a target's
    path above its limit (a reservation counts toward consumption)."""
    q = quantities(resources)
    for role in sorted(targets):
        for p in ancestors_and_self(role):
            r = roles.get(p)
            if r is not None and r.limit is not None:
                over = [n for n, v in q.items() if n in r.limit and r.consumed.get(n, 0) + v > r.limit[n]]
                if over:
                    raise AllocatorError(
                        f"reserve: {resources} would put role {p!r} above its quota limit for "
                        f"{', '.join(over)}"
                    )
