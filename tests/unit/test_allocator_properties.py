"""Properties of the allocator with roles, reservations and quota, over random
event sequences (hypothesis): agents join and leave (some with static
reservations), frameworks subscribe to one or more roles and leave, cycles
allocate, frameworks accept part and return the rest, decline with filters,
reserve and unreserve, suppress and revive per role, operators set quota
limits and guarantees and drain agents.

After every step: nothing is allocated on an agent beyond its total;
allocated plus free is its total; the allocator's view of every framework's
holdings matches ours. After every cycle: reserved resources went only to
their role or its sub-roles; no suppressed, disconnected or draining party
took part; no role was pushed above its quota limit. And the same events
replayed give the same allocations.
"""

from __future__ import annotations

from allocator_model import AllocatorModel, part_of
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from corral.master.allocator import AllocatorError
from corral.master.allocator.events import (
    AgentAdded,
    AgentDraining,
    AgentRemoved,
    Event,
    FrameworkAdded,
    FrameworkRemoved,
    QuotaSet,
    Reserved,
    ResourcesRecovered,
    ResourcesUsed,
    Revived,
    Suppressed,
    Unreserved,
)
from corral.master.allocator.sorter import is_within
from corral.resources import RangeSet, Resources

ROLES = ["*", "a", "a/x", "b"]
RESERVABLE = ["a", "a/x", "b"]

agent_totals = st.builds(
    lambda c, m, p, rc, rrole: (
        Resources.of(cpus=c, mem=m, ranges={"ports": RangeSet.of([(31000, 31000 + p)])})
        + (Resources.of(role=rrole, cpus=rc) if rc else Resources())
    ),
    st.integers(0, 8),
    st.sampled_from([0, 64, 1024]),
    st.integers(0, 5),
    st.integers(0, 3),
    st.sampled_from(RESERVABLE),
)


def _scalars(res: Resources) -> dict[str, int]:
    out: dict[str, int] = {}
    for (n, _), v in res.scalars.items():
        out[n] = out.get(n, 0) + v
    return out


