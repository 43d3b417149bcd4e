"""The placement pipeline: each checker's typed reason, never-fits against
totals, rankers, and the smallest change that would make a task fit."""

from __future__ import annotations

import pytest

from corral.codec import resources_to_proto
from corral.frameworks.agents import candidates
from corral.frameworks.constraints import parse_constraint
from corral.frameworks.fit_change import Change, changes, explain, placeable, quota_change
from corral.frameworks.placement import (
    Ask,
    Candidate,
    Reason,
    Siblings,
    binpack,
    check_constraints,
    check_image,
    check_ports,
    check_resources,
    check_unique_attributes,
    check_unique_host,
    feasible,
    need,
    never_fits,
    rank,
    spread,
)
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.resources import RangeSet, Resources


def agent(n: int, cpus: float = 4, mem: float = 4096, ports: str = "", **attrs: str) -> Candidate:
    r = Resources.parse(f"cpus:{cpus};mem:{mem}" + (f";ports:{ports}" if ports else ""))
    return Candidate(f"a{n}", f"host-{n}", r, attrs)


# -- each checker's reason ---------------------------------------------------------


def test_resources_reason_names_what_was_asked_and_what_was_there() -> None:
    ask = Ask(Resources.of(cpus=1, mem=64))
    assert check_resources(ask, agent(1, cpus=0.666)) == Reason(
        "resources",
        "a1",
        "host-1",
        "cpus:1;mem:64",
        "cpus:0.666;mem:4096",
        "not enough resources (needs cpus:1;mem:64)",
    )
    assert check_resources(ask, agent(1, cpus=1)) is None


def test_constraint_reason_names_the_constraint_and_the_value_there() -> None:
    ask = Ask(Resources.of(cpus=1), (parse_constraint("rack == r1"),))
    r = check_constraints(ask, agent(1, rack="r2"))
    assert r is not None
    assert (r.checker, r.asked, r.there, r.detail) == (
        "constraints",
        "rack == r1",
        "rack=r2",
        "constraint rack == r1 not met",
    )
    missing = check_constraints(ask, agent(2))
    assert missing is not None
    assert missing.there == "no attribute 'rack'"
    assert check_constraints(ask, agent(3, rack="r1")) is None


def test_unique_host_rejects_only_an_agent_a_sibling_runs_on() -> None:
    ask = Ask(Resources.of(cpus=1), unique_host=True)
    siblings = Siblings(frozenset({"a1"}))
    r = check_unique_host(ask, agent(1), siblings)
    assert r is not None
    assert (r.checker, str(r)) == (
        "unique_host",
        "host-1: unique hostname: an instance runs there",
    )
    assert check_unique_host(ask, agent(2), siblings) is None
    assert check_unique_host(Ask(Resources.of(cpus=1)), agent(1), siblings) is None


def test_unique_attribute_rejects_a_taken_value_and_a_missing_attribute() -> None:
    ask = Ask(Resources.of(cpus=1), unique_attributes=("rack",))
    siblings = Siblings(frozenset({"a1"}), {"rack": frozenset({"r1"})})
    taken = check_unique_attributes(ask, agent(2, rack="r1"), siblings)
    assert taken is not None
    assert taken.detail == "unique rack: an instance runs on rack=r1"
    none = check_unique_attributes(ask, agent(3), siblings)
    assert none is not None
    assert none.detail == "unique rack: the agent has no attribute 'rack'"
    assert check_unique_attributes(ask, agent(4, rack="r2"), siblings) is None


def test_ports_reason_counts_the_free_ports() -> None:
    ask = Ask(Resources.of(cpus=1), ports=3)
    r = check_ports(ask, agent(1, ports="[31000-31001]"))
    assert r is not None
    assert (r.checker, r.asked, r.there) == ("ports", "3 port(s)", "2")
    assert check_ports(ask, agent(2, ports="[31000-31009]")) is None


def test_image_is_checked_only_where_the_agent_says_which_it_has() -> None:
    ask = Ask(Resources.of(cpus=1), image="busybox:1")
    silent = agent(1)
    assert check_image(ask, silent) is None
    says = Candidate("a2", "host-2", silent.resources, images=frozenset({"alpine:3"}))
    r = check_image(ask, says)
    assert r is not None
    assert (r.checker, r.asked, r.there) == ("image", "busybox:1", "alpine:3")


def test_feasible_answers_the_cheapest_failing_checker_first() -> None:
    ask = Ask(Resources.of(cpus=8), (parse_constraint("rack == r1"),))
    r = feasible(ask, agent(1, rack="r2"))
    assert r is not None
    assert r.checker == "constraints"


def test_need_picks_the_lowest_free_ports() -> None:
    got = need(Ask(Resources.of(cpus=1), ports=2), agent(1, ports="[31005-31010]"))
    assert got is not None
    assert got[1] == RangeSet.of([(31005, 31006)])


# -- never fits -----------------------------------------------------------------------


def test_never_fits_names_the_resource_and_the_largest_agent() -> None:
    agents = [agent(i, cpus=0.666) for i in range(3)]
    verdict = never_fits(Ask(Resources.of(cpus=1, mem=64)), agents)
    assert verdict is not None
    assert str(verdict) == "no agent can ever fit this task: cpus 1 asked, the largest agent has 0.666"
    assert [r.agent_id for r in verdict.reasons] == ["a0", "a1", "a2"]
    assert never_fits(Ask(Resources.of(cpus=0.5)), agents) is None


