"""The SDK's placement helpers for authors: keep tasks off named agents, and
spread tasks across offers as well as pack them (issue 22)."""

from __future__ import annotations

import doctest

import pytest

from corral.frameworks import Offer, Task
from corral.frameworks import placement as placement_module
from corral.frameworks.constraints import parse_constraint, satisfies
from corral.frameworks.placement import Ask, Candidate, binpack, check_constraints, pack, place, spread
from corral.resources import Resources


def offer(n: int, cpus: float = 2, mem: float = 256, **attrs: str) -> Offer:
    return Offer(f"o{n}", f"a{n}", f"host-{n}", Resources.of(cpus=cpus, mem=mem), attrs)


def tasks(count: int, cpus: float = 0.5) -> list[Task]:
    return [Task(f"t{i}", "true", Resources.of(cpus=cpus, mem=32)) for i in range(count)]


@pytest.mark.parametrize(
    ("text", "agent", "ok"),
    [
        ("agent_id != a1", 1, False),
        ("agent_id != a1", 2, True),
        ("agent_id not in [a1, a2]", 2, False),
        ("agent_id in [a3]", 3, True),
        ("hostname != host-1", 1, False),
        ("hostname != host-1", 2, True),
    ],
)
def test_a_constraint_can_keep_tasks_off_an_agent(text: str, agent: int, ok: bool) -> None:
    constraint = parse_constraint(text)
    assert (satisfies(offer(agent), [constraint]) is None) is ok
    reason = check_constraints(Ask(Resources.of(cpus=1), (constraint,)), Candidate.of_offer(offer(agent)))
    assert (reason is None) is ok
    if reason is not None:
        # The rejection says what the agent had, not "no attribute".
        assert reason.there == f"{constraint.attribute}={'a' if 'agent' in text else 'host-'}{agent}"


def test_an_attribute_of_that_name_wins_over_the_agent_id() -> None:
    assert satisfies(offer(1, agent_id="x"), [parse_constraint("agent_id == x")]) is None


def test_pack_fills_one_offer_and_place_spreads_over_them() -> None:
    offers = [offer(1), offer(2), offer(3)]
    chosen, _ = pack(tasks(3), offers[0])
    assert len(chosen) == 3  # first fit: one agent takes them all
    spread_out = place(tasks(3), offers)
    assert {o: [t.task_id for t in ts] for o, ts in spread_out.items()} == {
        "o1": ["t0"],
        "o2": ["t1"],
        "o3": ["t2"],
    }
    assert place(tasks(3), offers, spread) == spread_out  # spread is the default
    packed = place(tasks(3), offers, binpack)
    assert {o: len(ts) for o, ts in packed.items()} == {"o1": 3}


def test_spread_counts_the_agents_earlier_batches_went_to() -> None:
    # Offers of two agents come in two callbacks: alone, each batch's first
    # task would go back to a1; told where they already run, it goes to a2.
    first = place(tasks(1), [offer(1)])
    assert list(first) == ["o1"]
    both = [offer(1), offer(2)]
    assert list(place(tasks(1), both)) == ["o1"]  # (a tie: the first offer)
    assert list(place(tasks(1), both, running_on={"a1"})) == ["o2"]
    assert list(place(tasks(1), both, binpack, running_on={"a1"})) == ["o1"]  # binpack ignores it


def test_place_skips_what_fits_nowhere_and_honours_constraints() -> None:
    offers = [offer(1, cpus=1), offer(2, cpus=1)]
    big = Task("big", "true", Resources.of(cpus=4, mem=32))
    chosen = place([big, *tasks(4)], offers, constraints=[parse_constraint("agent_id != a1")])
    assert list(chosen) == ["o2"]
    assert [t.task_id for t in chosen["o2"]] == ["t0", "t1"]  # 1 cpu holds two of 0.5


def test_the_module_examples_run() -> None:
    result = doctest.testmod(placement_module)
    assert result.attempted >= 4
    assert result.failed == 0
