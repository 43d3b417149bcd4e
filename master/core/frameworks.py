"""Frameworks: subscribe, re-subscribe, disconnect, fail over, tear down.

A framework id belongs to the principal that registered it. One stream per
framework, the newest: a re-subscription on another connection ends the old
one. A framework that disconnects keeps its tasks for ``failover_timeout_s``,
then is torn down: agents get ``ShutdownFramework``; the master acknowledges
their final updates itself and forgets the framework once none is left.
"""

from __future__ import annotations

import dataclasses

from corral.errors import CallError
from corral.master.allocator.events import (
    FrameworkActivated,
    FrameworkAdded,
    FrameworkDeactivated,
    FrameworkRemoved,
    Revived,
    Suppressed,
)
from corral.master.core import messages as msg
from corral.master.core.context import Core
from corral.master.core.domain import FrameworkInfo, TaskState
from corral.master.core.records import FRAMEWORKS, FrameworkRecord, StreamId


def subscribe(core: Core, info: FrameworkInfo, stream: StreamId, principal: str) -> FrameworkRecord:
    """Register a new framework or re-subscribe a known one by id.

    A framework id belongs to the principal that registered it: another
    principal's re-subscription is refused and the owner keeps its stream.
    """
    fw = core.state.frameworks.get(info.id) if info.id else None
    if fw is not None and fw.info.principal and fw.info.principal != principal:
        raise CallError(
            "PERMISSION_DENIED",
            f"framework_info.id: framework {info.id} belongs to principal {fw.info.principal}, "
            f"not {principal}",
        )
    if info.id and fw is None and any(f.framework_id == info.id for f in core.state.completed_frameworks):
        raise CallError(
            "NOT_FOUND", f"framework_info.id: framework {info.id!r} was torn down; subscribe without an id"
        )
    if fw is not None and fw.tearing_down:
        raise CallError("FAILED_PRECONDITION", f"framework {info.id} is being torn down")
    if fw is None:
        fw = _register(core, info, stream, principal)
    else:
        _resubscribe(core, fw, info, stream, principal)
    subscribed = msg.Subscribed(fw.framework_id, core.config.framework_heartbeat_interval_s, core.info)
    core.to_framework(fw, subscribed)
    # Updates it missed while away: send them again now rather than waiting
    # for the agents' retry timers.
    pending = [t.status for t in fw.tasks.values() if t.unacked_uuid]
    if pending:
        core.send_updates(fw, pending)
    core.allocate_soon()
    return fw


def _register(core: Core, info: FrameworkInfo, stream: StreamId, principal: str) -> FrameworkRecord:
    # An unknown id is accepted: after a restart of a standalone master
    # its frameworks come back before their agents re-register.
    limit = core.config.max_frameworks_per_principal
    if principal and sum(1 for f in core.state.frameworks.values() if f.info.principal == principal) >= limit:
        raise CallError(
            "RESOURCE_EXHAUSTED",
            f"principal {principal} already has {limit} frameworks registered (the master's "
            "--max-frameworks-per-principal); tear one down or re-subscribe with its id",
        )
    fw_id = info.id or core.new_id("fw-")
    stored = dataclasses.replace(info, id=fw_id, principal=principal, roles=info.roles or ("*",))
    core.allocator_call(FrameworkAdded(fw_id, tuple(stored.roles)))
    fw = FrameworkRecord(fw_id, stored, core.now, stream)
    core.state.frameworks[fw_id] = fw
    core.record(FRAMEWORKS, fw_id, stored)
    core.log.info("framework.subscribed", framework_id=fw_id, name=info.name, roles=list(stored.roles))
    return fw


def _resubscribe(
    core: Core, fw: FrameworkRecord, info: FrameworkInfo, stream: StreamId, principal: str
) -> None:
    roles = info.roles or ("*",)
    if roles != fw.info.roles:
        # Re-subscribing with other roles changes them (Mesos' UPDATE_FRAMEWORK).
        core.allocator_call(FrameworkAdded(fw.framework_id, roles))
        fw.info = dataclasses.replace(fw.info, roles=roles)
        core.record(FRAMEWORKS, fw.framework_id, fw.info)
    if fw.stream is not None and fw.stream != stream:
        # The old stream loses: one connection per framework, the newest.
        core.to_framework(fw, msg.Error("ABORTED", "framework re-subscribed on another connection"))
        core.close(fw.stream)
    fw.info = dataclasses.replace(
        fw.info, name=info.name or fw.info.name, failover_timeout_s=info.failover_timeout_s
    )
    if fw.info.principal != principal:  # claimed now (a record from before ACLs)
        fw.info = dataclasses.replace(fw.info, principal=principal)
        core.record(FRAMEWORKS, fw.framework_id, fw.info)
    fw.stream = stream
    fw.connected = True
    fw.disconnected_at = None
    core.allocator.handle(FrameworkActivated(fw.framework_id))
    core.log.info("framework.resubscribed", framework_id=fw.framework_id)


