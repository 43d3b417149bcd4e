"""ACCEPT: offers turned into launched tasks and reservations.

Checked in this order, each failure answered with a message naming the field:
the offers (valid, this framework's, one agent), the operations (supported),
RESERVE/UNRESERVE against what the offers hold, then each task
(validation.py). Bad offers drop every task (TASK_DROPPED); a bad task gets
TASK_ERROR and the others still launch; what the tasks do not use goes back
to the allocator with the framework's refusal filter.
"""

from __future__ import annotations

import dataclasses
import os

from corral.errors import CallError
from corral.master.allocator import AllocatorError
from corral.master.allocator.events import Reserved, ResourcesRecovered, Unreserved
from corral.master.core import messages as msg
from corral.master.core.context import Core
from corral.master.core.domain import (
    LaunchTask,
    Operation,
    OperationType,
    Reason,
    Source,
    TaskInfo,
    TaskState,
    TaskStatus,
)
from corral.master.core.fit import task_fits
from corral.master.core.policy import record_maintenance
from corral.master.core.records import AgentRecord, FrameworkRecord, TaskRecord
from corral.resources import Resources

_LAUNCHES = (OperationType.LAUNCH, OperationType.LAUNCH_GROUP)
_RESERVATIONS = (OperationType.RESERVE, OperationType.UNRESERVE)
_SUPPORTED_OPERATIONS = (*_LAUNCHES, *_RESERVATIONS)


def accept(
    core: Core,
    framework_id: str,
    offer_ids: list[str],
    operations: list[Operation],
    refuse_s: float | None,
) -> None:
    """Carry out LAUNCH, RESERVE and UNRESERVE operations on offers. Bad
    offers drop every task (TASK_DROPPED); a bad task gets TASK_ERROR and
    the rest still launch."""
    fw = core.framework(framework_id)
    tasks = [t for op in operations if op.type in _LAUNCHES for t in op.tasks]
    unsupported = [
        f"accept.operations[{i}].type: {op.type_name} is not supported yet"
        for i, op in enumerate(operations)
        if op.type not in _SUPPORTED_OPERATIONS
    ]
    problem = _check_offers(core, fw, offer_ids) or (unsupported[0] if unsupported else None)
    conversions: list[tuple[Resources, bool]] = []
    if problem is None:
        problem, conversions = _check_reservations(core, fw, offer_ids, operations)
    if problem is not None:
        _refuse(core, fw, offer_ids, [t.info for t in tasks], problem)
        return
    offers = [o for o in (core.remove_offer(i) for i in offer_ids) if o is not None]
    agent = core.state.agents[offers[0].agent_id]
    available = Resources()
    for offer in offers:
        available = available + offer.resources
    available = _convert(core, fw, agent, available, conversions)
    available = _launch(core, fw, agent, offers[0].role, tasks, available)
    if available:
        core.allocator.handle(
            ResourcesRecovered(
                framework_id, agent.agent_id, available, refuse_s or 0.0, core.now, offers[0].role
            )
        )
        core.allocate_soon()


def _refuse(
    core: Core, fw: FrameworkRecord, offer_ids: list[str], tasks: list[TaskInfo], problem: str
) -> None:
    """A bad ACCEPT: valid offers among them go back; the tasks are dropped, never launched."""
    for offer_id in offer_ids:
        offer = core.state.offers.get(offer_id)
        if offer is not None and offer.framework_id == fw.framework_id:
            core.remove_offer(offer_id)
            core.allocator.handle(
                ResourcesRecovered(fw.framework_id, offer.agent_id, offer.resources, role=offer.role)
            )
    core.allocate_soon()
    reason = Reason.REASON_INVALID_OFFERS
    core.send_updates(
        fw, [core.status_for(fw.framework_id, t, TaskState.TASK_DROPPED, reason, problem) for t in tasks]
    )
    if not tasks:
        raise CallError("INVALID_ARGUMENT", problem)


