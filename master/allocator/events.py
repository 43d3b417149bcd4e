"""Everything the allocator reacts to, as plain immutable values.

Feeding the same sequence of events (with the same ``now`` values) gives the
same decisions, which tests, benchmarks and a later decision log rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.resources import Resources


@dataclass(frozen=True, slots=True)
class AgentAdded:
    agent_id: str
    total: Resources
    used: dict[str, Resources] = field(default_factory=dict)  # framework -> resources in use


@dataclass(frozen=True, slots=True)
class AgentUpdated:
    """The agent re-registered with different total resources."""

    agent_id: str
    total: Resources


@dataclass(frozen=True, slots=True)
class AgentRemoved:
    agent_id: str


@dataclass(frozen=True, slots=True)
class AgentActivated:
    agent_id: str


@dataclass(frozen=True, slots=True)
class AgentDeactivated:
    """Disconnected or draining: keep its allocations, offer nothing from it."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class FrameworkAdded:
    framework_id: str
    roles: tuple[str, ...] = ("*",)
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class FrameworkRemoved:
    framework_id: str


@dataclass(frozen=True, slots=True)
class FrameworkActivated:
    framework_id: str


@dataclass(frozen=True, slots=True)
class FrameworkDeactivated:
    framework_id: str


@dataclass(frozen=True, slots=True)
class ResourcesUsed:
    """Resources in use without an offer, e.g. tasks adopted on re-registration."""

    framework_id: str
    agent_id: str
    resources: Resources


@dataclass(frozen=True, slots=True)
class ResourcesRecovered:
    """Offered or used resources come back (decline, leftover of an accept,
    rescind, task end). ``refuse_s > 0`` filters the agent for the framework."""

    framework_id: str
    agent_id: str
    resources: Resources
    refuse_s: float = 0.0
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Suppressed:
    framework_id: str


@dataclass(frozen=True, slots=True)
class Revived:
    framework_id: str


Event = (
    AgentAdded
    | AgentUpdated
    | AgentRemoved
    | AgentActivated
    | AgentDeactivated
    | FrameworkAdded
    | FrameworkRemoved
    | FrameworkActivated
    | FrameworkDeactivated
    | ResourcesUsed
    | ResourcesRecovered
    | Suppressed
    | Revived
)
