"""Why a task is pending, and the smallest change that would make it fit.

Given a task's :class:`~corral.frameworks.placement.Ask` and the agents
(:class:`~corral.frameworks.placement.Candidate`, with what is free now and
their totals), :func:`explain` says which checker rejected which agents and
lists changes, smallest first:

- ``free``: free the shortfall on one agent whose total could hold the task
  and that meets every other check (the task unchanged);
- ``lower``: lower the request to what one such agent has (free now or, when
  the task never fits, its total);
- ``drop``: drop one constraint, or the task's uniqueness, that alone stands
  in the way.

The size of a resource change is the largest fraction of any asked quantity
it touches (freeing 0.334 of 1 cpus: 0.334); dropping a requirement counts as
1, the whole of it. Every change listed is checked: applied to the ask and
the agents, the pipeline finds a place (docs/architecture.md, "Smallest
change"). Quota is the allocator's, outside placement: :func:`quota_change`
says which role limit to raise, for ``corral explain`` (which reads
``ListRoles``) to add.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from corral.frameworks.constraints import Constraint
from corral.frameworks.placement import (
    CHECKERS,
    NO_SIBLINGS,
    Ask,
    Candidate,
    NeverFits,
    Reason,
    Siblings,
    as_totals,
    feasible,
    need,
    never_fits,
)
from corral.resources import RangeSet, Resources, format_milli

#: the checkers a change of resources can satisfy
_RESOURCE_CHECKERS = frozenset({"ports", "resources"})
_KIND_ORDER = {"free": 0, "lower": 1, "drop": 2, "quota": 3}


@dataclass(frozen=True)
class Change:
    """One change that would let the task be placed."""

    kind: str
    agent_id: str = ""
    hostname: str = ""
    #: free: what to free on the agent; lower: the new request
    resources: Resources = field(default_factory=Resources)
    #: free: ports to free; lower: the new number of ports
    ports: int = 0
    #: drop: the constraint to drop (None with ``kind == "drop"``: uniqueness)
    constraint: Constraint | None = None
    cost: float = 0.0
    #: quota: the role whose limit to raise (``resources``: the limit it needs)
    role: str = ""

    def __str__(self) -> str:
        where = f"agent {self.hostname or self.agent_id}"
        if self.kind == "free":
            parts = _quantities(self.resources) + ([f"{self.ports} ports"] if self.ports else [])
            return f"free {', '.join(parts)} on {where}"
        if self.kind == "lower":
            parts = [f"{n} {v}" for v, n in (p.split(" ", 1) for p in _quantities(self.resources))]
            if self.ports:
                parts.append(f"ports {self.ports}")
            return f"lower the request to {', '.join(parts)} (what {where} has)"
        if self.kind == "quota":
            parts = [f"{n} {v}" for v, n in (p.split(" ", 1) for p in _quantities(self.resources))]
            return f"raise the quota limit of role {self.role} to {', '.join(parts)}"
        if self.constraint is not None:
            return f"drop constraint {self.constraint}"
        return "drop the one-per-host (unique) requirement"

    def apply(self, ask: Ask, agents: Sequence[Candidate]) -> tuple[Ask, list[Candidate]]:
        """The ask and the agents as they would be after this change (a quota
        change leaves both: quota is the allocator's, outside placement)."""
        if self.kind == "quota":
            return ask, list(agents)
        if self.kind == "lower":
            return replace(ask, resources=self.resources, ports=self.ports), list(agents)
        if self.kind == "drop":
            if self.constraint is None:
                return replace(ask, unique_host=False, unique_attributes=()), list(agents)
            kept = tuple(c for c in ask.constraints if c != self.constraint)
            return replace(ask, constraints=kept), list(agents)
        return ask, [
            replace(a, resources=a.resources + self.resources + _ports_from(a, self.ports))
            if a.agent_id == self.agent_id
            else a
            for a in agents
        ]


def _quantities(r: Resources) -> list[str]:
    return [f"{format_milli(v)} {name}" for (name, _), v in sorted(r.scalars.items())]


def _ports_from(a: Candidate, count: int) -> Resources:
    """``count`` ports the agent has in total but are not free now."""
    if not count:
        return Resources()
    busy = a.capacity.range("ports") - a.resources.range("ports")
    return Resources.of(ranges={"ports": busy.first(min(count, busy.size()))}) if busy.size() else Resources()


def placeable(ask: Ask, agents: Sequence[Candidate], siblings: Siblings = NO_SIBLINGS) -> bool:
    """Whether some agent passes every checker (and has the ports to pick)."""
    return any(feasible(ask, a, siblings) is None and need(ask, a) is not None for a in agents)


def changes(ask: Ask, agents: Sequence[Candidate], siblings: Siblings = NO_SIBLINGS) -> list[Change]:
    """The changes that would make ``ask`` placeable on ``agents``, smallest
    first; empty when it is placeable already (or nothing listed would do)."""
    if placeable(ask, agents, siblings):
        return []
    found: list[Change] = []
    for a in agents:
        reason = feasible(ask, a, siblings)
        if reason is None or reason.checker not in _RESOURCE_CHECKERS:
            continue
        found += [c for c in (_free(ask, a), _lower(ask, a)) if c is not None]
    for con in ask.constraints:
        found.append(Change("drop", constraint=con, cost=1.0))
    if ask.unique_host or ask.unique_attributes:
        found.append(Change("drop", cost=1.0))
    verified = [c for c in found if placeable(*c.apply(ask, agents), siblings)]
    verified.sort(key=lambda c: (c.cost, _KIND_ORDER[c.kind], c.hostname, c.agent_id))
    return verified


def _free(ask: Ask, a: Candidate) -> Change | None:
    """Free the shortfall on ``a``, if its total could hold the task at all."""
    if a.total is None or not a.total.contains(ask.resources):
        return None
    short: dict[tuple[str, str], int] = {}
    cost = 0.0
    for key, asked in ask.resources.scalars.items():
        have = a.resources.scalars.get(key, 0)
        if have < asked:
            short[key] = asked - have
            cost = max(cost, (asked - have) / asked)
    ranges = {}
    for key, rs in ask.resources.ranges.items():
        missing = rs - a.resources.ranges.get(key, RangeSet())
        if missing:
            ranges[key] = missing
            cost = max(cost, missing.size() / rs.size())
    ports = max(0, ask.ports - a.resources.range("ports").size())
    if ports:
        if a.total.range("ports").size() < ask.ports:
            return None
        cost = max(cost, ports / ask.ports)
    return Change("free", a.agent_id, a.hostname, Resources(short, ranges), ports, cost=cost)


def _lower(ask: Ask, a: Candidate) -> Change | None:
    """Lower the request to what ``a`` has; None if a quantity would be 0."""
    scalars: dict[tuple[str, str], int] = {}
    cost = 0.0
    for key, asked in ask.resources.scalars.items():
        have = a.resources.scalars.get(key, 0)
        if have <= 0:
            return None
        scalars[key] = min(asked, have)
        cost = max(cost, (asked - scalars[key]) / asked)
    for key, rs in ask.resources.ranges.items():
        if not a.resources.ranges.get(key, RangeSet()).contains(rs):
            return None  # named ports: lowering cannot pick others
    ports = ask.ports
    if ask.ports:
        ports = min(ask.ports, a.resources.range("ports").size())
        if ports == 0:
            return None
        cost = max(cost, (ask.ports - ports) / ask.ports)
    if cost == 0.0:
        return None
    lowered = Resources(scalars, dict(ask.resources.ranges), dict(ask.resources.sets))
    return Change("lower", a.agent_id, a.hostname, lowered, ports, cost=cost)


def quota_change(asked: Resources, role: str, limit: Mapping[str, int], consumed: Resources) -> Change | None:
    """Raise ``role``'s quota limit when one more task asking ``asked`` would
    take what the role consumes past it (the allocator then offers the role
    nothing more of that resource). Limits are milli-units by name; a zero
    limit is a limit."""
    needed: dict[tuple[str, str], int] = {}
    cost = 0.0
    for (name, _), v in asked.scalars.items():
        if name in limit and consumed.scalar(name) + v > limit[name]:
            needed[(name, "")] = consumed.scalar(name) + v
            cost = max(cost, (needed[(name, "")] - limit[name]) / v)
    if not needed:
        return None
    return Change("quota", resources=Resources(needed), cost=cost, role=role)


# -- per task --------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """Why one task waits: the verdict against totals, who rejected what now,
    and the changes that would place it (smallest first)."""

    never: NeverFits | None
    #: checker name -> the reasons it gave, one per agent
    rejected: dict[str, tuple[Reason, ...]]
    changes: tuple[Change, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "never_fits": str(self.never) if self.never is not None else "",
            "rejected": {
                name: {"count": len(rs), "agents": [str(r) for r in rs[:20]]}
                for name, rs in sorted(self.rejected.items())
            },
            "smallest_change": str(self.changes[0]) if self.changes else "",
            "changes": [str(c) for c in self.changes[:5]],
        }


def explain(ask: Ask, agents: Sequence[Candidate], siblings: Siblings = NO_SIBLINGS) -> Explanation:
    """Against the agents as they are now (``resources`` free, ``total``):
    never-fits by totals; else each checker's rejections and the changes."""
    never = never_fits(ask, agents)
    view = as_totals(agents) if never is not None else list(agents)
    rejected: dict[str, list[Reason]] = {}
    for a in view:
        reason = feasible(ask, a, NO_SIBLINGS if never is not None else siblings, CHECKERS)
        if reason is not None:
            rejected.setdefault(reason.checker, []).append(reason)
    found = changes(ask, view, NO_SIBLINGS if never is not None else siblings)
    return Explanation(never, {k: tuple(v) for k, v in rejected.items()}, tuple(found))


def pending_view(
    ask: Ask,
    agents: Sequence[Candidate],
    siblings: Siblings,
    offers_refused: Mapping[str, Reason],
    **ids: Any,
) -> dict[str, Any]:
    """One pending task (or group of alike tasks) as JSON for the frameworks'
    ``/v1/pending``: ``ids`` (job_id, group, tasks; or service) first."""
    refused: dict[str, list[str]] = {}
    for r in offers_refused.values():
        refused.setdefault(r.checker, []).append(str(r))
    view: dict[str, Any] = {
        **ids,
        "asked": ask.resources.format(),
        "ports": ask.ports,
        "constraints": [str(c) for c in ask.constraints],
        "unique": ask.unique_host or bool(ask.unique_attributes),
        "agents_known": len(agents),
        "offers_refused": {k: {"count": len(v), "agents": v[:20]} for k, v in sorted(refused.items())},
    }
    if agents:
        view.update(explain(ask, agents, siblings).to_json())
    return view