def disconnected(core: Core, framework_id: str, stream: StreamId) -> None:
    """Its stream ``stream`` ended (an older stream of a re-subscribed framework is ignored)."""
    fw = core.state.frameworks.get(framework_id)
    if fw is None or fw.stream != stream:
        return
    core.close(stream)
    fw.stream = None
    fw.connected = False
    fw.disconnected_at = core.now
    for offer_id in sorted(fw.offers):
        core.rescind(offer_id)
    core.allocator.handle(FrameworkDeactivated(framework_id))
    core.log.info(
        "framework.disconnected", framework_id=framework_id, failover_timeout_s=fw.info.failover_timeout_s
    )
    if fw.info.failover_timeout_s <= 0:
        teardown(core, framework_id, reason="disconnected with failover_timeout_s = 0")


def check_failover(core: Core) -> None:
    for fw in list(core.state.frameworks.values()):
        if (
            not fw.connected
            and not fw.tearing_down
            and fw.disconnected_at is not None
            and core.now - fw.disconnected_at >= fw.info.failover_timeout_s
        ):
            teardown(core, fw.framework_id, reason="failover timeout passed")


def heartbeats(core: Core) -> None:
    """Every ``framework_heartbeat_interval_s``, a HEARTBEAT on every framework stream."""
    if core.now - core.last_framework_heartbeat < core.config.framework_heartbeat_interval_s:
        return
    core.last_framework_heartbeat = core.now
    for fw in core.state.frameworks.values():
        if fw.connected:
            core.to_framework(fw, msg.Heartbeat())


def teardown(core: Core, framework_id: str, reason: str = "teardown requested") -> None:
    """Kill all of a framework's tasks and forget it once they have ended."""
    fw = core.state.frameworks.get(framework_id)
    if fw is None:
        raise CallError("NOT_FOUND", f"framework_id: {framework_id!r} is not known")
    if fw.tearing_down:
        return
    core.log.info("framework.teardown", framework_id=framework_id, reason=reason)
    fw.tearing_down = True
    for offer_id in sorted(fw.offers):
        core.rescind(offer_id)
    core.allocator.handle(FrameworkDeactivated(framework_id))
    shutdown = msg.ShutdownFramework(framework_id)
    for agent_id in sorted({t.agent_id for t in fw.tasks.values()}):
        agent = core.state.agents.get(agent_id)
        if agent is not None:
            core.to_agent(agent, shutdown)
    if fw.stream is not None:
        core.close(fw.stream)
        fw.stream = None
    fw.connected = False
    maybe_finish_teardown(core, fw)


def maybe_finish_teardown(core: Core, fw: FrameworkRecord) -> None:
    for task in list(fw.tasks.values()):
        if task.terminal or (
            not core.agent_connected(task.agent_id) and task.status.state == TaskState.TASK_STAGING
        ):
            core.complete_task(fw, task)
    if any(core.agent_connected(t.agent_id) for t in fw.tasks.values()):
        return
    # Tasks on disconnected agents are killed by the agent when it comes
    # back and learns the framework is gone; they are not ours to track.
    for task in list(fw.tasks.values()):
        agent = core.state.agents.get(task.agent_id)
        if agent is not None:
            agent.tasks.discard((fw.framework_id, task.task_id))
        core.complete_task(fw, task)
    core.state.frameworks.pop(fw.framework_id, None)
    core.state.completed_frameworks.append(fw)
    core.record(FRAMEWORKS, fw.framework_id, None)
    core.allocator.handle(FrameworkRemoved(fw.framework_id))
    core.allocate_soon()
    core.log.info("framework.removed", framework_id=fw.framework_id)


def update(core: Core, framework_id: str, info: FrameworkInfo) -> None:
    """UPDATE_FRAMEWORK (Mesos' call of that name): the framework's roles,
    capabilities, name and failover timeout become ``info``'s, on the same
    stream. Outstanding offers are rescinded when the roles change: they were
    made to the old ones. The principal, user and id stay."""
    fw = core.framework(framework_id)
    if info.id and info.id != framework_id:
        raise CallError(
            "INVALID_ARGUMENT", f"framework_info.id: {info.id!r} is not this framework ({framework_id})"
        )
    roles = info.roles or ("*",)
    if roles != fw.info.roles:
        for offer_id in sorted(fw.offers):
            core.rescind(offer_id)
        core.allocator_call(FrameworkAdded(framework_id, roles))
    fw.info = dataclasses.replace(
        fw.info,
        roles=roles,
        capabilities=info.capabilities,
        name=info.name or fw.info.name,
        failover_timeout_s=info.failover_timeout_s,
    )
    core.record(FRAMEWORKS, framework_id, fw.info)
    core.log.info("framework.updated", framework_id=framework_id, roles=list(roles), name=fw.info.name)
    core.allocate_soon()


def revive(core: Core, framework_id: str, roles: tuple[str, ...] = ()) -> None:
    """Offers again in ``roles`` (every role when empty); clears decline filters."""
    fw = core.framework(framework_id)
    core.allocator_call(Revived(framework_id, roles), "revive.roles")
    if not roles:
        fw.suppressed = False
    core.allocate_soon()


def suppress(core: Core, framework_id: str, roles: tuple[str, ...] = ()) -> None:
    """No offers in ``roles`` (every role when empty) until REVIVE."""
    fw = core.framework(framework_id)
    core.allocator_call(Suppressed(framework_id, roles), "suppress.roles")
    if not roles or set(roles) >= set(fw.info.roles):
        fw.suppressed = True
    # Outstanding offers stay valid, as in Mesos: the framework may be
    # accepting one right now.
