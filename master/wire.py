"""The master's edge: its domain values (``master/core/``) to and from the wire's protobuf.

The core holds and returns frozen dataclasses; the runtime (``master.py``),
the servicers (``services/``) and the registry convert here, and nowhere
else. Conversions are exact: ``x_from_pb(x_to_pb(v)) == v`` for every value
the core can hold (tests/unit/test_master_wire.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from corral.codec import quantities_from_proto, quantities_to_proto, resources_from_proto, resources_to_proto
from corral.master.core import domain as d
from corral.master.core import messages as m
from corral.master.core.context import Log
from corral.master.core.effects import RegistryRecord
from corral.master.registry import RegistryState
from corral.master.validation import check_task
from corral.proto import agent_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.resources import ResourceError, Resources

Event = scheduler_pb2.Event
MasterMessage = agent_pb2.MasterMessage


# -- task status ------------------------------------------------------------------

_STATUS_OPTIONAL = ("exit_code", "signal", "limit", "peak", "healthy", "cpu_time_s", "mem_peak_bytes")


def labels_from_pb(labels: Iterable[pb.Label]) -> tuple[tuple[str, str], ...]:
    return tuple((x.key, x.value) for x in labels)


def labels_to_pb(labels: tuple[tuple[str, str], ...]) -> list[pb.Label]:
    return [pb.Label(key=k, value=v) for k, v in labels]


def status_from_pb(s: pb.TaskStatus) -> d.TaskStatus:
    """An agent's status update (validated: its state and reason are known)."""
    return d.TaskStatus(
        task_id=s.task_id,
        state=d.TaskState(s.state),
        reason=d.Reason(s.reason),
        message=s.message,
        source=d.Source(s.source),
        agent_id=s.agent_id,
        framework_id=s.framework_id,
        timestamp=s.timestamp,
        uuid=s.uuid,
        stderr_tail=s.stderr_tail,
        exit_code=s.exit_code if s.HasField("exit_code") else None,
        signal=s.signal if s.HasField("signal") else None,
        limit=s.limit if s.HasField("limit") else None,
        peak=s.peak if s.HasField("peak") else None,
        healthy=s.healthy if s.HasField("healthy") else None,
        cpu_time_s=s.cpu_time_s if s.HasField("cpu_time_s") else None,
        mem_peak_bytes=s.mem_peak_bytes if s.HasField("mem_peak_bytes") else None,
        labels=labels_from_pb(s.labels),
    )


def status_to_pb(s: d.TaskStatus) -> pb.TaskStatus:
    out = pb.TaskStatus(
        task_id=s.task_id,
        # the same numbers (domain.py): protoc's stubs type them as their own classes
        state=cast(pb.TaskState, s.state),
        reason=cast(pb.TaskStatus.Reason, s.reason),
        message=s.message,
        source=cast(pb.TaskStatus.Source, s.source),
        agent_id=s.agent_id,
        framework_id=s.framework_id,
        timestamp=s.timestamp,
        uuid=s.uuid,
        stderr_tail=s.stderr_tail,
        labels=labels_to_pb(s.labels),
    )
    for name in _STATUS_OPTIONAL:
        value = getattr(s, name)
        if value is not None:
            setattr(out, name, value)
    return out


def master_info_to_pb(i: d.MasterInfo) -> pb.MasterInfo:
    return pb.MasterInfo(
        id=i.id, address=i.address, hostname=i.hostname, version=i.version, start_time=i.start_time
    )


# -- agents ---------------------------------------------------------------------------


def agent_from_pb(a: pb.AgentInfo) -> d.AgentInfo:
    """Raises ResourceError if its resources do not parse (the registry's; a
    registration's were validated)."""
    return d.AgentInfo(
        id=a.id,
        hostname=a.hostname,
        resources=resources_from_proto(a.resources, "agent_info.resources"),
        attributes=tuple((x.name, x.value) for x in a.attributes),
        work_dir=a.work_dir,
        version=a.version,
        principal=a.principal,
    )