def test_never_fits_judges_totals_not_what_is_free() -> None:
    busy = Candidate("a1", "host-1", Resources.of(cpus=0.1), total=Resources.of(cpus=4))
    assert never_fits(Ask(Resources.of(cpus=2)), [busy]) is None
    assert feasible(Ask(Resources.of(cpus=2)), busy) is not None


def test_never_fits_when_no_agent_meets_the_constraints() -> None:
    ask = Ask(Resources.of(cpus=1), (parse_constraint("rack == r9"),))
    verdict = never_fits(ask, [agent(1, rack="r1"), agent(2)])
    assert verdict is not None
    assert str(verdict) == (
        "no agent can ever fit this task: no agent of 2 meets its constraints: rack == r9 (fails on 2)"
    )


def test_a_sibling_is_not_a_never_fits() -> None:
    ask = Ask(Resources.of(cpus=1), unique_host=True)
    assert never_fits(ask, [agent(1)]) is None


def test_candidates_from_list_agents_take_free_and_total() -> None:
    total = Resources.of(cpus=4, mem=1024)
    resp = op.ListAgentsResponse(
        agents=[
            op.AgentSummary(
                agent_info=pb.AgentInfo(
                    id="a1", hostname="h1", attributes=[pb.Attribute(name="rack", value="r1")]
                ),
                connected=True,
                total=resources_to_proto(total),
                allocated=resources_to_proto(Resources.of(cpus=3)),
            ),
            op.AgentSummary(
                agent_info=pb.AgentInfo(id="a2", hostname="h2"),
                connected=True,
                draining=True,
                total=resources_to_proto(total),
            ),
        ]
    )
    a1, a2 = candidates(resp)
    assert (a1.resources, a1.total, a1.attributes) == (Resources.of(cpus=1, mem=1024), total, {"rack": "r1"})
    assert (a2.resources, a2.total) == (Resources(), total)


# -- rankers -------------------------------------------------------------------------


def test_spread_prefers_an_agent_without_a_sibling_then_the_emptier_one() -> None:
    ask = Ask(Resources.of(cpus=1))
    small, big, taken = agent(1, cpus=2), agent(2, cpus=8), agent(3, cpus=16)
    order = rank(ask, [small, big, taken], spread, Siblings(frozenset({"a3"})))
    assert [c.agent_id for c in order] == ["a2", "a1", "a3"]


def test_binpack_prefers_the_agent_the_task_fills_most() -> None:
    ask = Ask(Resources.of(cpus=1, mem=1024))
    order = rank(ask, [agent(1, cpus=8), agent(2, cpus=1, mem=1024), agent(3, cpus=4)], binpack)
    assert [c.agent_id for c in order] == ["a2", "a3", "a1"]


# -- the smallest change ---------------------------------------------------------------


def test_freeing_the_shortfall_on_an_agent_is_smallest_when_its_total_holds_the_task() -> None:
    a = Candidate("a1", "host-1", Resources.of(cpus=0.666, mem=4096), total=Resources.of(cpus=2, mem=4096))
    ask = Ask(Resources.of(cpus=1, mem=64))
    found = changes(ask, [a])
    assert [str(c) for c in found] == [
        "free 0.334 cpus on agent host-1",
        "lower the request to cpus 0.666, mem 64 (what agent host-1 has)",
    ]
    assert found[0].cost == pytest.approx(0.334)
    assert placeable(*found[0].apply(ask, [a]))


def test_a_task_that_never_fits_is_told_to_lower_its_request() -> None:
    agents = [agent(i, cpus=0.666) for i in range(3)]
    why = explain(Ask(Resources.of(cpus=1, mem=64)), agents)
    assert why.never is not None
    assert str(why.changes[0]) == "lower the request to cpus 0.666, mem 64 (what agent host-0 has)"
    assert why.to_json()["rejected"]["resources"]["count"] == 3


def test_a_constraint_that_alone_blocks_is_the_change_to_drop() -> None:
    ask = Ask(Resources.of(cpus=1), (parse_constraint("rack == r9"),))
    found = changes(ask, [agent(1, rack="r1")])
    assert found == [Change("drop", constraint=parse_constraint("rack == r9"), cost=1.0)]
    assert str(found[0]) == "drop constraint rack == r9"


def test_no_change_is_offered_for_a_task_that_fits_already() -> None:
    assert changes(Ask(Resources.of(cpus=1)), [agent(1)]) == []


def test_lowering_never_drops_a_resource_to_nothing() -> None:
    no_mem = Candidate("a1", "h1", Resources.of(cpus=4))
    assert changes(Ask(Resources.of(cpus=1, mem=64)), [no_mem]) == []


def test_a_quota_limit_the_task_would_pass_is_the_limit_to_raise() -> None:
    asked = Resources.of(cpus=1, mem=64)
    change = quota_change(asked, "eng", {"cpus": 1500}, Resources.of(cpus=1))
    assert change is not None
    assert str(change) == "raise the quota limit of role eng to cpus 2"
    assert change.cost == pytest.approx(0.5)
    assert quota_change(asked, "eng", {"cpus": 2000}, Resources.of(cpus=1)) is None
    zero = quota_change(asked, "eng", {"mem": 0}, Resources())
    assert zero is not None
    assert str(zero) == "raise the quota limit of role eng to mem 64"
