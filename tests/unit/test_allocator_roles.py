"""The allocator with roles: hierarchy, weights, quota, reservations,
per-role suppression, draining agents, explain, and refused input.

Examples in the style of Mesos' hierarchical_allocator_tests.cpp: the expected
shares are worked out in the comments.
"""

from __future__ import annotations

import pytest
from allocator_model import make

from corral.master.allocator import Allocation, Allocator, AllocatorError, RoleSorter
from corral.master.allocator.events import (
    AgentAdded,
    AgentDraining,
    Event,
    FrameworkAdded,
    QuotaSet,
    Reserved,
    ResourcesRecovered,
    Revived,
    RoleWeight,
    Suppressed,
    Unreserved,
)
from corral.resources import Resources

CPU4 = Resources.parse("cpus:4;mem:4096")
TASK = Resources.parse("cpus:1;mem:64")


def agents(n: int, total: Resources = CPU4) -> list[Event]:
    return [AgentAdded(f"a{i:02d}", total) for i in range(n)]


def simulate(a: Allocator, task: dict[str, Resources], cycles: int = 300) -> dict[str, int]:
    """Frameworks with endless demand: each offer launches as many tasks of
    the framework's shape as fit and returns the rest; a framework whose task
    does not fit declines for 5 s. Stops once ten cycles launch nothing."""
    launched = dict.fromkeys(task, 0)
    idle = 0
    for now in range(cycles):
        progress = False
        for offer in a.allocate(float(now)):
            shape = task[offer.framework_id]
            if offer.resources.unreserved().contains(shape):
                used = _take(offer.resources, shape)
                launched[offer.framework_id] += 1
                progress = True
                rest = offer.resources - used
                back = ResourcesRecovered(
                    offer.framework_id, offer.agent_id, rest, 0.0, float(now), offer.role
                )
                a.handle(back)
            else:
                a.handle(
                    ResourcesRecovered(
                        offer.framework_id, offer.agent_id, offer.resources, 5.0, float(now), offer.role
                    )
                )
        idle = 0 if progress else idle + 1
        if idle > 10:
            break
    return launched


def _take(offer: Resources, shape: Resources) -> Resources:
    """``shape``'s quantities out of ``offer``, reserved ones first."""
    scalars: dict[tuple[str, str], int] = {}
    for (name, _), wanted in shape.scalars.items():
        want = wanted
        for key in sorted(offer.scalars, key=lambda k: (k[1] == "", k)):
            if key[0] != name or want <= 0:
                continue
            got = min(want, offer.scalars[key] - scalars.get(key, 0))
            if got > 0:
                scalars[key] = scalars.get(key, 0) + got
                want -= got
    return Resources(scalars)


# -- hierarchy and weights ----------------------------------------------------


def test_role_weights_two_to_one_converge_to_two_to_one() -> None:
    # 6 agents x cpus:4 = 24 cpus, tasks of cpus:1 (1/24 each).
    # Role "gold" weight 2, "bronze" weight 1: gold 16 tasks (2/3), bronze 8 (1/3).
    a = make(
        *agents(6),
        RoleWeight("gold", 2.0),
        FrameworkAdded("g", ("gold",)),
        FrameworkAdded("b", ("bronze",)),
    )
    launched = simulate(a, {"g": TASK, "b": TASK})
    assert sum(launched.values()) == 24
    assert abs(a.role_share("gold") - 2 / 3) <= 1 / 24
    assert abs(a.role_share("bronze") - 1 / 3) <= 1 / 24


def test_hierarchical_roles_share_within_their_parent() -> None:
    # 8 agents x cpus:4 = 32 cpus. Top level: "eng" and "ops" split 16/16;
    # inside eng, "eng/ml" and "eng/web" split eng's 16 as 8/8.
    a = make(
        *agents(8),
        FrameworkAdded("ml", ("eng/ml",)),
        FrameworkAdded("web", ("eng/web",)),
        FrameworkAdded("ops", ("ops",)),
    )
    launched = simulate(a, {"ml": TASK, "web": TASK, "ops": TASK})
    assert sum(launched.values()) == 32
    assert launched["ops"] == pytest.approx(16, abs=1)
    assert launched["ml"] == pytest.approx(8, abs=1)
    assert launched["web"] == pytest.approx(8, abs=1)
    assert a.role_share("eng") == pytest.approx(a.role_share("eng/ml") + a.role_share("eng/web"), abs=0.01)