def agents_from_registry(agents: Mapping[str, pb.AgentInfo], log: Log) -> dict[str, d.AgentInfo]:
    """The registry's agents; one whose resources do not parse is skipped, said."""
    out: dict[str, d.AgentInfo] = {}
    for agent_id, info in agents.items():
        try:
            out[agent_id] = agent_from_pb(info)
        except ResourceError:
            log.warning("registry.bad_agent", agent_id=agent_id)
    return out


def attributes_to_pb(attributes: tuple[tuple[str, str], ...]) -> list[pb.Attribute]:
    return [pb.Attribute(name=n, value=v) for n, v in attributes]


def agent_to_pb(a: d.AgentInfo) -> pb.AgentInfo:
    return pb.AgentInfo(
        id=a.id,
        hostname=a.hostname,
        resources=resources_to_proto(a.resources),
        attributes=attributes_to_pb(a.attributes),
        work_dir=a.work_dir,
        version=a.version,
        principal=a.principal,
    )


def offer_to_pb(o: d.Offer) -> pb.Offer:
    return pb.Offer(
        id=o.id,
        framework_id=o.framework_id,
        agent_id=o.agent_id,
        hostname=o.hostname,
        resources=resources_to_proto(o.resources),
        attributes=attributes_to_pb(o.attributes),
        role=o.role,
    )


# -- tasks ----------------------------------------------------------------------------


def _access(task: pb.TaskInfo) -> d.TaskAccess:
    c = task.container
    # An unset uid runs as root, so it is asked as uid 0; an unset gid is the uid's own.
    uid = c.uid if task.HasField("container") and c.HasField("uid") else 0
    return d.TaskAccess(
        uid=uid,
        gid=c.gid if c.HasField("gid") else uid,
        user_namespace=c.HasField("user_namespace") and c.user_namespace,
        seccomp_profile=c.seccomp_profile,
        devices=tuple(c.devices),
        host_paths=tuple((i, v.host_path) for i, v in enumerate(c.volumes) if v.host_path),
    )


def task_from_pb(task: pb.TaskInfo, resources: Resources | None = None) -> d.TaskInfo:
    """``resources``: already parsed (validation did); else parsed here,
    empty if they do not parse (an agent's report of a task it runs)."""
    if resources is None:
        try:
            resources = resources_from_proto(task.resources)
        except ResourceError:
            resources = Resources()
    return d.TaskInfo(
        task_id=task.task_id,
        name=task.name,
        agent_id=task.agent_id,
        resources=resources,
        kill_grace_s=task.kill_policy.grace_period_s,
        access=_access(task),
        labels=labels_from_pb(task.labels),
        payload=task.SerializeToString(),
    )


def task_to_pb(task: d.TaskInfo) -> pb.TaskInfo:
    out = pb.TaskInfo.FromString(task.payload)
    out.task_id = task.task_id
    out.name = task.name
    out.agent_id = task.agent_id
    if labels_from_pb(out.labels) != task.labels:  # equal unless built without its payload
        del out.labels[:]
        out.labels.extend(labels_to_pb(task.labels))
    return out


_LAUNCHES = (scheduler_pb2.Operation.LAUNCH, scheduler_pb2.Operation.LAUNCH_GROUP)


def _type_name(op: scheduler_pb2.Operation) -> str:
    known = op.type in scheduler_pb2.Operation.Type.values()
    return scheduler_pb2.Operation.Type.Name(op.type) if known else f"type {op.type}"