def _convert(
    core: Core,
    fw: FrameworkRecord,
    agent: AgentRecord,
    available: Resources,
    conversions: list[tuple[Resources, bool]],
) -> Resources:
    """Apply checked RESERVE/UNRESERVE operations; returns what the offers hold after them."""
    for res, unreserve in conversions:
        # Checked against the offers, which the allocator still counts as
        # this framework's: RESERVE/UNRESERVE cannot fail here.
        event = Unreserved if unreserve else Reserved
        try:
            core.allocator.handle(event(agent.agent_id, res, fw.framework_id))
        except AllocatorError as e:
            # Offers of two roles in one ACCEPT: the combined offer held
            # it, no single role's part does. Skip it, launch the rest.
            core.to_framework(fw, msg.Error("INVALID_ARGUMENT", f"ACCEPT: {e}"))
            continue
        source, converted = (res, res.unreserved()) if unreserve else (res.unreserved(), res)
        available = available.subtract_clamped(source) + converted
        agent.dynamic_reserved = (
            agent.dynamic_reserved.subtract_clamped(res) if unreserve else agent.dynamic_reserved + res
        )
        record_maintenance(core, agent)
        core.log.info(
            "resources.unreserved" if unreserve else "resources.reserved",
            framework_id=fw.framework_id,
            agent_id=agent.agent_id,
            resources=res.format(),
        )
    return available


def _launch(
    core: Core,
    fw: FrameworkRecord,
    agent: AgentRecord,
    role: str,
    tasks: list[LaunchTask],
    available: Resources,
) -> Resources:
    """Validate each task against what is left, record and send the good
    ones to the agent; returns what they do not use."""
    now = core.now
    launched: list[TaskInfo] = []
    errors: list[TaskStatus] = []
    seen: set[str] = set()
    for launch in tasks:
        task, where = launch.info, launch.where
        problems, wanted = task_fits(
            task.task_id, launch.check, task.resources, where, available, {*fw.tasks, *seen}
        )
        denied = _unauthorized(core, fw, task, where)
        if denied is not None:
            errors.append(
                core.status_for(
                    fw.framework_id, task, TaskState.TASK_ERROR, Reason.REASON_TASK_UNAUTHORIZED, denied
                )
            )
            continue
        if (fw.framework_id, task.task_id) in agent.lost_tasks:
            problems.append(
                f"{where}.task_id: {task.task_id!r} was reported lost on this agent and is "
                "still being killed there; launch it elsewhere or later"
            )
        if problems:
            reason = Reason.REASON_TASK_INVALID
            errors.append(
                core.status_for(fw.framework_id, task, TaskState.TASK_ERROR, reason, "; ".join(problems))
            )
            continue
        seen.add(task.task_id)
        available = available - wanted
        stored = dataclasses.replace(task, agent_id=agent.agent_id)
        status = TaskStatus(
            task_id=task.task_id,
            state=TaskState.TASK_STAGING,
            source=Source.SOURCE_MASTER,
            agent_id=agent.agent_id,
            framework_id=fw.framework_id,
            timestamp=now,
        )
        fw.tasks[task.task_id] = TaskRecord(
            task.task_id, fw.framework_id, agent.agent_id, stored, wanted, status, now, role=role
        )
        agent.tasks.add((fw.framework_id, task.task_id))
        launched.append(stored)
    core.counters.tasks_launched += len(launched)
    if launched and agent.stream is not None:
        core.to_agent(agent, msg.RunTasks(fw.info, tuple(launched)))
        core.log.debug(
            "tasks.launched", framework_id=fw.framework_id, agent_id=agent.agent_id, count=len(launched)
        )
    elif launched:
        # The agent went away between offer and accept: the offer would
        # have been rescinded, so this is a race; report it honestly.
        for stored in launched:
            core.master_update(
                fw.tasks[stored.task_id],
                TaskState.TASK_DROPPED,
                Reason.REASON_AGENT_DISCONNECTED,
                f"agent {agent.agent_id} is disconnected",
            )
    if errors:
        core.send_updates(fw, errors)
    return available


