"""Where the allocator once differed from Mesos' hierarchical allocator, each
case with the offers Mesos makes worked out in the comments (in the style of
Mesos' hierarchical_allocator_tests.cpp): per-role decline filters, filters
that outlive the next cycle (MESOS-4302), several filters at once, zero quota
limits, quota on '*', ties broken by allocation count, one offer per
(framework, role, agent) a cycle, and clear errors for unknown ids."""

from __future__ import annotations

import pytest
from allocator_model import make

from corral.codec import quantities_from_proto, quantities_to_proto
from corral.master.allocator import Allocation, AllocatorError, DRFSorter
from corral.master.allocator.events import (
    AgentAdded,
    FrameworkAdded,
    FrameworkDeactivated,
    QuotaSet,
    ResourcesRecovered,
    ResourcesUsed,
    Revived,
)
from corral.resources import ResourceError, Resources, format_quantities, parse_quantities

CPU4 = Resources.parse("cpus:4;mem:4096")


def offers(allocs: list[Allocation]) -> list[tuple[str, str, str]]:
    return sorted((x.framework_id, x.role, x.agent_id) for x in allocs)


# -- filters are per (framework, role, agent) --------------------------------


def test_a_decline_in_one_role_keeps_offers_in_the_others() -> None:
    # Framework f in roles a and b, one agent. Cycle 0: role a (share 0, 'a'
    # < 'b') gets the agent. f declines it in role a for 100 s. Mesos keys the
    # filter by (framework, role a, agent): the next cycle offers the agent to
    # f in role b at once. Filtering per (framework, agent) offered nothing.
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f", ("a", "b")))
    (first,) = a.allocate(0.0)
    assert first.role == "a"
    a.handle(ResourcesRecovered("f", "s1", first.resources, 100.0, 0.0, "a"))
    assert offers(a.allocate(1.0)) == [("f", "b", "s1")]


def test_a_newer_decline_does_not_shorten_an_older_filter() -> None:
    # f declines the whole agent for 100 s, then (offered a bigger part after
    # another framework's task ends) declines that for 1 s. Mesos keeps both
    # filters: at t=50 the agent's free resources are back to what the first
    # decline refused, which its 100 s filter still covers: no offer. A
    # single filter slot kept only the 1 s one, and offered at t=50.
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f"), FrameworkAdded("g"), FrameworkDeactivated("g"))
    a.handle(ResourcesUsed("g", "s1", Resources.parse("cpus:2;mem:2048")))
    (small,) = a.allocate(0.0)
    assert small.framework_id == "f"
    a.handle(ResourcesRecovered("f", "s1", small.resources, 100.0, 0.0))
    a.handle(ResourcesRecovered("g", "s1", Resources.parse("cpus:2;mem:2048")))  # g's task ends
    (whole,) = a.allocate(1.0)  # more than was refused: the filter lets it through
    assert whole.framework_id == "f"
    assert whole.resources == CPU4
    a.handle(ResourcesRecovered("f", "s1", whole.resources, 1.0, 1.0))
    a.handle(ResourcesUsed("g", "s1", Resources.parse("cpus:2;mem:2048")))  # g launches again
    assert a.allocate(2.0) == []  # both filters in force
    assert a.allocate(50.0) == []  # the 1 s filter is gone, the 100 s one holds
    (back,) = a.allocate(101.0)
    assert back.framework_id == "f"