def operation_from_pb(op: scheduler_pb2.Operation, i: int) -> d.Operation:
    """The ``i``-th operation of an ACCEPT, its tasks checked as far as
    they can be without the master's state (validation.check_task)."""
    name = _type_name(op)
    if op.type in _LAUNCHES:
        tasks = []
        for j, t in enumerate(op.launch.task_infos):
            where = f"accept.operations[{i}].launch.task_infos[{j}]"
            check, wanted = check_task(t, where)
            tasks.append(d.LaunchTask(task_from_pb(t, wanted), where, check))
        return d.Operation(op.type, name, tasks=tuple(tasks))
    if op.type in (scheduler_pb2.Operation.RESERVE, scheduler_pb2.Operation.UNRESERVE):
        unreserve = op.type == scheduler_pb2.Operation.UNRESERVE
        where = f"accept.operations[{i}].{'unreserve' if unreserve else 'reserve'}.resources"
        items = op.unreserve.resources if unreserve else op.reserve.resources
        try:
            return d.Operation(op.type, name, resources=resources_from_proto(items, where), where=where)
        except ResourceError as e:
            return d.Operation(op.type, name, where=where, problem=str(e))
    return d.Operation(op.type, name)


# -- frameworks ---------------------------------------------------------------------


def framework_from_pb(f: pb.FrameworkInfo) -> d.FrameworkInfo:
    return d.FrameworkInfo(
        id=f.id,
        name=f.name,
        user=f.user,
        roles=tuple(f.roles),
        failover_timeout_s=f.failover_timeout_s,
        capabilities=tuple(f.capabilities),
        principal=f.principal,
        hostname=f.hostname,
    )


def framework_to_pb(f: d.FrameworkInfo) -> pb.FrameworkInfo:
    return pb.FrameworkInfo(
        id=f.id,
        name=f.name,
        user=f.user,
        roles=f.roles,
        failover_timeout_s=f.failover_timeout_s,
        capabilities=cast(list[pb.FrameworkInfo.Capability], list(f.capabilities)),
        principal=f.principal,
        hostname=f.hostname,
    )


# -- the registry ---------------------------------------------------------------------


def role_from_pb(summary: op.RoleSummary, log: Log) -> d.RolePolicy:
    """A recorded role; a quota that does not parse is dropped, said (its weight kept)."""
    try:
        guarantee = resources_from_proto(summary.guarantee)
        limit = quantities_from_proto(summary.limit) if summary.has_limit else None
    except ResourceError as e:
        log.warning("registry.bad_role", role=summary.role, error=str(e))
        return d.RolePolicy(summary.role, summary.weight or 1.0)
    return d.RolePolicy(summary.role, summary.weight or 1.0, guarantee, limit)


def role_to_pb(r: d.RolePolicy) -> op.RoleSummary:
    return op.RoleSummary(
        role=r.role,
        weight=r.weight,
        guarantee=resources_to_proto(r.guarantee),
        limit=quantities_to_proto(r.limit or {}),
        has_limit=r.limit is not None,
    )


def maintenance_from_pb(agent_id: str, m_: op.AgentMaintenance, log: Log) -> d.AgentMaintenance:
    """A recorded maintenance mark; reservations that do not parse are dropped, said."""
    try:
        reserved = resources_from_proto(m_.reservations)
    except ResourceError as e:
        log.warning("registry.bad_maintenance", agent_id=agent_id, error=str(e))
        reserved = Resources()
    return d.AgentMaintenance(m_.draining, reserved, m_.unreachable_since)


def maintenance_to_pb(m_: d.AgentMaintenance) -> op.AgentMaintenance:
    return op.AgentMaintenance(
        draining=m_.draining,
        reservations=resources_to_proto(m_.reservations),
        unreachable_since=m_.unreachable_since,
    )


def from_registry(
    state: RegistryState, log: Log
) -> tuple[
    dict[str, d.AgentInfo], dict[str, d.FrameworkInfo], dict[str, d.RolePolicy], dict[str, d.AgentMaintenance]
]:
    """What a new leader hands its core (``MasterCore.recover``) of the registry's contents."""
    return (
        agents_from_registry(state.agents, log),
        {k: framework_from_pb(f) for k, f in state.frameworks.items()},
        {k: role_from_pb(r, log) for k, r in state.roles.items()},
        {k: maintenance_from_pb(k, m_, log) for k, m_ in state.maintenance.items()},
    )