def test_role_sorter_walks_the_tree_depth_first_lowest_share_first() -> None:
    s = RoleSorter()
    s.set_total({"cpus": 100})
    for role in ["eng/ml", "eng/web", "ops", "eng"]:
        s.set_active(role, True)
    assert s.sort() == ["eng", "eng/ml", "eng/web", "ops"]  # all zero: by name, "." before sub-roles
    s.add_quantities("eng/ml", {"cpus": 30})  # eng: 0.3, ops: 0
    assert s.sort() == ["ops", "eng", "eng/web", "eng/ml"]
    s.add_quantities("ops", {"cpus": 40})  # eng 0.3 < ops 0.4
    assert s.sort()[0] == "eng"
    s.set_weight("ops", 2.0)  # ops: 0.4 / 2 = 0.2 < eng 0.3
    assert s.sort()[0] == "ops"
    s.set_active("ops", False)
    assert "ops" not in s.sort()
    assert s.share("eng") == pytest.approx(0.3)


def test_framework_in_two_roles_is_offered_in_each() -> None:
    a = make(*agents(2), FrameworkAdded("f", ("a", "b")))
    out = a.allocate(0.0)
    assert sorted(x.role for x in out) == ["a", "b"]  # the second agent goes to the role with less
    assert a.allocated("f", "a") == CPU4
    assert a.allocated("f", "b") == CPU4
    assert a.share("f", "a") == pytest.approx(0.5)


# -- reservations -------------------------------------------------------------


RESERVED_AGENT = Resources.parse("cpus(ml):2;cpus:2;mem(ml):1024;mem:1024")


def test_static_reservation_is_offered_only_to_its_role_and_sub_roles() -> None:
    a = make(AgentAdded("a1", RESERVED_AGENT), FrameworkAdded("other", ("*",)))
    (offer,) = a.allocate(0.0)
    assert offer.resources == Resources.parse("cpus:2;mem:1024")  # never the ml reservation
    a.handle(FrameworkAdded("sub", ("ml/x",)))
    (offer,) = a.allocate(1.0)
    assert offer == Allocation("sub", "a1", Resources.parse("cpus(ml):2;mem(ml):1024"), "ml/x")
    # reserved resources count toward the role's share: 2 cpus of 4
    assert a.role_share("ml") == pytest.approx(0.5)
    assert a.share("sub") == pytest.approx(0.5)


def test_reservations_and_unreserved_go_together_to_the_role() -> None:
    a = make(AgentAdded("a1", RESERVED_AGENT), FrameworkAdded("ml", ("ml",)))
    (offer,) = a.allocate(0.0)
    assert offer.resources == RESERVED_AGENT
    # With another role first in line ('*' < 'ml'), it takes the unreserved
    # part and the reservation still goes to ml in the same cycle.
    b = make(AgentAdded("a1", RESERVED_AGENT), FrameworkAdded("ml", ("ml",)), FrameworkAdded("z", ("*",)))
    out = {x.framework_id: x.resources for x in b.allocate(0.0)}
    assert out == {"z": Resources.parse("cpus:2;mem:1024"), "ml": Resources.parse("cpus(ml):2;mem(ml):1024")}