def test_revive_of_one_role_clears_only_that_roles_filters() -> None:
    # f declines two agents, one in each role, for 100 s; the next cycle
    # offers each agent in the role that has not declined it (filters are
    # per role), and f declines those too. REVIVE(role a) clears role a's
    # filters only (Mesos: reviveOffers with roles): role a takes both
    # agents, and role b's filters stay.
    a = make(AgentAdded("s1", CPU4), AgentAdded("s2", CPU4), FrameworkAdded("f", ("a", "b")))
    out = a.allocate(0.0)
    assert offers(out) == [("f", "a", "s1"), ("f", "b", "s2")]
    for x in out:
        a.handle(ResourcesRecovered("f", x.agent_id, x.resources, 100.0, 0.0, x.role))
    crossed = a.allocate(1.0)
    assert offers(crossed) == [("f", "a", "s2"), ("f", "b", "s1")]
    for x in crossed:
        a.handle(ResourcesRecovered("f", x.agent_id, x.resources, 100.0, 1.0, x.role))
    assert a.allocate(2.0) == []
    a.handle(Revived("f", ("a",)))
    assert offers(a.allocate(3.0)) == [("f", "a", "s1"), ("f", "a", "s2")]
    (why,) = [r for r in a.explain("f", 3.0) if r.kind == "filtered"]
    assert why.role == "b"
    assert why.agents == 2


# -- MESOS-4302: a filter lasts through the next allocation -------------------


def test_a_short_filter_outlives_the_next_cycle_even_if_it_ran_late() -> None:
    # A decline for 1 s at t=0; the allocator does not run again until t=5
    # (backlogged). Mesos sets the filter's timeout to max(allocation
    # interval, refuse_seconds) and expires it only after the next batch
    # allocation has run, so the t=5 cycle still filters the agent; the
    # cycle after that offers it.
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f"))
    (offer,) = a.allocate(0.0)
    a.handle(ResourcesRecovered("f", "s1", offer.resources, 1.0, 0.0))
    assert any(r.kind == "filtered" for r in a.explain("f", 5.0))
    assert a.allocate(5.0) == []
    assert [x.framework_id for x in a.allocate(6.0)] == ["f"]


def test_a_filter_still_expires_by_time_once_a_cycle_has_run() -> None:
    # Cycles keep running (every second) while the 10 s filter lasts; it
    # ends at t=10 as declared.
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f"))
    (offer,) = a.allocate(0.0)
    a.handle(ResourcesRecovered("f", "s1", offer.resources, 10.0, 0.0))
    for now in range(1, 10):
        assert a.allocate(float(now)) == []
    assert [x.framework_id for x in a.allocate(10.0)] == ["f"]


# -- quota limits of zero, quota on '*' ---------------------------------------


def test_a_zero_limit_caps_that_resource_at_nothing() -> None:
    # Quota limit cpus:0;mem:512 on role q. Mesos keeps the zero (a
    # ResourceQuantities entry of 0), so no offer with cpus can go to q; as
    # cpus are in every agent's free resources, q gets offers of mem only,
    # which are not allocatable (no cpus, mem 512 >= 32 MiB is, so mem
    # alone is sent: Mesos' min allocatable is "cpus:0.01 OR mem:32").
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f", ("q",)))
    a.handle(QuotaSet("q", limit={"cpus": 0, "mem": 512_000}))
    (offer,) = a.allocate(0.0)
    assert offer.resources.scalar("cpus") == 0
    assert offer.resources.scalar("mem") == 512_000
    (info,) = [r for r in a.roles() if r.role == "q"]
    assert info.limit_quantities == {"cpus": 0, "mem": 512_000}


def test_a_zero_limit_survives_the_wire_and_the_cli_syntax() -> None:
    q = parse_quantities("cpus:0;mem:512")
    assert q == {"cpus": 0, "mem": 512_000}
    assert format_quantities(q) == "cpus:0;mem:512"
    assert quantities_from_proto(quantities_to_proto(q)) == q
    with pytest.raises(ResourceError, match="ports: only scalars"):
        parse_quantities("ports:[1-2]")
    with pytest.raises(ResourceError, match="cpus: given more than once"):
        parse_quantities("cpus:1;cpus:2")
    # Resources, by contrast, cannot say it: the zero vanishes.
    assert Resources.parse("cpus:0;mem:512").scalar("cpus") == 0
    assert "cpus" not in Resources.parse("cpus:0;mem:512").names()