def record_bytes(data: RegistryRecord | None) -> bytes | None:
    """A registry record (``WriteRegistry.data``) as the registry stores it."""
    if data is None:
        return None
    if isinstance(data, d.AgentInfo):
        return agent_to_pb(data).SerializeToString()
    if isinstance(data, d.RolePolicy):
        return role_to_pb(data).SerializeToString()
    if isinstance(data, d.AgentMaintenance):
        return maintenance_to_pb(data).SerializeToString()
    return framework_to_pb(data).SerializeToString()


# -- what the core says -----------------------------------------------------------


def event_to_pb(event: m.FrameworkEvent) -> Event:
    """A message to a framework as the wire's ``Event``."""
    if isinstance(event, m.Updates):
        statuses = event.statuses
        if len(statuses) == 1:
            return Event(type=Event.UPDATE, update=Event.Update(status=status_to_pb(statuses[0])))
        return Event(type=Event.UPDATE, updates=[Event.Update(status=status_to_pb(s)) for s in statuses])
    if isinstance(event, m.Offers):
        return Event(type=Event.OFFERS, offers=Event.Offers(offers=[offer_to_pb(o) for o in event.offers]))
    if isinstance(event, m.Rescind):
        return Event(type=Event.RESCIND, rescind=Event.Rescind(offer_id=event.offer_id))
    if isinstance(event, m.Subscribed):
        subscribed = Event.Subscribed(
            framework_id=event.framework_id,
            heartbeat_interval_s=event.heartbeat_interval_s,
            master_info=master_info_to_pb(event.master_info),
        )
        return Event(type=Event.SUBSCRIBED, subscribed=subscribed)
    if isinstance(event, m.Error):
        return Event(type=Event.ERROR, error=Event.Error(code=event.code, message=event.message))
    return Event(type=Event.HEARTBEAT)


def read_file_message(request_id: int, task: str, path: str, offset: int, length: int) -> MasterMessage:
    """Ask an agent for a piece of a sandbox file (``task``: framework_id/task_id)."""
    read = MasterMessage.ReadFile(
        request_id=request_id, task_id=task, path=path, offset=offset, length=length
    )
    return MasterMessage(read_file=read)


def exec_message(request_id: int, task: str, r: op.ExecTaskRequest, timeout_s: float) -> MasterMessage:
    """Ask an agent to run ``r.argv`` in a task's container (``task``: framework_id/task_id)."""
    run = MasterMessage.Exec(
        request_id=request_id,
        task_id=task,
        argv=r.argv,
        timeout_s=timeout_s,
        stdin=r.stdin,
        tty=r.tty,
        rows=r.rows,
        cols=r.cols,
    )
    return MasterMessage(exec=run)


def command_to_pb(command: m.AgentCommand) -> MasterMessage:
    """A message to an agent as the wire's ``MasterMessage``."""
    if isinstance(command, m.KillTask):
        kill = MasterMessage.KillTask(
            framework_id=command.framework_id, task_id=command.task_id, grace_period_s=command.grace_period_s
        )
        return MasterMessage(kill_task=kill)
    if isinstance(command, m.Acknowledgements):
        acks = [
            MasterMessage.Acknowledgements.Ack(task_id=a.task_id, uuid=a.uuid, framework_id=a.framework_id)
            for a in command.acks
        ]
        return MasterMessage(acknowledgements=MasterMessage.Acknowledgements(acks=acks))
    if isinstance(command, m.RunTasks):
        run = MasterMessage.RunTasks(
            framework_info=framework_to_pb(command.framework_info),
            tasks=[task_to_pb(t) for t in command.tasks],
        )
        return MasterMessage(run_tasks=run)
    if isinstance(command, m.ShutdownFramework):
        shutdown = MasterMessage.ShutdownFramework(framework_id=command.framework_id)
        return MasterMessage(shutdown_framework=shutdown)
    registered = MasterMessage.Registered(
        agent_id=command.agent_id,
        heartbeat_interval_s=command.heartbeat_interval_s,
        master_info=master_info_to_pb(command.master_info),
    )
    return MasterMessage(registered=registered)
