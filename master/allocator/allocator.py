"""The allocator: decides which framework is offered which agent's free resources.

Pure and synchronous (CONVENTIONS.md): events in through :meth:`Allocator.handle`,
decisions out of :meth:`Allocator.allocate`, time passed in. This is the first,
single-level DRF allocator; hierarchical roles, quota and reservations are the
allocator issue's and extend this module rather than replacing it.

Per cycle, for each active agent in a deterministic order, the frameworks are
sorted by weighted dominant share and the first one that is active, not
suppressed and not filtering that agent receives all of the agent's free
resources, as in Mesos' hierarchical allocator. Shares are updated as the
cycle goes, so one cycle spreads agents over hungry frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.master.allocator.events import (
    AgentActivated,
    AgentAdded,
    AgentDeactivated,
    AgentRemoved,
    AgentUpdated,
    Event,
    FrameworkActivated,
    FrameworkAdded,
    FrameworkDeactivated,
    FrameworkRemoved,
    ResourcesRecovered,
    ResourcesUsed,
    Revived,
    Suppressed,
)
from corral.master.allocator.sorter import DRFSorter
from corral.resources import MILLI, Resources

#: Below this an agent's leftovers are crumbs nobody can use (Mesos' defaults:
#: cpus 0.01 or mem 32 MiB make an offer worth sending).
MIN_ALLOCATABLE_CPUS_MILLI = 10
MIN_ALLOCATABLE_MEM_MILLI = 32 * MILLI


@dataclass(frozen=True, slots=True)
class Allocation:
    framework_id: str
    agent_id: str
    resources: Resources


@dataclass
class _Agent:
    total: Resources
    allocated: Resources = field(default_factory=Resources)
    active: bool = True

    def free(self) -> Resources:
        return self.total.subtract_clamped(self.allocated)


@dataclass
class _Framework:
    roles: tuple[str, ...]
    active: bool = True
    suppressed: bool = False
    # agent_id -> (until, resources refused). As in Mesos' RefusedOfferFilter,
    # the filter holds only while the agent has nothing beyond what was
    # refused: once a task ends there, the larger offer goes out at once.
    filters: dict[str, tuple[float, Resources]] = field(default_factory=dict)
    allocated: dict[str, Resources] = field(default_factory=dict)


class Allocator:
    """Events in, allocations out. Raises ``KeyError``/``ValueError`` only for
    events that contradict earlier ones (a bug in the caller, never user input)."""

    def __init__(self) -> None:
        self._agents: dict[str, _Agent] = {}
        self._frameworks: dict[str, _Framework] = {}
        self._sorter = DRFSorter()

    # -- events ---------------------------------------------------------------

    def handle(self, event: Event) -> None:
        match event:
            case AgentAdded(agent_id, total, used):
                self._agents[agent_id] = _Agent(total=total)
                self._update_total()
                for fw_id, res in used.items():
                    self._use(fw_id, agent_id, res)
            case AgentUpdated(agent_id, total):
                self._agents[agent_id].total = total
                self._update_total()
            case AgentRemoved(agent_id):
                agent = self._agents.pop(agent_id, None)
                if agent is not None:
                    for fw_id, framework in self._frameworks.items():
                        held = framework.allocated.pop(agent_id, None)
                        if held is not None:
                            self._sorter.unallocated(fw_id, held)
                        framework.filters.pop(agent_id, None)
                    self._update_total()
            case AgentActivated(agent_id):
                self._agents[agent_id].active = True
            case AgentDeactivated(agent_id):
                self._agents[agent_id].active = False
            case FrameworkAdded(framework_id, roles, weight):
                if framework_id not in self._frameworks:
                    self._frameworks[framework_id] = _Framework(roles=roles)
                    self._sorter.add(framework_id, weight)
                else:
                    self._frameworks[framework_id].active = True
            case FrameworkRemoved(framework_id):
                removed = self._frameworks.pop(framework_id, None)
                if removed is not None:
                    for held_on, held in removed.allocated.items():
                        holder = self._agents.get(held_on)
                        if holder is not None:
                            holder.allocated = holder.allocated.subtract_clamped(held)
                    self._sorter.remove(framework_id)
            case FrameworkActivated(framework_id):
                self._frameworks[framework_id].active = True
            case FrameworkDeactivated(framework_id):
                self._frameworks[framework_id].active = False
            case ResourcesUsed(framework_id, agent_id, resources):
                self._use(framework_id, agent_id, resources)
            case ResourcesRecovered(framework_id, agent_id, resources, refuse_s, now):
                self._recover(framework_id, agent_id, resources)
                refusing = self._frameworks.get(framework_id)
                if refusing is not None and refuse_s > 0 and agent_id in self._agents:
                    refusing.filters[agent_id] = (now + refuse_s, resources)
            case Suppressed(framework_id):
                self._frameworks[framework_id].suppressed = True
            case Revived(framework_id):
                revived = self._frameworks[framework_id]
                revived.suppressed = False
                revived.filters.clear()

    # -- decisions ------------------------------------------------------------

    def allocate(self, now: float) -> list[Allocation]:
        """One allocation cycle at time ``now``."""
        out: list[Allocation] = []
        for agent_id in sorted(self._agents):
            agent = self._agents[agent_id]
            if not agent.active:
                continue
            free = agent.free()
            if not _allocatable(free):
                continue
            for fw_id in self._sorter.sort():
                fw = self._frameworks[fw_id]
                if not fw.active or fw.suppressed:
                    continue
                refused = fw.filters.get(agent_id)
                if refused is not None:
                    until, what = refused
                    if until > now and what.contains(free):
                        continue
                    del fw.filters[agent_id]
                self._use(fw_id, agent_id, free)
                out.append(Allocation(fw_id, agent_id, free))
                break
        return out

    # -- queries --------------------------------------------------------------

    def free(self, agent_id: str) -> Resources:
        return self._agents[agent_id].free()

    def allocated(self, framework_id: str) -> Resources:
        out = Resources()
        for res in self._frameworks[framework_id].allocated.values():
            out = out + res
        return out

    def total(self) -> Resources:
        return self._sorter.total

    def share(self, framework_id: str) -> float:
        return self._sorter.share(framework_id)

    def explain(self, framework_id: str, now: float) -> list[str]:
        """Why ``framework_id`` is not being offered resources, in sentences."""
        fw = self._frameworks.get(framework_id)
        if fw is None:
            return [f"framework {framework_id} is not known to the allocator"]
        reasons: list[str] = []
        if not fw.active:
            reasons.append("framework is disconnected")
        if fw.suppressed:
            reasons.append("framework has suppressed offers (it will be offered after REVIVE)")
        filtered = sorted(a for a, (until, _) in fw.filters.items() if until > now)
        if filtered:
            until = max(fw.filters[a][0] for a in filtered)
            reasons.append(f"filtered on {len(filtered)} agent(s) until t+{until - now:.1f}s after declines")
        usable = [a for a, ag in self._agents.items() if ag.active and _allocatable(ag.free())]
        if not usable:
            reasons.append("no agent has free resources above the minimum allocatable size")
        return reasons

    # -- internals ------------------------------------------------------------

    def _use(self, framework_id: str, agent_id: str, resources: Resources) -> None:
        fw = self._frameworks[framework_id]
        agent = self._agents[agent_id]
        agent.allocated = agent.allocated + resources
        fw.allocated[agent_id] = fw.allocated.get(agent_id, Resources()) + resources
        self._sorter.allocated(framework_id, resources)

    def _recover(self, framework_id: str, agent_id: str, resources: Resources) -> None:
        # Only what this framework really holds there comes back: a late task
        # end after the framework or agent was removed must not free
        # resources that now belong to someone else.
        fw = self._frameworks.get(framework_id)
        if fw is None or agent_id not in fw.allocated:
            return
        held = fw.allocated[agent_id]
        left = held.subtract_clamped(resources)
        returned = held - left
        if left:
            fw.allocated[agent_id] = left
        else:
            del fw.allocated[agent_id]
        self._sorter.unallocated(framework_id, returned)
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.allocated = agent.allocated.subtract_clamped(returned)

    def _update_total(self) -> None:
        total = Resources()
        for agent in self._agents.values():
            total = total + agent.total.unreserved()
        self._sorter.set_total(total)


def _allocatable(free: Resources) -> bool:
    return (
        free.scalar("cpus") >= MIN_ALLOCATABLE_CPUS_MILLI or free.scalar("mem") >= MIN_ALLOCATABLE_MEM_MILLI
    )