def test_dynamic_reserve_through_an_offer_then_unreserve() -> None:
    a = make(AgentAdded("a1", CPU4), FrameworkAdded("f", ("ml",)), FrameworkAdded("z", ("zz",)))
    (offer,) = a.allocate(0.0)
    assert offer.framework_id == "f"
    a.handle(Reserved("a1", Resources.parse("cpus(ml):3"), framework_id="f"))
    assert a.agent_total("a1") == Resources.parse("cpus(ml):3;cpus:1;mem:4096")
    assert a.allocated_on("f", "a1") == Resources.parse("cpus(ml):3;cpus:1;mem:4096")
    # f gives it all back and steps aside: z may only have the unreserved part
    a.handle(ResourcesRecovered("f", "a1", a.allocated_on("f", "a1"), 0.0, 0.0, "ml"))
    a.handle(Suppressed("f"))
    (offer,) = a.allocate(1.0)
    assert offer.framework_id == "z"
    assert offer.resources == Resources.parse("cpus:1;mem:4096")
    assert a.consumed("ml") == Resources.parse("cpus:3")  # unallocated reservations count for quota
    a.handle(Unreserved("a1", Resources.parse("cpus(ml):3")))
    assert a.agent_total("a1") == CPU4
    assert a.consumed("ml").is_empty()
    (offer,) = a.allocate(2.0)
    assert offer == Allocation("z", "a1", Resources.parse("cpus:3"), "zz")


def test_operator_reserves_free_resources_for_a_role() -> None:
    a = make(AgentAdded("a1", CPU4), FrameworkAdded("other", ("ops",)))
    a.handle(Reserved("a1", Resources.parse("cpus(eng):1;mem(eng):512")))
    (offer,) = a.allocate(0.0)
    assert offer.resources == Resources.parse("cpus:3;mem:3584")  # not eng's part
    assert a.allocate(1.0) == []
    a.handle(FrameworkAdded("web", ("eng/web",)))  # a sub-role of eng
    (offer,) = a.allocate(2.0)
    assert offer == Allocation("web", "a1", Resources.parse("cpus(eng):1;mem(eng):512"), "eng/web")


# -- quota --------------------------------------------------------------------


def test_quota_guarantee_is_met_while_others_are_hungry() -> None:
    # 4 agents x cpus:4 = 16 cpus. "greedy" has weight 10 and would take
    # 10/11 of the cluster; role "q" has a guarantee of cpus:8 and gets it.
    a = make(
        *agents(4),
        RoleWeight("big", 10.0),
        QuotaSet("q", guarantee=Resources.parse("cpus:8")),
        FrameworkAdded("greedy", ("big",)),
        FrameworkAdded("small", ("q",)),
    )
    launched = simulate(a, {"greedy": TASK, "small": TASK})
    assert launched["small"] >= 8
    assert sum(launched.values()) == 16
    assert a.consumed("q").scalar("cpus") >= 8000


def test_quota_headroom_is_kept_for_a_role_that_is_not_asking_yet() -> None:
    a = make(
        *agents(4),
        QuotaSet("q", guarantee=Resources.parse("cpus:8")),
        FrameworkAdded("greedy", ("big",)),
        FrameworkAdded("small", ("q",)),
        Suppressed("small"),
    )
    launched = simulate(a, {"greedy": TASK, "small": TASK})
    assert launched["greedy"] == 8  # 16 - 8 kept unallocated for q's guarantee
    a.handle(Revived("small"))
    launched = simulate(a, {"greedy": TASK, "small": TASK})
    assert launched["small"] == 8


def test_quota_limit_is_never_exceeded_and_the_rest_goes_to_others() -> None:
    a = make(
        *agents(2),
        QuotaSet("l", limit=Resources.parse("cpus:3")),
        FrameworkAdded("capped", ("l",)),
        FrameworkAdded("zz", ("*",)),
    )
    out = a.allocate(0.0)
    capped = [x for x in out if x.framework_id == "capped"]
    assert sum(x.resources.scalar("cpus") for x in capped) == 3000
    assert a.consumed("l").scalar("cpus") == 3000
    # the rest of the cluster is not wasted: zz gets it in the same cycle
    assert sum(x.resources.scalar("cpus") for x in out) == 8000
    assert a.allocate(1.0) == []
    (why,) = [r for r in a.explain("capped", 1.0) if r.kind == "quota_limit"]
    assert "cpus 3 of 3" in why.message


def test_parent_limit_bounds_sub_roles() -> None:
    a = make(
        *agents(3),
        QuotaSet("eng", limit=Resources.parse("cpus:5")),
        FrameworkAdded("ml", ("eng/ml",)),
        FrameworkAdded("web", ("eng/web",)),
    )
    simulate(a, {"ml": TASK, "web": TASK})
    assert a.consumed("eng").scalar("cpus") == 5000
    assert any("through role 'eng'" in r.message for r in a.explain("ml", 1000.0))


