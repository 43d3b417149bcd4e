"""Everything the allocator reacts to, as plain immutable values.

Feeding the same sequence of events (with the same ``now`` values) gives the
same decisions, which tests, benchmarks and a later decision log rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """Disconnected: keep its allocations, offer nothing from it."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class AgentDraining:
    """An operator put the agent under maintenance (``draining=True``): it
    keeps what is allocated and offers nothing until ``draining=False``.
    Independent of the connection, which :class:`AgentActivated` tracks."""

    agent_id: str
    draining: bool = True


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
    role: str | None = None  # None: the framework's role that holds such resources


@dataclass(frozen=True, slots=True)
class ResourcesRecovered:
    """Offered or used resources come back (decline, leftover of an accept,
    rescind, task end). ``refuse_s > 0`` filters the agent for the framework."""

    framework_id: str
    agent_id: str
    resources: Resources
    refuse_s: float = 0.0
    now: float = 0.0
    role: str | None = None  # None: taken from whichever of its roles holds them


@dataclass(frozen=True, slots=True)
class Suppressed:
    """No offers to the framework in ``roles`` (every role when empty) until revived."""

    framework_id: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Revived:
    """Offers again in ``roles`` (every role when empty); clears decline filters."""

    framework_id: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoleWeight:
    """Operator: the weight of ``role`` among its siblings (default 1)."""

    role: str
    weight: float


@dataclass(frozen=True, slots=True)
class QuotaSet:
    """Operator: ``guarantee`` is offered to ``role`` first, even while others
    are hungry; ``limit`` (None: none) is never exceeded. Both count the role's
    sub-roles, reservations and unreserved allocations (Mesos 1.9 semantics).
    An empty guarantee with no limit removes the quota. Guarantees above the
    cluster's total are refused unless ``force``. ``limit`` may be given as
    quantities (name -> milli-units) to say a zero limit (``cpus: 0``), which
    :class:`Resources` cannot hold. The default role ``*`` may have quota."""

    role: str
    guarantee: Resources = field(default_factory=Resources)
    limit: Resources | Mapping[str, int] | None = None
    force: bool = False


@dataclass(frozen=True, slots=True)
class Reserved:
    """Dynamic reservation: unreserved ``resources`` (given with their target
    role, e.g. ``cpus(ml):2``) on the agent become reserved for that role.
    With ``framework_id``: taken from what that framework holds there (a
    RESERVE operation in ACCEPT); without: from the agent's free resources
    (an operator's reservation)."""

    agent_id: str
    resources: Resources
    framework_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unreserved:
    """The reverse of :class:`Reserved`: reserved ``resources`` become unreserved."""

    agent_id: str
    resources: Resources
    framework_id: str | None = None


Event = (
    AgentAdded
    | AgentUpdated
    | AgentRemoved
    | AgentActivated
    | AgentDeactivated
    | AgentDraining
    | FrameworkAdded
    | FrameworkRemoved
    | FrameworkActivated
    | FrameworkDeactivated
    | ResourcesUsed
    | ResourcesRecovered
    | Suppressed
    | Revived
    | RoleWeight
    | QuotaSet
    | Reserved
    | Unreserved
)
