"""Reserving and unreserving (RESERVE / UNRESERVE, Mesos' dynamic
reservations): which requests are refused and what a granted one converts.

:func:`check_reservation` is pure: it raises :class:`AllocatorError` naming
what is wrong, before anything changes, or returns the :class:`Conversion`
the allocator then applies to its accounting. A framework converts what its
offer on the agent holds (the role it was offered in, or a sub-role, must be
within every target role); an operator converts the agent's unallocated
resources, and may not reserve a role beyond its quota limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.master.allocator.model import (
    DEFAULT_ROLE,
    AgentState,
    AllocatorError,
    FrameworkState,
    RoleState,
    has_reserved,
)
from corral.master.allocator.quota import check_reservation_within_limits
from corral.master.allocator.roles import check_role
from corral.master.allocator.sorter import is_within
from corral.resources import Resources


@dataclass(frozen=True, slots=True)
class Conversion:
    """What a granted request changes on its agent: ``source`` becomes
    ``converted`` (unreserved -> reserved, or back)."""

    source: Resources
    converted: Resources
    #: the roles the resources are (or were) reserved for
    targets: frozenset[str]
    #: a framework's request: the role of its holding on the agent that converts
    holder: str | None = None


def check_reservation(
    agents: Mapping[str, AgentState],
    frameworks: Mapping[str, FrameworkState],
    roles: Mapping[str, RoleState],
    agent_id: str,
    resources: Resources,
    framework_id: str | None,
    unreserve: bool,
) -> Conversion:
    """The conversion a reserve (or unreserve) request makes, or
    :class:`AllocatorError` naming why it is refused."""
    what = "unreserve" if unreserve else "reserve"
    agent = agents.get(agent_id)
    if agent is None:
        raise AllocatorError(f"{what}: agent {agent_id!r} is not known")
    if not resources:
        raise AllocatorError(f"{what}: no resources given")
    targets = resources.roles()
    if "" in targets:
        raise AllocatorError(f"{what}: every resource must name its role, as in cpus(ml):2; got {resources}")
    for role in targets:
        check_role(role, f"{what}.role")
        if role == DEFAULT_ROLE:
            raise AllocatorError(f"{what}: resources cannot be reserved for the default role '*'")
    plain = resources.unreserved()
    source, converted = (resources, plain) if unreserve else (plain, resources)
    if framework_id is not None:
        fw = frameworks.get(framework_id)
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
        return Conversion(source, converted, frozenset(targets), holder)
    if not agent.free.contains(source):
        raise AllocatorError(
            f"{what}: {resources} on agent {agent_id}: not there to {what}; "
            f"its unallocated resources are {agent.free or '(none)'}"
        )
    if not unreserve:
        check_reservation_within_limits(roles, resources, targets)
    return Conversion(source, converted, frozenset(targets))


def convert_total(agent: AgentState, c: Conversion) -> None:
    """Apply ``c`` to the agent's total (the caller moves its free or allocated part)."""
    agent.total = agent.total.subtract_clamped(c.source) + c.converted
    agent.reserved = has_reserved(agent.total)
