"""The pure allocator (master/allocator): events in, allocations out.

Examples first, in the style of Mesos' hierarchical_allocator_tests.cpp (the
expected shares are written in comments), then a hypothesis state machine that
checks conservation, no over-commit, suppression and determinism over random
event sequences.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from allocator_model import AllocatorModel, make, part_of
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import corral.master.allocator as allocator_pkg
from corral.master.allocator import Allocation, Allocator, DRFSorter
from corral.master.allocator.events import (
    AgentActivated,
    AgentAdded,
    AgentDeactivated,
    AgentRemoved,
    FrameworkActivated,
    FrameworkAdded,
    FrameworkDeactivated,
    FrameworkRemoved,
    ResourcesRecovered,
    ResourcesUsed,
    Revived,
    Suppressed,
)
from corral.resources import RangeSet, Resources, dominant_share

AGENT = Resources.parse("cpus:4;mem:4096;ports:[31000-31009]")


def by_agent(allocs: list[Allocation]) -> dict[str, str]:
    return {x.agent_id: x.framework_id for x in allocs}


# -- examples -----------------------------------------------------------------


def test_single_framework_gets_every_agents_free_resources() -> None:
    a = make(AgentAdded("a1", AGENT), AgentAdded("a2", AGENT), FrameworkAdded("f1"))
    out = a.allocate(0.0)
    assert out == [Allocation("f1", "a1", AGENT), Allocation("f1", "a2", AGENT)]
    assert a.free("a1").is_empty()
    assert a.allocated("f1") == AGENT + AGENT
    assert a.allocate(1.0) == []  # nothing left to offer


def test_agent_with_used_resources_offers_only_the_rest() -> None:
    a = make(FrameworkAdded("f1"))
    a.handle(AgentAdded("a1", AGENT, used={"f1": Resources.of(cpus=1, mem=1024)}))
    (only,) = a.allocate(0.0)
    assert only.resources == AGENT - Resources.of(cpus=1, mem=1024)


def _simulate(
    a: Allocator,
    task: dict[str, Resources],
    cycles: int = 200,
) -> dict[str, int]:
    """Each framework launches one task of its fixed shape per offer and
    declines the rest; a framework whose task does not fit declines all for 5 s.
    Stops once several cycles in a row launch nothing."""
    launched = dict.fromkeys(task, 0)
    idle = 0
    for now in range(cycles):
        progress = False
        for offer in a.allocate(float(now)):
            shape = task[offer.framework_id]
            if offer.resources.contains(shape):
                launched[offer.framework_id] += 1
                progress = True
                rest = offer.resources - shape
                a.handle(ResourcesRecovered(offer.framework_id, offer.agent_id, rest, 0.0, float(now)))
            else:
                a.handle(
                    ResourcesRecovered(offer.framework_id, offer.agent_id, offer.resources, 5.0, float(now))
                )
        idle = 0 if progress else idle + 1
        if idle > 10:
            break
    return launched


def test_two_equal_frameworks_converge_to_equal_dominant_shares() -> None:
    # 4 agents of cpus:4;mem:4096 -> cluster cpus:16;mem:16384.
    # Both frameworks run tasks of cpus:1;mem:256, so cpus dominate and one
    # task is worth a dominant share of 1/16 = 0.0625.
    # Endless demand: 16 tasks fit in all, and DRF splits them 8/8:
    #   f1 share = 8/16 = 0.5, f2 share = 8/16 = 0.5.
    a = make(*(AgentAdded(f"a{i}", AGENT) for i in range(4)), FrameworkAdded("f1"), FrameworkAdded("f2"))
    task = Resources.of(cpus=1, mem=256)
    launched = _simulate(a, {"f1": task, "f2": task})
    assert sum(launched.values()) == 16
    assert abs(a.share("f1") - a.share("f2")) <= 1 / 16
    assert a.share("f1") == pytest.approx(0.5)
    assert a.share("f2") == pytest.approx(0.5)


def test_drf_paper_example() -> None:
    # Ghodsi et al. 2011, section 4: cluster <9 cpus, 18 GB>; A runs tasks of
    # <1 cpu, 4 GB> (mem-dominant), B runs tasks of <3 cpus, 1 GB> (cpu-dominant).
    # DRF gives A 3 tasks: <3 cpus, 12 GB>, share 12/18 = 2/3;
    #           B 2 tasks: <6 cpus,  2 GB>, share  6/9  = 2/3.
    a = make(AgentAdded("a1", Resources.of(cpus=9, mem=18 * 1024)), FrameworkAdded("A"), FrameworkAdded("B"))
    launched = _simulate(a, {"A": Resources.of(cpus=1, mem=4096), "B": Resources.of(cpus=3, mem=1024)})
    assert launched == {"A": 3, "B": 2}
    assert a.share("A") == pytest.approx(2 / 3)
    assert a.share("B") == pytest.approx(2 / 3)


def test_weights_scale_fair_shares() -> None:
    # 6 agents of cpus:4 -> 24 cpus; tasks of cpus:1 (1/24 each).
    # Weight 2 vs 1: f_heavy gets 2/3 (16 tasks), f_light 1/3 (8 tasks),
    # within one task's worth.
    a = make(
        *(AgentAdded(f"a{i}", Resources.of(cpus=4, mem=4096)) for i in range(6)),
        FrameworkAdded("f_heavy", weight=2.0),
        FrameworkAdded("f_light", weight=1.0),
    )
    task = Resources.of(cpus=1, mem=64)
    launched = _simulate(a, {"f_heavy": task, "f_light": task})
    assert sum(launched.values()) == 24
    assert abs(a.share("f_heavy") - 2 / 3) <= 1 / 24
    assert abs(a.share("f_light") - 1 / 3) <= 1 / 24


def test_one_cycle_spreads_agents_over_hungry_frameworks() -> None:
    a = make(AgentAdded("a1", AGENT), AgentAdded("a2", AGENT), FrameworkAdded("f1"), FrameworkAdded("f2"))
    # f1 takes a1 (tie broken by name), then has share 0.5 > 0, so a2 goes to f2.
    assert by_agent(a.allocate(0.0)) == {"a1": "f1", "a2": "f2"}


def test_suppressed_framework_gets_nothing_until_revived() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), Suppressed("f1"))
    assert a.allocate(0.0) == []
    assert any("suppressed" in r.message for r in a.explain("f1", 0.0))
    a.handle(FrameworkAdded("f2"))
    assert by_agent(a.allocate(1.0)) == {"a1": "f2"}
    a.handle(ResourcesRecovered("f2", "a1", AGENT))
    a.handle(Suppressed("f2"))
    assert a.allocate(2.0) == []
    a.handle(Revived("f1"))
    assert by_agent(a.allocate(3.0)) == {"a1": "f1"}


def test_decline_filters_agent_for_that_framework_until_expiry() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"))
    (offer,) = a.allocate(0.0)
    a.handle(ResourcesRecovered("f1", "a1", offer.resources, refuse_s=10.0, now=0.0))
    assert a.allocate(5.0) == []
    assert a.allocate(9.999) == []
    assert any("filtered on 1 agent" in r.message for r in a.explain("f1", 5.0))
    assert by_agent(a.allocate(10.0)) == {"a1": "f1"}  # until = now + refuse_s, exclusive


def test_filtered_agent_still_goes_to_another_framework() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"))
    (offer,) = a.allocate(0.0)
    a.handle(ResourcesRecovered("f1", "a1", offer.resources, refuse_s=10.0, now=0.0))
    a.handle(FrameworkAdded("f2"))
    assert by_agent(a.allocate(1.0)) == {"a1": "f2"}
    a.handle(ResourcesRecovered("f2", "a1", AGENT))
    # f1 (share 0) sorts before f2 but is still filtered: f2 again.
    assert by_agent(a.allocate(2.0)) == {"a1": "f2"}


def test_revive_clears_filters() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"))
    a.allocate(0.0)
    a.handle(ResourcesRecovered("f1", "a1", AGENT, refuse_s=100.0, now=0.0))
    assert a.allocate(1.0) == []
    a.handle(Revived("f1"))
    assert by_agent(a.allocate(2.0)) == {"a1": "f1"}


def test_filter_bypassed_when_agent_has_more_than_was_refused() -> None:
    # Mesos' RefusedOfferFilter: the filter holds only while the new offer is
    # contained in what was refused; once a task ends, the bigger offer goes out.
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), FrameworkAdded("f2"))
    a.handle(ResourcesUsed("f2", "a1", Resources.of(cpus=2, mem=2048)))
    a.handle(FrameworkDeactivated("f2"))
    (offer,) = a.allocate(0.0)
    assert offer.resources == AGENT - Resources.of(cpus=2, mem=2048)
    a.handle(ResourcesRecovered("f1", "a1", offer.resources, refuse_s=100.0, now=0.0))
    assert a.allocate(1.0) == []  # same free resources: still filtered
    a.handle(ResourcesRecovered("f2", "a1", Resources.of(cpus=1, mem=1024)))  # f2's task ends
    (bigger,) = a.allocate(2.0)
    assert bigger.framework_id == "f1"
    assert bigger.resources == AGENT - Resources.of(cpus=1, mem=1024)


def test_deactivated_agent_offers_nothing_and_keeps_allocations() -> None:
    a = make(AgentAdded("a1", AGENT), AgentAdded("a2", AGENT), FrameworkAdded("f1"), AgentDeactivated("a1"))
    assert by_agent(a.allocate(0.0)) == {"a2": "f1"}
    a.handle(AgentActivated("a1"))
    assert by_agent(a.allocate(1.0)) == {"a1": "f1"}
    a.handle(AgentDeactivated("a1"))
    assert a.allocated("f1") == AGENT + AGENT  # draining keeps what is held


def test_deactivated_framework_gets_nothing() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), FrameworkDeactivated("f1"))
    assert a.allocate(0.0) == []
    assert "framework is disconnected" in [r.message for r in a.explain("f1", 0.0)]
    a.handle(FrameworkActivated("f1"))
    assert by_agent(a.allocate(1.0)) == {"a1": "f1"}


def test_re_adding_a_framework_reactivates_it() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), FrameworkDeactivated("f1"), FrameworkAdded("f1"))
    assert by_agent(a.allocate(0.0)) == {"a1": "f1"}


@pytest.mark.parametrize(
    ("total", "offered"),
    [
        (Resources.parse("cpus:0.009;mem:31.999;disk:1000;ports:[1-100]"), False),
        (Resources.parse("disk:1000;ports:[1-100]"), False),
        (Resources.parse("cpus:0.01"), True),  # Mesos' MIN_CPUS
        (Resources.parse("mem:32"), True),  # Mesos' MIN_MEM (MiB)
    ],
)
def test_crumbs_below_min_allocatable_are_not_offered(total: Resources, offered: bool) -> None:
    a = make(AgentAdded("a1", total), FrameworkAdded("f1"))
    assert bool(a.allocate(0.0)) is offered


def test_leftover_crumbs_after_a_launch_are_not_offered() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), FrameworkAdded("f2"))
    (offer,) = a.allocate(0.0)
    used = Resources.parse("cpus:3.995;mem:4065")  # leaves cpus 0.005, mem 31 MiB and ports
    a.handle(ResourcesRecovered("f1", "a1", offer.resources - used))
    assert a.allocate(1.0) == []
    assert any("minimum allocatable" in r.message for r in a.explain("f2", 1.0))


def test_removing_a_framework_frees_its_allocation() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), FrameworkAdded("f2"), Suppressed("f2"))
    assert by_agent(a.allocate(0.0)) == {"a1": "f1"}
    a.handle(FrameworkRemoved("f1"))
    assert a.free("a1") == AGENT
    a.handle(Revived("f2"))
    assert by_agent(a.allocate(1.0)) == {"a1": "f2"}
    assert "not known" in a.explain("f1", 1.0)[0].message


def test_late_recover_for_removed_framework_does_not_free_others() -> None:
    a = make(AgentAdded("a1", AGENT), FrameworkAdded("f1"), FrameworkAdded("f2"))
    assert by_agent(a.allocate(0.0)) == {"a1": "f1"}
    a.handle(FrameworkRemoved("f1"))
    assert by_agent(a.allocate(1.0)) == {"a1": "f2"}
    a.handle(ResourcesRecovered("f1", "a1", AGENT, refuse_s=5.0, now=1.0))  # late task end of f1
    assert a.free("a1").is_empty()
    assert a.allocated("f2") == AGENT
    assert a.share("f2") == pytest.approx(1.0)


def test_recover_more_than_held_is_clamped() -> None:
    a = make(AgentAdded("a1", AGENT), AgentAdded("a2", AGENT), FrameworkAdded("f1"), FrameworkAdded("f2"))
    assert by_agent(a.allocate(0.0)) == {"a1": "f1", "a2": "f2"}
    # f1 returns twice what it holds on a1 and something on a2 where it holds nothing.
    a.handle(ResourcesRecovered("f1", "a1", AGENT + Resources.of(cpus=4, gpus=1)))
    a.handle(ResourcesRecovered("f1", "a2", AGENT))
    assert a.free("a1") == AGENT
    assert a.free("a2").is_empty()
    assert a.allocated("f2") == AGENT


def test_removing_an_agent_drops_its_allocations_and_total() -> None:
    a = make(AgentAdded("a1", AGENT), AgentAdded("a2", AGENT), FrameworkAdded("f1"))
    a.allocate(0.0)
    a.handle(AgentRemoved("a1"))
    assert a.allocated("f1") == AGENT
    assert a.total() == Resources.of(cpus=4, mem=4096)  # scalars, by name
    assert a.share("f1") == pytest.approx(1.0)
    a.handle(ResourcesRecovered("f1", "a1", AGENT))  # late: agent gone, nothing happens
    assert a.allocated("f1") == AGENT


# -- the sorter alone ---------------------------------------------------------


def test_drf_sorter_orders_by_weighted_dominant_share() -> None:
    s = DRFSorter()
    s.set_total(Resources.of(cpus=10, mem=100))
    for client, weight in [("c", 1.0), ("b", 2.0), ("a", 1.0)]:
        s.add(client, weight)
    assert s.sort() == ["a", "b", "c"]  # all zero: by name
    s.allocated("a", Resources.of(cpus=3))  # a: 0.3
    s.allocated("b", Resources.of(mem=40))  # b: 0.4 / 2 = 0.2
    s.allocated("c", Resources.of(cpus=1, mem=25))  # c: max(0.1, 0.25) = 0.25
    assert s.sort() == ["b", "c", "a"]
    assert s.share("b") == pytest.approx(0.4)
    s.update_weight("b", 1.0)  # b: 0.4
    assert s.sort() == ["c", "a", "b"]
    s.unallocated("a", Resources.of(cpus=10))  # clamped to what a holds
    assert s.allocation("a").is_empty()
    assert s.sort()[0] == "a"
    s.remove("a")
    assert not s.contains("a")
    assert "a" not in s.sort()


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_drf_sorter_rejects_non_positive_weights(weight: float) -> None:
    s = DRFSorter()
    with pytest.raises(ValueError, match="weight of 'x'"):
        s.add("x", weight)
    s.add("x")
    with pytest.raises(ValueError, match="weight of 'x'"):
        s.update_weight("x", weight)
    with pytest.raises(KeyError):
        s.update_weight("nobody", 1.0)


# -- purity -------------------------------------------------------------------

FORBIDDEN = {"grpc", "asyncio", "socket", "subprocess", "time", "kazoo", "threading", "random"}


def test_allocator_package_imports_no_io_or_clock() -> None:
    files = sorted(Path(allocator_pkg.__file__).parent.glob("*.py"))
    assert len(files) >= 4
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [n.name for n in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, f"the allocator must stay pure: {offenders}"


# -- stateful -----------------------------------------------------------------

agent_totals = st.builds(
    lambda c, m, p: Resources.of(cpus=c / 1000, mem=m, ranges={"ports": RangeSet.of([(31000, 31000 + p)])}),
    st.integers(0, 8000),
    st.sampled_from([0, 16, 512, 4096]),
    st.integers(0, 20),
)


class AllocatorMachine(AllocatorModel):
    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, Resources] = {}
        self.active_agents: set[str] = set()
        self.frameworks: set[str] = set()
        self.active_fws: set[str] = set()
        self.suppressed: set[str] = set()
        self.removed_fws: list[str] = []
        self.held: dict[tuple[str, str], Resources] = {}  # (framework, agent) -> resources

    @initialize(total=agent_totals)
    def start(self, total: Resources) -> None:
        self.add_agent(total)
        self.add_framework(1.0)

    @rule(total=agent_totals)
    def add_agent(self, total: Resources) -> None:
        agent_id = self.fresh("a")
        self.send(AgentAdded(agent_id, total))
        self.totals[agent_id] = total
        self.active_agents.add(agent_id)

    @precondition(lambda self: self.totals)
    @rule(data=st.data())
    def remove_agent(self, data: st.DataObject) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        self.send(AgentRemoved(agent_id))
        del self.totals[agent_id]
        self.active_agents.discard(agent_id)
        self.held = {k: v for k, v in self.held.items() if k[1] != agent_id}

    @rule(weight=st.sampled_from([0.5, 1.0, 3.0]))
    def add_framework(self, weight: float) -> None:
        fw = self.fresh("f")
        self.send(FrameworkAdded(fw, weight=weight))
        self.frameworks.add(fw)
        self.active_fws.add(fw)

    @precondition(lambda self: self.frameworks)
    @rule(data=st.data())
    def remove_framework(self, data: st.DataObject) -> None:
        fw = data.draw(st.sampled_from(sorted(self.frameworks)))
        self.send(FrameworkRemoved(fw))
        self.frameworks.discard(fw)
        self.active_fws.discard(fw)
        self.suppressed.discard(fw)
        self.removed_fws.append(fw)
        self.held = {k: v for k, v in self.held.items() if k[0] != fw}

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 7.0]))
    def allocate(self, dt: float) -> None:
        self.now += dt
        free_before = {a: self.alloc.free(a) for a in self.totals}
        out = self.cycle()
        assert len({x.agent_id for x in out}) == len(out), "an agent was offered twice in one cycle"
        for x in out:
            assert x.framework_id not in self.suppressed, f"suppressed {x.framework_id} got {x}"
            assert x.framework_id in self.active_fws, f"inactive {x.framework_id} got {x}"
            assert x.agent_id in self.active_agents, f"inactive agent {x.agent_id} offered: {x}"
            assert x.resources == free_before[x.agent_id]  # all of the agent's free resources
            key = (x.framework_id, x.agent_id)
            self.held[key] = self.held.get(key, Resources()) + x.resources

    @precondition(lambda self: self.held)
    @rule(data=st.data(), k=st.integers(1, 4), refuse_s=st.sampled_from([0.0, 0.0, 2.0, 1e9]))
    def recover(self, data: st.DataObject, k: int, refuse_s: float) -> None:
        fw, agent_id = data.draw(st.sampled_from(sorted(self.held)))
        held = self.held[(fw, agent_id)]
        back = part_of(held, k)
        self.send(ResourcesRecovered(fw, agent_id, back, refuse_s, self.now))
        left = held - back
        if left:
            self.held[(fw, agent_id)] = left
        else:
            del self.held[(fw, agent_id)]

    @precondition(lambda self: self.frameworks and self.totals)
    @rule(data=st.data(), k=st.integers(1, 4))
    def use(self, data: st.DataObject, k: int) -> None:
        fw = data.draw(st.sampled_from(sorted(self.frameworks)))
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        part = part_of(self.alloc.free(agent_id), k)
        self.send(ResourcesUsed(fw, agent_id, part))
        self.held[(fw, agent_id)] = self.held.get((fw, agent_id), Resources()) + part

    @precondition(lambda self: self.removed_fws and self.totals)
    @rule(data=st.data())
    def late_recover_of_removed_framework(self, data: st.DataObject) -> None:
        fw = data.draw(st.sampled_from(self.removed_fws))
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        self.send(ResourcesRecovered(fw, agent_id, self.totals[agent_id], 1.0, self.now))

    @precondition(lambda self: self.frameworks)
    @rule(data=st.data(), on=st.booleans())
    def suppress_or_revive(self, data: st.DataObject, on: bool) -> None:
        fw = data.draw(st.sampled_from(sorted(self.frameworks)))
        if on:
            self.send(Suppressed(fw))
            self.suppressed.add(fw)
        else:
            self.send(Revived(fw))
            self.suppressed.discard(fw)

    @precondition(lambda self: self.frameworks)
    @rule(data=st.data(), on=st.booleans())
    def framework_activity(self, data: st.DataObject, on: bool) -> None:
        fw = data.draw(st.sampled_from(sorted(self.frameworks)))
        if on:
            self.send(FrameworkActivated(fw))
            self.active_fws.add(fw)
        else:
            self.send(FrameworkDeactivated(fw))
            self.active_fws.discard(fw)

    @precondition(lambda self: self.totals)
    @rule(data=st.data(), on=st.booleans())
    def agent_activity(self, data: st.DataObject, on: bool) -> None:
        agent_id = data.draw(st.sampled_from(sorted(self.totals)))
        if on:
            self.send(AgentActivated(agent_id))
            self.active_agents.add(agent_id)
        else:
            self.send(AgentDeactivated(agent_id))
            self.active_agents.discard(agent_id)

    @invariant()
    def conservation(self) -> None:
        for agent_id, total in self.totals.items():
            allocated = Resources()
            for (_, on), res in self.held.items():
                if on == agent_id:
                    allocated = allocated + res
            assert allocated <= total, f"{agent_id} over-committed: {allocated} > {total}"
            assert self.alloc.free(agent_id) + allocated == total, agent_id

    @invariant()
    def framework_allocations_and_shares(self) -> None:
        cluster = Resources()
        for total in self.totals.values():
            cluster = cluster + total
        for fw in self.frameworks:
            mine = Resources()
            for (owner, _), res in self.held.items():
                if owner == fw:
                    mine = mine + res
            assert self.alloc.allocated(fw) == mine, fw
            assert math.isclose(self.alloc.share(fw), dominant_share(mine, cluster)), fw


AllocatorMachine.TestCase.settings = settings(max_examples=75, stateful_step_count=35, deadline=None)
TestAllocatorMachine = AllocatorMachine.TestCase