# -- filters, suppression, draining -------------------------------------------


def test_a_framework_declining_everything_does_not_starve_others() -> None:
    # The decliner (share 0 forever) is first in line for every agent, but
    # its 5 s filter hands each agent to the worker in between.
    a = make(*agents(4), FrameworkAdded("decliner"), FrameworkAdded("worker"))
    launched = {"worker": 0}
    for now in range(60):
        for offer in a.allocate(float(now)):
            if offer.framework_id == "decliner":
                a.handle(ResourcesRecovered("decliner", offer.agent_id, offer.resources, 5.0, float(now)))
            elif offer.resources.contains(TASK):
                launched["worker"] += 1
                rest = offer.resources - TASK
                a.handle(ResourcesRecovered("worker", offer.agent_id, rest, 0.0, float(now)))
    assert launched["worker"] == 16  # every cpu of the cluster


def test_suppress_one_role_keeps_offers_in_the_others() -> None:
    a = make(*agents(2), FrameworkAdded("f", ("a", "b")), Suppressed("f", ("a",)))
    out = a.allocate(0.0)
    assert {x.role for x in out} == {"b"}
    assert len(out) == 2
    (why,) = [r for r in a.explain("f", 0.0) if r.kind == "suppressed"]
    assert why.role == "a"
    a.handle(ResourcesRecovered("f", "a00", CPU4, 0.0, 0.0, "b"))
    a.handle(Revived("f", ("a",)))
    (offer,) = a.allocate(1.0)
    assert offer.role == "a"  # role a has share 0 < b's


def test_draining_agent_is_not_offered_until_undrained() -> None:
    a = make(*agents(2), FrameworkAdded("f"), AgentDraining("a00"))
    assert [x.agent_id for x in a.allocate(0.0)] == ["a01"]
    assert a.allocate(1.0) == []
    (why,) = [r for r in a.explain("f", 1.0) if r.kind == "nothing_fits"]
    assert "1 agent(s) draining" in why.message
    a.handle(AgentDraining("a00", draining=False))
    assert [x.agent_id for x in a.allocate(2.0)] == ["a00"]


def test_explain_lists_filters_and_shares() -> None:
    a = make(*agents(3), FrameworkAdded("f1"), FrameworkAdded("f2"))
    out = a.allocate(0.0)  # a00 -> f1, a01 -> f2, a02 -> f1
    assert [x.framework_id for x in out] == ["f1", "f2", "f1"]
    a.handle(ResourcesRecovered("f1", "a00", CPU4, 30.0, 0.0))
    reasons = {r.kind: r for r in a.explain("f1", 10.0)}
    assert reasons["filtered"].agents == 1
    assert reasons["filtered"].until == 30.0
    assert "t+20.0s" in reasons["filtered"].message
    a.handle(ResourcesRecovered("f2", "a01", CPU4, 0.0, 0.0))
    reasons = {r.kind: r for r in a.explain("f1", 10.0)}
    # f1 holds 1/3, f2 nothing: f2 is offered first
    assert "lowest: f2 at 0.000" in reasons["share"].message
    assert a.explain("f2", 10.0) == []  # nothing in its way


