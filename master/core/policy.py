"""The operator's allocation policy: weights, quota, draining, reservations,
and what a new leader keeps of them.

Every change goes to the allocator first (a refusal is INVALID_ARGUMENT with
its sentence), then to the registry: role weights and quota under
``roles/<role>``, an agent's drain mark, dynamic reservations and unreachable
mark under ``maintenance/<agent_id>``. A new leader re-applies them before the
agents and frameworks come back (forced: the cluster may not be back yet).
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.errors import CallError
from corral.master.allocator import Allocator, AllocatorError, RoleInfo
from corral.master.allocator import Reason as Why
from corral.master.allocator.events import AgentDraining, QuotaSet, Reserved, RoleWeight, Unreserved
from corral.master.allocator.roles import check_role
from corral.master.core.context import Core
from corral.master.core.domain import AgentMaintenance, RolePolicy
from corral.master.core.records import MAINTENANCE, ROLES, AgentRecord, role_key
from corral.resources import Resources, limit_text


def explain(core: Core, framework_id: str) -> list[Why]:
    """Why a framework is not being offered resources (empty: nothing in its way)."""
    if framework_id not in core.state.frameworks:
        raise CallError("NOT_FOUND", f"framework_id: {framework_id!r} is not known")
    return core.allocator.explain(framework_id, core.now)


def roles(core: Core) -> list[RoleInfo]:
    return core.allocator.roles()


def set_weights(core: Core, weights: list[tuple[str, float]]) -> None:
    """Set role weights, all or none: every one is checked first."""
    if not weights:
        raise CallError("INVALID_ARGUMENT", "weights: give at least one ROLE=WEIGHT")
    trial = Allocator()
    for i, (role, weight) in enumerate(weights):
        try:
            trial.handle(RoleWeight(role, weight))
        except AllocatorError as e:
            raise CallError("INVALID_ARGUMENT", f"weights[{i}]: {e}") from None
    for role, weight in weights:
        core.allocator_call(RoleWeight(role, weight))
        record_role(core, role)
    core.log.info("roles.weights", weights=dict(weights))
    core.allocate_soon()


def set_quota(
    core: Core, role: str, guarantee: Resources, limit: Resources | Mapping[str, int] | None, force: bool
) -> None:
    core.allocator_call(QuotaSet(role, guarantee, limit, force))
    record_role(core, role)
    core.log.info(
        "roles.quota",
        role=role,
        guarantee=guarantee.format(),
        limit=None if limit is None else limit_text(limit),
    )
    core.allocate_soon()


def _check_reservation(core: Core, agent: AgentRecord, resources: Resources, unreserve: bool) -> None:
    what = "unreserve" if unreserve else "reserve"
    if not resources:
        raise CallError("INVALID_ARGUMENT", f"{what}.resources: give at least one, e.g. cpus(ml):2")
    for role in sorted(resources.roles()):
        if role in ("", "*"):
            raise CallError(
                "INVALID_ARGUMENT",
                f"{what}.resources: every resource must name a role other than '*', "
                f"as in cpus(ml):2; got {resources}",
            )
        try:
            check_role(role, f"{what}.resources")
        except AllocatorError as e:
            raise CallError("INVALID_ARGUMENT", str(e)) from None
    if unreserve and not agent.dynamic_reserved.contains(resources):
        raise CallError(
            "FAILED_PRECONDITION",
            f"unreserve.resources: {resources} is not dynamically reserved on agent {agent.agent_id} "
            f"(dynamic reservations: {agent.dynamic_reserved or 'none'}); a static reservation "
            "(the agent's --resources) cannot be unreserved",
        )


def reserve(core: Core, agent_id: str, resources: Resources, unreserve: bool = False) -> None:
    """An operator's dynamic reservation (or its undoing) on one agent.

    Outstanding offers on the agent are rescinded first, as Mesos does, so
    what they held can be reserved. Raises CallError: NOT_FOUND (agent),
    INVALID_ARGUMENT (no resources, a resource without a role or with an
    invalid one), FAILED_PRECONDITION (not free on the agent, or over a
    role's quota limit).
    """
    agent = core.state.agents.get(agent_id)
    if agent is None or agent.gone:
        raise CallError("NOT_FOUND", f"agent_id: {agent_id!r} is not known")
    _check_reservation(core, agent, resources, unreserve)
    for offer_id in sorted(agent.offers):
        core.rescind(offer_id)
    try:
        core.allocator.handle((Unreserved if unreserve else Reserved)(agent_id, resources))
    except AllocatorError as e:
        raise CallError("FAILED_PRECONDITION", str(e)) from None
    agent.dynamic_reserved = (
        agent.dynamic_reserved.subtract_clamped(resources)
        if unreserve
        else agent.dynamic_reserved + resources
    )
    record_maintenance(core, agent)
    event = "resources.unreserved" if unreserve else "resources.reserved"
    core.log.info(event, agent_id=agent_id, resources=resources.format(), by="operator")
    core.allocate_soon()


def drain_agent(core: Core, agent_id: str, draining: bool = True) -> None:
    """Maintenance: a draining agent keeps its tasks and offers nothing."""
    agent = core.state.agents.get(agent_id)
    if agent is None or agent.gone:
        raise CallError("NOT_FOUND", f"agent_id: {agent_id!r} is not known")
    core.allocator_call(AgentDraining(agent_id, draining))
    record_maintenance(core, agent)
    if draining:
        for offer_id in sorted(agent.offers):
            core.rescind(offer_id)
    core.log.info("agent.draining" if draining else "agent.undrained", agent_id=agent_id)
    core.allocate_soon()


def restore_role(core: Core, summary: RolePolicy) -> None:
    """Weights and quota an earlier leader recorded; forced, as they were
    accepted then (the cluster may not have re-registered yet)."""
    try:
        if summary.weight != 1.0:
            core.allocator.handle(RoleWeight(summary.role, summary.weight))
        if summary.guarantee or summary.limit is not None:
            core.allocator.handle(QuotaSet(summary.role, summary.guarantee, summary.limit, force=True))
    except AllocatorError as e:
        core.log.warning("registry.bad_role", role=summary.role, error=str(e))


def record_role(core: Core, role: str) -> None:
    """Persist a role's weight and quota, so a new leader keeps them."""
    for info in core.allocator.roles():
        if info.role != role:
            continue
        if info.weight == 1.0 and not info.guarantee and info.limit is None:
            core.record(ROLES, role_key(role), None)
            return
        limit = None if info.limit_quantities is None else dict(info.limit_quantities)
        core.record(ROLES, role_key(role), RolePolicy(role, info.weight, info.guarantee, limit))


def record_maintenance(core: Core, agent: AgentRecord) -> None:
    """Persist an agent's drain mark, dynamic reservations and unreachable
    mark (none of them: no record)."""
    draining = core.allocator.has_agent(agent.agent_id) and core.allocator.draining(agent.agent_id)
    since = agent.unreachable_since if agent.unreachable and not agent.gone else 0.0
    if not draining and not agent.dynamic_reserved and not since:
        core.record(MAINTENANCE, agent.agent_id, None)
        return
    core.record(MAINTENANCE, agent.agent_id, AgentMaintenance(draining, agent.dynamic_reserved, since))


def restore_maintenance(core: Core, agent: AgentRecord, record: AgentMaintenance) -> None:
    """What an earlier leader recorded about an agent: before its tasks come back,
    so the resources they use are reserved again when they are adopted."""
    if record.unreachable_since > 0:
        # Its frameworks were told (UNREACHABLE or LOST): it returns as an
        # unreachable agent does (master/core/liveness.py), and is gone on time.
        agent.unreachable = True
        agent.unreachable_since = record.unreachable_since
    if record.draining:  # first, and on its own: a refused reservation must not undo it
        core.allocator.handle(AgentDraining(agent.agent_id, True))
    try:
        if record.reservations:
            core.allocator.handle(Reserved(agent.agent_id, record.reservations))
            agent.dynamic_reserved = record.reservations
    except AllocatorError as e:
        core.log.warning("registry.bad_maintenance", agent_id=agent.agent_id, error=str(e))