def test_quota_on_the_default_role() -> None:
    # Mesos allows quota on '*'. A limit of 2 cpus on '*' with two agents of
    # 4: framework f (role '*') is offered 2 cpus in all, not 8.
    a = make(AgentAdded("s1", CPU4), AgentAdded("s2", CPU4), FrameworkAdded("f"))
    a.handle(QuotaSet("*", limit=Resources.parse("cpus:2;mem:8192")))
    out = a.allocate(0.0)
    assert sum(x.resources.scalar("cpus") for x in out) == 2000
    assert a.consumed("*").scalar("cpus") == 2000
    # Removing the quota lifts the cap.
    a.handle(QuotaSet("*"))
    more = a.allocate(1.0)
    assert sum(x.resources.scalar("cpus") for x in more) == 6000


def test_quota_on_the_default_role_counts_what_is_already_held() -> None:
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f"))
    a.allocate(0.0)  # f holds the whole agent in '*'
    a.handle(QuotaSet("*", limit=Resources.parse("cpus:1")))
    assert a.consumed("*").scalar("cpus") == 4000
    a.handle(ResourcesRecovered("f", "s1", CPU4))
    (offer,) = a.allocate(1.0)
    assert offer.resources.scalar("cpus") == 1000


# -- ties break by allocation count, then name ---------------------------------


def test_equal_shares_take_turns_by_allocation_count() -> None:
    # f1 and f2 both at share 0, one agent; each offer is declined without a
    # filter, so shares return to 0. Mesos' compareDRF breaks the tie by
    # allocation count: f1, f2, f1, f2... By name alone f1 won every time.
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f1"), FrameworkAdded("f2"))
    got = []
    for now in range(6):
        (offer,) = a.allocate(float(now))
        got.append(offer.framework_id)
        a.handle(ResourcesRecovered(offer.framework_id, "s1", offer.resources))
    assert got == ["f1", "f2", "f1", "f2", "f1", "f2"]


def test_sorter_orders_by_share_then_count_then_name() -> None:
    s = DRFSorter({"cpus": 10_000})
    for c in ("a", "b", "c"):
        s.add(c)
    s.allocated("a", Resources.of(cpus=1))
    s.unallocated("a", Resources.of(cpus=1))  # share back to 0, count 1
    assert s.sort() == ["b", "c", "a"]
    assert s.allocation_count("a") == 1
    s.allocated("c", Resources.of(cpus=1))  # c: share 0.1 sorts last whatever its count
    assert s.sort() == ["b", "a", "c"]


# -- one offer per (framework, role, agent) a cycle ----------------------------


def test_quota_stage_and_fair_share_stage_make_one_offer() -> None:
    # Role q is guaranteed 1 cpu, one agent of 4. Stage 1 gives q's framework
    # 1 cpu (the guarantee), stage 2 the rest of the agent to the same
    # framework role. Mesos merges both into its offerable map: one offer of
    # the whole agent. Two offers of 1 and 3 cpus went out before.
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f", ("q",)))
    a.handle(QuotaSet("q", guarantee=Resources.parse("cpus:1")))
    out = a.allocate(0.0)
    assert offers(out) == [("f", "q", "s1")]
    assert out[0].resources == CPU4


# -- unknown ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "match"),
    [
        (lambda a: a.free("nope"), "agent 'nope' is not known"),
        (lambda a: a.agent_total("nope"), "agent 'nope' is not known"),
        (lambda a: a.draining("nope"), "agent 'nope' is not known"),
        (lambda a: a.allocated("nobody"), "framework 'nobody' is not known"),
        (lambda a: a.held("nobody", "s1"), "framework 'nobody' is not known"),
        (lambda a: a.allocated_on("nobody", "s1"), "framework 'nobody' is not known"),
        (lambda a: a.share("nobody"), "framework 'nobody' is not known"),
        (lambda a: a.share("f", "other"), "not in role 'other'"),
    ],
)
def test_queries_on_unknown_ids_name_them(query, match) -> None:  # type: ignore[no-untyped-def]
    a = make(AgentAdded("s1", CPU4), FrameworkAdded("f"))
    with pytest.raises(AllocatorError, match=match):
        query(a)