def _unauthorized(core: Core, fw: FrameworkRecord, task: TaskInfo, where: str) -> str | None:
    """Whether the framework's principal may run this task as its user
    (Mesos' run_tasks ACL; an unset uid runs as root, so it is asked as
    uid 0), without a seccomp filter, and with the host devices it names."""
    access = task.access
    uid = access.uid
    # A task that asks for a user namespace runs as uid N *inside* it, an
    # unprivileged host uid: asked as "uid:N@userns", so that a policy may
    # allow namespaced root without allowing host root ("uid:*" allows both).
    # Relying on an agent's default, it is asked as the host uid it may be.
    userns = "@userns" if access.user_namespace else ""
    questions = [("run_task", f"uid:{uid}{userns}", f"{where}.container.uid")]
    # The group is asked too when it is not the user's own (the agent runs
    # an unset gid as the uid): uid 65534 with gid 0 is root's group.
    if access.gid != uid:
        questions.append(("run_task", f"gid:{access.gid}{userns}", f"{where}.container.gid"))
    if access.seccomp_profile == "unconfined":
        questions.append(("run_unconfined", "seccomp:unconfined", f"{where}.container.seccomp_profile"))
    questions += [
        ("use_device", f"device:{d}", f"{where}.container.devices[{i}]") for i, d in enumerate(access.devices)
    ]
    # A host directory bound in: the agent allows the paths at all
    # (--allowed-host-paths); the policy says which tenant may bind which.
    questions += [
        ("use_host_path", f"path:{os.path.normpath(path)}", f"{where}.container.volumes[{i}].host_path")
        for i, path in access.host_paths
    ]
    for action, obj, field_path in questions:
        decision = core.authorizer.decide(fw.info.principal, action, obj)
        if not decision.allowed:
            core.audit_denied(decision, "ACCEPT", framework_id=fw.framework_id, task_id=task.task_id)
            return f"{field_path}: {decision.message}"
    return None


def _check_reservations(
    core: Core, fw: FrameworkRecord, offer_ids: list[str], operations: list[Operation]
) -> tuple[str | None, list[tuple[Resources, bool]]]:
    """RESERVE and UNRESERVE operations, checked in order against the
    offers: ``(problem, [(resources, unreserve)])``. A framework reserves
    for the role its offer was made to, and only what the offer holds."""
    conversions: list[tuple[Resources, bool]] = []
    ops = [op for op in operations if op.type in _RESERVATIONS]
    if not ops:
        return None, conversions
    available = Resources()
    roles = set()
    for offer_id in offer_ids:
        offer = core.state.offers[offer_id]
        available = available + offer.resources
        roles.add(offer.role)
    agent = core.state.agents[core.state.offers[offer_ids[0]].agent_id]
    dynamic = agent.dynamic_reserved
    for op in ops:
        unreserve = op.type == OperationType.UNRESERVE
        where = op.where
        if op.problem is not None:  # its resources did not parse (wire.py)
            return op.problem, []
        res = op.resources
        if not res:
            return f"{where}: must name at least one resource", []
        targets = res.roles()
        if "" in targets:
            return f"{where}: every resource must name the role to reserve for, got {res}", []
        bad = sorted(targets - roles)
        if bad:
            return (
                f"{where}: role(s) {', '.join(repr(r) for r in bad)} are not the role of the offer "
                f"({', '.join(sorted(roles))}); a framework reserves for the role it was offered in",
                [],
            )
        action = "unreserve_resources" if unreserve else "reserve_resources"
        decision = core.authorizer.decide_all(
            fw.info.principal, action, [f"role:{r}" for r in sorted(targets)]
        )
        if not decision.allowed:
            core.audit_denied(decision, "ACCEPT")
            return f"{where}: {decision.message}", []
        needed = res if unreserve else res.unreserved()
        if not available.contains(needed):
            return f"{where}: {needed} is not in the offer (it has {available})", []
        if unreserve:
            if not dynamic.contains(res):
                return (
                    f"{where}: {res} is not dynamically reserved there; a static "
                    "reservation (the agent's --resources) cannot be unreserved",
                    [],
                )
            dynamic = dynamic.subtract_clamped(res)
        converted = res.unreserved() if unreserve else res
        available = available.subtract_clamped(needed) + converted
        conversions.append((res, unreserve))
    return None, conversions


def _check_offers(core: Core, fw: FrameworkRecord, offer_ids: list[str]) -> str | None:
    if not offer_ids:
        return "accept.offer_ids: must name at least one offer"
    if len(set(offer_ids)) != len(offer_ids):
        return "accept.offer_ids: an offer is given more than once"
    agents = set()
    for i, offer_id in enumerate(offer_ids):
        offer = core.state.offers.get(offer_id)
        if offer is None:
            return (
                f"accept.offer_ids[{i}]: offer {offer_id!r} is not valid "
                "(unknown, already used, rescinded or expired)"
            )
        if offer.framework_id != fw.framework_id:
            return f"accept.offer_ids[{i}]: offer {offer_id!r} belongs to another framework"
        agents.add(offer.agent_id)
    if len(agents) > 1:
        return "accept.offer_ids: offers must all be on the same agent"
    return None