# -- refused input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (RoleWeight("gold", 0.0), "weight of role 'gold'"),
        (RoleWeight("gold", -1.0), "weight of role 'gold'"),
        (RoleWeight("bad role", 1.0), "bad role|role 'bad role'"),
        (RoleWeight("eng/..", 1.0), "'..'"),
        (FrameworkAdded("f9", ("ok",), weight=0.0), "weight of framework 'f9'"),
        (FrameworkAdded("f9", ("",)), "non-empty"),
        (QuotaSet("q", guarantee=Resources.parse("cpus:100")), r"above the cluster's total \(cpus 100 > 8\)"),
        (QuotaSet("q", Resources.parse("cpus:2"), Resources.parse("cpus:1")), "cpus above the limit"),
        (QuotaSet("q", limit={"cpus": -1}), "cpus must be a non-negative quantity"),
        (QuotaSet("q", Resources.parse("cpus(q):1")), "unreserved"),
        (Suppressed("f", ("nope",)), "not subscribed to role.*'nope'"),
        (Revived("f", ("nope",)), "not subscribed to role.*'nope'"),
        (Reserved("a00", Resources.parse("cpus(ml):5")), r"cpus\(ml\):5 on agent a00: not there"),
        (Reserved("a00", Resources.parse("cpus:1")), "must name its role"),
        (Reserved("zz", Resources.parse("cpus(ml):1")), "agent 'zz' is not known"),
        (Reserved("a00", Resources.parse("cpus(ml):1"), "f"), "role.*'ml' unknown to framework f"),
        (Reserved("a00", Resources.parse("cpus(a):9"), "f"), "does not hold cpus:9"),
        (Unreserved("a00", Resources.parse("cpus(ml):1")), "not there to unreserve"),
        (AgentDraining("zz"), "agent 'zz' is not known"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(event: Event, match: str) -> None:
    a = make(*agents(2), FrameworkAdded("f", ("a",)))
    a.allocate(0.0)
    before = (a.allocate(0.5), a.free("a00"), a.agent_total("a00"), a.allocated("f"), a.roles())
    with pytest.raises(AllocatorError, match=match):
        a.handle(event)
    assert (a.allocate(0.5), a.free("a00"), a.agent_total("a00"), a.allocated("f"), a.roles()) == before


def test_reserving_beyond_a_quota_limit_is_refused() -> None:
    a = make(*agents(1), QuotaSet("ml", limit=Resources.parse("cpus:1")))
    with pytest.raises(AllocatorError, match="above its quota limit for cpus"):
        a.handle(Reserved("a00", Resources.parse("cpus(ml):2")))
    a.handle(Reserved("a00", Resources.parse("cpus(ml):1")))
    assert a.consumed("ml") == Resources.parse("cpus:1")


def test_quota_above_the_cluster_can_be_forced() -> None:
    a = make(*agents(1))
    a.handle(QuotaSet("q", Resources.parse("cpus:100"), force=True))
    (info,) = [r for r in a.roles() if r.role == "q"]
    assert info.guarantee == Resources.parse("cpus:100")


def test_re_adding_a_framework_with_other_roles_moves_it() -> None:
    a = make(*agents(2), FrameworkAdded("f", ("a",)))
    (first, _) = a.allocate(0.0)
    assert first.role == "a"
    a.handle(FrameworkAdded("f", ("b",)))  # re-subscribed with another role
    a.handle(ResourcesRecovered("f", first.agent_id, CPU4, 0.0, 0.0))
    (offer,) = a.allocate(1.0)
    assert offer.role == "b"
    assert a.allocated("f", "a") == CPU4  # what it still holds in 'a' stays charged there
    assert [r.role for r in a.roles() if "f" in r.frameworks] == ["a", "b"]
    a.handle(ResourcesRecovered("f", "a01" if first.agent_id == "a00" else "a00", CPU4, 0.0, 1.0, "a"))
    assert [r.role for r in a.roles() if "f" in r.frameworks] == ["b"]


def test_a_nested_guarantee_is_served_first_too() -> None:
    # eng's guarantee (cpus:4) is met by eng/web alone; eng/ml's own (cpus:4)
    # still gets served in stage 1 before the hungry "big" role.
    a = make(
        *agents(4),
        RoleWeight("big", 10.0),
        QuotaSet("eng", guarantee=Resources.parse("cpus:4")),
        QuotaSet("eng/ml", guarantee=Resources.parse("cpus:4")),
        FrameworkAdded("web", ("eng/web",)),
        FrameworkAdded("greedy", ("big",)),
    )
    simulate(a, {"web": TASK, "greedy": TASK})
    a.handle(FrameworkAdded("ml", ("eng/ml",)))
    for fw in ("web", "greedy"):
        for agent_id in [f"a{i:02d}" for i in range(4)]:
            a.handle(ResourcesRecovered(fw, agent_id, a.allocated_on(fw, agent_id), 0.0, 500.0))
    launched = simulate(a, {"web": TASK, "greedy": TASK, "ml": TASK})
    assert launched["ml"] >= 4
