"""The allocator's values and its book of agents, frameworks and roles.

The public values (:class:`Allocation`, :class:`Reason`, :class:`RoleInfo`,
:class:`AllocatorError`) are what callers see; the ``*State`` records are what
the allocator keeps per agent, framework and role, shared by its modules
(``allocator.py`` accounting and the cycle, ``quota.py``, ``reservations.py``,
``explain.py``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.master.allocator.sorter import DRFSorter, Quantities
from corral.resources import MILLI, Resources

#: Below this an agent's leftovers are crumbs nobody can use (Mesos' defaults:
#: cpus 0.01 or mem 32 MiB make an offer worth sending).
MIN_ALLOCATABLE_CPUS_MILLI = 10
MIN_ALLOCATABLE_MEM_MILLI = 32 * MILLI
DEFAULT_MIN_ALLOCATABLE: tuple[Mapping[str, int], ...] = (
    {"cpus": MIN_ALLOCATABLE_CPUS_MILLI},
    {"mem": MIN_ALLOCATABLE_MEM_MILLI},
)

DEFAULT_ROLE = "*"
EMPTY = Resources()


class AllocatorError(ValueError):
    """A request the allocator refuses (bad weight, quota, role or
    reservation); the message names what is wrong. Nothing has changed."""


@dataclass(frozen=True, slots=True)
class Allocation:
    framework_id: str
    agent_id: str
    resources: Resources
    role: str = DEFAULT_ROLE


#: Kinds of :class:`Reason`, in the order :meth:`Allocator.explain` lists them.
REASON_KINDS = (
    "unknown",
    "disconnected",
    "suppressed",
    "filtered",
    "quota_limit",
    "share",
    "nothing_fits",
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a framework is not being offered resources."""

    kind: str  # one of REASON_KINDS
    message: str
    role: str = ""
    agents: int = 0  # "filtered": on how many agents
    until: float = 0.0  # "filtered": the latest expiry


@dataclass(frozen=True, slots=True)
class RoleInfo:
    role: str
    weight: float
    frameworks: tuple[str, ...]
    share: float
    guarantee: Resources
    limit: Resources | None
    consumed: Resources
    #: the limit by name in milli-units, zeros kept (``limit`` cannot hold a
    #: zero); None: no limit
    limit_quantities: Mapping[str, int] | None = None


@dataclass(slots=True)
class AgentState:
    total: Resources
    free: Resources
    allocated: Resources = EMPTY
    active: bool = True
    draining: bool = False
    reserved: bool = False  # any reserved resources in total

    def offerable(self) -> bool:
        return self.active and not self.draining


@dataclass(frozen=True, slots=True)
class OfferFilter:
    """A DECLINE's filter (Mesos' ``RefusedOfferFilter``) for one framework,
    role and agent. It holds while the agent has nothing beyond ``refused``,
    until ``until`` — and, as Mesos does since MESOS-4302, at least through
    the first allocation cycle after the decline (``cycle`` is the number of
    cycles started when it was made), so a slow or backlogged allocator
    cannot let a short filter lapse unseen."""

    until: float
    cycle: int
    refused: Resources

    def active(self, now: float, cycle: int) -> bool:
        """In force during cycle number ``cycle`` running at ``now``."""
        return self.until > now or cycle <= self.cycle + 1


@dataclass(slots=True)
class FrameworkState:
    roles: tuple[str, ...]
    weight: float = 1.0
    active: bool = True
    suppressed: set[str] = field(default_factory=set)
    # agent_id -> role -> decline filters, kept per (role, agent) as Mesos'
    # offerFilters are: a decline in one role leaves the framework's other
    # roles alone, and each decline is a filter of its own, so a newer one
    # does not shorten an older. As in Mesos' RefusedOfferFilter, a filter
    # holds only while the agent has nothing beyond what was refused: once a
    # task ends there, the larger offer goes out at once.
    filters: dict[str, dict[str, list[OfferFilter]]] = field(default_factory=dict)
    held: dict[str, dict[str, Resources]] = field(default_factory=dict)  # agent -> role -> resources

    def wants(self, role: str) -> bool:
        return self.active and role in self.roles and role not in self.suppressed


@dataclass(slots=True)
class RoleState:
    frameworks: DRFSorter
    guarantee: Quantities = field(default_factory=dict)
    limit: Quantities | None = None
    consumed: Quantities = field(default_factory=dict)  # this role and its sub-roles


def has_reserved(res: Resources) -> bool:
    """Whether ``res`` holds any reserved resource."""
    return any(r for r in res.roles())


def to_resources(q: Mapping[str, int]) -> Resources:
    """Unreserved scalars from per-name quantities (the positive ones)."""
    return Resources(scalars={(n, ""): v for n, v in q.items() if v > 0})