class RolesMachine(AllocatorModel):
    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, Resources] = {}
        self.draining: set[str] = set()
        self.fw_roles: dict[str, tuple[str, ...]] = {}
        self.suppressed: set[tuple[str, str]] = set()  # (framework, role)
        self.limits: dict[str, Resources] = {}
        self.held: dict[tuple[str, str, str], Resources] = {}  # (framework, agent, role)

    # -- plumbing -------------------------------------------------------------

    def resync(self, fw: str, agent_id: str) -> None:
        """After a conversion the allocator chose which role's holding
        changed; take its word for that one pair (totals are checked anyway)."""
        self.held = {k: v for k, v in self.held.items() if (k[0], k[1]) != (fw, agent_id)}
        for role, res in self.alloc.held(fw, agent_id).items():
            self.held[(fw, agent_id, role)] = res

    def consumption(self, role: str) -> dict[str, int]:
        """Quota consumption, computed from our own model."""
        out: dict[str, int] = {}
        for (_, _, r), res in self.held.items():
            if is_within(r, role):
                for n, v in _scalars(res).items():
                    out[n] = out.get(n, 0) + v
        for agent_id in self.totals:
            for (n, r), v in self.alloc.free(agent_id).scalars.items():
                if r and is_within(r, role):
                    out[n] = out.get(n, 0) + v
        return out

    # -- rules ----------------------------------------------------------------

    @initialize(total=agent_totals)
    def start(self, total: Resources) -> None:
        self.add_agent(total)
        self.add_framework(("*", "a"))

    @rule(total=agent_totals)
    def add_agent(self, total: Resources) -> None:
        agent_id = self.fresh("s")
        self.send(AgentAdded(agent_id, total))
        self.totals[agent_id] = total

    @precondition(lambda self: self.totals)
    @rule(data=st.data())
    def remove_agent(self, data: st.DataObject) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        self.send(AgentRemoved(agent_id))
        del self.totals[agent_id]
        self.draining.discard(agent_id)
        self.held = {k: v for k, v in self.held.items() if k[1] != agent_id}

    @rule(roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True).map(tuple))
    def add_framework(self, roles: tuple[str, ...]) -> None:
        fw = self.fresh("f")
        self.send(FrameworkAdded(fw, roles))
        self.fw_roles[fw] = roles

    @precondition(lambda self: self.fw_roles)
    @rule(data=st.data())
    def remove_framework(self, data: st.DataObject) -> None:
        fw = data.draw(st.sampled_from(sorted(self.fw_roles)))
        self.send(FrameworkRemoved(fw))
        del self.fw_roles[fw]
        self.suppressed = {s for s in self.suppressed if s[0] != fw}
        self.held = {k: v for k, v in self.held.items() if k[0] != fw}

    @rule(dt=st.sampled_from([0.0, 1.0, 7.0]))
    def allocate(self, dt: float) -> None:
        self.now += dt
        before = {role: self.consumption(role) for role in self.limits}
        out = self.cycle()
        for x in out:
            assert x.role in self.fw_roles[x.framework_id], x
            assert (x.framework_id, x.role) not in self.suppressed, f"suppressed got {x}"
            assert x.agent_id not in self.draining, f"draining agent offered: {x}"
            for reserved_for in x.resources.roles() - {""}:
                assert is_within(x.role, reserved_for), f"{reserved_for}'s reservation went to {x}"
            key = (x.framework_id, x.agent_id, x.role)
            self.held[key] = self.held.get(key, Resources()) + x.resources
        for role, limit in self.limits.items():
            after = self.consumption(role)
            for (n, _), lim in limit.scalars.items():
                assert after.get(n, 0) <= max(lim, before[role].get(n, 0)), (
                    f"role {role} pushed above its limit for {n}: {after} > {limit}"
                )

    @precondition(lambda self: self.held)
    @rule(data=st.data(), k=st.integers(1, 4), refuse_s=st.sampled_from([0.0, 0.0, 2.0, 1e9]))
    def recover(self, data: st.DataObject, k: int, refuse_s: float) -> None:
        key = data.draw(st.sampled_from(sorted(self.held)))
        fw, agent_id, role = key
        held = self.held[key]
        back = part_of(held, k)
        self.send(ResourcesRecovered(fw, agent_id, back, refuse_s, self.now, role))
        left = held - back
        if left:
            self.held[key] = left
        else:
            del self.held[key]

    @precondition(lambda self: self.fw_roles and self.totals)
    @rule(data=st.data(), k=st.integers(1, 2))
    def use(self, data: st.DataObject, k: int) -> None:
        fw = data.draw(st.sampled_from(sorted(self.fw_roles)))
        role = data.draw(st.sampled_from(self.fw_roles[fw]))
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        free = self.alloc.free(agent_id)
        unreserved = Resources(
            {k: v for k, v in free.scalars.items() if not k[1]},
            {k: v for k, v in free.ranges.items() if not k[1]},
        )
        part = part_of(unreserved, k)
        self.send(ResourcesUsed(fw, agent_id, part, role))
        if part:
            key = (fw, agent_id, role)
            self.held[key] = self.held.get(key, Resources()) + part

    @precondition(lambda self: self.fw_roles)
    @rule(data=st.data(), on=st.booleans(), all_roles=st.booleans())
    def suppress_or_revive(self, data: st.DataObject, on: bool, all_roles: bool) -> None:
        fw = data.draw(st.sampled_from(sorted(self.fw_roles)))
        roles = () if all_roles else (data.draw(st.sampled_from(self.fw_roles[fw])),)
        affected = roles or self.fw_roles[fw]
        if on:
            self.send(Suppressed(fw, roles))
            self.suppressed |= {(fw, r) for r in affected}
        else:
            self.send(Revived(fw, roles))
            self.suppressed -= {(fw, r) for r in affected}

    @rule(
        role=st.sampled_from(RESERVABLE),
        limit=st.none() | st.integers(0, 4),
        guarantee=st.integers(0, 4),
    )
    def set_quota(self, role: str, limit: int | None, guarantee: int) -> None:
        lim = None if limit is None else Resources.of(cpus=limit)
        g = Resources.of(cpus=min(guarantee, limit if limit is not None else guarantee))
        self.send(QuotaSet(role, g, lim, force=True))
        if lim is None:
            self.limits.pop(role, None)
        else:
            self.limits[role] = lim

    @precondition(lambda self: self.totals)
    @rule(data=st.data(), on=st.booleans())
    def drain(self, data: st.DataObject, on: bool) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        self.send(AgentDraining(agent_id, on))
        if on:
            self.draining.add(agent_id)
        else:
            self.draining.discard(agent_id)

    @precondition(lambda self: self.totals)
    @rule(data=st.data(), role=st.sampled_from(RESERVABLE), cpus=st.integers(1, 3), undo=st.booleans())
    def operator_reservation(self, data: st.DataObject, role: str, cpus: int, undo: bool) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        res = Resources.of(role=role, cpus=cpus)
        event: Event = Unreserved(agent_id, res) if undo else Reserved(agent_id, res)
        free = self.alloc.free(agent_id)
        fits = free.contains(res if undo else res.unreserved())
        try:
            self.send(event)
        except AllocatorError as e:
            self.events.pop()
            refused = str(e)
        else:
            refused = ""
        if refused:
            assert not fits or "quota limit" in refused, refused
            return
        assert fits, f"{event} accepted though the agent's free resources are {free}"
        self.totals[agent_id] = self.alloc.agent_total(agent_id)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), undo=st.booleans())
    def framework_reservation(self, data: st.DataObject, undo: bool) -> None:
        fw, agent_id, role = data.draw(st.sampled_from(sorted(self.held)))
        held = self.held[(fw, agent_id, role)]
        if undo:
            reserved = [(k, v) for k, v in held.scalars.items() if k[1]]
            if not reserved:
                return
            (name, target), v = reserved[0]
            event: Event = Unreserved(agent_id, Resources({(name, target): v}), fw)
        else:
            cpus = held.scalar("cpus", "")
            if role == "*" or not cpus:
                return
            event = Reserved(agent_id, Resources({("cpus", role): cpus}), fw)
        self.send(event)
        self.totals[agent_id] = self.alloc.agent_total(agent_id)
        self.resync(fw, agent_id)

    # -- invariants -----------------------------------------------------------

    @invariant()
    def conservation(self) -> None:
        for agent_id, total in self.totals.items():
            assert self.alloc.agent_total(agent_id) == total
            allocated = Resources()
            for (_, on, _), res in self.held.items():
                if on == agent_id:
                    allocated = allocated + res
            assert allocated <= total, f"{agent_id} over-committed: {allocated} > {total}"
            assert self.alloc.free(agent_id) + allocated == total, agent_id

    @invariant()
    def holdings_match(self) -> None:
        for fw in self.fw_roles:
            for agent_id in self.totals:
                mine = {r: res for (f, a, r), res in self.held.items() if (f, a) == (fw, agent_id) and res}
                assert self.alloc.held(fw, agent_id) == mine, (fw, agent_id)


RolesMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestRolesMachine = RolesMachine.TestCase
