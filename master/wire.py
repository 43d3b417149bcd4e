"""The master's edge: its domain values (``master/core/``) to and from the wire's protobuf.

The core holds and returns frozen dataclasses; the runtime (``master.py``),
the servicers (``services/``) and the registry convert here, and nowhere
else. Conversions are exact: ``x_from_pb(x_to_pb(v)) == v`` for every value
the core can hold (tests/unit/test_master_wire.py).
"""

from __future__ import annotations

from corral.master.core import messages as m
from corral.proto import agent_pb2, scheduler_pb2

Event = scheduler_pb2.Event
MasterMessage = agent_pb2.MasterMessage


# -- what the core says -----------------------------------------------------------


def event_to_pb(event: m.FrameworkEvent) -> Event:
    """A message to a framework as the wire's ``Event``."""
    if isinstance(event, m.Updates):
        statuses = event.statuses
        if len(statuses) == 1:
            return Event(type=Event.UPDATE, update=Event.Update(status=statuses[0]))
        return Event(type=Event.UPDATE, updates=[Event.Update(status=s) for s in statuses])
    if isinstance(event, m.Offers):
        return Event(type=Event.OFFERS, offers=Event.Offers(offers=list(event.offers)))
    if isinstance(event, m.Rescind):
        return Event(type=Event.RESCIND, rescind=Event.Rescind(offer_id=event.offer_id))
    if isinstance(event, m.Subscribed):
        subscribed = Event.Subscribed(
            framework_id=event.framework_id,
            heartbeat_interval_s=event.heartbeat_interval_s,
            master_info=event.master_info,
        )
        return Event(type=Event.SUBSCRIBED, subscribed=subscribed)
    if isinstance(event, m.Error):
        return Event(type=Event.ERROR, error=Event.Error(code=event.code, message=event.message))
    return Event(type=Event.HEARTBEAT)


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
        run = MasterMessage.RunTasks(framework_info=command.framework_info, tasks=list(command.tasks))
        return MasterMessage(run_tasks=run)
    if isinstance(command, m.ShutdownFramework):
        shutdown = MasterMessage.ShutdownFramework(framework_id=command.framework_id)
        return MasterMessage(shutdown_framework=shutdown)
    registered = MasterMessage.Registered(
        agent_id=command.agent_id,
        heartbeat_interval_s=command.heartbeat_interval_s,
        master_info=command.master_info,
    )
    return MasterMessage(registered=registered)
