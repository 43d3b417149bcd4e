"""What the master core says to frameworks and agents, as frozen values.

A transition returns ``SendToFramework(stream, event)`` and
``SendToAgent(stream, command)`` effects (``effects.py``) carrying these;
the runtime turns them into the wire's ``Event`` and ``MasterMessage`` in
one place (``master/wire.py``) just before it queues them. One class per
kind of message, named as the wire names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.master.core.domain import FrameworkInfo, MasterInfo, Offer, TaskInfo, TaskStatus

# -- to a framework --------------------------------------------------------------


@dataclass(frozen=True)
class Subscribed:
    framework_id: str
    heartbeat_interval_s: float
    master_info: MasterInfo


@dataclass(frozen=True)
class Offers:
    offers: tuple[Offer, ...]


@dataclass(frozen=True)
class Rescind:
    offer_id: str


@dataclass(frozen=True)
class Updates:
    """Task status updates (one event; the wire sends a single one as ``update``)."""

    statuses: tuple[TaskStatus, ...]


@dataclass(frozen=True)
class Error:
    code: str
    message: str


@dataclass(frozen=True)
class Heartbeat:
    pass


FrameworkEvent = Subscribed | Offers | Rescind | Updates | Error | Heartbeat

# -- to an agent -------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    agent_id: str
    heartbeat_interval_s: float
    master_info: MasterInfo


@dataclass(frozen=True)
class RunTasks:
    framework_info: FrameworkInfo
    tasks: tuple[TaskInfo, ...]


@dataclass(frozen=True)
class KillTask:
    framework_id: str
    task_id: str
    grace_period_s: float = 0.0


@dataclass(frozen=True)
class Ack:
    task_id: str
    uuid: bytes
    framework_id: str


@dataclass(frozen=True)
class Acknowledgements:
    acks: tuple[Ack, ...]


@dataclass(frozen=True)
class ShutdownFramework:
    framework_id: str


AgentCommand = Registered | RunTasks | KillTask | Acknowledgements | ShutdownFramework

__all__ = [
    "Ack",
    "Acknowledgements",
    "AgentCommand",
    "Error",
    "FrameworkEvent",
    "Heartbeat",
    "KillTask",
    "Offers",
    "Registered",
    "Rescind",
    "RunTasks",
    "ShutdownFramework",
    "Subscribed",
    "Updates",
]
