"""Why a framework is not being offered resources (operator ``Explain``,
``corral explain``): structured :class:`Reason` values, read from the
allocator's book without changing it. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from corral.master.allocator.model import AgentState, FrameworkState, Reason, RoleState
from corral.master.allocator.quota import at_limit, offer_for
from corral.master.allocator.sorter import RoleSorter
from corral.resources import Resources


def explain(
    framework_id: str,
    fw: FrameworkState | None,
    now: float,
    agents: Mapping[str, AgentState],
    candidates: Iterable[str],
    roles: Mapping[str, RoleState],
    role_sorter: RoleSorter,
    allocatable: Callable[[Resources], bool],
    next_cycle: int,
) -> list[Reason]:
    """Why ``framework_id`` (``fw``, None if unknown) is not being offered
    resources at ``now``, before cycle number ``next_cycle``; empty when
    nothing stands in its way."""
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
    for role in fw.roles:
        live = [
            f
            for agent_id, by_role in fw.filters.items()
            if agent_id in agents
            for f in by_role.get(role, ())
            if f.active(now, next_cycle)
        ]
        if not live:
            continue
        n = sum(
            1
            for agent_id, by_role in fw.filters.items()
            if agent_id in agents and any(f.active(now, next_cycle) for f in by_role.get(role, ()))
        )
        until = max(f.until for f in live)
        when = f"until t+{until - now:.1f}s" if until > now else "until the next allocation cycle"
        reasons.append(
            Reason(
                "filtered",
                f"filtered on {n} agent(s) in role {role!r} {when} after declines"
                " (REVIVE clears the filters)",
                role=role,
                agents=n,
                until=until,
            )
        )
    wanted = [r for r in fw.roles if r not in fw.suppressed]
    for role in wanted:
        at = at_limit(roles, role)
        if at:
            reasons.append(Reason("quota_limit", at, role=role))
    for role in wanted:
        ahead = behind(framework_id, role, roles, role_sorter)
        if ahead:
            reasons.append(Reason("share", ahead, role=role))
    fits = 0
    for agent_id in candidates:
        agent = agents[agent_id]
        if any(allocatable(offer_for(roles, agent, role, 2, None)) for role in wanted):
            fits += 1
    draining = sum(1 for a in agents.values() if a.draining)
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


def behind(framework_id: str, role: str, roles: Mapping[str, RoleState], role_sorter: RoleSorter) -> str:
    """Who is offered before ``framework_id`` in ``role``, if anyone."""
    r = roles.get(role)
    if r is None or not r.frameworks.is_active(framework_id):
        return ""
    mine = r.frameworks.weighted_share(framework_id)
    ahead = []
    for other in r.frameworks.iter_active():
        if other == framework_id:
            break
        ahead.append(other)
    role_ahead = []
    for other_role in role_sorter.iter_roles():
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
            f"role {role!r} (weighted share {role_sorter.weighted_share(role):.3f}) comes after "
            f"{len(role_ahead)} role(s) with lower shares (first: {role_ahead[0]!r} at "
            f"{role_sorter.weighted_share(role_ahead[0]):.3f})"
        )
    return "; ".join(parts)
